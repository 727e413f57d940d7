//! QEMU TCG plugin (host cdylib, plugin API v1 for Debian's qemu-user 7.2): deterministic
//! guest instruction, load/store and optional L1D-miss counts inside the runtime's region of
//! interest (ROI).
//!
//! The guest marks the ROI with a syscall number that Linux does not have (0xC0DE; argument
//! 1 = start, 0 = stop); QEMU returns ENOSYS to the guest and calls our syscall hook first.
//!
//! Counting: instructions, loads and stores are inline adds (cheap, always on); the hook takes
//! snapshots at ROI start/stop and accumulates the differences, so nothing outside the ROI
//! (model loading with its randomly seeded HashMaps) leaks in. The optional cache model needs a
//! full callback per access; it only simulates while inside the ROI and starts each ROI cold,
//! so its figures do not depend on load-time state.
//!
//! Plugin arguments (`-plugin libqemu_cost_plugin.so,out=/path/result.json,cache=on`):
//! - `out=PATH`: write the JSON result there at exit (temp file + rename); otherwise the JSON
//!   goes to QEMU's log (`-d plugin -D FILE`);
//! - `cache=on|off`: L1D model (32 KiB, 4-way, 32-byte lines, LRU, guest virtual addresses);
//! - `roi=on|off`: `off` counts the whole program (for debugging; not deterministic).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use qemu_plugin_sys::{
    qemu_info_t, qemu_plugin_cb_flags, qemu_plugin_id_t, qemu_plugin_insn, qemu_plugin_mem_rw,
    qemu_plugin_meminfo_t, qemu_plugin_op, qemu_plugin_tb, QEMU_PLUGIN_VERSION,
};

/// Syscall number of the ROI marker (see `edge_runtime::roi`).
pub const ROI_SYSCALL: i64 = 0xC0DE;
/// Version of the JSON this plugin writes.
pub const RESULT_SCHEMA: u32 = 1;

/// QEMU reads this symbol to check the plugin's API version.
#[no_mangle]
pub static qemu_plugin_version: c_int = QEMU_PLUGIN_VERSION as c_int;

/// Raw counters, the targets of QEMU's inline adds. QEMU writes them from generated code
/// without atomics; exact only with one guest thread, which the pinned runner guarantees.
#[repr(C)]
struct RawCounters {
    insns: u64,
    /// Inline count of all memory accesses (cross-check of `loads + stores`).
    accesses: u64,
    /// Counted by the memory callback, only inside the ROI.
    loads: u64,
    stores: u64,
}

static mut RAW: RawCounters = RawCounters {
    insns: 0,
    accesses: 0,
    loads: 0,
    stores: 0,
};

/// Set-associative LRU cache model on guest virtual addresses (`qemu_plugin_get_hwaddr` is
/// NULL in user mode). Hand-written: no crate models a small CPU cache this cheaply.
struct CacheModel {
    line_shift: u32,
    sets: usize,
    ways: usize,
    /// `sets * ways` tags, most recently used first within a set; `u64::MAX` = invalid.
    tags: Vec<u64>,
    accesses: u64,
    misses: u64,
}

impl CacheModel {
    fn new(size_bytes: usize, ways: usize, line_bytes: usize) -> CacheModel {
        let sets = size_bytes / (ways * line_bytes);
        CacheModel {
            line_shift: line_bytes.trailing_zeros(),
            sets,
            ways,
            tags: vec![u64::MAX; sets * ways],
            accesses: 0,
            misses: 0,
        }
    }

    fn touch_line(&mut self, line: u64) {
        let set = (line as usize) & (self.sets - 1);
        let ways = &mut self.tags[set * self.ways..(set + 1) * self.ways];
        match ways.iter().position(|&t| t == line) {
            Some(hit) => ways[..=hit].rotate_right(1),
            None => {
                self.misses += 1;
                ways.rotate_right(1);
                ways[0] = line;
            }
        }
    }

    fn access(&mut self, vaddr: u64, size: u64) {
        self.accesses += 1;
        let first = vaddr >> self.line_shift;
        let last = (vaddr + size.max(1) - 1) >> self.line_shift;
        for line in first..=last {
            self.touch_line(line);
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    insns: u64,
    accesses: u64,
    loads: u64,
    stores: u64,
}

/// Counts of one region of interest (one inference when the runtime marks each one).
#[derive(Default, Clone, Copy)]
struct RoiRecord {
    counts: Totals,
    l1d_accesses: u64,
    l1d_misses: u64,
}

struct State {
    out: Option<String>,
    roi: bool,
    /// Counter values when the current ROI started.
    start: Totals,
    /// Cache-model counters when the current ROI started.
    start_l1d: (u64, u64),
    /// Every finished ROI, in order: the caller picks the measured ones (the runtime may
    /// also mark its cold first run and warm-up runs).
    rois: Vec<RoiRecord>,
    roi_open: bool,
    unmatched_stops: u64,
    cache: Option<CacheModel>,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();
static IN_ROI: AtomicBool = AtomicBool::new(false);
static SYSCALLS_SEEN: AtomicU64 = AtomicU64::new(0);

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE
        .get()
        .expect("plugin installed")
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn raw_now() -> Totals {
    // SAFETY: plain reads of counters that generated code increments on the same (single)
    // guest thread that runs this callback.
    unsafe {
        let raw = &raw const RAW;
        Totals {
            insns: std::ptr::read_volatile(&raw const (*raw).insns),
            accesses: std::ptr::read_volatile(&raw const (*raw).accesses),
            loads: std::ptr::read_volatile(&raw const (*raw).loads),
            stores: std::ptr::read_volatile(&raw const (*raw).stores),
        }
    }
}

fn begin_roi(st: &mut State) {
    if st.roi_open {
        return;
    }
    st.roi_open = true;
    st.start = raw_now();
    // The cache model is not flushed: it only sees ROI accesses, so a warm-up inference
    // marked as a ROI leaves it warm and nothing from model loading gets in.
    st.start_l1d = st.cache.as_ref().map_or((0, 0), |c| (c.accesses, c.misses));
    IN_ROI.store(true, Ordering::Relaxed);
}

fn end_roi(st: &mut State) {
    if !st.roi_open {
        st.unmatched_stops += 1;
        return;
    }
    let now = raw_now();
    let (l1d_accesses, l1d_misses) = st.cache.as_ref().map_or((0, 0), |c| (c.accesses, c.misses));
    let record = RoiRecord {
        counts: Totals {
            insns: now.insns - st.start.insns,
            accesses: now.accesses - st.start.accesses,
            loads: now.loads - st.start.loads,
            stores: now.stores - st.start.stores,
        },
        l1d_accesses: l1d_accesses - st.start_l1d.0,
        l1d_misses: l1d_misses - st.start_l1d.1,
    };
    st.rois.push(record);
    st.roi_open = false;
    IN_ROI.store(false, Ordering::Relaxed);
}

unsafe extern "C" fn on_syscall(
    _id: qemu_plugin_id_t,
    _vcpu: c_uint,
    num: i64,
    a1: u64,
    _a2: u64,
    _a3: u64,
    _a4: u64,
    _a5: u64,
    _a6: u64,
    _a7: u64,
    _a8: u64,
) {
    if num != ROI_SYSCALL {
        return;
    }
    SYSCALLS_SEEN.fetch_add(1, Ordering::Relaxed);
    let mut st = state();
    if !st.roi {
        return;
    }
    if a1 as u32 == 1 {
        begin_roi(&mut st);
    } else {
        end_roi(&mut st);
    }
}

unsafe extern "C" fn on_mem(
    _vcpu: c_uint,
    info: qemu_plugin_meminfo_t,
    vaddr: u64,
    _: *mut c_void,
) {
    if !IN_ROI.load(Ordering::Relaxed) {
        return;
    }
    let raw = &raw mut RAW;
    if qemu_plugin_sys::qemu_plugin_mem_is_store(info) {
        (*raw).stores += 1;
    } else {
        (*raw).loads += 1;
    }
    if CACHE_ON.load(Ordering::Relaxed) {
        let size = 1u64 << qemu_plugin_sys::qemu_plugin_mem_size_shift(info);
        if let Some(cache) = state().cache.as_mut() {
            cache.access(vaddr, size);
        }
    }
}

unsafe extern "C" fn on_tb_trans(_id: qemu_plugin_id_t, tb: *mut qemu_plugin_tb) {
    let raw = &raw mut RAW;
    let n = qemu_plugin_sys::qemu_plugin_tb_n_insns(tb);
    qemu_plugin_sys::qemu_plugin_register_vcpu_tb_exec_inline(
        tb,
        qemu_plugin_op::QEMU_PLUGIN_INLINE_ADD_U64,
        (&raw mut (*raw).insns).cast(),
        n as u64,
    );
    for i in 0..n {
        let insn: *mut qemu_plugin_insn = qemu_plugin_sys::qemu_plugin_tb_get_insn(tb, i);
        // All accesses, inline. (QEMU 7.2's read/write filter for inline memory ops is wrong:
        // MEM_R counts stores, MEM_W counts everything; so the split comes from the callback.)
        qemu_plugin_sys::qemu_plugin_register_vcpu_mem_inline(
            insn,
            qemu_plugin_mem_rw::QEMU_PLUGIN_MEM_RW,
            qemu_plugin_op::QEMU_PLUGIN_INLINE_ADD_U64,
            (&raw mut (*raw).accesses).cast(),
            1,
        );
        qemu_plugin_sys::qemu_plugin_register_vcpu_mem_cb(
            insn,
            Some(on_mem),
            qemu_plugin_cb_flags::QEMU_PLUGIN_CB_NO_REGS,
            qemu_plugin_mem_rw::QEMU_PLUGIN_MEM_RW,
            std::ptr::null_mut(),
        );
    }
}

static CACHE_ON: AtomicBool = AtomicBool::new(false);

fn counts_json(t: &Totals, l1d: Option<(u64, u64)>) -> String {
    let l1d = match l1d {
        Some((accesses, misses)) => format!("{{\"accesses\": {accesses}, \"misses\": {misses}}}"),
        None => "null".to_string(),
    };
    format!(
        "{{\"instructions\": {}, \"memory_accesses\": {}, \"loads\": {}, \"stores\": {}, \"l1d\": {l1d}}}",
        t.insns, t.accesses, t.loads, t.stores
    )
}

// Hand-formatted: the plugin stays free of serde for a tiny, fixed record.
fn result_json(st: &State) -> String {
    let cache = st.cache.as_ref();
    let cache_config = match cache {
        Some(c) => format!(
            "{{\"size_bytes\": {}, \"ways\": {}, \"line_bytes\": {}, \"replacement\": \"LRU\", \"addresses\": \"guest virtual\"}}",
            (c.sets * c.ways) << c.line_shift,
            c.ways,
            1u64 << c.line_shift
        ),
        None => "null".to_string(),
    };
    let whole = if st.roi {
        "null".to_string()
    } else {
        counts_json(&raw_now(), cache.map(|c| (c.accesses, c.misses)))
    };
    let rois: Vec<String> = st
        .rois
        .iter()
        .map(|r| counts_json(&r.counts, cache.map(|_| (r.l1d_accesses, r.l1d_misses))))
        .collect();
    format!(
        "{{\"schema\": {RESULT_SCHEMA}, \"roi_mode\": {}, \"roi_syscall\": {ROI_SYSCALL}, \"marker_syscalls\": {}, \"roi_open_at_exit\": {}, \"unmatched_stops\": {}, \"l1d_model\": {cache_config}, \"whole_program\": {whole}, \"roi_count\": {}, \"rois\": [\n  {}\n]}}\n",
        st.roi,
        SYSCALLS_SEEN.load(Ordering::Relaxed),
        st.roi_open,
        st.unmatched_stops,
        st.rois.len(),
        rois.join(",\n  "),
    )
}

fn outs(text: &str) {
    if let Ok(c) = CString::new(text) {
        // SAFETY: QEMU copies the NUL-terminated string.
        unsafe { qemu_plugin_sys::qemu_plugin_outs(c.as_ptr()) };
    }
}

fn write_atomically(path: &str, text: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp{}", std::process::id());
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

unsafe extern "C" fn on_exit(_id: qemu_plugin_id_t, _: *mut c_void) {
    let st = state();
    let json = result_json(&st);
    match &st.out {
        Some(path) => {
            if let Err(e) = write_atomically(path, &json) {
                outs(&format!("qemu-cost-plugin: cannot write {path}: {e}\n"));
                eprintln!("qemu-cost-plugin: cannot write {path}: {e}");
            }
        }
        None => outs(&json),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!(
            "qemu-cost-plugin: {key}={value}: expected on or off"
        )),
    }
}

fn parse_args(args: &[String]) -> Result<State, String> {
    let mut st = State {
        out: None,
        roi: true,
        start: Totals::default(),
        start_l1d: (0, 0),
        rois: Vec::new(),
        roi_open: false,
        unmatched_stops: 0,
        cache: None,
    };
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("qemu-cost-plugin: argument {arg:?} is not key=value"))?;
        match key {
            "out" => st.out = Some(value.to_string()),
            "cache" => {
                st.cache = parse_bool(key, value)?.then(|| CacheModel::new(32 * 1024, 4, 32));
            }
            "roi" => st.roi = parse_bool(key, value)?,
            _ => {
                return Err(format!(
                    "qemu-cost-plugin: unknown argument {key:?} (out, cache, roi)"
                ))
            }
        }
    }
    Ok(st)
}

/// Entry point called by QEMU after loading the plugin.
///
/// # Safety
/// Called by QEMU with `argc` valid C strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: qemu_plugin_id_t,
    _info: *const qemu_info_t,
    argc: c_int,
    argv: *mut *mut c_char,
) -> c_int {
    let args: Vec<String> = (0..argc.max(0) as usize)
        .map(|i| CStr::from_ptr(*argv.add(i)).to_string_lossy().into_owned())
        .collect();
    let st = match parse_args(&args) {
        Ok(st) => st,
        Err(msg) => {
            eprintln!("{msg}");
            return -1;
        }
    };
    if !st.roi {
        IN_ROI.store(true, Ordering::Relaxed);
    }
    CACHE_ON.store(st.cache.is_some(), Ordering::Relaxed);
    if STATE.set(Mutex::new(st)).is_err() {
        eprintln!("qemu-cost-plugin: installed twice");
        return -1;
    }
    qemu_plugin_sys::qemu_plugin_register_vcpu_tb_trans_cb(id, Some(on_tb_trans));
    qemu_plugin_sys::qemu_plugin_register_vcpu_syscall_cb(id, Some(on_syscall));
    qemu_plugin_sys::qemu_plugin_register_atexit_cb(id, Some(on_exit), std::ptr::null_mut());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_cache_model_counts_conflict_misses() {
        let mut c = CacheModel::new(32 * 1024, 4, 32);
        assert_eq!(c.sets, 256);
        // Five lines mapping to set 0 in a 4-way cache: the fifth evicts the least recent.
        let stride = 256 * 32;
        for i in 0..5 {
            c.access(i * stride, 4);
        }
        assert_eq!(c.misses, 5);
        c.access(4 * stride, 4); // hit (most recent)
        c.access(0, 4); // evicted: miss
        assert_eq!((c.accesses, c.misses), (7, 6));
        // An access straddling two lines touches both.
        c.access(1000 * 32 + 30, 4);
        assert_eq!(c.misses, 8);
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse_args(&["cache=maybe".into()]).is_err());
        assert!(parse_args(&["bogus".into()]).is_err());
        assert!(parse_args(&["out=/x".into(), "cache=on".into()]).is_ok());
    }
}

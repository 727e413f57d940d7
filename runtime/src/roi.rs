//! Region-of-interest markers for the QEMU cost-counting plugin.
//!
//! The guest issues syscall 0xC0DE (no such syscall exists) with argument 1 to start and 0
//! to stop counting; the plugin hooks syscalls and counts only inside. Natively, and under
//! QEMU without the plugin, the kernel answers ENOSYS and nothing happens. Markers are only
//! issued when enabled (env `EDGE_ROI=1` or [`set_enabled`]), so ordinary runs never make
//! the bogus syscall.

use std::sync::atomic::{AtomicU8, Ordering};

/// The syscall number the QEMU plugin watches.
pub const ROI_SYSCALL: libc::c_long = 0xC0DE;

const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNSET);

/// Whether markers are issued: [`set_enabled`] if it was called, else env `EDGE_ROI=1`.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = std::env::var("EDGE_ROI").is_ok_and(|v| v == "1");
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}

pub fn set_enabled(on: bool) {
    STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

fn mark(arg: libc::c_long) {
    if enabled() {
        // SAFETY: an unknown syscall number has no effect besides returning ENOSYS.
        unsafe {
            libc::syscall(ROI_SYSCALL, arg);
        }
    }
}

/// Starts the counted region.
pub fn begin() {
    mark(1);
}

/// Ends the counted region.
pub fn end() {
    mark(0);
}

/// Issues the marker syscall unconditionally and returns the raw result and errno, so a
/// test can check that the native kernel really answers ENOSYS.
pub fn probe() -> (libc::c_long, i32) {
    let stop: libc::c_long = 0;
    // SAFETY: as in `mark`.
    let ret = unsafe { libc::syscall(ROI_SYSCALL, stop) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    (ret, errno)
}

//! Hardware counters per inference through perf-event.
//!
//! Counters are read in a separate pass after the timed runs (a few extra
//! inferences with the counter group enabled), so enabling/reading the group never
//! adds syscalls to the timed samples.
//!
//! 32-bit ARM: the `perf-event` crate does not compile there (perf-event-open-sys
//! has no bindings for target_arch "arm"), so it is only a dependency on x86_64 and
//! aarch64. We decided not to hand-write a `perf_event_open` wrapper (syscall 364)
//! for armv7: qemu-user does not emulate that syscall, so the only place such code
//! could run is the board itself and no test here could exercise it; an untested
//! counter path in reports users trust is worse than an honest "unavailable".
//! Deterministic instruction counts for armv7 come from the QEMU cost counter instead
//! (`edgebench qemu`).

use crate::report::CounterRecord;

/// Why counters are missing on this build, or None when this build supports them.
pub fn unsupported_reason() -> Option<&'static str> {
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        None
    } else {
        Some("perf-event does not support 32-bit ARM (use `edgebench qemu` for instruction counts)")
    }
}

/// Runs `inference` `runs` times with the counters enabled and returns the
/// per-inference averages, or "unavailable: <reason>" (never an error) when the
/// kernel, the virtual machine or this architecture does not give them.
pub fn count_per_inference(
    runs: usize,
    inference: &mut dyn FnMut() -> Result<(), String>,
) -> CounterRecord {
    imp::count_per_inference(runs, inference)
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod imp {
    use super::*;
    use perf_event::events::Hardware;
    use perf_event::{Builder, Group};

    fn explain(what: &str, e: std::io::Error) -> String {
        let hint = match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => {
                " (no hardware PMU visible, e.g. inside a virtual machine)"
            }
            Some(libc::EACCES) | Some(libc::EPERM) => {
                " (not permitted: see /proc/sys/kernel/perf_event_paranoid)"
            }
            Some(libc::ENOSYS) => " (perf_event_open not implemented, e.g. under qemu-user)",
            _ => "",
        };
        format!("{what}: {e}{hint}")
    }

    pub fn count_per_inference(
        runs: usize,
        inference: &mut dyn FnMut() -> Result<(), String>,
    ) -> CounterRecord {
        match try_count(runs.max(1), inference) {
            Ok(record) => record,
            Err(reason) => CounterRecord::unavailable(reason),
        }
    }

    fn try_count(
        runs: usize,
        inference: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<CounterRecord, String> {
        let mut group = Group::new().map_err(|e| explain("perf_event_open", e))?;
        let mut add = |kind: Hardware, name: &str| {
            Builder::new()
                .group(&mut group)
                .kind(kind)
                .build()
                .map_err(|e| explain(name, e))
        };
        let cycles = add(Hardware::CPU_CYCLES, "cycles")?;
        let instructions = add(Hardware::INSTRUCTIONS, "instructions")?;
        let cache_refs = add(Hardware::CACHE_REFERENCES, "cache-references")?;
        let cache_misses = add(Hardware::CACHE_MISSES, "cache-misses")?;
        let branch_misses = add(Hardware::BRANCH_MISSES, "branch-misses")?;
        group.enable().map_err(|e| explain("enable", e))?;
        for _ in 0..runs {
            inference()?;
        }
        group.disable().map_err(|e| explain("disable", e))?;
        let counts = group.read().map_err(|e| explain("read", e))?;
        if counts.time_running() == 0 {
            return Err("the counter group was never scheduled on the PMU".into());
        }
        let n = runs as f64;
        let per = |c: &perf_event::Counter| counts.get(c).map(|v| *v as f64 / n);
        let cyc = per(&cycles);
        let ins = per(&instructions);
        if cyc == Some(0.0) {
            return Err("the PMU reports zero cycles (counters not virtualised)".into());
        }
        Ok(CounterRecord {
            status: "available".into(),
            inferences: runs as u64,
            cycles: cyc,
            instructions: ins,
            ipc: match (ins, cyc) {
                (Some(i), Some(c)) if c > 0.0 => Some(i / c),
                _ => None,
            },
            cache_references: per(&cache_refs),
            cache_misses: per(&cache_misses),
            branch_misses: per(&branch_misses),
        })
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp {
    use super::*;

    pub fn count_per_inference(
        _runs: usize,
        _inference: &mut dyn FnMut() -> Result<(), String>,
    ) -> CounterRecord {
        CounterRecord::unavailable(unsupported_reason().unwrap_or("unsupported architecture"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_available_or_say_why() {
        let mut x = 0u64;
        let record = count_per_inference(3, &mut || {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
            }
            Ok(())
        });
        if record.is_available() {
            assert_eq!(record.inferences, 3);
            assert!(record.instructions.unwrap_or(0.0) > 100_000.0, "{record:?}");
        } else {
            let reason = record.status.strip_prefix("unavailable: ").expect("status");
            assert!(!reason.is_empty());
            assert!(record.cycles.is_none());
        }
    }

    #[test]
    fn inference_errors_make_counters_unavailable_not_fail() {
        let record = count_per_inference(2, &mut || Err("boom".into()));
        assert!(!record.is_available());
    }
}

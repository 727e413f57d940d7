//! Wall-clock timing of one inference and process-wide resource use.

use std::time::Duration;

/// Peak resident set size of this process in KiB (getrusage ru_maxrss, which Linux
/// reports in KiB), or None when the call fails.
pub fn peak_rss_kib() -> Option<u64> {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (rc == 0).then_some(usage.ru_maxrss as u64)
}

/// Pins the calling thread to CPU `cpu` (sched_setaffinity on thread id 0 = caller).
pub fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpu >= max {
        return Err(format!(
            "--cpu {cpu}: larger than the cpu_set_t limit {max}"
        ));
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET stays in bounds (checked above).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "--cpu {cpu}: sched_setaffinity failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_positive() {
        assert!(peak_rss_kib().unwrap() > 0);
    }

    #[test]
    fn pinning_to_cpu0_works_and_absurd_cpu_is_an_error() {
        std::thread::spawn(|| {
            pin_to_cpu(0).unwrap();
            assert!(pin_to_cpu(100_000).is_err());
        })
        .join()
        .unwrap();
    }
}

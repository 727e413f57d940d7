//! What machine and software a report was measured on. Everything is read best
//! effort: a fact that cannot be read is recorded as "unknown", never an error.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub target_triple: String,
    pub target_profile: String,
    pub cpu_model: String,
    pub cpu_features: Vec<String>,
    pub logical_cores: usize,
    pub governor: String,
    pub current_clock_mhz: Option<f64>,
    pub kernel: String,
    pub hostname: String,
    pub runtime_version: String,
    pub tract_version: String,
    pub harness_version: String,
    /// Per engine: the kernels tract/our runtime use (NEON or not, linalg kernel names).
    pub kernels: Vec<KernelRecord>,
    pub git_revision: String,
    pub threads: usize,
    pub profile_peak_gmacs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelRecord {
    pub engine: String,
    pub target_triple: String,
    pub neon: Option<bool>,
    pub cpu_part: Option<String>,
    pub linalg_kernels: String,
    /// With the edge engine, the instruction set of our kernels ("Neon", "Avx512",
    /// "Avx2Fma", "Scalar"); absent with tract's (and in reports from before it existed).
    #[serde(default)]
    pub edge_isa: Option<String>,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// First value of `key` in /proc/cpuinfo text.
fn cpuinfo_field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// CPU model name and feature flags from /proc/cpuinfo (x86: "model name"/"flags";
/// ARM: "Processor" or "model name" and "Features").
pub fn cpu_from_cpuinfo(cpuinfo: &str) -> (String, Vec<String>) {
    let model = ["model name", "Processor", "Hardware", "cpu model"]
        .iter()
        .find_map(|k| cpuinfo_field(cpuinfo, k))
        .unwrap_or("unknown")
        .to_string();
    let features = ["flags", "Features"]
        .iter()
        .find_map(|k| cpuinfo_field(cpuinfo, k))
        .map(|f| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    (model, features)
}

/// `git rev-parse HEAD` in `dir` (plus "-dirty" when the tree has changes), or "unknown".
pub fn git_revision(dir: &Path) -> String {
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match rev {
        Some(rev) if !rev.is_empty() => {
            let dirty = Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .current_dir(dir)
                .output()
                .ok()
                .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        _ => "unknown".to_string(),
    }
}

pub fn kernel_record(engine: edge_runtime::Engine) -> KernelRecord {
    let info = edge_runtime::kernel_info(engine);
    KernelRecord {
        engine: info.engine.to_string(),
        target_triple: info.target_triple,
        neon: info.neon,
        cpu_part: info.cpu_part,
        linalg_kernels: info.linalg_kernels,
        edge_isa: info.edge_isa,
    }
}

/// Reads this machine's environment.
pub fn detect(
    profile: &target_profiles::Profile,
    engines: &[edge_runtime::Engine],
    threads: usize,
) -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let (cpu_model, cpu_features) = cpu_from_cpuinfo(&cpuinfo);
    let current_clock_mhz = read_trimmed("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
        .and_then(|khz| khz.parse::<f64>().ok())
        .map(|khz| khz / 1000.0)
        .or_else(|| cpuinfo_field(&cpuinfo, "cpu MHz").and_then(|m| m.parse().ok()));
    let kernels: Vec<KernelRecord> = engines.iter().map(|e| kernel_record(*e)).collect();
    let first = edge_runtime::kernel_info(
        engines
            .first()
            .copied()
            .unwrap_or(edge_runtime::Engine::Tract),
    );
    let kernel = [
        read_trimmed("/proc/sys/kernel/ostype"),
        read_trimmed("/proc/sys/kernel/osrelease"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    Environment {
        target_triple: target_profiles::BUILD_TRIPLE.to_string(),
        target_profile: profile.name.clone(),
        cpu_model,
        cpu_features,
        logical_cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        governor: read_trimmed("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
            .unwrap_or_else(|| "unknown (no cpufreq)".to_string()),
        current_clock_mhz,
        kernel: if kernel.is_empty() {
            "unknown".into()
        } else {
            kernel
        },
        hostname: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
        runtime_version: first.runtime_version,
        tract_version: first.tract_version,
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        kernels,
        git_revision: git_revision(Path::new(".")),
        threads,
        profile_peak_gmacs: profile.cpu.as_ref().map(|c| c.peak_gmacs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_of_the_board_profile() {
        let text = target_profiles::Profile::by_name("imx6")
            .unwrap()
            .emulated_cpuinfo()
            .expect("imx6 cpuinfo");
        let (model, features) = cpu_from_cpuinfo(text);
        assert_ne!(model, "unknown");
        assert!(features.iter().any(|f| f == "neon"), "{features:?}");
    }

    #[test]
    fn x86_cpuinfo() {
        let (model, features) =
            cpu_from_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n");
        assert_eq!(model, "AMD EPYC");
        assert_eq!(features, vec!["fpu", "avx2", "fma"]);
    }
}

//! Facts about the board, read over SSH before each benchmark group.

use serde::{Deserialize, Serialize};

use crate::environment::cpu_from_cpuinfo;

/// What the board said about itself. Every field is best effort: a board without
/// cpufreq has no governor, and that is recorded as `None`, not an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceFacts {
    /// `uname -a`.
    pub kernel: String,
    pub cpu_model: String,
    pub cpu_features: Vec<String>,
    /// `/proc/cpuinfo` as read on the board.
    pub cpuinfo: String,
    /// cpu0's cpufreq governor.
    pub governor: Option<String>,
    pub current_clock_mhz: Option<f64>,
    pub max_clock_mhz: Option<f64>,
    /// `/proc/loadavg` just before the benchmark started.
    pub loadavg_before: Option<String>,
    pub collected_unix_s: u64,
}

const SECTION: &str = "@@edgebench:";

/// One remote shell command that prints every fact in a marked section. Fixed text:
/// nothing user-supplied goes into it.
pub fn facts_command() -> String {
    let cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq";
    let sections: [(&str, String); 6] = [
        ("uname", "uname -a".to_string()),
        ("cpuinfo", "cat /proc/cpuinfo".to_string()),
        ("governor", format!("cat {cpufreq}/scaling_governor")),
        ("cur_khz", format!("cat {cpufreq}/scaling_cur_freq")),
        ("max_khz", format!("cat {cpufreq}/cpuinfo_max_freq")),
        ("loadavg", "cat /proc/loadavg".to_string()),
    ];
    sections
        .iter()
        .map(|(name, cmd)| format!("echo '{SECTION}{name}'; {cmd} 2>/dev/null"))
        .collect::<Vec<_>>()
        .join("; ")
        + "; true"
}

/// Parses the output of [`facts_command`].
pub fn parse_facts(output: &str, now_unix_s: u64) -> DeviceFacts {
    let mut sections: Vec<(&str, String)> = Vec::new();
    for line in output.lines() {
        if let Some(name) = line.strip_prefix(SECTION) {
            sections.push((name, String::new()));
        } else if let Some((_, text)) = sections.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    let get = |name: &str| {
        sections
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let khz_to_mhz = |s: Option<String>| s.and_then(|s| s.parse::<f64>().ok()).map(|k| k / 1000.0);
    let cpuinfo = get("cpuinfo").unwrap_or_default();
    let (cpu_model, cpu_features) = cpu_from_cpuinfo(&cpuinfo);
    DeviceFacts {
        kernel: get("uname").unwrap_or_else(|| "unknown".into()),
        cpu_model,
        cpu_features,
        cpuinfo,
        governor: get("governor"),
        current_clock_mhz: khz_to_mhz(get("cur_khz")),
        max_clock_mhz: khz_to_mhz(get("max_khz")),
        loadavg_before: get("loadavg"),
        collected_unix_s: now_unix_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_imx6_like_board() {
        let out = "@@edgebench:uname\nLinux imx6 5.10.0 armv7l GNU/Linux\n\
                   @@edgebench:cpuinfo\nprocessor\t: 0\nmodel name\t: ARMv7 Processor rev 10 (v7l)\n\
                   Features\t: half thumb fastmult vfp edsp neon vfpv3\nCPU part\t: 0xc09\n\
                   @@edgebench:governor\nperformance\n@@edgebench:cur_khz\n792000\n\
                   @@edgebench:max_khz\n@@edgebench:loadavg\n0.08 0.03 0.01 1/60 345\n";
        let f = parse_facts(out, 7);
        assert_eq!(f.kernel, "Linux imx6 5.10.0 armv7l GNU/Linux");
        assert_eq!(f.cpu_model, "ARMv7 Processor rev 10 (v7l)");
        assert!(f.cpu_features.iter().any(|x| x == "neon"));
        assert!(f.cpuinfo.contains("CPU part\t: 0xc09"));
        assert_eq!(f.governor.as_deref(), Some("performance"));
        assert_eq!(f.current_clock_mhz, Some(792.0));
        assert_eq!(f.max_clock_mhz, None);
        assert_eq!(f.loadavg_before.as_deref(), Some("0.08 0.03 0.01 1/60 345"));
        assert_eq!(f.collected_unix_s, 7);
    }

    #[test]
    fn the_facts_command_is_a_fixed_posix_command() {
        let words = shlex::split(&facts_command()).expect("valid shell words");
        assert!(words.contains(&"/proc/loadavg".to_string()));
    }
}

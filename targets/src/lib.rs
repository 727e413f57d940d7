//! Target profiles: `targets/*.toml` are the one source of truth for each target's
//! triple, rustflags, linker, QEMU CPU and board facts. `.cargo/config.toml`,
//! `Cross.toml`, the harness and CI read these or are checked against them.

use serde::{Deserialize, Serialize};

/// The profile files, embedded so that every binary carries them.
pub const PROFILE_SOURCES: &[(&str, &str)] = &[
    ("imx6", include_str!("../imx6.toml")),
    ("host", include_str!("../host.toml")),
    ("rpi3", include_str!("../rpi3.toml")),
];

/// The boards' `/proc/cpuinfo`, read by `ci/qemu-run` and embedded here for reports.
pub const CPUINFO_SOURCES: &[(&str, &str)] = &[("imx6", include_str!("../imx6.cpuinfo"))];

/// The triple of the machine these tools were built for, for the `host` profile.
pub const BUILD_TRIPLE: &str = env!("TARGET_TRIPLE");

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown target profile '{name}' (known: {known})")]
    Unknown { name: String, known: String },
    #[error("target profile '{name}' is not valid TOML: {source}")]
    Parse {
        name: String,
        #[source]
        source: toml::de::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Rust target triple, or "native" for the build machine.
    pub triple: String,
    #[serde(default)]
    pub rustflags: Vec<String>,
    #[serde(default)]
    pub linker: Option<String>,
    /// Docker image used by `cross` for this triple.
    #[serde(default)]
    pub cross_image: Option<String>,
    /// qemu-user binary that runs this target's code on another machine.
    #[serde(default)]
    pub qemu: Option<String>,
    #[serde(default)]
    pub qemu_cpu: Option<String>,
    /// Where the target's C library lives on a Debian host (for `qemu -L`).
    #[serde(default)]
    pub qemu_sysroot: Option<String>,
    #[serde(default)]
    pub cpu: Option<CpuFacts>,
}

/// Facts about the board's CPU, for reports (peak share, cache sizes) and for the
/// emulated `/proc/cpuinfo` that makes tract choose the board's kernels under QEMU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuFacts {
    pub model: String,
    pub arch: String,
    pub cores: u32,
    pub clock_mhz: u32,
    pub simd: String,
    pub cpu_part: String,
    pub hardware: String,
    pub l1d_kib: u32,
    pub l1d_ways: u32,
    pub l1d_line_bytes: u32,
    pub l2_kib: u32,
    /// Nominal single-core f32 multiply-accumulate peak, in GMAC/s.
    pub peak_gmacs: f64,
}

impl Profile {
    /// Parses one profile from TOML text.
    pub fn parse(name: &str, text: &str) -> Result<Profile, ProfileError> {
        toml::from_str(text).map_err(|source| ProfileError::Parse {
            name: name.to_string(),
            source,
        })
    }

    /// All built-in profiles.
    pub fn all() -> Result<Vec<Profile>, ProfileError> {
        PROFILE_SOURCES
            .iter()
            .map(|(name, text)| Profile::parse(name, text))
            .collect()
    }

    /// The built-in profile of this name.
    pub fn by_name(name: &str) -> Result<Profile, ProfileError> {
        match PROFILE_SOURCES.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Profile::parse(n, text),
            None => Err(ProfileError::Unknown {
                name: name.to_string(),
                known: PROFILE_SOURCES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The Rust triple this profile builds for ("native" resolves to the build machine's).
    pub fn resolved_triple(&self) -> &str {
        if self.triple == "native" {
            BUILD_TRIPLE
        } else {
            &self.triple
        }
    }

    /// The board's `/proc/cpuinfo` (a file beside the profile), for QEMU's private
    /// sysroot, so that tract's CPU detection sees what it would see on the board.
    pub fn emulated_cpuinfo(&self) -> Option<&'static str> {
        CPUINFO_SOURCES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, text)| *text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_parses_and_names_itself() {
        for p in Profile::all().unwrap() {
            assert!(PROFILE_SOURCES.iter().any(|(n, _)| *n == p.name));
        }
        assert_eq!(Profile::all().unwrap().len(), 3);
    }

    #[test]
    fn imx6_is_a_neon_cortex_a9() {
        let p = Profile::by_name("imx6").unwrap();
        assert_eq!(p.triple, "armv7-unknown-linux-gnueabihf");
        assert_eq!(p.qemu_cpu.as_deref(), Some("cortex-a9"));
        assert!(p.rustflags.iter().any(|f| f == "target-cpu=cortex-a9"));
        let cpuinfo = p.emulated_cpuinfo().unwrap();
        assert!(cpuinfo.contains("neon"));
        assert!(cpuinfo.contains("CPU part\t: 0xc09"));
    }

    #[test]
    fn unknown_profile_lists_known_ones() {
        let err = Profile::by_name("pdp11").unwrap_err().to_string();
        assert!(err.contains("pdp11") && err.contains("imx6"), "{err}");
    }
}

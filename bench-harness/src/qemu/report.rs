//! The QEMU cost report (`edgebench/qemu-report/v1`): per-model counts per inference, the
//! paper's ratios by instruction count, JSON and markdown.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::QemuError;

pub const QEMU_REPORT_SCHEMA: &str = "edgebench/qemu-report/v1";

/// Said next to every ratio: counts are not times.
pub const RATIO_LABEL: &str = "instruction-count ratio, not latency";

/// Versions that change the counts without any code change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolVersions {
    /// First line of `qemu-arm --version`.
    pub qemu: String,
    /// The armhf C library the guest runs with (its own banner).
    pub glibc: String,
    /// `rustc --version` of the toolchain that built the guest binary.
    pub rustc: String,
}

impl ToolVersions {
    /// The fields that differ from `other`, in words (empty when equal).
    pub fn differences(&self, other: &ToolVersions) -> Vec<String> {
        let mut out = Vec::new();
        for (what, a, b) in [
            ("qemu", &self.qemu, &other.qemu),
            ("glibc", &self.glibc, &other.glibc),
            ("rustc", &self.rustc, &other.rustc),
        ] {
            if a != b {
                out.push(format!("{what}: baseline '{b}', now '{a}'"));
            }
        }
        out
    }
}

/// Counts of one model, per measured inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCounts {
    pub name: String,
    pub family: String,
    pub budget_mflops: u32,
    /// Measured inferences the counts are averaged over (the last ROIs of the run).
    pub inferences: u64,
    /// Regions of interest the plugin saw (cold first run and warm-ups included).
    pub rois_seen: u64,
    pub instructions: u64,
    pub memory_accesses: u64,
    pub loads: u64,
    pub stores: u64,
    pub l1d_accesses: Option<u64>,
    pub l1d_misses: Option<u64>,
    /// What the guest reported about itself (`edge-run bench --json`), e.g. NEON and kernels.
    #[serde(default)]
    pub guest: serde_json::Value,
    /// Wall time of the emulated run (load + all inferences), for information only.
    pub qemu_wall_s: f64,
    /// With `--per-op`: instructions per inference of every node of the optimised plan, in
    /// plan order, from a second run where each node is its own region of interest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_node: Option<Vec<super::pinned::NodeCounts>>,
}

/// Per-node counts summed by operator kind, in order of first appearance.
#[derive(Debug, Clone, PartialEq)]
pub struct OpKindCounts {
    pub op: String,
    pub nodes: usize,
    pub instructions: u64,
    pub memory_accesses: u64,
}

impl ModelCounts {
    /// [`ModelCounts::per_node`] by operator kind, most instructions first.
    pub fn per_op_kind(&self) -> Vec<OpKindCounts> {
        let mut kinds: Vec<OpKindCounts> = Vec::new();
        for n in self.per_node.iter().flatten() {
            match kinds.iter_mut().find(|k| k.op == n.op) {
                Some(k) => {
                    k.nodes += 1;
                    k.instructions += n.instructions;
                    k.memory_accesses += n.memory_accesses;
                }
                None => kinds.push(OpKindCounts {
                    op: n.op.clone(),
                    nodes: 1,
                    instructions: n.instructions,
                    memory_accesses: n.memory_accesses,
                }),
            }
        }
        kinds.sort_by_key(|k| std::cmp::Reverse(k.instructions));
        kinds
    }
}

/// FD-MobileNet against another network of the same budget, by instruction counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioRecord {
    pub budget_mflops: u32,
    pub fd_model: String,
    pub other_model: String,
    /// instructions(other) / instructions(FD-MobileNet).
    pub instruction_ratio: f64,
    /// The paper's latency speedup for the same pair.
    pub paper_latency_speedup: f64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QemuReport {
    /// Always [`QEMU_REPORT_SCHEMA`].
    pub schema: String,
    pub created_unix_s: u64,
    pub target: String,
    pub qemu_cpu: String,
    pub engine: String,
    pub warmup_runs: usize,
    pub measured_runs: usize,
    pub cache_model: bool,
    pub tools: ToolVersions,
    /// `git rev-parse HEAD` of the measured tree, when known.
    pub commit: Option<String>,
    /// The pinned command line (guest-visible parts identical for every run of a model).
    pub command_template: Vec<String>,
    /// The guest's whole environment.
    pub guest_env: Vec<String>,
    pub models: Vec<ModelCounts>,
    pub ratios: Vec<RatioRecord>,
    pub notes: Vec<String>,
}

impl QemuReport {
    pub fn model(&self, name: &str) -> Option<&ModelCounts> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn load(path: &Path) -> Result<QemuReport, QemuError> {
        let text = std::fs::read_to_string(path).map_err(|e| QemuError::BadInput {
            file: path.display().to_string(),
            problem: e.to_string(),
        })?;
        let report: QemuReport = serde_json::from_str(&text).map_err(|e| QemuError::BadInput {
            file: path.display().to_string(),
            problem: format!("not a QEMU cost report: {e}"),
        })?;
        if report.schema != QEMU_REPORT_SCHEMA {
            return Err(QemuError::BadInput {
                file: path.display().to_string(),
                problem: format!(
                    "schema '{}', expected '{QEMU_REPORT_SCHEMA}'",
                    report.schema
                ),
            });
        }
        Ok(report)
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("report serialises");
        text.push('\n');
        text
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "## Deterministic cost counts: {} under qemu-arm ({}), engine {}\n",
            self.target, self.qemu_cpu, self.engine
        );
        let _ = writeln!(
            md,
            "Per inference, averaged over {} measured inference(s) after {} warm-up run(s). Tools: {}; {}; {}.\n",
            self.measured_runs, self.warmup_runs, self.tools.qemu, self.tools.glibc, self.tools.rustc
        );
        let cache = self.cache_model;
        md.push_str("| model | budget (MFLOPs) | instructions | loads | stores |");
        if cache {
            md.push_str(" L1D misses | L1D miss rate |");
        }
        md.push_str(" NEON |\n|---|---:|---:|---:|---:|");
        if cache {
            md.push_str("---:|---:|");
        }
        md.push_str("---|\n");
        for m in &self.models {
            let neon = m.guest.pointer("/kernels/neon");
            let neon = match neon.and_then(|v| v.as_bool()) {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            let _ = write!(
                md,
                "| {} | {} | {} | {} | {} |",
                m.name,
                m.budget_mflops,
                group_digits(m.instructions),
                group_digits(m.loads),
                group_digits(m.stores)
            );
            if cache {
                let misses = m.l1d_misses.map_or("-".into(), group_digits);
                let rate = match (m.l1d_misses, m.l1d_accesses) {
                    (Some(miss), Some(acc)) if acc > 0 => {
                        format!("{:.2} %", 100.0 * miss as f64 / acc as f64)
                    }
                    _ => "-".into(),
                };
                let _ = write!(md, " {misses} | {rate} |");
            }
            let _ = writeln!(md, " {neon} |");
        }
        if self.models.iter().any(|m| m.per_node.is_some()) {
            let _ = writeln!(
                md,
                "\n### Per operator (instructions per inference, each node its own region)\n"
            );
            md.push_str(
                "| model | operator | nodes | instructions | share |\n|---|---|---:|---:|---:|\n",
            );
            for m in self.models.iter().filter(|m| m.per_node.is_some()) {
                let kinds = m.per_op_kind();
                let total: u64 = kinds.iter().map(|k| k.instructions).sum();
                for k in kinds.iter().filter(|k| k.instructions > 0) {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {:.1} % |",
                        m.name,
                        k.op,
                        k.nodes,
                        group_digits(k.instructions),
                        100.0 * k.instructions as f64 / total.max(1) as f64
                    );
                }
            }
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(md, "\n### FD-MobileNet against the others: {RATIO_LABEL}\n");
            md.push_str("| budget | pair | instruction-count ratio (other / FD) | paper's latency speedup |\n|---:|---|---:|---:|\n");
            for r in &self.ratios {
                let _ = writeln!(
                    md,
                    "| {} | {} / {} | {:.3} | {:.2} |",
                    r.budget_mflops,
                    r.other_model,
                    r.fd_model,
                    r.instruction_ratio,
                    r.paper_latency_speedup
                );
            }
            let _ = writeln!(
                md,
                "\nThese are {RATIO_LABEL}: emulated instruction counts ignore pipeline, memory and NEON timing on the board."
            );
        }
        for note in &self.notes {
            let _ = writeln!(md, "\n> {note}");
        }
        md
    }
}

/// 12345678 -> "12 345 678" (readable counts in markdown).
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// Writes `text` to `path` through a temp file and a rename; refuses to overwrite unless
/// `replace` (only the baseline is replaced, and only on `--update-baseline`).
pub fn write_new_file(path: &Path, text: &str, replace: bool) -> Result<(), QemuError> {
    use std::io::Write;
    if !replace && path.exists() {
        return Err(QemuError::WouldOverwrite(path.display().to_string()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| QemuError::io(&dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| QemuError::io(&dir, e))?;
    tmp.write_all(text.as_bytes())
        .map_err(|e| QemuError::io(path, e))?;
    if replace {
        tmp.persist(path)
            .map_err(|e| QemuError::io(path, e.error))?;
    } else {
        // persist_noclobber: a file created meanwhile is not overwritten either.
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                QemuError::WouldOverwrite(path.display().to_string())
            } else {
                QemuError::io(path, e.error)
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped_by_thousands() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1234567), "1\u{202f}234\u{202f}567");
    }

    #[test]
    fn results_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_new_file(&path, "a", false).unwrap();
        let err = write_new_file(&path, "b", false).unwrap_err();
        assert!(matches!(err, QemuError::WouldOverwrite(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a");
        write_new_file(&path, "c", true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c");
    }
}

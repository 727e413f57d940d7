//! Regression check of instruction counts against a baseline report.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{group_digits, QemuReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeStatus {
    #[serde(rename = "unchanged")]
    Unchanged,
    /// Changed, but within the threshold.
    #[serde(rename = "within threshold")]
    WithinThreshold,
    #[serde(rename = "improved")]
    Improved,
    #[serde(rename = "REGRESSION")]
    Regression,
    /// In only one of the two reports.
    #[serde(rename = "new")]
    New,
    #[serde(rename = "missing")]
    Missing,
}

impl std::fmt::Display for ChangeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChangeStatus::Unchanged => "unchanged",
            ChangeStatus::WithinThreshold => "within threshold",
            ChangeStatus::Improved => "improved",
            ChangeStatus::Regression => "**REGRESSION**",
            ChangeStatus::New => "new",
            ChangeStatus::Missing => "not measured",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub model: String,
    pub base_instructions: Option<u64>,
    pub instructions: Option<u64>,
    /// (now - base) / base.
    pub instructions_change: Option<f64>,
    pub memory_accesses_change: Option<f64>,
    pub status: ChangeStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Where the base counts came from ("baseline ci/baselines/imx6-qemu.json", "base commit abc").
    pub base_source: String,
    /// Relative growth of instructions that counts as a regression.
    pub threshold: f64,
    /// Tool-version differences between the base and now (empty when equal).
    pub tool_differences: Vec<String>,
    pub rows: Vec<ComparisonRow>,
}

fn change(now: u64, base: u64) -> f64 {
    if base == 0 {
        if now == 0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (now as f64 - base as f64) / base as f64
    }
}

impl Comparison {
    /// Compares `now` with `base`, model by model (models measured now only).
    pub fn new(
        base: &QemuReport,
        now: &QemuReport,
        base_source: &str,
        threshold: f64,
    ) -> Comparison {
        let mut rows = Vec::new();
        for m in &now.models {
            let row = match base.model(&m.name) {
                Some(b) => {
                    let c = change(m.instructions, b.instructions);
                    let status = if m.instructions == b.instructions {
                        ChangeStatus::Unchanged
                    } else if c > threshold {
                        ChangeStatus::Regression
                    } else if c < -threshold {
                        ChangeStatus::Improved
                    } else {
                        ChangeStatus::WithinThreshold
                    };
                    ComparisonRow {
                        model: m.name.clone(),
                        base_instructions: Some(b.instructions),
                        instructions: Some(m.instructions),
                        instructions_change: Some(c),
                        memory_accesses_change: Some(change(m.memory_accesses, b.memory_accesses)),
                        status,
                    }
                }
                None => ComparisonRow {
                    model: m.name.clone(),
                    base_instructions: None,
                    instructions: Some(m.instructions),
                    instructions_change: None,
                    memory_accesses_change: None,
                    status: ChangeStatus::New,
                },
            };
            rows.push(row);
        }
        Comparison {
            base_source: base_source.to_string(),
            threshold,
            tool_differences: now.tools.differences(&base.tools),
            rows,
        }
    }

    pub fn regressions(&self) -> Vec<&ComparisonRow> {
        self.rows
            .iter()
            .filter(|r| r.status == ChangeStatus::Regression)
            .collect()
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "### Instruction counts against {} (regression when growth > {:.2} %)\n",
            self.base_source,
            100.0 * self.threshold
        );
        if !self.tool_differences.is_empty() {
            let _ = writeln!(
                md,
                "> Tool versions differ from the base, so counts may move without a code change: {}.\n",
                self.tool_differences.join("; ")
            );
        }
        md.push_str("| model | base instructions | instructions | change | memory accesses change | status |\n|---|---:|---:|---:|---:|---|\n");
        let pct = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{:+.3} %", 100.0 * c));
        for r in &self.rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                r.model,
                r.base_instructions.map_or("-".into(), group_digits),
                r.instructions.map_or("-".into(), group_digits),
                pct(r.instructions_change),
                pct(r.memory_accesses_change),
                r.status
            );
        }
        let regressions = self.regressions();
        if regressions.is_empty() {
            let _ = writeln!(
                md,
                "\nNo model's instruction count grew by more than the threshold."
            );
        } else {
            let names: Vec<&str> = regressions.iter().map(|r| r.model.as_str()).collect();
            let _ = writeln!(
                md,
                "\n{} model(s) regressed: {}. Accept on purpose with `--update-baseline`.",
                regressions.len(),
                names.join(", ")
            );
        }
        md
    }
}

/// Parses a threshold: "1%", "0.5 %", or a bare number of percent ("1").
pub fn parse_threshold(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let number = t.strip_suffix('%').unwrap_or(t).trim();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p / 100.0),
        _ => Err(format!(
            "threshold '{text}': expected a non-negative percentage such as 1%"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::report::{ModelCounts, ToolVersions, QEMU_REPORT_SCHEMA};

    fn report(counts: &[(&str, u64)], rustc: &str) -> QemuReport {
        QemuReport {
            schema: QEMU_REPORT_SCHEMA.into(),
            created_unix_s: 0,
            target: "imx6".into(),
            qemu_cpu: "cortex-a9".into(),
            engine: "tract".into(),
            warmup_runs: 1,
            measured_runs: 1,
            cache_model: false,
            tools: ToolVersions {
                qemu: "q".into(),
                glibc: "g".into(),
                rustc: rustc.into(),
            },
            commit: None,
            command_template: vec![],
            guest_env: vec![],
            models: counts
                .iter()
                .map(|(n, i)| ModelCounts {
                    name: n.to_string(),
                    family: "FD-MobileNet".into(),
                    budget_mflops: 12,
                    inferences: 1,
                    rois_seen: 3,
                    instructions: *i,
                    memory_accesses: i / 2,
                    loads: i / 3,
                    stores: i / 6,
                    l1d_accesses: None,
                    l1d_misses: None,
                    guest: serde_json::Value::Null,
                    qemu_wall_s: 1.0,
                    per_node: None,
                })
                .collect(),
            ratios: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn growth_beyond_threshold_is_a_regression() {
        let base = report(&[("a", 1000), ("b", 1000), ("c", 1000), ("d", 1000)], "r1");
        let now = report(
            &[("a", 1000), ("b", 1005), ("c", 1011), ("d", 900), ("e", 5)],
            "r1",
        );
        let cmp = Comparison::new(&base, &now, "baseline", 0.01);
        let status: Vec<ChangeStatus> = cmp.rows.iter().map(|r| r.status).collect();
        use ChangeStatus::*;
        assert_eq!(
            status,
            vec![Unchanged, WithinThreshold, Regression, Improved, New]
        );
        assert_eq!(cmp.regressions().len(), 1);
        assert!(cmp.tool_differences.is_empty());
        assert!(
            cmp.to_markdown().contains("+1.100 %"),
            "{}",
            cmp.to_markdown()
        );
    }

    #[test]
    fn tool_version_change_is_said() {
        let cmp = Comparison::new(
            &report(&[("a", 1)], "r1"),
            &report(&[("a", 1)], "r2"),
            "b",
            0.01,
        );
        assert_eq!(cmp.tool_differences.len(), 1);
        assert!(cmp.to_markdown().contains("Tool versions differ"));
    }

    #[test]
    fn thresholds_parse_as_percentages() {
        assert_eq!(parse_threshold("1%").unwrap(), 0.01);
        assert_eq!(parse_threshold(" 2.5 % ").unwrap(), 0.025);
        assert_eq!(parse_threshold("1").unwrap(), 0.01);
        assert!(parse_threshold("-1%").is_err());
        assert!(parse_threshold("abc").is_err());
    }
}

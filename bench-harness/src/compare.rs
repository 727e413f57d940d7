//! `edgebench compare BASE NEW`: per-model latency change with a significance test.
//!
//! The test is the 95 % bootstrap interval of median(new) / median(base), resampling
//! both runs independently (they are separate runs, so nothing pairs their samples).
//! A change is significant when the interval excludes 1; a model regresses when it
//! is significantly slower and its point change exceeds the threshold.

use serde::{Deserialize, Serialize};

use crate::benchmark::stats;
use crate::report::BenchReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Slower,
    Faster,
    /// Significant but within the threshold.
    WithinThreshold,
    NotSignificant,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Slower => "slower",
            Change::Faster => "faster",
            Change::WithinThreshold => "within threshold",
            Change::NotSignificant => "no significant change",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelChange {
    pub name: String,
    pub engine: String,
    pub base_median_ms: f64,
    pub new_median_ms: f64,
    /// median(new) / median(base).
    pub ratio: f64,
    pub ci95: [f64; 2],
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub threshold: f64,
    pub changes: Vec<ModelChange>,
    /// "name (engine)" measured in only one of the two reports.
    pub only_in_base: Vec<String>,
    pub only_in_new: Vec<String>,
}

impl Comparison {
    pub fn has_regression(&self) -> bool {
        self.changes.iter().any(|c| c.change == Change::Slower)
    }
}

/// Classifies one ratio with its interval against a relative threshold (0.05 = 5 %).
pub fn classify(ratio: f64, ci: [f64; 2], threshold: f64) -> Change {
    let significant = ci[0] > 1.0 || ci[1] < 1.0;
    if !significant {
        Change::NotSignificant
    } else if ratio > 1.0 + threshold {
        Change::Slower
    } else if ratio < 1.0 - threshold {
        Change::Faster
    } else {
        Change::WithinThreshold
    }
}

pub fn compare(base: &BenchReport, new: &BenchReport, threshold: f64, seed: u64) -> Comparison {
    let mut changes = Vec::new();
    let mut only_in_base = Vec::new();
    for b in &base.models {
        let Some(n) = new.model(&b.name, &b.engine) else {
            only_in_base.push(format!("{} ({})", b.name, b.engine));
            continue;
        };
        if b.samples_ms.is_empty() || n.samples_ms.is_empty() {
            continue;
        }
        let (ratio, ci) =
            stats::bootstrap_ratio_of_medians(&n.samples_ms, &b.samples_ms, false, seed);
        changes.push(ModelChange {
            name: b.name.clone(),
            engine: b.engine.clone(),
            base_median_ms: stats::median(&b.samples_ms),
            new_median_ms: stats::median(&n.samples_ms),
            ratio,
            ci95: ci,
            change: classify(ratio, ci, threshold),
        });
    }
    let only_in_new = new
        .models
        .iter()
        .filter(|n| base.model(&n.name, &n.engine).is_none())
        .map(|n| format!("{} ({})", n.name, n.engine))
        .collect();
    Comparison {
        threshold,
        changes,
        only_in_base,
        only_in_new,
    }
}

pub fn rows(c: &Comparison) -> crate::output::table::Rows {
    crate::output::table::Rows {
        header: [
            "model",
            "engine",
            "base median ms",
            "new median ms",
            "change",
            "95% CI",
            "result",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        rows: c
            .changes
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.engine.clone(),
                    format!("{:.3}", m.base_median_ms),
                    format!("{:.3}", m.new_median_ms),
                    format!("{:+.1} %", (m.ratio - 1.0) * 100.0),
                    format!(
                        "[{:+.1} %, {:+.1} %]",
                        (m.ci95[0] - 1.0) * 100.0,
                        (m.ci95[1] - 1.0) * 100.0
                    ),
                    m.change.to_string(),
                ]
            })
            .collect(),
    }
}

pub fn to_markdown(c: &Comparison, base_name: &str, new_name: &str) -> String {
    let mut s = format!(
        "### edgebench: `{new_name}` against `{base_name}`\n\n{}\n",
        crate::output::table::markdown_table(&rows(c))
    );
    s.push_str(&format!(
        "\nChange = median(new) / median(base) - 1, 95 % bootstrap interval; \"slower\" means \
         significant (interval above 0) and more than {:.1} %.\n",
        c.threshold * 100.0
    ));
    if !c.only_in_base.is_empty() {
        s.push_str(&format!("\nOnly in base: {}\n", c.only_in_base.join(", ")));
    }
    if !c.only_in_new.is_empty() {
        s.push_str(&format!("\nOnly in new: {}\n", c.only_in_new.join(", ")));
    }
    s.push_str(if c.has_regression() {
        "\n**Regression: at least one model is slower beyond the threshold.**\n"
    } else {
        "\nNo model is slower beyond the threshold.\n"
    });
    s
}

/// Parses "5%", "5" (percent) or "0.05%"-style thresholds into a fraction.
pub fn parse_threshold(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    let v: f64 = t
        .parse()
        .map_err(|_| format!("threshold '{s}' is not a percentage like 5%"))?;
    if !(0.0..1000.0).contains(&v) {
        return Err(format!("threshold '{s}' out of range"));
    }
    Ok(v / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_edges() {
        assert_eq!(classify(1.2, [1.1, 1.3], 0.05), Change::Slower);
        assert_eq!(classify(1.04, [1.01, 1.07], 0.05), Change::WithinThreshold);
        assert_eq!(classify(1.2, [0.99, 1.4], 0.05), Change::NotSignificant);
        assert_eq!(classify(0.8, [0.7, 0.9], 0.05), Change::Faster);
    }

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("5%").unwrap(), 0.05);
        assert_eq!(parse_threshold("10").unwrap(), 0.1);
        assert!(parse_threshold("abc").is_err());
    }
}

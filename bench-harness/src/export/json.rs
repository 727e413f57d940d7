//! JSON reports (`edgebench/report/v1`).

use std::path::Path;

use crate::error::HarnessError;
use crate::report::{BenchReport, REPORT_SCHEMA};

pub fn to_json(report: &BenchReport) -> String {
    serde_json::to_string_pretty(report).expect("reports serialize")
}

pub fn write_json(report: &BenchReport, path: &Path) -> Result<(), HarnessError> {
    let mut text = to_json(report);
    text.push('\n');
    super::write_new_file(path, text.as_bytes())
}

/// Reads a report, checking the schema tag first so that a wrong file gives one clear line.
pub fn read_json(path: &Path) -> Result<BenchReport, HarnessError> {
    let bad = |problem: String| HarnessError::BadInput {
        file: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(REPORT_SCHEMA) => {}
        Some(other) => {
            return Err(bad(format!(
                "report schema '{other}' is not supported (expected '{REPORT_SCHEMA}')"
            )))
        }
        None => return Err(bad("not an edgebench report (no \"schema\" field)".into())),
    }
    serde_json::from_value(value).map_err(|e| bad(format!("invalid {REPORT_SCHEMA} report: {e}")))
}

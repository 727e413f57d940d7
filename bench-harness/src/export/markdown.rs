//! Markdown report, ready to paste into an issue or a README.

use std::path::Path;

use crate::error::HarnessError;
use crate::output::table::{claim_rows, counter_rows, markdown_table, result_rows, tolerance_note};
use crate::report::BenchReport;

pub fn environment_lines(report: &BenchReport) -> String {
    let e = &report.environment;
    let kernels = e
        .kernels
        .iter()
        .map(|k| {
            format!(
                "{}: {} (NEON: {}){}",
                k.engine,
                k.linalg_kernels,
                k.neon
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "n/a".into()),
                k.edge_isa
                    .as_ref()
                    .map_or(String::new(), |isa| format!(", our kernels: {isa}"))
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let o = &report.options;
    [
        format!("- Target: `{}` (profile `{}`)", e.target_triple, e.target_profile),
        format!("- CPU: {} ({} logical cores), governor {}, clock {}", e.cpu_model, e.logical_cores, e.governor,
            e.current_clock_mhz.map(|m| format!("{m:.0} MHz")).unwrap_or_else(|| "unknown".into())),
        format!("- Kernel: {}", e.kernel),
        format!("- edge-runtime {}, tract {}, edgebench {}, git {}", e.runtime_version, e.tract_version, e.harness_version, e.git_revision),
        format!("- Kernels: {kernels}"),
        format!(
            "- Threads {}, CPU pin {}, warm-up >= {} runs and {} s, measured >= {} runs and {} s (max {} s), cool-down {} s, seed {}",
            o.threads,
            o.cpu.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
            o.warmup_runs, o.warmup_time_s, o.min_runs, o.min_time_s, o.max_time_s, o.cooldown_s, o.seed
        ),
        format!("- Command: `{}`", if o.command_line.is_empty() { "(library call)".to_string() } else { o.command_line.join(" ") }),
        format!("- Peak resident memory: {}", report.peak_rss_kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "unknown".into())),
    ]
    .join("\n")
}

pub fn to_markdown(report: &BenchReport) -> String {
    let mut out = String::new();
    out.push_str("# edgebench results\n\n");
    out.push_str(&environment_lines(report));
    out.push_str("\n\n## Latency\n\n");
    out.push_str(&markdown_table(&result_rows(report)));
    if !report.claims.is_empty() {
        out.push_str("\n## The paper's claims\n\n");
        out.push_str(&markdown_table(&claim_rows(report)));
        out.push('\n');
        out.push_str(&tolerance_note(report));
        out.push('\n');
    }
    out.push_str("\n## Hardware counters per inference\n\n");
    out.push_str(&markdown_table(&counter_rows(report)));
    if !report.warnings.is_empty() {
        out.push_str("\n## Warnings\n\n");
        for w in &report.warnings {
            out.push_str(&format!("- {w}\n"));
        }
    }
    out
}

pub fn write_markdown(report: &BenchReport, path: &Path) -> Result<(), HarnessError> {
    super::write_new_file(path, to_markdown(report).as_bytes())
}

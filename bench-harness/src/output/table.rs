//! The result, claims and counter tables as rows of strings, shared by the terminal
//! (comfy-table) and the Markdown writer so both always show the same numbers.

use comfy_table::{presets, ContentArrangement, Table};

use crate::report::{BenchReport, ClaimResult, ModelResult};

pub struct Rows {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn f(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

fn multi_engine(report: &BenchReport) -> bool {
    let first = report.models.first().map(|m| m.engine.as_str());
    report
        .models
        .iter()
        .any(|m| Some(m.engine.as_str()) != first)
}

pub fn result_rows(report: &BenchReport) -> Rows {
    let header = [
        "model",
        "engine",
        "MMACs",
        "median ms",
        "95% CI of median",
        "mean ± sd ms",
        "min ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "MAD ms",
        "runs",
        "outliers",
        "GMAC/s",
        "of peak",
        "load+opt ms",
        "first ms",
    ];
    let rows = report
        .models
        .iter()
        .map(|m: &ModelResult| {
            let s = &m.stats;
            vec![
                m.name.clone(),
                m.engine.clone(),
                f(m.macs as f64 / 1e6, 2),
                f(s.median_ms, 3),
                format!("[{:.3}, {:.3}]", s.median_ci95_ms[0], s.median_ci95_ms[1]),
                format!("{:.3} ± {:.3}", s.mean_ms, s.std_dev_ms),
                f(s.min_ms, 3),
                f(s.p90_ms, 3),
                f(s.p99_ms, 3),
                f(s.max_ms, 3),
                f(s.mad_ms, 3),
                s.n.to_string(),
                s.outliers.to_string(),
                f(m.gmacs_per_s, 2),
                m.peak_share
                    .map(|p| format!("{:.1} %", p * 100.0))
                    .unwrap_or_else(|| "n/a".into()),
                f(m.load_ms + m.optimise_ms, 1),
                f(m.first_run_ms, 2),
            ]
        })
        .collect();
    Rows {
        header: header.iter().map(|s| s.to_string()).collect(),
        rows,
    }
}

pub fn claim_rows(report: &BenchReport) -> Rows {
    let show_engine = multi_engine(report);
    let mut header = vec![
        "budget",
        "FD-MobileNet over",
        "claimed",
        "measured",
        "95% CI",
        "verdict",
    ];
    if show_engine {
        header.insert(0, "engine");
    }
    let rows = report
        .claims
        .iter()
        .map(|c: &ClaimResult| {
            let mut row = vec![
                format!("{} MFLOPs", c.budget_mflops),
                format!("{} ({})", c.other_family, c.other_model),
                format!("{:.2}x", c.claimed_speedup),
                format!("{:.2}x", c.measured_speedup),
                format!(
                    "[{:.2}, {:.2}]{}",
                    c.ci95[0],
                    c.ci95[1],
                    if c.paired { "" } else { " unpaired" }
                ),
                c.verdict.to_string(),
            ];
            if show_engine {
                row.insert(0, c.engine.clone());
            }
            row
        })
        .collect();
    Rows {
        header: header.iter().map(|s| s.to_string()).collect(),
        rows,
    }
}

pub fn counter_rows(report: &BenchReport) -> Rows {
    let header = [
        "model",
        "engine",
        "cycles",
        "instructions",
        "IPC",
        "cache refs",
        "cache misses",
        "branch misses",
        "status",
    ];
    let opt = |v: Option<f64>, d: usize| v.map(|x| f(x, d)).unwrap_or_else(|| "-".into());
    let rows = report
        .models
        .iter()
        .map(|m| {
            let c = &m.counters;
            vec![
                m.name.clone(),
                m.engine.clone(),
                opt(c.cycles, 0),
                opt(c.instructions, 0),
                opt(c.ipc, 2),
                opt(c.cache_references, 0),
                opt(c.cache_misses, 0),
                opt(c.branch_misses, 0),
                c.status.clone(),
            ]
        })
        .collect();
    Rows {
        header: header.iter().map(|s| s.to_string()).collect(),
        rows,
    }
}

/// The claims' tolerance sentence printed under every claims table.
pub fn tolerance_note(report: &BenchReport) -> String {
    format!(
        "Speedup = median latency of the other network / median latency of FD-MobileNet \
         (95 % bootstrap interval, resampled by interleaved round). \"holds\" when the interval \
         reaches claimed x (1 - {:.0} %); \"inconclusive\" when it is wider than {:.0} % of the \
         measured speedup. Claims: {}.",
        report.claims_tolerance * 100.0,
        report.claims_max_ci_relative_width * 100.0,
        report.claims_source
    )
}

pub fn terminal_table(rows: &Rows) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(rows.header.clone());
    for r in &rows.rows {
        t.add_row(r.clone());
    }
    t.to_string()
}

/// A GitHub-flavoured Markdown table.
pub fn markdown_table(rows: &Rows) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = String::new();
    out.push_str(&format!(
        "| {} |\n",
        rows.header
            .iter()
            .map(|h| esc(h))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    out.push_str(&format!("|{}\n", "---|".repeat(rows.header.len())));
    for r in &rows.rows {
        out.push_str(&format!(
            "| {} |\n",
            r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}

/// The full terminal summary: results, claims with tolerance, counters, warnings.
pub fn terminal_summary(report: &BenchReport) -> String {
    let mut out = String::new();
    out.push_str(&terminal_table(&result_rows(report)));
    out.push('\n');
    if !report.claims.is_empty() {
        out.push_str("\nClaims of the FD-MobileNet paper on this machine:\n");
        out.push_str(&terminal_table(&claim_rows(report)));
        out.push('\n');
        out.push_str(&tolerance_note(report));
        out.push('\n');
    }
    let counters = &report.models;
    if counters.iter().any(|m| m.counters.is_available()) {
        out.push_str("\nHardware counters per inference:\n");
        out.push_str(&terminal_table(&counter_rows(report)));
        out.push('\n');
    } else if let Some(m) = counters.first() {
        out.push_str(&format!("\nHardware counters: {}\n", m.counters.status));
    }
    if let Some(kib) = report.peak_rss_kib {
        out.push_str(&format!(
            "Peak resident memory: {:.1} MiB\n",
            kib as f64 / 1024.0
        ));
    }
    for w in &report.warnings {
        out.push_str(&format!("Warning: {w}\n"));
    }
    out
}

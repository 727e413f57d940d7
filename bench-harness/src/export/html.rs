//! Self-contained HTML report with inline SVG charts.
//!
//! The SVG is written by hand: the three charts are a scatter with error bars, bars
//! with whiskers and stacked bars, a few dozen elements each. plotters' SVG backend
//! would need its font stack (or text disabled) to lay out labels, adds a large
//! dependency to the armv7 build, and gives less control over self-contained output
//! (no external fonts, CSS or scripts), which is what a report mailed around needs.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::HarnessError;
use crate::export::markdown::environment_lines;
use crate::output::table::{claim_rows, counter_rows, result_rows, tolerance_note, Rows};
use crate::report::BenchReport;

const W: f64 = 720.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
const PALETTE: [&str; 8] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn family_colour(family: &str) -> &'static str {
    match family {
        "FD-MobileNet" => PALETTE[0],
        "MobileNet" => PALETTE[1],
        "ShuffleNet" => PALETTE[2],
        _ => PALETTE[7],
    }
}

/// "Nice" axis maximum: 1, 2 or 5 times a power of ten at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

struct Plot {
    svg: String,
    x_max: f64,
    y_max: f64,
}

impl Plot {
    fn new(title: &str, x_label: &str, y_label: &str, x_max: f64, y_max: f64) -> Plot {
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="18" text-anchor="middle" font-weight="bold">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            esc(title)
        );
        let (x0, y0, x1, y1) = (LEFT, H - BOTTOM, W - RIGHT, TOP);
        let _ = write!(
            svg,
            r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#000"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#000"/>"##
        );
        for i in 0..=5 {
            let f = i as f64 / 5.0;
            let x = x0 + f * (x1 - x0);
            let y = y0 - f * (y0 - y1);
            // An empty axis label marks a category axis: no numeric ticks there.
            if !x_label.is_empty() {
                let _ = write!(
                    svg,
                    r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
                    y0 + 15.0,
                    fmt_tick(f * x_max)
                );
            }
            if !y_label.is_empty() {
                let _ = write!(
                    svg,
                    r##"<text x="{}" y="{}" text-anchor="end">{}</text><line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/>"##,
                    x0 - 5.0,
                    y + 4.0,
                    fmt_tick(f * y_max)
                );
            }
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(15,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            H - 12.0,
            esc(x_label),
            (y0 + y1) / 2.0,
            esc(y_label)
        );
        Plot { svg, x_max, y_max }
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + x / self.x_max * (W - RIGHT - LEFT)
    }

    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - y / self.y_max * (H - BOTTOM - TOP)
    }

    fn legend(&mut self, i: usize, colour: &str, label: &str) {
        let y = TOP + 10.0 + 18.0 * i as f64;
        let x = W - RIGHT + 15.0;
        let _ = write!(
            self.svg,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            x + 18.0,
            y,
            esc(label)
        );
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 || v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Median latency (with its 95 % interval) against MACs, one line per family and engine.
pub fn latency_vs_macs_svg(report: &BenchReport) -> String {
    let x_max = nice_max(
        report
            .models
            .iter()
            .map(|m| m.macs as f64 / 1e6)
            .fold(0.0, f64::max),
    );
    let y_max = nice_max(
        report
            .models
            .iter()
            .map(|m| m.stats.median_ci95_ms[1])
            .fold(0.0, f64::max),
    );
    let mut p = Plot::new(
        "Latency against MACs",
        "million MACs",
        "median latency (ms)",
        x_max,
        y_max,
    );
    let mut series: Vec<(String, String)> = Vec::new();
    for m in &report.models {
        let key = (m.family.clone(), m.engine.clone());
        if !series.contains(&key) {
            series.push(key);
        }
    }
    for (i, (family, engine)) in series.iter().enumerate() {
        let colour = family_colour(family);
        let dash = if engine == "edge" {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let mut pts: Vec<_> = report
            .models
            .iter()
            .filter(|m| &m.family == family && &m.engine == engine)
            .collect();
        pts.sort_by_key(|m| m.macs);
        let path: Vec<String> = pts
            .iter()
            .map(|m| {
                format!(
                    "{:.1},{:.1}",
                    p.px(m.macs as f64 / 1e6),
                    p.py(m.stats.median_ms)
                )
            })
            .collect();
        let _ = write!(
            p.svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
            path.join(" ")
        );
        for m in pts {
            let x = p.px(m.macs as f64 / 1e6);
            let (lo, hi) = (
                p.py(m.stats.median_ci95_ms[0]),
                p.py(m.stats.median_ci95_ms[1]),
            );
            let _ = write!(
                p.svg,
                r#"<line x1="{x:.1}" y1="{lo:.1}" x2="{x:.1}" y2="{hi:.1}" stroke="{colour}"/><circle cx="{x:.1}" cy="{:.1}" r="4" fill="{colour}"><title>{} ({}): {:.3} ms, {:.2} M MACs</title></circle>"#,
                p.py(m.stats.median_ms),
                esc(&m.name),
                esc(&m.engine),
                m.stats.median_ms,
                m.macs as f64 / 1e6
            );
        }
        p.legend(i, colour, &format!("{family} ({engine})"));
    }
    p.finish()
}

/// Measured speedups as bars with their 95 % intervals, the claimed values as black ticks.
pub fn speedup_svg(report: &BenchReport) -> String {
    let y_max = nice_max(
        report
            .claims
            .iter()
            .flat_map(|c| [c.ci95[1], c.claimed_speedup, c.measured_speedup])
            .fold(1.0, f64::max)
            * 1.05,
    );
    let n = report.claims.len().max(1) as f64;
    let mut p = Plot::new(
        "Speedup of FD-MobileNet (measured vs claimed)",
        "",
        "speedup (x)",
        n,
        y_max,
    );
    // Category axis: replace the numeric x ticks' meaning with labels under each bar.
    let slot = (W - RIGHT - LEFT) / n;
    let one = p.py(1.0);
    let _ = write!(
        p.svg,
        r##"<line x1="{LEFT}" y1="{one:.1}" x2="{}" y2="{one:.1}" stroke="#999" stroke-dasharray="4,3"/>"##,
        W - RIGHT
    );
    for (i, c) in report.claims.iter().enumerate() {
        let colour = family_colour(&c.other_family);
        let x = LEFT + slot * (i as f64 + 0.2);
        let bw = slot * 0.6;
        let top = p.py(c.measured_speedup);
        let _ = write!(
            p.svg,
            r#"<rect x="{x:.1}" y="{top:.1}" width="{bw:.1}" height="{:.1}" fill="{colour}" opacity="0.7"><title>{} MFLOPs, over {} ({}): {:.2}x [{:.2}, {:.2}], claimed {:.2}x: {}</title></rect>"#,
            p.py(0.0) - top,
            c.budget_mflops,
            esc(&c.other_model),
            esc(&c.engine),
            c.measured_speedup,
            c.ci95[0],
            c.ci95[1],
            c.claimed_speedup,
            c.verdict
        );
        let cx = x + bw / 2.0;
        let _ = write!(
            p.svg,
            r##"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#000" stroke-width="1.5"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000" stroke-width="3"/><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}/{}</text>"##,
            p.py(c.ci95[0]),
            p.py(c.ci95[1]),
            x - 3.0,
            p.py(c.claimed_speedup),
            x + bw + 3.0,
            p.py(c.claimed_speedup),
            H - BOTTOM + 28.0,
            c.budget_mflops,
            esc(&c.engine)
        );
    }
    p.legend(0, family_colour("MobileNet"), "over MobileNet");
    p.legend(1, family_colour("ShuffleNet"), "over ShuffleNet");
    p.legend(2, "#000", "claimed (tick), 95 % CI");
    p.finish()
}

/// MACs of each model split by output feature-map resolution (stacked bars).
pub fn macs_by_resolution_svg(report: &BenchReport) -> String {
    let mut models: Vec<_> = Vec::new();
    for m in &report.models {
        if !models
            .iter()
            .any(|x: &&crate::report::ModelResult| x.name == m.name)
        {
            models.push(m);
        }
    }
    let mut resolutions: Vec<usize> = models
        .iter()
        .flat_map(|m| m.macs_by_resolution.iter().map(|r| r.height))
        .collect();
    resolutions.sort_unstable_by(|a, b| b.cmp(a));
    resolutions.dedup();
    let x_max = nice_max(
        models
            .iter()
            .map(|m| m.macs as f64 / 1e6)
            .fold(0.0, f64::max),
    );
    let n = models.len().max(1) as f64;
    let mut p = Plot::new(
        "MACs by feature-map resolution",
        "million MACs",
        "",
        x_max,
        n,
    );
    let slot = (H - BOTTOM - TOP) / n;
    for (i, m) in models.iter().enumerate() {
        let y = TOP + slot * i as f64 + slot * 0.15;
        let bh = slot * 0.7;
        let mut x = LEFT;
        for r in &m.macs_by_resolution {
            let w = p.px(r.macs as f64 / 1e6) - LEFT;
            let k = resolutions.iter().position(|h| *h == r.height).unwrap_or(0);
            let _ = write!(
                p.svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bh:.1}" fill="{}"><title>{}: {}x{}: {:.2} M MACs</title></rect>"#,
                PALETTE[k % PALETTE.len()],
                esc(&m.name),
                r.height,
                r.width,
                r.macs as f64 / 1e6
            );
            x += w;
        }
        let _ = write!(
            p.svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
            x + 4.0,
            y + bh * 0.7,
            esc(&m.name)
        );
    }
    for (k, h) in resolutions.iter().enumerate() {
        p.legend(k, PALETTE[k % PALETTE.len()], &format!("{h}x{h}"));
    }
    p.finish()
}

fn html_table(rows: &Rows) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in &rows.header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in &rows.rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", esc(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

pub fn to_html(report: &BenchReport) -> String {
    let mut s = String::new();
    s.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>edgebench results</title>\
         <style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}\
         table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}\
         th{background:#f3f3f3}td:first-child{text-align:left}svg{display:block;margin:1em 0}</style></head><body>\n",
    );
    s.push_str("<h1>edgebench results</h1>\n<ul>");
    for line in environment_lines(report).lines() {
        let _ = write!(s, "<li>{}</li>", esc(line.trim_start_matches("- ")));
    }
    s.push_str("</ul>\n<h2>Latency</h2>\n");
    s.push_str(&html_table(&result_rows(report)));
    s.push_str(&latency_vs_macs_svg(report));
    if !report.claims.is_empty() {
        s.push_str("\n<h2>The paper's claims</h2>\n");
        s.push_str(&html_table(&claim_rows(report)));
        let _ = write!(s, "<p>{}</p>", esc(&tolerance_note(report)));
        s.push_str(&speedup_svg(report));
    }
    s.push_str("\n<h2>Where the MACs are</h2>\n");
    s.push_str(&macs_by_resolution_svg(report));
    s.push_str("\n<h2>Hardware counters per inference</h2>\n");
    s.push_str(&html_table(&counter_rows(report)));
    if !report.warnings.is_empty() {
        s.push_str("\n<h2>Warnings</h2><ul>");
        for w in &report.warnings {
            let _ = write!(s, "<li>{}</li>", esc(w));
        }
        s.push_str("</ul>");
    }
    s.push_str("\n</body></html>\n");
    s
}

pub fn write_html(report: &BenchReport, path: &Path) -> Result<(), HarnessError> {
    super::write_new_file(path, to_html(report).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(100.0), 100.0);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}

//! indicatif progress on a terminal; nothing when stderr is piped.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::benchmark::ProgressSink;

pub struct TerminalProgress {
    bar: Option<ProgressBar>,
}

impl TerminalProgress {
    /// A spinner/bar on stderr when it is a terminal and `quiet` is false.
    pub fn new(quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return TerminalProgress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        TerminalProgress { bar: Some(bar) }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl ProgressSink for TerminalProgress {
    fn phase(&self, message: &str) {
        if let Some(b) = &self.bar {
            b.set_message(message.to_string());
        }
    }
    fn rounds(&self, group: &str, done: usize, expected: usize) {
        if let Some(b) = &self.bar {
            b.set_length(expected as u64);
            b.set_position(done as u64);
            b.set_message(format!("rounds of {group}"));
        }
    }
    fn note(&self, message: &str) {
        if let Some(b) = &self.bar {
            b.println(format!("Warning: {message}"));
        }
    }
}

/// Plain progress lines on stderr, for logs and remote runs (`edgebench device` streams
/// them from the board): every phase, and measured rounds at each quarter.
pub struct LineProgress {
    /// (group, last quarter printed) of the rounds in progress.
    last: std::sync::Mutex<(String, usize)>,
}

impl LineProgress {
    pub fn new() -> Self {
        LineProgress {
            last: std::sync::Mutex::new((String::new(), 0)),
        }
    }
}

impl Default for LineProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressSink for LineProgress {
    fn phase(&self, message: &str) {
        eprintln!("progress: {message}");
    }
    fn rounds(&self, group: &str, done: usize, expected: usize) {
        let quarter = (done * 4) / expected.max(1);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.0 != group {
            *last = (group.to_string(), 0);
        }
        if quarter > last.1 {
            last.1 = quarter;
            eprintln!("progress: {group}: {done} of about {expected} rounds");
        }
    }
    fn note(&self, message: &str) {
        eprintln!("Warning: {message}");
    }
}

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

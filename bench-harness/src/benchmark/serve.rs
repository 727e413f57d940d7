//! Inferences timed on request, so that a driver can interleave them with another
//! runtime's (`bench-harness/peers/onnxruntime_bench.py --interleaved`).
//!
//! On a shared machine the speed drifts within seconds, and two runtimes measured one
//! after the other for a second or more each see different machines. A driver that asks
//! for a few of our inferences, then times a few of its own, and so on, puts both sides
//! of every pair inside the same fraction of a second.
//!
//! The protocol, one line each way:
//! - first, one JSON header line: `{"schema": SERVE_SCHEMA, "model", "engine",
//!   "edge_isa", "warmup_runs"}`, once the model is loaded and warmed up;
//! - then, for every request line holding a count `N` (1 to [`MAX_RUNS_PER_REQUEST`]),
//!   `N` inferences and one reply line of their times in milliseconds, space-separated.
//!
//! Blank lines are skipped; the end of the requests ends the session. Anything else is a
//! bad-input error naming the line, after the replies to the lines before it.

use std::io::{BufRead, Write};
use std::time::Duration;

use edge_runtime::{measure, EdgeModel};
use serde_json::json;
use tract_onnx::prelude::Tensor;

use crate::error::HarnessError;
use crate::timer::ms;

/// The header line's schema: the protocol's version.
pub const SERVE_SCHEMA: &str = "edgebench/serve-runs/v1";

/// The most inferences one request may ask for: a mistyped count would otherwise hold
/// the driver for minutes.
pub const MAX_RUNS_PER_REQUEST: usize = 10_000;

/// Warms `model` up with `warmup_runs` inferences on `input`, writes the header, then
/// serves the requests read from `requests` (named `source` in errors) until they end.
/// Returns the number of inferences served.
pub fn serve_runs(
    model: &EdgeModel,
    model_name: &str,
    input: &Tensor,
    warmup_runs: usize,
    requests: impl BufRead,
    mut replies: impl Write,
    source: &str,
) -> Result<usize, HarnessError> {
    let run = || {
        measure::time_one_run(model, input).map_err(|source| HarnessError::Runtime {
            model: model_name.to_string(),
            source,
        })
    };
    for _ in 0..warmup_runs {
        run()?;
    }
    let kernels = edge_runtime::kernel_info(model.engine());
    let header = json!({
        "schema": SERVE_SCHEMA,
        "model": model_name,
        "engine": model.engine().to_string(),
        "edge_isa": kernels.edge_isa,
        "warmup_runs": warmup_runs,
    });
    let write_err = |e| HarnessError::io("stdout", e);
    writeln!(replies, "{header}").map_err(write_err)?;
    replies.flush().map_err(write_err)?;
    let mut served = 0;
    for (index, line) in requests.lines().enumerate() {
        let line = line.map_err(|e| HarnessError::io(source, e))?;
        let request = line.trim();
        if request.is_empty() {
            continue;
        }
        let count = parse_count(request).ok_or_else(|| HarnessError::BadInput {
            file: source.to_string(),
            problem: format!(
                "line {}: {request:?} is not a number of runs (1 to {MAX_RUNS_PER_REQUEST})",
                index + 1
            ),
        })?;
        let times = (0..count)
            .map(|_| run())
            .collect::<Result<Vec<Duration>, _>>()?;
        let reply: Vec<String> = times.iter().map(|&t| format!("{:.6}", ms(t))).collect();
        writeln!(replies, "{}", reply.join(" ")).map_err(write_err)?;
        replies.flush().map_err(write_err)?;
        served += count;
    }
    Ok(served)
}

fn parse_count(request: &str) -> Option<usize> {
    request
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_RUNS_PER_REQUEST).contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_whole_numbers_within_the_limit() {
        assert_eq!(parse_count("1"), Some(1));
        assert_eq!(parse_count("10000"), Some(MAX_RUNS_PER_REQUEST));
        for bad in ["0", "10001", "-3", "2.5", "five", "3 4"] {
            assert_eq!(parse_count(bad), None, "{bad}");
        }
    }
}

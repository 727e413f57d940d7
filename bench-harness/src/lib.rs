//! edgebench: latency benchmarks with statistics, the paper's claims checked,
//! device runs over SSH and deterministic cost counts under QEMU.
//!
//! Library entry point: [`run_benchmark`] with a [`RunConfig`] and a
//! [`ProgressSink`] ([`NoProgress`] when nobody watches).

pub mod benchmark;
pub mod claims;
pub mod compare;
pub mod counters;
pub mod device;
pub mod environment;
pub mod error;
pub mod export;
pub mod output;
pub mod profile;
pub mod qemu;
pub mod report;
pub mod timer;

pub use benchmark::{run_benchmark, select_models, NoProgress, ProgressSink, RunConfig};
pub use error::HarnessError;
pub use report::{BenchReport, REPORT_SCHEMA};

//! The versioned report schema (`edgebench/report/v1`), written as JSON and read back
//! by `edgebench compare`. `schema/report-v1.json` is its JSON Schema; tests check
//! that every report we write validates against it. Add fields only with
//! `#[serde(default)]`; anything else needs a new schema version.

use serde::{Deserialize, Serialize};

use crate::benchmark::stats::LatencyStats;
use crate::claims::Verdict;
use crate::environment::Environment;

pub const REPORT_SCHEMA: &str = "edgebench/report/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    pub environment: Environment,
    pub options: RunOptionsRecord,
    pub models: Vec<ModelResult>,
    pub claims: Vec<ClaimResult>,
    /// Claims settings used for the verdicts.
    pub claims_source: String,
    pub claims_tolerance: f64,
    pub claims_max_ci_relative_width: f64,
    /// Peak resident set size of the benchmarking process (getrusage), KiB.
    pub peak_rss_kib: Option<u64>,
    /// Noise warnings and other remarks, in words.
    pub warnings: Vec<String>,
}

/// Every option of the run, as given (for reproducibility).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOptionsRecord {
    pub models: Vec<String>,
    /// The user's own ONNX files (`--model-file`), as given.
    #[serde(default)]
    pub model_files: Vec<String>,
    pub engines: Vec<String>,
    pub target_profile: String,
    pub model_dir: String,
    pub export: bool,
    pub min_runs: usize,
    pub min_time_s: f64,
    pub max_time_s: f64,
    pub warmup_runs: usize,
    pub warmup_time_s: f64,
    pub cooldown_s: f64,
    pub cpu: Option<usize>,
    pub threads: usize,
    pub seed: u64,
    pub counters: bool,
    /// The command line, when run from `edgebench`.
    pub command_line: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolutionMacsRecord {
    pub height: usize,
    pub width: usize,
    pub macs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    pub name: String,
    /// "FD-MobileNet", "MobileNet" or "ShuffleNet" (or "other").
    pub family: String,
    pub width_multiplier: f32,
    pub budget_mflops: u32,
    /// "tract" or "edge".
    pub engine: String,
    pub file: String,
    pub macs: u64,
    pub params: u64,
    pub macs_by_resolution: Vec<ResolutionMacsRecord>,
    pub load_ms: f64,
    pub optimise_ms: f64,
    pub first_run_ms: f64,
    pub warmup_runs: usize,
    /// Interleaving group (the budget) and the round of each sample: sample i of every
    /// model in a group comes from round i, which pairs them for speedup intervals.
    pub group: String,
    /// Every measured latency, in run order, milliseconds.
    pub samples_ms: Vec<f64>,
    pub stats: LatencyStats,
    /// MACs / median latency.
    pub gmacs_per_s: f64,
    /// gmacs_per_s / nominal peak of the target profile, when it gives one.
    pub peak_share: Option<f64>,
    pub counters: CounterRecord,
}

/// Hardware counters per inference, or the reason they are missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterRecord {
    /// "available" or "unavailable: <reason>".
    pub status: String,
    pub inferences: u64,
    pub cycles: Option<f64>,
    pub instructions: Option<f64>,
    pub ipc: Option<f64>,
    pub cache_references: Option<f64>,
    pub cache_misses: Option<f64>,
    pub branch_misses: Option<f64>,
}

impl CounterRecord {
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        CounterRecord {
            status: format!("unavailable: {reason}"),
            inferences: 0,
            cycles: None,
            instructions: None,
            ipc: None,
            cache_references: None,
            cache_misses: None,
            branch_misses: None,
        }
    }

    pub fn is_available(&self) -> bool {
        self.status == "available"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimResult {
    pub budget_mflops: u32,
    pub engine: String,
    pub fd_model: String,
    pub other_model: String,
    pub other_family: String,
    pub claimed_speedup: f64,
    /// median(other) / median(FD-MobileNet).
    pub measured_speedup: f64,
    pub ci95: [f64; 2],
    /// True when the interval came from round-paired resampling.
    pub paired: bool,
    pub verdict: Verdict,
}

impl BenchReport {
    pub fn model(&self, name: &str, engine: &str) -> Option<&ModelResult> {
        self.models
            .iter()
            .find(|m| m.name == name && m.engine == engine)
    }
}

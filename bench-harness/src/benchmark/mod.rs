//! Scheduling and measurement: models of a budget measured interleaved in rounds.

pub mod serve;
pub mod stats;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_runtime::{measure, EdgeModel, Engine, LoadTimings, RuntimeOptions};
use model_zoo::{BenchmarkModel, CostReport};
use tract_onnx::prelude::Tensor;

use crate::claims::{self, ClaimsFile};
use crate::counters;
use crate::environment;
use crate::error::HarnessError;
use crate::report::{
    BenchReport, ClaimResult, CounterRecord, ModelResult, ResolutionMacsRecord, RunOptionsRecord,
    REPORT_SCHEMA,
};
use crate::timer::{self, ms};

/// Inferences with the hardware counters enabled, after the timed runs.
pub const COUNTER_RUNS: usize = 5;

/// Everything a benchmark run needs. `Default` is `edgebench run` with no options.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Model names from the zoo, in the order given.
    pub models: Vec<String>,
    pub model_dir: PathBuf,
    /// The user's own ONNX files, benchmarked after the zoo models. A file named like a
    /// zoo model (`fd_mobilenet_0.25.onnx`, say with imported weights) counts as that
    /// model, so its budget group and claims apply; any other file is measured in the
    /// group "model files".
    pub model_files: Vec<PathBuf>,
    /// Export missing models before benchmarking (false: they must exist).
    pub export: bool,
    pub engines: Vec<Engine>,
    /// Target profile name, for the peak GMAC/s and the report.
    pub target: String,
    pub warmup_runs: usize,
    pub warmup_time: Duration,
    pub min_runs: usize,
    pub min_time: Duration,
    pub max_time: Duration,
    /// Pause before each model's warm-up and before each group's measured rounds.
    pub cooldown: Duration,
    pub cpu: Option<usize>,
    pub threads: usize,
    pub seed: u64,
    /// Read perf-event counters after the timed runs.
    pub counters: bool,
    pub claims: ClaimsFile,
    pub command_line: Vec<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            models: model_zoo::benchmark_models()
                .iter()
                .map(|m| m.name.to_string())
                .collect(),
            model_dir: PathBuf::from(model_zoo::DEFAULT_MODEL_DIR),
            model_files: Vec::new(),
            export: true,
            engines: vec![Engine::Tract],
            target: "host".into(),
            warmup_runs: 10,
            warmup_time: Duration::from_secs(1),
            min_runs: 50,
            min_time: Duration::from_secs(3),
            max_time: Duration::from_secs(60),
            cooldown: Duration::ZERO,
            cpu: None,
            threads: 1,
            seed: 0,
            counters: true,
            claims: ClaimsFile::builtin(),
            command_line: Vec::new(),
        }
    }
}

/// Progress of a run, for a progress bar (or nothing).
pub trait ProgressSink {
    /// A new phase starts ("export", "load fd_mobilenet_0.25 (tract)", ...).
    fn phase(&self, message: &str);
    /// Measured rounds of `group`: `done` of about `expected` rounds.
    fn rounds(&self, group: &str, done: usize, expected: usize);
    /// A finished phase's remark (noise warnings and the like).
    fn note(&self, message: &str);
}

/// A sink that ignores everything (library use, piped output).
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn phase(&self, _: &str) {}
    fn rounds(&self, _: &str, _: usize, _: usize) {}
    fn note(&self, _: &str) {}
}

/// Resolves `--models` and `--budget` into zoo model names (one-line errors).
pub fn select_models(list: Option<&str>, budget: Option<u32>) -> Result<Vec<String>, HarnessError> {
    let zoo = model_zoo::benchmark_models();
    let mut chosen: Vec<BenchmarkModel> = match list {
        None => zoo.clone(),
        Some(list) => {
            let mut v = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let m = model_zoo::find_model(name).ok_or_else(|| HarnessError::BadInput {
                    file: "--models".into(),
                    problem: format!(
                        "unknown model '{name}' (known: {})",
                        zoo.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
                    ),
                })?;
                if !v.iter().any(|x: &BenchmarkModel| x.name == m.name) {
                    v.push(m);
                }
            }
            v
        }
    };
    if let Some(b) = budget {
        if !zoo.iter().any(|m| m.budget_mflops == b) {
            return Err(HarnessError::BadInput {
                file: "--budget".into(),
                problem: format!("unknown budget {b} (known: 140, 40, 12)"),
            });
        }
        chosen.retain(|m| m.budget_mflops == b);
    }
    if chosen.is_empty() {
        return Err(HarnessError::BadInput {
            file: "--models".into(),
            problem: "no model selected".into(),
        });
    }
    Ok(chosen.iter().map(|m| m.name.to_string()).collect())
}

/// Group of the user's model files that are not zoo models.
pub const MODEL_FILES_GROUP: &str = "model files";

/// A model to benchmark and the file it is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedModel {
    pub name: String,
    /// The zoo model of that name, when it is one.
    pub zoo: Option<BenchmarkModel>,
    pub path: PathBuf,
    /// Interleaving group: "<budget> MFLOPs" for zoo models, else [`MODEL_FILES_GROUP`].
    pub group: String,
}

/// The model name of a user's file: its file stem, as the user wrote it.
pub fn model_file_name(path: &Path) -> Result<String, HarnessError> {
    let bad = |problem: &str| HarnessError::BadInput {
        file: path.display().to_string(),
        problem: problem.into(),
    };
    if !path.is_file() {
        return Err(bad("no such model file (--model-file)"));
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("the file name is not valid UTF-8 or is empty"))?;
    if stem.contains(',') {
        return Err(bad(
            "a model file name cannot contain a comma (model lists are comma-separated)",
        ));
    }
    Ok(stem.to_string())
}

fn zoo_group(m: &BenchmarkModel) -> String {
    format!("{} MFLOPs", m.budget_mflops)
}

/// One model with one engine, being measured.
struct Entry {
    spec: PreparedModel,
    engine: Engine,
    path: PathBuf,
    cost: CostReport,
    model: EdgeModel,
    input: Tensor,
    load_ms: f64,
    optimise_ms: f64,
    first_run_ms: f64,
    warmup_runs: usize,
    warmup_time: Duration,
    samples: Vec<Duration>,
    measured_time: Duration,
}

impl Entry {
    fn label(&self) -> String {
        format!("{} ({})", self.spec.name, self.engine)
    }

    fn run_once(&self) -> Result<Duration, HarnessError> {
        measure::time_one_run(&self.model, &self.input).map_err(|source| HarnessError::Runtime {
            model: self.path.display().to_string(),
            source,
        })
    }
}

fn seed_for(base: u64, name: &str, engine: Engine) -> u64 {
    let mut h = DefaultHasher::new();
    (name, engine.to_string()).hash(&mut h);
    base ^ h.finish()
}

/// Makes sure the model files exist (exporting zoo models when allowed) and checks the
/// user's files; names must be unique across both.
pub fn prepare_models(cfg: &RunConfig) -> Result<Vec<PreparedModel>, HarnessError> {
    let models: Vec<BenchmarkModel> = cfg
        .models
        .iter()
        .map(|n| {
            model_zoo::find_model(n).ok_or_else(|| HarnessError::BadInput {
                file: "--models".into(),
                problem: format!("unknown model '{n}'"),
            })
        })
        .collect::<Result<_, _>>()?;
    let path_of = |m: &BenchmarkModel| cfg.model_dir.join(format!("{}.onnx", m.name));
    let missing: Vec<String> = models
        .iter()
        .filter(|m| !path_of(m).is_file())
        .map(|m| m.name.to_string())
        .collect();
    if !missing.is_empty() {
        if !cfg.export {
            let m = models
                .iter()
                .find(|m| !path_of(m).is_file())
                .expect("missing");
            return Err(HarnessError::BadInput {
                file: path_of(m).display().to_string(),
                problem: "model file not found (run without --no-export, or copy it there)".into(),
            });
        }
        model_zoo::export_models(
            &cfg.model_dir,
            Some(&missing),
            &model_zoo::ExportOptions::default(),
        )?;
    }
    let mut prepared: Vec<PreparedModel> = models
        .into_iter()
        .map(|m| PreparedModel {
            name: m.name.to_string(),
            path: path_of(&m),
            group: zoo_group(&m),
            zoo: Some(m),
        })
        .collect();
    for path in &cfg.model_files {
        let name = model_file_name(path)?;
        if prepared.iter().any(|p| p.name == name) {
            return Err(HarnessError::BadInput {
                file: path.display().to_string(),
                problem: format!("a model named '{name}' is already selected; rename the file"),
            });
        }
        let zoo = model_zoo::find_model(&name);
        prepared.push(PreparedModel {
            group: zoo
                .as_ref()
                .map_or_else(|| MODEL_FILES_GROUP.to_string(), zoo_group),
            name,
            zoo,
            path: path.clone(),
        });
    }
    if prepared.is_empty() {
        return Err(HarnessError::BadInput {
            file: "--models".into(),
            problem: "no model selected".into(),
        });
    }
    Ok(prepared)
}

fn load_entry(
    spec: PreparedModel,
    engine: Engine,
    cfg: &RunConfig,
    cost: CostReport,
) -> Result<Entry, HarnessError> {
    let path = spec.path.clone();
    let (model, timings, input) = load_with_input(&path, engine, cfg.threads, cfg.seed)?;
    let first = measure::time_one_run(&model, &input).map_err(|source| HarnessError::Runtime {
        model: path.display().to_string(),
        source,
    })?;
    Ok(Entry {
        spec,
        engine,
        path,
        cost,
        model,
        input,
        load_ms: ms(timings.load),
        optimise_ms: ms(timings.optimise),
        first_run_ms: ms(first),
        warmup_runs: 0,
        warmup_time: Duration::ZERO,
        samples: Vec::new(),
        measured_time: Duration::ZERO,
    })
}

/// Loads `path` on `engine` with `threads` threads, with the deterministic input of
/// `seed` at its input shape: what every timed run here starts from.
pub fn load_with_input(
    path: &Path,
    engine: Engine,
    threads: usize,
    seed: u64,
) -> Result<(EdgeModel, LoadTimings, Tensor), HarnessError> {
    let opts = RuntimeOptions {
        input_shape: None,
        threads,
        engine,
    };
    let (model, timings) =
        EdgeModel::load_path(path, &opts).map_err(|source| HarnessError::Runtime {
            model: path.display().to_string(),
            source,
        })?;
    let input = edge_runtime::deterministic_input(model.input_shape(), seed);
    Ok((model, timings, input))
}

/// Warm-up and measured rounds of one group: every round runs each entry once, in
/// order, so that slow drift of the machine (thermal, frequency, other load) hits all
/// models of the group alike and cancels in their ratios.
fn measure_group(
    group: &str,
    entries: &mut [Entry],
    cfg: &RunConfig,
    progress: &dyn ProgressSink,
) -> Result<(), HarnessError> {
    progress.phase(&format!("warm-up {group}"));
    while entries
        .iter()
        .any(|e| e.warmup_runs < cfg.warmup_runs || e.warmup_time < cfg.warmup_time)
    {
        for e in entries.iter_mut() {
            let d = e.run_once()?;
            e.warmup_runs += 1;
            e.warmup_time += d;
        }
    }
    if !cfg.cooldown.is_zero() {
        progress.phase(&format!("cool-down before {group}"));
        std::thread::sleep(cfg.cooldown);
    }
    progress.phase(&format!("measure {group}"));
    // Expected rounds for the progress bar: the slowest entry sets the pace.
    let slowest = entries
        .iter()
        .map(|e| e.warmup_time.as_secs_f64() / e.warmup_runs.max(1) as f64)
        .fold(0.0, f64::max);
    let expected = if slowest > 0.0 {
        ((cfg.min_time.as_secs_f64() / slowest).ceil() as usize).max(cfg.min_runs)
    } else {
        cfg.min_runs
    }
    .max(1);
    let needs_more = |e: &Entry| e.samples.len() < cfg.min_runs || e.measured_time < cfg.min_time;
    let mut rounds = 0;
    loop {
        let satisfied = rounds > 0 && !entries.iter().any(needs_more);
        let capped = rounds > 0 && entries.iter().any(|e| e.measured_time >= cfg.max_time);
        if satisfied || capped {
            break;
        }
        for e in entries.iter_mut() {
            let d = e.run_once()?;
            e.samples.push(d);
            e.measured_time += d;
        }
        rounds += 1;
        progress.rounds(group, rounds, expected.max(rounds));
    }
    Ok(())
}

fn counters_for(entry: &Entry, cfg: &RunConfig) -> CounterRecord {
    if !cfg.counters {
        return CounterRecord::unavailable("disabled by --no-counters");
    }
    counters::count_per_inference(COUNTER_RUNS, &mut || {
        entry.run_once().map(|_| ()).map_err(|e| e.to_string())
    })
}

fn model_result(entry: &Entry, group: &str, cfg: &RunConfig, peak: Option<f64>) -> ModelResult {
    let samples_ms: Vec<f64> = entry.samples.iter().map(|d| ms(*d)).collect();
    let stats = stats::summarize(
        &samples_ms,
        seed_for(cfg.seed, &entry.spec.name, entry.engine),
    );
    let gmacs = if stats.median_ms > 0.0 {
        entry.cost.macs as f64 / (stats.median_ms * 1e-3) / 1e9
    } else {
        0.0
    };
    ModelResult {
        name: entry.spec.name.clone(),
        // A file that is not a zoo model: family "other", width 0 (unknown), and its own
        // MACs in millions as its budget.
        family: entry
            .spec
            .zoo
            .as_ref()
            .map_or_else(|| "other".to_string(), |z| z.family.to_string()),
        width_multiplier: entry.spec.zoo.as_ref().map_or(0.0, |z| z.width),
        budget_mflops: entry.spec.zoo.as_ref().map_or_else(
            || (entry.cost.macs as f64 / 1e6).round() as u32,
            |z| z.budget_mflops,
        ),
        engine: entry.engine.to_string(),
        file: entry.path.display().to_string(),
        macs: entry.cost.macs,
        params: entry.cost.params,
        macs_by_resolution: entry
            .cost
            .by_resolution
            .iter()
            .map(|r| ResolutionMacsRecord {
                height: r.height,
                width: r.width,
                macs: r.macs,
            })
            .collect(),
        load_ms: entry.load_ms,
        optimise_ms: entry.optimise_ms,
        first_run_ms: entry.first_run_ms,
        warmup_runs: entry.warmup_runs,
        group: group.to_string(),
        samples_ms,
        stats,
        gmacs_per_s: gmacs,
        peak_share: peak.filter(|p| *p > 0.0).map(|p| gmacs / p),
        counters: counters_for(entry, cfg),
    }
}

/// Claims verdicts for every claim whose two models were measured (per engine).
pub fn evaluate_claims(models: &[ModelResult], claims: &ClaimsFile, seed: u64) -> Vec<ClaimResult> {
    let mut out = Vec::new();
    let mut engines: Vec<&str> = models.iter().map(|m| m.engine.as_str()).collect();
    engines.dedup();
    engines.sort();
    engines.dedup();
    for engine in engines {
        for claim in &claims.claims {
            let find = |name: &str| models.iter().find(|m| m.name == name && m.engine == engine);
            let (Some(fd), Some(other)) = (find(&claim.fd_model), find(&claim.other_model)) else {
                continue;
            };
            let paired = fd.group == other.group && fd.samples_ms.len() == other.samples_ms.len();
            let (point, ci) = stats::bootstrap_ratio_of_medians(
                &other.samples_ms,
                &fd.samples_ms,
                paired,
                seed ^ u64::from(claim.budget_mflops),
            );
            out.push(ClaimResult {
                budget_mflops: claim.budget_mflops,
                engine: engine.to_string(),
                fd_model: claim.fd_model.clone(),
                other_model: claim.other_model.clone(),
                other_family: other.family.clone(),
                claimed_speedup: claim.claimed_speedup,
                measured_speedup: point,
                ci95: ci,
                paired,
                verdict: claims::verdict(
                    point,
                    ci,
                    claim.claimed_speedup,
                    claims.tolerance,
                    claims.max_ci_relative_width,
                ),
            });
        }
    }
    out
}

fn options_record(cfg: &RunConfig) -> RunOptionsRecord {
    RunOptionsRecord {
        models: cfg.models.clone(),
        model_files: cfg
            .model_files
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        engines: cfg.engines.iter().map(|e| e.to_string()).collect(),
        target_profile: cfg.target.clone(),
        model_dir: cfg.model_dir.display().to_string(),
        export: cfg.export,
        min_runs: cfg.min_runs,
        min_time_s: cfg.min_time.as_secs_f64(),
        max_time_s: cfg.max_time.as_secs_f64(),
        warmup_runs: cfg.warmup_runs,
        warmup_time_s: cfg.warmup_time.as_secs_f64(),
        cooldown_s: cfg.cooldown.as_secs_f64(),
        cpu: cfg.cpu,
        threads: cfg.threads,
        seed: cfg.seed,
        counters: cfg.counters,
        command_line: cfg.command_line.clone(),
    }
}

/// Benchmarks the configured models on this machine and checks the claims.
pub fn run_benchmark(
    cfg: &RunConfig,
    progress: &dyn ProgressSink,
) -> Result<BenchReport, HarnessError> {
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let profile =
        target_profiles::Profile::by_name(&cfg.target).map_err(|e| HarnessError::BadInput {
            file: "--target".into(),
            problem: e.to_string(),
        })?;
    if cfg.engines.is_empty() {
        return Err(HarnessError::BadInput {
            file: "--engine".into(),
            problem: "no engine selected".into(),
        });
    }
    if let Some(cpu) = cfg.cpu {
        timer::pin_to_cpu(cpu).map_err(|problem| HarnessError::BadInput {
            file: "--cpu".into(),
            problem,
        })?;
    }
    progress.phase("prepare models");
    let models = prepare_models(cfg)?;
    let peak = profile.cpu.as_ref().map(|c| c.peak_gmacs);

    // Interleaving groups (budgets, then the user's files), in order of first appearance.
    let mut groups: Vec<&str> = Vec::new();
    for m in &models {
        if !groups.contains(&m.group.as_str()) {
            groups.push(&m.group);
        }
    }
    let mut results = Vec::new();
    let mut warnings = Vec::new();
    for group in groups {
        let mut entries = Vec::new();
        for engine in &cfg.engines {
            for m in models.iter().filter(|m| m.group == group) {
                if !cfg.cooldown.is_zero() {
                    progress.phase("cool-down");
                    std::thread::sleep(cfg.cooldown);
                }
                progress.phase(&format!("load {} ({engine})", m.name));
                let cost =
                    model_zoo::count_onnx_file(&m.path).map_err(|source| HarnessError::Count {
                        file: m.path.display().to_string(),
                        source,
                    })?;
                entries.push(load_entry(m.clone(), *engine, cfg, cost)?);
            }
        }
        measure_group(group, &mut entries, cfg, progress)?;
        for e in &entries {
            progress.phase(&format!("counters {}", e.label()));
            let r = model_result(e, group, cfg, peak);
            if let Some(w) = stats::noise_warning(&e.label(), &r.stats) {
                progress.note(&w);
                warnings.push(w);
            }
            results.push(r);
        }
    }
    let claims = evaluate_claims(&results, &cfg.claims, cfg.seed);
    Ok(BenchReport {
        schema: REPORT_SCHEMA.to_string(),
        started_unix_s,
        environment: environment::detect(&profile, &cfg.engines, cfg.threads),
        options: options_record(cfg),
        models: results,
        claims,
        claims_source: cfg.claims.source.clone(),
        claims_tolerance: cfg.claims.tolerance,
        claims_max_ci_relative_width: cfg.claims.max_ci_relative_width,
        peak_rss_kib: timer::peak_rss_kib(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_by_budget_and_list() {
        let twelve = select_models(None, Some(12)).unwrap();
        assert_eq!(
            twelve,
            vec!["fd_mobilenet_0.25", "mobilenet_0.125", "shufflenet_g3_0.25"]
        );
        let list = select_models(Some("mobilenet_0.5, fd_mobilenet_1.0"), None).unwrap();
        assert_eq!(list, vec!["mobilenet_0.5", "fd_mobilenet_1.0"]);
        assert!(select_models(Some("mobilenet_0.5"), Some(12)).is_err());
        let e = select_models(Some("resnet50"), None).unwrap_err();
        assert!(
            e.is_bad_input() && e.to_string().contains("resnet50"),
            "{e}"
        );
        assert!(select_models(None, Some(13)).is_err());
    }
}

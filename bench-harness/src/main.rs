//! `edgebench`: thin command line over the bench-harness library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bench_harness::claims::ClaimsFile;
use bench_harness::error::HarnessError;
use bench_harness::export::{html, json, markdown, write_new_file};
use bench_harness::output::progress::{LineProgress, TerminalProgress};
use bench_harness::output::table;
use bench_harness::ProgressSink;
use bench_harness::{compare, device, profile, qemu, run_benchmark, select_models, RunConfig};
use clap::{Args, Parser, Subcommand};
use edge_runtime::Engine;

#[derive(Parser, Debug)]
#[command(
    name = "edgebench",
    version,
    about = "Latency benchmarks of the nine compact CNNs, with the FD-MobileNet paper's claims checked",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: `edgebench run` with these options.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Export missing models, benchmark them here, print results and the claims table (default).
    Run(RunArgs),
    /// Compare two JSON reports model by model; exits 1 on a significant slowdown beyond the threshold.
    Compare(CompareArgs),
    /// Time per operator of one model, grouped by operator kind and feature-map resolution.
    Profile(ProfileArgs),
    /// Latency runs on a board over SSH.
    Device(device::DeviceArgs),
    /// Latency runs on every board of the fleet.
    Fleet(device::FleetArgs),
    /// Deterministic cost counts under qemu-arm.
    Qemu(qemu::QemuArgs),
    /// Time inferences of one model on request, for a driver that interleaves another
    /// runtime's runs with ours (the onnxruntime peer script's --interleaved): after a
    /// JSON header line, each line `N` read from stdin runs N inferences and is answered
    /// by one line of their times in ms; ends with the input.
    ServeRuns(ServeArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum EngineChoice {
    Tract,
    Edge,
    Both,
}

impl EngineChoice {
    fn engines(self) -> Vec<Engine> {
        match self {
            EngineChoice::Tract => vec![Engine::Tract],
            EngineChoice::Edge => vec![Engine::Edge],
            EngineChoice::Both => vec![Engine::Tract, Engine::Edge],
        }
    }
}

/// "3s", "500ms", "1.5", "0" (plain numbers are seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("min") {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 3s or 500ms"))?;
    if !(0.0..=86_400.0).contains(&(v * scale)) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Comma-separated model names (default: all nine, unless --model-file is given).
    #[arg(long, value_name = "LIST")]
    models: Option<String>,
    /// Only the models of this budget (140, 40 or 12 MFLOPs).
    #[arg(long, value_parser = ["140", "40", "12"])]
    budget: Option<String>,
    /// Your own ONNX model (repeatable); named by its file stem. A file named like a zoo
    /// model (e.g. with imported weights) joins that model's budget group and claims.
    #[arg(long, value_name = "FILE")]
    model_file: Vec<PathBuf>,
    /// Directory of the ONNX files.
    #[arg(long, default_value = model_zoo::DEFAULT_MODEL_DIR)]
    model_dir: PathBuf,
    /// Do not export missing models (they must already be in --model-dir).
    #[arg(long)]
    no_export: bool,
    /// Minimum measured runs per model.
    #[arg(long, default_value_t = 50)]
    min_runs: usize,
    /// Minimum measured time per model.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    min_time: Duration,
    /// Stop measuring a group once one model has spent this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    max_time: Duration,
    /// Minimum warm-up runs per model.
    #[arg(long, default_value_t = 10)]
    warmup_runs: usize,
    /// Minimum warm-up time per model.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup_time: Duration,
    /// Pause before each model's load and before each group's measured rounds.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    cooldown: Duration,
    /// Pin the benchmark to this CPU (sched_setaffinity).
    #[arg(long, value_name = "N")]
    cpu: Option<usize>,
    /// tract's kernels, our kernels, or both (interleaved).
    #[arg(long, value_enum, default_value = "tract")]
    engine: EngineChoice,
    /// Worker threads per inference (the paper uses 1).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Target profile for the nominal peak GMAC/s (host, imx6, rpi3).
    #[arg(long = "target", value_name = "PROFILE", default_value = "host")]
    target: String,
    /// Seed of the input tensor and of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Claims file (default: the built-in claims.toml).
    #[arg(long, value_name = "FILE")]
    claims: Option<PathBuf>,
    /// Skip the perf-event counter pass.
    #[arg(long)]
    no_counters: bool,
    /// Write the JSON report here (never overwritten).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a Markdown report here (never overwritten).
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write a self-contained HTML report here (never overwritten).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// No progress bar and no tables (errors only).
    #[arg(long, short)]
    quiet: bool,
    /// Progress as plain lines on stderr instead of a bar (for logs; `edgebench device`
    /// uses it to stream the board's progress). --quiet wins.
    #[arg(long)]
    progress_lines: bool,
}

#[derive(Args, Debug)]
struct CompareArgs {
    base: PathBuf,
    new: PathBuf,
    /// Slowdown that counts as a regression when significant.
    #[arg(long, default_value = "5%")]
    threshold: String,
    /// Also write the comparison as Markdown here.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
struct ProfileArgs {
    /// A model name from the zoo or a path to an ONNX file.
    model: String,
    #[arg(long, default_value = model_zoo::DEFAULT_MODEL_DIR)]
    model_dir: PathBuf,
    #[arg(long)]
    no_export: bool,
    #[arg(long, value_parser = ["tract", "edge"], default_value = "tract")]
    engine: String,
    /// Timed inferences.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    #[arg(long, default_value_t = 3)]
    warmup_runs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also list every node of the plan, slowest first.
    #[arg(long)]
    nodes: bool,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// A model name from the zoo or a path to an ONNX file.
    model: String,
    #[arg(long, default_value = model_zoo::DEFAULT_MODEL_DIR)]
    model_dir: PathBuf,
    #[arg(long)]
    no_export: bool,
    #[arg(long, value_parser = ["tract", "edge"], default_value = "edge")]
    engine: String,
    /// Inferences before the header line.
    #[arg(long, default_value_t = 10)]
    warmup_runs: usize,
    /// Seed of the deterministic input.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn refuse_existing(paths: &[&Option<PathBuf>]) -> Result<(), HarnessError> {
    for p in paths.iter().copied().flatten() {
        if p.exists() {
            return Err(HarnessError::WouldOverwrite(p.display().to_string()));
        }
    }
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<i32> {
    // Fail before measuring for minutes, not after.
    refuse_existing(&[&args.json, &args.markdown, &args.html])?;
    let budget = args
        .budget
        .as_deref()
        .map(|b| b.parse::<u32>().expect("validated"));
    let claims = match &args.claims {
        Some(p) => ClaimsFile::load(p)?,
        None => ClaimsFile::builtin(),
    };
    let cfg = RunConfig {
        // Only the user's files when they give some and no zoo selection.
        models: if args.model_file.is_empty() || args.models.is_some() || budget.is_some() {
            select_models(args.models.as_deref(), budget)?
        } else {
            Vec::new()
        },
        model_dir: args.model_dir.clone(),
        model_files: args.model_file.clone(),
        export: !args.no_export,
        engines: args.engine.engines(),
        target: args.target.clone(),
        warmup_runs: args.warmup_runs,
        warmup_time: args.warmup_time,
        min_runs: args.min_runs.max(1),
        min_time: args.min_time,
        max_time: args.max_time,
        cooldown: args.cooldown,
        cpu: args.cpu,
        threads: args.threads.max(1),
        seed: args.seed,
        counters: !args.no_counters,
        claims,
        command_line: std::env::args().collect(),
    };
    let terminal = TerminalProgress::new(args.quiet || args.progress_lines);
    let lines = LineProgress::new();
    let progress: &dyn ProgressSink = if args.progress_lines && !args.quiet {
        &lines
    } else {
        &terminal
    };
    let report = run_benchmark(&cfg, progress);
    terminal.finish();
    let report = report?;
    if !args.quiet {
        println!("{}", table::terminal_summary(&report));
    }
    if let Some(p) = &args.json {
        json::write_json(&report, p)?;
    }
    if let Some(p) = &args.markdown {
        markdown::write_markdown(&report, p)?;
    }
    if let Some(p) = &args.html {
        html::write_html(&report, p)?;
    }
    Ok(0)
}

fn run_compare(args: &CompareArgs) -> anyhow::Result<i32> {
    let threshold =
        compare::parse_threshold(&args.threshold).map_err(|problem| HarnessError::BadInput {
            file: "--threshold".into(),
            problem,
        })?;
    refuse_existing(&[&args.markdown])?;
    let base = json::read_json(&args.base)?;
    let new = json::read_json(&args.new)?;
    let c = compare::compare(&base, &new, threshold, args.seed);
    println!("{}", table::terminal_table(&compare::rows(&c)));
    if !c.only_in_base.is_empty() {
        println!(
            "Only in {}: {}",
            args.base.display(),
            c.only_in_base.join(", ")
        );
    }
    if !c.only_in_new.is_empty() {
        println!(
            "Only in {}: {}",
            args.new.display(),
            c.only_in_new.join(", ")
        );
    }
    let md = compare::to_markdown(
        &c,
        &args.base.display().to_string(),
        &args.new.display().to_string(),
    );
    if let Some(p) = &args.markdown {
        write_new_file(p, md.as_bytes())?;
    }
    if c.has_regression() {
        eprintln!(
            "edgebench compare: regression: a model is significantly slower by more than {}",
            args.threshold
        );
        Ok(1)
    } else {
        Ok(0)
    }
}

/// The ONNX file of `model`: a zoo name (in `model_dir`, exported there first if missing
/// unless `no_export`) or a path.
fn model_path(model: &str, model_dir: &Path, no_export: bool) -> Result<PathBuf, HarnessError> {
    let path = if let Some(m) = model_zoo::find_model(model) {
        let p = model_dir.join(format!("{}.onnx", m.name));
        if !p.is_file() && !no_export {
            model_zoo::export_models(
                model_dir,
                Some(&[m.name.to_string()]),
                &model_zoo::ExportOptions::default(),
            )?;
        }
        p
    } else {
        PathBuf::from(model)
    };
    if !path.is_file() {
        return Err(HarnessError::BadInput {
            file: path.display().to_string(),
            problem: "no such model file (give a zoo model name or an ONNX path)".into(),
        });
    }
    Ok(path)
}

fn run_profile(args: &ProfileArgs) -> anyhow::Result<i32> {
    let engine: Engine = args.engine.parse().context("--engine")?;
    let path = model_path(&args.model, &args.model_dir, args.no_export)?;
    let r = profile::profile_model(&path, engine, args.warmup_runs, args.runs, args.seed)?;
    println!(
        "{} ({}): {:.3} ms per inference summed over nodes, {} runs, {:.2} M MACs\n",
        r.model,
        r.engine,
        r.total_ms,
        r.runs,
        r.total_macs as f64 / 1e6
    );
    println!("By operator kind:");
    println!(
        "{}",
        table::terminal_table(&profile::group_rows(&r.by_kind, "operator"))
    );
    println!("\nBy output feature-map resolution:");
    println!(
        "{}",
        table::terminal_table(&profile::group_rows(&r.by_resolution, "resolution"))
    );
    if args.nodes {
        println!("\nBy node:");
        println!(
            "{}",
            table::terminal_table(&profile::group_rows(&r.by_node, "node"))
        );
    }
    Ok(0)
}

fn run_serve(args: &ServeArgs) -> anyhow::Result<i32> {
    let engine: Engine = args.engine.parse().context("--engine")?;
    let path = model_path(&args.model, &args.model_dir, args.no_export)?;
    let name = path.display().to_string();
    let (model, _, input) = bench_harness::benchmark::load_with_input(&path, engine, 1, args.seed)?;
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    bench_harness::benchmark::serve::serve_runs(
        &model,
        &name,
        &input,
        args.warmup_runs,
        stdin,
        stdout,
        "stdin",
    )?;
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => run(&cli.run),
        Some(Command::Run(a)) => run(a),
        Some(Command::Compare(a)) => run_compare(a),
        Some(Command::Profile(a)) => run_profile(a),
        Some(Command::Device(a)) => device::run_device(a),
        Some(Command::Fleet(a)) => device::run_fleet(a),
        Some(Command::Qemu(a)) => qemu::run_qemu(a),
        Some(Command::ServeRuns(a)) => run_serve(a),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let bad_input = e
                .downcast_ref::<HarnessError>()
                .is_some_and(HarnessError::is_bad_input);
            eprintln!("edgebench: {e:#}");
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

//! `edge-run`: classify images, describe models and time inference, on the host or the board.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_runtime::classify::{load_image, preprocess, softmax, top_k};
use edge_runtime::measure::{measure_latency, MeasureConfig, MeasurePhase};
use edge_runtime::{
    deterministic_input, tensor_to_f32, EdgeModel, Engine, LoadTimings, RuntimeOptions,
};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "edge-run",
    version,
    about = "Run ONNX image classifiers with tract on the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// ONNX model file.
    #[arg(long, short)]
    model: PathBuf,
    /// Kernels to run the convolutions with: tract or edge (our own, issue 7).
    #[arg(long, default_value = "tract")]
    engine: Engine,
    /// Worker threads (more than 1 needs the `multithread` build feature).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Input shape to fix, e.g. 1x3x224x224 (default: the model's, else 1x3x224x224).
    #[arg(long, value_parser = parse_shape)]
    input_shape: Option<Shape>,
}

impl ModelArgs {
    fn options(&self) -> RuntimeOptions {
        RuntimeOptions {
            input_shape: self.input_shape.clone().map(|s| s.0),
            threads: self.threads,
            engine: self.engine,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Classify images with the paper's preprocessing; prints the top-k classes.
    Classify {
        #[command(flatten)]
        model: ModelArgs,
        /// JPEG or PNG files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// Describe a model: inputs, outputs, operators, MACs, parameters and kernels.
    Info {
        model: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "tract")]
        engine: Engine,
    },
    /// Time inference on a deterministic input (the harness runs the same loop).
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Minimum measured runs.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Minimum warm-up runs.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Minimum measuring time in seconds.
        #[arg(long, default_value_t = 3.0)]
        min_time: f64,
        /// Minimum warm-up time in seconds.
        #[arg(long, default_value_t = 1.0)]
        warmup_time: f64,
        /// Stop measuring after this many seconds (once --runs samples exist).
        #[arg(long, default_value_t = 60.0)]
        max_time: f64,
        #[arg(long)]
        json: bool,
    },
    /// Print the logits for a deterministic input (cross-target parity checks).
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Run with every node of the plan in its own QEMU region of interest (EDGE_ROI=1), for
    /// per-operator counts (`edgebench qemu --per-op`); prints the nodes in region order as JSON.
    Nodes {
        #[command(flatten)]
        model: ModelArgs,
        /// Inferences before the marked ones (not marked).
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Marked inferences.
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
}

/// A tensor shape given as `1x3x224x224`.
#[derive(Clone, Debug)]
struct Shape(Vec<usize>);

fn parse_shape(s: &str) -> Result<Shape, String> {
    s.split(['x', ','])
        .map(|d| d.trim().parse::<usize>().map_err(|e| format!("{s:?}: {e}")))
        .collect::<Result<_, _>>()
        .map(Shape)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn seconds(what: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{what} {s}: not a duration"))
}

fn load(args: &ModelArgs) -> anyhow::Result<(EdgeModel, LoadTimings)> {
    Ok(EdgeModel::load_path(&args.model, &args.options())?)
}

fn timings_json(t: &LoadTimings, first_run: Option<Duration>) -> serde_json::Value {
    json!({
        "load_ms": ms(t.load),
        "optimise_ms": ms(t.optimise),
        "first_run_ms": first_run.map(ms),
    })
}

fn classify(
    args: &ModelArgs,
    images: &[PathBuf],
    top: usize,
    as_json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (model, timings) = load(args)?;
    let shape = model.input_shape().to_vec();
    if shape[1] != 3 {
        anyhow::bail!(
            "{}: input has {} channels, classify needs an RGB (3-channel) model",
            args.model.display(),
            shape[1]
        );
    }
    let mut results = vec![];
    let mut first_run = None;
    for path in images {
        let image = load_image(path)?;
        let mut input = preprocess(&image, shape[2], shape[3]);
        if shape[0] > 1 {
            // Batched model: replicate the image, report the first row.
            input = input.broadcast_to_shape(&shape)?;
        }
        let start = std::time::Instant::now();
        let output = model.run(input)?;
        let elapsed = start.elapsed();
        first_run.get_or_insert(elapsed);
        let logits = tensor_to_f32(&output)?;
        let classes = logits.len() / shape[0];
        let predictions = top_k(&softmax(&logits[..classes]), top);
        results.push((path, elapsed, predictions));
    }
    if as_json {
        let images: Vec<_> = results
            .iter()
            .map(|(path, elapsed, predictions)| {
                json!({"image": path, "inference_ms": ms(*elapsed), "top": predictions})
            })
            .collect();
        let doc = json!({
            "model": args.model,
            "engine": model.engine(),
            "timings": timings_json(&timings, first_run),
            "images": images,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            out,
            "model {} (engine {}): load {:.1} ms, optimise {:.1} ms, first run {:.1} ms",
            args.model.display(),
            model.engine(),
            ms(timings.load),
            ms(timings.optimise),
            first_run.map(ms).unwrap_or(0.0)
        )?;
        for (path, elapsed, predictions) in &results {
            writeln!(out, "{} ({:.1} ms)", path.display(), ms(*elapsed))?;
            for p in predictions {
                writeln!(
                    out,
                    "  {:>6.2}%  {:>4}  {}",
                    p.probability * 100.0,
                    p.class,
                    p.label
                )?;
            }
        }
    }
    Ok(())
}

fn info(path: &Path, engine: Engine, as_json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let opts = RuntimeOptions {
        engine,
        ..Default::default()
    };
    let info = edge_runtime::introspect::model_info_path(path, &opts)?;
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?;
        return Ok(());
    }
    writeln!(out, "model      {}", info.file)?;
    for i in &info.inputs {
        writeln!(
            out,
            "input      {} {} [{}]",
            i.name,
            i.elem_type,
            i.shape.join(", ")
        )?;
    }
    for o in &info.outputs {
        writeln!(
            out,
            "output     {} {} [{}]",
            o.name,
            o.elem_type,
            o.shape.join(", ")
        )?;
    }
    writeln!(out, "run input  {:?}", info.run_input_shape)?;
    writeln!(out, "nodes      {}", info.nodes)?;
    writeln!(
        out,
        "MACs       {} ({:.2} M)",
        info.macs,
        info.macs as f64 / 1e6
    )?;
    writeln!(
        out,
        "params     {} ({:.3} M)",
        info.params,
        info.params as f64 / 1e6
    )?;
    writeln!(out, "weights    {} bytes", info.weight_bytes)?;
    writeln!(out, "operators")?;
    for (op, n) in &info.operators {
        writeln!(out, "  {n:>5}  {op}")?;
    }
    writeln!(out, "tract plan")?;
    for (op, n) in &info.plan_operators {
        writeln!(out, "  {n:>5}  {op}")?;
    }
    writeln!(
        out,
        "matmul kernels in plan: {}",
        info.plan_kernels.join(", ")
    )?;
    let k = &info.kernels;
    writeln!(
        out,
        "target {}, tract {}, edge-runtime {}, engine {}",
        k.target_triple, k.tract_version, k.runtime_version, k.engine
    )?;
    writeln!(
        out,
        "neon {}, cpu part {}",
        k.neon.map_or("n/a".to_string(), |n| n.to_string()),
        k.cpu_part.as_deref().unwrap_or("unknown")
    )?;
    writeln!(out, "linalg {}", k.linalg_kernels)?;
    if let Some(isa) = &k.edge_isa {
        writeln!(out, "edge kernels {isa}")?;
    }
    Ok(())
}

fn bench(
    args: &ModelArgs,
    cfg: &MeasureConfig,
    as_json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (model, timings) = load(args)?;
    let samples = measure_latency(&model, cfg, &mut |_: MeasurePhase, _| {})?;
    let mut sorted: Vec<f64> = samples.samples.iter().map(|d| ms(*d)).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    // A median and a mean are all the board needs; the harness does the statistics.
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    let mean = sorted.iter().sum::<f64>() / n.max(1) as f64;
    let kernels = edge_runtime::kernel_info(model.engine());
    if as_json {
        let doc = json!({
            "model": args.model,
            "engine": model.engine(),
            "threads": model.threads(),
            "input_shape": model.input_shape(),
            "timings": timings_json(&timings, Some(samples.first_run)),
            "warmup_runs": samples.warmup_runs,
            "samples_ms": samples_ms(&samples.samples),
            "median_ms": median,
            "mean_ms": mean,
            "min_ms": sorted.first(),
            "max_ms": sorted.last(),
            "kernels": kernels,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            out,
            "{} (engine {}, {} thread(s), input {:?}): load {:.1} ms, optimise {:.1} ms, first run {:.1} ms",
            args.model.display(),
            model.engine(),
            model.threads(),
            model.input_shape(),
            ms(timings.load),
            ms(timings.optimise),
            ms(samples.first_run)
        )?;
        writeln!(
            out,
            "{} runs after {} warm-up: median {:.3} ms, mean {:.3} ms, min {:.3} ms, max {:.3} ms",
            n,
            samples.warmup_runs,
            median,
            mean,
            sorted.first().copied().unwrap_or(f64::NAN),
            sorted.last().copied().unwrap_or(f64::NAN)
        )?;
        writeln!(
            out,
            "kernels: neon {}, cpu part {}, {}{}",
            kernels.neon.map_or("n/a".to_string(), |n| n.to_string()),
            kernels.cpu_part.as_deref().unwrap_or("unknown"),
            kernels.linalg_kernels,
            kernels
                .edge_isa
                .as_ref()
                .map_or(String::new(), |isa| format!(", edge kernels {isa}"))
        )?;
    }
    Ok(())
}

fn samples_ms(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(|d| ms(*d)).collect()
}

fn logits(args: &ModelArgs, seed: u64, out: &mut dyn Write) -> anyhow::Result<()> {
    let (model, _) = load(args)?;
    let input = deterministic_input(model.input_shape(), seed);
    let output = model.run(input)?;
    let logits = tensor_to_f32(&output)?;
    let doc = json!({
        "model": args.model,
        "seed": seed,
        "input_shape": model.input_shape(),
        "logits": &logits,
        "kernels": edge_runtime::kernel_info(model.engine()),
    });
    writeln!(out, "{doc}")?;
    Ok(())
}

fn nodes(args: &ModelArgs, warmup: usize, runs: usize, out: &mut dyn Write) -> anyhow::Result<()> {
    let (model, _) = load(args)?;
    let input = deterministic_input(model.input_shape(), 0);
    for _ in 0..warmup {
        model.run(input.clone())?;
    }
    let order = edge_runtime::measure::run_with_node_regions(&model, &input, runs.max(1))?;
    let doc = json!({
        "model": args.model,
        "engine": model.engine(),
        "warmup_runs": warmup,
        "runs": runs.max(1),
        "nodes": order,
        "kernels": edge_runtime::kernel_info(model.engine()),
    });
    writeln!(out, "{doc}")?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Classify {
            model,
            images,
            top,
            json,
        } => classify(&model, &images, top, json, &mut out),
        Command::Info {
            model,
            json,
            engine,
        } => info(&model, engine, json, &mut out),
        Command::Bench {
            model,
            runs,
            warmup,
            min_time,
            warmup_time,
            max_time,
            json,
        } => {
            let cfg = MeasureConfig {
                warmup_min_runs: warmup,
                warmup_min_time: seconds("warmup-time", warmup_time)?,
                min_runs: runs,
                min_time: seconds("min-time", min_time)?,
                max_time: seconds("max-time", max_time)?,
            };
            bench(&model, &cfg, json, &mut out)
        }
        Command::Logits { model, seed } => logits(&model, seed, &mut out),
        Command::Nodes {
            model,
            warmup,
            runs,
        } => nodes(&model, warmup, runs, &mut out),
    }
}

fn main() -> ExitCode {
    // The library turns tract's internal panics on bad models into errors; the default hook
    // would still print them with a backtrace before the one-line error. A panic that
    // escapes still ends the process with exit code 101.
    std::panic::set_hook(Box::new(|_| {}));
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("edge-run: {line}");
            ExitCode::from(2)
        }
    }
}

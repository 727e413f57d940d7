//! `model-zoo`: export the nine benchmark networks as ONNX, list them, and count the
//! MACs/parameters of any ONNX file.

use anyhow::Result;
use clap::{Parser, Subcommand};
use model_zoo::export::{self, MANIFEST_FILE};
use model_zoo::{benchmark_models, CostReport, ExportOptions, DEFAULT_MODEL_DIR};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "model-zoo",
    version,
    about = "FD-MobileNet, MobileNet v1 and ShuffleNet v1 benchmark models as ONNX"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write <name>.onnx and manifest.json for the benchmark models (idempotent).
    Export {
        /// Output folder.
        #[arg(long, default_value = DEFAULT_MODEL_DIR)]
        out: PathBuf,
        /// Only these models (comma-separated or repeated), e.g. fd_mobilenet_0.25.
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
        /// Fold BatchNorm into the convolutions (Conv with bias).
        #[arg(long)]
        fold_bn: bool,
        /// Take the weights from a safetensors file with PyTorch state-dict names
        /// (needs exactly one model in --only).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Input resolution, a multiple of 32.
        #[arg(long, default_value_t = 224)]
        resolution: usize,
        /// Seed of the generated weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write one model's weights as safetensors (PyTorch state-dict names).
    ExportWeights {
        /// Model name, e.g. fd_mobilenet_0.25.
        name: String,
        /// Output file (default <name>.safetensors in the current folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed of the generated weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// List the nine benchmark models with their MACs and parameters.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Count MACs and parameters of any ONNX file, split by output feature-map size.
    Count {
        file: PathBuf,
        /// Print JSON (with per-node costs) instead of text.
        #[arg(long)]
        json: bool,
        /// Also print the cost of every node.
        #[arg(long)]
        nodes: bool,
    },
}

fn mega(n: u64) -> String {
    format!("{:.2} M", n as f64 / 1e6)
}

fn print_cost(file: &Path, report: &CostReport, nodes: bool) {
    println!("{}", file.display());
    println!("  MACs   {:>10}  ({})", mega(report.macs), report.macs);
    println!(
        "  params {:>10}  ({})",
        format!("{:.3} M", report.params as f64 / 1e6),
        report.params
    );
    println!("  MACs by output feature-map size:");
    let mut cumulative = 0u64;
    for r in &report.by_resolution {
        cumulative += r.macs;
        println!(
            "    {:>4}x{:<4} {:>10}  {:5.1} %   cumulative {:>10}",
            r.height,
            r.width,
            mega(r.macs),
            100.0 * r.macs as f64 / report.macs.max(1) as f64,
            mega(cumulative)
        );
    }
    if nodes {
        println!("  nodes:");
        for n in &report.nodes {
            println!(
                "    {:<48} {:<7} {:>4}x{:<4} {:>12} MACs {:>9} params",
                n.name, n.op, n.out_height, n.out_width, n.macs, n.params
            );
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Export {
            out,
            only,
            fold_bn,
            weights,
            resolution,
            seed,
        } => {
            let opts = ExportOptions {
                resolution,
                fold_bn,
                weights,
                seed,
            };
            let manifest = model_zoo::export_models(&out, only.as_deref(), &opts)?;
            for e in &manifest.models {
                println!(
                    "{:<20} {:>9} MACs {:>8.3} M params  sha256 {}",
                    e.file,
                    mega(e.macs),
                    e.params as f64 / 1e6,
                    e.sha256
                );
            }
            println!("wrote {}", out.join(MANIFEST_FILE).display());
        }
        Command::ExportWeights { name, out, seed } => {
            let model = model_zoo::find_model(&name)
                .ok_or_else(|| model_zoo::ZooError::UnknownModel(name.clone()))?;
            let opts = ExportOptions {
                seed,
                ..Default::default()
            };
            let bytes = export::model_safetensors_bytes(&model, &opts)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{name}.safetensors")));
            export::write_atomic(&out, &bytes)?;
            println!("wrote {}", out.display());
        }
        Command::List { json } => {
            let mut rows = Vec::new();
            for m in benchmark_models() {
                let cost = export::structure_cost(&m, 224)?;
                rows.push(serde_json::json!({
                    "name": m.name, "family": m.family, "width": m.width,
                    "budget_mflops": m.budget_mflops, "macs": cost.macs, "params": cost.params,
                }));
                if !json {
                    println!(
                        "{:<20} {:<13} {:>6} {:>4} MFLOPs {:>10} MACs {:>8.3} M params",
                        m.name,
                        m.family.to_string(),
                        m.width,
                        m.budget_mflops,
                        mega(cost.macs),
                        cost.params as f64 / 1e6
                    );
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            }
        }
        Command::Count { file, json, nodes } => {
            let report = model_zoo::count_onnx_file(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_cost(&file, &report, nodes);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the library errors already name the file and the cause.
            eprintln!("model-zoo: error: {e}");
            ExitCode::from(2)
        }
    }
}

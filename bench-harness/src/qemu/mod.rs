//! Deterministic cost counts under qemu-arm and CI regression reports (issue 6).
//!
//! `edgebench qemu --target imx6` builds the armv7 `edge-run` and the host plugin
//! (`bench-harness/qemu-plugin`), runs every model once under the pinned runner
//! ([`pinned`]), and reports instructions, loads and stores (and L1D misses with `--cache`)
//! per measured inference, the paper's FD-MobileNet ratios by instruction count, and a
//! regression check against `ci/baselines/imx6-qemu.json` or a base commit measured in the
//! same job.

pub mod baseline;
pub mod pinned;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::Command;

use baseline::{parse_threshold, Comparison};
use pinned::{PinnedRunner, RunCounts};
use report::{
    write_new_file, ModelCounts, QemuReport, RatioRecord, ToolVersions, QEMU_REPORT_SCHEMA,
    RATIO_LABEL,
};

/// The workspace this harness was built from (default for `--workspace`).
const BUILD_WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// A file or option the user gave is wrong (exit code 2).
    #[error("{file}: {problem}")]
    BadInput { file: String, problem: String },
    #[error("{0}: already exists; results files are never overwritten (choose another name or remove it)")]
    WouldOverwrite(String),
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Build(String),
    #[error("{0}")]
    Run(String),
    #[error("model export failed: {0}")]
    Zoo(#[from] model_zoo::ZooError),
}

impl QemuError {
    pub fn io(file: impl AsRef<Path>, source: std::io::Error) -> Self {
        QemuError::Io {
            file: file.as_ref().display().to_string(),
            source,
        }
    }

    /// True when the user gave bad input (exit code 2) rather than the run failing.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            QemuError::BadInput { .. } | QemuError::WouldOverwrite(_)
        )
    }

    fn bad(file: &str, problem: impl Into<String>) -> Self {
        QemuError::BadInput {
            file: file.into(),
            problem: problem.into(),
        }
    }
}

/// `edgebench qemu` options.
#[derive(Debug, Clone, clap::Args)]
pub struct QemuArgs {
    /// Target profile (targets/<name>.toml) with a qemu-user emulator.
    #[arg(long, default_value = "imx6")]
    pub target: String,
    /// Comma-separated model names (default: all nine).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Also run the L1D model (32 KiB, 4-way, 32-byte lines, LRU) and report misses (2-7x slower).
    #[arg(long)]
    pub cache: bool,
    /// Also count every operator of the plan separately (a second emulated run per model,
    /// each node in its own region of interest).
    #[arg(long)]
    pub per_op: bool,
    /// Write the report as JSON here (never overwritten).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report (and the regression table) as markdown here (never overwritten).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Baseline report to compare with, relative to the workspace unless absolute.
    #[arg(long, default_value = "ci/baselines/imx6-qemu.json")]
    pub baseline: PathBuf,
    /// Instruction-count growth that fails the check, e.g. "1%".
    #[arg(long, default_value = "1%")]
    pub threshold: String,
    /// Accept the counts on purpose: write them to --baseline and do not fail.
    #[arg(long)]
    pub update_baseline: bool,
    /// Inference engine inside edge-run.
    #[arg(long, default_value = "tract", value_parser = ["tract", "edge"])]
    pub engine: String,
    /// Measure this git revision in the same job and compare with it instead of the
    /// baseline file (use when tool versions differ from the baseline's).
    #[arg(long)]
    pub base_rev: Option<String>,
    /// A prebuilt armv7 edge-run of the base to compare with (instead of --base-rev).
    #[arg(long, conflicts_with = "base_rev")]
    pub base_edge_run: Option<PathBuf>,
    /// Use this armv7 edge-run instead of building it.
    #[arg(long)]
    pub edge_run: Option<PathBuf>,
    /// Use this plugin (.so) instead of building it.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Warm-up inferences before the measured ones (outside the counted region).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Measured inferences (counts are reported per inference).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Folder with the ONNX models (exported there when missing), relative to the workspace.
    #[arg(long, default_value = model_zoo::DEFAULT_MODEL_DIR)]
    pub model_dir: PathBuf,
    /// Scratch folder (default <workspace>/target/qemu-cost/<target>).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Workspace root (default: the one edgebench was built from).
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// Extra guest environment variable KEY=VALUE for the measured (not the base) runs;
    /// for test-only switches such as EDGE_TEST_EXTRA_INPUT_PASS=1.
    #[arg(long, hide = true)]
    pub guest_env: Vec<String>,
}

#[derive(clap::Parser)]
struct QemuCli {
    #[command(flatten)]
    args: QemuArgs,
}

/// Parses `edgebench qemu` options from words (for tests and scripts).
pub fn parse_qemu_args<I: IntoIterator<Item = String>>(words: I) -> Result<QemuArgs, clap::Error> {
    use clap::Parser;
    let all = std::iter::once("edgebench-qemu".to_string()).chain(words);
    QemuCli::try_parse_from(all).map(|c| c.args)
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct QemuOutcome {
    pub report: QemuReport,
    pub comparison: Option<Comparison>,
    pub markdown: String,
    pub exit_code: i32,
}

/// `edgebench qemu`: returns the process exit code (0 fine, 1 regression, 2 bad input).
pub fn run_qemu(args: &QemuArgs) -> anyhow::Result<i32> {
    match run_qemu_outcome(args) {
        Ok(outcome) => {
            print!("{}", outcome.markdown);
            Ok(outcome.exit_code)
        }
        Err(e) if e.is_bad_input() => {
            eprintln!("edgebench qemu: {e}");
            Ok(2)
        }
        Err(e) => Err(e.into()),
    }
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<String, QemuError> {
    let out = cmd
        .output()
        .map_err(|e| QemuError::Build(format!("{what}: cannot start: {e}")))?;
    if !out.status.success() {
        return Err(QemuError::Build(format!(
            "{what} failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 30)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
}

/// Builds the armv7 `edge-run` (release) of the tree at `src` and returns its path.
pub fn build_edge_run(src: &Path, target_dir: &Path, triple: &str) -> Result<PathBuf, QemuError> {
    run_cmd(
        Command::new("cargo")
            .args([
                "build",
                "--release",
                "--target",
                triple,
                "-p",
                "edge-runtime",
                "--bin",
                "edge-run",
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(src),
        &format!(
            "cargo build --release --target {triple} -p edge-runtime (in {})",
            src.display()
        ),
    )?;
    Ok(target_dir.join(triple).join("release").join("edge-run"))
}

/// Builds the host plugin (release) and returns the `.so`.
pub fn build_plugin(workspace: &Path, target_dir: &Path) -> Result<PathBuf, QemuError> {
    run_cmd(
        Command::new("cargo")
            .args(["build", "--release", "-p", "qemu-cost-plugin"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(workspace),
        "cargo build --release -p qemu-cost-plugin",
    )?;
    Ok(target_dir.join("release").join("libqemu_cost_plugin.so"))
}

/// Versions of qemu, the guest's glibc and rustc (each one line).
pub fn tool_versions(qemu: &str, prefix: &Path, libc_root: &str, workspace: &Path) -> ToolVersions {
    let first_line = |cmd: &mut Command| -> String {
        match cmd.output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            Ok(o) => format!("unknown ({})", o.status),
            Err(e) => format!("unknown ({e})"),
        }
    };
    ToolVersions {
        qemu: first_line(Command::new(qemu).arg("--version")),
        // glibc prints its own banner when run as a program.
        glibc: first_line(
            Command::new(qemu)
                .arg("-L")
                .arg(prefix)
                .arg(format!("{libc_root}/lib/libc.so.6"))
                .env_clear(),
        ),
        rustc: first_line(
            Command::new("rustc")
                .arg("--version")
                .current_dir(workspace),
        ),
    }
}

fn git_head(dir: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Extracts `rev` of the repository at `workspace` into `dest` with `git archive` (leaves the
/// repository, its index and worktrees untouched).
pub fn extract_rev(workspace: &Path, rev: &str, dest: &Path) -> Result<(), QemuError> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| QemuError::io(dest, e))?;
    }
    std::fs::create_dir_all(dest).map_err(|e| QemuError::io(dest, e))?;
    let archive = dest.with_extension("tar");
    run_cmd(
        Command::new("git")
            .args(["archive", "--format=tar", "-o"])
            .arg(&archive)
            .arg(rev)
            .current_dir(workspace),
        &format!("git archive {rev}"),
    )?;
    run_cmd(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(dest),
        "tar -x",
    )?;
    let _ = std::fs::remove_file(&archive);
    Ok(())
}

fn rev_exists(workspace: &Path, rev: &str) -> bool {
    Command::new("git")
        .args(["cat-file", "-e", &format!("{rev}^{{commit}}")])
        .current_dir(workspace)
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Plan {
    workspace: PathBuf,
    profile: target_profiles::Profile,
    models: Vec<model_zoo::BenchmarkModel>,
    threshold: f64,
    baseline: PathBuf,
    work_dir: PathBuf,
    extra_env: Vec<(String, String)>,
}

fn plan(args: &QemuArgs) -> Result<Plan, QemuError> {
    let workspace = match &args.workspace {
        Some(w) => w.clone(),
        None => PathBuf::from(BUILD_WORKSPACE),
    };
    let workspace = workspace
        .canonicalize()
        .map_err(|e| QemuError::bad(&workspace.display().to_string(), format!("workspace: {e}")))?;
    if let Some(rev) = &args.base_rev {
        if !rev_exists(&workspace, rev) {
            return Err(QemuError::bad(
                "--base-rev",
                format!(
                    "no commit '{rev}' in the git repository at {}",
                    workspace.display()
                ),
            ));
        }
    }
    let profile = target_profiles::Profile::by_name(&args.target)
        .map_err(|e| QemuError::bad("--target", e.to_string()))?;
    if profile.qemu.is_none() || profile.qemu_cpu.is_none() || profile.qemu_sysroot.is_none() {
        return Err(QemuError::bad(
            "--target",
            format!(
                "target profile '{}' has no qemu, qemu_cpu and qemu_sysroot",
                profile.name
            ),
        ));
    }
    let models = match &args.models {
        None => model_zoo::benchmark_models(),
        Some(names) => names
            .iter()
            .map(|n| {
                model_zoo::find_model(n.trim())
                    .ok_or_else(|| QemuError::bad("--models", format!("unknown model '{n}'")))
            })
            .collect::<Result<_, _>>()?,
    };
    if models.is_empty() {
        return Err(QemuError::bad("--models", "no models given"));
    }
    let threshold =
        parse_threshold(&args.threshold).map_err(|p| QemuError::bad("--threshold", p))?;
    let extra_env = args
        .guest_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| QemuError::bad("--guest-env", format!("'{kv}' is not KEY=VALUE")))
        })
        .collect::<Result<_, _>>()?;
    for out in [&args.json, &args.markdown].into_iter().flatten() {
        if out.exists() {
            return Err(QemuError::WouldOverwrite(out.display().to_string()));
        }
    }
    let baseline = if args.baseline.is_absolute() {
        args.baseline.clone()
    } else {
        workspace.join(&args.baseline)
    };
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| target_dir(&workspace).join("qemu-cost").join(&profile.name));
    Ok(Plan {
        workspace,
        profile,
        models,
        threshold,
        baseline,
        work_dir,
        extra_env,
    })
}

/// Counts `models` with `runner` (binary and models installed here).
fn count_models(
    runner: &PinnedRunner,
    edge_run: &Path,
    model_files: &[(model_zoo::BenchmarkModel, PathBuf)],
    tag: &str,
    per_op: bool,
) -> Result<Vec<ModelCounts>, QemuError> {
    runner.install_binary(edge_run)?;
    let mut out = Vec::new();
    for (model, file) in model_files {
        runner.install_model(model.name, file)?;
        eprintln!("edgebench qemu: counting {} ({tag})", model.name);
        let c: RunCounts = runner.count(model.name, tag)?;
        let per_node = if per_op {
            eprintln!(
                "edgebench qemu: counting {} per operator ({tag})",
                model.name
            );
            Some(runner.count_per_node(model.name, tag)?)
        } else {
            None
        };
        out.push(ModelCounts {
            name: model.name.to_string(),
            family: model.family.to_string(),
            budget_mflops: model.budget_mflops,
            inferences: c.inferences,
            rois_seen: c.rois_seen,
            instructions: c.instructions,
            memory_accesses: c.memory_accesses,
            loads: c.loads,
            stores: c.stores,
            l1d_accesses: c.l1d_accesses,
            l1d_misses: c.l1d_misses,
            guest: c.guest,
            qemu_wall_s: c.wall_s,
            per_node,
        });
    }
    Ok(out)
}

/// The paper's pairs by instruction counts (pairs whose models were both measured).
pub fn ratios(models: &[ModelCounts]) -> Vec<RatioRecord> {
    let claims = crate::claims::ClaimsFile::builtin();
    claims
        .claims
        .iter()
        .filter_map(|c| {
            let fd = models.iter().find(|m| m.name == c.fd_model)?;
            let other = models.iter().find(|m| m.name == c.other_model)?;
            (fd.instructions > 0).then(|| RatioRecord {
                budget_mflops: c.budget_mflops,
                fd_model: c.fd_model.clone(),
                other_model: c.other_model.clone(),
                instruction_ratio: other.instructions as f64 / fd.instructions as f64,
                paper_latency_speedup: c.claimed_speedup,
                label: RATIO_LABEL.into(),
            })
        })
        .collect()
}

/// Does the whole run; see [`run_qemu`].
pub fn run_qemu_outcome(args: &QemuArgs) -> Result<QemuOutcome, QemuError> {
    let plan = plan(args)?;
    let ws = &plan.workspace;
    let profile = &plan.profile;
    let triple = profile.resolved_triple().to_string();
    let tdir = target_dir(ws);

    // Base binary first: building it shares (and flips) the target dir's final binary.
    let base_edge_run = match (&args.base_rev, &args.base_edge_run) {
        (Some(rev), _) => {
            let src = plan.work_dir.join("base-src");
            extract_rev(ws, rev, &src)?;
            let built = build_edge_run(&src, &tdir, &triple)?;
            let keep = plan.work_dir.join("base-edge-run");
            std::fs::copy(&built, &keep).map_err(|e| QemuError::io(&keep, e))?;
            Some((keep, format!("base commit {rev} (measured in this job)")))
        }
        (None, Some(bin)) => Some((bin.clone(), format!("base binary {}", bin.display()))),
        (None, None) => None,
    };
    let edge_run = match &args.edge_run {
        Some(p) => p.clone(),
        None => build_edge_run(ws, &tdir, &triple)?,
    };
    let plugin = match &args.plugin {
        Some(p) => p.clone(),
        None => build_plugin(ws, &tdir)?,
    };
    for (what, p) in [("--edge-run", &edge_run), ("--plugin", &plugin)] {
        if !p.is_file() {
            return Err(QemuError::bad(
                &p.display().to_string(),
                format!("{what}: no such file"),
            ));
        }
    }
    let plugin = plugin
        .canonicalize()
        .map_err(|e| QemuError::io(&plugin, e))?;

    let model_dir = if args.model_dir.is_absolute() {
        args.model_dir.clone()
    } else {
        ws.join(&args.model_dir)
    };
    let missing: Vec<String> = plan
        .models
        .iter()
        .filter(|m| !model_dir.join(format!("{}.onnx", m.name)).is_file())
        .map(|m| m.name.to_string())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "edgebench qemu: exporting {} into {}",
            missing.join(", "),
            model_dir.display()
        );
        model_zoo::export_models(
            &model_dir,
            Some(&missing),
            &model_zoo::ExportOptions::default(),
        )?;
    }
    let model_files: Vec<_> = plan
        .models
        .iter()
        .map(|m| (m.clone(), model_dir.join(format!("{}.onnx", m.name))))
        .collect();

    let sysroot_script = ws.join("ci/qemu-sysroot.sh");
    let prefix = run_cmd(
        Command::new(&sysroot_script)
            .arg(&profile.name)
            .current_dir(ws),
        &sysroot_script.display().to_string(),
    )?;
    let prefix = PathBuf::from(prefix.trim());
    let shim = prefix.join(pinned::GUEST_GETRANDOM_SHIM.trim_start_matches('/'));
    if !shim.is_file() {
        return Err(QemuError::Run(format!(
            "{}: missing (ci/qemu-sysroot.sh builds it with the profile's cross compiler)",
            shim.display()
        )));
    }
    let qemu = profile.qemu.clone().unwrap_or_default();
    let libc_root = profile.qemu_sysroot.clone().unwrap_or_default();
    let tools = tool_versions(&qemu, &prefix, &libc_root, ws);

    let runner = PinnedRunner {
        qemu: qemu.clone(),
        qemu_cpu: profile.qemu_cpu.clone().unwrap_or_default(),
        prefix,
        plugin,
        work_dir: plan.work_dir.clone(),
        engine: args.engine.clone(),
        warmup: args.warmup,
        runs: args.runs as usize,
        cache: args.cache,
        extra_env: plan.extra_env.clone(),
    };
    let make_report =
        |models: Vec<ModelCounts>, runner: &PinnedRunner, commit: Option<String>| QemuReport {
            schema: QEMU_REPORT_SCHEMA.into(),
            created_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            target: profile.name.clone(),
            qemu_cpu: runner.qemu_cpu.clone(),
            engine: args.engine.clone(),
            warmup_runs: args.warmup,
            measured_runs: args.runs as usize,
            cache_model: args.cache,
            tools: tools.clone(),
            commit,
            command_template: runner
                .command_line("models/<model>.onnx", Path::new("<result>.json")),
            guest_env: runner
                .guest_env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            ratios: ratios(&models),
            models,
            notes: vec![],
        };

    let models = count_models(&runner, &edge_run, &model_files, "now", args.per_op)?;
    let mut report = make_report(models, &runner, git_head(ws));
    if !plan.extra_env.is_empty() {
        report.notes.push(format!(
            "Test switches were set in the guest: {}.",
            plan.extra_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    // The base: an explicit base (binary or commit) measured now, else the baseline file;
    // when the file was made with other tool versions, its commit is measured now instead.
    let mut base_edge_run = base_edge_run;
    let mut base_file = None;
    if base_edge_run.is_none() && !args.update_baseline {
        if plan.baseline.is_file() {
            let base = QemuReport::load(&plan.baseline)?;
            let differences = report.tools.differences(&base.tools);
            if differences.is_empty() {
                base_file = Some(base);
            } else {
                let mut note = format!(
                    "Tool versions differ from the baseline's ({}), so its counts are stale",
                    differences.join("; ")
                );
                match base.commit.as_deref().filter(|c| rev_exists(ws, c)) {
                    Some(rev) => {
                        note.push_str(&format!("; measured its commit {rev} in this job instead."));
                        let src = plan.work_dir.join("base-src");
                        extract_rev(ws, rev, &src)?;
                        let built = build_edge_run(&src, &tdir, &triple)?;
                        let keep = plan.work_dir.join("base-edge-run");
                        std::fs::copy(&built, &keep).map_err(|e| QemuError::io(&keep, e))?;
                        base_edge_run = Some((
                            keep,
                            format!("base commit {rev} (the baseline's, measured in this job)"),
                        ));
                    }
                    None => {
                        note.push_str(
                            " and its commit is not available: shown for information, not failing; pass --base-rev REV to measure the base in this job.",
                        );
                        base_file = Some(base);
                    }
                }
                report.notes.push(note);
            }
        } else {
            report.notes.push(format!(
                "No baseline at {}: nothing to compare with (create it with --update-baseline).",
                plan.baseline.display()
            ));
        }
    }
    let mut comparison = None;
    let mut trusted = true;
    if let Some((base_bin, source)) = &base_edge_run {
        let base_runner = PinnedRunner {
            work_dir: plan.work_dir.join("base"),
            extra_env: vec![],
            ..runner.clone()
        };
        let base_models = count_models(&base_runner, base_bin, &model_files, "base", false)?;
        let base_report = make_report(base_models, &base_runner, None);
        comparison = Some(Comparison::new(
            &base_report,
            &report,
            source,
            plan.threshold,
        ));
    } else if let Some(base) = base_file {
        let cmp = Comparison::new(
            &base,
            &report,
            &format!("baseline {}", args.baseline.display()),
            plan.threshold,
        );
        trusted = cmp.tool_differences.is_empty();
        if base.engine != report.engine
            || base.measured_runs != report.measured_runs
            || base.warmup_runs != report.warmup_runs
        {
            report.notes.push(format!(
                "The baseline was made with engine {}, warm-up {}, runs {}; now engine {}, warm-up {}, runs {}.",
                base.engine, base.warmup_runs, base.measured_runs, report.engine, report.warmup_runs, report.measured_runs
            ));
        }
        comparison = Some(cmp);
    }

    let mut markdown = report.to_markdown();
    if let Some(cmp) = &comparison {
        markdown.push('\n');
        markdown.push_str(&cmp.to_markdown());
    }
    let mut exit_code = 0;
    if args.update_baseline {
        write_new_file(&plan.baseline, &report.to_json(), true)?;
        markdown.push_str(&format!(
            "\nBaseline written: {}\n",
            plan.baseline.display()
        ));
    } else if trusted
        && comparison
            .as_ref()
            .is_some_and(|c| !c.regressions().is_empty())
    {
        exit_code = 1;
    }
    if let Some(path) = &args.json {
        write_new_file(path, &report.to_json(), false)?;
    }
    if let Some(path) = &args.markdown {
        write_new_file(path, &markdown, false)?;
    }
    Ok(QemuOutcome {
        report,
        comparison,
        markdown,
        exit_code,
    })
}

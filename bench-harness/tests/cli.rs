//! End-to-end runs of the `edgebench` binary on real exported models (the three
//! 12-MFLOP networks, few samples so the suite stays fast).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use bench_harness::export::json::read_json;
use bench_harness::report::REPORT_SCHEMA;

const FEW_SAMPLES: [&str; 8] = [
    "--min-runs",
    "3",
    "--min-time",
    "0",
    "--warmup-runs",
    "1",
    "--warmup-time",
    "0",
];

fn edgebench(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgebench"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("edgebench runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct FullRun {
    dir: tempfile::TempDir,
    stdout: String,
}

impl FullRun {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One full run of the 12-MFLOP budget, exporting the models into a fresh
/// directory, shared by the tests below.
fn full_run() -> &'static FullRun {
    static RUN: OnceLock<FullRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "run",
            "--budget",
            "12",
            "--model-dir",
            "models",
            "--json",
            "r.json",
            "--markdown",
            "r.md",
            "--html",
            "r.html",
            "--seed",
            "7",
        ];
        args.extend(FEW_SAMPLES);
        let o = edgebench(&args, dir.path());
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        FullRun {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            dir,
        }
    })
}

#[test]
fn full_run_prints_tables_and_writes_every_output() {
    let run = full_run();
    for model in ["fd_mobilenet_0.25", "mobilenet_0.125", "shufflenet_g3_0.25"] {
        assert!(
            run.stdout.contains(model),
            "{model} missing:\n{}",
            run.stdout
        );
        assert!(run.path(&format!("models/{model}.onnx")).is_file());
    }
    assert!(
        run.stdout.contains("Claims of the FD-MobileNet paper"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1.82x") && run.stdout.contains("1.11x"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("(1 - 5 %)"),
        "tolerance printed:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("Hardware counters"), "{}", run.stdout);

    let report = read_json(&run.path("r.json")).unwrap();
    assert_eq!(report.schema, REPORT_SCHEMA);
    assert_eq!(report.models.len(), 3);
    assert_eq!(report.claims.len(), 2);
    for m in &report.models {
        assert!(
            m.samples_ms.len() >= 3,
            "{}: {}",
            m.name,
            m.samples_ms.len()
        );
        assert_eq!(m.stats.n, m.samples_ms.len());
        assert!(m.warmup_runs >= 1);
        assert!(
            m.macs > 10_000_000 && m.macs < 13_000_000,
            "{}: {}",
            m.name,
            m.macs
        );
        assert!(m.gmacs_per_s > 0.0);
        assert!(
            m.counters.status == "available" || m.counters.status.starts_with("unavailable: "),
            "{}",
            m.counters.status
        );
    }
    // Interleaved rounds: every model of the group has the same number of samples,
    // so the speedup intervals are paired by round.
    let n = report.models[0].samples_ms.len();
    assert!(report.models.iter().all(|m| m.samples_ms.len() == n));
    assert!(report.claims.iter().all(|c| c.paired));
    assert_eq!(report.options.seed, 7);
    assert!(report.peak_rss_kib.unwrap_or(0) > 0);

    let md = std::fs::read_to_string(run.path("r.md")).unwrap();
    assert!(
        md.contains("| model |") && md.contains("## The paper's claims"),
        "{md}"
    );
    let html = std::fs::read_to_string(run.path("r.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3, "three charts");
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "self-contained"
    );
    assert!(
        html.contains("Latency against MACs") && html.contains("MACs by feature-map resolution")
    );
}

#[test]
fn report_validates_against_the_json_schema_and_round_trips() {
    let run = full_run();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/report-v1.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("valid JSON Schema");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.path("r.json")).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&written)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // Round trip: read, write, read gives the same report and the same JSON.
    let report = read_json(&run.path("r.json")).unwrap();
    let again = serde_json::to_value(&report).unwrap();
    assert_eq!(again, written);

    // The schema rejects what it should: a wrong version and a wrong verdict word.
    let mut wrong = written.clone();
    wrong["schema"] = "edgebench/report/v0".into();
    assert!(!validator.is_valid(&wrong));
    let mut wrong = written.clone();
    wrong["claims"][0]["verdict"] = "sort of".into();
    assert!(!validator.is_valid(&wrong));
}

#[test]
fn never_overwrites_an_existing_json_and_no_export_uses_copied_models() {
    let run = full_run();
    let before = std::fs::read(run.path("r.json")).unwrap();
    let mut args = vec![
        "run",
        "--models",
        "fd_mobilenet_0.25",
        "--no-export",
        "--model-dir",
        "models",
        "--json",
        "r.json",
    ];
    args.extend(FEW_SAMPLES);
    let o = edgebench(&args, run.dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("r.json") && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.path("r.json")).unwrap(), before);

    // The same command with a new name works without exporting (models already there).
    args[7] = "second.json";
    let o = edgebench(&args, run.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(read_json(&run.path("second.json")).unwrap().models.len(), 1);
}

#[test]
fn no_export_with_missing_model_is_a_one_line_bad_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = edgebench(
        &[
            "run",
            "--models",
            "mobilenet_0.125",
            "--no-export",
            "--model-dir",
            "empty",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("mobilenet_0.125.onnx"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn compare_exit_codes() {
    let run = full_run();
    let dir = run.dir.path();
    // Same report against itself: no significant change.
    let o = edgebench(
        &["compare", "r.json", "r.json", "--markdown", "same.md"],
        dir,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(std::fs::read_to_string(dir.join("same.md"))
        .unwrap()
        .contains("No model is slower"));

    // Timing here is noisy, so the regression case uses fixed samples: a base report whose
    // first model has tight synthetic samples, and a copy where each is 50 % slower.
    let mut base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    let tight: Vec<f64> = (0..40).map(|i| 10.0 + 0.01 * f64::from(i % 7)).collect();
    base["models"][0]["samples_ms"] = tight.clone().into();
    let mut slow = base.clone();
    slow["models"][0]["samples_ms"] = tight.iter().map(|s| s * 1.5).collect::<Vec<_>>().into();
    for (name, report) in [("base.json", &base), ("slow.json", &slow)] {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, serde_json::to_string(report).unwrap()).unwrap();
        }
    }
    let o = edgebench(
        &["compare", "base.json", "slow.json", "--threshold", "5%"],
        dir,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("slower"),
        "{}",
        text(&o)
    );
    // The other direction is an improvement, not a regression.
    let o = edgebench(&["compare", "slow.json", "base.json"], dir);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A threshold above the slowdown: significant but within it.
    let o = edgebench(
        &["compare", "base.json", "slow.json", "--threshold", "80%"],
        dir,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Not a report: exit 2 naming the file.
    let o = edgebench(&["compare", "r.md", "r.json"], dir);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("r.md"));
}

#[test]
fn profile_groups_time_and_macs() {
    let run = full_run();
    let o = edgebench(
        &[
            "profile",
            "fd_mobilenet_0.25",
            "--model-dir",
            "models",
            "--no-export",
            "--runs",
            "2",
            "--warmup-runs",
            "1",
            "--engine",
            "edge",
            "--nodes",
        ],
        run.dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("By operator kind") && out.contains("By output feature-map resolution"),
        "{out}"
    );
    assert!(out.contains("7x7") && out.contains("112x112"), "{out}");
    // --nodes: one row per node, named after its ONNX node, with its operator and map.
    assert!(out.contains("By node"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("/features/conv_0/Conv") && l.contains("at 112x112")),
        "{out}"
    );
}

/// The user's own ONNX files: one named like a zoo model joins that model's budget group
/// (and so its claims); another is measured in the "model files" group, named by its
/// file stem, with its MACs counted from the graph.
#[test]
fn model_files_are_benchmarked_by_name_and_zoo_names_keep_their_claims() {
    let run = full_run();
    let mine = run.path("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::copy(
        run.path("models/fd_mobilenet_0.25.onnx"),
        mine.join("fd_mobilenet_0.25.onnx"),
    )
    .unwrap();
    std::fs::copy(
        run.path("models/shufflenet_g3_0.25.onnx"),
        mine.join("my net (v2).onnx"),
    )
    .unwrap();
    let mut args = vec![
        "run",
        "--models",
        "mobilenet_0.125",
        "--no-export",
        "--model-dir",
        "models",
        "--model-file",
        "mine/fd_mobilenet_0.25.onnx",
        "--model-file",
        "mine/my net (v2).onnx",
        "--no-counters",
        "--json",
        "files.json",
    ];
    args.extend(FEW_SAMPLES);
    let o = edgebench(&args, run.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report = read_json(&run.path("files.json")).unwrap();
    let by_name = |n: &str| {
        report
            .models
            .iter()
            .find(|m| m.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    let fd = by_name("fd_mobilenet_0.25");
    assert_eq!((fd.family.as_str(), fd.budget_mflops), ("FD-MobileNet", 12));
    assert_eq!(fd.group, by_name("mobilenet_0.125").group);
    assert!(
        fd.file.ends_with("mine/fd_mobilenet_0.25.onnx"),
        "{}",
        fd.file
    );
    let mine = by_name("my net (v2)");
    assert_eq!(mine.family, "other");
    assert_eq!(mine.group, "model files");
    assert_eq!(
        mine.budget_mflops, 11,
        "MACs of ShuffleNet 0.25, in millions"
    );
    assert_eq!(
        mine.macs, 11_009_808,
        "MACs of ShuffleNet 0.25 (design table)"
    );
    assert_eq!(report.options.model_files.len(), 2);
    // The claim between the zoo model and the user's FD-MobileNet file was checked.
    assert!(
        report
            .claims
            .iter()
            .any(|c| c.fd_model == "fd_mobilenet_0.25" && c.other_model == "mobilenet_0.125"),
        "{:?}",
        report.claims
    );

    // Bad input names the file: missing, and a name clash with a selected zoo model.
    let o = edgebench(
        &["run", "--model-file", "mine/nothing.onnx"],
        run.dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("mine/nothing.onnx"), "{}", text(&o));
    let o = edgebench(
        &[
            "run",
            "--models",
            "fd_mobilenet_0.25",
            "--model-dir",
            "models",
            "--model-file",
            "mine/fd_mobilenet_0.25.onnx",
        ],
        run.dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already selected"), "{}", text(&o));
}

/// The profile puts each multiply-add on the node that does it (tract's own cost model,
/// and ours for the edge kernels): the groups add up to the model's MACs, the matmuls
/// carry the 1x1 convolutions, and the depthwise layers are on our kernel with --engine edge.
#[test]
fn profile_attributes_every_mac_to_the_node_that_computes_it() {
    let run = full_run();
    let path = run.path("models/fd_mobilenet_0.25.onnx");
    for engine in [edge_runtime::Engine::Tract, edge_runtime::Engine::Edge] {
        let p = bench_harness::profile::profile_model(&path, engine, 1, 1, 0).unwrap();
        let sum = |groups: &[bench_harness::profile::OpGroup]| -> u64 {
            groups.iter().map(|g| g.macs).sum()
        };
        let total = p.total_macs as f64;
        for groups in [&p.by_kind, &p.by_resolution, &p.by_node] {
            let share = sum(groups) as f64 / total;
            assert!((share - 1.0).abs() < 0.01, "{engine}: {share} of the MACs");
        }
        let macs_of = |key: &str| p.by_kind.iter().find(|g| g.key == key).map(|g| g.macs);
        // The convolutions and the classifier: tract's matmul, or (edge engine) ours
        // where this CPU has them.
        let gemm: u64 = [
            "OptMatMul",
            "EdgePointwise",
            "EdgeConv3x3s2",
            "EdgePoolLinear",
        ]
        .iter()
        .filter_map(|k| macs_of(k))
        .sum();
        assert!(gemm as f64 > 0.85 * total, "{engine}: {:?}", p.by_kind);
        if engine == edge_runtime::Engine::Edge
            && edge_runtime::kernels::Isa::best() != edge_runtime::kernels::Isa::Scalar
        {
            // The 1x1 convolutions: two thirds of the MACs.
            let pointwise = macs_of("EdgePointwise").unwrap_or(0) as f64;
            assert!(pointwise > 0.6 * total, "{:?}", p.by_kind);
        }
        assert_eq!(macs_of("OptMatMulPack").unwrap_or(0), 0);
        if engine == edge_runtime::Engine::Edge {
            // 3x3 depthwise: 9 MACs per output element, 1.04 M here.
            let dw = macs_of("EdgeDepthwise3x3").unwrap();
            assert!((1_000_000..1_100_000).contains(&dw), "{dw}");
        }
        let res = |key: &str| p.by_resolution.iter().find(|g| g.key.trim() == key);
        // The first convolution (3x3, stride 2, 3 -> 8 channels) is at 112x112.
        assert_eq!(res("112x112").unwrap().macs, 112 * 112 * 8 * 27);
        assert!(res("7x7").unwrap().macs > 0);
    }
}

/// `edgebench serve-runs`: a header, then one line of times per request, as many as asked;
/// a request that is not a count is a bad-input error naming its line (exit status 2),
/// after the replies to the lines before it.
#[test]
fn serve_runs_answers_each_request_with_that_many_times() {
    use std::io::Write;
    use std::process::Stdio;

    let run = full_run();
    let serve = |requests: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgebench"))
            .args(["serve-runs", "mobilenet_0.125", "--model-dir", "models"])
            .args(["--no-export", "--engine", "edge", "--warmup-runs", "1"])
            .current_dir(run.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(requests.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = serve("3\n\n1\n");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        header["schema"],
        bench_harness::benchmark::serve::SERVE_SCHEMA
    );
    assert_eq!(header["engine"], "edge");
    assert_eq!(header["warmup_runs"], 1);
    assert!(
        header["model"]
            .as_str()
            .unwrap()
            .ends_with("mobilenet_0.125.onnx"),
        "{header}"
    );
    #[cfg(target_arch = "x86_64")]
    assert!(header["edge_isa"].is_string(), "{header}");
    for (line, runs) in lines[1..].iter().zip([3, 1]) {
        let times: Vec<f64> = line.split(' ').map(|t| t.parse().unwrap()).collect();
        assert_eq!(times.len(), runs, "{line}");
        assert!(times.iter().all(|&t| t > 0.0), "{line}");
    }

    let o = serve("2\nseven\n4\n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        text(&o).contains("stdin: line 2: \"seven\" is not a number of runs (1 to 10000)"),
        "{}",
        text(&o)
    );
    let o = serve("0\n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("line 1: \"0\""), "{}", text(&o));
}

//! The onnxruntime peer script (`bench-harness/peers/onnxruntime_bench.py`) against a real
//! `edgebench run` report: it runs the same ONNX file on onnxruntime with one thread and
//! prints both side by side. Needs the venv that `ci/setup.sh` makes (target/peers-venv)
//! or a Python with onnxruntime named by EDGE_PEER_PYTHON.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let p = std::env::var_os("EDGE_PEER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/peers-venv/bin/python"));
    assert!(
        p.is_file(),
        "{}: no Python with onnxruntime; run ci/setup.sh (or set EDGE_PEER_PYTHON)",
        p.display()
    );
    p
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `edgebench run` of one model (a few quick runs) into the JSON report `json`.
fn edgebench_report(models: &Path, model: &str, engine: &str, json: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_edgebench"))
        .args([
            "run",
            "--models",
            model,
            "--engine",
            engine,
            "--no-counters",
        ])
        .args(["--min-runs", "3", "--min-time", "0", "--warmup-runs", "1"])
        .args(["--warmup-time", "0", "-q", "--model-dir"])
        .arg(models)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Every cell of a printed table's row for `model`, with the empty ones outside the
/// first and last `|`.
fn table_row(stdout: &str, model: &str) -> Vec<String> {
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {model} |")))
        .unwrap_or_else(|| panic!("no row for {model}: {stdout}"));
    row.split('|').map(|c| c.trim().to_string()).collect()
}

/// The cells of the peer table's row for `model`: name, tract, edge, onnxruntime, ratio.
fn row_cells(stdout: &str, model: &str) -> Vec<String> {
    let cells = table_row(stdout, model);
    assert_eq!(cells.len(), 7, "{cells:?}");
    cells[1..6].to_vec()
}

/// The peer script.
fn script() -> PathBuf {
    workspace().join("bench-harness/peers/onnxruntime_bench.py")
}

/// A temporary directory with `model` exported into its `models/` (returned too).
fn exported(model: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    model_zoo::export_models(&models, Some(&[model.to_string()]), &Default::default()).unwrap();
    (dir, models)
}

/// The peer script's JSON report.
fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn onnxruntime_peer_runs_beside_an_edgebench_report() {
    let model = "fd_mobilenet_0.25";
    let (dir, models) = exported(model);
    let ours = dir.path().join("ours.json");
    edgebench_report(&models, model, "both", &ours);

    let script = script();
    let peer_json = dir.path().join("peer.json");
    let run_peer = || {
        Command::new(python())
            .arg(&script)
            .arg("--model-dir")
            .arg(&models)
            .args(["--models", model, "--min-runs", "5", "--min-time", "0"])
            .args(["--warmup", "1", "--edgebench-json"])
            .arg(&ours)
            .arg("--json")
            .arg(&peer_json)
            .output()
            .unwrap()
    };
    let o = run_peer();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // tract, edge, onnxruntime and the ratio: all measured, none "-".
    let cells = row_cells(&String::from_utf8_lossy(&o.stdout), model);
    for cell in &cells[1..5] {
        assert!(cell != "-" && !cell.is_empty(), "{cells:?}");
    }
    let peer = report(&peer_json);
    assert_eq!(peer["schema"], "edgebench/peer-onnxruntime/v1");
    assert_eq!(peer["threads"], 1);
    assert_eq!(peer["models"][0]["name"], model);
    assert!(peer["models"][0]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(peer["models"][0]["runs"].as_u64().unwrap() >= 5);

    // Never overwritten: the same command again is refused with exit 2.
    let before = std::fs::read(&peer_json).unwrap();
    let o = run_peer();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    assert_eq!(std::fs::read(&peer_json).unwrap(), before);
}

#[test]
fn onnxruntime_peer_takes_one_edgebench_report_per_model() {
    // Models measured one at a time (as onnxruntime measures them), one report each.
    let dir = tempfile::tempdir().unwrap();
    let names = ["fd_mobilenet_0.25", "mobilenet_0.125"];
    let models = dir.path().join("models");
    let owned: Vec<String> = names.iter().map(|m| m.to_string()).collect();
    model_zoo::export_models(&models, Some(&owned), &Default::default()).unwrap();
    let mut command = Command::new(python());
    command
        .arg(script())
        .arg("--model-dir")
        .arg(&models)
        .args(["--models", &names.join(","), "--min-runs", "3"])
        .args(["--min-time", "0", "--warmup", "1"]);
    for model in names {
        let json = dir.path().join(format!("ours-{model}.json"));
        edgebench_report(&models, model, "edge", &json);
        command.arg("--edgebench-json").arg(&json);
    }
    let o = command.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for model in names {
        // No tract run in these reports; edge, onnxruntime and their ratio are measured.
        let cells = row_cells(&stdout, model);
        assert_eq!(cells[1], "-", "{cells:?}");
        for cell in &cells[2..5] {
            assert!(cell != "-" && !cell.is_empty(), "{model}: {cells:?}");
        }
    }
}

#[test]
fn onnxruntime_peer_profiles_its_time_per_node_and_operator() {
    let model = "fd_mobilenet_0.25";
    let (dir, models) = exported(model);
    let peer_json = dir.path().join("peer.json");
    let o = Command::new(python())
        .arg(script())
        .arg("--model-dir")
        .arg(&models)
        .args(["--models", model, "--min-runs", "3", "--min-time", "0"])
        .args(["--warmup", "1", "--profile", "4", "--json"])
        .arg(&peer_json)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("onnxruntime profile of {model}")),
        "{stdout}"
    );

    // Every node's mean is a positive time, and together they account for most of one
    // inference: the profile covers the network, not a stray node.
    let peer = report(&peer_json);
    let nodes = peer["models"][0]["profile"].as_array().unwrap();
    assert!(nodes.len() >= 10, "{nodes:?}");
    let total: f64 = nodes
        .iter()
        .map(|n| n["mean_ms"].as_f64().unwrap())
        .inspect(|ms| assert!(*ms >= 0.0))
        .sum();
    let median = peer["models"][0]["median_ms"].as_f64().unwrap();
    assert!(
        total > 0.0 && total < 10.0 * median,
        "{total} ms against {median} ms"
    );
    // The convolutions are there, under whatever name onnxruntime fused them into.
    let convs = nodes
        .iter()
        .filter(|n| n["op"].as_str().unwrap().contains("Conv"))
        .count();
    assert!(convs >= 10, "{nodes:?}");
    // The operator table is printed with a row per operator type.
    assert!(stdout.contains("| operator | ms | share |"), "{stdout}");

    // A negative count is refused before anything runs.
    let o = Command::new(python())
        .arg(script())
        .arg("--model-dir")
        .arg(&models)
        .args(["--models", model, "--profile", "-1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--profile -1"), "{}", text(&o));
}

/// `--paired R`: the script runs the real `edgebench` binary and onnxruntime back to
/// back, R rounds per model, and reports the per-round ratios and their median and range,
/// and the ratio of each side's fastest run.
#[test]
fn onnxruntime_peer_pairs_rounds_with_edgebench() {
    let model = "fd_mobilenet_0.25";
    let (dir, models) = exported(model);
    let script = script();
    let peer_json = dir.path().join("paired.json");
    let paired = |edgebench: &Path, extra: &[&str], json: &Path| {
        Command::new(python())
            .arg(&script)
            .arg("--model-dir")
            .arg(&models)
            .args(["--models", model, "--min-runs", "3", "--min-time", "0"])
            .args(["--warmup", "1", "--paired", "3", "--edgebench"])
            .arg(edgebench)
            .args(extra)
            .arg("--json")
            .arg(json)
            .output()
            .unwrap()
    };
    let edgebench = Path::new(env!("CARGO_BIN_EXE_edgebench"));
    let o = paired(edgebench, &[], &peer_json);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let peer = report(&peer_json);
    let result = &peer["models"][0];
    assert_eq!(result["name"], model);
    let p = &result["paired"];
    assert_eq!(p["engine"], "edge");
    #[cfg(target_arch = "x86_64")]
    assert!(
        ["Avx512", "Avx2Fma"].contains(&p["edge_isa"].as_str().unwrap()),
        "{p}"
    );
    let rounds = p["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "{p}");
    let mut ratios = Vec::new();
    for r in rounds {
        let (edge, ort) = (
            r["edgebench_ms"].as_f64().unwrap(),
            r["onnxruntime_ms"].as_f64().unwrap(),
        );
        assert!(edge > 0.0 && ort > 0.0, "{r}");
        let ratio = r["ratio"].as_f64().unwrap();
        assert!((ratio - edge / ort).abs() < 1e-9, "{r}");
        ratios.push(ratio);
    }
    // The fastest runs: each side's minimum over the rounds, and their ratio.
    let fastest = |key: &str| {
        rounds
            .iter()
            .map(|r| r[key].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min)
    };
    let (edge_fastest, ort_fastest) = (fastest("edgebench_min_ms"), fastest("onnxruntime_min_ms"));
    assert!(edge_fastest > 0.0 && ort_fastest > 0.0, "{p}");
    assert!(edge_fastest <= fastest("edgebench_ms"), "{p}");
    assert_eq!(
        p["edgebench_fastest_ms"].as_f64().unwrap(),
        edge_fastest,
        "{p}"
    );
    assert_eq!(
        p["onnxruntime_fastest_ms"].as_f64().unwrap(),
        ort_fastest,
        "{p}"
    );
    let fastest_ratio = p["fastest_ratio"].as_f64().unwrap();
    assert!(
        (fastest_ratio - edge_fastest / ort_fastest).abs() < 1e-9,
        "{p}"
    );
    ratios.sort_by(f64::total_cmp);
    assert_eq!(p["median_ratio"].as_f64().unwrap(), ratios[1], "{p}");
    assert_eq!(p["min_ratio"].as_f64().unwrap(), ratios[0], "{p}");
    assert_eq!(p["max_ratio"].as_f64().unwrap(), ratios[2], "{p}");
    // onnxruntime's samples of all rounds are pooled: at least 3 runs per round.
    assert!(result["runs"].as_u64().unwrap() >= 9, "{result}");

    // The table's row: both medians and the ratio as printed from the report.
    let cells = table_row(&String::from_utf8_lossy(&o.stdout), model);
    assert_eq!(
        cells[4],
        format!("{:.2}", p["median_ratio"].as_f64().unwrap()),
        "{cells:?}"
    );
    assert_eq!(
        cells[5],
        format!("{:.2}-{:.2}", ratios[0], ratios[2]),
        "{cells:?}"
    );
    assert_eq!(cells[6], format!("{fastest_ratio:.2}"), "{cells:?}");

    // A missing binary is named, with exit status 2 and no report written.
    let missing = dir.path().join("no-such-edgebench");
    let refused = dir.path().join("refused.json");
    let o = paired(&missing, &[], &refused);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{}: no edgebench binary", missing.display())),
        "{}",
        text(&o)
    );
    assert!(!refused.exists());
    // --paired measures edgebench itself: a report to compare with is refused.
    let o = paired(edgebench, &["--edgebench-json", "ours.json"], &refused);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("leave out --edgebench-json"),
        "{}",
        text(&o)
    );
    assert!(!refused.exists());
}

#[test]
fn onnxruntime_peer_interleaves_batches_with_an_edgebench_serve_runs_process() {
    let model = "fd_mobilenet_0.25";
    let (dir, models) = exported(model);
    let script = script();
    let edgebench = Path::new(env!("CARGO_BIN_EXE_edgebench"));
    let interleaved = |extra: &[&str], json: &Path| {
        Command::new(python())
            .arg(&script)
            .arg("--model-dir")
            .arg(&models)
            .args(["--models", model, "--warmup", "1", "--edgebench"])
            .arg(edgebench)
            .args(extra)
            .arg("--json")
            .arg(json)
            .output()
            .unwrap()
    };
    let peer_json = dir.path().join("interleaved.json");
    let o = interleaved(&["--interleaved", "5", "--batch", "3"], &peer_json);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let peer = report(&peer_json);
    let result = &peer["models"][0];
    assert_eq!(result["name"], model);
    let p = &result["interleaved"];
    assert_eq!(p["engine"], "edge");
    assert_eq!(
        (p["pairs"].as_u64(), p["batch"].as_u64()),
        (Some(5), Some(3))
    );
    #[cfg(target_arch = "x86_64")]
    assert!(
        ["Avx512", "Avx2Fma"].contains(&p["edge_isa"].as_str().unwrap()),
        "{p}"
    );
    // Linux: both runtimes were kept on one CPU, which the report names.
    #[cfg(target_os = "linux")]
    assert!(p["cpu"].as_u64().is_some(), "{p}");
    // Every pair's runs came back: 5 pairs of 3 on each side, all positive times.
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let edge = floats(&p["edgebench_samples_ms"]);
    let ort = floats(&result["samples_ms"]);
    assert_eq!((edge.len(), ort.len()), (15, 15), "{p}");
    assert!(edge.iter().chain(&ort).all(|&t| t > 0.0), "{p}");
    // Each pair's ratio is the ratio of its two batches' medians (the middle of 3).
    let median3 = |xs: &[f64]| {
        let mut xs = xs.to_vec();
        xs.sort_by(f64::total_cmp);
        xs[1]
    };
    let mut ratios = floats(&p["pair_ratios"]);
    assert_eq!(ratios.len(), 5, "{p}");
    for (i, ratio) in ratios.iter().enumerate() {
        let expected = median3(&edge[3 * i..][..3]) / median3(&ort[3 * i..][..3]);
        assert!((ratio - expected).abs() < 1e-9, "pair {i}: {p}");
    }
    let fastest_ratio = p["fastest_ratio"].as_f64().unwrap();
    let min = |xs: &[f64]| xs.iter().copied().fold(f64::INFINITY, f64::min);
    assert!((fastest_ratio - min(&edge) / min(&ort)).abs() < 1e-9, "{p}");
    let faster = ratios.iter().filter(|&&r| r < 1.0).count() as f64 / 5.0;
    assert_eq!(p["edgebench_faster_share"].as_f64().unwrap(), faster, "{p}");
    ratios.sort_by(f64::total_cmp);
    let median_ratio = p["median_ratio"].as_f64().unwrap();
    assert_eq!(median_ratio, ratios[2], "{p}");
    let ci = floats(&p["ci95_median_ratio"]);
    assert!(ci[0] <= median_ratio && median_ratio <= ci[1], "{p}");

    // The table's row shows the same numbers.
    let cells = table_row(&String::from_utf8_lossy(&o.stdout), model);
    assert_eq!(
        cells[4],
        format!("{median_ratio:.3} ({:.3}-{:.3})", ci[0], ci[1]),
        "{cells:?}"
    );
    assert_eq!(cells[5], format!("{:.0} %", 100.0 * faster), "{cells:?}");
    assert_eq!(cells[6], format!("{fastest_ratio:.3}"), "{cells:?}");

    // Refused, exit status 2, no report: both modes at once, a batch of 0, a CPU this
    // process may not use (all before anything runs), and a program in edgebench's
    // place that answers nothing (the last --edgebench counts).
    let refused = dir.path().join("refused.json");
    for (extra, message) in [
        (&["--interleaved", "2", "--paired", "2"][..], "choose one"),
        (&["--interleaved", "2", "--batch", "0"][..], "--batch 0"),
        (
            &["--interleaved", "2", "--cpu", "100000"][..],
            "--cpu 100000",
        ),
        (
            &["--interleaved", "2", "--edgebench", "/bin/true"][..],
            "edgebench serve-runs of fd_mobilenet_0.25 failed (no header line, exit 0)",
        ),
    ] {
        let o = interleaved(extra, &refused);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(message), "{extra:?}: {}", text(&o));
        assert!(!refused.exists());
    }
}

/// `peers/hide_avx512.c`, built with the system's gcc and preloaded into both runtimes:
/// the edge engine's report names its AVX2 kernels, and onnxruntime runs under it. On a
/// machine that cannot fault CPUID (no `cpuid_fault` in /proc/cpuinfo) it must refuse
/// instead, with exit status 3 and a message saying why.
#[cfg(target_arch = "x86_64")]
#[test]
fn hide_avx512_puts_both_runtimes_on_their_avx2_paths() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("hide_avx512.so");
    let o = Command::new("gcc")
        .args(["-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(workspace().join("bench-harness/peers/hide_avx512.c"))
        .output()
        .expect("gcc");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let model = "fd_mobilenet_0.25";
    let models = dir.path().join("models");
    model_zoo::export_models(&models, Some(&[model.to_string()]), &Default::default()).unwrap();
    let edgebench = |preload: Option<&Path>, json: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgebench"));
        command
            .args([
                "run",
                "--models",
                model,
                "--engine",
                "edge",
                "--no-counters",
            ])
            .args(["--min-runs", "2", "--min-time", "0", "--warmup-runs", "1"])
            .args(["--warmup-time", "0", "-q", "--model-dir"])
            .arg(&models)
            .arg("--json")
            .arg(json);
        if let Some(library) = preload {
            command.env("LD_PRELOAD", library);
        }
        command.output().unwrap()
    };
    let edge_isa = |o: Output, json: &Path| {
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        report["environment"]["kernels"][0]["edge_isa"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Without it, this CPU's own best path (AVX-512 where it has it).
    let own = dir.path().join("own.json");
    let has_avx512 = std::is_x86_feature_detected!("avx512f");
    assert_eq!(
        edge_isa(edgebench(None, &own), &own),
        if has_avx512 { "Avx512" } else { "Avx2Fma" }
    );

    let hidden = dir.path().join("hidden.json");
    let o = edgebench(Some(&library), &hidden);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    if !cpuinfo.split_whitespace().any(|flag| flag == "cpuid_fault") {
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(text(&o).contains("cannot fault CPUID"), "{}", text(&o));
        assert!(!hidden.exists());
        return;
    }
    assert_eq!(edge_isa(o, &hidden), "Avx2Fma");

    let o = Command::new(python())
        .arg(script())
        .arg("--model-dir")
        .arg(&models)
        .args(["--models", model, "--min-runs", "3", "--min-time", "0"])
        .args(["--warmup", "1"])
        .env("LD_PRELOAD", &library)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let cells = row_cells(&String::from_utf8_lossy(&o.stdout), model);
    assert!(cells[3] != "-" && !cells[3].is_empty(), "{cells:?}");
}

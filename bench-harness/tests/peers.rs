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

#[test]
fn onnxruntime_peer_runs_beside_an_edgebench_report() {
    let dir = tempfile::tempdir().unwrap();
    let model = "fd_mobilenet_0.25";
    let models = dir.path().join("models");
    model_zoo::export_models(&models, Some(&[model.to_string()]), &Default::default()).unwrap();
    let ours = dir.path().join("ours.json");
    let o = Command::new(env!("CARGO_BIN_EXE_edgebench"))
        .args([
            "run",
            "--models",
            model,
            "--engine",
            "both",
            "--no-counters",
        ])
        .args(["--min-runs", "3", "--min-time", "0", "--warmup-runs", "1"])
        .args(["--warmup-time", "0", "-q", "--model-dir"])
        .arg(&models)
        .arg("--json")
        .arg(&ours)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let script = workspace().join("bench-harness/peers/onnxruntime_bench.py");
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
    let stdout = String::from_utf8_lossy(&o.stdout);
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {model} |")))
        .unwrap_or_else(|| panic!("no row for {model}: {stdout}"));
    // tract, edge, onnxruntime and the ratio: all measured, none "-".
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells.len(), 7, "{row}");
    for cell in &cells[2..6] {
        assert!(cell != &"-" && !cell.is_empty(), "{row}");
    }
    let peer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&peer_json).unwrap()).unwrap();
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

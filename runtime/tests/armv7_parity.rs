//! Numerical parity between the host and armv7 under QEMU (NEON Cortex-A9 kernels): for the
//! nine benchmark models at 224x224 with the zoo's random weights, the same input gives the
//! same top-5 classes and logits within 1e-3 relative (to the largest logit magnitude).
//!
//! Runs on the host. It builds the armv7 `edge-run` (or takes `EDGE_ARMV7_EDGE_RUN`) and runs
//! it through `ci/qemu-run`; each model takes a few seconds under emulation.
#![cfg(not(target_arch = "arm"))]

use std::path::{Path, PathBuf};
use std::process::Command;

use edge_runtime::classify::top_k_indices;
use edge_runtime::{deterministic_input, tensor_to_f32, EdgeModel, RuntimeOptions};

const TRIPLE: &str = "armv7-unknown-linux-gnueabihf";
const SEED: u64 = 7;
const RELATIVE_TOLERANCE: f32 = 1e-3;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn armv7_edge_run() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGE_ARMV7_EDGE_RUN") {
        return PathBuf::from(path);
    }
    let root = workspace_root();
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--target",
            TRIPLE,
            "-p",
            "edge-runtime",
            "--bin",
            "edge-run",
        ])
        .status()
        .expect("running cargo");
    assert!(
        status.success(),
        "cross build of edge-run for {TRIPLE} failed"
    );
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target_dir.join(TRIPLE).join("debug").join("edge-run")
}

/// Runs `f` over `jobs` on two threads (two QEMU runs at a time: the machine has two
/// cores), results in job order.
fn two_at_a_time<T: Sync, R: Send>(jobs: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let f = &f;
        let halves: Vec<_> = jobs
            .chunks(jobs.len().div_ceil(2).max(1))
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn host_logits(bytes: &[u8]) -> Vec<f32> {
    let (model, _) = EdgeModel::load_bytes(bytes, &RuntimeOptions::default()).unwrap();
    let input = deterministic_input(model.input_shape(), SEED);
    tensor_to_f32(&model.run(input).unwrap()).unwrap()
}

fn armv7_logits(bin: &Path, model: &Path) -> (Vec<f32>, serde_json::Value) {
    armv7_logits_with(bin, model, "tract")
}

fn armv7_logits_with(bin: &Path, model: &Path, engine: &str) -> (Vec<f32>, serde_json::Value) {
    let out = Command::new(workspace_root().join("ci/qemu-run"))
        .arg(bin)
        .arg("logits")
        .arg("--model")
        .arg(model)
        .arg("--seed")
        .arg(SEED.to_string())
        .arg("--engine")
        .arg(engine)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} under QEMU: {}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let logits = doc["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    (logits, doc["kernels"].clone())
}

#[test]
fn nine_models_agree_between_host_and_armv7_under_qemu() {
    let bin = armv7_edge_run();
    let dir = tempfile::tempdir().unwrap();
    let opts = model_zoo::ExportOptions {
        resolution: 224,
        ..Default::default()
    };
    let models = model_zoo::benchmark_models();
    assert_eq!(models.len(), 9);
    let jobs: Vec<(String, PathBuf, Vec<u8>)> = models
        .iter()
        .map(|m| {
            let bytes = model_zoo::model_onnx_bytes(m, &opts).unwrap();
            let path = dir.path().join(format!("{}.onnx", m.name));
            std::fs::write(&path, &bytes).unwrap();
            (m.name.to_string(), path, bytes)
        })
        .collect();
    let results = two_at_a_time(&jobs, |(name, path, bytes)| {
        let (arm, kernels) = armv7_logits(&bin, path);
        (name.clone(), host_logits(bytes), arm, kernels)
    });
    let mut failures = vec![];
    for (name, host, arm, kernels) in &results {
        assert_eq!(
            kernels["neon"], true,
            "{name}: armv7 run without NEON: {kernels}"
        );
        assert!(
            kernels["linalg_kernels"]
                .as_str()
                .unwrap()
                .contains("cortexa9"),
            "{name}: armv7 run without Cortex-A9 kernels: {kernels}"
        );
        assert_eq!(host.len(), 1000, "{name}");
        assert_eq!(arm.len(), 1000, "{name}");
        let scale = host
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        let max_rel = host
            .iter()
            .zip(arm)
            .map(|(h, a)| (h - a).abs() / scale)
            .fold(0f32, f32::max);
        let (top_host, top_arm) = (top_k_indices(host, 5), top_k_indices(arm, 5));
        eprintln!("{name}: max |host - armv7| / max |logit| = {max_rel:.2e}, top-5 {top_host:?} / {top_arm:?}");
        if max_rel > RELATIVE_TOLERANCE || top_host != top_arm {
            failures.push(format!(
                "{name}: rel {max_rel:.2e}, top-5 {top_host:?} vs {top_arm:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "host/armv7 disagree: {failures:#?}");
}

/// Issue 7: on armv7 too (NEON kernels under QEMU), our engine's outputs stay within 1e-4
/// relative of plain tract's for all nine models.
#[test]
fn edge_engine_matches_tract_on_armv7_for_nine_models() {
    let bin = armv7_edge_run();
    let dir = tempfile::tempdir().unwrap();
    let jobs: Vec<(String, PathBuf)> = model_zoo::benchmark_models()
        .iter()
        .map(|m| {
            let bytes = model_zoo::model_onnx_bytes(m, &Default::default()).unwrap();
            let path = dir.path().join(format!("{}.onnx", m.name));
            std::fs::write(&path, &bytes).unwrap();
            (m.name.to_string(), path)
        })
        .collect();
    let results = two_at_a_time(&jobs, |(name, path)| {
        let (tract, _) = armv7_logits_with(&bin, path, "tract");
        let (edge, kernels) = armv7_logits_with(&bin, path, "edge");
        (name.clone(), tract, edge, kernels)
    });
    assert_eq!(results.len(), 9);
    for (name, tract, edge, kernels) in &results {
        assert_eq!(kernels["engine"], "edge", "{name}: {kernels}");
        assert_eq!(kernels["neon"], true, "{name}: {kernels}");
        // Our kernels ran their NEON paths, not the portable ones.
        assert_eq!(kernels["edge_isa"], "Neon", "{name}: {kernels}");
        assert_eq!(tract.len(), 1000, "{name}");
        let scale = tract.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{name}: all-zero logits prove nothing");
        let worst = tract
            .iter()
            .zip(edge)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{name}: edge vs tract on armv7: max difference {worst}, 1e-4 of {scale} allowed"
        );
    }
}

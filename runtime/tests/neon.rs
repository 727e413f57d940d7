//! On armv7 (under `ci/qemu-run`, as on the board) tract must run its NEON kernels tuned
//! for the Cortex-A9. Asserted from the info output, not merely from a model running.
#![cfg(target_arch = "arm")]

mod common;

use common::*;
use edge_runtime::{kernel_info, Engine};

#[test]
fn kernel_info_reports_neon_cortex_a9_kernels() {
    let info = kernel_info(Engine::Tract);
    eprintln!("{info:#?}");
    assert_eq!(info.target_triple, "armv7-unknown-linux-gnueabihf");
    assert_eq!(info.neon, Some(true), "{info:?}");
    assert_eq!(info.cpu_part.as_deref(), Some("0xc09"), "{info:?}");
    assert!(
        info.linalg_kernels.contains("isa=arm,neon"),
        "{}",
        info.linalg_kernels
    );
    assert!(
        info.linalg_kernels.contains("cortexa9"),
        "{}",
        info.linalg_kernels
    );
}

#[test]
fn edge_run_info_json_shows_neon_kernels_in_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let model = write(
        dir.path(),
        "tiny.onnx",
        &encode(&tiny_classifier(&[1, 3, 32, 32], 16)),
    );
    let out = edge_run()
        .arg("info")
        .arg(&model)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["kernels"]["neon"], true, "{info}");
    assert_eq!(info["kernels"]["cpu_part"], "0xc09");
    let plan: Vec<&str> = info["plan_kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(
        !plan.is_empty() && plan.iter().all(|k| k.starts_with("armv7neon_")),
        "matmul kernels in the plan: {plan:?}"
    );
}

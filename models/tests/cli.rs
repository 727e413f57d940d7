//! The `model-zoo` binary: export (manifest, idempotence, determinism across
//! processes), count, list, export-weights and error exit codes.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

fn zoo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_model-zoo"))
        .args(args)
        .output()
        .expect("run model-zoo")
}

fn ok(args: &[&str]) -> String {
    let out = zoo(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Exit code 2 and a single stderr line containing `needle`.
fn fails(args: &[&str], needle: &str) {
    let out = zoo(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err}");
    if !err.contains("Usage") {
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

const SMALL: &str = "fd_mobilenet_0.25,shufflenet_g3_0.25";

fn export(dir: &Path) -> String {
    ok(&[
        "export",
        "--out",
        dir.to_str().unwrap(),
        "--only",
        SMALL,
        "--resolution",
        "96",
    ])
}

#[test]
fn export_is_idempotent_deterministic_and_writes_a_manifest() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    export(a.path());
    export(b.path());
    for name in ["fd_mobilenet_0.25", "shufflenet_g3_0.25"] {
        let f = format!("{name}.onnx");
        let bytes = std::fs::read(a.path().join(&f)).unwrap();
        assert!(bytes == std::fs::read(b.path().join(&f)).unwrap(), "{name}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join("manifest.json")).unwrap()).unwrap();
    let models = manifest["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let fd = &models[0];
    assert_eq!(fd["name"], "fd_mobilenet_0.25");
    assert_eq!(fd["family"], "FD-MobileNet");
    assert_eq!(fd["resolution"], 96);
    assert_eq!(fd["budget_mflops"], 12);
    assert_eq!(fd["params"], 379_224);
    let sha = fd["sha256"].as_str().unwrap();
    let bytes = std::fs::read(a.path().join("fd_mobilenet_0.25.onnx")).unwrap();
    assert_eq!(sha, model_zoo::export::sha256_hex(&bytes));

    // A file whose sha256 is right is left alone (its mtime does not move).
    let file = a.path().join("fd_mobilenet_0.25.onnx");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A damaged file is rewritten.
    let other = a.path().join("shufflenet_g3_0.25.onnx");
    std::fs::write(&other, b"damaged").unwrap();
    export(a.path());
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), old);
    assert!(
        std::fs::read(&other).unwrap()
            == std::fs::read(b.path().join("shufflenet_g3_0.25.onnx")).unwrap()
    );

    // Adding a model keeps the others in the manifest.
    ok(&[
        "export",
        "--out",
        a.path().to_str().unwrap(),
        "--only",
        "mobilenet_0.125",
        "--resolution",
        "96",
    ]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join("manifest.json")).unwrap()).unwrap();
    let names: Vec<&str> = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["fd_mobilenet_0.25", "mobilenet_0.125", "shufflenet_g3_0.25"]
    );

    // count prints MACs, params and the split by resolution of any ONNX file.
    let text = ok(&["count", file.to_str().unwrap()]);
    assert!(text.contains("MACs") && text.contains("48x48"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["count", file.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(json["params"], 379_224);
    assert_eq!(json["macs"], fd["macs"]);
}

#[test]
fn list_shows_the_nine_models() {
    let text = ok(&["list"]);
    assert_eq!(text.lines().count(), 9, "{text}");
    assert!(
        text.contains("fd_mobilenet_1.0") && text.contains("144.49 M"),
        "{text}"
    );
}

#[test]
fn export_weights_then_import() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("w.safetensors");
    ok(&[
        "export-weights",
        "fd_mobilenet_0.25",
        "--out",
        st.to_str().unwrap(),
    ]);
    let out = dir.path().join("out");
    ok(&[
        "export",
        "--out",
        out.to_str().unwrap(),
        "--only",
        "fd_mobilenet_0.25",
        "--weights",
        st.to_str().unwrap(),
        "--fold-bn",
    ]);
    assert!(out.join("fd_mobilenet_0.25.onnx").exists());
    // The same file does not fit another network: nothing is written.
    let out2 = dir.path().join("out2");
    fails(
        &[
            "export",
            "--out",
            out2.to_str().unwrap(),
            "--only",
            "mobilenet_0.125",
            "--weights",
            st.to_str().unwrap(),
        ],
        "w.safetensors",
    );
    assert!(!out2.exists());
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    fails(
        &["count", "/nonexistent/model.onnx"],
        "/nonexistent/model.onnx",
    );
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\x08\x07\x12\xff\xff garbage").unwrap();
    fails(&["count", junk.to_str().unwrap()], "junk.onnx");
    let out = dir.path().join("o");
    fails(
        &[
            "export",
            "--out",
            out.to_str().unwrap(),
            "--only",
            "resnet_50",
        ],
        "resnet_50",
    );
    fails(
        &[
            "export",
            "--out",
            out.to_str().unwrap(),
            "--only",
            "fd_mobilenet_0.25",
            "--resolution",
            "100",
        ],
        "100",
    );
    fails(&["export", "--bogus-flag"], "--bogus-flag");
    assert!(!out.exists());
}

//! `edge-run` end to end on real ONNX files and images: the happy paths, and every kind of
//! bad input giving one error line naming the file, exit code 2 and no panic.

mod common;

use common::*;
use image::{ImageBuffer, Luma, Rgb, Rgba};
use tract_onnx::pb;

fn tiny_model_file(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "tiny.onnx",
        &encode(&tiny_classifier(&[1, 3, 32, 32], 4)),
    )
}

fn gradient_rgb(w: u32, h: u32) -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    ImageBuffer::from_fn(w, h, |x, y| {
        Rgb([(x * 5) as u8, (y * 3) as u8, ((x + y) * 2) as u8])
    })
}

#[test]
fn classify_prints_top_k_for_png_jpeg_gray16_and_rgba() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model_file(dir.path());
    let rgb = dir.path().join("rgb.png");
    gradient_rgb(48, 40).save(&rgb).unwrap();
    let jpeg = dir.path().join("rgb.jpg");
    gradient_rgb(40, 64).save(&jpeg).unwrap();
    let gray16 = dir.path().join("gray16.png");
    ImageBuffer::from_fn(50, 50, |x, y| Luma([(x * 1000 + y * 300) as u16]))
        .save(&gray16)
        .unwrap();
    let rgba = dir.path().join("rgba.png");
    ImageBuffer::from_fn(33, 70, |x, y| Rgba([x as u8 * 7, y as u8 * 3, 9, 128]))
        .save(&rgba)
        .unwrap();
    let out = edge_run()
        .args(["classify", "--model"])
        .arg(&model)
        .args([&rgb, &jpeg, &gray16, &rgba])
        .args(["--top", "3", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = doc["images"].as_array().unwrap();
    assert_eq!(images.len(), 4);
    for image in images {
        let top = image["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let probs: Vec<f64> = top
            .iter()
            .map(|p| p["probability"].as_f64().unwrap())
            .collect();
        assert!(
            probs.windows(2).all(|w| w[0] >= w[1]),
            "not sorted: {probs:?}"
        );
        assert!(probs.iter().all(|p| *p > 0.0 && *p <= 1.0));
        assert!(top[0]["label"].as_str().unwrap().starts_with("class "));
    }
    for key in ["load_ms", "optimise_ms", "first_run_ms"] {
        assert!(doc["timings"][key].as_f64().unwrap() > 0.0, "{key}");
    }
}

#[test]
fn missing_model_file() {
    expect_clean_failure(
        &["info", "/nonexistent/model.onnx"],
        "/nonexistent/model.onnx",
        "no such file",
    );
}

#[test]
fn file_that_is_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(
        dir.path(),
        "notes.onnx",
        b"this is plain text, not a protobuf message\n",
    );
    expect_clean_failure(
        &["info", text.to_str().unwrap()],
        "notes.onnx",
        "not an ONNX model",
    );
    let empty = write(dir.path(), "empty.onnx", b"");
    expect_clean_failure(&["info", empty.to_str().unwrap()], "empty.onnx", "empty");
}

#[test]
fn truncated_and_corrupted_models() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = encode(&tiny_classifier(&[1, 3, 32, 32], 4));
    let truncated = write(dir.path(), "truncated.onnx", &bytes[..bytes.len() * 2 / 3]);
    expect_clean_failure(
        &["bench", "--model", truncated.to_str().unwrap()],
        "truncated.onnx",
        "not an ONNX model",
    );
    // Overwrite the start with 0xff: the first field key becomes an over-long varint.
    let mut corrupted = bytes.clone();
    corrupted[..12].fill(0xff);
    let corrupted = write(dir.path(), "corrupted.onnx", &corrupted);
    expect_clean_failure(
        &["info", corrupted.to_str().unwrap()],
        "corrupted.onnx",
        "not an ONNX model",
    );
}

#[test]
fn operator_tract_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut proto = tiny_classifier(&[1, 3, 32, 32], 4);
    proto.graph.as_mut().unwrap().node[1].op_type = "FancyPool".into();
    let path = write(dir.path(), "fancy.onnx", &encode(&proto));
    let line = expect_clean_failure(
        &["info", path.to_str().unwrap()],
        "fancy.onnx",
        "not supported",
    );
    assert!(line.contains("FancyPool"), "{line}");
}

#[test]
fn input_that_is_not_an_image_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let proto = model(pb::GraphProto {
        node: vec![node("Relu", &["features"], &["out"])],
        input: vec![value_info("features", FLOAT, &[1, 10])],
        output: vec![value_info("out", FLOAT, &[1, 10])],
        ..Default::default()
    });
    let path = write(dir.path(), "vector.onnx", &encode(&proto));
    expect_clean_failure(
        &["bench", "--model", path.to_str().unwrap(), "--runs", "1"],
        "vector.onnx",
        "not an image tensor",
    );
    let mut int_input = tiny_classifier(&[1, 3, 32, 32], 4);
    int_input.graph.as_mut().unwrap().input[0] = value_info(
        "input",
        pb::tensor_proto::DataType::Int64 as i32,
        &[1, 3, 32, 32],
    );
    let path = write(dir.path(), "int.onnx", &encode(&int_input));
    expect_clean_failure(&["info", path.to_str().unwrap()], "int.onnx", "INT64");
}

#[test]
fn declared_dimension_needing_absurd_memory() {
    let dir = tempfile::tempdir().unwrap();
    let huge_input = tiny_classifier(&[1, 3, 1_000_000, 1_000_000], 4);
    let path = write(dir.path(), "huge_input.onnx", &encode(&huge_input));
    expect_clean_failure(
        &["info", path.to_str().unwrap()],
        "huge_input.onnx",
        "refusing to allocate",
    );
    // An initializer declaring 2^40 elements while holding none.
    let mut huge_weight = tiny_classifier(&[1, 3, 32, 32], 4);
    huge_weight.graph.as_mut().unwrap().initializer[1] = float_tensor("b", &[1 << 40], vec![]);
    let path = write(dir.path(), "huge_weight.onnx", &encode(&huge_weight));
    expect_clean_failure(
        &["info", path.to_str().unwrap()],
        "huge_weight.onnx",
        "refusing to allocate",
    );
    // Overriding the input shape is guarded the same way.
    let ok = tiny_model_file(dir.path());
    expect_clean_failure(
        &[
            "bench",
            "--model",
            ok.to_str().unwrap(),
            "--input-shape",
            "1x3x100000x100000",
        ],
        "tiny.onnx",
        "refusing to allocate",
    );
}

#[test]
fn images_that_cannot_be_decoded_or_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model_file(dir.path());
    let model = model.to_str().unwrap();
    let empty = write(dir.path(), "empty.png", b"");
    expect_clean_failure(
        &["classify", "--model", model, empty.to_str().unwrap()],
        "empty.png",
        "empty",
    );
    let garbage = write(
        dir.path(),
        "garbage.jpg",
        b"\xff\xd8\xff\xe0 definitely not a jpeg body",
    );
    expect_clean_failure(
        &["classify", "--model", model, garbage.to_str().unwrap()],
        "garbage.jpg",
        "cannot decode image",
    );
    let text = write(dir.path(), "photo.png", b"hello");
    expect_clean_failure(
        &["classify", "--model", model, text.to_str().unwrap()],
        "photo.png",
        "cannot decode",
    );
    expect_clean_failure(
        &["classify", "--model", model, "/nonexistent/cat.png"],
        "/nonexistent/cat.png",
        "no such file",
    );
    // A valid PNG header declaring a 100000 x 100000 image: the decoder limits refuse it.
    let mut png = vec![];
    gradient_rgb(4, 4)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let big = write(dir.path(), "big.png", &png);
    expect_clean_failure(
        &["classify", "--model", model, big.to_str().unwrap()],
        "big.png",
        "cannot decode",
    );
}

#[test]
fn info_and_bench_report_on_a_valid_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model_file(dir.path());
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
    assert_eq!(
        info["inputs"][0]["shape"],
        serde_json::json!(["1", "3", "32", "32"])
    );
    assert_eq!(info["operators"]["Conv"], 1);
    assert_eq!(info["operators"]["GlobalAveragePool"], 1);
    // 4 output channels x 27 weights x 32x32 positions.
    assert_eq!(info["macs"], 4 * 27 * 32 * 32);
    assert_eq!(info["params"], 4 * 27 + 4);
    assert_eq!(info["weight_bytes"], (4 * 27 + 4) * 4);
    // tract's engine (the default): no instruction set of ours to name.
    assert_eq!(info["kernels"]["engine"], "tract");
    assert!(info["kernels"]["edge_isa"].is_null(), "{info}");
    let out = edge_run()
        .arg("info")
        .arg(&model)
        .args(["--json", "--engine", "edge"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let isa = format!("{:?}", edge_runtime::kernels::Isa::best());
    assert_eq!(info["kernels"]["edge_isa"], isa.as_str(), "{info}");

    let out = edge_run()
        .arg("bench")
        .arg("--model")
        .arg(&model)
        .args([
            "--runs",
            "7",
            "--warmup",
            "2",
            "--min-time",
            "0",
            "--warmup-time",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bench: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bench["samples_ms"].as_array().unwrap().len(), 7);
    assert_eq!(bench["warmup_runs"], 2);
    assert_eq!(bench["threads"], 1);
}

#[test]
fn graph_output_that_no_node_produces() {
    // Found by the fuzzer (runtime/fuzz/seeds/dangling_output.onnx): tract-onnx panics on it.
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/dangling_output.onnx");
    expect_clean_failure(
        &["info", model.to_str().unwrap()],
        "dangling_output.onnx",
        "graph output 'loGits' is produced by no node",
    );
}

#[test]
fn model_on_which_tract_panics_while_typing() {
    // Found by the fuzzer (runtime/fuzz/seeds/padding_panic.onnx): tract-core 0.23.9 indexes
    // out of bounds computing a Conv's padding; the loader turns it into an error.
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/padding_panic.onnx");
    expect_clean_failure(
        &["info", model.to_str().unwrap()],
        "padding_panic.onnx",
        "invalid ONNX model",
    );
}

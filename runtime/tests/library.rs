//! Library-level behaviour: ROI marker, deterministic input, preprocessing, measurement loop.

mod common;

use std::time::Duration;

use common::*;
use edge_runtime::classify::{imagenet_labels, preprocess, softmax, top_k};
use edge_runtime::measure::{measure_latency, MeasureConfig, MeasurePhase};
use edge_runtime::{deterministic_input, roi, EdgeModel, Engine, RuntimeOptions};

#[test]
fn roi_marker_is_enosys_natively_and_off_by_default() {
    let (ret, errno) = roi::probe();
    assert_eq!((ret, errno), (-1, libc_enosys()));
    roi::set_enabled(false);
    assert!(!roi::enabled());
    roi::set_enabled(true);
    assert!(roi::enabled());
    roi::begin();
    roi::end();
    roi::set_enabled(false);
}

fn libc_enosys() -> i32 {
    38 // ENOSYS on Linux, x86-64 and ARM alike
}

#[test]
fn deterministic_input_is_reproducible_and_roughly_standard_normal() {
    let a = deterministic_input(&[1, 3, 64, 64], 3);
    let b = deterministic_input(&[1, 3, 64, 64], 3);
    let c = deterministic_input(&[1, 3, 64, 64], 4);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let values = edge_runtime::tensor_to_f32(&a).unwrap();
    let n = values.len() as f64;
    let mean = values.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|v| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(mean.abs() < 0.05, "mean {mean}");
    assert!((var - 1.0).abs() < 0.05, "variance {var}");
}

#[test]
fn labels_softmax_and_top_k() {
    let labels = imagenet_labels();
    assert_eq!(labels.len(), 1000);
    assert_eq!(labels[0], "tench");
    let mut logits = vec![0f32; 1000];
    logits[1] = 5.0;
    logits[0] = 4.0;
    let probs = softmax(&logits);
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    let top = top_k(&probs, 2);
    assert_eq!(top[0].class, 1);
    assert_eq!(top[0].label, "goldfish");
    assert_eq!(top[1].class, 0);
}

#[test]
fn preprocessing_resizes_crops_and_normalises() {
    // A uniform mid-grey 300x500 image: every output value is (0.5 - mean) / std.
    let image = image::Rgb32FImage::from_pixel(300, 500, image::Rgb([0.5, 0.5, 0.5]));
    let tensor = preprocess(&image, 224, 224);
    assert_eq!(tensor.shape(), &[1, 3, 224, 224]);
    let values = edge_runtime::tensor_to_f32(&tensor).unwrap();
    let expected = (0.5 - 0.485) / 0.229;
    assert!((values[0] - expected).abs() < 1e-4, "{}", values[0]);
    let last_blue = (0.5 - 0.406) / 0.225;
    assert!((values[values.len() - 1] - last_blue).abs() < 1e-4);
}

#[test]
fn load_bytes_runs_and_measure_keeps_every_sample() {
    let bytes = encode(&tiny_classifier(&[1, 3, 32, 32], 4));
    let (model, timings) = EdgeModel::load_bytes(&bytes, &RuntimeOptions::default()).unwrap();
    assert_eq!(model.input_shape(), &[1, 3, 32, 32]);
    assert_eq!(model.engine(), Engine::Tract);
    assert!(timings.load > Duration::ZERO && timings.optimise > Duration::ZERO);
    let cfg = MeasureConfig {
        warmup_min_runs: 3,
        warmup_min_time: Duration::ZERO,
        min_runs: 5,
        min_time: Duration::ZERO,
        max_time: Duration::from_secs(60),
    };
    let mut calls = (0, 0);
    let samples = measure_latency(&model, &cfg, &mut |phase, _| match phase {
        MeasurePhase::Warmup => calls.0 += 1,
        MeasurePhase::Measure => calls.1 += 1,
    })
    .unwrap();
    assert_eq!(samples.warmup_runs, 3);
    assert_eq!(samples.samples.len(), 5);
    assert_eq!(calls, (3, 5));
    // Overriding the input shape re-plans the model for it.
    let opts = RuntimeOptions {
        input_shape: Some(vec![1, 3, 48, 40]),
        engine: Engine::Edge,
        ..Default::default()
    };
    let err = EdgeModel::load_bytes(&bytes, &opts).unwrap_err();
    assert!(err.to_string().contains("declares dimension 2"), "{err}");
    let symbolic = encode(&tiny_classifier(&[-1, 3, -1, -1], 4));
    let (model, _) = EdgeModel::load_bytes(&symbolic, &opts).unwrap();
    assert_eq!(model.input_shape(), &[1, 3, 48, 40]);
    assert_eq!(model.engine(), Engine::Edge);
    assert_eq!(model.run_f32(&[0.5; 3 * 48 * 40]).unwrap().len(), 4);
    let threads = RuntimeOptions {
        threads: 0,
        ..Default::default()
    };
    assert!(EdgeModel::load_bytes(&bytes, &threads).is_err());
}

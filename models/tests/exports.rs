//! Every default export loads in tract and gives finite, well-scaled 1x1000 logits on a
//! standard-normal 1x3x224x224 input; the bytes are recorded by sha256 so that
//! determinism across machines and architectures is checked.

use model_zoo::export::sha256_hex;
use model_zoo::weights::normal_values;
use model_zoo::{benchmark_models, count_onnx_bytes, model_onnx_bytes, ExportOptions};
use tract_onnx::prelude::*;

/// sha256 of the nine default exports (seed 0, 224, unfolded). A change here means the
/// generated weights or the graph layout changed: every recorded benchmark result then
/// refers to different files.
const SHA256: [(&str, &str); 9] = [
    (
        "fd_mobilenet_1.0",
        "f4e4fb901fff08526ec52ba9fdce3aaedbff83b347f8b04f40363e9a05f8021d",
    ),
    (
        "fd_mobilenet_0.5",
        "fd1e100f7f707a292bc43108b4206d2b00b9474ef15bf361873cf36d909e8fac",
    ),
    (
        "fd_mobilenet_0.25",
        "67efc86b769228c24416c5087061f8d4138df1f6b613fff2f367a14e673a5391",
    ),
    (
        "mobilenet_0.5",
        "18efce6830b9f125ab166e63217855280c486082cdd6cdfa6acf2c0e3816668e",
    ),
    (
        "mobilenet_0.25",
        "6a7b02682914d3f29b0f805912a906994ae18762b7deaf57428040fbb6a0679b",
    ),
    (
        "mobilenet_0.125",
        "a4d2d54a0e4326a907716e2802b98ab1895a6e8a5786e9462602349ace2fcc37",
    ),
    (
        "shufflenet_g3_1.0",
        "4cb04c813ee8741d02989f1677a4b295950ac0535e524b13bed5e1b95a663425",
    ),
    (
        "shufflenet_g3_0.5",
        "91ac486ff64c20fe18dc3e9dd8b3eeee80e64e2b120648b2dc038787edf64662",
    ),
    (
        "shufflenet_g3_0.25",
        "76e490c6b2fe820032c0d29c19634e3f776e7b7b087ae6cc8be8b405ce16c303",
    ),
];

#[test]
fn nine_exports_run_in_tract_with_sane_logits_and_recorded_hashes() {
    let input = normal_values(1, "exports-test.input", 3 * 224 * 224);
    let x = Tensor::from_shape(&[1, 3, 224, 224], &input).unwrap();
    let mut hashes = Vec::new();
    for (model, (name, sha)) in benchmark_models().iter().zip(SHA256) {
        assert_eq!(model.name, name);
        let bytes = model_onnx_bytes(model, &ExportOptions::default()).unwrap();
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let out = plan.run(tvec!(x.clone().into_tvalue())).unwrap();
        assert_eq!(out[0].shape(), &[1, 1000], "{name}");
        let logits: Vec<f32> = out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert!(
            logits.iter().all(|v| v.is_finite()),
            "{name}: non-finite logits"
        );
        let mean = logits.iter().map(|&v| v as f64).sum::<f64>() / 1000.0;
        let std = (logits
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / 1000.0)
            .sqrt();
        assert!((0.1..=100.0).contains(&std), "{name}: logit std {std}");
        // The counter sees the same graph the runtime runs.
        let cost = count_onnx_bytes(&bytes).unwrap();
        assert!(cost.macs > 10_000_000, "{name}");
        hashes.push((name, sha256_hex(&bytes), sha));
    }
    check_hashes(&hashes);
}

fn check_hashes(hashes: &[(&str, String, &str)]) {
    let wrong: Vec<String> = hashes
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(n, got, _)| format!("(\"{n}\", \"{got}\"),"))
        .collect();
    assert!(wrong.is_empty(), "sha256 changed:\n{}", wrong.join("\n"));
}

#[test]
fn generation_is_deterministic_within_a_process() {
    // The export cache is bypassed: weights are generated twice from scratch.
    let model = model_zoo::find_model("shufflenet_g3_0.25").unwrap();
    let net = model_zoo::export::network(&model, 224).unwrap();
    let a = model_zoo::weights::generate(&net, 3);
    let b = model_zoo::weights::generate(&net, 3);
    assert_eq!(a, b);
    let c = model_zoo::weights::generate(&net, 4);
    assert_ne!(a, c);
}

// Engine::Edge against plain tract on the nine benchmark networks (real ONNX exports from
// the model zoo, loaded through EdgeModel): outputs within 1e-4 relative, and the edge
// graph really runs our depthwise op with the ReLUs fused.
//
// Both BatchNorm forms are covered: folded into the conv bias (fold_bn) and left as
// BatchNormalization nodes, which declutter turns into per-channel Mul/Add.

use edge_runtime::engine::{EdgeDepthwise3x3, EdgeRelu, RewriteOptions};
use edge_runtime::{deterministic_input, tensor_to_f32, EdgeModel, Engine, RuntimeOptions};
use model_zoo::{benchmark_models, model_onnx_bytes, ExportOptions, Family};

/// Max |edge - tract| <= 1e-4 * max |tract| over the logits.
fn assert_close(name: &str, edge: &[f32], tract: &[f32]) {
    assert_eq!(edge.len(), tract.len(), "{name}: output sizes");
    let magnitude = tract.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(magnitude > 0.0, "{name}: all-zero logits prove nothing");
    let worst = edge
        .iter()
        .zip(tract)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * magnitude,
        "{name}: max |edge - tract| = {worst} > 1e-4 * {magnitude}"
    );
}

fn check_model(name: &str, bytes: &[u8], expected_relu: bool) {
    let load = |engine| {
        let opts = RuntimeOptions {
            engine,
            ..Default::default()
        };
        EdgeModel::load_bytes(bytes, &opts)
            .unwrap_or_else(|e| panic!("{name} {engine}: {e}"))
            .0
    };
    let tract = load(Engine::Tract);
    let edge = load(Engine::Edge);
    assert_eq!(edge.engine(), Engine::Edge);

    let ours: Vec<&EdgeDepthwise3x3> = edge
        .optimized_model()
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<EdgeDepthwise3x3>())
        .collect();
    assert!(!ours.is_empty(), "{name}: no depthwise layer was replaced");
    assert!(
        ours.iter().all(|op| op.relu == expected_relu),
        "{name}: ReLU fusion"
    );
    assert!(
        !tract
            .optimized_model()
            .nodes()
            .iter()
            .any(|n| n.op_is::<EdgeDepthwise3x3>() || n.op_is::<EdgeRelu>()),
        "{name}: the tract engine must stay plain tract"
    );
    // No ReLU is left on tract's scalar pass: the first convolution's ReLU (which tract
    // cannot fuse into its matmul) runs on ours.
    let op_names: Vec<String> = edge
        .optimized_model()
        .nodes()
        .iter()
        .map(|n| n.op().name().to_string())
        .collect();
    assert!(
        !op_names.iter().any(|n| n == "OptMaxByScalar"),
        "{name}: {op_names:?}"
    );
    // ShuffleNet's stem max pool is ours too.
    assert!(
        !op_names.iter().any(|n| n == "OptMaxPool" || n == "MaxPool"),
        "{name}: {op_names:?}"
    );
    // ShuffleNet's padded 3x3 average pools run on the depthwise kernel; the average pool
    // before the classifier runs with it as one head.
    let count = |op: &str| op_names.iter().filter(|n| *n == op).count();
    assert_eq!(count("OptSumPool"), 0, "{name}: {op_names:?}");
    assert_eq!(count("EdgePoolLinear"), 1, "{name}: {op_names:?}");
    let kernels = RewriteOptions::default();
    if kernels.pointwise {
        // Every 1x1 convolution and the first one on our GEMMs: no tract matmul is left.
        assert_eq!(count("OptMatMul"), 0, "{name}: {op_names:?}");
        assert!(count("EdgePointwise") >= 11, "{name}: {op_names:?}");
    }
    if kernels.conv3x3_stride2 {
        assert_eq!(count("EdgeConv3x3s2"), 1, "{name}: {op_names:?}");
    } else {
        // The first convolution's ReLU, which tract cannot fuse into its matmul.
        assert!(count("EdgeRelu") >= 1, "{name}: {op_names:?}");
    }

    let input = deterministic_input(tract.input_shape(), 7);
    let expected = tensor_to_f32(&tract.run(input.clone()).unwrap()).unwrap();
    let got = tensor_to_f32(&edge.run(input).unwrap()).unwrap();
    assert_close(name, &got, &expected);
}

fn check_all(fold_bn: bool) {
    let opts = ExportOptions {
        fold_bn,
        ..Default::default()
    };
    let models = benchmark_models();
    assert_eq!(models.len(), 9);
    for model in models {
        let bytes = model_onnx_bytes(&model, &opts).expect("export");
        // ShuffleNet's depthwise layers have BN but no ReLU; the MobileNets have both.
        let relu = model.family != Family::ShuffleNet;
        check_model(model.name, &bytes, relu);
    }
}

#[test]
fn nine_models_folded_batchnorm_match_tract() {
    check_all(true);
}

#[test]
fn nine_models_unfolded_batchnorm_match_tract() {
    check_all(false);
}

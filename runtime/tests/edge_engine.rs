// Engine::Edge graph rewrite on small ONNX graphs: the rewritten model must match plain
// tract within 1e-4 (relative to the output's magnitude) and must really contain our op.

mod edge_engine_support;

use edge_engine_support::{pattern, GraphBuilder};
use edge_runtime::engine::{
    rewrite_with, EdgeConv3x3s2, EdgeDepthwise3x3, EdgePointwise, EdgePoolLinear, RewriteOptions,
    RewriteSummary,
};
use tract_onnx::prelude::*;

fn decluttered(bytes: &[u8]) -> TypedModel {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("parse")
        .into_typed()
        .expect("typed")
        .into_decluttered()
        .expect("declutter")
}

fn run(model: TypedModel, input: &Tensor) -> Vec<f32> {
    let runnable = model
        .into_optimized()
        .expect("optimise")
        .into_runnable()
        .expect("plan");
    let out = runnable
        .run(tvec!(input.clone().into_tvalue()))
        .expect("run");
    out[0]
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

/// Depthwise, pools and fusions only: 1x1 and first-layer convolutions stay tract's (the
/// default off NEON), so the summaries are the same on every CPU.
const TRACT_GEMMS: RewriteOptions = RewriteOptions {
    pointwise: false,
    conv3x3_stride2: false,
    pool_linear: false,
};

/// Every kernel of ours, on any CPU (the scalar tiles off NEON).
const ALL_KERNELS: RewriteOptions = RewriteOptions {
    pointwise: true,
    conv3x3_stride2: true,
    pool_linear: true,
};

/// [`compare_with`] using tract's GEMMs.
fn compare(bytes: &[u8], input_shape: &[usize]) -> RewriteSummary {
    compare_with(bytes, input_shape, TRACT_GEMMS)
}

/// Runs plain tract and the edge rewrite, checks agreement, returns the rewrite summary.
fn compare_with(bytes: &[u8], input_shape: &[usize], options: RewriteOptions) -> RewriteSummary {
    let model = decluttered(bytes);
    let data = pattern(input_shape.iter().product(), 42, 1.0);
    let input = Tensor::from_shape(input_shape, &data).unwrap();
    let expected = run(model.clone(), &input);
    let (edge, summary) = rewrite_with(model, options).expect("rewrite");
    let optimised = edge.clone().into_optimized().unwrap();
    let count =
        |is_ours: fn(&TypedNode) -> bool| optimised.nodes().iter().filter(|n| is_ours(n)).count();
    assert_eq!(
        count(|n| n.op_is::<EdgeDepthwise3x3>()),
        summary.depthwise,
        "EdgeDepthwise3x3 nodes after into_optimized"
    );
    assert_eq!(
        count(|n| n.op_is::<EdgePointwise>()),
        summary.pointwise,
        "EdgePointwise nodes after into_optimized"
    );
    assert_eq!(
        count(|n| n.op_is::<EdgeConv3x3s2>()),
        summary.conv3x3_stride2,
        "EdgeConv3x3s2 nodes after into_optimized"
    );
    assert_eq!(
        count(|n| n.op_is::<EdgePoolLinear>()),
        summary.pool_linear,
        "EdgePoolLinear nodes after into_optimized"
    );
    let got = run(edge, &input);
    assert_eq!(got.len(), expected.len());
    let magnitude = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(magnitude > 0.0);
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (g - e).abs() <= 1e-4 * magnitude,
            "output {i}: edge {g} vs tract {e} (max |y| {magnitude})"
        );
    }
    summary
}

/// conv-BN-ReLU stem, then depthwise-separable blocks like MobileNet's.
fn mobilenet_like(fold_bn: bool, size: usize) -> Vec<u8> {
    let mut g = GraphBuilder::new(7);
    let mut channels = 8;
    let mut x = g.conv("input", 3, channels, 3, 2, 1, fold_bn);
    if !fold_bn {
        x = g.batch_norm(&x, channels);
    }
    x = g.relu(&x);
    for (stride, c_out) in [(1, 16), (2, 12), (1, 12), (2, 20), (2, 20)] {
        x = g.conv(&x, channels, channels, 3, stride, channels, fold_bn);
        if !fold_bn {
            x = g.batch_norm(&x, channels);
        }
        x = g.relu(&x);
        x = g.conv(&x, channels, c_out, 1, 1, 1, fold_bn);
        if !fold_bn {
            x = g.batch_norm(&x, c_out);
        }
        x = g.relu(&x);
        channels = c_out;
    }
    let y = g.global_average_pool(&x);
    g.build("input", &[1, 3, size, size], &y)
}

#[test]
fn unfolded_batchnorm_and_relu_fold_into_depthwise() {
    let summary = compare(&mobilenet_like(false, 31), &[1, 3, 31, 31]);
    assert_eq!(
        summary,
        RewriteSummary {
            depthwise: 5,
            affine_folded: 10,
            relu_fused: 5,
            conv_batchnorm_folded: 0,
            add_relu: 0,
            grouped_pointwise: 0,
            average_pool: 0,
            max_pool: 0,
            ..RewriteSummary::default()
        }
    );
}

#[test]
fn folded_batchnorm_as_conv_bias() {
    let summary = compare(&mobilenet_like(true, 29), &[1, 3, 29, 29]);
    assert_eq!(
        summary,
        RewriteSummary {
            depthwise: 5,
            affine_folded: 0,
            relu_fused: 5,
            conv_batchnorm_folded: 0,
            add_relu: 0,
            grouped_pointwise: 0,
            average_pool: 0,
            max_pool: 0,
            ..RewriteSummary::default()
        }
    );
}

#[test]
fn tiny_maps_down_to_one_pixel() {
    // 9 -> 5 (stem) -> 5 -> 3 -> 3 -> 2 -> 1: the last depthwise layers see 2x2 and 1x1.
    let summary = compare(&mobilenet_like(false, 9), &[1, 3, 9, 9]);
    assert_eq!(summary.depthwise, 5);
}

#[test]
fn depthwise_output_with_two_consumers_keeps_them_outside() {
    // ShuffleNet-like: depthwise + BN without ReLU, then a residual add reading the
    // block input, then ReLU; and a depthwise whose BN output also feeds the graph output.
    let mut g = GraphBuilder::new(3);
    let x = g.conv("input", 5, 5, 3, 1, 5, false);
    let x = g.batch_norm(&x, 5);
    let shared = g.relu(&x);
    let y = g.conv(&shared, 5, 5, 3, 1, 5, false);
    let y = g.batch_norm(&y, 5);
    let y = g.add(&y, &shared);
    let y = g.relu(&y);
    // A depthwise output read twice: nothing after it may be fused.
    let z = g.conv(&y, 5, 5, 3, 2, 5, true);
    let z2 = g.relu(&z);
    let z = g.add(&z, &z2);
    let bytes = g.build("input", &[1, 5, 11, 13], &z);
    let summary = compare(&bytes, &[1, 5, 11, 13]);
    assert_eq!(
        summary,
        RewriteSummary {
            depthwise: 3,
            affine_folded: 4,
            relu_fused: 1,
            conv_batchnorm_folded: 0,
            add_relu: 1,
            grouped_pointwise: 0,
            average_pool: 0,
            max_pool: 0,
            ..RewriteSummary::default()
        }
    );
}

/// Two grouped 1x1 convolutions (3 groups) with BatchNorm and ReLU, joined by a
/// residual `Relu(a + b)`, on a `[1, 6, 7, 5]` input.
fn shufflenet_like_unit() -> Vec<u8> {
    let mut g = GraphBuilder::new(11);
    let x = g.conv("input", 6, 9, 1, 1, 3, false);
    let x = g.batch_norm(&x, 9);
    let x = g.relu(&x);
    let y = g.conv(&x, 9, 9, 1, 1, 3, false);
    let y = g.batch_norm(&y, 9);
    let y = g.add(&y, &x);
    let y = g.relu(&y);
    g.build("input", &[1, 6, 7, 5], &y)
}

/// ShuffleNet's grouped 1x1 convolutions: tract's declutter leaves their BatchNorm as an
/// element-wise chain; the edge rewrite folds it into the weights, and the residual join
/// `Relu(a + b)` becomes one pass. (tract already folds BatchNorm into ungrouped convs.)
#[test]
fn batchnorm_after_grouped_pointwise_conv_folds_into_it() {
    let bytes = shufflenet_like_unit();
    let summary = compare(&bytes, &[1, 6, 7, 5]);
    assert_eq!(
        summary,
        RewriteSummary {
            depthwise: 0,
            affine_folded: 0,
            relu_fused: 0,
            conv_batchnorm_folded: 2,
            add_relu: 1,
            grouped_pointwise: 2,
            average_pool: 0,
            max_pool: 0,
            ..RewriteSummary::default()
        }
    );
}

#[test]
fn regular_convolutions_are_left_to_tract() {
    let mut g = GraphBuilder::new(5);
    let x = g.conv("input", 4, 8, 3, 1, 1, false);
    let x = g.conv(&x, 8, 8, 3, 1, 2, false); // grouped, not depthwise
    let x = g.conv(&x, 8, 8, 1, 1, 8, true); // depthwise but 1x1
    let bytes = g.build("input", &[1, 4, 6, 6], &x);
    assert_eq!(compare(&bytes, &[1, 4, 6, 6]), RewriteSummary::default());
}

/// With our GEMMs: the stem on EdgeConv3x3s2 and every 1x1 convolution (tract's `EinSum`
/// after declutter) on EdgePointwise, BatchNorm and ReLU folded in, unfolded or not.
#[test]
fn stem_and_pointwise_convolutions_run_on_our_gemms() {
    for (fold_bn, size) in [(false, 31), (true, 29), (false, 9)] {
        let summary = compare_with(
            &mobilenet_like(fold_bn, size),
            &[1, 3, size, size],
            ALL_KERNELS,
        );
        assert_eq!(summary.depthwise, 5, "fold {fold_bn} size {size}");
        assert_eq!(summary.pointwise, 5, "fold {fold_bn} size {size}");
        assert_eq!(summary.conv3x3_stride2, 1, "fold {fold_bn} size {size}");
    }
}

#[test]
fn grouped_pointwise_convolutions_run_on_our_gemm() {
    let bytes = shufflenet_like_unit();
    let summary = compare_with(&bytes, &[1, 6, 7, 5], ALL_KERNELS);
    assert_eq!(
        summary,
        RewriteSummary {
            conv_batchnorm_folded: 2,
            add_relu: 1,
            pointwise: 2,
            ..RewriteSummary::default()
        }
    );
}

#[test]
fn convolutions_outside_our_kernels_stay_with_tract() {
    let mut g = GraphBuilder::new(5);
    // 3x3 stride 1.
    let x = g.conv("input", 4, 8, 3, 1, 1, false);
    // Grouped 3x3 stride 2.
    let x = g.conv(&x, 8, 8, 3, 2, 2, false);
    // 1x1 stride 2: tract's declutter makes it a subsampling then a stride-1 `EinSum`,
    // which is ours again.
    let x = g.conv(&x, 8, 6, 1, 2, 1, true);
    let bytes = g.build("input", &[1, 4, 10, 10], &x);
    assert_eq!(
        compare_with(&bytes, &[1, 4, 10, 10], ALL_KERNELS),
        RewriteSummary {
            pointwise: 1,
            ..RewriteSummary::default()
        }
    );
}

/// The head as the exports write it (average pool over the whole map, flatten, `Gemm`
/// with `transB = 1`, with or without bias): one EdgePoolLinear; a pool that does not
/// cover the map stays tract's.
#[test]
fn average_pool_and_classifier_run_as_one_head() {
    for (global, bias, size) in [(false, true, 7), (true, false, 7), (false, true, 5)] {
        let mut g = GraphBuilder::new(13);
        let x = g.conv("input", 3, 24, 1, 1, 1, true);
        let x = g.relu(&x);
        let x = if global {
            g.global_average_pool(&x)
        } else {
            g.average_pool(&x, 5)
        };
        let x = g.flatten(&x);
        let y = g.linear(&x, 24, 37, bias);
        let bytes = g.build("input", &[1, 3, size, size], &y);
        let summary = compare_with(&bytes, &[1, 3, size, size], ALL_KERNELS);
        let covers_map = global || size == 5;
        assert_eq!(
            summary.pool_linear, covers_map as usize,
            "global {global} bias {bias} size {size}"
        );
        assert_eq!(summary.pointwise, 1);
    }
}

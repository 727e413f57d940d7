// `EDGE_CHANNELS_LAST=0` turns the edge engine's channels-last pass off and `=dense`
// keeps it without padded pixels (to measure what each gains in one build), and the three
// graphs compute the same logits. Its own test binary: it sets the process's environment.

use edge_runtime::engine::{EdgeDepthwise3x3, EdgePoolLinear};
use edge_runtime::kernels::layout::padded_pixel;
use edge_runtime::kernels::{Isa, Layout};
use edge_runtime::{deterministic_input, tensor_to_f32, EdgeModel, Engine, RuntimeOptions};
use model_zoo::{benchmark_models, model_onnx_bytes, ExportOptions};

/// The head's input layout and the input layouts of the depthwise layers that run
/// channels-last, with their channel counts.
fn layouts(model: &EdgeModel) -> (Layout, Vec<(usize, Layout)>) {
    let nodes = model.optimized_model().nodes();
    let head = nodes
        .iter()
        .find_map(|n| n.op_as::<EdgePoolLinear>())
        .expect("the head runs on EdgePoolLinear")
        .layout;
    let depthwise = nodes
        .iter()
        .filter_map(|n| n.op_as::<EdgeDepthwise3x3>())
        .filter(|op| op.channels_last.is_some())
        .map(|op| (op.channels(), op.layouts.input))
        .collect();
    (head, depthwise)
}

#[test]
fn environment_switches_turn_channels_last_off_or_dense_and_change_no_result() {
    let model = benchmark_models()
        .into_iter()
        .find(|m| m.name == "fd_mobilenet_0.5")
        .expect("in the zoo");
    let bytes = model_onnx_bytes(&model, &ExportOptions::default()).expect("export");
    let opts = RuntimeOptions {
        engine: Engine::Edge,
        ..Default::default()
    };
    let load = || EdgeModel::load_bytes(&bytes, &opts).expect("loads").0;
    std::env::set_var("EDGE_CHANNELS_LAST", "0");
    let planar = load();
    std::env::set_var("EDGE_CHANNELS_LAST", "dense");
    let dense = load();
    std::env::remove_var("EDGE_CHANNELS_LAST");
    let default = load();
    assert_eq!(layouts(&planar), (Layout::Planar, vec![]));
    if cfg!(target_arch = "x86_64") && Isa::best() != Isa::Scalar {
        // Between the six 7x7 1x1 layers: five depthwise layers of 256 channels, whose
        // pixels are padded by a line but for `dense`. The head reads the last 1x1
        // layer's output through a node that adds the batch axis: never padded.
        for (model, pixel_floats) in [(&default, padded_pixel(256)), (&dense, 256)] {
            let (head, depthwise) = layouts(model);
            assert_eq!(head, Layout::dense_channels_last(512));
            let expected = (256, Layout::ChannelsLast { pixel_floats });
            assert_eq!(depthwise, vec![expected; 5]);
        }
        assert_eq!(padded_pixel(256), 272);
    } else {
        assert_eq!(layouts(&default), (Layout::Planar, vec![]));
        assert_eq!(layouts(&dense), (Layout::Planar, vec![]));
    }
    let input = deterministic_input(default.input_shape(), 3);
    let a = tensor_to_f32(&planar.run(input.clone()).unwrap()).unwrap();
    let magnitude = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(magnitude > 0.0);
    for other in [&dense, &default] {
        let b = tensor_to_f32(&other.run(input.clone()).unwrap()).unwrap();
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4 * magnitude, "{worst} against {magnitude}");
    }
}

// `EDGE_CHANNELS_LAST=0` turns the edge engine's channels-last pass off (to measure what it
// gains in one build), and the two graphs compute the same logits. Its own test binary: it
// sets the process's environment.

use edge_runtime::engine::{EdgeDepthwise3x3, EdgePoolLinear};
use edge_runtime::kernels::{Isa, Layout};
use edge_runtime::{deterministic_input, tensor_to_f32, EdgeModel, Engine, RuntimeOptions};
use model_zoo::{benchmark_models, model_onnx_bytes, ExportOptions};

/// The head's input layout and how many depthwise layers run channels-last.
fn layouts(model: &EdgeModel) -> (Layout, usize) {
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
        .count();
    (head, depthwise)
}

#[test]
fn environment_switch_turns_channels_last_off_and_changes_no_result() {
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
    std::env::remove_var("EDGE_CHANNELS_LAST");
    let default = load();
    assert_eq!(layouts(&planar), (Layout::Planar, 0));
    if cfg!(target_arch = "x86_64") && Isa::best() != Isa::Scalar {
        let (head, depthwise) = layouts(&default);
        assert_eq!(head, Layout::ChannelsLast);
        // Between the six 7x7 1x1 layers.
        assert_eq!(depthwise, 5);
    } else {
        assert_eq!(layouts(&default), (Layout::Planar, 0));
    }
    let input = deterministic_input(default.input_shape(), 3);
    let a = tensor_to_f32(&planar.run(input.clone()).unwrap()).unwrap();
    let b = tensor_to_f32(&default.run(input).unwrap()).unwrap();
    let magnitude = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(magnitude > 0.0);
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4 * magnitude, "{worst} against {magnitude}");
}

// Cost of one depthwise layer (3x3 conv + BatchNorm + ReLU, as the networks have them)
// under each engine, inside the runtime's QEMU region of interest. A measurement tool,
// hence #[ignore]: run it under the cost plugin, one process per engine and layer, e.g.
//
//   EDGE_COST_ENGINE=edge EDGE_COST_LAYER=64,56,1 qemu-arm -cpu cortex-a9 -L <prefix> \
//     -plugin target/release/libqemu_cost_plugin.so,out=edge.json \
//     target/armv7-unknown-linux-gnueabihf/debug/deps/edge_engine_cost-<hash> \
//     --ignored --exact depthwise_layer_in_roi
//
// EDGE_COST_LAYER is "channels,size,stride" (square maps). Natively it just times the runs.

mod edge_engine_support;

use edge_engine_support::GraphBuilder;
use edge_runtime::{deterministic_input, roi, EdgeModel, Engine, RuntimeOptions};
use std::time::Instant;

/// Runs inside the ROI per process (after one warm-up run outside it).
const ROI_RUNS: usize = 1;

fn layer_model(channels: usize, size: usize, stride: usize) -> Vec<u8> {
    let mut g = GraphBuilder::new(11);
    let x = g.conv("input", channels, channels, 3, stride, channels, false);
    let x = g.batch_norm(&x, channels);
    let x = g.relu(&x);
    g.build("input", &[1, channels, size, size], &x)
}

#[test]
#[ignore = "measurement tool: run under the QEMU cost plugin, see the file header"]
fn depthwise_layer_in_roi() {
    let engine: Engine = std::env::var("EDGE_COST_ENGINE")
        .expect("set EDGE_COST_ENGINE=tract|edge")
        .parse()
        .expect("EDGE_COST_ENGINE");
    let layer = std::env::var("EDGE_COST_LAYER").expect("set EDGE_COST_LAYER=channels,size,stride");
    let dims: Vec<usize> = layer
        .split(',')
        .map(|v| v.trim().parse().expect("EDGE_COST_LAYER"))
        .collect();
    let [channels, size, stride] = dims[..] else {
        panic!("EDGE_COST_LAYER needs 3 numbers")
    };
    let bytes = layer_model(channels, size, stride);
    let opts = RuntimeOptions {
        engine,
        ..Default::default()
    };
    let (model, _) = EdgeModel::load_bytes(&bytes, &opts).expect("load");
    let input = deterministic_input(model.input_shape(), 1);
    model.run(input.clone()).expect("warm-up");
    roi::set_enabled(true);
    let start = Instant::now();
    for _ in 0..ROI_RUNS {
        roi::begin();
        let out = model.run(input.clone());
        roi::end();
        out.expect("run");
    }
    println!(
        "{engine} {layer}: {:?} per run",
        start.elapsed() / ROI_RUNS as u32
    );
}

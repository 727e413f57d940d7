//! The nine networks, one inference each, with tract's kernels and ours.
//! Models are built in memory (model_zoo::model_onnx_bytes), no files needed.

use criterion::{criterion_group, criterion_main, Criterion};
use edge_runtime::{measure, EdgeModel, Engine, RuntimeOptions};

fn models(c: &mut Criterion) {
    let mut group = c.benchmark_group("models");
    group.sample_size(10);
    let opts = model_zoo::ExportOptions::default();
    for m in model_zoo::benchmark_models() {
        let bytes = model_zoo::model_onnx_bytes(&m, &opts).expect("model exports");
        for engine in [Engine::Tract, Engine::Edge] {
            let ropts = RuntimeOptions {
                engine,
                ..Default::default()
            };
            let (model, _) = EdgeModel::load_bytes(&bytes, &ropts).expect("model loads");
            let input = edge_runtime::deterministic_input(model.input_shape(), 0);
            group.bench_function(format!("{}/{engine}", m.name), |b| {
                b.iter(|| measure::time_one_run(&model, &input).expect("runs"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);

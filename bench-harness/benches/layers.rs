//! The single layers that dominate the nine networks, as one-node ONNX graphs run
//! through edge-runtime: 3x3 depthwise, 1x1 pointwise and ShuffleNet's grouped 1x1.
//! Shapes are taken from the 140-MFLOP models at their 28x28 stage.

use criterion::{criterion_group, criterion_main, Criterion};
use edge_runtime::{measure, EdgeModel, Engine, RuntimeOptions};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

fn value_info(name: &str, shape: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// One Conv node (no bias), NCHW input `c_in` x `hw` x `hw`, deterministic weights.
pub fn conv_onnx(c_in: usize, c_out: usize, k: usize, group: usize, hw: usize) -> Vec<u8> {
    let w_shape = [c_out, c_in / group, k, k];
    let n: usize = w_shape.iter().product();
    let weights: Vec<u8> = (0..n)
        .flat_map(|i| (((i * 7919) % 1000) as f32 / 1000.0 - 0.5).to_le_bytes())
        .collect();
    let pad = (k / 2) as i64;
    let graph = pb::GraphProto {
        name: "layer".into(),
        node: vec![pb::NodeProto {
            name: "conv".into(),
            op_type: "Conv".into(),
            input: vec!["input".into(), "w".into()],
            output: vec!["output".into()],
            attribute: vec![
                ints("kernel_shape", &[k as i64, k as i64]),
                ints("pads", &[pad, pad, pad, pad]),
                ints("strides", &[1, 1]),
                pb::AttributeProto {
                    name: "group".into(),
                    r#type: AttributeType::Int as i32,
                    i: group as i64,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        initializer: vec![pb::TensorProto {
            name: "w".into(),
            dims: w_shape.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: weights,
            ..Default::default()
        }],
        input: vec![value_info("input", &[1, c_in, hw, hw])],
        output: vec![value_info("output", &[1, c_out, hw, hw])],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn layers(c: &mut Criterion) {
    let cases = [
        ("depthwise_3x3_128ch_28x28", conv_onnx(128, 128, 3, 128, 28)),
        (
            "pointwise_1x1_128to256_28x28",
            conv_onnx(128, 256, 1, 1, 28),
        ),
        ("grouped_1x1_g3_240to60_28x28", conv_onnx(240, 60, 1, 3, 28)),
    ];
    let mut group = c.benchmark_group("layers");
    group.sample_size(20);
    for engine in [Engine::Tract, Engine::Edge] {
        for (name, bytes) in &cases {
            let opts = RuntimeOptions {
                engine,
                ..Default::default()
            };
            let (model, _) = EdgeModel::load_bytes(bytes, &opts).expect("layer loads");
            let input = edge_runtime::deterministic_input(model.input_shape(), 0);
            group.bench_function(format!("{name}/{engine}"), |b| {
                b.iter(|| measure::time_one_run(&model, &input).expect("runs"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);

//! MAC/parameter counts of the nine models against the design note's table, the split
//! by feature-map size, and the counter on graphs that are not ours (MatMul, Gemm with
//! transA, grouped Conv with a symbolic batch).

use model_zoo::export::structure_cost;
use model_zoo::{benchmark_models, count_onnx_bytes, find_model};
use prost::Message;
use tract_onnx::pb;

/// (name, MACs in millions, params in millions or None) from architectures.md.
const TABLE: [(&str, f64, Option<f64>); 9] = [
    ("fd_mobilenet_1.0", 144.49, Some(2.886)),
    ("fd_mobilenet_0.5", 40.13, Some(0.986)),
    ("fd_mobilenet_0.25", 12.04, Some(0.379)),
    ("mobilenet_0.5", 149.50, None),
    ("mobilenet_0.25", 41.03, None),
    ("mobilenet_0.125", 12.09, None),
    ("shufflenet_g3_1.0", 137.46, None),
    ("shufflenet_g3_0.5", 37.59, None),
    ("shufflenet_g3_0.25", 11.01, None),
];

/// Exact counts from the definitions (conv + classifier weights and classifier bias).
const EXACT: [(&str, u64, u64); 9] = [
    ("fd_mobilenet_1.0", 144_489_728, 2_885_544),
    ("fd_mobilenet_0.5", 40_132_224, 986_056),
    ("fd_mobilenet_0.25", 12_037_952, 379_224),
    ("mobilenet_0.5", 149_497_088, 1_320_648),
    ("mobilenet_0.25", 41_030_272, 464_600),
    ("mobilenet_0.125", 12_085_568, 183_744),
    ("shufflenet_g3_1.0", 137_460_672, 1_841_248),
    ("shufflenet_g3_0.5", 37_589_856, 706_084),
    ("shufflenet_g3_0.25", 11_009_808, 299_782),
];

#[test]
fn nine_models_match_the_design_table() {
    let names: Vec<&str> = benchmark_models().iter().map(|m| m.name).collect();
    assert_eq!(names, TABLE.iter().map(|t| t.0).collect::<Vec<_>>());
    for ((name, macs_m, params_m), (_, macs, params)) in TABLE.iter().zip(EXACT) {
        let cost = structure_cost(&find_model(name).unwrap(), 224).unwrap();
        let got = cost.macs as f64 / 1e6;
        assert!(
            (got - macs_m).abs() / macs_m < 1e-3,
            "{name}: {got} M MACs, table {macs_m}"
        );
        if let Some(p) = params_m {
            let got = cost.params as f64 / 1e6;
            assert!(
                (got - p).abs() / p < 1e-3,
                "{name}: {got} M params, table {p}"
            );
        }
        assert_eq!((cost.macs, cost.params), (macs, params), "{name}");
    }
}

#[test]
fn fd_mobilenet_spends_less_at_the_four_largest_resolutions() {
    let fd = structure_cost(&find_model("fd_mobilenet_1.0").unwrap(), 224).unwrap();
    let mb = structure_cost(&find_model("mobilenet_0.5").unwrap(), 224).unwrap();
    let sizes = |r: &model_zoo::CostReport| {
        r.by_resolution
            .iter()
            .map(|x| (x.height, x.width))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sizes(&mb),
        vec![(112, 112), (56, 56), (28, 28), (14, 14), (7, 7), (1, 1)]
    );
    assert_eq!(sizes(&fd), sizes(&mb));
    let top4 = |r: &model_zoo::CostReport| r.by_resolution[..4].iter().map(|x| x.macs).sum::<u64>();
    // MobileNet 0.5x spends most of its budget at 112..14; FD-MobileNet at 7x7.
    assert!(top4(&mb) > 2 * top4(&fd), "{} vs {}", top4(&mb), top4(&fd));
    assert_eq!(
        fd.by_resolution.iter().map(|r| r.macs).sum::<u64>(),
        fd.macs
    );
    // Hand-computed: FD 1.0 at 7x7 = six dw+pw blocks (dw_conv_5 is the stride-2 one).
    let at7 = fd.by_resolution[4].macs;
    let expected_7 =
        49 * (9 * 256 + 256 * 512) + 4 * 49 * (9 * 512 + 512 * 512) + 49 * (9 * 512 + 512 * 1024);
    assert_eq!(at7, expected_7);
}

fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn init(name: &str, dims: &[i64]) -> pb::TensorProto {
    let n: i64 = dims.iter().product();
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: vec![0.5; n as usize],
        ..Default::default()
    }
}

fn input(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(n) => Value::DimValue(*n),
                                None => Value::DimParam("batch".into()),
                            }),
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

#[test]
fn counter_handles_foreign_graphs() {
    // x[N,8,10,10] -> grouped Conv 3x3 s1 p1 g=4 (8->12, bias) -> ReduceMean? no: Flatten
    // -> MatMul with [1200, 5] -> Gemm transA? keep plain Gemm with [5,7] + bias.
    let node =
        |op: &str, inputs: &[&str], out: &str, attrs: Vec<pb::AttributeProto>| pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            name: String::new(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        };
    let graph = pb::GraphProto {
        name: "foreign".into(),
        node: vec![
            node(
                "Conv",
                &["x", "w", "b"],
                "c",
                vec![
                    pb::AttributeProto {
                        name: "group".into(),
                        r#type: pb::attribute_proto::AttributeType::Int as i32,
                        i: 4,
                        ..Default::default()
                    },
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("pads", &[1, 1, 1, 1]),
                ],
            ),
            node("Flatten", &["c"], "f", vec![]),
            node("MatMul", &["f", "m"], "y", vec![]),
            node("Gemm", &["y", "g", "gb"], "z", vec![]),
        ],
        initializer: vec![
            init("w", &[12, 2, 3, 3]),
            init("b", &[12]),
            init("m", &[1200, 5]),
            init("g", &[5, 7]),
            init("gb", &[7]),
        ],
        input: vec![input("x", &[None, Some(8), Some(10), Some(10)])],
        output: vec![pb::ValueInfoProto {
            name: "z".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    let report = count_onnx_bytes(&model.encode_to_vec()).unwrap();
    let conv = 12 * 100 * (2 * 9);
    let matmul = 1200 * 5;
    let gemm = 5 * 7;
    assert_eq!(report.macs, (conv + matmul + gemm) as u64);
    assert_eq!(
        report.params,
        (12 * 2 * 9 + 12 + 1200 * 5 + 5 * 7 + 7) as u64
    );
    assert_eq!(report.nodes.len(), 3);
    assert_eq!(
        (report.nodes[0].out_height, report.nodes[0].out_width),
        (10, 10)
    );
    assert_eq!(report.by_resolution[0].macs, conv as u64);
}

#[test]
fn counter_rejects_garbage() {
    let err = count_onnx_bytes(b"definitely not protobuf \xff\xff\xff").unwrap_err();
    assert!(!err.to_string().is_empty());
}

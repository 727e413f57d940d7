//! ONNX files built in the tests with tract's protobuf types, and the `edge-run` command.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prost::Message;
use tract_onnx::pb;

pub const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;

pub fn value_info(name: &str, elem_type: i32, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .enumerate()
                        .map(|(ix, d)| Dimension {
                            value: Some(if *d < 0 {
                                Value::DimParam(format!("d{ix}"))
                            } else {
                                Value::DimValue(*d)
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

pub fn float_tensor(name: &str, dims: &[i64], data: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: data,
        ..Default::default()
    }
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_0"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn model(graph: pb::GraphProto) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "edge-runtime tests".into(),
        graph: Some(graph),
        ..Default::default()
    }
}

/// A 3x3 convolution (3 -> `classes` channels, weights fixed), global average pooling and
/// flatten: a tiny "classifier" with `classes` outputs for a 1x3xHxW input.
pub fn tiny_classifier(input_dims: &[i64], classes: usize) -> pb::ModelProto {
    let weights: Vec<f32> = (0..classes * 27)
        .map(|i| ((i * 7919) % 23) as f32 / 23.0 - 0.5)
        .collect();
    let bias: Vec<f32> = (0..classes).map(|i| i as f32 * 0.01).collect();
    let mut conv = node("Conv", &["input", "w", "b"], &["conv"]);
    conv.attribute.push(pb::AttributeProto {
        name: "pads".into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: vec![1, 1, 1, 1],
        ..Default::default()
    });
    model(pb::GraphProto {
        name: "tiny".into(),
        node: vec![
            conv,
            node("GlobalAveragePool", &["conv"], &["pool"]),
            node("Flatten", &["pool"], &["logits"]),
        ],
        initializer: vec![
            float_tensor("w", &[classes as i64, 3, 3, 3], weights),
            float_tensor("b", &[classes as i64], bias),
        ],
        input: vec![value_info("input", FLOAT, input_dims)],
        output: vec![value_info("logits", FLOAT, &[1, classes as i64])],
        ..Default::default()
    })
}

pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `edge-run` as built by cargo for this test's target. Under QEMU (armv7 tests) the guest
/// cannot exec an ARM binary by itself (no binfmt_misc here), so it goes through the same
/// runner cargo uses.
pub fn edge_run() -> Command {
    let bin = env!("CARGO_BIN_EXE_edge-run");
    if cfg!(target_arch = "arm") {
        let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/qemu-run");
        let mut cmd = Command::new(runner);
        cmd.arg(bin);
        cmd
    } else {
        Command::new(bin)
    }
}

/// Runs `edge-run` and asserts it failed cleanly: exit code 2, one stderr line naming
/// `names` and containing `cause`, no panic. Returns the line.
pub fn expect_clean_failure(args: &[&str], names: &str, cause: &str) -> String {
    let out: Output = edge_run().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "edge-run {args:?}: expected exit 2, got {:?}; stderr: {stderr}",
        out.status.code()
    );
    assert!(
        !stderr.contains("panicked"),
        "edge-run {args:?} panicked: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "edge-run {args:?}: expected one error line, got: {stderr}"
    );
    assert!(
        lines[0].contains(names),
        "error does not name {names:?}: {}",
        lines[0]
    );
    assert!(
        lines[0].to_lowercase().contains(&cause.to_lowercase()),
        "error does not say {cause:?}: {}",
        lines[0]
    );
    lines[0].to_string()
}

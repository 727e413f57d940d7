//! ONNX graph construction with the `tract_onnx::pb` protobuf types, shaped the way
//! `torch.onnx.export` writes these networks in eval mode (opset 13):
//! Conv (no bias) -> BatchNormalization -> Relu, AveragePool, Flatten, Gemm, plus
//! MaxPool, Reshape/Transpose/Reshape, Concat and Add for ShuffleNet.

use crate::arch::{ConvBn, Network, Op, BN_EPS, NUM_CLASSES};
use crate::weights::{ParamTensor, WeightMap};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

/// ONNX opset written into every model.
pub const OPSET: i64 = 13;
/// IR version torch writes for opset 13.
pub const IR_VERSION: i64 = 7;
pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "output";

fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn f32_tensor(name: &str, t: &ParamTensor) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

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

/// Torch-style scope path of a module: `features.conv_0` -> `/features/conv_0`.
fn scope(module: &str) -> String {
    format!("/{}", module.replace('.', "/"))
}

struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl GraphBuilder {
    /// Add a node named `<path>/<op>` with one output `<path>/<op>_output_0`.
    fn node(
        &mut self,
        path: &str,
        op: &str,
        inputs: Vec<String>,
        attribute: Vec<pb::AttributeProto>,
    ) -> String {
        let name = format!("{path}/{op}");
        let output = format!("{name}_output_0");
        self.nodes.push(pb::NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name,
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        output
    }

    fn constant_i64(&mut self, path: &str, values: &[i64]) -> String {
        let name = format!("{path}/Constant");
        let output = format!("{name}_output_0");
        self.nodes.push(pb::NodeProto {
            input: vec![],
            output: vec![output.clone()],
            name,
            op_type: "Constant".into(),
            attribute: vec![pb::AttributeProto {
                name: "value".into(),
                r#type: AttributeType::Tensor as i32,
                t: Some(i64_tensor("", values)),
                ..Default::default()
            }],
            ..Default::default()
        });
        output
    }

    fn init(&mut self, name: String, t: ParamTensor) -> String {
        self.initializers.push(f32_tensor(&name, &t));
        name
    }
}

/// Fold BatchNorm into the preceding convolution: w' = w * s, b' = beta - mean * s with
/// s = gamma / sqrt(var + eps), computed in f64 and rounded once to f32.
pub fn fold_conv_bn(conv: &ConvBn, weights: &WeightMap) -> (ParamTensor, ParamTensor) {
    let get = |s: &str| &weights[&format!("{}.{s}", conv.bn)].data;
    let (gamma, beta, mean, var) = (
        get("weight"),
        get("bias"),
        get("running_mean"),
        get("running_var"),
    );
    let w = &weights[&format!("{}.weight", conv.conv)];
    let per_out = w.data.len() / conv.c_out;
    let scales: Vec<f64> = (0..conv.c_out)
        .map(|c| gamma[c] as f64 / (var[c] as f64 + BN_EPS as f64).sqrt())
        .collect();
    let data = w
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * scales[i / per_out]) as f32)
        .collect();
    let bias = (0..conv.c_out)
        .map(|c| (beta[c] as f64 - mean[c] as f64 * scales[c]) as f32)
        .collect();
    (
        ParamTensor {
            shape: w.shape.clone(),
            data,
        },
        ParamTensor {
            shape: vec![conv.c_out],
            data: bias,
        },
    )
}

/// Build the ONNX model of `net` with `weights` (checked by the caller to match).
pub fn build_model(net: &Network, weights: &WeightMap, fold_bn: bool) -> pb::ModelProto {
    let mut g = GraphBuilder {
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    let res = net.resolution;
    // values[i] = ONNX name of value i; channel count and spatial size tracked for reshapes.
    let mut values: Vec<String> = vec![INPUT_NAME.to_string()];
    let mut shapes: Vec<(usize, usize)> = vec![(3, res)];
    let last = net.nodes.len() - 1;
    for (ix, node) in net.nodes.iter().enumerate() {
        let x = values[node.inputs[0]].clone();
        let (c, hw) = shapes[node.inputs[0]];
        let (mut out, shape) = match &node.op {
            Op::ConvBn(conv) => {
                let conv_path = scope(&conv.conv);
                let mut attribute = vec![
                    attr_ints("dilations", &[1, 1]),
                    attr_int("group", conv.groups as i64),
                    attr_ints("kernel_shape", &[conv.kernel as i64; 2]),
                    attr_ints("pads", &[conv.pad as i64; 4]),
                    attr_ints("strides", &[conv.stride as i64; 2]),
                ];
                // Keep torch's alphabetical attribute order.
                attribute.sort_by(|a, b| a.name.cmp(&b.name));
                let mut y = if fold_bn {
                    let (w, b) = fold_conv_bn(conv, weights);
                    let w = g.init(format!("{}.weight", conv.conv), w);
                    let b = g.init(format!("{}.bias", conv.conv), b);
                    g.node(&conv_path, "Conv", vec![x, w, b], attribute)
                } else {
                    let w_name = format!("{}.weight", conv.conv);
                    let w = g.init(w_name.clone(), weights[&w_name].clone());
                    let y = g.node(&conv_path, "Conv", vec![x, w], attribute);
                    let mut bn_inputs = vec![y];
                    for s in ["weight", "bias", "running_mean", "running_var"] {
                        let n = format!("{}.{s}", conv.bn);
                        bn_inputs.push(g.init(n.clone(), weights[&n].clone()));
                    }
                    g.node(
                        &scope(&conv.bn),
                        "BatchNormalization",
                        bn_inputs,
                        vec![attr_float("epsilon", BN_EPS), attr_float("momentum", 0.9)],
                    )
                };
                if conv.relu {
                    y = g.node(&format!("{conv_path}_relu"), "Relu", vec![y], vec![]);
                }
                let out_hw = (hw + 2 * conv.pad - conv.kernel) / conv.stride + 1;
                (y, (conv.c_out, out_hw))
            }
            Op::MaxPool {
                kernel,
                stride,
                pad,
            } => {
                let y = g.node(
                    &format!("/features/{}", node.name),
                    "MaxPool",
                    vec![x],
                    vec![
                        attr_int("ceil_mode", 0),
                        attr_ints("dilations", &[1, 1]),
                        attr_ints("kernel_shape", &[*kernel as i64; 2]),
                        attr_ints("pads", &[*pad as i64; 4]),
                        attr_ints("strides", &[*stride as i64; 2]),
                    ],
                );
                (y, (c, (hw + 2 * pad - kernel) / stride + 1))
            }
            Op::AvgPool {
                kernel,
                stride,
                pad,
            } => {
                // The global pool sits outside `features` in the reference.
                let path = if node.name == "pool" {
                    "/pool".to_string()
                } else {
                    format!("/features/{}", node.name.replace('.', "/"))
                };
                let y = g.node(
                    &path,
                    "AveragePool",
                    vec![x],
                    vec![
                        attr_int("ceil_mode", 0),
                        attr_int("count_include_pad", 1),
                        attr_ints("kernel_shape", &[*kernel as i64; 2]),
                        attr_ints("pads", &[*pad as i64; 4]),
                        attr_ints("strides", &[*stride as i64; 2]),
                    ],
                );
                (y, (c, (hw + 2 * pad - kernel) / stride + 1))
            }
            Op::Shuffle { groups } => {
                let path = format!("/features/{}", node.name.replace('.', "/"));
                let (gr, n) = (*groups as i64, hw as i64);
                let split = g.constant_i64(&format!("{path}/split"), &[1, gr, c as i64 / gr, n, n]);
                let y = g.node(&format!("{path}/split"), "Reshape", vec![x, split], vec![]);
                let y = g.node(
                    &path,
                    "Transpose",
                    vec![y],
                    vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
                );
                let merge = g.constant_i64(&format!("{path}/merge"), &[1, c as i64, n, n]);
                let y = g.node(&format!("{path}/merge"), "Reshape", vec![y, merge], vec![]);
                (y, (c, hw))
            }
            Op::Concat => {
                let b = values[node.inputs[1]].clone();
                let cb = shapes[node.inputs[1]].0;
                let y = g.node(
                    &format!("/features/{}", node.name.replace('.', "/")),
                    "Concat",
                    vec![x, b],
                    vec![attr_int("axis", 1)],
                );
                (y, (c + cb, hw))
            }
            Op::Add => {
                let b = values[node.inputs[1]].clone();
                let y = g.node(
                    &format!("/features/{}", node.name.replace('.', "/")),
                    "Add",
                    vec![x, b],
                    vec![],
                );
                (y, (c, hw))
            }
            Op::Relu => {
                let y = g.node(
                    &format!("/features/{}", node.name.replace('.', "/")),
                    "Relu",
                    vec![x],
                    vec![],
                );
                (y, (c, hw))
            }
            Op::Flatten => {
                let y = g.node("", "Flatten", vec![x], vec![attr_int("axis", 1)]);
                (y, (c * hw * hw, 1))
            }
            Op::Linear { name, c_out, .. } => {
                let w = format!("{name}.weight");
                let b = format!("{name}.bias");
                let w = g.init(w.clone(), weights[&w].clone());
                let b = g.init(b.clone(), weights[&b].clone());
                let y = g.node(
                    &scope(name),
                    "Gemm",
                    vec![x, w, b],
                    vec![
                        attr_float("alpha", 1.0),
                        attr_float("beta", 1.0),
                        attr_int("transB", 1),
                    ],
                );
                (y, (*c_out, 1))
            }
        };
        if ix == last {
            // The graph output gets its public name.
            let node = g.nodes.last_mut().expect("a node was just added");
            node.output[0] = OUTPUT_NAME.to_string();
            out = OUTPUT_NAME.to_string();
        }
        values.push(out);
        shapes.push(shape);
    }
    pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "model-zoo".into(),
        producer_version: "1".into(),
        graph: Some(pb::GraphProto {
            node: g.nodes,
            name: "main_graph".into(),
            initializer: g.initializers,
            input: vec![value_info(INPUT_NAME, &[1, 3, res, res])],
            output: vec![value_info(OUTPUT_NAME, &[1, NUM_CLASSES])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Serialized bytes of `build_model`.
pub fn model_bytes(net: &Network, weights: &WeightMap, fold_bn: bool) -> Vec<u8> {
    build_model(net, weights, fold_bn).encode_to_vec()
}

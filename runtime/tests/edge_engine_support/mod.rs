//! Small ONNX graphs built in the tests, for cases the nine benchmark models do not
//! cover (unfolded BatchNorm, a depthwise output with two consumers, odd sizes).
#![allow(dead_code)]

use prost::Message;
use tract_onnx::pb;

/// Deterministic values in [-scale, scale).
pub fn pattern(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    seed: u64,
    counter: usize,
}

fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn ints_attr(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn value_info(name: &str, shape: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d as i64)),
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

impl GraphBuilder {
    pub fn new(seed: u64) -> Self {
        GraphBuilder {
            nodes: vec![],
            initializers: vec![],
            seed,
            counter: 0,
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    fn init(&mut self, prefix: &str, dims: &[usize], data: Vec<f32>) -> String {
        let name = self.fresh(prefix);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: data,
            ..Default::default()
        });
        name
    }

    fn random_init(&mut self, prefix: &str, dims: &[usize], scale: f32, offset: f32) -> String {
        self.seed += 1;
        let len = dims.iter().product();
        let data = pattern(len, self.seed, scale)
            .into_iter()
            .map(|v| v + offset)
            .collect();
        self.init(prefix, dims, data)
    }

    fn node(&mut self, op: &str, inputs: Vec<String>, attrs: Vec<pb::AttributeProto>) -> String {
        let out = self.fresh(op);
        self.nodes.push(pb::NodeProto {
            name: out.clone(),
            op_type: op.into(),
            input: inputs,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// Conv with `kernel`x`kernel` weights, pad `kernel / 2`.
    #[allow(clippy::too_many_arguments)] // mirrors the ONNX Conv attributes one to one
    pub fn conv(
        &mut self,
        x: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        group: usize,
        with_bias: bool,
    ) -> String {
        let fan_in = (c_in / group * kernel * kernel) as f32;
        let w = self.random_init(
            "w",
            &[c_out, c_in / group, kernel, kernel],
            (3.0 / fan_in).sqrt(),
            0.0,
        );
        let mut inputs = vec![x.to_string(), w];
        if with_bias {
            inputs.push(self.random_init("b", &[c_out], 0.2, 0.0));
        }
        let pad = (kernel / 2) as i64;
        self.node(
            "Conv",
            inputs,
            vec![
                ints_attr("kernel_shape", &[kernel as i64, kernel as i64]),
                ints_attr("strides", &[stride as i64, stride as i64]),
                ints_attr("pads", &[pad, pad, pad, pad]),
                ints_attr("dilations", &[1, 1]),
                int_attr("group", group as i64),
            ],
        )
    }

    pub fn batch_norm(&mut self, x: &str, c: usize) -> String {
        let scale = self.random_init("gamma", &[c], 0.3, 1.0);
        let bias = self.random_init("beta", &[c], 0.2, 0.0);
        let mean = self.random_init("mean", &[c], 0.1, 0.0);
        let var = self.random_init("var", &[c], 0.2, 1.0);
        self.node(
            "BatchNormalization",
            vec![x.into(), scale, bias, mean, var],
            vec![],
        )
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", vec![x.into()], vec![])
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", vec![a.into(), b.into()], vec![])
    }

    /// AveragePool with a `kernel`x`kernel` window and stride, no padding.
    pub fn average_pool(&mut self, x: &str, kernel: usize) -> String {
        let k = kernel as i64;
        self.node(
            "AveragePool",
            vec![x.into()],
            vec![
                ints_attr("kernel_shape", &[k, k]),
                ints_attr("strides", &[k, k]),
            ],
        )
    }

    pub fn flatten(&mut self, x: &str) -> String {
        self.node("Flatten", vec![x.into()], vec![int_attr("axis", 1)])
    }

    /// A classifier as the exports write it: `Gemm` with `transB = 1`.
    pub fn linear(&mut self, x: &str, inputs: usize, outputs: usize, with_bias: bool) -> String {
        let w = self.random_init("fc", &[outputs, inputs], (3.0 / inputs as f32).sqrt(), 0.0);
        let mut args = vec![x.to_string(), w];
        if with_bias {
            args.push(self.random_init("fcb", &[outputs], 0.2, 0.0));
        }
        self.node("Gemm", args, vec![int_attr("transB", 1)])
    }

    pub fn global_average_pool(&mut self, x: &str) -> String {
        self.node("GlobalAveragePool", vec![x.into()], vec![])
    }

    pub fn build(self, input: &str, input_shape: &[usize], output: &str) -> Vec<u8> {
        let graph = pb::GraphProto {
            name: "edge_engine_test".into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(input, input_shape)],
            output: vec![pb::ValueInfoProto {
                name: output.into(),
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
        model.encode_to_vec()
    }
}

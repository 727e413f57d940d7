//! Network definitions, written straight from `shared/design/architectures.md`
//! (the FD-MobileNet authors' PyTorch reference): layer order, channel rounding,
//! strides, padding and state-dict names.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The three network families of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    #[serde(rename = "FD-MobileNet")]
    FdMobileNet,
    #[serde(rename = "MobileNet")]
    MobileNet,
    #[serde(rename = "ShuffleNet")]
    ShuffleNet,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::FdMobileNet => "FD-MobileNet",
            Family::MobileNet => "MobileNet",
            Family::ShuffleNet => "ShuffleNet",
        })
    }
}

/// One of the nine benchmark configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkModel {
    pub name: &'static str,
    pub family: Family,
    pub width: f32,
    pub budget_mflops: u32,
}

/// The nine benchmark models, in the order FD-MobileNet, MobileNet, ShuffleNet
/// (each by decreasing budget).
pub fn benchmark_models() -> Vec<BenchmarkModel> {
    let m = |name, family, width, budget_mflops| BenchmarkModel {
        name,
        family,
        width,
        budget_mflops,
    };
    vec![
        m("fd_mobilenet_1.0", Family::FdMobileNet, 1.0, 140),
        m("fd_mobilenet_0.5", Family::FdMobileNet, 0.5, 40),
        m("fd_mobilenet_0.25", Family::FdMobileNet, 0.25, 12),
        m("mobilenet_0.5", Family::MobileNet, 0.5, 140),
        m("mobilenet_0.25", Family::MobileNet, 0.25, 40),
        m("mobilenet_0.125", Family::MobileNet, 0.125, 12),
        m("shufflenet_g3_1.0", Family::ShuffleNet, 1.0, 140),
        m("shufflenet_g3_0.5", Family::ShuffleNet, 0.5, 40),
        m("shufflenet_g3_0.25", Family::ShuffleNet, 0.25, 12),
    ]
}

/// Look a benchmark model up by its name (e.g. `fd_mobilenet_0.25`).
pub fn find_model(name: &str) -> Option<BenchmarkModel> {
    benchmark_models().into_iter().find(|m| m.name == name)
}

/// Number of ImageNet classes of every network's classifier.
pub const NUM_CLASSES: usize = 1000;
/// BatchNorm epsilon of the reference (PyTorch default).
pub const BN_EPS: f32 = 1e-5;

/// A value in the network graph: index 0 is the input image, index i+1 is the
/// output of `Network::nodes[i]`.
pub type ValueId = usize;

/// A convolution (no bias in training form) followed by BatchNorm.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBn {
    /// State-dict name of the conv module, e.g. `features.dw_conv_3`.
    pub conv: String,
    /// State-dict name of the BatchNorm module, e.g. `features.dw_norm_3`.
    pub bn: String,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub relu: bool,
}

/// One operation of a network, in the shape `torch.onnx.export` gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    ConvBn(ConvBn),
    /// MaxPool 3x3 stride 2 pad 1 (ShuffleNet's pool_1).
    MaxPool {
        kernel: usize,
        stride: usize,
        pad: usize,
    },
    /// AveragePool that counts its padding (count_include_pad = 1).
    AvgPool {
        kernel: usize,
        stride: usize,
        pad: usize,
    },
    /// Channel shuffle with `groups` groups (Reshape/Transpose/Reshape).
    Shuffle {
        groups: usize,
    },
    /// Concatenation on channels.
    Concat,
    Add,
    Relu,
    Flatten,
    /// Linear layer `name` (weight [c_out, c_in], bias [c_out]).
    Linear {
        name: String,
        c_in: usize,
        c_out: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// A short unique node name (used for ONNX node and value names).
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
}

/// A network definition: a topologically ordered list of operations.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub resolution: usize,
    pub nodes: Vec<Node>,
}

/// Shape of one parameter tensor, with its state-dict name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl Network {
    fn push(&mut self, name: impl Into<String>, op: Op, inputs: Vec<ValueId>) -> ValueId {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        self.nodes.len()
    }

    /// The output value (logits).
    pub fn output(&self) -> ValueId {
        self.nodes.len()
    }

    /// All parameter tensors in PyTorch state-dict order (without
    /// `num_batches_tracked`, which carries no inference information).
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        let mut p = |name: String, shape: Vec<usize>| specs.push(ParamSpec { name, shape });
        for node in &self.nodes {
            match &node.op {
                Op::ConvBn(c) => {
                    p(
                        format!("{}.weight", c.conv),
                        vec![c.c_out, c.c_in / c.groups, c.kernel, c.kernel],
                    );
                    for suffix in ["weight", "bias", "running_mean", "running_var"] {
                        p(format!("{}.{suffix}", c.bn), vec![c.c_out]);
                    }
                }
                Op::Linear { name, c_in, c_out } => {
                    p(format!("{name}.weight"), vec![*c_out, *c_in]);
                    p(format!("{name}.bias"), vec![*c_out]);
                }
                _ => {}
            }
        }
        specs
    }
}

/// Validates a resolution: a positive multiple of 32.
pub fn check_resolution(resolution: usize) -> Result<(), String> {
    if resolution == 0 || !resolution.is_multiple_of(32) {
        return Err(format!(
            "resolution {resolution} is not a positive multiple of 32"
        ));
    }
    Ok(())
}

/// `int(c * w)` of the reference: truncation toward zero, computed in f64 from
/// the f32 width so that e.g. 0.1 behaves like Python's float.
fn scale(c: usize, width: f32) -> usize {
    (c as f64 * width as f64) as usize
}

const MOBILENET_CHANNELS: [usize; 13] = [
    64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024,
];
const MOBILENET_STRIDES: [usize; 13] = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1];
const FD_MOBILENET_CHANNELS: [usize; 11] = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 1024];
const FD_MOBILENET_STRIDES: [usize; 11] = [2, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1];

/// MobileNet v1 (`fd = false`) or FD-MobileNet (`fd = true`) at width `width`.
pub fn mobilenet(fd: bool, width: f32, resolution: usize) -> Result<Network, String> {
    check_resolution(resolution)?;
    if !(width > 0.0 && width.is_finite()) {
        return Err(format!("width multiplier {width} is not positive"));
    }
    let (channels, strides): (&[usize], &[usize]) = if fd {
        (&FD_MOBILENET_CHANNELS, &FD_MOBILENET_STRIDES)
    } else {
        (&MOBILENET_CHANNELS, &MOBILENET_STRIDES)
    };
    let init = scale(32, width);
    if init == 0 || channels.iter().any(|&c| scale(c, width) == 0) {
        return Err(format!(
            "width multiplier {width} gives a layer without channels"
        ));
    }
    let mut net = Network {
        resolution,
        nodes: Vec::new(),
    };
    let mut x = net.push(
        "conv_0",
        Op::ConvBn(ConvBn {
            conv: "features.conv_0".into(),
            bn: "features.norm_0".into(),
            c_in: 3,
            c_out: init,
            kernel: 3,
            stride: 2,
            pad: 1,
            groups: 1,
            relu: true,
        }),
        vec![0],
    );
    let mut c_in = init;
    for (i, (&c, &s)) in channels.iter().zip(strides).enumerate() {
        let c_out = scale(c, width);
        x = net.push(
            format!("dw_conv_{i}"),
            Op::ConvBn(ConvBn {
                conv: format!("features.dw_conv_{i}"),
                bn: format!("features.dw_norm_{i}"),
                c_in,
                c_out: c_in,
                kernel: 3,
                stride: s,
                pad: 1,
                groups: c_in,
                relu: true,
            }),
            vec![x],
        );
        x = net.push(
            format!("pw_conv_{i}"),
            Op::ConvBn(ConvBn {
                conv: format!("features.pw_conv_{i}"),
                bn: format!("features.pw_norm_{i}"),
                c_in,
                c_out,
                kernel: 1,
                stride: 1,
                pad: 0,
                groups: 1,
                relu: true,
            }),
            vec![x],
        );
        c_in = c_out;
    }
    head(&mut net, x, c_in);
    Ok(net)
}

/// Global pooling (AveragePool with kernel = resolution/32, 7 at 224), flatten and classifier.
fn head(net: &mut Network, x: ValueId, c_in: usize) {
    let k = net.resolution / 32;
    let x = net.push(
        "pool",
        Op::AvgPool {
            kernel: k,
            stride: k,
            pad: 0,
        },
        vec![x],
    );
    let x = net.push("flatten", Op::Flatten, vec![x]);
    net.push(
        "classifier",
        Op::Linear {
            name: "classifier".into(),
            c_in,
            c_out: NUM_CLASSES,
        },
        vec![x],
    );
}

/// Stage-2 output channels of ShuffleNet v1 per group count, as in the reference.
pub fn shufflenet_base_channels(groups: usize) -> Option<usize> {
    match groups {
        1 => Some(144),
        2 => Some(200),
        3 => Some(240),
        4 => Some(272),
        8 => Some(384),
        _ => None,
    }
}

/// ShuffleNet v1 with `groups` groups, channel width `width_mul` and stem width `init_mul`.
pub fn shufflenet(
    groups: usize,
    width_mul: f32,
    init_mul: f32,
    resolution: usize,
) -> Result<Network, String> {
    check_resolution(resolution)?;
    let base = shufflenet_base_channels(groups)
        .ok_or_else(|| format!("ShuffleNet groups {groups} is not one of 1, 2, 3, 4, 8"))?;
    if !(width_mul > 0.0 && width_mul.is_finite() && init_mul > 0.0 && init_mul.is_finite()) {
        return Err(format!(
            "width multipliers {width_mul}/{init_mul} are not positive"
        ));
    }
    let g = groups;
    // r(x) = (int(x*m) + g - 1) // g * g: round up to a multiple of g.
    let r = |x: usize, m: f32| scale(x, m).div_ceil(g) * g;
    let init = r(24, init_mul);
    let block_channels = [
        r(base, width_mul),
        r(2 * base, width_mul),
        r(4 * base, width_mul),
    ];
    let repeats = [3usize, 7, 3];
    let mut net = Network {
        resolution,
        nodes: Vec::new(),
    };
    if init == 0 || block_channels[0] == 0 {
        return Err(format!(
            "width multiplier {width_mul} gives a layer without channels"
        ));
    }
    let mut x = net.push(
        "conv_1",
        Op::ConvBn(ConvBn {
            conv: "features.conv_1".into(),
            bn: "features.norm_1".into(),
            c_in: 3,
            c_out: init,
            kernel: 3,
            stride: 2,
            pad: 1,
            groups: 1,
            relu: true,
        }),
        vec![0],
    );
    x = net.push(
        "pool_1",
        Op::MaxPool {
            kernel: 3,
            stride: 2,
            pad: 1,
        },
        vec![x],
    );
    let mut c_in = init;
    for (i, (&c_out, &rep)) in block_channels.iter().zip(&repeats).enumerate() {
        for j in 1..=rep + 1 {
            let down = j == 1;
            let prefix = format!("features.stage_{}_{}", i + 1, j);
            let short = format!("stage_{}_{}", i + 1, j);
            let bott = c_out / 4;
            let compress_groups = if i == 0 && down { 1 } else { g };
            let expand_out = if down { c_out - c_in } else { c_out };
            for (what, cin, cout, grp) in [
                ("compress", c_in, bott, compress_groups),
                ("expand", bott, expand_out, g),
            ] {
                if cin % grp != 0 || cout % grp != 0 || cout == 0 {
                    return Err(format!(
                        "width {width_mul} gives {short}.{what} {cin}->{cout} channels, not divisible by {grp} groups"
                    ));
                }
            }
            let unit_in = x;
            let mut y = net.push(
                format!("{short}.compress"),
                Op::ConvBn(ConvBn {
                    conv: format!("{prefix}.compress"),
                    bn: format!("{prefix}.bn_compress"),
                    c_in,
                    c_out: bott,
                    kernel: 1,
                    stride: 1,
                    pad: 0,
                    groups: compress_groups,
                    relu: true,
                }),
                vec![unit_in],
            );
            y = net.push(
                format!("{short}.shuffle"),
                Op::Shuffle { groups: g },
                vec![y],
            );
            y = net.push(
                format!("{short}.depthwise"),
                Op::ConvBn(ConvBn {
                    conv: format!("{prefix}.depthwise"),
                    bn: format!("{prefix}.bn_depthwise"),
                    c_in: bott,
                    c_out: bott,
                    kernel: 3,
                    stride: if down { 2 } else { 1 },
                    pad: 1,
                    groups: bott,
                    relu: false,
                }),
                vec![y],
            );
            y = net.push(
                format!("{short}.expand"),
                Op::ConvBn(ConvBn {
                    conv: format!("{prefix}.expand"),
                    bn: format!("{prefix}.bn_expand"),
                    c_in: bott,
                    c_out: expand_out,
                    kernel: 1,
                    stride: 1,
                    pad: 0,
                    groups: g,
                    relu: false,
                }),
                vec![y],
            );
            let merged = if down {
                let pooled = net.push(
                    format!("{short}.avg_pool"),
                    Op::AvgPool {
                        kernel: 3,
                        stride: 2,
                        pad: 1,
                    },
                    vec![unit_in],
                );
                net.push(format!("{short}.concat"), Op::Concat, vec![y, pooled])
            } else {
                net.push(format!("{short}.add"), Op::Add, vec![y, unit_in])
            };
            x = net.push(format!("{short}.relu"), Op::Relu, vec![merged]);
            c_in = c_out;
        }
    }
    head(&mut net, x, c_in);
    Ok(net)
}

/// The network of a benchmark model at `resolution`.
pub fn build(model: &BenchmarkModel, resolution: usize) -> Result<Network, String> {
    match model.family {
        Family::FdMobileNet => mobilenet(true, model.width, resolution),
        Family::MobileNet => mobilenet(false, model.width, resolution),
        Family::ShuffleNet => shufflenet(3, model.width, model.width, resolution),
    }
}

//! A plain f32 forward pass over a `Network` (batch 1), used to calibrate the
//! generated BatchNorm statistics. Written with fixed loop order and no fused
//! multiply-add so its results are bit-identical on every IEEE 754 machine; tract
//! cannot be used here because its kernels differ per architecture.

use crate::arch::{ConvBn, Network, Op, BN_EPS};
use crate::weights::WeightMap;

/// One activation map, CHW.
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

fn out_size(size: usize, kernel: usize, stride: usize, pad: usize) -> usize {
    (size + 2 * pad - kernel) / stride + 1
}

/// Convolution without bias (grouped, any kernel/stride/padding).
pub fn conv(x: &Act, conv: &ConvBn, weight: &[f32]) -> Act {
    let (k, s, p) = (conv.kernel, conv.stride, conv.pad);
    let (oh, ow) = (out_size(x.h, k, s, p), out_size(x.w, k, s, p));
    let cin_g = conv.c_in / conv.groups;
    let cout_g = conv.c_out / conv.groups;
    let mut out = vec![0f32; conv.c_out * oh * ow];
    for oc in 0..conv.c_out {
        let g = oc / cout_g;
        let plane = &mut out[oc * oh * ow..(oc + 1) * oh * ow];
        for icg in 0..cin_g {
            let ic = g * cin_g + icg;
            let src = &x.data[ic * x.h * x.w..(ic + 1) * x.h * x.w];
            for ky in 0..k {
                for kx in 0..k {
                    let wv = weight[((oc * cin_g + icg) * k + ky) * k + kx];
                    for oy in 0..oh {
                        let iy = (oy * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= x.h as isize {
                            continue;
                        }
                        let row = &src[iy as usize * x.w..(iy as usize + 1) * x.w];
                        let dst = &mut plane[oy * ow..(oy + 1) * ow];
                        for (ox, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * s + kx) as isize - p as isize;
                            if ix >= 0 && ix < x.w as isize {
                                *d += wv * row[ix as usize];
                            }
                        }
                    }
                }
            }
        }
    }
    Act {
        c: conv.c_out,
        h: oh,
        w: ow,
        data: out,
    }
}

/// Per-channel mean and (biased) variance, accumulated in f64.
pub fn channel_stats(x: &Act) -> (Vec<f64>, Vec<f64>) {
    let hw = x.h * x.w;
    let mut means = Vec::with_capacity(x.c);
    let mut vars = Vec::with_capacity(x.c);
    for c in 0..x.c {
        let plane = &x.data[c * hw..(c + 1) * hw];
        let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
        let var = plane
            .iter()
            .map(|&v| (v as f64 - mean) * (v as f64 - mean))
            .sum::<f64>()
            / hw as f64;
        means.push(mean);
        vars.push(var);
    }
    (means, vars)
}

fn batch_norm(x: &mut Act, conv: &ConvBn, weights: &WeightMap) {
    let get = |s: &str| &weights[&format!("{}.{s}", conv.bn)].data;
    let (gamma, beta, mean, var) = (
        get("weight"),
        get("bias"),
        get("running_mean"),
        get("running_var"),
    );
    let hw = x.h * x.w;
    for c in 0..x.c {
        let scale = gamma[c] / (var[c] + BN_EPS).sqrt();
        for v in &mut x.data[c * hw..(c + 1) * hw] {
            *v = (*v - mean[c]) * scale + beta[c];
        }
    }
    if conv.relu {
        relu(x);
    }
}

fn relu(x: &mut Act) {
    for v in &mut x.data {
        *v = v.max(0.0);
    }
}

fn pool(x: &Act, kernel: usize, stride: usize, pad: usize, max: bool) -> Act {
    let (oh, ow) = (
        out_size(x.h, kernel, stride, pad),
        out_size(x.w, kernel, stride, pad),
    );
    let mut out = Vec::with_capacity(x.c * oh * ow);
    for c in 0..x.c {
        let src = &x.data[c * x.h * x.w..(c + 1) * x.h * x.w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                for ky in 0..kernel {
                    for kx in 0..kernel {
                        let iy = (oy * stride + ky) as isize - pad as isize;
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                            continue;
                        }
                        let v = src[iy as usize * x.w + ix as usize];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                // Average pooling counts the padding (count_include_pad = 1).
                out.push(if max {
                    acc
                } else {
                    acc / (kernel * kernel) as f32
                });
            }
        }
    }
    Act {
        c: x.c,
        h: oh,
        w: ow,
        data: out,
    }
}

fn shuffle(x: &Act, groups: usize) -> Act {
    let per = x.c / groups;
    let hw = x.h * x.w;
    let mut out = vec![0f32; x.data.len()];
    // [g, C/g] -> [C/g, g]: output channel j*g + i comes from input channel i*per + j.
    for i in 0..groups {
        for j in 0..per {
            let src = i * per + j;
            let dst = j * groups + i;
            out[dst * hw..(dst + 1) * hw].copy_from_slice(&x.data[src * hw..(src + 1) * hw]);
        }
    }
    Act {
        c: x.c,
        h: x.h,
        w: x.w,
        data: out,
    }
}

/// Run `net` on `input`, calling `on_conv(conv, pre_bn_output, weights)` after every
/// convolution and before its BatchNorm (the hook may change the BatchNorm's
/// parameters). Returns the logits.
pub fn run(
    net: &Network,
    weights: &mut WeightMap,
    input: Act,
    mut on_conv: impl FnMut(&ConvBn, &Act, &mut WeightMap),
) -> Vec<f32> {
    let mut values: Vec<Act> = Vec::with_capacity(net.nodes.len() + 1);
    values.push(input);
    for node in &net.nodes {
        let x = &values[node.inputs[0]];
        let y = match &node.op {
            Op::ConvBn(c) => {
                let mut y = conv(x, c, &weights[&format!("{}.weight", c.conv)].data);
                on_conv(c, &y, weights);
                batch_norm(&mut y, c, weights);
                y
            }
            Op::MaxPool {
                kernel,
                stride,
                pad,
            } => pool(x, *kernel, *stride, *pad, true),
            Op::AvgPool {
                kernel,
                stride,
                pad,
            } => pool(x, *kernel, *stride, *pad, false),
            Op::Shuffle { groups } => shuffle(x, *groups),
            Op::Concat => {
                let b = &values[node.inputs[1]];
                let mut data = x.data.clone();
                data.extend_from_slice(&b.data);
                Act {
                    c: x.c + b.c,
                    h: x.h,
                    w: x.w,
                    data,
                }
            }
            Op::Add => {
                let b = &values[node.inputs[1]];
                let mut y = x.clone();
                for (v, w) in y.data.iter_mut().zip(&b.data) {
                    *v += *w;
                }
                y
            }
            Op::Relu => {
                let mut y = x.clone();
                relu(&mut y);
                y
            }
            Op::Flatten => Act {
                c: x.data.len(),
                h: 1,
                w: 1,
                data: x.data.clone(),
            },
            Op::Linear { name, c_in, c_out } => {
                let w = &weights[&format!("{name}.weight")].data;
                let b = &weights[&format!("{name}.bias")].data;
                let data = (0..*c_out)
                    .map(|o| {
                        let mut acc = b[o];
                        for i in 0..*c_in {
                            acc += w[o * c_in + i] * x.data[i];
                        }
                        acc
                    })
                    .collect();
                Act {
                    c: *c_out,
                    h: 1,
                    w: 1,
                    data,
                }
            }
        };
        values.push(y);
    }
    values.pop().map(|a| a.data).unwrap_or_default()
}

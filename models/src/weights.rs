//! Deterministic weights and safetensors import/export.
//!
//! Generated weights are the same bytes on every machine: each tensor draws from its
//! own ChaCha8 stream (keyed by seed and state-dict name), normals come from the
//! Marsaglia polar method evaluated with the pure-Rust `libm` (no platform libm), and
//! the BatchNorm statistics come from a calibration forward pass in plain IEEE f32/f64
//! arithmetic (no fused multiply-add, fixed summation order).

use crate::arch::{ConvBn, Network, Op, ParamSpec};
use crate::forward::{self, Act};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// One parameter tensor (row-major f32).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Parameters by PyTorch state-dict name.
pub type WeightMap = BTreeMap<String, ParamTensor>;

/// Resolution at which generated BatchNorm statistics are calibrated. Fixed, so the
/// generated weights do not depend on the export resolution (convolutions do not care).
pub const CALIBRATION_RESOLUTION: usize = 224;

/// Deterministic standard-normal sampler on a ChaCha8 stream.
pub struct NormalStream {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl NormalStream {
    /// A stream keyed by `seed` and a label (e.g. a state-dict name).
    pub fn new(seed: u64, label: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(seed.to_le_bytes());
        hasher.update(label.as_bytes());
        let key: [u8; 32] = hasher.finalize().into();
        NormalStream {
            rng: ChaCha8Rng::from_seed(key),
            spare: None,
        }
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Marsaglia polar method).
    pub fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                // sqrt is correctly rounded by IEEE 754; log comes from pure-Rust libm.
                let factor = (-2.0 * libm::log(s) / s).sqrt();
                self.spare = Some(v * factor);
                return u * factor;
            }
        }
    }
}

/// `n` standard-normal values as f32 (the input used for calibration and tests).
pub fn normal_values(seed: u64, label: &str, n: usize) -> Vec<f32> {
    let mut stream = NormalStream::new(seed, label);
    (0..n).map(|_| stream.normal() as f32).collect()
}

fn normal_tensor(seed: u64, name: &str, shape: &[usize], mean: f64, std: f64) -> ParamTensor {
    let n = shape.iter().product();
    let mut stream = NormalStream::new(seed, name);
    ParamTensor {
        shape: shape.to_vec(),
        data: (0..n)
            .map(|_| (mean + std * stream.normal()) as f32)
            .collect(),
    }
}

/// He-normal standard deviation as in the reference `_init_params`: fan_in for
/// depthwise convolutions, fan_out (c_out * k * k) for the others.
fn he_std(conv: &ConvBn) -> f64 {
    let depthwise = conv.groups > 1 && conv.groups == conv.c_in && conv.c_in == conv.c_out;
    let fan = if depthwise {
        (conv.c_in / conv.groups) * conv.kernel * conv.kernel
    } else {
        conv.c_out * conv.kernel * conv.kernel
    };
    (2.0 / fan as f64).sqrt()
}

/// Generate all weights of `net` from `seed`: He-normal convolutions and classifier,
/// BatchNorm scale ~ 1 + 0.1 N(0,1) and shift ~ 0.1 N(0,1), and running statistics
/// measured on a standard-normal calibration image so that every BatchNorm output is
/// close to zero-mean, unit-variance (times its scale) and no activation drifts towards
/// denormals or overflow.
pub fn generate(net: &Network, seed: u64) -> WeightMap {
    let mut weights = WeightMap::new();
    for node in &net.nodes {
        match &node.op {
            Op::ConvBn(c) => {
                let w = format!("{}.weight", c.conv);
                let shape = [c.c_out, c.c_in / c.groups, c.kernel, c.kernel];
                weights.insert(w.clone(), normal_tensor(seed, &w, &shape, 0.0, he_std(c)));
                let gamma = format!("{}.weight", c.bn);
                weights.insert(
                    gamma.clone(),
                    normal_tensor(seed, &gamma, &[c.c_out], 1.0, 0.1),
                );
                let beta = format!("{}.bias", c.bn);
                weights.insert(
                    beta.clone(),
                    normal_tensor(seed, &beta, &[c.c_out], 0.0, 0.1),
                );
                // Placeholders; calibrated below.
                for stat in ["running_mean", "running_var"] {
                    weights.insert(
                        format!("{}.{stat}", c.bn),
                        ParamTensor {
                            shape: vec![c.c_out],
                            data: vec![if stat == "running_var" { 1.0 } else { 0.0 }; c.c_out],
                        },
                    );
                }
            }
            Op::Linear { name, c_in, c_out } => {
                let w = format!("{name}.weight");
                // Reference: kaiming_normal(mode='fan_out'), bias 0.
                let std = (2.0 / *c_out as f64).sqrt();
                weights.insert(
                    w.clone(),
                    normal_tensor(seed, &w, &[*c_out, *c_in], 0.0, std),
                );
                weights.insert(
                    format!("{name}.bias"),
                    ParamTensor {
                        shape: vec![*c_out],
                        data: vec![0.0; *c_out],
                    },
                );
            }
            _ => {}
        }
    }
    calibrate(net, seed, &mut weights);
    weights
}

/// Set every BatchNorm's running mean/variance to the statistics of its input on a
/// standard-normal image at `CALIBRATION_RESOLUTION`, layer by layer.
fn calibrate(net: &Network, seed: u64, weights: &mut WeightMap) {
    let res = CALIBRATION_RESOLUTION;
    let input = Act {
        c: 3,
        h: res,
        w: res,
        data: normal_values(seed, "calibration.input", 3 * res * res),
    };
    forward::run(net, weights, input, |conv, pre_bn, weights| {
        let (mean, var) = forward::channel_stats(pre_bn);
        let m = weights
            .get_mut(&format!("{}.running_mean", conv.bn))
            .expect("generated weights hold every BatchNorm");
        m.data = mean.iter().map(|&v| v as f32).collect();
        let v = weights
            .get_mut(&format!("{}.running_var", conv.bn))
            .expect("generated weights hold every BatchNorm");
        v.data = var.iter().map(|&v| v as f32).collect();
    });
}

/// Serialize `weights` (ordered by name) as a safetensors file.
pub fn to_safetensors(weights: &WeightMap) -> Result<Vec<u8>, String> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .iter()
        .map(|(name, t)| {
            let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), t.shape.clone(), raw)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, raw)| {
            TensorView::new(Dtype::F32, shape.clone(), raw)
                .map(|view| (name.as_str(), view))
                .map_err(|e| format!("tensor {name}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, &None).map_err(|e| e.to_string())
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// Parse safetensors bytes holding the state dict of `net`. Every expected tensor must
/// be present with the right shape and nothing else may be there (except the
/// `num_batches_tracked` counters PyTorch keeps, which carry no inference information).
/// F32 tensors are taken as they are; F64 and F16/BF16 are converted.
pub fn from_safetensors(net: &Network, bytes: &[u8]) -> Result<WeightMap, String> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a valid safetensors file ({e})"))?;
    let expected: Vec<ParamSpec> = net.params();
    let mut missing = Vec::new();
    let mut wrong_shape = Vec::new();
    let mut wrong_type = Vec::new();
    let mut weights = WeightMap::new();
    for spec in &expected {
        let view = match file.tensor(&spec.name) {
            Ok(view) => view,
            Err(_) => {
                missing.push(spec.name.clone());
                continue;
            }
        };
        if view.shape() != spec.shape.as_slice() {
            wrong_shape.push(format!(
                "{} {:?} (expected {:?})",
                spec.name,
                view.shape(),
                spec.shape
            ));
            continue;
        }
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32)
                .collect(),
            Dtype::BF16 => view
                .data()
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            other => {
                wrong_type.push(format!("{} ({other:?})", spec.name));
                continue;
            }
        };
        if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
            wrong_type.push(format!("{} (non-finite value at index {bad})", spec.name));
            continue;
        }
        weights.insert(
            spec.name.clone(),
            ParamTensor {
                shape: spec.shape.clone(),
                data,
            },
        );
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|s| s.name.as_str()).collect();
    let mut extra: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !known.contains(n.as_str()) && !n.ends_with(".num_batches_tracked"))
        .cloned()
        .collect();
    extra.sort();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing tensors: {}", list(&missing)));
    }
    if !extra.is_empty() {
        problems.push(format!("unexpected tensors: {}", list(&extra)));
    }
    if !wrong_shape.is_empty() {
        problems.push(format!("wrong shapes: {}", list(&wrong_shape)));
    }
    if !wrong_type.is_empty() {
        problems.push(format!("unusable tensors: {}", list(&wrong_type)));
    }
    if problems.is_empty() {
        Ok(weights)
    } else {
        Err(problems.join("; "))
    }
}

/// Read and check a safetensors weight file for `net`.
pub fn load_safetensors(net: &Network, path: &Path) -> Result<WeightMap, crate::ZooError> {
    let bytes = std::fs::read(path).map_err(|source| crate::ZooError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_safetensors(net, &bytes).map_err(|cause| crate::ZooError::Weights {
        path: path.to_path_buf(),
        cause,
    })
}

//! Exported models run in tract agree with a plain f64 reference forward pass written
//! here straight from the design note (naive loops, weights looked up by state-dict
//! name in the exported safetensors), for all three families at small widths; folded
//! and unfolded exports agree too.

use model_zoo::export::{model_safetensors_bytes, model_weights};
use model_zoo::weights::normal_values;
use model_zoo::{find_model, model_onnx_bytes, ExportOptions};
use std::collections::HashMap;
use tract_onnx::prelude::*;

const RES: usize = 64;

struct Params(HashMap<String, (Vec<usize>, Vec<f64>)>);

impl Params {
    fn from_safetensors(bytes: &[u8]) -> Params {
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let mut map = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect();
            map.insert(name, (view.shape().to_vec(), data));
        }
        Params(map)
    }
    fn get(&self, name: &str) -> &(Vec<usize>, Vec<f64>) {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }
}

/// C x H x W map.
#[derive(Clone)]
struct Map {
    c: usize,
    h: usize,
    w: usize,
    v: Vec<f64>,
}

impl Map {
    fn at(&self, c: usize, y: isize, x: isize) -> Option<f64> {
        if y < 0 || x < 0 || y >= self.h as isize || x >= self.w as isize {
            None
        } else {
            Some(self.v[(c * self.h + y as usize) * self.w + x as usize])
        }
    }
}

fn conv(p: &Params, name: &str, x: &Map, stride: usize, pad: usize, groups: usize) -> Map {
    let (shape, w) = p.get(&format!("{name}.weight"));
    let (co, cig, k) = (shape[0], shape[1], shape[2]);
    assert_eq!(cig * groups, x.c, "{name}");
    let oh = (x.h + 2 * pad - k) / stride + 1;
    let ow = (x.w + 2 * pad - k) / stride + 1;
    let cog = co / groups;
    let mut v = vec![0.0; co * oh * ow];
    for o in 0..co {
        let g = o / cog;
        for y in 0..oh {
            for xx in 0..ow {
                let mut acc = 0.0;
                for i in 0..cig {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (y * stride + ky) as isize - pad as isize;
                            let ix = (xx * stride + kx) as isize - pad as isize;
                            if let Some(a) = x.at(g * cig + i, iy, ix) {
                                acc += a * w[((o * cig + i) * k + ky) * k + kx];
                            }
                        }
                    }
                }
                v[(o * oh + y) * ow + xx] = acc;
            }
        }
    }
    Map {
        c: co,
        h: oh,
        w: ow,
        v,
    }
}

fn bn(p: &Params, name: &str, mut x: Map, relu: bool) -> Map {
    let g = &p.get(&format!("{name}.weight")).1;
    let b = &p.get(&format!("{name}.bias")).1;
    let m = &p.get(&format!("{name}.running_mean")).1;
    let var = &p.get(&format!("{name}.running_var")).1;
    let hw = x.h * x.w;
    for c in 0..x.c {
        for i in 0..hw {
            let y = (x.v[c * hw + i] - m[c]) / (var[c] + 1e-5).sqrt() * g[c] + b[c];
            x.v[c * hw + i] = if relu { y.max(0.0) } else { y };
        }
    }
    x
}

fn pool(x: &Map, k: usize, s: usize, pad: usize, max: bool) -> Map {
    let oh = (x.h + 2 * pad - k) / s + 1;
    let ow = (x.w + 2 * pad - k) / s + 1;
    let mut v = Vec::new();
    for c in 0..x.c {
        for y in 0..oh {
            for xx in 0..ow {
                let vals: Vec<f64> = (0..k * k)
                    .filter_map(|i| {
                        x.at(
                            c,
                            (y * s + i / k) as isize - pad as isize,
                            (xx * s + i % k) as isize - pad as isize,
                        )
                    })
                    .collect();
                v.push(if max {
                    vals.iter().cloned().fold(f64::MIN, f64::max)
                } else {
                    vals.iter().sum::<f64>() / (k * k) as f64 // padding counts
                });
            }
        }
    }
    Map {
        c: x.c,
        h: oh,
        w: ow,
        v,
    }
}

fn classifier(p: &Params, x: &Map) -> Vec<f64> {
    // AvgPool over the whole (res/32 square) map, flatten, Linear.
    let pooled = pool(x, x.h, x.h, 0, false);
    let (shape, w) = p.get("classifier.weight");
    let b = &p.get("classifier.bias").1;
    (0..shape[0])
        .map(|o| {
            b[o] + (0..shape[1])
                .map(|i| w[o * shape[1] + i] * pooled.v[i])
                .sum::<f64>()
        })
        .collect()
}

fn mobilenet(p: &Params, x: Map, fd: bool) -> Vec<f64> {
    let strides: &[usize] = if fd {
        &[2, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1]
    } else {
        &[1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    };
    let mut x = bn(
        p,
        "features.norm_0",
        conv(p, "features.conv_0", &x, 2, 1, 1),
        true,
    );
    for (i, &s) in strides.iter().enumerate() {
        let c = x.c;
        x = bn(
            p,
            &format!("features.dw_norm_{i}"),
            conv(p, &format!("features.dw_conv_{i}"), &x, s, 1, c),
            true,
        );
        x = bn(
            p,
            &format!("features.pw_norm_{i}"),
            conv(p, &format!("features.pw_conv_{i}"), &x, 1, 0, 1),
            true,
        );
    }
    classifier(p, &x)
}

fn shufflenet(p: &Params, x: Map, g: usize) -> Vec<f64> {
    let x = bn(
        p,
        "features.norm_1",
        conv(p, "features.conv_1", &x, 2, 1, 1),
        true,
    );
    let mut x = pool(&x, 3, 2, 1, true);
    for (i, repeats) in [3, 7, 3].into_iter().enumerate() {
        for j in 1..=repeats + 1 {
            let u = format!("features.stage_{}_{j}", i + 1);
            let down = j == 1;
            let cg = if i == 0 && down { 1 } else { g };
            let y = bn(
                p,
                &format!("{u}.bn_compress"),
                conv(p, &format!("{u}.compress"), &x, 1, 0, cg),
                true,
            );
            // Channel shuffle: view [g, C/g], transpose, flatten.
            let per = y.c / g;
            let hw = y.h * y.w;
            let mut sh = y.clone();
            for a in 0..g {
                for b in 0..per {
                    let (src, dst) = (a * per + b, b * g + a);
                    sh.v[dst * hw..(dst + 1) * hw].copy_from_slice(&y.v[src * hw..(src + 1) * hw]);
                }
            }
            let bott = sh.c;
            let y = bn(
                p,
                &format!("{u}.bn_depthwise"),
                conv(
                    p,
                    &format!("{u}.depthwise"),
                    &sh,
                    if down { 2 } else { 1 },
                    1,
                    bott,
                ),
                false,
            );
            let mut y = bn(
                p,
                &format!("{u}.bn_expand"),
                conv(p, &format!("{u}.expand"), &y, 1, 0, g),
                false,
            );
            if down {
                let r = pool(&x, 3, 2, 1, false);
                y.v.extend_from_slice(&r.v);
                y.c += r.c;
            } else {
                for (a, b) in y.v.iter_mut().zip(&x.v) {
                    *a += b;
                }
            }
            for a in &mut y.v {
                *a = a.max(0.0);
            }
            x = y;
        }
    }
    classifier(p, &x)
}

fn tract_logits(onnx: &[u8], input: &[f32]) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let x = Tensor::from_shape(&[1, 3, RES, RES], input).unwrap();
    let out = model.run(tvec!(x.into_tvalue())).unwrap();
    assert_eq!(out[0].shape(), &[1, 1000]);
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn assert_close(name: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.0 && scale.is_finite(),
        "{name}: degenerate logits"
    );
    let worst = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= rel * scale,
        "{name}: max |tract - reference| = {worst:e}, {rel:e} x max|logit| = {:e}",
        rel * scale
    );
}

fn check(name: &str) {
    let model = find_model(name).unwrap();
    let opts = ExportOptions {
        resolution: RES,
        ..Default::default()
    };
    let params = Params::from_safetensors(&model_safetensors_bytes(&model, &opts).unwrap());
    assert_eq!(params.0.len(), model_weights(&model, &opts).unwrap().len());
    let input = normal_values(7, "reference-test.input", 3 * RES * RES);
    let map = Map {
        c: 3,
        h: RES,
        w: RES,
        v: input.iter().map(|&v| v as f64).collect(),
    };
    let want = match model.family {
        model_zoo::Family::FdMobileNet => mobilenet(&params, map, true),
        model_zoo::Family::MobileNet => mobilenet(&params, map, false),
        model_zoo::Family::ShuffleNet => shufflenet(&params, map, 3),
    };
    let plain = tract_logits(&model_onnx_bytes(&model, &opts).unwrap(), &input);
    assert_close(name, &plain, &want, 1e-4);
    let folded = tract_logits(
        &model_onnx_bytes(
            &model,
            &ExportOptions {
                fold_bn: true,
                ..opts.clone()
            },
        )
        .unwrap(),
        &input,
    );
    assert_close(&format!("{name} folded"), &folded, &want, 1e-4);
    let folded_vs_plain: Vec<f64> = plain.iter().map(|&v| v as f64).collect();
    assert_close(
        &format!("{name} folded vs unfolded"),
        &folded,
        &folded_vs_plain,
        1e-4,
    );
}

#[test]
fn fd_mobilenet_matches_reference() {
    check("fd_mobilenet_0.25");
}

#[test]
fn mobilenet_matches_reference() {
    check("mobilenet_0.25");
}

#[test]
fn shufflenet_matches_reference() {
    check("shufflenet_g3_0.25");
}

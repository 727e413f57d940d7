//! Image classification with the paper's evaluation preprocessing: resize the shorter
//! side to 256 (bilinear), centre-crop 224, RGB in [0, 1], normalise with the ImageNet
//! mean and std, NCHW. Then softmax and top-k with the ImageNet class names.

use std::path::Path;
use std::sync::OnceLock;

use image::imageops::FilterType;
use image::{ImageReader, Limits};
use serde::{Deserialize, Serialize};
use tract_onnx::prelude::Tensor;

use crate::error::RuntimeError;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Shorter side after resizing, for a 224 crop; scaled with the model's input size.
pub const RESIZE_SHORTER: usize = 256;
pub const CROP: usize = 224;

/// Decoder limits: no side above 16384 pixels and at most 512 MiB of decoder allocations,
/// so a small file declaring a huge image is refused instead of exhausting memory.
pub fn decoder_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(512 * 1024 * 1024);
    limits
}

const LABELS_TSV: &str = include_str!("../data/imagenet-1k-labels.tsv");

/// The 1000 ILSVRC-2012 class names (first lemma of each synset), in class-index order.
pub fn imagenet_labels() -> &'static [String] {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    LABELS.get_or_init(|| {
        LABELS_TSV
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let lemmas = l.splitn(3, '\t').nth(2).unwrap_or("");
                lemmas.split(',').next().unwrap_or("").trim().to_string()
            })
            .collect()
    })
}

/// WordNet synset ids, in class-index order.
pub fn imagenet_synsets() -> &'static [String] {
    static SYNSETS: OnceLock<Vec<String>> = OnceLock::new();
    SYNSETS.get_or_init(|| {
        LABELS_TSV
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split('\t').nth(1).unwrap_or("").to_string())
            .collect()
    })
}

/// Decodes an image file (JPEG or PNG; 8 or 16 bit; gray, gray+alpha, RGB, RGBA) into
/// an RGB f32 image in [0, 1]. Alpha is dropped.
pub fn load_image(path: &Path) -> Result<image::Rgb32FImage, RuntimeError> {
    let image_err = |cause: String| RuntimeError::Image {
        path: path.to_owned(),
        cause,
    };
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
        path: path.to_owned(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(image_err("the file is empty".into()));
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(image_err("not a JPEG or PNG file".into()));
    }
    reader.limits(decoder_limits());
    let decoded = reader.decode().map_err(|e| image_err(e.to_string()))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(image_err("the image has no pixels".into()));
    }
    Ok(decoded.to_rgb32f())
}

/// Python's `round` (half to even) of `x / 2` for a non-negative integer `x`, as in
/// torchvision's `center_crop`.
fn half_round_even(x: usize) -> usize {
    let half = x / 2;
    if x % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// The paper's preprocessing into a 1x3xHxW tensor, for a `crop_h` x `crop_w` model input.
/// The shorter side is resized to `crop * 256 / 224` (256 for a 224 crop) with a triangle
/// (bilinear, antialiased like PIL's) filter; the longer side keeps the aspect ratio
/// (truncated, as torchvision does).
pub fn preprocess(image: &image::Rgb32FImage, crop_h: usize, crop_w: usize) -> Tensor {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let short_target = (crop_h.max(crop_w) * RESIZE_SHORTER).div_ceil(CROP);
    let (new_w, new_h) = if w <= h {
        (short_target, (short_target * h / w).max(crop_h))
    } else {
        ((short_target * w / h).max(crop_w), short_target)
    };
    let resized = image::imageops::resize(image, new_w as u32, new_h as u32, FilterType::Triangle);
    let top = half_round_even(new_h - crop_h);
    let left = half_round_even(new_w - crop_w);
    let plane = crop_h * crop_w;
    let mut data = vec![0f32; 3 * plane];
    for y in 0..crop_h {
        for x in 0..crop_w {
            let px = resized.get_pixel((left + x) as u32, (top + y) as u32);
            for (c, (mean, std)) in IMAGENET_MEAN.iter().zip(&IMAGENET_STD).enumerate() {
                data[c * plane + y * crop_w + x] = (px.0[c] - mean) / std;
            }
        }
    }
    Tensor::from_shape(&[1, 3, crop_h, crop_w], &data).expect("length matches the shape")
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub class: usize,
    pub label: String,
    pub probability: f32,
}

/// The `k` most probable classes, most probable first; ties keep the lower class index.
/// Labels are ImageNet names when there are 1000 classes, else `class N`.
pub fn top_k(probabilities: &[f32], k: usize) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|a, b| {
        probabilities[*b]
            .total_cmp(&probabilities[*a])
            .then(a.cmp(b))
    });
    let labels = imagenet_labels();
    order
        .into_iter()
        .take(k)
        .map(|class| Prediction {
            class,
            label: if probabilities.len() == labels.len() {
                labels[class].clone()
            } else {
                format!("class {class}")
            },
            probability: probabilities[class],
        })
        .collect()
}

/// Indices of the `k` largest logits, largest first.
pub fn top_k_indices(logits: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b)));
    order.truncate(k);
    order
}

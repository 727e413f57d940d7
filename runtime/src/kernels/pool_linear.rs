//! The networks' head: a global average pool over each channel's plane, then the fully
//! connected classifier, `logits[n] = bias[n] + sum_k w[n][k] * mean(x[k])`, in one op.
//!
//! tract runs the pool as a scalar loop (about 7 instructions per input float on armv7)
//! and the classifier as a one-column matmul through its packing path. Here the mean of
//! each plane is a NEON sum, and the classifier keeps 16 logits in four q registers while
//! it walks `k`: its weights are packed once as `[class tile][k][16]`, so each step of `k`
//! is two contiguous loads and four multiply-adds by the pooled value as a scalar.

use super::aligned::{self, AlignedFloats};
use super::isa::{same_bits, Isa};
use super::layout::Layout;

/// Logits per tile.
const TILE: usize = 16;

/// A classifier's constant weights and bias, packed for the tiles.
#[derive(Clone)]
pub struct PackedPoolLinear {
    /// Input channels (`k`).
    pub channels: usize,
    /// Logits (`n`).
    pub classes: usize,
    /// Per tile of [`TILE`] classes: `[channels][TILE]` (zero columns pad the last tile).
    packed: AlignedFloats,
    /// `classes` rounded up to [`TILE`], zero-padded.
    bias: AlignedFloats,
}

/// Bit-for-bit equality (tract compares ops with `Eq`).
impl PartialEq for PackedPoolLinear {
    fn eq(&self, other: &Self) -> bool {
        (self.channels, self.classes) == (other.channels, other.classes)
            && same_bits(&self.packed, &other.packed)
            && same_bits(&self.bias, &other.bias)
    }
}

impl Eq for PackedPoolLinear {}

/// Shapes only: graph dumps print ops with `Debug`.
impl std::fmt::Debug for PackedPoolLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedPoolLinear")
            .field("channels", &self.channels)
            .field("classes", &self.classes)
            .finish_non_exhaustive()
    }
}

impl PackedPoolLinear {
    /// `weights` is `[classes, channels]` (ONNX `Gemm` with `transB = 1`), `bias`
    /// `[classes]`.
    ///
    /// Panics on mismatched lengths or a zero dimension (the graph rewrite checks shapes).
    pub fn new(weights: &[f32], bias: &[f32], channels: usize, classes: usize) -> Self {
        assert!(channels > 0 && classes > 0);
        assert_eq!(weights.len(), classes * channels);
        assert_eq!(bias.len(), classes);
        let tiles = classes.div_ceil(TILE);
        let mut packed = aligned::zeros(tiles * channels * TILE);
        for (n, row) in weights.chunks_exact(channels).enumerate() {
            let tile = &mut packed[n / TILE * channels * TILE..][..channels * TILE];
            for (k, &w) in row.iter().enumerate() {
                tile[k * TILE + n % TILE] = w;
            }
        }
        let mut padded_bias = aligned::zeros(tiles * TILE);
        padded_bias[..classes].copy_from_slice(bias);
        PackedPoolLinear {
            channels,
            classes,
            packed,
            bias: padded_bias,
        }
    }

    /// Runs on `input.len() / (channels * plane)` images of `plane` pixels per channel
    /// with the fastest available path; `output` holds `classes` logits per image.
    pub fn run(&self, input: &[f32], plane: usize, output: &mut [f32]) {
        self.run_with(Isa::best(), input, plane, output)
    }

    /// Same as [`PackedPoolLinear::run`] with a chosen code path.
    ///
    /// Panics if the slice lengths do not match or `imp` is unavailable (callers validate
    /// shapes first; these are programming errors).
    pub fn run_with(&self, imp: Isa, input: &[f32], plane: usize, output: &mut [f32]) {
        self.run_layout(imp, input, plane, output, Layout::Planar)
    }

    /// Same as [`PackedPoolLinear::run_with`] on images laid out as `layout` says.
    pub fn run_layout(
        &self,
        imp: Isa,
        input: &[f32],
        plane: usize,
        output: &mut [f32],
        layout: Layout,
    ) {
        assert!(imp.is_available(), "{imp:?} is not available on this CPU");
        assert!(plane > 0);
        let image = layout.floats_per_pixel(self.channels) * plane;
        assert_eq!(input.len() % image, 0);
        assert_eq!(output.len(), input.len() / image * self.classes);
        let mut pooled = vec![0f32; self.channels];
        let mut logits = vec![0f32; self.bias.len()];
        for (x, out) in input
            .chunks_exact(image)
            .zip(output.chunks_exact_mut(self.classes))
        {
            match layout {
                Layout::Planar => self.pool(imp, x, plane, &mut pooled),
                Layout::ChannelsLast { pixel_floats } => {
                    pool_channels_last(imp, x, pixel_floats, &mut pooled)
                }
            }
            self.classify(imp, &pooled, &mut logits);
            out.copy_from_slice(&logits[..self.classes]);
        }
    }

    fn pool(&self, imp: Isa, x: &[f32], plane: usize, pooled: &mut [f32]) {
        debug_assert_eq!(x.len(), pooled.len() * plane);
        let scale = 1.0 / plane as f32;
        #[cfg(target_arch = "arm")]
        if imp == Isa::Neon {
            assert!(x.len() == pooled.len() * plane);
            // SAFETY: reads channels * plane floats of x and writes channels floats of
            // pooled (asserted).
            unsafe {
                neon::mean_planes(x.as_ptr(), plane, pooled.len(), scale, pooled.as_mut_ptr())
            };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if imp.avx2() {
            for (p, plane) in pooled.iter_mut().zip(x.chunks_exact(plane)) {
                // SAFETY: AVX2 and FMA are available (imp).
                *p = unsafe { avx2::sum(plane) } * scale;
            }
            return;
        }
        let _ = imp;
        for (p, plane) in pooled.iter_mut().zip(x.chunks_exact(plane)) {
            *p = plane.iter().sum::<f32>() * scale;
        }
    }

    fn classify(&self, imp: Isa, pooled: &[f32], logits: &mut [f32]) {
        let k = self.channels;
        for (t, out) in logits.chunks_exact_mut(TILE).enumerate() {
            let weights = &self.packed[t * k * TILE..][..k * TILE];
            let bias = &self.bias[t * TILE..][..TILE];
            #[cfg(target_arch = "arm")]
            if imp == Isa::Neon {
                // SAFETY: weights hold k * TILE floats, pooled k, bias and out TILE.
                unsafe {
                    neon::tile16(
                        weights.as_ptr(),
                        pooled.as_ptr(),
                        k,
                        bias.as_ptr(),
                        out.as_mut_ptr(),
                    )
                };
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if imp.avx2() {
                // SAFETY: AVX2 and FMA are available (imp); weights hold k * TILE floats,
                // pooled k, bias and out TILE.
                unsafe { avx2::tile16(weights, pooled, bias, out) };
                continue;
            }
            let _ = imp;
            out.copy_from_slice(bias);
            for (w, &p) in weights.chunks_exact(TILE).zip(pooled) {
                for (o, &w) in out.iter_mut().zip(w) {
                    *o += w * p;
                }
            }
        }
    }
}

/// The mean of each channel of a channels-last image (`[plane][pixel_floats]`, the
/// channels first in each pixel): the pixels added in order, a vector of channels at a
/// time.
fn pool_channels_last(imp: Isa, x: &[f32], pixel_floats: usize, pooled: &mut [f32]) {
    debug_assert!(pixel_floats >= pooled.len() && x.len().is_multiple_of(pixel_floats));
    pooled.fill(0.0);
    match imp {
        // SAFETY: AVX2 is available (imp).
        #[cfg(target_arch = "x86_64")]
        _ if imp.avx2() => unsafe { avx2::add_pixels(x, pixel_floats, pooled) },
        _ => add_pixels(x, pixel_floats, pooled),
    }
    let scale = 1.0 / (x.len() / pixel_floats) as f32;
    pooled.iter_mut().for_each(|p| *p *= scale);
}

/// `sums[c] += pixel[c]` for every pixel of `x` (`pixel_floats` apart), in order (a loop
/// compilers vectorise).
#[inline(always)]
fn add_pixels(x: &[f32], pixel_floats: usize, sums: &mut [f32]) {
    for pixel in x.chunks_exact(pixel_floats) {
        for (s, &v) in sums.iter_mut().zip(pixel) {
            *s += v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::add_pixels`] compiled for AVX2.
    ///
    /// # Safety
    /// AVX2 available.
    #[target_feature(enable = "avx2")]
    pub unsafe fn add_pixels(x: &[f32], pixel_floats: usize, sums: &mut [f32]) {
        super::add_pixels(x, pixel_floats, sums)
    }

    /// Sum of a plane: four vector accumulators, then whole vectors of the rest, then
    /// the scalar rest (at most 7: a 7x7 plane is 32 + 2 x 8 + 1, not 32 + 17 scalar
    /// adds in one dependent chain).
    ///
    /// # Safety
    /// AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum(plane: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut blocks = plane.chunks_exact(32);
        for block in &mut blocks {
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_loadu_ps(block.as_ptr().add(8 * i)));
            }
        }
        let mut vectors = blocks.remainder().chunks_exact(8);
        // At most three vectors remain, one per accumulator.
        for (v, a) in (&mut vectors).zip(acc.iter_mut()) {
            *a = _mm256_add_ps(*a, _mm256_loadu_ps(v.as_ptr()));
        }
        let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), total);
        lanes.iter().sum::<f32>() + vectors.remainder().iter().sum::<f32>()
    }

    /// 16 logits: `out = bias + sum_k w[k][..16] * pooled[k]`. The first and second
    /// halves of `k` go to separate accumulators and are read as two streams at once:
    /// the weights (2-4 MiB per inference) come from L3 or DRAM, and two streams keep
    /// more of those reads in flight than one (`examples/head_speed.rs`).
    ///
    /// # Safety
    /// AVX2 and FMA available; `w` holds `pooled.len() * 16` floats, `bias` and `out` 16.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile16(w: &[f32], pooled: &[f32], bias: &[f32], out: &mut [f32]) {
        assert!(w.len() >= pooled.len() * 16 && bias.len() >= 16 && out.len() >= 16);
        let half = pooled.len() / 2;
        let (first, second) = (w.as_ptr(), w.as_ptr().add(16 * half));
        let mut a = [
            _mm256_loadu_ps(bias.as_ptr()),
            _mm256_loadu_ps(bias.as_ptr().add(8)),
        ];
        let mut b = [_mm256_setzero_ps(); 2];
        for (k, (&p, &q)) in pooled[..half].iter().zip(&pooled[half..]).enumerate() {
            let (p, q) = (_mm256_set1_ps(p), _mm256_set1_ps(q));
            a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(first.add(16 * k)), p, a[0]);
            a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(first.add(16 * k + 8)), p, a[1]);
            b[0] = _mm256_fmadd_ps(_mm256_loadu_ps(second.add(16 * k)), q, b[0]);
            b[1] = _mm256_fmadd_ps(_mm256_loadu_ps(second.add(16 * k + 8)), q, b[1]);
        }
        if pooled.len() % 2 == 1 {
            // The odd last k (the second half is one longer).
            let k = pooled.len() - 1;
            let p = _mm256_set1_ps(pooled[k]);
            a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w.as_ptr().add(16 * k)), p, a[0]);
            a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(w.as_ptr().add(16 * k + 8)), p, a[1]);
        }
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(a[0], b[0]));
        _mm256_storeu_ps(out.as_mut_ptr().add(8), _mm256_add_ps(a[1], b[1]));
    }
}

#[cfg(target_arch = "arm")]
mod neon {
    /// `out[c] = scale * sum(x[c * plane..][..plane])` for `channels` planes: two vector
    /// sums of 8 floats per step, the rest one float at a time.
    ///
    /// # Safety
    /// `x` readable for `channels * plane` floats, `out` writable for `channels`;
    /// `plane >= 1`, `channels >= 1`.
    pub unsafe fn mean_planes(
        x: *const f32,
        plane: usize,
        channels: usize,
        scale: f32,
        out: *mut f32,
    ) {
        core::arch::asm!(
            "1:",
            "vmov.i32 q0, #0",
            "vmov.i32 q1, #0",
            "mov {k}, {plane}",
            "2:",
            "subs {k}, {k}, #8",
            "blt 3f",
            "vld1.32 {{d4-d7}}, [{x}]!",
            "vadd.f32 q0, q0, q2",
            "vadd.f32 q1, q1, q3",
            "b 2b",
            "3:",
            "adds {k}, {k}, #8",
            "beq 5f",
            "4:",
            "vldr s8, [{x}]",
            "add {x}, {x}, #4",
            "vadd.f32 s0, s0, s8",
            "subs {k}, {k}, #1",
            "bne 4b",
            "5:",
            "vadd.f32 q0, q0, q1",
            "vadd.f32 d0, d0, d1",
            "vpadd.f32 d0, d0, d0",
            "vmov s2, {scale}",
            "vmul.f32 s0, s0, s2",
            "vstr s0, [{o}]",
            "add {o}, {o}, #4",
            "subs {n}, {n}, #1",
            "bne 1b",
            x = inout(reg) x => _,
            o = inout(reg) out => _,
            n = inout(reg) channels => _,
            plane = in(reg) plane,
            scale = in(reg) scale.to_bits(),
            k = out(reg) _,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _,
            options(nostack),
        );
    }

    /// One step of `k` for 16 logits (q12-q15) by the pooled value in `$lane`.
    macro_rules! step16 {
        ($lane:literal) => {
            concat!(
                "vld1.32 {{d4-d7}}, [{w}]!\n",
                "vld1.32 {{d8-d11}}, [{w}]!\n",
                "vmla.f32 q12, q2, ",
                $lane,
                "\n",
                "vmla.f32 q13, q3, ",
                $lane,
                "\n",
                "vmla.f32 q14, q4, ",
                $lane,
                "\n",
                "vmla.f32 q15, q5, ",
                $lane,
                "\n",
            )
        };
    }

    /// 16 logits: `out = bias + sum_k w[k][..16] * pooled[k]`, `k` unrolled by four.
    ///
    /// # Safety
    /// `w` readable for `k * 16` floats, `pooled` for `k`, `bias` for 16, `out` writable
    /// for 16; `k >= 1`.
    pub unsafe fn tile16(
        w: *const f32,
        pooled: *const f32,
        k: usize,
        bias: *const f32,
        out: *mut f32,
    ) {
        core::arch::asm!(
            "vld1.32 {{d24-d27}}, [{b}]!",
            "vld1.32 {{d28-d31}}, [{b}]",
            // k = 4q + r: r single steps, then q steps of four.
            "ands {r}, {k}, #3",
            "beq 2f",
            "1:",
            "vld1.32 {{d0[0]}}, [{p}]!",
            step16!("d0[0]"),
            "subs {r}, {r}, #1",
            "bne 1b",
            "2:",
            "lsrs {k}, {k}, #2",
            "beq 4f",
            "3:",
            "vld1.32 {{d0-d1}}, [{p}]!",
            step16!("d0[0]"),
            step16!("d0[1]"),
            step16!("d1[0]"),
            step16!("d1[1]"),
            "subs {k}, {k}, #1",
            "bne 3b",
            "4:",
            "vst1.32 {{d24-d27}}, [{o}]!",
            "vst1.32 {{d28-d31}}, [{o}]",
            w = inout(reg) w => _,
            p = inout(reg) pooled => _,
            k = inout(reg) k => _,
            b = inout(reg) bias => _,
            o = inout(reg) out => _,
            r = out(reg) _,
            out("q0") _, out("q2") _, out("q3") _, out("q4") _, out("q5") _,
            out("q12") _, out("q13") _, out("q14") _, out("q15") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{test_channels_last_padded, test_pattern};

    fn check(channels: usize, classes: usize, plane: usize, images: usize) {
        let weights = test_pattern(classes * channels, 3 + channels as u32);
        let bias = test_pattern(classes, 5);
        let input = test_pattern(images * channels * plane, 7 + plane as u32);
        let mut expected = Vec::new();
        for x in input.chunks_exact(channels * plane) {
            let pooled: Vec<f64> = x
                .chunks_exact(plane)
                .map(|p| p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64)
                .collect();
            for n in 0..classes {
                let dot: f64 = (0..channels)
                    .map(|k| weights[n * channels + k] as f64 * pooled[k])
                    .sum();
                expected.push((bias[n] as f64 + dot) as f32);
            }
        }
        let packed = PackedPoolLinear::new(&weights, &bias, channels, classes);
        // Channels-last dense, and with each pixel padded by NaN (never read).
        let last = [0, 16, 3].map(|pad| {
            let layout = Layout::ChannelsLast {
                pixel_floats: channels + pad,
            };
            let x = test_channels_last_padded(&input, channels, plane, channels + pad);
            (layout, x)
        });
        for imp in Isa::ALL {
            if !imp.is_available() {
                continue;
            }
            let cases = std::iter::once((Layout::Planar, &input))
                .chain(last.iter().map(|(layout, x)| (*layout, x)));
            for (layout, input) in cases {
                let mut got = vec![f32::NAN; expected.len()];
                packed.run_layout(imp, input, plane, &mut got, layout);
                for (i, (e, a)) in expected.iter().zip(&got).enumerate() {
                    assert!(
                        (e - a).abs() <= 1e-5 * (1.0 + e.abs()) * (channels as f32).sqrt(),
                        "{imp:?} {layout:?} k{channels} n{classes} plane {plane} at {i}: {a} != {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn awkward_sizes_match_reference() {
        // Channels off the unroll of four, classes off the 16-wide tile, planes from one
        // pixel to 7x7 and 14x14 (vector sums plus a scalar tail).
        for &channels in &[1, 2, 3, 5, 8, 13, 64] {
            for &classes in &[1, 7, 16, 17, 40] {
                for &plane in &[1, 4, 7, 8, 9, 49, 196] {
                    check(channels, classes, plane, 1);
                }
            }
        }
    }

    #[test]
    fn batches_and_a_classifier_sized_head() {
        check(6, 10, 9, 3);
        check(256, 1000, 49, 1);
    }
}

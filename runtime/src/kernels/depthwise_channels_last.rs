//! 3x3 depthwise convolution (padding 1, stride 1 or 2) with its bias and ReLU, on
//! channels-last images (`[height][width][channels]`), for the x86 layers that the engine
//! keeps channels-last (see `crate::engine::channels_last`).
//!
//! The vectors run along the channels: every tap of an output is one load and one FMA
//! against a weight vector held in a register for the whole plane, stride 2 needs no
//! shuffles, and 7x7 maps waste no lanes (the planar kernel in `depthwise` packs two
//! 7-wide rows per vector and shuffles for stride 2). Each output sums its three kernel
//! rows in three accumulators, so that consecutive outputs overlap rather than wait on
//! one chain of nine FMAs. Other paths take plain Rust, which the tests also check.
//!
//! A block's pixels lie `x_pixel * 4` bytes apart; at multiples of 128 floats they share
//! a few L1 sets, which is why the engine pads such pixels by a line
//! (`layout::padded_pixel`). Padded, inside FD-MobileNet and MobileNet (`edgebench
//! profile M --engine edge --nodes`), it is level with the planar kernel or a few
//! microseconds behind: 7x7 maps of 512 channels 10-11 against 8-10 us with AVX-512
//! (14-15 against 11 with AVX2; unpadded 14-15 and 22-24), 14x14 maps of 256 channels
//! 12-14 against 11-12 (17-18 against 16-17). The 1x1 layers on either side, which
//! store and read channels-last without transposes, make up for it.

use super::aligned::{self, AlignedFloats};
use super::depthwise::output_side;
use super::isa::{same_bits, Isa};

/// Channels of the widest vector: weights and bias are padded to a multiple of it.
const PAD: usize = 16;

/// A depthwise layer's weights laid out for channels-last images.
#[derive(Clone)]
pub struct DepthwiseChannelsLast {
    pub channels: usize,
    pub relu: bool,
    /// Per block of [`PAD`] channels, its nine taps (`ky * 3 + kx`) of [`PAD`] channels
    /// each ([`tap_index`]), zeros after `channels`: a block's taps share a few lines
    /// (`[9][channels]` put them `channels * 4` bytes apart, one L1 set at 1024).
    taps: AlignedFloats,
    /// `[padded]`.
    bias: AlignedFloats,
}

/// Bit-for-bit equality (tract compares ops with `Eq`), as `PackedPointwise`.
impl PartialEq for DepthwiseChannelsLast {
    fn eq(&self, other: &Self) -> bool {
        (self.channels, self.relu) == (other.channels, other.relu)
            && same_bits(&self.taps, &other.taps)
            && same_bits(&self.bias, &other.bias)
    }
}

impl Eq for DepthwiseChannelsLast {}

/// Shapes only: graph dumps print ops with `Debug`, and the weights would flood them.
impl std::fmt::Debug for DepthwiseChannelsLast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepthwiseChannelsLast")
            .field("channels", &self.channels)
            .field("relu", &self.relu)
            .finish_non_exhaustive()
    }
}

impl DepthwiseChannelsLast {
    /// `weights` is `[channels][9]` (row-major 3x3 per channel), `bias` `[channels]`.
    pub fn new(weights: &[f32], bias: &[f32], relu: bool) -> Self {
        let channels = bias.len();
        assert_eq!(weights.len(), channels * 9);
        let padded = channels.div_ceil(PAD) * PAD;
        let mut taps = aligned::zeros(9 * padded);
        for (c, w) in weights.chunks_exact(9).enumerate() {
            for (t, &v) in w.iter().enumerate() {
                taps[tap_index(c, t)] = v;
            }
        }
        let mut padded_bias = aligned::zeros(padded);
        padded_bias[..channels].copy_from_slice(bias);
        DepthwiseChannelsLast {
            channels,
            relu,
            taps,
            bias: padded_bias,
        }
    }

    /// Runs on `input.len() / (height * width * pixel_floats.0)` images; `output` holds
    /// as many of the output size. `pixel_floats` is the floats per pixel of the input
    /// and of the output (at least `channels`; the floats after a pixel's channels are
    /// neither read nor written). Panics on mismatched lengths, an empty map, a stride
    /// other than 1 or 2, or an unavailable `imp` (callers validate shapes first).
    pub fn run(
        &self,
        imp: Isa,
        input: &[f32],
        (height, width): (usize, usize),
        stride: usize,
        output: &mut [f32],
        pixel_floats: (usize, usize),
    ) {
        assert!(imp.is_available(), "{imp:?} is not available on this CPU");
        assert!(stride == 1 || stride == 2);
        assert!(height > 0 && width > 0 && self.channels > 0);
        assert!(pixel_floats.0 >= self.channels && pixel_floats.1 >= self.channels);
        let (oh, ow) = (output_side(height, stride), output_side(width, stride));
        let image_in = height * width * pixel_floats.0;
        let image_out = oh * ow * pixel_floats.1;
        assert_eq!(input.len() % image_in, 0);
        assert_eq!(output.len(), input.len() / image_in * image_out);
        let geometry = Geometry {
            channels: self.channels,
            x_pixel: pixel_floats.0,
            y_pixel: pixel_floats.1,
            height,
            width,
            stride,
            out_height: oh,
            out_width: ow,
            floor: if self.relu { 0.0 } else { f32::NEG_INFINITY },
        };
        for (x, y) in input
            .chunks_exact(image_in)
            .zip(output.chunks_exact_mut(image_out))
        {
            match imp {
                // SAFETY: the features are available (asserted); x and y hold one image
                // each (chunks of the sizes above); taps and bias hold `padded` floats per
                // tap, a multiple of the vector width.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512::image(self, &geometry, x, y) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2Fma => unsafe { avx2::image(self, &geometry, x, y) },
                _ => self.image_scalar(&geometry, x, y),
            }
        }
    }

    fn image_scalar(&self, g: &Geometry, x: &[f32], y: &mut [f32]) {
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                for c in 0..g.channels {
                    let mut acc = self.bias[c];
                    for ky in 0..3 {
                        let Some(iy) = (oy * g.stride + ky).checked_sub(1) else {
                            continue;
                        };
                        if iy >= g.height {
                            continue;
                        }
                        for kx in 0..3 {
                            let Some(ix) = (ox * g.stride + kx).checked_sub(1) else {
                                continue;
                            };
                            if ix >= g.width {
                                continue;
                            }
                            let t = ky * 3 + kx;
                            acc +=
                                self.taps[tap_index(c, t)] * x[(iy * g.width + ix) * g.x_pixel + c];
                        }
                    }
                    y[(oy * g.out_width + ox) * g.y_pixel + c] = acc.max(g.floor);
                }
            }
        }
    }
}

/// Where tap `t` of channel `c` lies in [`DepthwiseChannelsLast`]'s taps.
fn tap_index(c: usize, t: usize) -> usize {
    (c / PAD * 9 + t) * PAD + c % PAD
}

/// Output columns per strip, so that a channel block's lines in use (three input rows
/// of the strip and its outputs) fit the L1 sets they map to. A block reads one line per
/// pixel, `x_pixel * 4` bytes apart; when that is a multiple of the line, those lines
/// fall into only `64 / gcd(stride in lines, 64)` of a 32 KiB 8-way L1's 64 sets (4 at
/// 256 floats, 1 at 1024), and whole rows of them no longer fit. (The engine pads such
/// pixels by a line, `layout::padded_pixel`, so that its layers take whole rows.)
#[cfg(any(target_arch = "x86_64", test))]
fn strip_width(g: &Geometry) -> usize {
    const SETS: usize = 64;
    // Ways per set left to these lines (the weights, bias and stack share the cache).
    const WAYS: usize = 7;
    let bytes = g.x_pixel * 4;
    if !bytes.is_multiple_of(64) {
        return g.out_width;
    }
    let (mut a, mut b) = (bytes / 64, SETS);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let capacity = WAYS * SETS / a;
    // Lines of a strip of `n` outputs: three input rows of (n - 1) * stride + 3 pixels,
    // and the n outputs.
    let lines = |n: usize| 3 * ((n - 1) * g.stride + 3) + n;
    (1..=g.out_width)
        .take_while(|&n| lines(n) <= capacity)
        .last()
        .unwrap_or(1)
}

/// One image's shapes.
struct Geometry {
    channels: usize,
    /// Floats per pixel of the input and of the output.
    x_pixel: usize,
    y_pixel: usize,
    height: usize,
    width: usize,
    stride: usize,
    out_height: usize,
    out_width: usize,
    floor: f32,
}

/// The vector kernel for one register width. A macro rather than a generic function: the
/// intrinsics differ by register type, and stable Rust cannot force `target_feature`
/// functions inline into a generic body.
#[cfg(target_arch = "x86_64")]
macro_rules! channels_last_kernel {
    ($feature:literal, $vector:ty, $lanes:literal, $load:ident, $set1:ident, $zero:ident,
     $fmadd:ident, $max:ident, $store:ident) => {
        /// One image: each block of `$lanes` channels over the plane with its nine weight
        /// vectors in registers, in column strips ([`super::strip_width`]), the columns
        /// whose taps all lie inside the map without tests. (Measured inside the models
        /// and not kept: four outputs at a time, 10-20 % slower; every pixel's channels at
        /// once with the weights from L1, or the block first copied to a zero-bordered
        /// plane, slower still.)
        ///
        /// # Safety
        #[doc = concat!("`", $feature, "` available; `x` and `y` hold one image's input and output.")]
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn image(
            layer: &super::DepthwiseChannelsLast,
            g: &super::Geometry,
            x: &[f32],
            y: &mut [f32],
        ) {
            debug_assert_eq!(x.len(), g.height * g.width * g.x_pixel);
            debug_assert_eq!(y.len(), g.out_height * g.out_width * g.y_pixel);
            let mut first = 0;
            while first < g.channels {
                let lanes = (g.channels - first).min($lanes);
                if lanes == $lanes {
                    block::<true>(layer, g, x, y, first, lanes);
                } else {
                    block::<false>(layer, g, x, y, first, lanes);
                }
                first += $lanes;
            }
        }

        /// Channels `first..first + lanes` of every output; `FULL`: `lanes` is the whole
        /// vector (plain loads and stores), else masked ones.
        #[inline]
        #[target_feature(enable = $feature)]
        unsafe fn block<const FULL: bool>(
            layer: &super::DepthwiseChannelsLast,
            g: &super::Geometry,
            x: &[f32],
            y: &mut [f32],
            first: usize,
            lanes: usize,
        ) {
            let (cx, cy) = (g.x_pixel, g.y_pixel);
            let tap_block = layer.taps.as_ptr().add(super::tap_index(first, 0));
            let mut taps = [$zero(); 9];
            for (t, tap) in taps.iter_mut().enumerate() {
                *tap = $load(tap_block.add(t * super::PAD));
            }
            let bias = $load(layer.bias.as_ptr().add(first));
            let floor = $set1(g.floor);
            let (x, y) = (x.as_ptr().add(first), y.as_mut_ptr().add(first));
            let (h, w, s) = (g.height as isize, g.width as isize, g.stride as isize);
            let load = |p: *const f32| if FULL { $load(p) } else { load_part(p, lanes) };
            let store = |p: *mut f32, v| {
                if FULL {
                    $store(p, v)
                } else {
                    store_part(p, v, lanes)
                }
            };
            let strip = super::strip_width(g);
            // Columns whose three taps lie inside the map: `first_inside..end_inside`.
            let first_inside = usize::from(g.width > 1).min(g.out_width);
            let end_inside = if g.width >= 3 {
                // The last such column `ox` has `ox * stride + 1 <= width - 1`.
                ((g.width - 2) / g.stride + 1).min(g.out_width)
            } else {
                first_inside
            };
            // One output with the taps outside the map skipped.
            let border = |oy: usize, ox: usize| {
                let (top, left) = (oy as isize * s - 1, ox as isize * s - 1);
                let mut sums = [bias, $zero(), $zero()];
                for (ky, sum) in sums.iter_mut().enumerate() {
                    let iy = top + ky as isize;
                    if iy < 0 || iy >= h {
                        continue;
                    }
                    for kx in 0..3 {
                        let ix = left + kx as isize;
                        if ix < 0 || ix >= w {
                            continue;
                        }
                        let p = x.add((iy * w + ix) as usize * cx);
                        *sum = $fmadd(load(p), taps[ky * 3 + kx], *sum);
                    }
                }
                store(y.add((oy * g.out_width + ox) * cy), $max(add3(sums), floor));
            };
            for strip_start in (0..g.out_width).step_by(strip) {
                let strip_end = (strip_start + strip).min(g.out_width);
                let (from, to) = (
                    first_inside.clamp(strip_start, strip_end),
                    end_inside.clamp(strip_start, strip_end),
                );
                for oy in 0..g.out_height {
                    let top = oy as isize * s - 1;
                    if top < 0 || top + 2 >= h || from >= to {
                        (strip_start..strip_end).for_each(|ox| border(oy, ox));
                        continue;
                    }
                    (strip_start..from).for_each(|ox| border(oy, ox));
                    // Every tap inside: no tests, three row pointers stepping along.
                    let row = x.add((top as usize * g.width + from * g.stride - 1) * cx);
                    let mut q = [row, row.add(g.width * cx), row.add(2 * g.width * cx)];
                    let mut out = y.add((oy * g.out_width + from) * cy);
                    for _ in from..to {
                        let mut sums = [bias, $zero(), $zero()];
                        for (ky, (sum, p)) in sums.iter_mut().zip(&q).enumerate() {
                            *sum = $fmadd(load(*p), taps[ky * 3], *sum);
                            *sum = $fmadd(load(p.add(cx)), taps[ky * 3 + 1], *sum);
                            *sum = $fmadd(load(p.add(2 * cx)), taps[ky * 3 + 2], *sum);
                        }
                        store(out, $max(add3(sums), floor));
                        q = q.map(|p| p.add(g.stride * cx));
                        out = out.add(cy);
                    }
                    (to..strip_end).for_each(|ox| border(oy, ox));
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    channels_last_kernel!(
        "avx512f",
        __m512,
        16,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_setzero_ps,
        _mm512_fmadd_ps,
        _mm512_max_ps,
        _mm512_storeu_ps
    );

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add3(v: [__m512; 3]) -> __m512 {
        _mm512_add_ps(_mm512_add_ps(v[0], v[1]), v[2])
    }

    /// The first `lanes` floats at `p` (the rest zero).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_part(p: *const f32, lanes: usize) -> __m512 {
        if lanes == 16 {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(((1u32 << lanes) - 1) as __mmask16, p)
        }
    }

    /// Writes the first `lanes` floats of `v` at `p`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_part(p: *mut f32, v: __m512, lanes: usize) {
        if lanes == 16 {
            _mm512_storeu_ps(p, v)
        } else {
            _mm512_mask_storeu_ps(p, ((1u32 << lanes) - 1) as __mmask16, v)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    channels_last_kernel!(
        "avx2,fma",
        __m256,
        8,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_setzero_ps,
        _mm256_fmadd_ps,
        _mm256_max_ps,
        _mm256_storeu_ps
    );

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add3(v: [__m256; 3]) -> __m256 {
        _mm256_add_ps(_mm256_add_ps(v[0], v[1]), v[2])
    }

    /// Lanes `0..lanes` set.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask(lanes: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(lanes as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// The first `lanes` floats at `p` (the rest zero).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_part(p: *const f32, lanes: usize) -> __m256 {
        if lanes == 8 {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, mask(lanes))
        }
    }

    /// Writes the first `lanes` floats of `v` at `p`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_part(p: *mut f32, v: __m256, lanes: usize) {
        if lanes == 8 {
            _mm256_storeu_ps(p, v)
        } else {
            _mm256_maskstore_ps(p, mask(lanes), v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::depthwise::{reference, Depthwise3x3};
    use crate::kernels::isa::test_channels_last_padded;

    fn check(c: usize, h: usize, w: usize, stride: usize, relu: bool) {
        for pad in [(0, 0), (16, 0), (3, 16)] {
            check_padded(c, h, w, stride, relu, pad);
        }
    }

    /// `pad`: the floats after each input and each output pixel's channels. The input's
    /// are NaN, the output's must stay as they were (NaN too).
    fn check_padded(c: usize, h: usize, w: usize, stride: usize, relu: bool, pad: (usize, usize)) {
        let x: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let weights: Vec<f32> = (0..c * 9)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let bias: Vec<f32> = (0..c).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
        let planar = Depthwise3x3 {
            channels: c,
            height: h,
            width: w,
            stride,
            relu,
        };
        let pixel_floats = (c + pad.0, c + pad.1);
        let expected = test_channels_last_padded(
            &reference(&planar, &x, &weights, &bias),
            c,
            planar.output_height() * planar.output_width(),
            pixel_floats.1,
        );
        let layer = DepthwiseChannelsLast::new(&weights, &bias, relu);
        let x_last = test_channels_last_padded(&x, c, h * w, pixel_floats.0);
        for imp in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let mut y = vec![f32::NAN; expected.len()];
            layer.run(imp, &x_last, (h, w), stride, &mut y, pixel_floats);
            for (i, (a, b)) in y.iter().zip(&expected).enumerate() {
                let close = (a - b).abs() <= 1e-5 * (1.0 + b.abs());
                assert!(
                    close || (a.is_nan() && b.is_nan()),
                    "{imp:?} c{c} {h}x{w} s{stride} relu {relu} pad {pad:?}: [{i}] {a} != {b}"
                );
            }
        }
    }

    #[test]
    fn awkward_sizes_match_reference() {
        for c in [1, 5, 8, 16, 17, 33] {
            for (h, w) in [(1, 1), (2, 2), (3, 5), (7, 7), (6, 9), (14, 14)] {
                for stride in [1, 2] {
                    check(c, h, w, stride, stride == 1);
                }
            }
        }
    }

    #[test]
    fn column_strips_cover_the_map() {
        // Channel counts whose pixel stride is a multiple of a line take column strips.
        // Padded by a line, they take whole rows.
        for (c, x_pixel, strip) in [
            (256, 256, 5),
            (512, 512, 2),
            (1024, 1024, 1),
            (512, 528, 14),
        ] {
            let g = Geometry {
                channels: c,
                x_pixel,
                y_pixel: c,
                height: 14,
                width: 14,
                stride: 1,
                out_height: 14,
                out_width: 14,
                floor: 0.0,
            };
            assert_eq!(strip_width(&g), strip, "{c}");
        }
        for c in [256, 512] {
            for (h, w) in [(7, 7), (14, 14), (9, 6)] {
                for stride in [1, 2] {
                    check(c, h, w, stride, true);
                }
            }
        }
    }

    #[test]
    fn batches_use_their_own_images() {
        let (c, h, w) = (24, 5, 4);
        let weights: Vec<f32> = (0..c * 9).map(|i| (i % 7) as f32 - 3.0).collect();
        let bias = vec![0.5f32; c];
        let layer = DepthwiseChannelsLast::new(&weights, &bias, false);
        let one: Vec<f32> = (0..c * h * w).map(|i| (i % 11) as f32).collect();
        let two: Vec<f32> = one.iter().map(|v| -v).collect();
        for imp in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let mut single = [vec![0f32; c * h * w], vec![0f32; c * h * w]];
            layer.run(imp, &one, (h, w), 1, &mut single[0], (c, c));
            layer.run(imp, &two, (h, w), 1, &mut single[1], (c, c));
            let mut both = vec![0f32; 2 * c * h * w];
            layer.run(
                imp,
                &[one.clone(), two.clone()].concat(),
                (h, w),
                1,
                &mut both,
                (c, c),
            );
            assert_eq!(both, single.concat(), "{imp:?}");
        }
    }
}

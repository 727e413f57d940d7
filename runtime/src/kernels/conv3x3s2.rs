//! 3x3 convolution, stride 2, padding 1, NCHW f32, with the bias (folded BatchNorm) and
//! an optional ReLU fused: the networks' first layer (3 input channels at 224x224).
//!
//! tract runs it as an explicit `Pad`, a lazy im2col and its generic matmul (about 0.8
//! instructions per MAC on armv7, and the padded copy). Here every input plane is copied
//! once into a zero-bordered scratch plane and the products are taken straight from it:
//! a tile of 4 output channels by 8 output pixels of one row keeps its accumulators in
//! registers; per input channel and kernel row, two `vld2` split 16 input columns into
//! even and odd ones, which are the `kx = 0` and `kx = 1` vectors of the 8 pixels, and
//! the even ones shifted by one column are the `kx = 2` vectors (32 instructions per 96
//! MACs). A row's last, partial tile overlaps the previous one; rows narrower than 8
//! pixels take the scalar path, as do CPUs without NEON. On x86 the scratch rows are
//! split into even and odd columns for AVX2, and copied a band of output rows at a time
//! (see `band_rows`); AVX-512 needs no copy where the output channels come in pairs of
//! blocks: its masked loads read zeros outside the plane and two-register permutes
//! split the columns.

use super::aligned::{self, AlignedFloats};
use super::isa::{same_bits, Isa};

use super::depthwise::copy_rows_into_padded;

/// Output channels per tile (the packing block).
pub const BLOCK: usize = 4;

/// Output pixels per vector tile.
#[cfg(target_arch = "arm")]
const TILE: usize = 8;

thread_local! {
    /// The padded input planes, kept between calls on this thread: a fresh zeroed
    /// allocation of 600 KiB per inference cost 10-15 us on the host (its pages faulted
    /// in on first write), about a tenth of the layer.
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Zeroes the two border entries of one padded row (`w + 2` floats): padded columns 0
/// and `w + 1`, which in a split row are the even half's first entry and wherever column
/// `w + 1` falls.
fn zero_row_borders(row: &mut [f32], w: usize, split: bool) {
    let wp = w + 2;
    // Split: column j is at j / 2 when even, at half + j / 2 when odd.
    let right = match (split, w % 2) {
        (false, _) => w + 1,
        (true, 1) => w.div_ceil(2),
        (true, _) => wp.div_ceil(2) + w / 2,
    };
    row[0] = 0.0;
    row[right] = 0.0;
}

/// Output rows per band on `imp`: the scratch holds the padded input rows of one band
/// of output rows (`2 * rows + 1` per channel) at a time, and every block of output
/// channels runs over a band before the next band is copied.
///
/// x86 (vector paths): a band of about 24 KiB, so that the copy is written to L1 and
/// read from there by every block. Whole planes (the first layer's three 224x224
/// planes, 600 KiB) were written out to L2 and read back from it once per block: on an
/// Intel Xeon (Emerald Rapids) the AVX2 copy alone took 45 of a 4-channel layer's 80 us.
/// With bands (`conv3x3s2_speed`, old and new build taking turns, three rounds, AVX2):
/// 3->4 85-99 -> 62-67 us, 3->16 204-228 -> 180-186, 3->32 350-453 -> 337-343.
/// armv7 keeps whole planes (one band): its instruction counts under QEMU stay as they
/// were, and the effect on a board's caches is unmeasured.
fn band_rows(imp: Isa, in_channels: usize, wp: usize, oh: usize) -> usize {
    if cfg!(target_arch = "x86_64") && imp != Isa::Scalar {
        let padded_rows = BAND_BYTES / (4 * in_channels * wp);
        (padded_rows.saturating_sub(1) / 2).clamp(1, oh)
    } else {
        oh
    }
}

/// Bytes of one band's scratch rows on x86 (see [`band_rows`]).
const BAND_BYTES: usize = 24 * 1024;

/// Writes padded rows `first..first + band.len() / (w + 2)` of one input plane (`h x w`)
/// into `band`: padded row `p` is input row `p - 1` between zero border columns, split
/// into even and odd columns if `split`, and rows outside the input are zeros.
fn fill_band(
    imp: Isa,
    plane: &[f32],
    (h, w): (usize, usize),
    first: usize,
    band: &mut [f32],
    split: bool,
) {
    let wp = w + 2;
    let count = band.len() / wp;
    // Padded rows 1..=h hold input rows.
    let data = first.max(1)..(first + count).min(h + 1);
    for (p, row) in (first..).zip(band.chunks_exact_mut(wp)) {
        if data.contains(&p) {
            zero_row_borders(row, w, split);
        } else {
            row.fill(0.0);
        }
    }
    if data.is_empty() {
        return;
    }
    let rows = &plane[(data.start - 1) * w..(data.end - 1) * w];
    let dst = &mut band[(data.start - first) * wp..];
    #[cfg(target_arch = "x86_64")]
    if split {
        // SAFETY: split rows are only asked for where AVX2 is available (`run_with`).
        unsafe { avx2::copy_rows_split(rows, dst, w) };
        return;
    }
    let _ = split;
    // The depthwise kernel's row copy: memcpy per row costs ~3x more on armv7.
    copy_rows_into_padded(imp, rows, dst, w);
}

/// One band of one image's zero-bordered input planes (`hp` padded rows of `wp` each
/// per channel, split into even and odd columns on the x86 vector paths): padded rows
/// `2 * rows.start..` of the whole planes, which output rows `rows` read.
struct Planes<'a> {
    padded: &'a [f32],
    hp: usize,
    wp: usize,
    rows: std::ops::Range<usize>,
    oh: usize,
    ow: usize,
}

/// A 3x3 stride-2 convolution's constant weights and bias, packed for the tiles.
#[derive(Clone)]
pub struct PackedConv3x3s2 {
    pub in_channels: usize,
    pub out_channels: usize,
    pub relu: bool,
    /// Per block of [`BLOCK`] output channels: `[in_channels][ky][kx][BLOCK]`.
    packed: AlignedFloats,
    /// Per block: `BLOCK` biases, the floor (0 or -inf), three unused floats.
    epilogue: AlignedFloats,
}

/// Bit-for-bit equality (tract compares ops with `Eq`).
impl PartialEq for PackedConv3x3s2 {
    fn eq(&self, other: &Self) -> bool {
        (self.in_channels, self.out_channels, self.relu)
            == (other.in_channels, other.out_channels, other.relu)
            && same_bits(&self.packed, &other.packed)
            && same_bits(&self.epilogue, &other.epilogue)
    }
}

impl Eq for PackedConv3x3s2 {}

/// Shapes only: graph dumps print ops with `Debug`.
impl std::fmt::Debug for PackedConv3x3s2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConv3x3s2")
            .field("in_channels", &self.in_channels)
            .field("out_channels", &self.out_channels)
            .field("relu", &self.relu)
            .finish_non_exhaustive()
    }
}

impl PackedConv3x3s2 {
    /// `weights` is `[out_channels, in_channels, 3, 3]`, `bias` `[out_channels]`.
    ///
    /// Panics on mismatched lengths or a zero dimension (the graph rewrite checks shapes).
    pub fn new(
        weights: &[f32],
        bias: &[f32],
        in_channels: usize,
        out_channels: usize,
        relu: bool,
    ) -> PackedConv3x3s2 {
        assert!(in_channels > 0 && out_channels > 0);
        assert_eq!(weights.len(), out_channels * in_channels * 9);
        assert_eq!(bias.len(), out_channels);
        let blocks = out_channels.div_ceil(BLOCK);
        let per_block = in_channels * 9 * BLOCK;
        let mut packed = aligned::zeros(blocks * per_block);
        let mut epilogue = aligned::zeros(blocks * 8);
        for m in 0..out_channels {
            let (b, r) = (m / BLOCK, m % BLOCK);
            for (k, &w) in weights[m * in_channels * 9..][..in_channels * 9]
                .iter()
                .enumerate()
            {
                packed[b * per_block + k * BLOCK + r] = w;
            }
            epilogue[b * 8 + r] = bias[m];
        }
        for b in 0..blocks {
            epilogue[b * 8 + BLOCK] = if relu { 0.0 } else { f32::NEG_INFINITY };
        }
        PackedConv3x3s2 {
            in_channels,
            out_channels,
            relu,
            packed,
            epilogue,
        }
    }

    /// Output height and width for an input of `height` x `width`.
    pub fn output_size(height: usize, width: usize) -> (usize, usize) {
        ((height + 2 - 3) / 2 + 1, (width + 2 - 3) / 2 + 1)
    }

    /// Runs on `input.len() / (in_channels * height * width)` images with the fastest
    /// available path.
    pub fn run(&self, input: &[f32], height: usize, width: usize, output: &mut [f32]) {
        self.run_with(Isa::best(), input, height, width, output)
    }

    /// Same as [`PackedConv3x3s2::run`] with a chosen code path.
    ///
    /// Panics if the slice lengths do not match or `imp` is unavailable (callers validate
    /// shapes first; these are programming errors).
    pub fn run_with(
        &self,
        imp: Isa,
        input: &[f32],
        height: usize,
        width: usize,
        output: &mut [f32],
    ) {
        assert!(imp.is_available(), "{imp:?} is not available on this CPU");
        assert!(height > 0 && width > 0);
        let (oh, ow) = Self::output_size(height, width);
        let image_in = self.in_channels * height * width;
        let image_out = self.out_channels * oh * ow;
        assert_eq!(input.len() % image_in, 0);
        assert_eq!(output.len(), input.len() / image_in * image_out);
        // AVX-512 reads the input planes in place when the blocks come in pairs.
        #[cfg(target_arch = "x86_64")]
        if imp == Isa::Avx512 && ow >= 16 && self.out_channels.is_multiple_of(2 * BLOCK) {
            for (x, out) in input
                .chunks_exact(image_in)
                .zip(output.chunks_exact_mut(image_out))
            {
                let blocks = self.out_channels / BLOCK;
                let mut b = 0;
                while b + 4 <= blocks {
                    self.blocks_unpadded_avx512::<16>(b, x, (height, width), out);
                    b += 4;
                }
                if b < blocks {
                    self.blocks_unpadded_avx512::<8>(b, x, (height, width), out);
                }
            }
            return;
        }
        let band = band_rows(imp, self.in_channels, width + 2, oh);
        self.run_bands(imp, input, (height, width), output, band);
    }

    /// The padded path of [`PackedConv3x3s2::run_with`], `band` output rows at a time
    /// (see [`band_rows`]); the slices are checked by the caller.
    fn run_bands(
        &self,
        imp: Isa,
        input: &[f32],
        (height, width): (usize, usize),
        output: &mut [f32],
        band: usize,
    ) {
        let (oh, ow) = Self::output_size(height, width);
        let (image_in, image_out) = (
            self.in_channels * height * width,
            self.out_channels * oh * ow,
        );
        let wp = width + 2;
        // x86 vector paths read rows split into even and odd columns.
        #[cfg(target_arch = "x86_64")]
        let split = imp.avx2() && ow >= 16;
        #[cfg(not(target_arch = "x86_64"))]
        let split = false;
        assert!(band > 0);
        let hp = 2 * band + 1;
        // Reused between calls; every row a band reads is rewritten before.
        let mut padded = PADDED.with(|p| std::mem::take(&mut *p.borrow_mut()));
        padded.resize(self.in_channels * hp * wp, 0.0);
        for (x, out) in input
            .chunks_exact(image_in)
            .zip(output.chunks_exact_mut(image_out))
        {
            for first in (0..oh).step_by(band) {
                let rows = first..(first + band).min(oh);
                for (plane, padded) in x
                    .chunks_exact(height * width)
                    .zip(padded.chunks_exact_mut(hp * wp))
                {
                    fill_band(imp, plane, (height, width), 2 * first, padded, split);
                }
                let planes = Planes {
                    padded: &padded,
                    hp,
                    wp,
                    rows,
                    oh,
                    ow,
                };
                let mut b = 0;
                while b < self.out_channels.div_ceil(BLOCK) {
                    // AVX-512: two full blocks at a time.
                    #[cfg(target_arch = "x86_64")]
                    if imp == Isa::Avx512 && ow >= 16 && self.out_channels >= (b + 2) * BLOCK {
                        self.block_pair_avx512(b, &planes, out);
                        b += 2;
                        continue;
                    }
                    self.block(imp, b, &planes, out);
                    b += 1;
                }
            }
        }
        PADDED.with(|p| *p.borrow_mut() = padded);
    }

    /// `count` consecutive blocks from `b`: their packed weights and epilogues.
    fn blocks(&self, b: usize, count: usize) -> (&[f32], &[f32]) {
        let per_block = self.in_channels * 9 * BLOCK;
        (
            &self.packed[b * per_block..][..count * per_block],
            &self.epilogue[b * 8..][..count * 8],
        )
    }

    /// Blocks `b` and `b + 1` (both full) of one image on AVX-512: 8 output channels by
    /// 32 pixels per tile (16 zmm accumulators, 48 FMAs per 6 loads of input), the
    /// last 16 or fewer pixels of a row by a 16-pixel tile overlapping the one before.
    /// On split rows (see `avx2::copy_rows_split`), like the AVX2 path.
    #[cfg(target_arch = "x86_64")]
    fn block_pair_avx512(&self, b: usize, planes: &Planes, out: &mut [f32]) {
        let Planes {
            padded,
            hp,
            wp,
            ref rows,
            oh,
            ow,
        } = *planes;
        let (weights, epilogue) = self.blocks(b, 2);
        let out = &mut out[b * BLOCK * oh * ow..][..2 * BLOCK * oh * ow];
        let half = wp.div_ceil(2);
        assert!(ow >= 16 && ow < half && half + ow <= wp && 2 * rows.len() < hp);
        assert!(rows.end <= oh && padded.len() >= self.in_channels * hp * wp);
        for oy in rows.clone() {
            let mut ox = 0;
            while ox < ow {
                let (start, wide) = if ow - ox >= 32 {
                    (ox, true)
                } else {
                    (ox.min(ow - 16), false)
                };
                // SAFETY: AVX-512F is available (the caller checked imp); the tile reads
                // band rows 2ly..2ly+2 < hp of every plane at even columns start..start +
                // cols + 1 <= ow + 1 <= half and odd ones below half + ow <= wp (asserted),
                // the two blocks' weights and epilogues (sliced above), and writes 8
                // channel rows of cols <= ow - start pixels inside out (oh * ow apart).
                unsafe {
                    let ly = oy - rows.start;
                    let input = padded.as_ptr().add(2 * ly * wp + start);
                    let dst = out.as_mut_ptr().add(oy * ow + start);
                    let strides = (hp * wp, wp, half);
                    let (w, e) = (weights.as_ptr(), epilogue.as_ptr());
                    if wide {
                        avx512::tile::<2>(input, strides, self.in_channels, w, e, dst, oh * ow);
                    } else {
                        avx512::tile::<1>(input, strides, self.in_channels, w, e, dst, oh * ow);
                    }
                }
                ox = start + if wide { 32 } else { 16 };
            }
        }
    }

    /// `R / 4` blocks from `b` (`R` = 8 or 16 channels) of one image on AVX-512, straight
    /// from its unpadded input planes `x` (`(h, w)` each), in tiles of 16 accumulators:
    /// 16 channels by 16 pixels, or 8 by 32. The wider channel tiles need half the
    /// column permutes per multiply-add, which measured faster on Zen 4 (3->16 at
    /// 224x224: 117 us as 8 x 32, 102 us as 16 x 16; 4 x 64 was slower still).
    #[cfg(target_arch = "x86_64")]
    fn blocks_unpadded_avx512<const R: usize>(
        &self,
        b: usize,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
    ) {
        let (oh, ow) = Self::output_size(h, w);
        let (weights, epilogue) = self.blocks(b, R / BLOCK);
        let out = &mut out[b * BLOCK * oh * ow..][..R * oh * ow];
        assert!(ow >= 16 && x.len() == self.in_channels * h * w);
        for oy in 0..oh {
            let mut ox = 0;
            while ox < ow {
                let pixels = if R == 8 && ow - ox >= 32 { 32 } else { 16 };
                // The last tile of a row overlaps the one before.
                let start = ox.min(ow - pixels);
                // SAFETY: AVX-512F is available (the caller checked imp); the tile reads
                // rows of the planes in x (sized above) under masks, the blocks' weights
                // and epilogues (sliced above), and writes R channel rows of
                // pixels <= ow - start floats inside out (oh * ow apart).
                unsafe {
                    let dst = out.as_mut_ptr().add(oy * ow + start);
                    let (input, at) = (x.as_ptr(), (oy, start));
                    let (c, w_, e) = (self.in_channels, weights.as_ptr(), epilogue.as_ptr());
                    if pixels == 32 {
                        avx512::tile_unpadded::<R, 2>(input, (h, w), at, c, w_, e, dst, oh * ow);
                    } else {
                        avx512::tile_unpadded::<R, 1>(input, (h, w), at, c, w_, e, dst, oh * ow);
                    }
                }
                ox = start + pixels;
            }
        }
    }

    /// One block of output channels of one image.
    fn block(&self, imp: Isa, b: usize, planes: &Planes, out: &mut [f32]) {
        let Planes {
            padded,
            hp,
            wp,
            rows: ref band_rows,
            oh,
            ow,
        } = *planes;
        let (weights, epilogue) = self.blocks(b, 1);
        let rows = BLOCK.min(self.out_channels - b * BLOCK);
        let out = &mut out[b * BLOCK * oh * ow..];
        assert!(band_rows.end <= oh);
        for oy in band_rows.clone() {
            // The band's padded rows from 2 * band_rows.start on.
            let ly = oy - band_rows.start;
            #[cfg(target_arch = "arm")]
            if imp == Isa::Neon && ow >= TILE {
                let at = (oy, 2 * ly);
                self.neon_row(weights, epilogue, padded, hp, wp, at, oh, ow, rows, out);
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if imp.avx2() && ow >= 16 {
                // Split rows (even columns, then odd ones from `half`): band rows
                // 2ly..2ly+2 of every channel, even columns up to ow, odd ones up to
                // ow - 1, all inside the rows.
                let half = wp.div_ceil(2);
                assert!(2 * ly + 2 < hp && ow < half && half + ow <= wp);
                assert!(padded.len() >= self.in_channels * hp * wp);
                let starts = (0..ow / 16)
                    .map(|t| t * 16)
                    .chain((!ow.is_multiple_of(16)).then_some(ow - 16));
                // A partial block goes through a scratch tile; a full one writes its rows.
                let direct = rows == BLOCK;
                if direct {
                    assert!(out.len() >= ((BLOCK - 1) * oh + oy) * ow + ow);
                }
                let mut scratch = [0f32; BLOCK * 16];
                for ox in starts {
                    let (dst, dst_stride) = if direct {
                        // SAFETY: ox + 16 <= ow; the BLOCK rows are inside out (asserted).
                        (unsafe { out.as_mut_ptr().add(oy * ow + ox) }, oh * ow)
                    } else {
                        (scratch.as_mut_ptr(), 16)
                    };
                    // SAFETY: AVX2 and FMA are available (imp); reads as asserted above
                    // (channel planes hp * wp apart), the weights (in_channels * 36 floats)
                    // and epilogue (8); writes 4 rows of 16 floats at dst, dst_stride apart.
                    unsafe {
                        avx2::tile(
                            padded.as_ptr().add(2 * ly * wp + ox),
                            (hp * wp, wp, half),
                            self.in_channels,
                            weights.as_ptr(),
                            epilogue.as_ptr(),
                            dst,
                            dst_stride,
                        )
                    };
                    if !direct {
                        for r in 0..rows {
                            out[(r * oh + oy) * ow + ox..][..16]
                                .copy_from_slice(&scratch[r * 16..][..16]);
                        }
                    }
                }
                continue;
            }
            let _ = imp;
            for r in 0..rows {
                for ox in 0..ow {
                    let mut acc = epilogue[r];
                    for c in 0..self.in_channels {
                        for ky in 0..3 {
                            let row = &padded[(c * hp + 2 * ly + ky) * wp + 2 * ox..];
                            for kx in 0..3 {
                                acc += weights[((c * 3 + ky) * 3 + kx) * BLOCK + r] * row[kx];
                            }
                        }
                    }
                    out[(r * oh + oy) * ow + ox] = acc.max(epilogue[BLOCK]);
                }
            }
        }
    }

    /// One output row of one block on NEON: full tiles in one call, then an overlapping
    /// last tile; a partial block goes through a scratch tile.
    #[cfg(target_arch = "arm")]
    #[allow(clippy::too_many_arguments)]
    fn neon_row(
        &self,
        weights: &[f32],
        epilogue: &[f32],
        padded: &[f32],
        hp: usize,
        wp: usize,
        (oy, band_row): (usize, usize),
        oh: usize,
        ow: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        // Output row oy reads band rows band_row..band_row+2 of every channel, columns up
        // to 2ow (<= wp - 1): inside.
        assert!(band_row + 2 < hp && 2 * ow < wp && padded.len() >= self.in_channels * hp * wp);
        let args = |out_plane_bytes: usize| neon::RowArgs {
            weights: weights.as_ptr(),
            epilogue: epilogue.as_ptr(),
            in_channels: self.in_channels,
            row_step: wp * 4 - 64,
            channel_step: (hp - 3) * wp * 4,
            out_plane_bytes,
        };
        let input_at = |ox: usize| padded[band_row * wp + 2 * ox..].as_ptr();
        let full = ow / TILE;
        let last = (!ow.is_multiple_of(TILE)).then_some(ow - TILE);
        if rows == BLOCK {
            assert!(out.len() >= ((BLOCK - 1) * oh + oy) * ow + ow);
            let args = args(oh * ow * 4);
            let row = out[oy * ow..].as_mut_ptr();
            // SAFETY: the tiles read inside `padded` (asserted above) and write BLOCK
            // channel rows of `ow` floats at `row`, `oh * ow` floats apart (asserted).
            unsafe {
                neon::tiles(&args, input_at(0), row, full);
                if let Some(ox) = last {
                    neon::tiles(&args, input_at(ox), row.add(ox), 1);
                }
            }
        } else {
            let args = args(TILE * 4);
            let starts = (0..full).map(|t| t * TILE).chain(last);
            for ox in starts {
                let mut scratch = [0f32; BLOCK * TILE];
                // SAFETY: reads as above; writes BLOCK rows of TILE floats into scratch.
                unsafe { neon::tiles(&args, input_at(ox), scratch.as_mut_ptr(), 1) };
                for r in 0..rows {
                    out[(r * oh + oy) * ow + ox..][..TILE]
                        .copy_from_slice(&scratch[r * TILE..][..TILE]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use crate::kernels::depthwise::avx2::deinterleave;
    use std::arch::x86_64::*;

    /// Copies rows of `w` floats into padded, split rows (`w + 2` floats each, row `y`
    /// of `rows` to row `y` of `padded`): each padded row's even columns, then from
    /// `(w + 3) / 2` its odd ones. The taps of 16 stride-2 outputs are then three plain
    /// loads per row (even columns from `x`, odd from `x`, even from `x + 1`) instead of
    /// six loads and six shuffles, paid once per input row rather than once per block of
    /// output channels. Padded column `j` is input column `j - 1`: even inputs go to the
    /// odd half, odd inputs to the even half from index 1. Border entries are never
    /// written.
    ///
    /// # Safety
    /// AVX2 available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn copy_rows_split(rows: &[f32], padded: &mut [f32], w: usize) {
        let wp = w + 2;
        let half = wp.div_ceil(2);
        assert!(padded.len() >= rows.len() / w * wp);
        for (y, row) in rows.chunks_exact(w).enumerate() {
            let (even, odd) = padded[y * wp..][..wp].split_at_mut(half);
            let mut i = 0;
            while i + 16 <= w {
                // SAFETY: reads row[i..i + 16]; writes odd[i/2..i/2 + 8] (i/2 + 8 <= w/2
                // <= odd.len()) and even[i/2 + 1..i/2 + 9] (<= w/2 + 1 <= even.len()).
                let [evens, odds] = deinterleave(
                    _mm256_loadu_ps(row.as_ptr().add(i)),
                    _mm256_loadu_ps(row.as_ptr().add(i + 8)),
                );
                _mm256_storeu_ps(odd.as_mut_ptr().add(i / 2), evens);
                _mm256_storeu_ps(even.as_mut_ptr().add(i / 2 + 1), odds);
                i += 16;
            }
            if i + 8 <= w {
                // SAFETY: as above, 8 floats in and 4 out to each half.
                let (lo, hi) = (
                    _mm_loadu_ps(row.as_ptr().add(i)),
                    _mm_loadu_ps(row.as_ptr().add(i + 4)),
                );
                _mm_storeu_ps(odd.as_mut_ptr().add(i / 2), _mm_shuffle_ps(lo, hi, 0x88));
                _mm_storeu_ps(
                    even.as_mut_ptr().add(i / 2 + 1),
                    _mm_shuffle_ps(lo, hi, 0xDD),
                );
                i += 8;
            }
            // The last few, even and odd columns apart (no branch per float).
            for j in (i..w).step_by(2) {
                odd[j / 2] = row[j];
            }
            for j in (i + 1..w).step_by(2) {
                even[j / 2 + 1] = row[j];
            }
        }
    }

    /// 4 output channels x 16 pixels of one row into `out` (rows `out_stride` floats
    /// apart): per input channel and kernel row, the even, odd and shifted even columns
    /// of the split rows are the `kx` = 0, 1, 2 vectors (8 accumulators). 4 x 24 tiles
    /// (12 accumulators, each tap loaded just before its products) ran 8-15 % slower
    /// (Intel Xeon, Emerald Rapids, `conv3x3s2_speed`).
    ///
    /// # Safety
    /// AVX2 and FMA available; `input` (split row 2oy of channel 0, advanced by the
    /// tile's first output column) readable for 17 floats, and for 16 from `half`, in
    /// 3 rows of each of `in_channels` planes (`(plane, row, half)` strides in floats);
    /// `weights` for `in_channels * 36` floats, `epilogue` for 5; `out` writable for 4
    /// rows of 16 floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(
        input: *const f32,
        (plane, row, half): (usize, usize, usize),
        in_channels: usize,
        weights: *const f32,
        epilogue: *const f32,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut acc: [[__m256; 2]; 4] =
            std::array::from_fn(|r| [_mm256_set1_ps(*epilogue.add(r)); 2]);
        let mut w = weights;
        for c in 0..in_channels {
            for ky in 0..3 {
                let e = input.add(c * plane + ky * row);
                let o = e.add(half);
                let taps = [
                    [_mm256_loadu_ps(e), _mm256_loadu_ps(e.add(8))],
                    [_mm256_loadu_ps(o), _mm256_loadu_ps(o.add(8))],
                    [_mm256_loadu_ps(e.add(1)), _mm256_loadu_ps(e.add(9))],
                ];
                for tap in &taps {
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let k = _mm256_set1_ps(*w.add(r));
                        acc[0] = _mm256_fmadd_ps(tap[0], k, acc[0]);
                        acc[1] = _mm256_fmadd_ps(tap[1], k, acc[1]);
                    }
                    w = w.add(super::BLOCK);
                }
            }
        }
        let floor = _mm256_set1_ps(*epilogue.add(super::BLOCK));
        for (r, acc) in acc.iter().enumerate() {
            let row = out.add(r * out_stride);
            _mm256_storeu_ps(row, _mm256_max_ps(acc[0], floor));
            _mm256_storeu_ps(row.add(8), _mm256_max_ps(acc[1], floor));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::window3x3_avx512::Stride2Columns;
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// 8 output channels (two packed blocks) x `16 V` pixels of one row, on split rows.
    ///
    /// # Safety
    /// AVX-512F available; `input` (split row 2oy of channel 0, advanced by the tile's
    /// first output column) readable for `16 V + 1` floats, and for `16 V` from `half`,
    /// in 3 rows of each of `in_channels` planes (`(plane, row, half)` strides in
    /// floats); `weights` for two blocks of `in_channels * 36` floats, `epilogue` for two
    /// of 8; `out` writable for 8 rows of `16 V` floats, `out_stride` apart.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile<const V: usize>(
        input: *const f32,
        (plane, row, half): (usize, usize, usize),
        in_channels: usize,
        weights: *const f32,
        epilogue: *const f32,
        out: *mut f32,
        out_stride: usize,
    ) {
        let taps = |c: usize, ky: usize| {
            let e = input.add(c * plane + ky * row);
            let o = e.add(half);
            Some([
                std::array::from_fn(|v| _mm512_loadu_ps(e.add(16 * v))),
                std::array::from_fn(|v| _mm512_loadu_ps(o.add(16 * v))),
                std::array::from_fn(|v| _mm512_loadu_ps(e.add(16 * v + 1))),
            ])
        };
        convolve::<8, V>(in_channels, taps, weights, epilogue, out, out_stride);
    }

    /// `R` output channels (`R / 4` packed blocks) x `16 V` pixels of one row, like
    /// [`tile`] but straight from the unpadded input planes, so no plane is copied: per
    /// input channel and kernel row, `2 V + 1` masked loads from column `2 ox - 1` (zeros
    /// outside the row, which is the padding), split by `vpermt2ps` into the columns
    /// `2x - 1` (`kx = 0`) and `2x` (`kx = 1`); `valignd` shifts the first by one lane
    /// for `2x + 1` (`kx = 2`). Kernel rows in the top or bottom padding are skipped.
    ///
    /// # Safety
    /// AVX-512F available; `input` readable for `in_channels` planes of `h x w` floats;
    /// `oy` an output row and `ox + 16 V` at most the output width of `(h, w)`;
    /// `weights` readable for `R / 4` blocks of `in_channels * 36` floats, `epilogue` for
    /// `R / 4` of 8; `out` writable for `R` rows of `16 V` floats, `out_stride` apart.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_unpadded<const R: usize, const V: usize>(
        input: *const f32,
        (h, w): (usize, usize),
        (oy, ox): (usize, usize),
        in_channels: usize,
        weights: *const f32,
        epilogue: *const f32,
        out: *mut f32,
        out_stride: usize,
    ) {
        let columns = Stride2Columns::<V>::new(ox, w);
        let taps = |c: usize, ky: usize| {
            // Row 2 oy + ky - 1; none in the top or bottom padding.
            let iy = (2 * oy + ky).checked_sub(1).filter(|&iy| iy < h)?;
            Some(columns.taps(input.add((c * h + iy) * w)))
        };
        convolve::<R, V>(in_channels, taps, weights, epilogue, out, out_stride);
    }

    /// The tile loop both tiles share: from the biases, every input channel's kernel
    /// rows whose `taps` exist, then the floor and the stores.
    ///
    /// # Safety
    /// AVX-512F available; `taps` safe to call for every channel and kernel row;
    /// `weights` readable for `R / 4` blocks of `in_channels * 36` floats, `epilogue`
    /// for `R / 4` of 8; `out` writable for `R` rows of `16 V` floats, `out_stride` apart.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn convolve<const R: usize, const V: usize>(
        in_channels: usize,
        taps: impl Fn(usize, usize) -> Option<[[__m512; V]; 3]>,
        weights: *const f32,
        epilogue: *const f32,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut acc = initial::<R, V>(epilogue);
        for c in 0..in_channels {
            for ky in 0..3 {
                if let Some(taps) = taps(c, ky) {
                    let w = weights.add((c * 3 + ky) * 3 * BLOCK);
                    accumulate(&mut acc, &taps, w, in_channels);
                }
            }
        }
        store(&acc, epilogue, out, out_stride);
    }

    /// The accumulators of `R` channels (`R / 4` blocks) x `16 V` pixels, set to the
    /// biases.
    ///
    /// # Safety
    /// AVX-512F available; `epilogue` readable for `R / 4` blocks' 8 floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn initial<const R: usize, const V: usize>(epilogue: *const f32) -> [[__m512; V]; R] {
        std::array::from_fn(|r| [_mm512_set1_ps(*epilogue.add(r / BLOCK * 8 + r % BLOCK)); V])
    }

    /// One kernel row of one input channel: the `kx` = 0, 1, 2 tap vectors times the
    /// `R / 4` blocks' weights (`w` at that row's `kx = 0` in the first block).
    ///
    /// # Safety
    /// AVX-512F available; `w` readable at the three `kx` of this row in every block.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn accumulate<const R: usize, const V: usize>(
        acc: &mut [[__m512; V]; R],
        taps: &[[__m512; V]; 3],
        w: *const f32,
        in_channels: usize,
    ) {
        // Channel r: block r / 4, row r % 4.
        let block = in_channels * 9 * BLOCK;
        for (kx, tap) in taps.iter().enumerate() {
            let w = w.add(kx * BLOCK);
            for (r, acc) in acc.iter_mut().enumerate() {
                let k = _mm512_set1_ps(*w.add(r / BLOCK * block + r % BLOCK));
                for (a, &t) in acc.iter_mut().zip(tap) {
                    *a = _mm512_fmadd_ps(t, k, *a);
                }
            }
        }
    }

    /// The floor (ReLU or none) and the stores of a finished tile.
    ///
    /// # Safety
    /// AVX-512F available; `epilogue` readable for 5 floats; `out` writable for `R` rows
    /// of `16 V` floats, `out_stride` apart.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize, const V: usize>(
        acc: &[[__m512; V]; R],
        epilogue: *const f32,
        out: *mut f32,
        out_stride: usize,
    ) {
        let floor = _mm512_set1_ps(*epilogue.add(BLOCK));
        for (r, acc) in acc.iter().enumerate() {
            for (v, &a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.add(r * out_stride + 16 * v), _mm512_max_ps(a, floor));
            }
        }
    }
}

#[cfg(target_arch = "arm")]
mod neon {
    //! Registers: q8-q15 accumulators (channel r in q(8+2r) for pixels 0-3, q(9+2r) for
    //! 4-7), q0/q2 even and q1/q3 odd input columns, d8-d13 the twelve weights of one
    //! kernel row (by-scalar `vmla` reads only d0-d15), d14 the 17th input column.

    /// Read by the assembly at fixed offsets.
    #[repr(C)]
    pub struct RowArgs {
        pub weights: *const f32,
        pub epilogue: *const f32,
        pub in_channels: usize,
        /// Bytes from the 17th column read in one padded row to the next row's start.
        pub row_step: usize,
        /// Bytes from three rows below a channel's first row to the next channel's.
        pub channel_step: usize,
        /// Bytes between two output channels' planes.
        pub out_plane_bytes: usize,
    }

    /// One kernel row of one input channel: 24 multiply-adds.
    macro_rules! kernel_row {
        () => {
            concat!(
                "vld2.32 {{d0-d3}}, [{a}]!\n",
                "vld2.32 {{d4-d7}}, [{a}]!\n",
                "vld1.32 {{d14[0]}}, [{a}], {rstep}\n",
                "vld1.32 {{d8-d11}}, [{w}]!\n",
                "vld1.32 {{d12-d13}}, [{w}]!\n",
                "vmla.f32 q8, q0, d8[0]\n",
                "vmla.f32 q9, q2, d8[0]\n",
                "vmla.f32 q10, q0, d8[1]\n",
                "vmla.f32 q11, q2, d8[1]\n",
                "vmla.f32 q12, q0, d9[0]\n",
                "vmla.f32 q13, q2, d9[0]\n",
                "vmla.f32 q14, q0, d9[1]\n",
                "vmla.f32 q15, q2, d9[1]\n",
                "vmla.f32 q8, q1, d10[0]\n",
                "vmla.f32 q9, q3, d10[0]\n",
                "vmla.f32 q10, q1, d10[1]\n",
                "vmla.f32 q11, q3, d10[1]\n",
                "vmla.f32 q12, q1, d11[0]\n",
                "vmla.f32 q13, q3, d11[0]\n",
                "vmla.f32 q14, q1, d11[1]\n",
                "vmla.f32 q15, q3, d11[1]\n",
                "vext.32 q0, q0, q2, #1\n",
                "vext.32 q2, q2, q7, #1\n",
                "vmla.f32 q8, q0, d12[0]\n",
                "vmla.f32 q9, q2, d12[0]\n",
                "vmla.f32 q10, q0, d12[1]\n",
                "vmla.f32 q11, q2, d12[1]\n",
                "vmla.f32 q12, q0, d13[0]\n",
                "vmla.f32 q13, q2, d13[0]\n",
                "vmla.f32 q14, q0, d13[1]\n",
                "vmla.f32 q15, q2, d13[1]\n",
            )
        };
    }

    /// `tiles` consecutive 4-channel x 8-pixel tiles of one output row: the first reads
    /// the padded input from `input` (row 2oy, column 2ox of channel 0), the next ones
    /// 16 columns further; outputs go to `out`, `out + 8`, ...
    ///
    /// # Safety
    /// `input` readable for 3 rows of `16 * tiles + 1` floats in each of `in_channels`
    /// planes (row and channel steps as in `args`); `out` writable for 4 planes of
    /// `8 * tiles` floats `out_plane_bytes` apart; the weights for `in_channels * 36`
    /// floats, the epilogue for 8; `tiles >= 1`, `in_channels >= 1`.
    pub unsafe fn tiles(args: &RowArgs, input: *const f32, out: *mut f32, tiles: usize) {
        core::arch::asm!(
            "1:",
            "ldr {t}, [{p}, #4]",
            "vld1.32 {{d0-d1}}, [{t}]",
            "vdup.32 q8, d0[0]",
            "vdup.32 q9, d0[0]",
            "vdup.32 q10, d0[1]",
            "vdup.32 q11, d0[1]",
            "vdup.32 q12, d1[0]",
            "vdup.32 q13, d1[0]",
            "vdup.32 q14, d1[1]",
            "vdup.32 q15, d1[1]",
            "ldr {w}, [{p}]",
            "ldr {c}, [{p}, #8]",
            "ldr {rstep}, [{p}, #12]",
            "mov {a}, {inp}",
            "2:",
            kernel_row!(),
            kernel_row!(),
            kernel_row!(),
            "ldr {t}, [{p}, #16]",
            "add {a}, {a}, {t}",
            "subs {c}, {c}, #1",
            "bne 2b",
            "ldr {t}, [{p}, #4]",
            "vldr s0, [{t}, #16]",
            "vdup.32 q0, d0[0]",
            "vmax.f32 q8, q8, q0",
            "vmax.f32 q9, q9, q0",
            "vmax.f32 q10, q10, q0",
            "vmax.f32 q11, q11, q0",
            "vmax.f32 q12, q12, q0",
            "vmax.f32 q13, q13, q0",
            "vmax.f32 q14, q14, q0",
            "vmax.f32 q15, q15, q0",
            "ldr {t}, [{p}, #20]",
            "mov {a}, {o}",
            "vst1.32 {{d16-d19}}, [{a}], {t}",
            "vst1.32 {{d20-d23}}, [{a}], {t}",
            "vst1.32 {{d24-d27}}, [{a}], {t}",
            "vst1.32 {{d28-d31}}, [{a}], {t}",
            "add {o}, {o}, #32",
            "add {inp}, {inp}, #64",
            "subs {n}, {n}, #1",
            "bne 1b",
            p = in(reg) args as *const RowArgs,
            inp = inout(reg) input => _,
            o = inout(reg) out => _,
            n = inout(reg) tiles => _,
            w = out(reg) _,
            a = out(reg) _,
            c = out(reg) _,
            rstep = out(reg) _,
            t = out(reg) _,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _,
            out("q4") _, out("q5") _, out("q6") _, out("q7") _,
            out("q8") _, out("q9") _, out("q10") _, out("q11") _,
            out("q12") _, out("q13") _, out("q14") _, out("q15") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::test_pattern;

    /// Straight from the definition, in f64, on the unpadded input.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        weights: &[f32],
        bias: &[f32],
        cin: usize,
        cout: usize,
        relu: bool,
        input: &[f32],
        h: usize,
        w: usize,
    ) -> Vec<f32> {
        let (oh, ow) = PackedConv3x3s2::output_size(h, w);
        let mut out = Vec::new();
        for x in input.chunks_exact(cin * h * w) {
            for m in 0..cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias[m] as f64;
                        for c in 0..cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let iy = (2 * oy + ky) as isize - 1;
                                    let ix = (2 * ox + kx) as isize - 1;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    acc += weights[((m * cin + c) * 3 + ky) * 3 + kx] as f64
                                        * x[(c * h + iy as usize) * w + ix as usize] as f64;
                                }
                            }
                        }
                        let v = acc as f32;
                        out.push(if relu { v.max(0.0) } else { v });
                    }
                }
            }
        }
        out
    }

    fn check(cin: usize, cout: usize, h: usize, w: usize, images: usize) {
        let (oh, ow) = PackedConv3x3s2::output_size(h, w);
        for relu in [false, true] {
            let weights = test_pattern(cout * cin * 9, 5 + cin as u32);
            let bias = test_pattern(cout, 11);
            let input = test_pattern(images * cin * h * w, 1 + (h * w) as u32);
            let expected = reference(&weights, &bias, cin, cout, relu, &input, h, w);
            assert_eq!(expected.len(), images * cout * oh * ow);
            let packed = PackedConv3x3s2::new(&weights, &bias, cin, cout, relu);
            for imp in Isa::ALL {
                if !imp.is_available() {
                    continue;
                }
                // As the engine runs it, then through the padded path in bands of 1, 2
                // and 3 output rows (the engine's bands are taller than most of these
                // maps).
                for band in [None, Some(1), Some(2), Some(3)] {
                    let mut got = vec![f32::NAN; expected.len()];
                    match band {
                        None => packed.run_with(imp, &input, h, w, &mut got),
                        Some(band) => packed.run_bands(imp, &input, (h, w), &mut got, band),
                    }
                    for (i, (e, a)) in expected.iter().zip(&got).enumerate() {
                        assert!(
                            (e - a).abs() <= 1e-5 * (1.0 + e.abs()),
                            "{imp:?} cin{cin} cout{cout} {h}x{w} relu {relu} band {band:?} \
                             at {i}: {a} != {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn awkward_sizes_match_reference() {
        // Odd and even inputs, outputs narrower than a tile (1x1, 2x2), exactly one tile,
        // one tile and a bit (overlapping last tile); channel counts off the 4-block.
        for &(h, w) in &[
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 5),
            (7, 15),
            (9, 16),
            (5, 17),
            (6, 18),
            (11, 31),
            (8, 33),
            (13, 50),
            (9, 64),
            (4, 65),
            (7, 97),
            (3, 130),
        ] {
            for &cin in &[1, 3, 4] {
                for &cout in &[1, 4, 5, 8, 10, 16, 24, 32] {
                    check(cin, cout, h, w, 1);
                }
            }
        }
    }

    #[test]
    fn batches_and_a_first_layer_sized_input() {
        check(3, 8, 10, 20, 3);
        check(3, 24, 32, 32, 1);
    }
}

//! The 1x1 convolution's AVX-512 path for small maps, where the vectors run along the
//! output channels rather than along the pixels.
//!
//! FD-MobileNet does most of its work on 7x7 maps. 49 pixels fit 16- or 8-wide pixel
//! vectors badly (the last tile recomputes 7 columns), and each block of six output
//! channels streams the whole `[k][49]` input again from L2 with rows that straddle cache
//! lines. Here a tile is up to 48 output channels (three zmm vectors) by 7 pixels: 21
//! accumulators, the three weight vectors and one broadcast pixel fit the 32 zmm
//! registers, each step of `k` issues 21 FMAs for 3 vector loads and 7 scalar ones, and
//! every map of these networks (7 * 2^n pixels per side) is a whole number of 7-pixel
//! tiles. The weights are packed once more for this path (`[k][48]` panels, zero-padded
//! to whole vectors), on first use, so hosts without AVX-512 never hold the copy.
//!
//! A tile ends transposed (channels along the vector); it goes to the NCHW output by
//! masked scatter stores, one per output vector against `k` FMAs (measured faster than
//! a transposing copy through a stack buffer).

use std::arch::x86_64::*;

/// Output channels per panel: three zmm vectors.
pub const PANEL: usize = 48;
/// Pixels per tile.
pub const PIXELS: usize = 7;
const LANES: usize = 16;

/// The weights of every group in `[k][width]` panels of up to [`PANEL`] channels, widths
/// rounded up to whole vectors, with the biases laid out the same way.
#[derive(Clone, Debug)]
pub struct ChannelPanels {
    /// Floats of one group's panels.
    group_floats: usize,
    packed: Vec<f32>,
    /// Per group, the biases of its channels rounded up to whole vectors (zeros after).
    bias: Vec<f32>,
    padded_rows: usize,
}

impl ChannelPanels {
    /// `weights` is `[groups * rows][depth]`, `bias` `[groups * rows]`.
    pub fn new(weights: &[f32], bias: &[f32], groups: usize, rows: usize, depth: usize) -> Self {
        let padded_rows = rows.div_ceil(LANES) * LANES;
        let group_floats = padded_rows * depth;
        let mut packed = vec![0f32; groups * group_floats];
        let mut padded_bias = vec![0f32; groups * padded_rows];
        for g in 0..groups {
            let panels = &mut packed[g * group_floats..][..group_floats];
            for (first, width) in panel_plan(padded_rows) {
                let panel = &mut panels[first * depth..][..width * depth];
                for c in first..(first + width).min(rows) {
                    let m = g * rows + c;
                    for (k, &w) in weights[m * depth..][..depth].iter().enumerate() {
                        panel[k * width + c - first] = w;
                    }
                }
            }
            padded_bias[g * padded_rows..][..rows].copy_from_slice(&bias[g * rows..][..rows]);
        }
        ChannelPanels {
            group_floats,
            packed,
            bias: padded_bias,
            padded_rows,
        }
    }

    /// One group of one image: `x` is `[depth][pixels]`, `out` `[rows][pixels]`.
    ///
    /// # Safety
    /// AVX-512F is available; `x` and `out` hold exactly the group's `depth * pixels`
    /// and `rows * pixels` floats, `group < groups`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_group(
        &self,
        group: usize,
        rows: usize,
        depth: usize,
        floor: f32,
        x: &[f32],
        pixels: usize,
        out: &mut [f32],
    ) {
        assert_eq!(x.len(), depth * pixels);
        assert_eq!(out.len(), rows * pixels);
        // Scatter offsets are i32.
        assert!(pixels * LANES <= i32::MAX as usize);
        let panels = &self.packed[group * self.group_floats..][..self.group_floats];
        let bias = &self.bias[group * self.padded_rows..][..self.padded_rows];
        for (first, width) in panel_plan(self.padded_rows) {
            let panel = &panels[first * depth..][..width * depth];
            let real = width.min(rows - first);
            // The next panel (or whatever follows) is pulled towards L2 while this one
            // sweeps the pixels, a line per step of k: on the deep 7x7 layers the weights
            // (1-4 MiB) come from L3 or DRAM, and otherwise the first pixel tile of each
            // panel waits for them (measured 46 against 56 GMAC/s inside FD-MobileNet).
            let next = panels.as_ptr().wrapping_add((first + width) * depth);
            for (tile, start) in (0..pixels).step_by(PIXELS).enumerate() {
                let cols = PIXELS.min(pixels - start);
                let prefetch = next.wrapping_add(tile * depth * LANES);
                let kernel = tile_kernel(width / LANES, cols);
                // SAFETY (caller: AVX-512F): the panel holds depth * width floats, bias
                // width from `first`; x is read at columns start..start + cols of depth
                // rows `pixels` apart, and out written at the same columns of the `real`
                // rows from `first`, all inside the slices (asserted); prefetches do not
                // access memory.
                kernel(
                    (panel.as_ptr(), prefetch),
                    depth,
                    (bias[first..].as_ptr(), floor),
                    x.as_ptr().add(start),
                    pixels,
                    out.as_mut_ptr().add(first * pixels + start),
                    real,
                );
            }
        }
    }
}

/// Whether a layer runs faster here than in the AVX2 pixel tiles. Measured on Zen 4
/// (`cargo run --release -p edge-runtime --example pointwise_speed`): 7x7 maps at every
/// depth of the nine networks (53-56 against 39 GMAC/s at depths 256-1024, 49 against 47
/// at depth 128); on larger maps only deep layers, where the depth hides the scattered
/// stores (14x14 at depth 512: 56 against 51 GMAC/s; at depth 256 level alone but 2-4 %
/// faster inside MobileNet 0.5; at depth 128, 49 against 55).
pub fn suits(pixels: usize, depth: usize) -> bool {
    pixels <= 64 || depth >= 256
}

/// Panels covering `padded_rows` (a multiple of 16) channels: `(first, width)`.
fn panel_plan(padded_rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..padded_rows)
        .step_by(PANEL)
        .map(move |first| (first, PANEL.min(padded_rows - first)))
}

type TileFn = unsafe fn(
    (*const f32, *const f32),
    usize,
    (*const f32, f32),
    *const f32,
    usize,
    *mut f32,
    usize,
);

/// The tile for `vectors` (1-3) zmm vectors of channels by `cols` (1-7) pixels.
fn tile_kernel(vectors: usize, cols: usize) -> TileFn {
    macro_rules! by_cols {
        ($v:literal) => {
            match cols {
                1 => tile::<$v, 1>,
                2 => tile::<$v, 2>,
                3 => tile::<$v, 3>,
                4 => tile::<$v, 4>,
                5 => tile::<$v, 5>,
                6 => tile::<$v, 6>,
                _ => tile::<$v, 7>,
            }
        };
    }
    match vectors {
        1 => by_cols!(1),
        2 => by_cols!(2),
        _ => by_cols!(3),
    }
}

/// `V` vectors of output channels by `P` pixels: for the first `real` channels `c`,
/// `out[c][p] = max(floor, bias[c] + sum_k w[k][c] * x[k][p])`, rows of `x` and `out`
/// both `stride` floats apart.
///
/// # Safety
/// AVX-512F available; `w` readable for `depth * 16 V` floats, `bias` for `16 V`, `x`
/// for `P` floats in each of `depth` rows, `out` writable for `P` floats in each of
/// `real <= 16 V` rows.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const V: usize, const P: usize>(
    (w, prefetch): (*const f32, *const f32),
    depth: usize,
    (bias, floor): (*const f32, f32),
    x: *const f32,
    stride: usize,
    out: *mut f32,
    real: usize,
) {
    let init: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(bias.add(LANES * v)));
    let mut acc = [init; P];
    let (mut xp, mut wp) = (x, w);
    for k in 0..depth {
        let wv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(wp.add(LANES * v)));
        _mm_prefetch::<_MM_HINT_T1>(prefetch.wrapping_add(LANES * k) as *const i8);
        for (p, row) in acc.iter_mut().enumerate() {
            let xb = _mm512_set1_ps(*xp.add(p));
            for (a, &wv) in row.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(wv, xb, *a);
            }
        }
        xp = xp.add(stride);
        wp = wp.add(LANES * V);
    }
    let floor = _mm512_set1_ps(floor);
    // Lane l of an output vector goes to channel row l: element offsets l * stride.
    let index = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(stride as i32),
    );
    for v in 0..V {
        let lanes = real.saturating_sub(LANES * v).min(LANES);
        let mask: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
        let base = out.add(LANES * v * stride);
        for (p, row) in acc.iter().enumerate() {
            _mm512_mask_i32scatter_ps::<4>(base.add(p), mask, index, _mm512_max_ps(row[v], floor));
        }
    }
}

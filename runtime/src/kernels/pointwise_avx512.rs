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
//! A tile ends transposed (channels along the vector); it goes to the NCHW output
//! through a 16 x 8 transpose in registers and masked stores of each channel's 7
//! pixels.

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
/// depth of the nine networks (56-57 against 39 GMAC/s at depths 256-1024, 53 against
/// 46 at depth 128); on larger maps only deep layers, where the depth hides the
/// transposing stores (14x14 at depth 512: 57 against 51 GMAC/s, at 256: 56 against 54,
/// at 128: 53 against 55).
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
    for v in 0..V {
        let channels = real.saturating_sub(LANES * v).min(LANES);
        // Vector v of every pixel, padded to 8 pixels.
        let mut rows = [_mm512_setzero_ps(); 8];
        for (row, pixel) in rows.iter_mut().zip(&acc) {
            *row = _mm512_max_ps(pixel[v], floor);
        }
        store_transposed(rows, P, channels, out.add(LANES * v * stride), stride);
    }
}

/// Writes 16 channels by up to 8 pixels, held as one vector per pixel (`rows[p]`, lane
/// `c` = channel `c`), to the first `channels` NCHW rows at `out` (`stride` floats
/// apart), `pixels` floats each. A 16 x 8 transpose in registers (unpacks, then 128-bit
/// lane shuffles) and two masked stores per vector: cheaper than a scatter per pixel.
///
/// # Safety
/// AVX-512F available; `out` writable for `pixels <= 8` floats in each of `channels`
/// rows.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_transposed(
    rows: [__m512; 8],
    pixels: usize,
    channels: usize,
    out: *mut f32,
    stride: usize,
) {
    // Per 128-bit group g (channels 4g..4g+3): pairs of pixels interleaved...
    let t: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (rows[i / 2 * 2], rows[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // ...then u[q] holds pixels 0-3 of channel 4g + q, u[4 + q] pixels 4-7.
    let u = [
        _mm512_shuffle_ps::<0x44>(t[0], t[2]),
        _mm512_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm512_shuffle_ps::<0x44>(t[1], t[3]),
        _mm512_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm512_shuffle_ps::<0x44>(t[4], t[6]),
        _mm512_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm512_shuffle_ps::<0x44>(t[5], t[7]),
        _mm512_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    let low: __mmask16 = ((1u32 << pixels) - 1) as __mmask16;
    let high: __mmask16 = low << 8;
    for q in 0..4 {
        // [group 0 | group 1] and [group 2 | group 3] of channel q, 8 pixels each.
        let (a, b) = (u[q], u[4 + q]);
        let first = _mm512_shuffle_f32x4::<0x44>(a, b);
        let second = _mm512_shuffle_f32x4::<0xEE>(a, b);
        let pairs = [
            _mm512_shuffle_f32x4::<0xD8>(first, first),
            _mm512_shuffle_f32x4::<0xD8>(second, second),
        ];
        for (half, pair) in pairs.iter().enumerate() {
            for (lanes, mask) in [(0, low), (8, high)] {
                let c = 8 * half + 4 * (lanes / 8) + q;
                if c < channels {
                    // The high half's pixels sit in lanes 8..16: the store's base is 8
                    // floats before the row (only the masked-in lanes are written).
                    let row = out.add(c * stride).wrapping_sub(lanes);
                    _mm512_mask_storeu_ps(row, mask, *pair);
                }
            }
        }
    }
}

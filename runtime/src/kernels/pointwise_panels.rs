//! The 1x1 convolution's x86 path for small maps and deep layers, where the vectors run
//! along the output channels rather than along the pixels.
//!
//! FD-MobileNet does most of its work on 7x7 maps. 49 pixels fit 8- or 16-wide pixel
//! vectors badly (the last tile recomputes 7 columns), and each block of six output
//! channels streams the whole `[k][49]` input again from L2 with rows that straddle cache
//! lines. Here a tile is a panel of output channels by a few pixels:
//! - AVX-512: up to 48 channels (three zmm vectors) by 7 pixels, so every map of these
//!   networks (7 * 2^n pixels per side) is a whole number of tiles: 21 accumulators, the
//!   three weight vectors and one broadcast pixel fit the 32 zmm registers; each step of
//!   `k` issues 21 FMAs for 3 vector loads and 7 scalar ones. On maps larger than 7x7
//!   (deep layers only, see [`suits`]) the panels are 64 channels by 6 pixels instead: 24
//!   FMAs per step of `k` for 4 vector loads and 6 scalar ones, where a few 5-pixel tiles
//!   cost less than on a 49-pixel map (see [`avx512_panel`]).
//! - AVX2: up to 24 channels (three ymm vectors) by 4 pixels: 12 accumulators, the three
//!   weight vectors and one broadcast pixel fill the 16 ymm registers; 12 FMAs per step
//!   of `k` for 3 vector loads and 4 scalar ones. The activations are first cut into
//!   4-pixel strips (`pixel_strips`).
//!
//! The weights are packed once more for this path (`[k][panel]`, zero-padded to whole
//! vectors). A tile ends transposed (channels along the vector); it goes to the NCHW
//! output through a transpose in registers and a store of each channel's pixels.
//!
//! Either side may instead be channels-last (`[pixels][channels]`, see [`super::Layout`]), as
//! the engine keeps the activations between such layers: a channels-last input is read
//! in place (each pixel's `k` contiguous, no strips), and a channels-last output takes
//! one plain store per vector, no transpose (which costs 2-12 % of these layers).

use super::aligned::{self, AlignedFloats};
use super::isa::Isa;
use super::layout::Layouts;

/// Floats per 64-byte cache line: the weight panels are prefetched a line per step of `k`.
const LINE_FLOATS: usize = 16;

/// Pixels per tile on AVX-512 (48-channel panels).
pub const PIXELS: usize = 7;
/// Pixels per tile of the AVX-512 64-channel panels: 24 accumulators, four weight
/// vectors and the broadcast pixel fit the 32 zmm registers.
const WIDE_PIXELS: usize = 6;
/// Channels per panel and pixels per tile on AVX2: 12 accumulators, three weight vectors
/// and the broadcast pixel fill the 16 ymm registers, and each step of `k` issues 12
/// FMAs for 3 vector loads and 4 scalar ones. 16 channels by 6 pixels (8 loads per 12
/// FMAs) ran mobilenet_0.5 and fd_mobilenet_1.0 4-5 % slower on an Intel Xeon (Emerald
/// Rapids) with AVX-512 hidden; 32 by 3 spills registers (35-40 % slower).
const AVX2_PANEL: usize = 24;
const AVX2_PIXELS: usize = 4;

/// The weights of every group in `[k][width]` panels of up to `panel` channels, widths
/// rounded up to whole vectors of `lanes`, with the biases laid out the same way.
#[derive(Clone, Debug)]
pub struct ChannelPanels {
    /// The path the panels are laid out for (AVX-512 or AVX2).
    isa: Isa,
    lanes: usize,
    panel: usize,
    /// Pixels per tile.
    tile_pixels: usize,
    /// Floats of one group's panels.
    group_floats: usize,
    packed: AlignedFloats,
    /// Per group, the biases of its channels rounded up to whole vectors (zeros after).
    bias: AlignedFloats,
    padded_rows: usize,
}

impl ChannelPanels {
    /// `weights` is `[groups * rows][depth]`, `bias` `[groups * rows]`, laid out for
    /// `isa` (`Avx512` or `Avx2Fma`) and maps of `map_pixels` pixels where known (the
    /// panels run on any map size).
    pub fn new(
        isa: Isa,
        weights: &[f32],
        bias: &[f32],
        groups: usize,
        rows: usize,
        depth: usize,
        map_pixels: Option<usize>,
    ) -> Self {
        let (lanes, panel, tile_pixels) = match isa {
            Isa::Avx512 => {
                let (panel, tile_pixels) = avx512_panel(map_pixels);
                (16, panel, tile_pixels)
            }
            Isa::Avx2Fma => (8, AVX2_PANEL, AVX2_PIXELS),
            _ => panic!("no channel panels for {isa:?}"),
        };
        let padded_rows = rows.div_ceil(lanes) * lanes;
        let group_floats = padded_rows * depth;
        let mut packed = aligned::zeros(groups * group_floats);
        let mut padded_bias = aligned::zeros(groups * padded_rows);
        for g in 0..groups {
            let panels = &mut packed[g * group_floats..][..group_floats];
            for (first, width) in panel_plan(padded_rows, panel) {
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
            isa,
            lanes,
            panel,
            tile_pixels,
            group_floats,
            packed,
            bias: padded_bias,
            padded_rows,
        }
    }

    /// The path these panels are laid out for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// One group of one image: `x` is `[depth][pixels]`, `out` `rows` rows of `pixels`
    /// floats, `out_stride` apart, or `x` and `out` `[pixels][pixel_floats]` where
    /// `layouts` says channels-last (each pixel's first `depth` or `rows` floats read or
    /// written; `out_stride` unused).
    ///
    /// # Safety
    /// The panels' instruction set is available; `x` holds exactly the group's floats
    /// (`pixels` times those per pixel in its layout), `out` at least the rows above
    /// (planar) or exactly the group's floats (channels-last), `group < groups`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_group(
        &self,
        group: usize,
        rows: usize,
        depth: usize,
        floor: f32,
        x: &[f32],
        pixels: usize,
        (out, out_stride): (&mut [f32], usize),
        layouts: Layouts,
    ) {
        let x_pixel = layouts.input.floats_per_pixel(depth);
        let out_pixel = layouts.output.floats_per_pixel(rows);
        assert!(x_pixel >= depth && out_pixel >= rows);
        assert_eq!(x.len(), x_pixel * pixels);
        if layouts.output.is_channels_last() {
            assert_eq!(out.len(), out_pixel * pixels);
        } else {
            assert!(out_stride >= pixels && out.len() >= (rows - 1) * out_stride + pixels);
        }
        let lanes = self.lanes;
        // AVX2: the input is first copied into `[tile][k][pixel]` strips, so a tile reads
        // its pixels of every row of `k` from consecutive lines rather than one line (or
        // two) per step of `k`, `pixels` floats apart; each panel streams the strips from L2.
        // SAFETY (caller: the ISA): x holds depth * pixels floats (asserted); AVX2 tiles
        // are at most 8 pixels wide.
        let x_last = layouts.input.is_channels_last();
        let out_last = layouts.output.is_channels_last();
        let strips = (self.isa == Isa::Avx2Fma && !x_last)
            .then(|| unsafe { pixel_strips(x, depth, pixels, self.tile_pixels) });
        let panels = &self.packed[group * self.group_floats..][..self.group_floats];
        let bias = &self.bias[group * self.padded_rows..][..self.padded_rows];
        for (first, width) in panel_plan(self.padded_rows, self.panel) {
            let panel = &panels[first * depth..][..width * depth];
            let real = width.min(rows - first);
            // The next panel (or whatever follows) is pulled towards L2 while this one
            // sweeps the pixels, a line per step of k: on the deep 7x7 layers the weights
            // (1-4 MiB) come from L3 or DRAM, and otherwise the first pixel tile of each
            // panel waits for them (measured 46 against 56 GMAC/s inside FD-MobileNet on
            // AVX-512).
            let next = panels.as_ptr().wrapping_add((first + width) * depth);
            for (tile, (start, cols)) in pixel_tiles(pixels, self.tile_pixels).enumerate() {
                let prefetch = next.wrapping_add(tile * depth * LINE_FLOATS);
                // SAFETY (caller: the ISA): the panel holds depth * width floats, bias
                // width from `first`; x is read at columns start..start + cols of depth
                // rows `pixels` apart, and out written at the same columns of the `real`
                // rows from `first`, `out_stride` apart (channels-last: the first `depth` floats of pixels
                // start..start + cols, `x_pixel` apart, and floats first..first + real
                // of the same pixels, `out_pixel` apart), all inside the slices
                // (asserted); prefetches do not access
                // memory. AVX2 tiles write 8 floats from `start` of a planar row only when
                // they lie inside the row, the extra ones rewritten by later tiles.
                let args = TileArgs {
                    w: panel.as_ptr(),
                    prefetch,
                    depth,
                    bias: bias[first..].as_ptr(),
                    floor,
                    x: match &strips {
                        _ if x_last => x.as_ptr().add(start * x_pixel),
                        Some(strips) => strips.as_ptr().add(start * depth),
                        None => x.as_ptr().add(start),
                    },
                    x_stride: match &strips {
                        _ if x_last => 1,
                        Some(_) => cols,
                        None => pixels,
                    },
                    x_pixel_stride: x_pixel,
                    stride: if out_last { out_pixel } else { out_stride },
                    out: if out_last {
                        out.as_mut_ptr().add(start * out_pixel + first)
                    } else {
                        out.as_mut_ptr().add(first * out_stride + start)
                    },
                    real,
                    whole_vector: start + 8 <= pixels,
                };
                let kernel = if self.isa == Isa::Avx512 {
                    avx512::tile_kernel(width / lanes, cols, x_last, out_last)
                } else {
                    avx2::tile_kernel(width / lanes, cols, x_last, out_last)
                };
                kernel(&args);
            }
        }
        if let Some(strips) = strips {
            STRIPS.with(|s| *s.borrow_mut() = strips);
        }
    }
}

thread_local! {
    /// The pixel strips of the last AVX2 call on this thread, kept for the next.
    static STRIPS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The fewest tiles of at most `max` pixels that cover `pixels`, as `(start, cols)`, their
/// widths differing by at most one (wider first): a narrow last tile would cost nearly
/// as much as a whole one, its few accumulators waiting on the multiply-add latency
/// (AVX2, 49 pixels: 10 x 4 + 3 x 3 rather than 12 x 4 + 1).
fn pixel_tiles(pixels: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let tiles = pixels.div_ceil(max);
    let (narrow, wider) = (pixels / tiles, pixels % tiles);
    (0..tiles).scan(0, move |start, t| {
        let cols = narrow + usize::from(t < wider);
        let tile = (*start, cols);
        *start += cols;
        Some(tile)
    })
}

/// `x` (`[depth][pixels]`) as strips of the tiles of [`pixel_tiles`] (at most 8 pixels
/// wide): the strip of the tile from pixel `start` is `[depth][cols]` at `start * depth`.
///
/// # Safety
/// AVX2 available; `x` holds `depth * pixels` floats; `tile <= 8`.
#[target_feature(enable = "avx2")]
unsafe fn pixel_strips(x: &[f32], depth: usize, pixels: usize, tile: usize) -> Vec<f32> {
    use std::arch::x86_64::*;
    debug_assert!(tile <= 8 && x.len() == depth * pixels);
    let mut strips = STRIPS.with(|s| std::mem::take(&mut *s.borrow_mut()));
    strips.clear();
    // Each row segment (5-8 floats; a `memcpy` call per segment cost more than the copy)
    // moves as one 8-float vector: its extra lanes land where the next segment goes, and
    // on the 8 floats of slack after the last one.
    strips.resize(depth * pixels + 8, 0.0);
    let dst = strips.as_mut_ptr();
    for (start, cols) in pixel_tiles(pixels, tile) {
        let tail = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(cols as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        for k in 0..depth {
            let from = k * pixels + start;
            let v = if from + 8 <= x.len() {
                _mm256_loadu_ps(x.as_ptr().add(from))
            } else {
                // The end of `x`: only the segment's own lanes are read.
                _mm256_maskload_ps(x.as_ptr().add(from), tail)
            };
            _mm256_storeu_ps(dst.add(start * depth + k * cols), v);
        }
    }
    strips.truncate(depth * pixels);
    strips
}

/// Whether a layer of `depth` input channels on `pixels` pixels runs faster here than
/// in the pixel tiles of `pointwise`, on `isa`. Measured with `cargo run --release -p
/// edge-runtime --example pointwise_speed`:
/// - AVX-512 on Zen 4: 7x7 maps at every depth of the nine networks (56-57 against 39
///   GMAC/s at depths 256-1024, 53 against 46 at depth 128); on larger maps only deep
///   layers, where the depth hides the transposing stores (14x14 at depth 512: 57
///   against 51 GMAC/s, at 256: 56 against 54, at 128: 53 against 55).
/// - AVX2 (Zen 4 with AVX-512 hidden, see the README): 7x7 maps from depth 128 (256 ->
///   256: 51.8 against 48.2 GMAC/s once the pixel strips were vector copies, 128 -> 256:
///   49.9 against 46.8, ShuffleNet's groups of 160: 49.7 against 44.7), not below (64 ->
///   64: 41 against 45, groups of 80: 44 against 46); on larger maps from depth 256
///   (14x14 at depth 512: 54.5 against 50.8, at 256: 54.0 against 53.8, at 128: 52.6
///   against 55.1).
pub fn suits(isa: Isa, pixels: usize, depth: usize) -> bool {
    match isa {
        Isa::Avx512 => pixels <= 64 || depth >= 256,
        Isa::Avx2Fma => (pixels <= 64 && depth >= 128) || depth >= 256,
        _ => false,
    }
}

/// Channels per panel and pixels per tile on AVX-512, for maps of `map_pixels` pixels.
/// 64 x 6 ran the 14x14 256 -> 256 layer of mobilenet_0.5 4-5 % faster than 48 x 7
/// (Intel Xeon, Emerald Rapids), but 7x7 layers 1-2 % slower: there 49 pixels make
/// nine tiles, four of them 5 pixels wide, against seven whole ones. Unknown map sizes
/// take 48 x 7, which suits FD-MobileNet's 7x7 layers, where it spends most of its time.
fn avx512_panel(map_pixels: Option<usize>) -> (usize, usize) {
    match map_pixels {
        Some(pixels) if pixels > 64 => (64, WIDE_PIXELS),
        _ => (48, PIXELS),
    }
}

/// Panels covering `padded_rows` (a multiple of the lanes) channels: `(first, width)`.
fn panel_plan(padded_rows: usize, panel: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..padded_rows)
        .step_by(panel)
        .map(move |first| (first, panel.min(padded_rows - first)))
}

/// What a tile reads and writes.
struct TileArgs {
    /// The panel's `[depth][width]` weights.
    w: *const f32,
    prefetch: *const f32,
    depth: usize,
    bias: *const f32,
    /// 0 (ReLU) or -inf.
    floor: f32,
    /// Row 0 of the input at the tile's first pixel; rows `x_stride` apart.
    x: *const f32,
    x_stride: usize,
    /// Channels-last input only: floats from one pixel to the next.
    x_pixel_stride: usize,
    /// Floats from one output row to the next (channels-last: one pixel to the next).
    stride: usize,
    /// The first channel's output row at the tile's first pixel (channels-last: the
    /// tile's first pixel at the first channel).
    out: *mut f32,
    /// Channels to write.
    real: usize,
    /// Whether 8 floats from the tile's first pixel lie inside its rows (AVX2 then
    /// stores whole vectors).
    whole_vector: bool,
}

type TileFn = unsafe fn(&TileArgs);

/// Picks `tile::<V, P, XL, OL>` for `vectors` vectors of channels (one of the
/// `narrower` counts, else `max_vectors`) by `cols` (1-7) pixels, the input (`XL`) and
/// output (`OL`) channels-last or not.
macro_rules! tile_kernel {
    ([$($narrower:literal),*], $max_vectors:literal) => {
        pub(super) fn tile_kernel(
            vectors: usize,
            cols: usize,
            x_last: bool,
            out_last: bool,
        ) -> super::TileFn {
            macro_rules! by_cols {
                ($v:literal, $xl:literal, $ol:literal) => {
                    match cols {
                        1 => tile::<$v, 1, $xl, $ol>,
                        2 => tile::<$v, 2, $xl, $ol>,
                        3 => tile::<$v, 3, $xl, $ol>,
                        4 => tile::<$v, 4, $xl, $ol>,
                        5 => tile::<$v, 5, $xl, $ol>,
                        6 => tile::<$v, 6, $xl, $ol>,
                        _ => tile::<$v, 7, $xl, $ol>,
                    }
                };
            }
            macro_rules! by_vectors {
                ($xl:literal, $ol:literal) => {
                    match vectors {
                        $($narrower => by_cols!($narrower, $xl, $ol),)*
                        _ => by_cols!($max_vectors, $xl, $ol),
                    }
                };
            }
            match (x_last, out_last) {
                (false, false) => by_vectors!(false, false),
                (false, true) => by_vectors!(false, true),
                (true, false) => by_vectors!(true, false),
                (true, true) => by_vectors!(true, true),
            }
        }
    };
}

mod avx512 {
    use super::TileArgs;
    use std::arch::x86_64::*;

    const LANES: usize = 16;

    tile_kernel!([1, 2, 3], 4);

    /// `V` vectors of output channels by `P` pixels: for the first `real` channels `c`,
    /// `out[c][p] = max(floor, bias[c] + sum_k w[k][c] * x[k][p])`, rows of `x`
    /// `x_stride` and of `out` `stride` floats apart; channels-last input (`XL`) has its
    /// pixels `x_pixel_stride` apart, channels-last output (`OL`) `stride`.
    ///
    /// # Safety
    /// AVX-512F available; `w` readable for `depth * 16 V` floats, `bias` for `16 V`, `x`
    /// for `P` floats in each of `depth` rows (or `depth` in each of `P` pixels), `out`
    /// writable for `P` floats in each of `real <= 16 V` rows (or `real` in each of `P`
    /// pixels).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const V: usize, const P: usize, const XL: bool, const OL: bool>(
        args: &TileArgs,
    ) {
        let TileArgs {
            w,
            prefetch,
            depth,
            bias,
            floor,
            x,
            x_stride,
            x_pixel_stride,
            stride,
            out,
            real,
            ..
        } = *args;
        let pixel_step = if XL { x_pixel_stride } else { 1 };
        let init: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(bias.add(LANES * v)));
        let mut acc = [init; P];
        let (mut xp, mut wp) = (x, w);
        for k in 0..depth {
            let wv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(wp.add(LANES * v)));
            _mm_prefetch::<_MM_HINT_T1>(prefetch.wrapping_add(super::LINE_FLOATS * k) as *const i8);
            for (p, row) in acc.iter_mut().enumerate() {
                let xb = _mm512_set1_ps(*xp.add(p * pixel_step));
                for (a, &wv) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(wv, xb, *a);
                }
            }
            xp = xp.add(x_stride);
            wp = wp.add(LANES * V);
        }
        let floor = _mm512_set1_ps(floor);
        if OL {
            for (p, pixel) in acc.iter().enumerate() {
                let dst = out.add(p * stride);
                for (v, &a) in pixel.iter().enumerate() {
                    let channels = real.saturating_sub(LANES * v).min(LANES);
                    let a = _mm512_max_ps(a, floor);
                    if channels == LANES {
                        _mm512_storeu_ps(dst.add(LANES * v), a);
                    } else if channels > 0 {
                        let mask = ((1u32 << channels) - 1) as __mmask16;
                        _mm512_mask_storeu_ps(dst.add(LANES * v), mask, a);
                    }
                }
            }
            return;
        }
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
}

/// The AVX-512 tile's loop on 8-lane registers, with 6-pixel tiles and plain stores. It
/// is written out again rather than shared: the intrinsics differ by register type, and
/// a trait over the two would leave a call behind every FMA (stable Rust cannot force
/// target-feature functions inline).
mod avx2 {
    use super::TileArgs;
    use std::arch::x86_64::*;

    const LANES: usize = 8;

    tile_kernel!([1, 2], 3);

    /// `V` vectors of output channels by `P` pixels, as the AVX-512 tile: for the first
    /// `real` channels `c`, `out[c][p] = max(floor, bias[c] + sum_k w[k][c] * x[k][p])`,
    /// either side channels-last likewise (`XL`, `OL`).
    ///
    /// # Safety
    /// AVX2 and FMA available; `w` readable for `depth * 8 V` floats, `bias` for `8 V`,
    /// `x` for `P` floats in each of `depth` rows (or `depth` in each of `P` pixels),
    /// `out` writable for `P` floats in each of `real <= 8 V` rows, and for 8 if
    /// `whole_vector` (or for `real` in each of `P` pixels).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const V: usize, const P: usize, const XL: bool, const OL: bool>(
        args: &TileArgs,
    ) {
        let TileArgs {
            w,
            prefetch,
            depth,
            bias,
            floor,
            x,
            x_stride,
            x_pixel_stride,
            stride,
            out,
            real,
            whole_vector,
        } = *args;
        let pixel_step = if XL { x_pixel_stride } else { 1 };
        let init: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(bias.add(LANES * v)));
        let mut acc = [init; P];
        let (mut xp, mut wp) = (x, w);
        for k in 0..depth {
            let wv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(wp.add(LANES * v)));
            _mm_prefetch::<_MM_HINT_T1>(prefetch.wrapping_add(super::LINE_FLOATS * k) as *const i8);
            for (p, row) in acc.iter_mut().enumerate() {
                let xb = _mm256_set1_ps(*xp.add(p * pixel_step));
                for (a, &wv) in row.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(wv, xb, *a);
                }
            }
            xp = xp.add(x_stride);
            wp = wp.add(LANES * V);
        }
        let floor = _mm256_set1_ps(floor);
        if OL {
            for (p, pixel) in acc.iter().enumerate() {
                let dst = out.add(p * stride);
                for (v, &a) in pixel.iter().enumerate() {
                    let channels = real.saturating_sub(LANES * v).min(LANES);
                    let a = _mm256_max_ps(a, floor);
                    if channels == LANES {
                        _mm256_storeu_ps(dst.add(LANES * v), a);
                    } else if channels > 0 {
                        let mask = _mm256_cmpgt_epi32(
                            _mm256_set1_epi32(channels as i32),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                        );
                        _mm256_maskstore_ps(dst.add(LANES * v), mask, a);
                    }
                }
            }
            return;
        }
        // Lanes 0..P, for tiles too near the end of their rows for a whole vector.
        let tail = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(P as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        for v in 0..V {
            let channels = real.saturating_sub(LANES * v).min(LANES);
            let mut rows = [_mm256_setzero_ps(); 8];
            for (row, pixel) in rows.iter_mut().zip(&acc) {
                *row = _mm256_max_ps(pixel[v], floor);
            }
            let columns = transpose8(rows);
            for (c, column) in columns.iter().enumerate().take(channels) {
                let dst = out.add((LANES * v + c) * stride);
                if whole_vector {
                    // Lanes P..8 land on later tiles' pixels of the same row, which those
                    // tiles write afterwards (AMD's masked stores are slow).
                    _mm256_storeu_ps(dst, *column);
                } else {
                    _mm256_maskstore_ps(dst, tail, *column);
                }
            }
        }
    }

    /// 8 x 8 transpose: `rows[p]` lane `c` becomes lane `p` of the result's vector `c`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_and_biases_start_on_a_cache_line() {
        // A 512 -> 512 layer's panels (1 MiB, where a Vec would start 16 bytes past a
        // line) and a small one's, for both paths: each AVX-512 panel row then starts a
        // line (48 and 64 channels are whole lines), and AVX2's rows of 24 (96 bytes) put
        // every 8-float load on a 32-byte boundary, so no vector load splits across two.
        // The AVX-512 panels are 48 or 64 channels wide by map size.
        for (rows, depth) in [(512, 512), (10, 3)] {
            let weights = vec![0.5f32; rows * depth];
            let bias = vec![0.25f32; rows];
            for isa in [Isa::Avx512, Isa::Avx2Fma] {
                for map in [None, Some(196)] {
                    let panels = ChannelPanels::new(isa, &weights, &bias, 1, rows, depth, map);
                    let at = format!("{isa:?} {rows}x{depth} on {map:?}");
                    assert_eq!(panels.packed.as_ptr() as usize % 64, 0, "{at}");
                    assert_eq!(panels.bias.as_ptr() as usize % 64, 0, "{at}");
                }
            }
        }
    }
}

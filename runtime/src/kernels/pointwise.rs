//! 1x1 convolution (pointwise, optionally grouped), NCHW f32, stride 1, as a GEMM
//! `out[m][n] = bias[m] + sum_k w[m][k] * x[k][n]` per group, with the bias and an
//! optional ReLU fused into the same pass.
//!
//! NCHW already stores `x` as `[k][n]` with the pixels of one channel contiguous, so `x`
//! is read in place (no packing pass, unlike tract's `OptMatMulPack`): a tile of
//! `ROWS` output channels by 8 pixels keeps its accumulators in registers, and each step
//! of `k` loads one row segment of `x` and `ROWS` weights, then multiplies by each weight
//! as a scalar. Only the constant weights are packed, once, at load time: per block of
//! `ROWS` output channels, `[k][ROWS]`; a remainder of 2 or 4 channels takes one or two
//! blocks of 4 (a 4 x 8 tile), any other the last block overlapping the one before
//! (recomputing rows is cheaper than a scratch copy).
//!
//! armv7 (Cortex-A9: 16 q registers, no FMA): 6 x 8 tile, 12 q accumulators, 2 q of `x`
//! and 6 weights in d4-d6 (the by-scalar `vmla` reads only d0-d15): 14 instructions per
//! 48 MACs, `k` unrolled by four, and the loop over a row of tiles inside the assembly.
//! The last columns take a 6 x 4 tile (overlapping the previous one) or, for a single
//! column such as the 49th of a 7x7 map, a 6 x 1 tile with the weights as the vectors.
//! Columns are processed in chunks whose `[k][chunk]` slice of `x` fits comfortably in
//! the 1 MiB L2, each weight block (at most `k * 24` bytes) staying in the 32 KiB L1
//! while it sweeps the chunk.
//!
//! x86-64: tiles of the same design, AVX2/FMA 6 x 16 and 4 x 16 (12 accumulators of the
//! 16 ymm registers), AVX-512 6 x 64 and 4 x 64 (24 of the 32 zmm registers: per step of
//! `k`, 4 loads of `x` and 6 broadcasts feed 24 multiply-adds, where a 6 x 32 tile has 8
//! for 12). The last columns take tiles of 16 or 32. 7x7 maps (on AVX2 from
//! depth 128; on AVX-512 at every depth) and deep layers on larger maps take
//! `pointwise_panels` instead, whose vectors run along the output channels (49 pixels
//! fit 8- or 16-wide pixel vectors badly); only that path also takes and gives
//! channels-last images ([`PackedPointwise::run_layouts`]). The AVX-512 tiles sweep column
//! chunks of at most 32 KiB of `x`, so that every weight block re-reads its chunk from L1
//! rather than L2 (see [`chunk_bytes`]).

use super::isa::{same_bits, Isa};
use super::layout::Layouts;

/// Output channels per tile: the tall block, and the short one that covers remainders of
/// 2 and 4 exactly (every layer of the nine networks has a multiple of 2 channels).
pub const ROWS: usize = 6;
const SHORT_ROWS: usize = 4;

/// Floats of a block's epilogue: up to `ROWS` biases, the floor at index `ROWS`, unused.
const EPILOGUE: usize = 8;

/// Bytes of `x` one column chunk may span on `imp` (at least one tile's worth).
///
/// - NEON and AVX2: 256 KiB, a quarter of the Cortex-A9's L2.
/// - AVX-512: 32 KiB, within the 48 KiB L1 of Intel's cores beside a weight block, so
///   that each block of 6 output channels re-reads the chunk from L1. On an Intel Xeon
///   (Emerald Rapids), a local variant of `pointwise_speed` with 32 KiB against 256 KiB
///   chunks, interleaved call by call: the 56x56 and 28x28 layers of depth 32-64 at
///   76-88 against 68-78 GMAC/s (warm caches), 70-78 against 63-70 (cold); depth 128 and
///   the 112x112 layers of depth 8-16 level. AVX2 was level, so it keeps its chunks.
///   16 KiB chunks did no better, and lost on 56x56 at depth 32 with cold caches (52
///   against 67).
fn chunk_bytes(imp: Isa) -> usize {
    match imp {
        Isa::Avx512 => 32 * 1024,
        _ => 256 * 1024,
    }
}

/// Tiles of `wide` columns per column chunk of a layer of `depth` input channels.
fn tiles_per_chunk(imp: Isa, depth: usize, wide: usize) -> usize {
    (chunk_bytes(imp) / (4 * depth * wide)).max(1)
}

/// Columns of the widest AVX-512 tile, which also sizes the scratch tile.
const AVX512_COLUMNS: usize = 64;

/// The AVX-512 pixel tiles: the widest tile 64 columns (the default) or 32, the tiles
/// of before; `EDGE_PIXEL_TILE=32` picks the latter, a switch that exists to measure
/// the difference in one build (`pointwise_speed` times both in one process).
///
/// Why 64: a 6 x 64 tile keeps 24 accumulators and issues 10 loads per 24 multiply-adds,
/// a 6 x 32 tile 8 per 12. On an Intel Xeon (Emerald Rapids) with two 512-bit
/// multiply-add units, the wide tile ran the 28x28 and 56x56 layers at 61-68 GMAC/s
/// where the narrow one ran them at 55-62 (`pointwise_speed`, warm caches, both timed
/// call by call in one process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Avx512Tiles {
    Columns64,
    Columns32,
}

impl Avx512Tiles {
    /// The engine's choice: `Columns64` unless the environment sets `EDGE_PIXEL_TILE=32`
    /// (read once).
    pub fn from_env() -> Avx512Tiles {
        static TILES: std::sync::OnceLock<Avx512Tiles> = std::sync::OnceLock::new();
        *TILES.get_or_init(|| match std::env::var_os("EDGE_PIXEL_TILE") {
            Some(v) if v == "32" => Avx512Tiles::Columns32,
            _ => Avx512Tiles::Columns64,
        })
    }

    fn widths(self) -> &'static [usize] {
        match self {
            Avx512Tiles::Columns64 => &[16, 32, AVX512_COLUMNS],
            Avx512Tiles::Columns32 => &[16, 32],
        }
    }
}

/// Columns of a path's vector tiles, narrowest first (the last is the wide tile that
/// covers most of a map); NEON also has a one-column tile.
fn tile_widths(isa: Isa, avx512: Avx512Tiles) -> &'static [usize] {
    match isa {
        Isa::Scalar => &[8],
        Isa::Neon => &[4, 8],
        Isa::Avx2Fma => &[8, 16],
        Isa::Avx512 => avx512.widths(),
    }
}

/// A 1x1 convolution's constant weights and bias, packed for the tiles.
#[derive(Clone)]
pub struct PackedPointwise {
    pub groups: usize,
    /// Output channels per group.
    pub rows: usize,
    /// Input channels per group.
    pub depth: usize,
    pub relu: bool,
    /// The row blocks of one group (the same for every group).
    blocks: Vec<BlockPlan>,
    /// Per group, per block: `[depth][height]`.
    packed: Vec<f32>,
    /// Per group, per block: [`EPILOGUE`] floats, biases first, the floor at `ROWS`.
    epilogue: Vec<f32>,
    /// Output channel `(group, row)` is written to channel `row * groups + group`: the
    /// channel shuffle that follows ShuffleNet's grouped 1x1 convolutions, done by the
    /// stores (see [`PackedPointwise::with_shuffled_output`]).
    shuffled_output: bool,
    /// The weights once more for the small-map paths, one layout per vector path this
    /// host has (AVX-512, AVX2) that can take the layer.
    #[cfg(target_arch = "x86_64")]
    channel_panels: Vec<super::pointwise_panels::ChannelPanels>,
}

/// Bit-for-bit equality (tract compares ops with `Eq`; NaN weights compare equal to
/// themselves, which is what an op identity needs).
impl PartialEq for PackedPointwise {
    fn eq(&self, other: &Self) -> bool {
        (
            self.groups,
            self.rows,
            self.depth,
            self.relu,
            self.shuffled_output,
        ) == (
            other.groups,
            other.rows,
            other.depth,
            other.relu,
            other.shuffled_output,
        ) && same_bits(&self.packed, &other.packed)
            && same_bits(&self.epilogue, &other.epilogue)
    }
}

impl Eq for PackedPointwise {}

/// Shapes only: graph dumps print ops with `Debug`, and the weights would flood them.
impl std::fmt::Debug for PackedPointwise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedPointwise")
            .field("groups", &self.groups)
            .field("rows", &self.rows)
            .field("depth", &self.depth)
            .field("relu", &self.relu)
            .field("shuffled_output", &self.shuffled_output)
            .finish_non_exhaustive()
    }
}

impl PackedPointwise {
    /// `weights` is `[groups * rows, depth]` (ONNX `[Cout, Cin / groups, 1, 1]`), `bias`
    /// `[groups * rows]`.
    ///
    /// Panics on mismatched lengths or a zero dimension (the graph rewrite checks shapes).
    pub fn new(
        weights: &[f32],
        bias: &[f32],
        groups: usize,
        rows: usize,
        depth: usize,
        relu: bool,
    ) -> PackedPointwise {
        Self::for_map(weights, bias, groups, rows, depth, relu, None)
    }

    /// [`PackedPointwise::new`] for maps of `map_pixels` pixels where known (the graph
    /// rewrite knows them): some paths lay out their weights by map size. The layer
    /// still runs on any map size.
    pub fn for_map(
        weights: &[f32],
        bias: &[f32],
        groups: usize,
        rows: usize,
        depth: usize,
        relu: bool,
        map_pixels: Option<usize>,
    ) -> PackedPointwise {
        // Only the x86 channel panels depend on the map size.
        #[cfg(not(target_arch = "x86_64"))]
        let _ = map_pixels;
        assert!(groups > 0 && rows > 0 && depth > 0);
        assert_eq!(weights.len(), groups * rows * depth);
        assert_eq!(bias.len(), groups * rows);
        let blocks = block_plan(rows);
        let group_floats = group_floats(&blocks, depth);
        let mut packed = vec![0f32; groups * group_floats];
        let mut epilogue = vec![0f32; groups * blocks.len() * EPILOGUE];
        let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
        let mut offset = 0;
        for g in 0..groups {
            for (b, plan) in blocks.iter().enumerate() {
                let height = plan.height;
                let block = &mut packed[offset..][..depth * height];
                offset += depth * height;
                let tail = &mut epilogue[(g * blocks.len() + b) * EPILOGUE..][..EPILOGUE];
                for r in 0..height.min(rows - plan.first) {
                    let m = g * rows + plan.first + r;
                    for (k, &w) in weights[m * depth..][..depth].iter().enumerate() {
                        block[k * height + r] = w;
                    }
                    tail[r] = bias[m];
                }
                tail[ROWS] = floor;
            }
        }
        PackedPointwise {
            groups,
            rows,
            depth,
            relu,
            blocks,
            packed,
            epilogue,
            shuffled_output: false,
            #[cfg(target_arch = "x86_64")]
            // Only where `suits` can pick them for some map size.
            channel_panels: [Isa::Avx512, Isa::Avx2Fma]
                .into_iter()
                .filter(|&isa| isa.is_available() && super::pointwise_panels::suits(isa, 1, depth))
                .map(|isa| {
                    super::pointwise_panels::ChannelPanels::new(
                        isa, weights, bias, groups, rows, depth, map_pixels,
                    )
                })
                .collect(),
        }
    }

    /// The same layer writing output channel `(group, row)` (channel `group * rows +
    /// row` of the plain layer) to channel `row * groups + group`: the plain layer
    /// followed by a channel shuffle of `groups` groups (reshape to `[groups, rows]`,
    /// transpose, flatten), at no cost: each output channel is a row of its own, which
    /// the tiles write `groups` rows apart. (Channels-last outputs have one group, which
    /// a shuffle leaves where it is.)
    pub fn with_shuffled_output(mut self) -> PackedPointwise {
        self.shuffled_output = true;
        self
    }

    /// Whether [`PackedPointwise::with_shuffled_output`] made this layer.
    pub fn shuffled_output(&self) -> bool {
        self.shuffled_output
    }

    /// Where group `group`'s output rows start in one image's planar output of `pixels`
    /// pixels per channel, and the floats from one row to the next.
    fn group_rows(&self, group: usize, pixels: usize) -> (usize, usize) {
        if self.shuffled_output {
            (group * pixels, self.groups * pixels)
        } else {
            (group * self.rows * pixels, pixels)
        }
    }

    /// Input channels of one image.
    pub fn input_channels(&self) -> usize {
        self.groups * self.depth
    }

    /// Output channels of one image.
    pub fn output_channels(&self) -> usize {
        self.groups * self.rows
    }

    /// Runs on `input.len() / (input_channels() * pixels)` images of `pixels` pixels each,
    /// with the fastest available path.
    pub fn run(&self, input: &[f32], pixels: usize, output: &mut [f32]) {
        self.run_with(Isa::best(), input, pixels, output)
    }

    /// Same as [`PackedPointwise::run`] with a chosen code path.
    ///
    /// Panics if the slice lengths do not match or `imp` is unavailable (callers validate
    /// shapes first; these are programming errors).
    pub fn run_with(&self, imp: Isa, input: &[f32], pixels: usize, output: &mut [f32]) {
        self.run_with_tiles(imp, Avx512Tiles::from_env(), input, pixels, output)
    }

    /// Same as [`PackedPointwise::run_with`] with a chosen set of AVX-512 pixel tiles
    /// (where `imp` is AVX-512 and the layer takes the pixel tiles).
    pub fn run_with_tiles(
        &self,
        imp: Isa,
        avx512: Avx512Tiles,
        input: &[f32],
        pixels: usize,
        output: &mut [f32],
    ) {
        assert!(imp.is_available(), "{imp:?} is not available on this CPU");
        assert!(pixels > 0);
        let image_in = self.input_channels() * pixels;
        let image_out = self.output_channels() * pixels;
        assert_eq!(input.len() % image_in, 0);
        assert_eq!(output.len(), input.len() / image_in * image_out);
        #[cfg(target_arch = "x86_64")]
        if super::pointwise_panels::suits(imp, pixels, self.depth) {
            self.run_channel_panels(imp, input, pixels, output, Layouts::default());
            return;
        }
        let widths = tile_widths(imp, avx512);
        let tiles = column_tiles(imp, widths, pixels);
        let wide = widths[widths.len() - 1];
        let per_chunk = tiles_per_chunk(imp, self.depth, wide);
        let group_floats = group_floats(&self.blocks, self.depth);
        for (x, out) in input
            .chunks_exact(image_in)
            .zip(output.chunks_exact_mut(image_out))
        {
            for g in 0..self.groups {
                let x = &x[g * self.depth * pixels..][..self.depth * pixels];
                // Shuffled, the groups' rows interleave: each group's writes stay on its
                // own rows of the image's output.
                let (first_row, row_stride) = self.group_rows(g, pixels);
                let out = &mut out[first_row..];
                let packed = &self.packed[g * group_floats..][..group_floats];
                for chunk in tiles.chunks(per_chunk) {
                    let mut offset = 0;
                    for (b, plan) in self.blocks.iter().enumerate() {
                        let height = plan.height;
                        let weights = &packed[offset..][..self.depth * height];
                        offset += self.depth * height;
                        let e = (g * self.blocks.len() + b) * EPILOGUE;
                        let block = Block {
                            weights,
                            epilogue: &self.epilogue[e..][..EPILOGUE],
                            depth: self.depth,
                            height,
                            rows: height.min(self.rows - plan.first),
                            out_stride: row_stride,
                        };
                        let out = &mut out[plan.first * row_stride..];
                        block.run(imp, x, pixels, chunk, out);
                    }
                }
            }
        }
    }
}

impl PackedPointwise {
    /// Whether [`PackedPointwise::run_layouts`] may take or give channels-last images on
    /// `imp` at `pixels` pixels: the x86 channel panels run such a layer, one group.
    pub fn channels_last_capable(&self, imp: Isa, pixels: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.groups == 1
            && imp.is_available()
            && super::pointwise_panels::suits(imp, pixels, self.depth);
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (imp, pixels);
            false
        }
    }

    /// [`PackedPointwise::run_with`] on images laid out as `layouts` says (planar ones
    /// `[channels][pixels]`, channels-last ones `[pixels][pixel_floats]`, of which only
    /// each pixel's first `channels` floats are read or written).
    ///
    /// Panics unless the layouts are planar or
    /// [`PackedPointwise::channels_last_capable`] (a programming error).
    pub fn run_layouts(
        &self,
        imp: Isa,
        input: &[f32],
        pixels: usize,
        output: &mut [f32],
        layouts: Layouts,
    ) {
        if layouts == Layouts::default() {
            return self.run_with(imp, input, pixels, output);
        }
        assert!(
            self.channels_last_capable(imp, pixels),
            "no channels-last path for this layer on {imp:?}"
        );
        let image_in = layouts.input.floats_per_pixel(self.input_channels()) * pixels;
        let image_out = layouts.output.floats_per_pixel(self.output_channels()) * pixels;
        assert!(pixels > 0 && input.len().is_multiple_of(image_in));
        assert_eq!(output.len(), input.len() / image_in * image_out);
        #[cfg(target_arch = "x86_64")]
        self.run_channel_panels(imp, input, pixels, output, layouts);
    }

    /// The channel-panel path: every image and group through `imp`'s panels.
    #[cfg(target_arch = "x86_64")]
    fn run_channel_panels(
        &self,
        imp: Isa,
        input: &[f32],
        pixels: usize,
        output: &mut [f32],
        layouts: Layouts,
    ) {
        let panels = self
            .channel_panels
            .iter()
            .find(|p| p.isa() == imp)
            .expect("panels are packed for every available vector path");
        let floor = if self.relu { 0.0 } else { f32::NEG_INFINITY };
        // The groups of every image follow each other in NCHW (channels-last layouts
        // have one group), unless the output is shuffled.
        let group_in = layouts.input.floats_per_pixel(self.depth) * pixels;
        let image_out = layouts.output.floats_per_pixel(self.output_channels()) * pixels;
        for (x, out) in input
            .chunks_exact(group_in * self.groups)
            .zip(output.chunks_exact_mut(image_out))
        {
            for (g, x) in x.chunks_exact(group_in).enumerate() {
                let (first_row, row_stride) = if layouts.output.is_channels_last() {
                    (0, 0)
                } else {
                    self.group_rows(g, pixels)
                };
                let out = &mut out[first_row..];
                // SAFETY: the panels' instruction set is available (they exist only
                // then); x is one group's exact slice, out holds its rows (planar,
                // row_stride apart) or the image (channels-last, one group).
                unsafe {
                    panels.run_group(
                        g,
                        self.rows,
                        self.depth,
                        floor,
                        x,
                        pixels,
                        (out, row_stride),
                        layouts,
                    )
                };
            }
        }
    }
}

/// Floats of one group's packed weights.
fn group_floats(blocks: &[BlockPlan], depth: usize) -> usize {
    blocks.iter().map(|b| b.height * depth).sum()
}

/// Where a block of output channels starts and how many rows its tile has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockPlan {
    first: usize,
    height: usize,
}

/// Row blocks covering `rows` output channels: tall blocks, then one or two short ones for
/// a remainder of 4 or 2, so that nothing is recomputed; other remainders end with a tall
/// block overlapping the one before (recomputing rows is cheaper than a scratch copy).
/// Fewer rows than a block: one zero-padded block.
fn block_plan(rows: usize) -> Vec<BlockPlan> {
    let block = |first, height| BlockPlan { first, height };
    if rows <= SHORT_ROWS {
        return vec![block(0, SHORT_ROWS)];
    }
    if rows < ROWS {
        return vec![block(0, ROWS)];
    }
    let (tall, short) = match rows % ROWS {
        4 => (rows / ROWS, 1),
        2 if rows >= 2 * SHORT_ROWS => (rows / ROWS - 1, 2),
        _ => (rows / ROWS, 0),
    };
    let mut plan: Vec<BlockPlan> = (0..tall).map(|b| block(b * ROWS, ROWS)).collect();
    let mut first = tall * ROWS;
    for _ in 0..short {
        plan.push(block(first, SHORT_ROWS));
        first += SHORT_ROWS;
    }
    if first < rows {
        plan.push(block(rows - ROWS, ROWS));
    }
    plan
}

/// One packed block of output channels, as the tiles see it.
struct Block<'a> {
    weights: &'a [f32],
    epilogue: &'a [f32],
    depth: usize,
    /// Rows of the tile: [`ROWS`] or [`SHORT_ROWS`].
    height: usize,
    /// Valid rows: `height`, or fewer in a zero-padded single block.
    rows: usize,
    /// Floats from one output row to the next: the pixels of a row, or more where the
    /// output is shuffled.
    out_stride: usize,
}

impl Block<'_> {
    /// The tiles of one column chunk; `x` and `out` start at column 0 of the block's
    /// input and first output row, both `pixels` wide.
    fn run(&self, imp: Isa, x: &[f32], pixels: usize, tiles: &[Tile], out: &mut [f32]) {
        // On armv7 every vector tile is NEON's.
        #[cfg(target_arch = "arm")]
        let _ = imp;
        let mut i = 0;
        while i < tiles.len() {
            let tile = tiles[i];
            // Consecutive wide tiles go to the kernel in one call.
            let mut run = 1;
            while tile.kind == TileKind::Wide
                && i + run < tiles.len()
                && tiles[i + run].kind == TileKind::Wide
                && tiles[i + run].start == tile.start + run * tile.cols
            {
                run += 1;
            }
            i += run;
            match tile.kind {
                TileKind::Scalar => {
                    let out = &mut out[tile.start..];
                    scalar_tile(self, &x[tile.start..], pixels, tile.cols, out);
                }
                #[cfg(target_arch = "x86_64")]
                _ if imp.avx2() => self.x86_tiles(imp, x, pixels, tile, run, out),
                #[cfg(target_arch = "arm")]
                _ => self.neon_tiles(x, pixels, tile, run, out),
                #[cfg(not(target_arch = "arm"))]
                _ => unreachable!("{imp:?} has no vector tiles"),
            }
        }
    }

    /// `count` tiles of `tile.cols` columns from `tile.start`, on AVX2 or AVX-512 (`imp`);
    /// a block of fewer than `height` rows goes through a scratch tile.
    #[cfg(target_arch = "x86_64")]
    fn x86_tiles(
        &self,
        imp: Isa,
        x: &[f32],
        pixels: usize,
        tile: Tile,
        count: usize,
        out: &mut [f32],
    ) {
        let cols = tile.cols;
        let end = tile.start + count * cols;
        assert!(end <= pixels && x.len() >= (self.depth - 1) * pixels + end);
        let kernel = match (imp, self.height, cols) {
            (Isa::Avx512, ROWS, 64) => avx512::tile::<ROWS, 4>,
            (Isa::Avx512, ROWS, 32) => avx512::tile::<ROWS, 2>,
            (Isa::Avx512, ROWS, _) => avx512::tile::<ROWS, 1>,
            (Isa::Avx512, _, 64) => avx512::tile::<SHORT_ROWS, 4>,
            (Isa::Avx512, _, 32) => avx512::tile::<SHORT_ROWS, 2>,
            (Isa::Avx512, _, _) => avx512::tile::<SHORT_ROWS, 1>,
            (_, ROWS, 16) => avx2::tile::<ROWS, 2>,
            (_, ROWS, _) => avx2::tile::<ROWS, 1>,
            (_, _, 16) => avx2::tile::<SHORT_ROWS, 2>,
            _ => avx2::tile::<SHORT_ROWS, 1>,
        };
        let direct = self.rows == self.height;
        if direct {
            assert!(out.len() >= (self.height - 1) * self.out_stride + end);
        }
        // Only a partial block writes here; one per call, not per tile.
        let mut scratch = [0f32; ROWS * AVX512_COLUMNS];
        for t in 0..count {
            let start = tile.start + t * cols;
            let (dst, dst_stride) = if direct {
                // SAFETY: start + cols <= end, inside out (asserted).
                (unsafe { out.as_mut_ptr().add(start) }, self.out_stride)
            } else {
                (scratch.as_mut_ptr(), cols)
            };
            // SAFETY: AVX2 and FMA, or AVX-512F, are available (imp); the tile reads `cols` floats of
            // each of depth rows of x from `start` (asserted) and the weight block
            // (depth * height floats) and epilogue, and writes height rows of `cols`
            // floats at dst, dst_stride apart (asserted, or the scratch tile).
            unsafe {
                let x = x.as_ptr().add(start);
                kernel(
                    self.weights.as_ptr(),
                    self.depth,
                    self.epilogue.as_ptr(),
                    x,
                    pixels,
                    dst,
                    dst_stride,
                );
            }
            if !direct {
                for r in 0..self.rows {
                    out[r * self.out_stride + start..][..cols]
                        .copy_from_slice(&scratch[r * cols..][..cols]);
                }
            }
        }
    }

    /// `count` tiles of `tile.kind` from `tile.start`, 8 columns apart; a block of fewer
    /// than `ROWS` rows goes through a scratch tile, one tile at a time.
    #[cfg(target_arch = "arm")]
    fn neon_tiles(&self, x: &[f32], pixels: usize, tile: Tile, count: usize, out: &mut [f32]) {
        let cols = tile.cols;
        let end = tile.start + (count - 1) * 8 + cols;
        // x holds depth rows of `pixels`; the tiles read columns start..end of each.
        assert!(end <= pixels && x.len() >= (self.depth - 1) * pixels + end);
        let args = |out_stride: usize| neon::GemmArgs {
            weights: self.weights.as_ptr(),
            depth: self.depth,
            epilogue: self.epilogue.as_ptr(),
            x_stride: pixels * 4,
            out_stride: out_stride * 4,
        };
        let kernel = match (self.height, tile.kind) {
            (ROWS, TileKind::Wide) => neon::tiles_6x8,
            (ROWS, TileKind::Half) => neon::tiles_6x4,
            (ROWS, _) => neon::tiles_6x1,
            (_, TileKind::Wide) => neon::tiles_4x8,
            (_, TileKind::Half) => neon::tiles_4x4,
            _ => neon::tiles_4x1,
        };
        if self.rows == self.height {
            assert!(out.len() >= (self.height - 1) * self.out_stride + end);
            // SAFETY: the reads stay inside x and the writes (height rows of columns
            // start..end, `out_stride` apart) inside out, both asserted above; the weight
            // block holds depth * height floats and the epilogue EPILOGUE.
            unsafe {
                let x = x.as_ptr().add(tile.start);
                let dst = out.as_mut_ptr().add(tile.start);
                kernel(&args(self.out_stride), x, dst, count);
            }
            return;
        }
        for t in 0..count {
            let start = tile.start + t * 8;
            let mut scratch = [0f32; ROWS * 8];
            // SAFETY: reads as above; writes at most ROWS rows of at most 8 floats, 8 apart.
            unsafe { kernel(&args(8), x.as_ptr().add(start), scratch.as_mut_ptr(), 1) };
            for r in 0..self.rows {
                out[r * self.out_stride + start..][..cols]
                    .copy_from_slice(&scratch[r * 8..][..cols]);
            }
        }
    }
}

/// A run of output columns one tile computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    start: usize,
    cols: usize,
    kind: TileKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TileKind {
    /// The path's widest tile (8 columns on NEON, 16 on AVX2, 64 or 32 on AVX-512).
    Wide,
    /// A narrower vector tile (4 columns on NEON, 8 on AVX2, 16 or 32 on AVX-512).
    Half,
    /// One column: the weights as vectors, the pixel as the scalar (NEON).
    Single,
    /// Plain Rust.
    Scalar,
}

/// Column tiles of `widths` (see [`tile_widths`]) covering `0..pixels`: wide tiles, then
/// the rest with as little recomputed as the tile shapes allow, overlapping backwards
/// rather than running past the last pixel: one column takes a single tile where there
/// is one, a longer rest the narrowest tile that covers it (or, on a map narrower than
/// that, the widest that fits). Maps narrower than every vector tile on paths without
/// single tiles, and paths without vectors, take scalar tiles of up to 8.
fn column_tiles(imp: Isa, widths: &[usize], pixels: usize) -> Vec<Tile> {
    let tile = |start, cols, kind| Tile { start, cols, kind };
    let single = imp == Isa::Neon;
    let (narrowest, wide) = (widths[0], widths[widths.len() - 1]);
    if imp == Isa::Scalar || (!single && pixels < narrowest) {
        return (0..pixels)
            .step_by(8)
            .map(|start| tile(start, 8.min(pixels - start), TileKind::Scalar))
            .collect();
    }
    let mut tiles: Vec<Tile> = (0..pixels / wide)
        .map(|t| tile(t * wide, wide, TileKind::Wide))
        .collect();
    let mut covered = pixels / wide * wide;
    while covered < pixels {
        let rest = pixels - covered;
        let cols = if single && (rest == 1 || pixels < narrowest) {
            1
        } else {
            let mut fitting = widths.iter().copied().filter(|&w| w <= pixels);
            let widest = fitting.clone().next_back().unwrap_or(narrowest);
            fitting.find(|&w| w >= rest).unwrap_or(widest)
        };
        let kind = match cols {
            1 => TileKind::Single,
            c if c == wide => TileKind::Wide,
            _ => TileKind::Half,
        };
        let start = (covered + cols).min(pixels) - cols;
        tiles.push(tile(start, cols, kind));
        covered = start + cols;
    }
    tiles
}

/// The tile in plain Rust: the block's rows by `cols` pixels; `x` and `out` start at the
/// tile's first column, rows `pixels` and `block.out_stride` apart.
fn scalar_tile(block: &Block, x: &[f32], pixels: usize, cols: usize, out: &mut [f32]) {
    let floor = block.epilogue[ROWS];
    for r in 0..block.rows {
        for c in 0..cols {
            let mut acc = block.epilogue[r];
            for k in 0..block.depth {
                acc += block.weights[k * block.height + r] * x[k * pixels + c];
            }
            out[r * block.out_stride + c] = acc.max(floor);
        }
    }
}

/// The x86 pixel tile, for one vector width: `H` rows by `V` vectors of `$lanes`
/// pixels; the accumulators and the `x` vectors stay in registers, each step of `k`
/// broadcasts the `H` weights in turn. A macro rather than a generic function over a
/// vector trait: stable Rust cannot force `target_feature` functions inline, which would
/// leave a call behind every multiply-add.
#[cfg(target_arch = "x86_64")]
macro_rules! pixel_tile {
    ($feature:literal, $vector:ty, $lanes:literal, $load:ident, $set1:ident, $fmadd:ident,
     $max:ident, $store:ident) => {
        /// One tile of `H` rows by `V` vectors.
        ///
        /// # Safety
        #[doc = concat!("`", $feature, "` available; `x` readable for `", stringify!($lanes),
            " V` floats in each of `depth` rows `x_stride` floats apart, `w` for `depth * H`, ",
            "`epilogue` for `ROWS + 1`; `out` writable for `H` rows of `", stringify!($lanes),
            " V` floats `out_stride` apart.")]
        #[target_feature(enable = $feature)]
        pub unsafe fn tile<const H: usize, const V: usize>(
            w: *const f32,
            depth: usize,
            epilogue: *const f32,
            x: *const f32,
            x_stride: usize,
            out: *mut f32,
            out_stride: usize,
        ) {
            let mut acc: [[$vector; V]; H] = std::array::from_fn(|r| [$set1(*epilogue.add(r)); V]);
            let (mut xp, mut wp) = (x, w);
            for _ in 0..depth {
                let xv: [$vector; V] = std::array::from_fn(|v| $load(xp.add($lanes * v)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let wr = $set1(*wp.add(r));
                    for (a, &xv) in row.iter_mut().zip(&xv) {
                        *a = $fmadd(xv, wr, *a);
                    }
                }
                xp = xp.add(x_stride);
                wp = wp.add(H);
            }
            let floor = $set1(*epilogue.add(super::ROWS));
            for (r, row) in acc.iter().enumerate() {
                for (v, &a) in row.iter().enumerate() {
                    $store(out.add(r * out_stride + $lanes * v), $max(a, floor));
                }
            }
        }
    };
}

/// 8-pixel vectors (12 accumulators at most, in the 16 ymm registers).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    pixel_tile!(
        "avx2,fma",
        __m256,
        8,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_max_ps,
        _mm256_storeu_ps
    );
}

/// 16-pixel vectors: on Zen 4, whose AVX-512 multiply-adds take two cycles on each of
/// two 256-bit pipes, the same work in half the loads, broadcasts and instructions.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    pixel_tile!(
        "avx512f",
        __m512,
        16,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_max_ps,
        _mm512_storeu_ps
    );
}

#[cfg(target_arch = "arm")]
mod neon {
    //! Registers: q4-q15 accumulators (row r in q(4+2r), q(5+2r)), q0/q1 the `x`
    //! segment, d4-d6 the six weights of one `k`. The tile loop is in the assembly too:
    //! on small layers the per-call work would otherwise cost as much as the arithmetic.

    /// Read by the assembly at fixed offsets.
    #[repr(C)]
    pub struct GemmArgs {
        /// The packed `[depth][height]` weight block (height 6 or 4, the kernel's rows).
        pub weights: *const f32,
        pub depth: usize,
        /// The biases, then the floor at index 6.
        pub epilogue: *const f32,
        /// Bytes between rows of `x`.
        pub x_stride: usize,
        /// Bytes between output rows.
        pub out_stride: usize,
    }

    /// Expands to the tile loop around `$step` (one `k`) with `$init`, `$finish` and the
    /// stores; `$bytes` is how far the next tile starts, in `x` and in the output.
    macro_rules! tile_loop {
        ($name:ident, $step:expr, $init:expr, $finish:expr, $store:expr, $bytes:literal, [$($reg:tt),*]) => {
            /// `count` tiles, each `$bytes` bytes after the previous one in `x` and `out`.
            ///
            /// # Safety
            /// `x` readable for the tiles' columns in each of `depth` rows `x_stride`
            /// bytes apart, `out` writable likewise for the tile's rows, `out_stride`
            /// bytes apart; the weight block for `depth` times the tile's rows floats, the
            /// epilogue for 8; `depth >= 1`, `count >= 1`.
            pub unsafe fn $name(args: &GemmArgs, x: *const f32, out: *mut f32, count: usize) {
                core::arch::asm!(
                    "1:",
                    "ldr {t}, [{p}, #8]",
                    $init,
                    "ldr {wa}, [{p}]",
                    "ldr {ka}, [{p}, #4]",
                    "mov {xa}, {x}",
                    // depth = 4q + r: r single steps, then q unrolled by four.
                    "tst {ka}, #1",
                    "beq 2f",
                    $step,
                    "2:",
                    "tst {ka}, #2",
                    "beq 3f",
                    $step,
                    $step,
                    "3:",
                    "lsrs {ka}, {ka}, #2",
                    "beq 5f",
                    "4:",
                    $step,
                    $step,
                    $step,
                    $step,
                    "subs {ka}, {ka}, #1",
                    "bne 4b",
                    "5:",
                    "ldr {t}, [{p}, #8]",
                    "add {t}, {t}, #24",
                    "vld1.32 {{d0[], d1[]}}, [{t}]",
                    $finish,
                    "ldr {ka}, [{p}, #16]",
                    "mov {xa}, {o}",
                    $store,
                    concat!("add {x}, {x}, #", $bytes),
                    concat!("add {o}, {o}, #", $bytes),
                    "subs {n}, {n}, #1",
                    "bne 1b",
                    p = in(reg) args as *const GemmArgs,
                    x = inout(reg) x => _,
                    o = inout(reg) out => _,
                    n = inout(reg) count => _,
                    xs = in(reg) args.x_stride,
                    xa = out(reg) _,
                    wa = out(reg) _,
                    ka = out(reg) _,
                    t = out(reg) _,
                    $(out($reg) _,)*
                    options(nostack),
                );
            }
        };
    }

    tile_loop!(
        tiles_6x8,
        concat!(
            "vld1.32 {{d0-d3}}, [{xa}], {xs}\n",
            "vld1.32 {{d4-d6}}, [{wa}]!\n",
            "vmla.f32 q4, q0, d4[0]\n",
            "vmla.f32 q5, q1, d4[0]\n",
            "vmla.f32 q6, q0, d4[1]\n",
            "vmla.f32 q7, q1, d4[1]\n",
            "vmla.f32 q8, q0, d5[0]\n",
            "vmla.f32 q9, q1, d5[0]\n",
            "vmla.f32 q10, q0, d5[1]\n",
            "vmla.f32 q11, q1, d5[1]\n",
            "vmla.f32 q12, q0, d6[0]\n",
            "vmla.f32 q13, q1, d6[0]\n",
            "vmla.f32 q14, q0, d6[1]\n",
            "vmla.f32 q15, q1, d6[1]\n",
        ),
        concat!(
            "vld1.32 {{d0-d2}}, [{t}]\n",
            "vdup.32 q4, d0[0]\n",
            "vdup.32 q5, d0[0]\n",
            "vdup.32 q6, d0[1]\n",
            "vdup.32 q7, d0[1]\n",
            "vdup.32 q8, d1[0]\n",
            "vdup.32 q9, d1[0]\n",
            "vdup.32 q10, d1[1]\n",
            "vdup.32 q11, d1[1]\n",
            "vdup.32 q12, d2[0]\n",
            "vdup.32 q13, d2[0]\n",
            "vdup.32 q14, d2[1]\n",
            "vdup.32 q15, d2[1]\n",
        ),
        concat!(
            "vmax.f32 q4, q4, q0\n",
            "vmax.f32 q5, q5, q0\n",
            "vmax.f32 q6, q6, q0\n",
            "vmax.f32 q7, q7, q0\n",
            "vmax.f32 q8, q8, q0\n",
            "vmax.f32 q9, q9, q0\n",
            "vmax.f32 q10, q10, q0\n",
            "vmax.f32 q11, q11, q0\n",
            "vmax.f32 q12, q12, q0\n",
            "vmax.f32 q13, q13, q0\n",
            "vmax.f32 q14, q14, q0\n",
            "vmax.f32 q15, q15, q0\n",
        ),
        concat!(
            "vst1.32 {{d8-d11}}, [{xa}], {ka}\n",
            "vst1.32 {{d12-d15}}, [{xa}], {ka}\n",
            "vst1.32 {{d16-d19}}, [{xa}], {ka}\n",
            "vst1.32 {{d20-d23}}, [{xa}], {ka}\n",
            "vst1.32 {{d24-d27}}, [{xa}], {ka}\n",
            "vst1.32 {{d28-d31}}, [{xa}], {ka}\n",
        ),
        "32",
        [
            "q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9", "q10", "q11", "q12", "q13",
            "q14", "q15"
        ]
    );

    tile_loop!(
        tiles_6x4,
        concat!(
            "vld1.32 {{d0-d1}}, [{xa}], {xs}\n",
            "vld1.32 {{d4-d6}}, [{wa}]!\n",
            "vmla.f32 q4, q0, d4[0]\n",
            "vmla.f32 q6, q0, d4[1]\n",
            "vmla.f32 q8, q0, d5[0]\n",
            "vmla.f32 q10, q0, d5[1]\n",
            "vmla.f32 q12, q0, d6[0]\n",
            "vmla.f32 q14, q0, d6[1]\n",
        ),
        concat!(
            "vld1.32 {{d0-d2}}, [{t}]\n",
            "vdup.32 q4, d0[0]\n",
            "vdup.32 q6, d0[1]\n",
            "vdup.32 q8, d1[0]\n",
            "vdup.32 q10, d1[1]\n",
            "vdup.32 q12, d2[0]\n",
            "vdup.32 q14, d2[1]\n",
        ),
        concat!(
            "vmax.f32 q4, q4, q0\n",
            "vmax.f32 q6, q6, q0\n",
            "vmax.f32 q8, q8, q0\n",
            "vmax.f32 q10, q10, q0\n",
            "vmax.f32 q12, q12, q0\n",
            "vmax.f32 q14, q14, q0\n",
        ),
        concat!(
            "vst1.32 {{d8-d9}}, [{xa}], {ka}\n",
            "vst1.32 {{d12-d13}}, [{xa}], {ka}\n",
            "vst1.32 {{d16-d17}}, [{xa}], {ka}\n",
            "vst1.32 {{d20-d21}}, [{xa}], {ka}\n",
            "vst1.32 {{d24-d25}}, [{xa}], {ka}\n",
            "vst1.32 {{d28-d29}}, [{xa}], {ka}\n",
        ),
        "16",
        ["q0", "q1", "q2", "q3", "q4", "q6", "q8", "q10", "q12", "q14"]
    );

    // One pixel: the six weights are the vectors (rows 0-3 in q4, rows 4-5 in d10) and
    // the pixel the scalar, 4 instructions per `k` where a half tile takes 8.
    tile_loop!(
        tiles_6x1,
        concat!(
            "vld1.32 {{d0[0]}}, [{xa}], {xs}\n",
            "vld1.32 {{d4-d6}}, [{wa}]!\n",
            "vmla.f32 q4, q2, d0[0]\n",
            "vmla.f32 d10, d6, d0[0]\n",
        ),
        "vld1.32 {{d8-d10}}, [{t}]\n",
        concat!("vmax.f32 q4, q4, q0\n", "vmax.f32 d10, d10, d0\n",),
        concat!(
            "vst1.32 {{d8[0]}}, [{xa}], {ka}\n",
            "vst1.32 {{d8[1]}}, [{xa}], {ka}\n",
            "vst1.32 {{d9[0]}}, [{xa}], {ka}\n",
            "vst1.32 {{d9[1]}}, [{xa}], {ka}\n",
            "vst1.32 {{d10[0]}}, [{xa}], {ka}\n",
            "vst1.32 {{d10[1]}}, [{xa}], {ka}\n",
        ),
        "4",
        ["q0", "q1", "q2", "q3", "q4", "q5"]
    );

    tile_loop!(
        tiles_4x8,
        concat!(
            "vld1.32 {{d0-d3}}, [{xa}], {xs}\n",
            "vld1.32 {{d4-d5}}, [{wa}]!\n",
            "vmla.f32 q4, q0, d4[0]\n",
            "vmla.f32 q5, q1, d4[0]\n",
            "vmla.f32 q6, q0, d4[1]\n",
            "vmla.f32 q7, q1, d4[1]\n",
            "vmla.f32 q8, q0, d5[0]\n",
            "vmla.f32 q9, q1, d5[0]\n",
            "vmla.f32 q10, q0, d5[1]\n",
            "vmla.f32 q11, q1, d5[1]\n",
        ),
        concat!(
            "vld1.32 {{d0-d1}}, [{t}]\n",
            "vdup.32 q4, d0[0]\n",
            "vdup.32 q5, d0[0]\n",
            "vdup.32 q6, d0[1]\n",
            "vdup.32 q7, d0[1]\n",
            "vdup.32 q8, d1[0]\n",
            "vdup.32 q9, d1[0]\n",
            "vdup.32 q10, d1[1]\n",
            "vdup.32 q11, d1[1]\n",
        ),
        concat!(
            "vmax.f32 q4, q4, q0\n",
            "vmax.f32 q5, q5, q0\n",
            "vmax.f32 q6, q6, q0\n",
            "vmax.f32 q7, q7, q0\n",
            "vmax.f32 q8, q8, q0\n",
            "vmax.f32 q9, q9, q0\n",
            "vmax.f32 q10, q10, q0\n",
            "vmax.f32 q11, q11, q0\n",
        ),
        concat!(
            "vst1.32 {{d8-d11}}, [{xa}], {ka}\n",
            "vst1.32 {{d12-d15}}, [{xa}], {ka}\n",
            "vst1.32 {{d16-d19}}, [{xa}], {ka}\n",
            "vst1.32 {{d20-d23}}, [{xa}], {ka}\n",
        ),
        "32",
        ["q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9", "q10", "q11"]
    );

    tile_loop!(
        tiles_4x4,
        concat!(
            "vld1.32 {{d0-d1}}, [{xa}], {xs}\n",
            "vld1.32 {{d4-d5}}, [{wa}]!\n",
            "vmla.f32 q4, q0, d4[0]\n",
            "vmla.f32 q6, q0, d4[1]\n",
            "vmla.f32 q8, q0, d5[0]\n",
            "vmla.f32 q10, q0, d5[1]\n",
        ),
        concat!(
            "vld1.32 {{d0-d1}}, [{t}]\n",
            "vdup.32 q4, d0[0]\n",
            "vdup.32 q6, d0[1]\n",
            "vdup.32 q8, d1[0]\n",
            "vdup.32 q10, d1[1]\n",
        ),
        concat!(
            "vmax.f32 q4, q4, q0\n",
            "vmax.f32 q6, q6, q0\n",
            "vmax.f32 q8, q8, q0\n",
            "vmax.f32 q10, q10, q0\n",
        ),
        concat!(
            "vst1.32 {{d8-d9}}, [{xa}], {ka}\n",
            "vst1.32 {{d12-d13}}, [{xa}], {ka}\n",
            "vst1.32 {{d16-d17}}, [{xa}], {ka}\n",
            "vst1.32 {{d20-d21}}, [{xa}], {ka}\n",
        ),
        "16",
        ["q0", "q1", "q2", "q3", "q4", "q6", "q8", "q10"]
    );

    tile_loop!(
        tiles_4x1,
        concat!(
            "vld1.32 {{d0[0]}}, [{xa}], {xs}\n",
            "vld1.32 {{d4-d5}}, [{wa}]!\n",
            "vmla.f32 q4, q2, d0[0]\n",
        ),
        "vld1.32 {{d8-d9}}, [{t}]\n",
        "vmax.f32 q4, q4, q0\n",
        concat!(
            "vst1.32 {{d8[0]}}, [{xa}], {ka}\n",
            "vst1.32 {{d8[1]}}, [{xa}], {ka}\n",
            "vst1.32 {{d9[0]}}, [{xa}], {ka}\n",
            "vst1.32 {{d9[1]}}, [{xa}], {ka}\n",
        ),
        "4",
        ["q0", "q1", "q2", "q3", "q4"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{test_channels_last_padded, test_pattern};
    use crate::kernels::layout::Layout;

    /// Straight from the definition, in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        weights: &[f32],
        bias: &[f32],
        groups: usize,
        rows: usize,
        depth: usize,
        relu: bool,
        input: &[f32],
        pixels: usize,
    ) -> Vec<f32> {
        let images = input.len() / (groups * depth * pixels);
        let mut out = Vec::new();
        for i in 0..images {
            let x = &input[i * groups * depth * pixels..];
            for g in 0..groups {
                for r in 0..rows {
                    let m = g * rows + r;
                    for p in 0..pixels {
                        let mut acc = bias[m] as f64;
                        for k in 0..depth {
                            acc += weights[m * depth + k] as f64
                                * x[(g * depth + k) * pixels + p] as f64;
                        }
                        let v = acc as f32;
                        out.push(if relu { v.max(0.0) } else { v });
                    }
                }
            }
        }
        out
    }

    /// The plain layer's output from a shuffled one's: channel `row * groups + group`
    /// back to `group * rows + row`, image by image.
    fn unshuffle(shuffled: &[f32], groups: usize, rows: usize, pixels: usize) -> Vec<f32> {
        let mut plain = vec![f32::NAN; shuffled.len()];
        let image = groups * rows * pixels;
        for (from, to) in shuffled
            .chunks_exact(image)
            .zip(plain.chunks_exact_mut(image))
        {
            for g in 0..groups {
                for r in 0..rows {
                    to[(g * rows + r) * pixels..][..pixels]
                        .copy_from_slice(&from[(r * groups + g) * pixels..][..pixels]);
                }
            }
        }
        plain
    }

    fn check(groups: usize, rows: usize, depth: usize, pixels: usize, images: usize) {
        check_packed(groups, rows, depth, pixels, images, None);
        // Packed for the map it runs on: the AVX-512 panels widen on maps larger than
        // 64 pixels (the only difference the map size makes).
        if cfg!(target_arch = "x86_64") && pixels > 64 {
            check_packed(groups, rows, depth, pixels, images, Some(pixels));
        }
    }

    fn check_packed(
        groups: usize,
        rows: usize,
        depth: usize,
        pixels: usize,
        images: usize,
        map: Option<usize>,
    ) {
        for relu in [false, true] {
            let weights = test_pattern(groups * rows * depth, 7 + depth as u32);
            let bias = test_pattern(groups * rows, 3);
            let input = test_pattern(images * groups * depth * pixels, 1 + pixels as u32);
            let expected = reference(&weights, &bias, groups, rows, depth, relu, &input, pixels);
            let packed = PackedPointwise::for_map(&weights, &bias, groups, rows, depth, relu, map);
            for imp in Isa::ALL {
                if !imp.is_available() {
                    continue;
                }
                let assert_close = |got: &[f32], tiles: &str| {
                    for (i, (e, a)) in expected.iter().zip(got).enumerate() {
                        assert!(
                            (e - a).abs() <= 1e-5 * (1.0 + e.abs()) * (depth as f32).sqrt(),
                            "{imp:?}{tiles} g{groups} m{rows} k{depth} n{pixels} map {map:?} relu {relu} at {i}: {a} != {e}"
                        );
                    }
                };
                let mut got = vec![f32::NAN; expected.len()];
                packed.run_with(imp, &input, pixels, &mut got);
                assert_close(&got, "");
                if groups > 1 {
                    // Shuffled: each output channel where the channel shuffle puts it.
                    let shuffled = packed.clone().with_shuffled_output();
                    let mut got = vec![f32::NAN; expected.len()];
                    shuffled.run_with(imp, &input, pixels, &mut got);
                    let unshuffled = unshuffle(&got, groups, rows, pixels);
                    assert_close(&unshuffled, " shuffled");
                }
                // The other set of AVX-512 tiles too, whatever the environment picked.
                if imp == Isa::Avx512 {
                    let tile_sets = [Avx512Tiles::Columns64, Avx512Tiles::Columns32];
                    for tiles in tile_sets
                        .into_iter()
                        .filter(|&t| t != Avx512Tiles::from_env())
                    {
                        let mut got = vec![f32::NAN; expected.len()];
                        packed.run_with_tiles(imp, tiles, &input, pixels, &mut got);
                        assert_close(&got, &format!(" {tiles:?}"));
                    }
                }
                if !packed.channels_last_capable(imp, pixels) {
                    continue;
                }
                // Where the panels run the layer: every mix of planar and channels-last.
                for layouts in channels_last_mixes(depth, rows) {
                    let pick = |layout, planar: &[f32], channels| match layout {
                        Layout::Planar => planar.to_vec(),
                        Layout::ChannelsLast { pixel_floats } => {
                            test_channels_last_padded(planar, channels, pixels, pixel_floats)
                        }
                    };
                    let x = pick(layouts.input, &input, depth);
                    let want = pick(layouts.output, &expected, rows);
                    let mut got = vec![f32::NAN; want.len()];
                    packed.run_layouts(imp, &x, pixels, &mut got, layouts);
                    for (i, (e, a)) in want.iter().zip(&got).enumerate() {
                        // The padding stays NaN, unwritten.
                        let close = (e - a).abs() <= 1e-5 * (1.0 + e.abs()) * (depth as f32).sqrt();
                        assert!(
                            close || (e.is_nan() && a.is_nan()),
                            "{imp:?} {layouts:?} m{rows} k{depth} n{pixels} map {map:?} relu {relu} at {i}: {a} != {e}"
                        );
                    }
                }
            }
        }
    }

    /// The layouts other than planar to planar: channels-last dense, and padded (by a
    /// line, and by an odd 3 floats) on either side.
    fn channels_last_mixes(depth: usize, rows: usize) -> [Layouts; 6] {
        let p = Layout::Planar;
        let last = |channels: usize, pad: usize| Layout::ChannelsLast {
            pixel_floats: channels + pad,
        };
        let (x, y) = (last(depth, 0), last(rows, 0));
        [
            (p, y),
            (x, p),
            (x, y),
            (last(depth, 16), last(rows, 3)),
            (last(depth, 3), p),
            (p, last(rows, 16)),
        ]
        .map(|(input, output)| Layouts { input, output })
    }

    #[test]
    fn channels_last_needs_the_panels() {
        let layer = PackedPointwise::new(&[1.0; 6], &[0.0; 3], 1, 3, 2, false);
        // Large maps of shallow layers take the pixel tiles; grouped layers stay planar.
        assert!(!layer.channels_last_capable(Isa::best(), 3136));
        let grouped = PackedPointwise::new(&[1.0; 3 * 4 * 128], &[0.0; 12], 3, 4, 128, false);
        assert!(!grouped.channels_last_capable(Isa::best(), 49));
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2Fma.is_available() {
            // Depth 2: below the AVX2 panels' depth even on a 7x7 map.
            assert!(!layer.channels_last_capable(Isa::Avx2Fma, 49));
            let deep = PackedPointwise::new(&[1.0; 3 * 256], &[0.0; 3], 1, 3, 256, false);
            assert!(deep.channels_last_capable(Isa::Avx2Fma, 49));
            assert!(deep.channels_last_capable(Isa::Avx2Fma, 196));
        }
        #[cfg(not(target_arch = "x86_64"))]
        assert!(!layer.channels_last_capable(Isa::best(), 49));
    }

    #[test]
    fn awkward_sizes_match_reference() {
        // Output channels off the 6-row block, depths odd and even, maps of 1, 2 (2x1),
        // 4 (2x2), 7, 9, 12, 49 (7x7) and 196 (14x14) pixels for every tail case, and
        // 80, 90, 97, 130 and 250 for the tails of AVX-512's 64- and 32-pixel tiles (16,
        // 32 and 64 pixels, some overlapping backwards).
        for &rows in &[1, 2, 4, 5, 6, 7, 8, 10, 13, 14, 16] {
            for &depth in &[1, 2, 3, 6, 8, 17] {
                for &pixels in &[
                    1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 49, 80, 90, 97, 130, 196, 250,
                ] {
                    check(1, rows, depth, pixels, 1);
                }
            }
        }
    }

    #[test]
    fn column_tiles_cover_every_pixel_with_the_narrowest_rest_tile() {
        let avx512 = Avx512Tiles::Columns64.widths();
        let narrow = Avx512Tiles::Columns32.widths();
        let widths = |imp| tile_widths(imp, Avx512Tiles::Columns64);
        let cols = |imp, widths, pixels| -> Vec<usize> {
            column_tiles(imp, widths, pixels)
                .iter()
                .map(|t| t.cols)
                .collect()
        };
        // The maps of the nine networks and some awkward ones.
        assert_eq!(cols(Isa::Avx512, avx512, 196), [64, 64, 64, 16]);
        assert_eq!(cols(Isa::Avx512, avx512, 90), [64, 32]);
        assert_eq!(cols(Isa::Avx512, avx512, 97), [64, 64]);
        assert_eq!(cols(Isa::Avx512, avx512, 40), [32, 16]);
        assert_eq!(
            cols(Isa::Avx512, narrow, 196),
            [32; 6].iter().chain(&[16]).copied().collect::<Vec<_>>()
        );
        assert_eq!(
            cols(Isa::Avx2Fma, widths(Isa::Avx2Fma), 49),
            [16, 16, 16, 8]
        );
        let neon = widths(Isa::Neon);
        assert_eq!(cols(Isa::Neon, neon, 49), [8, 8, 8, 8, 8, 8, 1]);
        assert_eq!(cols(Isa::Neon, neon, 7), [4, 4]);
        assert_eq!(cols(Isa::Neon, neon, 3), [1, 1, 1]);
        for (imp, widths) in [
            (Isa::Avx512, avx512),
            (Isa::Avx512, narrow),
            (Isa::Avx2Fma, widths(Isa::Avx2Fma)),
            (Isa::Neon, neon),
            (Isa::Scalar, widths(Isa::Scalar)),
        ] {
            for pixels in 1..=300 {
                let tiles = column_tiles(imp, widths, pixels);
                let mut covered = vec![0; pixels];
                for t in &tiles {
                    covered[t.start..t.start + t.cols]
                        .iter_mut()
                        .for_each(|c| *c += 1);
                }
                assert!(
                    covered.iter().all(|&c| c >= 1),
                    "{imp:?} {pixels}: {tiles:?}"
                );
                // In order, each reaching past the one before: only the tile that
                // reaches the last pixel may start before the previous one ended.
                for pair in tiles.windows(2) {
                    let (before, after) = (pair[0], pair[1]);
                    let end = before.start + before.cols;
                    assert!(
                        after.start + after.cols > end,
                        "{imp:?} {pixels}: {tiles:?}"
                    );
                    assert!(after.start == end || after.start + after.cols == pixels);
                }
            }
        }
    }

    #[test]
    fn row_blocks_cover_every_channel_and_recompute_none_when_even() {
        for rows in 1..=64 {
            let plan = block_plan(rows);
            let mut covered = vec![0; rows];
            for b in &plan {
                assert!(b.height == ROWS || b.height == SHORT_ROWS);
                let end = (b.first + b.height).min(rows);
                covered[b.first..end].iter_mut().for_each(|c| *c += 1);
            }
            assert!(covered.iter().all(|&c| c >= 1), "{rows}: {plan:?}");
            if rows % 2 == 0 && rows >= SHORT_ROWS {
                assert!(covered.iter().all(|&c| c == 1), "{rows}: {plan:?}");
                assert_eq!(plan.iter().map(|b| b.height).sum::<usize>(), rows);
            }
        }
    }

    #[test]
    fn groups_and_batches_use_their_own_weights() {
        // Each also shuffled (`check_packed`): blocks of fewer rows than a tile (5, 7)
        // go through the scratch tile, whole ones (6, 20) store straight to rows that
        // lie `groups` rows apart.
        check(3, 5, 4, 49, 2);
        check(3, 20, 20, 14 * 14, 1);
        check(2, 6, 9, 3, 3);
        check(3, 7, 6, 250, 1);
        check(4, 10, 3, 1, 2);
    }

    #[test]
    fn only_the_shuffle_flag_tells_shuffled_layers_apart() {
        let plain = PackedPointwise::new(&[0.5; 3 * 4 * 2], &[0.0; 12], 3, 4, 2, true);
        let shuffled = plain.clone().with_shuffled_output();
        assert!(shuffled.shuffled_output() && !plain.shuffled_output());
        assert_ne!(plain, shuffled);
        assert_eq!(shuffled, plain.clone().with_shuffled_output());
    }

    #[test]
    fn channel_panels_cover_awkward_channel_counts() {
        // The AVX-512 channel panels (where the CPU has it): channels across 16-lane
        // vectors and 48-channel panels, pixels across 7-pixel tiles, and a deep layer
        // on a map larger than 64 pixels, which also takes this path.
        for &rows in &[17, 33, 47, 48, 49, 64, 100] {
            for &depth in &[1, 5, 64] {
                for &pixels in &[1, 6, 7, 8, 13, 14, 49, 64] {
                    check(1, rows, depth, pixels, 1);
                }
            }
        }
        check(1, 50, 384, 196, 1);
        check(3, 20, 9, 49, 2);
        // The AVX2 panels take 7x7 and smaller maps from depth 128 and larger maps from
        // depth 256: channels off the 8-lane vectors and 24-channel panels (last panels
        // of 8, 16 and 24), pixels across tiles of 3 and 4 (and the rows' last tiles,
        // which store under a mask; the last strip, copied under a mask), and groups.
        #[cfg(target_arch = "x86_64")]
        {
            use super::super::pointwise_panels::suits;
            assert!(suits(Isa::Avx2Fma, 49, 128) && suits(Isa::Avx2Fma, 196, 256));
            assert!(!suits(Isa::Avx2Fma, 49, 64) && !suits(Isa::Avx2Fma, 196, 128));
        }
        for &pixels in &[1, 5, 6, 7, 13, 49, 64] {
            check(1, 257, 512, pixels, 1);
            check(1, 21, 128, pixels, 1);
        }
        check(1, 37, 256, 49, 1);
        check(1, 29, 256, 49, 1);
        check(1, 37, 256, 49, 3);
        check(1, 37, 256, 196, 1);
        check(1, 19, 256, 250, 1);
        check(3, 263, 512, 14, 2);
        // Deep layers on maps larger than 64 pixels, packed for their map: AVX-512's
        // 64-channel panels (and a last one of 16, 32 or 48), tiles of 6 and 5 pixels
        // (65 = 10 x 6 + 5, 196 = 31 x 6 + 2 x 5).
        for &rows in &[16, 17, 63, 64, 65, 100, 130] {
            for &pixels in &[65, 196] {
                check(1, rows, 256, pixels, 1);
            }
        }
        check(2, 40, 256, 196, 2);
    }

    #[test]
    fn deep_inputs_span_several_column_chunks() {
        // depth 1024 makes a chunk 8 tiles wide on NEON and 1 on AVX-512, so 200 pixels
        // cross several chunks.
        check(1, 7, 1024, 200, 1);
    }

    #[test]
    fn avx512_column_chunks_stay_within_32_kib_of_input() {
        // 64 channels of 64-pixel tiles are 16 KiB: two tiles per chunk; a tile wider
        // than 32 KiB still makes a chunk of one; the other paths keep 256 KiB chunks.
        assert_eq!(tiles_per_chunk(Isa::Avx512, 64, 64), 2);
        assert_eq!(tiles_per_chunk(Isa::Avx512, 16, 64), 8);
        assert_eq!(tiles_per_chunk(Isa::Avx512, 1024, 64), 1);
        assert_eq!(tiles_per_chunk(Isa::Avx2Fma, 64, 16), 64);
        assert_eq!(tiles_per_chunk(Isa::Neon, 1024, 8), 8);
        // 1000 pixels at depth 64: eight chunks of two 64-pixel tiles, the last one
        // ending in the 64-pixel tile that overlaps the one before (40 columns left).
        check(1, 10, 64, 1000, 2);
    }
}

//! 1x1 convolution (pointwise, optionally grouped), NCHW f32, stride 1, as a GEMM
//! `out[m][n] = bias[m] + sum_k w[m][k] * x[k][n]` per group, with the bias and an
//! optional ReLU fused into the same pass.
//!
//! NCHW already stores `x` as `[k][n]` with the pixels of one channel contiguous, so `x`
//! is read in place (no packing pass, unlike tract's `OptMatMulPack`): a tile of
//! `ROWS` output channels by `2 * lanes` pixels keeps its accumulators in registers, and
//! each step of `k` loads one row segment of `x` and `ROWS` weights, then multiplies by
//! each weight as a scalar. Only the constant weights are packed, once, at load time:
//! per block of `ROWS` output channels, `[k][ROWS]` (zero rows pad the last block).
//!
//! armv7 (Cortex-A9: 16 q registers, no FMA): 6 x 8 tile, 12 q accumulators, 2 q of `x`
//! and 6 weights in d4-d6 (the by-scalar `vmla` reads only d0-d15): 14 instructions per
//! 48 MACs. A trailing block of fewer than 8 pixels takes a 6 x 4 tile that overlaps the
//! previous one (recomputing a few outputs is cheaper than a scalar tail); maps narrower
//! than 4 pixels take the scalar tile. Columns are processed in chunks whose `[k][chunk]`
//! slice of `x` fits comfortably in the 1 MiB L2, each weight block (at most `k * 24`
//! bytes) staying in the 32 KiB L1 while it sweeps the chunk.

#[cfg(target_arch = "arm")]
use super::depthwise::neon_detected;

/// Output channels per tile (the packing block).
pub const ROWS: usize = 6;

/// Bytes of `x` one column chunk may span (a quarter of the Cortex-A9's L2).
const CHUNK_BYTES: usize = 256 * 1024;

/// Which code path runs the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PointwiseImpl {
    Scalar,
    /// armv7 NEON (inline assembly).
    Neon,
}

impl PointwiseImpl {
    /// The fastest path this CPU supports.
    pub fn best() -> PointwiseImpl {
        if PointwiseImpl::Neon.is_available() {
            PointwiseImpl::Neon
        } else {
            PointwiseImpl::Scalar
        }
    }

    /// Whether this path can run on this CPU.
    pub fn is_available(self) -> bool {
        match self {
            PointwiseImpl::Scalar => true,
            PointwiseImpl::Neon => {
                #[cfg(target_arch = "arm")]
                {
                    neon_detected()
                }
                #[cfg(not(target_arch = "arm"))]
                {
                    false
                }
            }
        }
    }

    /// Pixels per vector register.
    fn lanes(self) -> usize {
        match self {
            PointwiseImpl::Scalar => 1,
            PointwiseImpl::Neon => 4,
        }
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
    /// Per group, per block of [`ROWS`] output channels: `[depth][ROWS]`.
    packed: Vec<f32>,
    /// Per group, per block: `ROWS` biases, then the floor (0 or -inf), then one unused
    /// float: the 8 floats the tile reads at its end.
    epilogue: Vec<f32>,
}

/// Bit-for-bit equality (tract compares ops with `Eq`; NaN weights compare equal to
/// themselves, which is what an op identity needs).
impl PartialEq for PackedPointwise {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        (self.groups, self.rows, self.depth, self.relu)
            == (other.groups, other.rows, other.depth, other.relu)
            && bits(&self.packed) == bits(&other.packed)
            && bits(&self.epilogue) == bits(&other.epilogue)
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
        assert!(groups > 0 && rows > 0 && depth > 0);
        assert_eq!(weights.len(), groups * rows * depth);
        assert_eq!(bias.len(), groups * rows);
        let blocks = rows.div_ceil(ROWS);
        let mut packed = vec![0f32; groups * blocks * depth * ROWS];
        let mut epilogue = vec![0f32; groups * blocks * (ROWS + 2)];
        let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
        for g in 0..groups {
            for b in 0..blocks {
                let block = &mut packed[(g * blocks + b) * depth * ROWS..][..depth * ROWS];
                let tail = &mut epilogue[(g * blocks + b) * (ROWS + 2)..][..ROWS + 2];
                for r in 0..ROWS.min(rows - b * ROWS) {
                    let m = g * rows + b * ROWS + r;
                    for (k, &w) in weights[m * depth..][..depth].iter().enumerate() {
                        block[k * ROWS + r] = w;
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
            packed,
            epilogue,
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
        self.run_with(PointwiseImpl::best(), input, pixels, output)
    }

    /// Same as [`PackedPointwise::run`] with a chosen code path.
    ///
    /// Panics if the slice lengths do not match or `imp` is unavailable (callers validate
    /// shapes first; these are programming errors).
    pub fn run_with(&self, imp: PointwiseImpl, input: &[f32], pixels: usize, output: &mut [f32]) {
        assert!(imp.is_available(), "{imp:?} is not available on this CPU");
        assert!(pixels > 0);
        let image_in = self.input_channels() * pixels;
        let image_out = self.output_channels() * pixels;
        assert_eq!(input.len() % image_in, 0);
        assert_eq!(output.len(), input.len() / image_in * image_out);
        let tiles = column_tiles(imp, pixels);
        // Tiles are at most 8 pixels wide.
        let per_chunk = (CHUNK_BYTES / (4 * self.depth * 8)).max(1);
        for (x, out) in input
            .chunks_exact(image_in)
            .zip(output.chunks_exact_mut(image_out))
        {
            for g in 0..self.groups {
                let x = &x[g * self.depth * pixels..][..self.depth * pixels];
                let out = &mut out[g * self.rows * pixels..][..self.rows * pixels];
                for chunk in tiles.chunks(per_chunk) {
                    self.chunk(imp, g, x, pixels, chunk, out);
                }
            }
        }
    }

    /// All row blocks of group `g` over the column tiles of one chunk.
    fn chunk(
        &self,
        _imp: PointwiseImpl,
        g: usize,
        x: &[f32],
        pixels: usize,
        tiles: &[Tile],
        out: &mut [f32],
    ) {
        let blocks = self.rows.div_ceil(ROWS);
        for b in 0..blocks {
            let weights = &self.packed[(g * blocks + b) * self.depth * ROWS..][..self.depth * ROWS];
            let epilogue = &self.epilogue[(g * blocks + b) * (ROWS + 2)..][..ROWS + 2];
            let rows = ROWS.min(self.rows - b * ROWS);
            let out = &mut out[b * ROWS * pixels..];
            for tile in tiles {
                let cols = tile.cols;
                let x = &x[tile.start..];
                if tile.vector {
                    #[cfg(target_arch = "arm")]
                    {
                        self.neon_tile(weights, epilogue, x, pixels, tile, rows, out);
                        continue;
                    }
                    #[cfg(not(target_arch = "arm"))]
                    unreachable!("vector tiles come only from a vector path");
                }
                scalar_tile(
                    weights,
                    epilogue,
                    self.depth,
                    x,
                    pixels,
                    rows,
                    cols,
                    &mut out[tile.start..],
                    pixels,
                );
            }
        }
    }

    /// One NEON tile; a partial row block goes through a scratch tile.
    #[cfg(target_arch = "arm")]
    #[allow(clippy::too_many_arguments)]
    fn neon_tile(
        &self,
        weights: &[f32],
        epilogue: &[f32],
        x: &[f32],
        pixels: usize,
        tile: &Tile,
        rows: usize,
        out: &mut [f32],
    ) {
        // x holds depth rows of `pixels` from tile.start, so the tile's loads stay inside.
        assert!(x.len() >= (self.depth - 1) * pixels + tile.cols);
        let mut scratch = [0f32; ROWS * 8];
        let (dst, dst_stride) = if rows == ROWS {
            assert!(out.len() >= (ROWS - 1) * pixels + tile.start + tile.cols);
            // SAFETY: checked just above.
            (unsafe { out.as_mut_ptr().add(tile.start) }, pixels)
        } else {
            (scratch.as_mut_ptr(), 8)
        };
        // SAFETY: weights hold depth * ROWS floats, epilogue ROWS + 2; the x loads read
        // tile.cols floats of each of depth rows (asserted above); dst is writable for
        // ROWS rows of tile.cols floats at dst_stride (asserted, or the scratch tile).
        unsafe {
            let args = (
                x.as_ptr(),
                pixels * 4,
                weights.as_ptr(),
                self.depth,
                epilogue.as_ptr(),
            );
            if tile.cols == 8 {
                neon::tile_6x8(args, dst, dst_stride * 4);
            } else {
                neon::tile_6x4(args, dst, dst_stride * 4);
            }
        }
        if rows < ROWS {
            for r in 0..rows {
                out[r * pixels + tile.start..][..tile.cols]
                    .copy_from_slice(&scratch[r * 8..][..tile.cols]);
            }
        }
    }
}

/// A run of output columns one tile computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    start: usize,
    cols: usize,
    /// On the vector tile (`cols` is 2 or 1 vectors), or the scalar one.
    vector: bool,
}

/// Column tiles covering `0..pixels`: full double-vector tiles, then overlapping tiles for
/// the rest (single- or double-vector); scalar tiles of up to 8 when narrower than one
/// vector or without a vector path.
fn column_tiles(imp: PointwiseImpl, pixels: usize) -> Vec<Tile> {
    let lanes = imp.lanes();
    if lanes == 1 {
        return (0..pixels)
            .step_by(8)
            .map(|start| Tile {
                start,
                cols: 8.min(pixels - start),
                vector: false,
            })
            .collect();
    }
    let wide = 2 * lanes;
    if pixels < lanes {
        return vec![Tile {
            start: 0,
            cols: pixels,
            vector: false,
        }];
    }
    let mut tiles: Vec<Tile> = (0..pixels / wide)
        .map(|t| Tile {
            start: t * wide,
            cols: wide,
            vector: true,
        })
        .collect();
    let mut covered = pixels / wide * wide;
    while covered < pixels {
        let cols = if pixels - covered <= lanes || pixels < wide {
            lanes
        } else {
            wide
        };
        // Overlap backwards rather than run past the last pixel.
        let start = (covered + cols).min(pixels) - cols;
        tiles.push(Tile {
            start,
            cols,
            vector: true,
        });
        covered = start + cols;
    }
    tiles
}

/// The tile in plain Rust: `rows` output channels by `cols` pixels; `x` starts at the
/// tile's first column (row stride `x_stride`), `out` likewise (`out_stride`).
#[allow(clippy::too_many_arguments)]
fn scalar_tile(
    weights: &[f32],
    epilogue: &[f32],
    depth: usize,
    x: &[f32],
    x_stride: usize,
    rows: usize,
    cols: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let floor = epilogue[ROWS];
    for r in 0..rows {
        for c in 0..cols {
            let mut acc = epilogue[r];
            for k in 0..depth {
                acc += weights[k * ROWS + r] * x[k * x_stride + c];
            }
            out[r * out_stride + c] = acc.max(floor);
        }
    }
}

#[cfg(target_arch = "arm")]
mod neon {
    //! Registers: q4-q15 accumulators (row r in q(4+2r), q(5+2r)), q0/q1 the `x`
    //! segment, d4-d6 the six weights of one `k`.

    /// x, x row stride in bytes, packed weight block, depth, epilogue (6 biases, floor).
    pub type TileArgs = (*const f32, usize, *const f32, usize, *const f32);

    /// One `k` step of the 6 x 8 tile.
    macro_rules! step_6x8 {
        () => {
            concat!(
                "vld1.32 {{d0-d3}}, [{x}], {xs}\n",
                "vld1.32 {{d4-d6}}, [{w}]!\n",
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
            )
        };
    }

    /// One `k` step of the 6 x 4 tile (accumulators q4, q6, .., q14).
    macro_rules! step_6x4 {
        () => {
            concat!(
                "vld1.32 {{d0-d1}}, [{x}], {xs}\n",
                "vld1.32 {{d4-d6}}, [{w}]!\n",
                "vmla.f32 q4, q0, d4[0]\n",
                "vmla.f32 q6, q0, d4[1]\n",
                "vmla.f32 q8, q0, d5[0]\n",
                "vmla.f32 q10, q0, d5[1]\n",
                "vmla.f32 q12, q0, d6[0]\n",
                "vmla.f32 q14, q0, d6[1]\n",
            )
        };
    }

    /// 6 output channels x 8 pixels; `out` rows `out_stride` bytes apart.
    ///
    /// # Safety
    /// `x` readable for 8 floats at each of `depth` rows `xs` bytes apart, the weight
    /// block for `depth * 6` floats, the epilogue for 8, `out` writable for 6 rows of 8
    /// floats; `depth >= 1`.
    pub unsafe fn tile_6x8(args: TileArgs, out: *mut f32, out_stride: usize) {
        let (x, xs, w, depth, epilogue) = args;
        core::arch::asm!(
            "vld1.32 {{d0-d2}}, [{e}]!",
            "vdup.32 q4, d0[0]",
            "vdup.32 q5, d0[0]",
            "vdup.32 q6, d0[1]",
            "vdup.32 q7, d0[1]",
            "vdup.32 q8, d1[0]",
            "vdup.32 q9, d1[0]",
            "vdup.32 q10, d1[1]",
            "vdup.32 q11, d1[1]",
            "vdup.32 q12, d2[0]",
            "vdup.32 q13, d2[0]",
            "vdup.32 q14, d2[1]",
            "vdup.32 q15, d2[1]",
            // An odd depth takes one step first, then pairs.
            "tst {k}, #1",
            "beq 2f",
            step_6x8!(),
            "2:",
            "lsrs {k}, {k}, #1",
            "beq 3f",
            "1:",
            step_6x8!(),
            step_6x8!(),
            "subs {k}, {k}, #1",
            "bne 1b",
            "3:",
            "vld1.32 {{d0[], d1[]}}, [{e}]",
            "vmax.f32 q4, q4, q0",
            "vmax.f32 q5, q5, q0",
            "vmax.f32 q6, q6, q0",
            "vmax.f32 q7, q7, q0",
            "vmax.f32 q8, q8, q0",
            "vmax.f32 q9, q9, q0",
            "vmax.f32 q10, q10, q0",
            "vmax.f32 q11, q11, q0",
            "vmax.f32 q12, q12, q0",
            "vmax.f32 q13, q13, q0",
            "vmax.f32 q14, q14, q0",
            "vmax.f32 q15, q15, q0",
            "vst1.32 {{d8-d11}}, [{o}], {os}",
            "vst1.32 {{d12-d15}}, [{o}], {os}",
            "vst1.32 {{d16-d19}}, [{o}], {os}",
            "vst1.32 {{d20-d23}}, [{o}], {os}",
            "vst1.32 {{d24-d27}}, [{o}], {os}",
            "vst1.32 {{d28-d31}}, [{o}], {os}",
            x = inout(reg) x => _,
            xs = in(reg) xs,
            w = inout(reg) w => _,
            k = inout(reg) depth => _,
            e = inout(reg) epilogue => _,
            o = inout(reg) out => _,
            os = in(reg) out_stride,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _,
            out("q4") _, out("q5") _, out("q6") _, out("q7") _,
            out("q8") _, out("q9") _, out("q10") _, out("q11") _,
            out("q12") _, out("q13") _, out("q14") _, out("q15") _,
            options(nostack),
        );
    }

    /// 6 output channels x 4 pixels.
    ///
    /// # Safety
    /// As [`tile_6x8`], with 4 floats per row of `x` and `out`.
    pub unsafe fn tile_6x4(args: TileArgs, out: *mut f32, out_stride: usize) {
        let (x, xs, w, depth, epilogue) = args;
        core::arch::asm!(
            "vld1.32 {{d0-d2}}, [{e}]!",
            "vdup.32 q4, d0[0]",
            "vdup.32 q6, d0[1]",
            "vdup.32 q8, d1[0]",
            "vdup.32 q10, d1[1]",
            "vdup.32 q12, d2[0]",
            "vdup.32 q14, d2[1]",
            "tst {k}, #1",
            "beq 2f",
            step_6x4!(),
            "2:",
            "lsrs {k}, {k}, #1",
            "beq 3f",
            "1:",
            step_6x4!(),
            step_6x4!(),
            "subs {k}, {k}, #1",
            "bne 1b",
            "3:",
            "vld1.32 {{d0[], d1[]}}, [{e}]",
            "vmax.f32 q4, q4, q0",
            "vmax.f32 q6, q6, q0",
            "vmax.f32 q8, q8, q0",
            "vmax.f32 q10, q10, q0",
            "vmax.f32 q12, q12, q0",
            "vmax.f32 q14, q14, q0",
            "vst1.32 {{d8-d9}}, [{o}], {os}",
            "vst1.32 {{d12-d13}}, [{o}], {os}",
            "vst1.32 {{d16-d17}}, [{o}], {os}",
            "vst1.32 {{d20-d21}}, [{o}], {os}",
            "vst1.32 {{d24-d25}}, [{o}], {os}",
            "vst1.32 {{d28-d29}}, [{o}], {os}",
            x = inout(reg) x => _,
            xs = in(reg) xs,
            w = inout(reg) w => _,
            k = inout(reg) depth => _,
            e = inout(reg) epilogue => _,
            o = inout(reg) out => _,
            os = in(reg) out_stride,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _,
            out("q4") _, out("q6") _, out("q8") _,
            out("q10") _, out("q12") _, out("q14") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn pattern(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn check(groups: usize, rows: usize, depth: usize, pixels: usize, images: usize) {
        for relu in [false, true] {
            let weights = pattern(groups * rows * depth, 7 + depth as u32);
            let bias = pattern(groups * rows, 3);
            let input = pattern(images * groups * depth * pixels, 1 + pixels as u32);
            let expected = reference(&weights, &bias, groups, rows, depth, relu, &input, pixels);
            let packed = PackedPointwise::new(&weights, &bias, groups, rows, depth, relu);
            for imp in [PointwiseImpl::Scalar, PointwiseImpl::Neon] {
                if !imp.is_available() {
                    continue;
                }
                let mut got = vec![f32::NAN; expected.len()];
                packed.run_with(imp, &input, pixels, &mut got);
                for (i, (e, a)) in expected.iter().zip(&got).enumerate() {
                    assert!(
                        (e - a).abs() <= 1e-5 * (1.0 + e.abs()) * (depth as f32).sqrt(),
                        "{imp:?} g{groups} m{rows} k{depth} n{pixels} relu {relu} at {i}: {a} != {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn best_path_is_neon_on_armv7() {
        if cfg!(target_arch = "arm") {
            assert_eq!(PointwiseImpl::best(), PointwiseImpl::Neon);
        }
        assert!(PointwiseImpl::best().is_available());
    }

    #[test]
    fn awkward_sizes_match_reference() {
        // Output channels off the 6-row block, depths odd and even, maps of 1, 2 (2x1),
        // 4 (2x2), 7, 9, 12, 49 (7x7) and 196 (14x14) pixels for every tail case.
        for &rows in &[1, 5, 6, 7, 13, 16] {
            for &depth in &[1, 2, 3, 8, 17] {
                for &pixels in &[1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 49, 196] {
                    check(1, rows, depth, pixels, 1);
                }
            }
        }
    }

    #[test]
    fn groups_and_batches_use_their_own_weights() {
        check(3, 5, 4, 49, 2);
        check(3, 20, 20, 14 * 14, 1);
        check(2, 6, 9, 3, 3);
    }

    #[test]
    fn deep_inputs_span_several_column_chunks() {
        // depth 1024 makes a chunk 8 tiles wide, so 200 pixels cross several chunks.
        check(1, 7, 1024, 200, 1);
    }
}

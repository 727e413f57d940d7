//! 3x3 windows on AVX-512, straight from the unpadded NCHW plane: the depthwise
//! convolution, and the max pool (ShuffleNet's, after its first convolution).
//!
//! The portable path (and AVX2's max pool) copy every plane into a bordered scratch
//! plane first. On the small maps of these networks that copy costs about as much as the
//! arithmetic (a 7x7 plane is 49 outputs), and at stride 2 the even/odd column shuffles
//! come on top. AVX-512's masked loads read zeros in the lanes outside a row without touching
//! memory there, so the borders need no copy: each 16-output vector takes its three
//! taps of an input row as three masked loads at stride 1, and stores under a mask at
//! the end of the row. At stride 2 the depthwise convolution splits the columns with
//! two-register permutes (`vpermt2ps`) and one lane shift: five loads and six shuffles
//! per input row and 32 outputs (the max pool: four loads and three permutes per 16).
//! The max pool reads its taps with -inf instead of zeros outside the plane.

use std::arch::x86_64::*;

const LANES: usize = 16;

/// Lanes `i` of a vector starting at column `start` (may be negative) whose column
/// `start + i` lies in `0..width`.
pub(super) fn lanes_inside(start: isize, width: usize) -> __mmask16 {
    let first = (-start).clamp(0, LANES as isize);
    let end = (width as isize - start).clamp(0, LANES as isize);
    if end <= first {
        return 0;
    }
    let bits = |n: isize| ((1u32 << n) - 1) as __mmask16;
    bits(end) & !bits(first)
}

/// Where a column block's input vectors start and which of their lanes lie in the row:
/// stride 1 loads columns `x - 1`, `x`, `x + 1`; stride 2 loads 32 columns from `2x - 1`
/// and 32 from `2x + 1`, to be split into even and odd ones.
#[derive(Clone, Copy)]
struct ColumnBlock {
    first: [isize; 4],
    masks: [__mmask16; 4],
    stride: usize,
}

impl ColumnBlock {
    fn new(x0: usize, w: usize, stride: usize) -> ColumnBlock {
        let lanes = LANES as isize;
        let first = if stride == 1 {
            let x = x0 as isize;
            [x - 1, x, x + 1, x]
        } else {
            let base = 2 * x0 as isize - 1;
            [base, base + lanes, base + 2, base + 2 + lanes]
        };
        ColumnBlock {
            first,
            masks: first.map(|col| lanes_inside(col, w)),
            stride,
        }
    }

    /// The `kx` = 0, 1, 2 vectors of one input row, with `outside` in the lanes outside
    /// the row (the padding). The load addresses may lie a few floats outside the plane,
    /// but masked lanes are not accessed, hence wrapping pointer arithmetic.
    ///
    /// # Safety
    /// AVX-512F available; `row` is a row of the plane this block was made for.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn taps(&self, row: *const f32, outside: __m512) -> [__m512; 3] {
        let load = |i: usize| (self.masks[i], row.wrapping_offset(self.first[i]));
        let [(ma, a), (mb, b), (mc, c), (md, d)] = [load(0), load(1), load(2), load(3)];
        let (a, b, c) = (
            _mm512_mask_loadu_ps(outside, ma, a),
            _mm512_mask_loadu_ps(outside, mb, b),
            _mm512_mask_loadu_ps(outside, mc, c),
        );
        if self.stride == 1 {
            return [a, b, c];
        }
        let d = _mm512_mask_loadu_ps(outside, md, d);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        [
            _mm512_permutex2var_ps(a, even, b),
            _mm512_permutex2var_ps(a, odd, b),
            _mm512_permutex2var_ps(c, even, d),
        ]
    }
}

/// `acc` plus one kernel row's products, `acc + t[0] k[0] + t[1] k[1] + t[2] k[2]`, as
/// one chain of multiply-adds (no separate product to add).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn accumulate_row(acc: __m512, t: [__m512; 3], k: &[__m512]) -> __m512 {
    let acc = _mm512_fmadd_ps(t[0], k[0], acc);
    let acc = _mm512_fmadd_ps(t[1], k[1], acc);
    _mm512_fmadd_ps(t[2], k[2], acc)
}

/// One plane: `out` (`oh x ow`) from `input` (`h x w`), with `params` = k0..k8, bias,
/// floor. At stride 1 each input row is loaded once per column block
/// ([`stride1_rows`]); stride 2 is [`stride2_columns`].
///
/// # Safety
/// AVX-512F available; `input` readable for `h * w` floats, `out` writable for `oh * ow`,
/// where `(oh, ow)` is the padding-1 output size of `(h, w)` at `stride` (1 or 2).
#[target_feature(enable = "avx512f")]
pub unsafe fn depthwise_plane(
    input: *const f32,
    (h, w): (usize, usize),
    stride: usize,
    params: &[f32; 12],
    out: *mut f32,
    (oh, ow): (usize, usize),
) {
    let k: [__m512; 9] = std::array::from_fn(|i| _mm512_set1_ps(params[i]));
    let bias = _mm512_set1_ps(params[9]);
    let floor = _mm512_set1_ps(params[10]);
    if stride == 2 {
        // Blocks of 32 outputs while more than 16 remain: the permutes of two vectors
        // share their loads. Where more than 48 remain, two such blocks side by side, row
        // by row, so that each input row is read once rather than once per block: a
        // 112-wide input plane (50 KB) does not stay in L1 from one block to the next.
        let mut x0 = 0;
        while x0 < ow {
            let plane = (input, (h, w), out, (oh, ow), x0);
            if ow - x0 > 3 * LANES {
                let pair = [
                    Stride2Columns::<2>::new(x0, w),
                    Stride2Columns::<2>::new(x0 + 2 * LANES, w),
                ];
                let taps = |row| {
                    let [a, b] = [pair[0].taps(row), pair[1].taps(row)];
                    std::array::from_fn(|t| [a[t][0], a[t][1], b[t][0], b[t][1]])
                };
                stride2_columns::<4>(plane, &k, (bias, floor), taps);
                x0 += 4 * LANES;
            } else if ow - x0 > LANES {
                let columns = Stride2Columns::<2>::new(x0, w);
                stride2_columns(plane, &k, (bias, floor), |row| columns.taps(row));
                x0 += 2 * LANES;
            } else {
                let columns = Stride2Columns::<1>::new(x0, w);
                stride2_columns(plane, &k, (bias, floor), |row| columns.taps(row));
                x0 += LANES;
            }
        }
        return;
    }
    // Up to four column blocks side by side, row by row: a 56-wide plane goes down once
    // rather than four times, reading and writing its rows front to back.
    let mut x0 = 0;
    while x0 < ow {
        let blocks = (ow - x0).div_ceil(LANES);
        let plane = (input, (h, w), out, ow, x0);
        match blocks {
            1 => stride1_columns::<1>(plane, &k, (bias, floor)),
            2 => stride1_columns::<2>(plane, &k, (bias, floor)),
            3 => stride1_columns::<3>(plane, &k, (bias, floor)),
            _ => stride1_columns::<4>(plane, &k, (bias, floor)),
        }
        x0 += blocks.min(4) * LANES;
    }
}

/// The lanes of `V` output vectors from column `x0` that lie in a row `ow` wide.
fn output_masks<const V: usize>(x0: usize, ow: usize) -> [__mmask16; V] {
    std::array::from_fn(|v| lanes_inside((x0 + LANES * v) as isize, ow))
}

/// `V` vectors of one output row from `row`, at least `floor` (the ReLU), each under its
/// mask.
///
/// # Safety
/// AVX-512F available; `row` writable at the masks' lanes of `V` vectors.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_outputs<const V: usize>(
    row: *mut f32,
    masks: &[__mmask16; V],
    acc: [__m512; V],
    floor: __m512,
) {
    for ((v, &mask), acc) in masks.iter().enumerate().zip(acc) {
        _mm512_mask_storeu_ps(row.add(LANES * v), mask, _mm512_max_ps(acc, floor));
    }
}

/// Stride-1 depthwise rows of `16 V` outputs from column `x0`, whose blocks all hold
/// output columns.
///
/// # Safety
/// As [`depthwise_plane`] at stride 1; `x0 + 16 (V - 1) < ow`.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::type_complexity)]
unsafe fn stride1_columns<const V: usize>(
    (input, (h, w), out, ow, x0): (*const f32, (usize, usize), *mut f32, usize, usize),
    k: &[__m512; 9],
    (bias, floor): (__m512, __m512),
) {
    let zero = _mm512_setzero_ps();
    let blocks: [ColumnBlock; V] = std::array::from_fn(|v| ColumnBlock::new(x0 + LANES * v, w, 1));
    let masks = output_masks::<V>(x0, ow);
    let store = |y: usize, acc| store_outputs(out.add(y * ow + x0), &masks, acc, floor);
    let taps = |iy: usize| std::array::from_fn(|v| blocks[v].taps(input.add(iy * w), zero));
    stride1_rows::<V>(h, k, bias, taps, store);
}

/// The rows of `V` column blocks side by side at stride 1, from the taps of each input
/// row (one set per block): each input row's products go to the three output rows it
/// touches, kept in a rolling pair of accumulators, so the dependency chains stay short
/// and independent.
///
/// # Safety
/// AVX-512F available; `taps` and `store` safe to call for rows `0..h`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn stride1_rows<const V: usize>(
    h: usize,
    k: &[__m512; 9],
    bias: __m512,
    mut taps: impl FnMut(usize) -> [[__m512; 3]; V],
    mut store: impl FnMut(usize, [__m512; V]),
) {
    // Before input row iy: `above` is output row iy - 1 without its kernel row 2,
    // `current` output row iy with only its kernel row 0 (and the bias).
    let mut above = [bias; V];
    let mut current = [bias; V];
    for iy in 0..h {
        let t = taps(iy);
        if iy > 0 {
            store(
                iy - 1,
                std::array::from_fn(|v| accumulate_row(above[v], t[v], &k[6..9])),
            );
        }
        for v in 0..V {
            above[v] = accumulate_row(current[v], t[v], &k[3..6]);
            current[v] = accumulate_row(bias, t[v], &k[0..3]);
        }
    }
    // The last row's kernel row 2 reads the bottom padding.
    store(h - 1, above);
}

/// Two planes of at most 8 output columns side by side in one vector: plane `a` in
/// lanes 0-7 and plane `b` in lanes 8-15, each with its own weights (`params` as for
/// [`depthwise_plane`]). A 7x7 output plane alone fills 7 of 16 lanes; paired, every
/// multiply-add serves two planes. Each input row is loaded once per plane and its taps
/// are made in registers: at stride 1 (`w <= 8`) the row itself and the row shifted by
/// one lane either way within each half, zeros shifted in (the padding); at stride 2
/// (`w <= 16`) the even columns, the odd ones, and the odd ones one lane later.
///
/// # Safety
/// AVX-512F available; `w <= 8 * STRIDE`, `STRIDE` 1 or 2; both inputs readable for
/// `h * w` floats, both outputs writable for `oh * ow`, where `(oh, ow)` is the
/// padding-1 output size of `(h, w)` at `STRIDE`.
#[target_feature(enable = "avx512f")]
pub unsafe fn depthwise_plane_pair<const STRIDE: usize>(
    input: [*const f32; 2],
    (h, w): (usize, usize),
    params: [&[f32; 12]; 2],
    out: [*mut f32; 2],
    (oh, ow): (usize, usize),
) {
    debug_assert!(w <= 8 * STRIDE && ow <= 8);
    const HIGH: __mmask16 = 0xff00;
    let pair = |i: usize| {
        _mm512_mask_blend_ps(
            HIGH,
            _mm512_set1_ps(params[0][i]),
            _mm512_set1_ps(params[1][i]),
        )
    };
    let k: [__m512; 9] = std::array::from_fn(pair);
    let (bias, floor) = (pair(9), pair(10));
    let store_masks = [lanes_inside(0, ow) & !HIGH, lanes_inside(-8, ow) & HIGH];
    let store = |y: usize, acc: __m512| {
        let v = _mm512_max_ps(acc, floor);
        let at = (y * ow) as isize;
        _mm512_mask_storeu_ps(out[0].offset(at), store_masks[0], v);
        _mm512_mask_storeu_ps(out[1].wrapping_offset(at - 8), store_masks[1], v);
    };
    if STRIDE == 1 {
        let row_mask = [lanes_inside(0, w) & !HIGH, lanes_inside(-8, w) & HIGH];
        let shift_left = _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 0, 8, 9, 10, 11, 12, 13, 14);
        let shift_right = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0, 9, 10, 11, 12, 13, 14, 15, 0);
        let taps = |iy: usize| -> [__m512; 3] {
            let offset = (iy * w) as isize;
            let a = _mm512_maskz_loadu_ps(row_mask[0], input[0].wrapping_offset(offset));
            let row = _mm512_mask_loadu_ps(a, row_mask[1], input[1].wrapping_offset(offset - 8));
            [
                _mm512_maskz_permutexvar_ps(0xfefe, shift_left, row),
                row,
                _mm512_maskz_permutexvar_ps(0x7f7f, shift_right, row),
            ]
        };
        stride1_rows::<1>(h, &k, bias, |iy| [taps(iy)], |y, [acc]| store(y, acc));
    } else {
        let row_mask = lanes_inside(0, w);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let odd_before =
            _mm512_setr_epi32(0, 1, 3, 5, 7, 9, 11, 13, 16, 17, 19, 21, 23, 25, 27, 29);
        let taps = |iy: usize| -> [[__m512; 1]; 3] {
            let offset = iy * w;
            let a = _mm512_maskz_loadu_ps(row_mask, input[0].add(offset));
            let b = _mm512_maskz_loadu_ps(row_mask, input[1].add(offset));
            [
                [_mm512_maskz_permutex2var_ps(0xfefe, a, odd_before, b)],
                [_mm512_permutex2var_ps(a, even, b)],
                [_mm512_permutex2var_ps(a, odd, b)],
            ]
        };
        stride2_rows::<1>(h, oh, &k, bias, taps, |y, [acc]| store(y, acc));
    }
}

/// The `kx` = 0, 1, 2 taps (columns `2x - 1`, `2x`, `2x + 1`) of `16 V` stride-2
/// outputs from output column `x0`, in rows `w` wide: `2 V + 1` masked loads from column
/// `2 x0 - 1` (zeros outside the row, the padding), two-register permutes into the odd
/// and even columns, and the odd ones shifted by one lane (`valignd`) for `kx = 2`.
/// Shared by the depthwise convolution and the first convolution (`conv3x3s2`); the
/// masks are worked out once per column block.
#[derive(Clone, Copy)]
pub(super) struct Stride2Columns<const V: usize> {
    first: isize,
    masks: [__mmask16; 5],
}

impl<const V: usize> Stride2Columns<V> {
    pub(super) fn new(x0: usize, w: usize) -> Self {
        let first = 2 * x0 as isize - 1;
        let masks = std::array::from_fn(|j| {
            if j <= 2 * V {
                lanes_inside(first + (LANES * j) as isize, w)
            } else {
                0
            }
        });
        Stride2Columns { first, masks }
    }

    /// The taps of one row.
    ///
    /// # Safety
    /// AVX-512F available; `row` a row of `w` readable floats, `w` as given to `new`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn taps(&self, row: *const f32) -> [[__m512; V]; 3] {
        let raw: [__m512; 5] = std::array::from_fn(|j| {
            if j <= 2 * V {
                // Masked-off lanes are not read, so the address may lie outside the row.
                let at = row.wrapping_offset(self.first + (LANES * j) as isize);
                _mm512_maskz_loadu_ps(self.masks[j], at)
            } else {
                _mm512_setzero_ps()
            }
        });
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let left: [__m512; V] =
            std::array::from_fn(|v| _mm512_permutex2var_ps(raw[2 * v], even, raw[2 * v + 1]));
        let centre: [__m512; V] =
            std::array::from_fn(|v| _mm512_permutex2var_ps(raw[2 * v], odd, raw[2 * v + 1]));
        let right: [__m512; V] = std::array::from_fn(|v| {
            // Lane 0 of the next vector of `2x - 1` columns is this one's last `2x + 1`.
            let next = if v + 1 < V { left[v + 1] } else { raw[2 * V] };
            _mm512_castsi512_ps(_mm512_alignr_epi32(
                _mm512_castps_si512(next),
                _mm512_castps_si512(left[v]),
                1,
            ))
        });
        [left, centre, right]
    }
}

/// Stride-2 depthwise rows of `16 V` outputs from column `x0` ([`stride2_rows`]), with
/// `taps` giving the taps of the input row that starts at a pointer.
///
/// # Safety
/// As [`depthwise_plane`] at stride 2; `x0 + 16 (V - 1) < ow`; `taps` safe to call on
/// the plane's rows.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::type_complexity)]
unsafe fn stride2_columns<const V: usize>(
    (input, (h, w), out, (oh, ow), x0): (
        *const f32,
        (usize, usize),
        *mut f32,
        (usize, usize),
        usize,
    ),
    k: &[__m512; 9],
    (bias, floor): (__m512, __m512),
    taps: impl Fn(*const f32) -> [[__m512; V]; 3],
) {
    let masks = output_masks::<V>(x0, ow);
    let store = |oy: usize, acc| store_outputs(out.add(oy * ow + x0), &masks, acc, floor);
    stride2_rows::<V>(h, oh, k, bias, |iy| taps(input.add(iy * w)), store);
}

/// The `oh` rows of `V` vectors of stride-2 outputs from the taps of input rows `0..h`:
/// each output row's sum starts from the bias and the products of its kernel row 0,
/// taken from the previous input row while it was loaded, and goes on in one chain of
/// multiply-adds.
///
/// # Safety
/// AVX-512F available; `taps` safe to call for rows `0..h`, `store` for `0..oh`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn stride2_rows<const V: usize>(
    h: usize,
    oh: usize,
    k: &[__m512; 9],
    bias: __m512,
    mut taps: impl FnMut(usize) -> [[__m512; V]; 3],
    mut store: impl FnMut(usize, [__m512; V]),
) {
    // The top padding: kernel row 0 of output row 0 adds nothing.
    let mut carried = [bias; V];
    for oy in 0..oh {
        let mut acc = carried;
        let [l, c, r] = taps(2 * oy);
        for v in 0..V {
            acc[v] = accumulate_row(acc[v], [l[v], c[v], r[v]], &k[3..6]);
        }
        if 2 * oy + 1 < h {
            let [l, c, r] = taps(2 * oy + 1);
            for v in 0..V {
                let t = [l[v], c[v], r[v]];
                acc[v] = accumulate_row(acc[v], t, &k[6..9]);
                carried[v] = accumulate_row(bias, t, &k[0..3]);
            }
        }
        store(oy, acc);
    }
}

/// One plane of the 3x3 max pool (padding 1, which never wins): `out` (`oh x ow`) from
/// `input` (`h x w`). Each input row's three taps are reduced to their maximum once and
/// that row maximum is shared by the output rows it touches.
///
/// # Safety
/// AVX-512F available; `input` readable for `h * w` floats, `out` writable for `oh * ow`,
/// where `(oh, ow)` is the padding-1 output size of `(h, w)` at `stride` (1 or 2).
#[target_feature(enable = "avx512f")]
pub unsafe fn max_pool_plane(
    input: *const f32,
    (h, w): (usize, usize),
    stride: usize,
    out: *mut f32,
    (oh, ow): (usize, usize),
) {
    let minus_infinity = _mm512_set1_ps(f32::NEG_INFINITY);
    for x0 in (0..ow).step_by(LANES) {
        let block = ColumnBlock::new(x0, w, stride);
        let store_mask = lanes_inside(x0 as isize, ow);
        let store =
            |y: usize, m: __m512| _mm512_mask_storeu_ps(out.add(y * ow + x0), store_mask, m);
        let row_max = |iy: usize| {
            let [a, b, c] = block.taps(input.add(iy * w), minus_infinity);
            _mm512_max_ps(_mm512_max_ps(a, b), c)
        };
        if stride == 1 {
            // Before input row iy: `above` is the maximum of input rows iy - 2 and iy - 1
            // (output row iy - 1 without its last row), `current` of row iy - 1.
            let mut above = minus_infinity;
            let mut current = minus_infinity;
            for iy in 0..h {
                let m = row_max(iy);
                if iy > 0 {
                    store(iy - 1, _mm512_max_ps(above, m));
                }
                above = _mm512_max_ps(current, m);
                current = m;
            }
            store(h - 1, above);
        } else {
            // Output row oy: input rows 2oy - 1 (carried), 2oy and 2oy + 1.
            let mut carried = minus_infinity;
            for oy in 0..oh {
                let middle = _mm512_max_ps(carried, row_max(2 * oy));
                carried = if 2 * oy + 1 < h {
                    row_max(2 * oy + 1)
                } else {
                    minus_infinity
                };
                store(oy, _mm512_max_ps(middle, carried));
            }
        }
    }
}

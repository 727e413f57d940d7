//! 3x3 depthwise convolution, NCHW f32, padding 1, stride 1 or 2, with the per-channel
//! bias (folded BatchNorm) and an optional ReLU fused into the same pass.
//!
//! On x86-64 the vectors read the plane in place, the padding coming from masked loads:
//! AVX-512 in `window3x3_avx512`, AVX2 in `avx2` below. On armv7 (and the scalar path)
//! every plane is first copied into a zero-bordered scratch plane, so the vector loops
//! never test borders: each output row is three padded input rows times nine weights. A
//! row whose width is not a multiple of the vector width ends with one overlapping
//! vector (recomputing a few outputs is cheaper than a scalar tail). Rows narrower than
//! one vector (1x1, 2x2 maps...) take the scalar path.
//!
//! armv7: `core::arch::arm` NEON intrinsics are still unstable in Rust 1.95
//! (`stdarch_arm_neon_intrinsics`), and LLVM does not auto-vectorise f32 for armv7 NEON
//! (NEON flushes denormals, so it is not IEEE-exact), which is why tract's loop stays
//! scalar there. So the armv7 inner loops are `asm!` with NEON instructions. Cortex-A9
//! has no fused multiply-add (VFPv3), hence `vmla`.
//! x86-64: AVX-512 or AVX2+FMA chosen at run time, scalar otherwise.

use super::isa::Isa;

/// Geometry of one depthwise 3x3 layer (padding 1 on every side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Depthwise3x3 {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// 1 or 2.
    pub stride: usize,
    /// Clamp the output at 0 (fused ReLU).
    pub relu: bool,
}

/// Extra zeroed floats after the padded plane: the vector loads of the last row may read
/// a few elements past it (their lanes are discarded or multiplied into unused outputs).
const SCRATCH_SLACK: usize = 32;

/// Output height or width of a 3x3 window with padding 1 over an input side `d`.
pub fn output_side(d: usize, stride: usize) -> usize {
    (d + 2 - 3) / stride + 1
}

impl Depthwise3x3 {
    pub fn output_height(&self) -> usize {
        output_side(self.height, self.stride)
    }

    pub fn output_width(&self) -> usize {
        output_side(self.width, self.stride)
    }

    /// Elements of one image (all channels) in the input.
    pub fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Elements of one image (all channels) in the output.
    pub fn output_len(&self) -> usize {
        self.channels * self.output_height() * self.output_width()
    }

    /// Runs on `input.len() / input_len()` images with the fastest available path.
    /// `weights` is `[channels, 3, 3]`, `bias` is `[channels]`.
    pub fn run(&self, input: &[f32], weights: &[f32], bias: &[f32], output: &mut [f32]) {
        self.run_with(Isa::best(), input, weights, bias, output)
    }

    /// Same as [`Depthwise3x3::run`] with a chosen code path.
    ///
    /// Panics if the slice lengths do not match the geometry or `imp` is unavailable
    /// (callers validate shapes first; these are programming errors).
    pub fn run_with(
        &self,
        imp: Isa,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        output: &mut [f32],
    ) {
        assert!(
            self.stride == 1 || self.stride == 2,
            "stride must be 1 or 2"
        );
        assert!(self.channels > 0 && self.height > 0 && self.width > 0);
        assert!(imp.is_available(), "{imp:?} is not available on this CPU");
        assert_eq!(weights.len(), self.channels * 9);
        assert_eq!(bias.len(), self.channels);
        assert_eq!(input.len() % self.input_len(), 0);
        let images = input.len() / self.input_len();
        assert_eq!(output.len(), images * self.output_len());

        let (h, w, s) = (self.height, self.width, self.stride);
        let (oh, ow) = (self.output_height(), self.output_width());
        let wp = w + 2;
        let floor = if self.relu { 0.0 } else { f32::NEG_INFINITY };

        // Layout read by the vector code: k0..k8, bias, floor, unused.
        let params = |plane: usize| {
            let c = plane % self.channels;
            let mut params = [0f32; 12];
            params[..9].copy_from_slice(&weights[c * 9..c * 9 + 9]);
            params[9] = bias[c];
            params[10] = floor;
            params
        };
        #[cfg(target_arch = "x86_64")]
        if imp == Isa::Avx512 {
            use super::window3x3_avx512 as avx512;
            // Outputs at most 8 wide (7x7 maps, from 7x7 or 14x14): two planes per vector.
            let paired = if w <= 8 * s {
                images * self.channels / 2
            } else {
                0
            };
            let (in_pairs, in_rest) = input.split_at(paired * 2 * h * w);
            let (out_pairs, out_rest) = output.split_at_mut(paired * 2 * oh * ow);
            for (pair, (x, out)) in in_pairs
                .chunks_exact(2 * h * w)
                .zip(out_pairs.chunks_exact_mut(2 * oh * ow))
                .enumerate()
            {
                let (a, b) = (params(2 * pair), params(2 * pair + 1));
                let (out_a, out_b) = out.split_at_mut(oh * ow);
                // SAFETY: AVX-512F is available (imp); w <= 8 s; each of the two input
                // planes holds h * w floats, each output plane oh * ow, (oh, ow) being
                // this geometry's output size.
                let (input, out) = (
                    [x.as_ptr(), x[h * w..].as_ptr()],
                    [out_a.as_mut_ptr(), out_b.as_mut_ptr()],
                );
                unsafe {
                    if s == 1 {
                        avx512::depthwise_plane_pair::<1>(input, (h, w), [&a, &b], out, (oh, ow))
                    } else {
                        avx512::depthwise_plane_pair::<2>(input, (h, w), [&a, &b], out, (oh, ow))
                    }
                };
            }
            let planes = (h * w, oh * ow);
            for_each_plane(
                (in_rest, out_rest),
                planes,
                2 * paired,
                params,
                |x, p, y| {
                    // SAFETY: AVX-512F is available (imp); the planes hold h * w and oh * ow
                    // floats, (oh, ow) being this geometry's output size.
                    unsafe { avx512::depthwise_plane(x, (h, w), s, p, y, (oh, ow)) }
                },
            );
            return;
        }
        // AVX2: every plane read in place (see `avx2`).
        #[cfg(target_arch = "x86_64")]
        if imp.avx2() {
            type PlaneFn =
                unsafe fn(*const f32, (usize, usize), &[f32; 12], *mut f32, (usize, usize));
            let plane: PlaneFn = match (s, w <= 8 * s) {
                (1, true) => avx2::narrow_plane::<1>,
                (_, true) => avx2::narrow_plane::<2>,
                (1, false) => avx2::wide_plane::<1>,
                (_, false) => avx2::wide_plane::<2>,
            };
            for_each_plane((input, output), (h * w, oh * ow), 0, params, |x, p, y| {
                // SAFETY: AVX2 and FMA are available (imp); narrow planes have w <= 8 s,
                // wide ones ow > 8; the planes hold h * w and oh * ow floats, (oh, ow)
                // being this geometry's output size.
                unsafe { plane(x, (h, w), p, y, (oh, ow)) }
            });
            return;
        }
        // NEON and the scalar path read a zero-bordered copy of each plane. Its borders
        // are written once (zero) and never touched again.
        let mut padded = vec![0f32; (h + 2) * wp + SCRATCH_SLACK];
        // NEON rows: 4-wide vectors, the last overlapping the one before.
        let vector = imp == Isa::Neon && ow >= 4;
        for (plane, (in_plane, out_plane)) in input
            .chunks_exact(h * w)
            .zip(output.chunks_exact_mut(oh * ow))
            .enumerate()
        {
            copy_into_padded(imp, in_plane, &mut padded, w);
            let params = params(plane);

            // armv7: one call per plane, the row loop inside the assembly (per-row calls
            // cost more than the arithmetic on FD-MobileNet's many 7x7 planes).
            #[cfg(target_arch = "arm")]
            if vector && imp == Isa::Neon {
                let args = neon::PlaneArgs {
                    params,
                    chunks: ow / 4,
                    back_bytes: ((4 - ow % 4) % 4) * 4,
                    wp_bytes: wp * 4,
                    step_bytes: s * wp * 4,
                };
                // SAFETY: `padded` holds rows 0..=h+1 of the bordered plane plus
                // SCRATCH_SLACK floats, which covers the vector loads past the last needed
                // column of the last row (at most 18 floats); `out_plane` holds oh rows of
                // ow >= 4 floats.
                unsafe {
                    let rows = padded.as_ptr();
                    let out = out_plane.as_mut_ptr();
                    if s == 1 {
                        // Two output rows per pass share their middle input rows; an odd
                        // last row takes the one-row loop.
                        let pairs = oh / 2;
                        if pairs > 0 {
                            neon::plane_stride1_pairs(rows, &args, out, pairs, ow);
                        }
                        if oh % 2 == 1 {
                            let last = oh - 1;
                            neon::plane_stride1(rows.add(last * wp), &args, out.add(last * ow), 1);
                        }
                    } else {
                        neon::plane_stride2(rows, &args, out, oh);
                    }
                }
                continue;
            }
            let _ = vector;
            for (oy, out_row) in out_plane.chunks_exact_mut(ow).enumerate() {
                scalar_row(&padded[oy * s * wp..], wp, s, &params, out_row);
            }
        }
    }
}

/// Every plane of `input` (`input_plane` floats each) with its output plane
/// (`output_plane` floats) and the parameters of plane `first + i`, through `plane`.
#[cfg(target_arch = "x86_64")]
fn for_each_plane(
    (input, output): (&[f32], &mut [f32]),
    (input_plane, output_plane): (usize, usize),
    first: usize,
    params: impl Fn(usize) -> [f32; 12],
    mut plane: impl FnMut(*const f32, &[f32; 12], *mut f32),
) {
    for (i, (x, y)) in input
        .chunks_exact(input_plane)
        .zip(output.chunks_exact_mut(output_plane))
        .enumerate()
    {
        plane(x.as_ptr(), &params(first + i), y.as_mut_ptr());
    }
}

/// Convenience wrapper: [`Depthwise3x3::run`].
pub fn depthwise3x3(
    geometry: &Depthwise3x3,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    geometry.run(input, weights, bias, output)
}

/// Copies an `h x w` plane into the interior of the zero-bordered scratch plane (rows
/// `w + 2` floats apart, starting at row 1, column 1).
pub(crate) fn copy_into_padded(imp: Isa, plane: &[f32], padded: &mut [f32], w: usize) {
    let wp = w + 2;
    assert!(padded.len() >= (plane.len() / w + 2) * wp);
    copy_rows_into_padded(imp, plane, &mut padded[wp..], w);
}

/// Copies the rows of `rows` (`w` floats each) to `padded`, row `y` at column 1 of
/// padded row `y` (rows `w + 2` floats apart); the border columns are left alone.
///
/// armv7: `copy_from_slice` per row calls `memcpy`, which costs about 1.4 instructions per
/// float here (call, alignment and size dispatch on short rows); a stride-2 layer copies
/// four input floats per output, more than its arithmetic. One NEON loop over the plane
/// costs about 0.5 per float.
pub(crate) fn copy_rows_into_padded(imp: Isa, rows: &[f32], padded: &mut [f32], w: usize) {
    let wp = w + 2;
    let h = rows.len() / w;
    assert!(h == 0 || padded.len() > (h - 1) * wp + w);
    #[cfg(target_arch = "arm")]
    if imp == Isa::Neon && w >= 4 && h > 0 {
        // SAFETY: reads the h * w floats of `rows`; writes w floats at column 1 of rows
        // 0..h of `padded`, the last ending at (h - 1) * wp + w + 1 <= padded.len()
        // (asserted).
        unsafe { neon::copy_plane(rows.as_ptr(), padded.as_mut_ptr().add(1), w, h, wp * 4) };
        return;
    }
    let _ = imp;
    for (y, row) in rows.chunks_exact(w).enumerate() {
        let start = y * wp + 1;
        padded[start..start + w].copy_from_slice(row);
    }
}

/// One output row from three padded rows starting at `rows[0]`, `rows[wp]`, `rows[2 * wp]`.
fn scalar_row(rows: &[f32], wp: usize, stride: usize, params: &[f32; 12], out_row: &mut [f32]) {
    for (ox, out) in out_row.iter_mut().enumerate() {
        let mut acc = params[9];
        for ky in 0..3 {
            let row = &rows[ky * wp + ox * stride..];
            for kx in 0..3 {
                acc += params[ky * 3 + kx] * row[kx];
            }
        }
        *out = acc.max(params[10]);
    }
}

#[cfg(target_arch = "arm")]
mod neon {
    //! Registers: q0-q2 hold k0..k8, bias, floor (the by-scalar `vmla` can only read
    //! d0-d15), q3 the bias vector, q4 the floor (0 for ReLU, -inf otherwise),
    //! q5/q6 two accumulators (shorter dependency chains), q8-q15 input rows.

    /// Everything a plane call needs, read by the assembly at fixed offsets (params at 0,
    /// then the words at 48, 52, 56, 60), so that few registers hold constants.
    #[repr(C)]
    pub struct PlaneArgs {
        /// k0..k8, bias, floor, unused.
        pub params: [f32; 12],
        /// Full 4-wide vectors per output row.
        pub chunks: usize,
        /// Bytes to step back for the overlapping last vector (0 when ow % 4 == 0).
        pub back_bytes: usize,
        /// Bytes per padded input row.
        pub wp_bytes: usize,
        /// Bytes from one output row's first input row to the next one's (stride * wp * 4).
        pub step_bytes: usize,
    }

    /// Copies `h` rows of `w >= 4` contiguous floats from `src` to rows `dst_stride` bytes
    /// apart at `dst`: 16 floats per loop step, then 8, 4, and an overlapping last 4.
    ///
    /// # Safety
    /// `src` readable for `h * w` floats, `dst` writable for `w` floats in each of `h`
    /// rows; `w >= 4`, `h >= 1`.
    pub unsafe fn copy_plane(
        src: *const f32,
        dst: *mut f32,
        w: usize,
        h: usize,
        dst_stride: usize,
    ) {
        core::arch::asm!(
            "1:",
            "mov {d}, {row}",
            "mov {k}, {w}",
            "2:",
            "subs {k}, {k}, #16",
            "blt 3f",
            "vld1.32 {{d0-d3}}, [{s}]!",
            "vld1.32 {{d4-d7}}, [{s}]!",
            "vst1.32 {{d0-d3}}, [{d}]!",
            "vst1.32 {{d4-d7}}, [{d}]!",
            "b 2b",
            "3:",
            "adds {k}, {k}, #8",
            "blt 4f",
            "vld1.32 {{d0-d3}}, [{s}]!",
            "vst1.32 {{d0-d3}}, [{d}]!",
            "sub {k}, {k}, #8",
            "4:",
            "adds {k}, {k}, #4",
            "blt 5f",
            "vld1.32 {{d0-d1}}, [{s}]!",
            "vst1.32 {{d0-d1}}, [{d}]!",
            "sub {k}, {k}, #4",
            "5:",
            // k = left - 4, in -4..=-1; 0 left is k == -4.
            "adds {k}, {k}, #4",
            "beq 6f",
            "rsb {k}, {k}, #4",
            "sub {s}, {s}, {k}, lsl #2",
            "sub {d}, {d}, {k}, lsl #2",
            "vld1.32 {{d0-d1}}, [{s}]!",
            "vst1.32 {{d0-d1}}, [{d}]",
            "6:",
            "add {row}, {row}, {ds}",
            "subs {h}, {h}, #1",
            "bne 1b",
            s = inout(reg) src => _,
            row = inout(reg) dst => _,
            h = inout(reg) h => _,
            w = in(reg) w,
            ds = in(reg) dst_stride,
            d = out(reg) _,
            k = out(reg) _,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _,
            options(nostack),
        );
    }

    /// One 4-column chunk of two output rows for [`plane_stride1_pairs`]: four input rows
    /// (q8-q15), each shifted copy built once in q7 and used by both rows.
    macro_rules! pair_chunk {
        () => {
            concat!(
                "vld1.32 {{d16-d19}}, [{a}], {wpb}\n",
                "vld1.32 {{d20-d23}}, [{a}], {wpb}\n",
                "vld1.32 {{d24-d27}}, [{a}], {wpb}\n",
                "vld1.32 {{d28-d31}}, [{a}], {nxt}\n",
                "vmov q5, q3\n",
                "vmov q6, q3\n",
                "vmla.f32 q5, q8, d0[0]\n",
                "vext.32 q7, q8, q9, #1\n",
                "vmla.f32 q5, q7, d0[1]\n",
                "vext.32 q7, q8, q9, #2\n",
                "vmla.f32 q5, q7, d1[0]\n",
                "vmla.f32 q5, q10, d1[1]\n",
                "vmla.f32 q6, q10, d0[0]\n",
                "vext.32 q7, q10, q11, #1\n",
                "vmla.f32 q5, q7, d2[0]\n",
                "vmla.f32 q6, q7, d0[1]\n",
                "vext.32 q7, q10, q11, #2\n",
                "vmla.f32 q5, q7, d2[1]\n",
                "vmla.f32 q6, q7, d1[0]\n",
                "vmla.f32 q5, q12, d3[0]\n",
                "vmla.f32 q6, q12, d1[1]\n",
                "vext.32 q7, q12, q13, #1\n",
                "vmla.f32 q5, q7, d3[1]\n",
                "vmla.f32 q6, q7, d2[0]\n",
                "vext.32 q7, q12, q13, #2\n",
                "vmla.f32 q5, q7, d4[0]\n",
                "vmla.f32 q6, q7, d2[1]\n",
                "vmla.f32 q6, q14, d3[0]\n",
                "vext.32 q7, q14, q15, #1\n",
                "vmla.f32 q6, q7, d3[1]\n",
                "vext.32 q7, q14, q15, #2\n",
                "vmla.f32 q6, q7, d4[0]\n",
                "vmax.f32 q5, q5, q4\n",
                "vmax.f32 q6, q6, q4\n",
                "vst1.32 {{d10-d11}}, [{o}], {owb}\n",
                "vst1.32 {{d12-d13}}, [{o}], {obk}\n",
            )
        };
    }

    /// `pairs` pairs of output rows of a stride-1 plane (so `ow` is the plane width): per
    /// 4 columns, 34 instructions for 8 outputs where two one-row passes take 48, because
    /// the two middle input rows are loaded and shifted once. Each row ends with one
    /// overlapping chunk when ow % 4 != 0.
    ///
    /// # Safety
    /// As [`plane_stride1`], with `2 * pairs <= oh`.
    pub unsafe fn plane_stride1_pairs(
        padded: *const f32,
        args: &PlaneArgs,
        out: *mut f32,
        pairs: usize,
        ow: usize,
    ) {
        let wp_bytes = args.wp_bytes;
        // Post-increments: down one row; from the fourth row back to the first, 4 floats on.
        let next = 16usize.wrapping_sub(3 * wp_bytes);
        let out_back = 16usize.wrapping_sub(ow * 4);
        // From the end of the first input row walked to the next pair's first row.
        let pair_step = 2 * wp_bytes - ow * 4;
        core::arch::asm!(
            "vld1.32 {{d0-d3}}, [{p}]",
            "vldr d4, [{p}, #32]",
            "vldr d5, [{p}, #40]",
            "vdup.32 q3, d4[1]",
            "vdup.32 q4, d5[0]",
            "1:",
            "ldr {n}, [{p}, #48]",
            "2:",
            pair_chunk!(),
            "subs {n}, {n}, #1",
            "bgt 2b",
            "ldr {n}, [{p}, #52]",
            "cmp {n}, #0",
            "beq 3f",
            "sub {a}, {a}, {n}",
            "sub {o}, {o}, {n}",
            pair_chunk!(),
            "3:",
            "add {a}, {a}, {step}",
            "add {o}, {o}, {owb}",
            "subs {rows}, {rows}, #1",
            "bgt 1b",
            p = in(reg) args as *const PlaneArgs,
            a = inout(reg) padded => _,
            o = inout(reg) out => _,
            rows = inout(reg) pairs => _,
            n = out(reg) _,
            wpb = in(reg) wp_bytes,
            nxt = in(reg) next,
            owb = in(reg) ow * 4,
            obk = in(reg) out_back,
            step = in(reg) pair_step,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q4") _,
            out("q5") _, out("q6") _, out("q7") _, out("q8") _, out("q9") _,
            out("q10") _, out("q11") _, out("q12") _, out("q13") _, out("q14") _,
            out("q15") _,
            options(nostack),
        );
    }

    /// All `oh` output rows of a stride-1 plane: out[x] = sum k[ky][kx] * row_ky[x + kx].
    /// Each row ends with one overlapping vector when ow % 4 != 0.
    ///
    /// # Safety
    /// `padded` must hold the zero-bordered plane (`(h + 2) * wp` floats plus the scratch
    /// slack), `out` must be writable for `oh * ow` floats, and `ow >= 4`.
    pub unsafe fn plane_stride1(padded: *const f32, args: &PlaneArgs, out: *mut f32, oh: usize) {
        core::arch::asm!(
            "vld1.32 {{d0-d3}}, [{p}]",
            "vldr d4, [{p}, #32]",
            "vldr d5, [{p}, #40]",
            "vdup.32 q3, d4[1]",
            "vdup.32 q4, d5[0]",
            "1:",
            "mov {a}, {row}",
            "ldr {b}, [{p}, #56]",
            "add {c}, {a}, {b}, lsl #1",
            "add {b}, {a}, {b}",
            "ldr {n}, [{p}, #48]",
            "ldr {back}, [{p}, #52]",
            "2:",
            "vld1.32 {{d16-d19}}, [{a}], {inc}",
            "vld1.32 {{d20-d23}}, [{b}], {inc}",
            "vld1.32 {{d24-d27}}, [{c}], {inc}",
            "vmov q5, q3",
            "vmul.f32 q6, q10, d1[1]",
            "vmla.f32 q5, q8, d0[0]",
            "vext.32 q14, q8, q9, #1",
            "vext.32 q15, q8, q9, #2",
            "vmla.f32 q5, q14, d0[1]",
            "vmla.f32 q5, q15, d1[0]",
            "vext.32 q14, q10, q11, #1",
            "vext.32 q15, q10, q11, #2",
            "vmla.f32 q6, q14, d2[0]",
            "vmla.f32 q6, q15, d2[1]",
            "vext.32 q14, q12, q13, #1",
            "vext.32 q15, q12, q13, #2",
            "vmla.f32 q5, q12, d3[0]",
            "vmla.f32 q6, q14, d3[1]",
            "vmla.f32 q5, q15, d4[0]",
            "vadd.f32 q5, q5, q6",
            "vmax.f32 q5, q5, q4",
            "vst1.32 {{d10-d11}}, [{o}]!",
            neon_row_end!("", "60"),
            p = in(reg) args as *const PlaneArgs,
            row = inout(reg) padded => _,
            rows = inout(reg) oh => _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            o = inout(reg) out => _,
            n = out(reg) _,
            back = out(reg) _,
            inc = in(reg) 16usize,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q4") _,
            out("q5") _, out("q6") _, out("q8") _, out("q9") _, out("q10") _,
            out("q11") _, out("q12") _, out("q13") _, out("q14") _, out("q15") _,
            options(nostack),
        );
    }

    /// All `oh` output rows of a stride-2 plane: out[x] = sum k[ky][kx] * row_ky[2x + kx];
    /// `vld2` splits even and odd columns, the kx = 2 vector is the even one shifted by one.
    ///
    /// # Safety
    /// As [`plane_stride1`].
    pub unsafe fn plane_stride2(padded: *const f32, args: &PlaneArgs, out: *mut f32, oh: usize) {
        core::arch::asm!(
            "vld1.32 {{d0-d3}}, [{p}]",
            "vldr d4, [{p}, #32]",
            "vldr d5, [{p}, #40]",
            "vdup.32 q3, d4[1]",
            "vdup.32 q4, d5[0]",
            "1:",
            "mov {a}, {row}",
            "ldr {b}, [{p}, #56]",
            "add {c}, {a}, {b}, lsl #1",
            "add {b}, {a}, {b}",
            "ldr {n}, [{p}, #48]",
            "ldr {back}, [{p}, #52]",
            "2:",
            "vld2.32 {{d16-d19}}, [{a}]!",
            "vld1.32 {{d20[0]}}, [{a}]",
            "vld2.32 {{d22-d25}}, [{b}]!",
            "vld1.32 {{d26[0]}}, [{b}]",
            "vmov q5, q3",
            "vext.32 q10, q8, q10, #1",
            "vmul.f32 q6, q11, d1[1]",
            "vext.32 q13, q11, q13, #1",
            "vmla.f32 q5, q8, d0[0]",
            "vmla.f32 q6, q12, d2[0]",
            "vmla.f32 q5, q9, d0[1]",
            "vmla.f32 q6, q13, d2[1]",
            "vmla.f32 q5, q10, d1[0]",
            "vld2.32 {{d16-d19}}, [{c}]!",
            "vld1.32 {{d20[0]}}, [{c}]",
            "vext.32 q10, q8, q10, #1",
            "vmla.f32 q5, q8, d3[0]",
            "vmla.f32 q6, q9, d3[1]",
            "vmla.f32 q5, q10, d4[0]",
            "vadd.f32 q5, q5, q6",
            "vmax.f32 q5, q5, q4",
            "vst1.32 {{d10-d11}}, [{o}]!",
            neon_row_end!(", lsl #1", "60"),
            p = in(reg) args as *const PlaneArgs,
            row = inout(reg) padded => _,
            rows = inout(reg) oh => _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            o = inout(reg) out => _,
            n = out(reg) _,
            back = out(reg) _,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q4") _,
            out("q5") _, out("q6") _, out("q8") _, out("q9") _, out("q10") _,
            out("q11") _, out("q12") _, out("q13") _,
            options(nostack),
        );
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    //! AVX2 reads the planes in place, like AVX-512: masked loads give zeros outside a
    //! row (the padding) where a block of 8 outputs reaches it, plain loads elsewhere. A
    //! scratch copy of each plane cost about as much as the arithmetic on these small
    //! maps (a `memcpy` per 7-float row on 7x7 maps). Each input row's taps are made once
    //! per column block and their products go to the output rows they touch.
    use std::arch::x86_64::*;

    /// The even-indexed and the odd-indexed floats of the 16 in `lo` then `hi`, in order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::kernels) unsafe fn deinterleave(lo: __m256, hi: __m256) -> [__m256; 2] {
        // The shuffles give [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6].
        [
            pairs_in_order(_mm256_shuffle_ps(lo, hi, 0x88)),
            pairs_in_order(_mm256_shuffle_ps(lo, hi, 0xDD)),
        ]
    }

    /// Lanes 0 1 4 5 2 3 6 7 put in order 0..8: what an in-lane even/odd shuffle of two
    /// vectors leaves, moved by 64-bit pairs.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::kernels) unsafe fn pairs_in_order(mixed: __m256) -> __m256 {
        _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(mixed), 0xD8))
    }

    /// Lanes `i` whose column `start + i` lies in `0..width`, as a `maskload` mask.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lanes_inside(start: isize, width: usize) -> __m256i {
        let column = _mm256_add_epi32(
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            _mm256_set1_epi32(start as i32),
        );
        let below_width = _mm256_cmpgt_epi32(_mm256_set1_epi32(width as i32), column);
        let negative = _mm256_cmpgt_epi32(_mm256_setzero_si256(), column);
        _mm256_andnot_si256(negative, below_width)
    }

    /// The weights, bias and floor of one plane, broadcast.
    struct Weights {
        k: [__m256; 9],
        bias: __m256,
        floor: __m256,
    }

    impl Weights {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn new(params: &[f32; 12]) -> Weights {
            Weights {
                k: std::array::from_fn(|i| _mm256_set1_ps(params[i])),
                bias: _mm256_set1_ps(params[9]),
                floor: _mm256_set1_ps(params[10]),
            }
        }

        /// `acc` plus kernel row `r`'s products of one input row's taps, as one chain of
        /// multiply-adds: no separate product to add, so one register fewer is live (in
        /// the unmasked column blocks all nine weights then fit the 16 ymm registers).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn accumulate(&self, acc: __m256, t: &[__m256; 3], r: usize) -> __m256 {
            let acc = _mm256_fmadd_ps(t[0], self.k[3 * r], acc);
            let acc = _mm256_fmadd_ps(t[1], self.k[3 * r + 1], acc);
            _mm256_fmadd_ps(t[2], self.k[3 * r + 2], acc)
        }

        /// Kernel row `r`'s products of one input row's taps, summed: a chain of its own.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn products(&self, t: &[__m256; 3], r: usize) -> __m256 {
            let sum = _mm256_mul_ps(t[0], self.k[3 * r]);
            let sum = _mm256_fmadd_ps(t[1], self.k[3 * r + 1], sum);
            _mm256_fmadd_ps(t[2], self.k[3 * r + 2], sum)
        }

        /// The `h` output rows of one column block at stride 1 from the taps of input
        /// rows `0..h`: before input row `iy`, `above` is output row `iy - 1` without its
        /// kernel row 2 and `current` output row `iy` with its kernel row 0 only.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn stride1_rows(
            &self,
            h: usize,
            mut taps: impl FnMut(usize) -> [__m256; 3],
            mut store: impl FnMut(usize, __m256),
        ) {
            let (mut above, mut current) = (self.bias, self.bias);
            for iy in 0..h {
                let t = taps(iy);
                if iy > 0 {
                    store(iy - 1, self.accumulate(above, &t, 2));
                }
                above = self.accumulate(current, &t, 1);
                current = self.accumulate(self.bias, &t, 0);
            }
            store(h - 1, above);
        }

        /// The `oh` output rows of one column block at stride 2: output row `oy` from
        /// input rows `2 oy - 1` (carried over), `2 oy` and `2 oy + 1`. Row `2 oy + 1`'s
        /// products are summed apart and added at the end: two chains of three
        /// multiply-adds where one of six kept too many rows' work waiting in the
        /// scheduler (8-17 % faster on Zen 4 from 28x28 up).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn stride2_rows(
            &self,
            (h, oh): (usize, usize),
            mut taps: impl FnMut(usize) -> [__m256; 3],
            mut store: impl FnMut(usize, __m256),
        ) {
            let mut carried = self.bias;
            for oy in 0..oh {
                let mut acc = self.accumulate(carried, &taps(2 * oy), 1);
                if 2 * oy + 1 < h {
                    let t = taps(2 * oy + 1);
                    acc = _mm256_add_ps(acc, self.products(&t, 2));
                    carried = self.accumulate(self.bias, &t, 0);
                }
                store(oy, acc);
            }
        }
    }

    /// One plane whose output rows are at most 8 wide (`w <= 8 STRIDE`: 7x7 maps), one
    /// vector per row. Rows are stored whole, their extra lanes landing on the next rows'
    /// first outputs, which those rows rewrite; rows whose vector would reach past the
    /// plane are stored under a mask.
    ///
    /// # Safety
    /// AVX2 and FMA available; `w <= 8 STRIDE`, `STRIDE` 1 or 2; `input` readable for
    /// `h * w` floats, `out` writable for `oh * ow`, where `(oh, ow)` is the padding-1
    /// output size of `(h, w)` at `STRIDE`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn narrow_plane<const STRIDE: usize>(
        input: *const f32,
        (h, w): (usize, usize),
        params: &[f32; 12],
        out: *mut f32,
        (oh, ow): (usize, usize),
    ) {
        debug_assert!(w <= 8 * STRIDE && ow <= 8);
        let weights = Weights::new(params);
        let store = |y: usize, acc: __m256| {
            let v = _mm256_max_ps(acc, weights.floor);
            if y * ow + 8 <= oh * ow {
                _mm256_storeu_ps(out.add(y * ow), v);
            } else {
                _mm256_maskstore_ps(out.add(y * ow), lanes_inside(0, ow), v);
            }
        };
        // Masked-off lanes are not read, so the addresses may lie outside the plane.
        if STRIDE == 1 {
            let masks = [lanes_inside(-1, w), lanes_inside(0, w), lanes_inside(1, w)];
            let taps = |iy: usize| -> [__m256; 3] {
                let row = input.wrapping_add(iy * w);
                std::array::from_fn(|kx| {
                    _mm256_maskload_ps(row.wrapping_add(kx).wrapping_sub(1), masks[kx])
                })
            };
            weights.stride1_rows(h, taps, store);
        } else {
            let masks = [lanes_inside(0, w), lanes_inside(8, w)];
            let taps = |iy: usize| -> [__m256; 3] {
                let row = input.add(iy * w);
                let lo = _mm256_maskload_ps(row, masks[0]);
                let hi = _mm256_maskload_ps(row.wrapping_add(8), masks[1]);
                let [even, odd] = deinterleave(lo, hi);
                // Columns 2x - 1: the odd ones a lane later, the padding in lane 0.
                let shift = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
                let before = _mm256_permutevar8x32_ps(odd, shift);
                [_mm256_blend_ps::<1>(before, _mm256_setzero_ps()), even, odd]
            };
            weights.stride2_rows((h, oh), taps, store);
        }
    }

    /// One plane with output rows over 8 wide, in column blocks of 8 outputs (the last
    /// overlapping the one before).
    ///
    /// # Safety
    /// AVX2 and FMA available; `STRIDE` 1 or 2; `ow > 8`; `input` readable for `h * w`
    /// floats, `out` writable for `oh * ow`, where `(oh, ow)` is the padding-1 output size
    /// of `(h, w)` at `STRIDE`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn wide_plane<const STRIDE: usize>(
        input: *const f32,
        (h, w): (usize, usize),
        params: &[f32; 12],
        out: *mut f32,
        (oh, ow): (usize, usize),
    ) {
        debug_assert!(ow > 8);
        let weights = Weights::new(params);
        let mut x = 0;
        while x < ow {
            let x0 = x.min(ow - 8);
            // The columns each input vector starts at: stride 1 `x0 - 1`, `x0`, `x0 + 1`;
            // stride 2 `2 x0 - 1` and `2 x0 + 7` (the 16 columns split into the
            // kx = 0 and 1 taps), then `2 x0 + 1` and `2 x0 + 8` for the odd columns
            // from `2 x0 + 1` to `2 x0 + 15` (kx = 2). Ending at `2 x0 + 15` rather than
            // a column later, the last block of an even-width row stays inside it and
            // needs no masks.
            let first: [isize; 4] = if STRIDE == 1 {
                [-1, 0, 1, 0].map(|d| x0 as isize + d)
            } else {
                [-1, 7, 1, 8].map(|d| 2 * x0 as isize + d)
            };
            // One past the last column read.
            let last = first.iter().max().expect("four vectors") + 8;
            let block = Block {
                input,
                w,
                first,
                out: out.add(x0),
                ow,
            };
            if first[0] >= 0 && last <= w as isize {
                block.rows_inside::<STRIDE>(&weights, (h, oh));
            } else {
                block.rows::<STRIDE, true>(&weights, (h, oh));
            }
            x += 8;
        }
    }

    /// One column block of [`wide_plane`].
    struct Block {
        input: *const f32,
        w: usize,
        /// The column each input vector starts at.
        first: [isize; 4],
        /// The block's first output column in row 0.
        out: *mut f32,
        ow: usize,
    }

    impl Block {
        /// [`Block::rows`] without masks, in a function of its own: inlined into
        /// `wide_plane` beside the masked blocks' loop, it shared the registers with their
        /// masks and read six of the nine weights from the stack on every row.
        #[inline(never)]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn rows_inside<const STRIDE: usize>(
            &self,
            weights: &Weights,
            (h, oh): (usize, usize),
        ) {
            self.rows::<STRIDE, false>(weights, (h, oh))
        }

        /// The block's output rows, its input vectors loaded under masks if `MASKED`
        /// (otherwise they must lie inside the rows).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn rows<const STRIDE: usize, const MASKED: bool>(
            &self,
            weights: &Weights,
            (h, oh): (usize, usize),
        ) {
            let masks = self.first.map(|col| lanes_inside(col, self.w));
            // Masked-off lanes are not read, so the addresses may lie outside the plane.
            let load = |row: *const f32, i: usize| {
                let at = row.wrapping_offset(self.first[i]);
                if MASKED {
                    _mm256_maskload_ps(at, masks[i])
                } else {
                    _mm256_loadu_ps(at)
                }
            };
            if STRIDE == 1 {
                let taps = |iy: usize| -> [__m256; 3] {
                    let row = self.input.wrapping_add(iy * self.w);
                    std::array::from_fn(|kx| load(row, kx))
                };
                let store = |y: usize, acc: __m256| {
                    let v = _mm256_max_ps(acc, weights.floor);
                    _mm256_storeu_ps(self.out.add(y * self.ow), v)
                };
                weights.stride1_rows(h, taps, store);
            } else {
                // The in-lane shuffles leave the outputs in the order 0 1 4 5 2 3 6 7, the
                // same in all three taps: the sums are put in order once, at the store.
                let taps = |iy: usize| -> [__m256; 3] {
                    let row = self.input.wrapping_add(iy * self.w);
                    let [a, b, c, d] = std::array::from_fn(|i| load(row, i));
                    [
                        _mm256_shuffle_ps(a, b, 0x88),
                        _mm256_shuffle_ps(a, b, 0xDD),
                        // Columns 1 3 from c, 9 11 from d, 5 7 from c, 13 15 from d.
                        _mm256_shuffle_ps(c, d, 0xD8),
                    ]
                };
                let store = |y: usize, acc: __m256| {
                    let v = pairs_in_order(_mm256_max_ps(acc, weights.floor));
                    _mm256_storeu_ps(self.out.add(y * self.ow), v)
                };
                weights.stride2_rows((h, oh), taps, store);
            }
        }
    }
}

/// Straight from the definition, on the unpadded input (images after images, NCHW),
/// in f64: the tests' reference, here and for the channels-last kernel.
#[cfg(test)]
pub(crate) fn reference(
    g: &Depthwise3x3,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let (h, w) = (g.height as isize, g.width as isize);
    let (oh, ow) = (g.output_height(), g.output_width());
    let images = input.len() / g.input_len();
    let mut out = Vec::with_capacity(images * g.output_len());
    for plane in 0..images * g.channels {
        let c = plane % g.channels;
        let x_in = &input[plane * g.height * g.width..];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias[c] as f64;
                for ky in 0..3isize {
                    for kx in 0..3isize {
                        let iy = (oy * g.stride) as isize - 1 + ky;
                        let ix = (ox * g.stride) as isize - 1 + kx;
                        if iy >= 0 && iy < h && ix >= 0 && ix < w {
                            acc += weights[c * 9 + (ky * 3 + kx) as usize] as f64
                                * x_in[(iy * w + ix) as usize] as f64;
                        }
                    }
                }
                let v = acc as f32;
                out.push(if g.relu { v.max(0.0) } else { v });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::test_pattern;

    fn check(g: Depthwise3x3, images: usize) {
        let input = test_pattern(images * g.input_len(), 1 + g.width as u32);
        let weights = test_pattern(g.channels * 9, 7);
        let bias = test_pattern(g.channels, 3);
        let expected = reference(&g, &input, &weights, &bias);
        for imp in Isa::ALL {
            if !imp.is_available() {
                continue;
            }
            let mut got = vec![f32::NAN; images * g.output_len()];
            g.run_with(imp, &input, &weights, &bias, &mut got);
            for (i, (e, a)) in expected.iter().zip(&got).enumerate() {
                assert!(
                    (e - a).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{imp:?} {g:?} at {i}: {a} != {e}"
                );
            }
        }
    }

    #[test]
    fn awkward_sizes_match_reference() {
        // Channel counts off the vector width, maps from 1x1 up, odd sizes for stride 2,
        // widths around 4 and 8 (vector widths) to hit the overlapping last vector, and
        // around 16 and 32 for the masked 16-lane blocks of AVX-512 (several blocks per
        // row at stride 2 from width 33; 32-output blocks, whole or masked, beyond).
        for &channels in &[1, 3, 5, 13] {
            for &(h, w) in &[
                (1, 1),
                (2, 2),
                (3, 3),
                (1, 9),
                (4, 4),
                (5, 7),
                (7, 7),
                (8, 8),
                (9, 9),
                (6, 17),
                (15, 15),
                (14, 14),
                (11, 23),
                (16, 19),
                (3, 16),
                (5, 28),
                (2, 31),
                (4, 32),
                (5, 33),
                (3, 65),
                (4, 64),
                (5, 97),
                (2, 130),
            ] {
                for stride in [1, 2] {
                    for relu in [false, true] {
                        let g = Depthwise3x3 {
                            channels,
                            height: h,
                            width: w,
                            stride,
                            relu,
                        };
                        check(g, 1);
                    }
                }
            }
        }
    }

    #[test]
    fn batches_use_per_channel_weights() {
        check(
            Depthwise3x3 {
                channels: 6,
                height: 10,
                width: 12,
                stride: 1,
                relu: true,
            },
            3,
        );
        check(
            Depthwise3x3 {
                channels: 6,
                height: 13,
                width: 11,
                stride: 2,
                relu: false,
            },
            2,
        );
        // AVX-512 pairs planes with outputs at most 8 wide: an odd channel count puts
        // pairs across images.
        for (side, stride) in [(7, 1), (14, 2), (15, 2)] {
            check(
                Depthwise3x3 {
                    channels: 5,
                    height: side,
                    width: side,
                    stride,
                    relu: true,
                },
                3,
            );
        }
    }

    #[test]
    fn relu_clamps_and_linear_does_not() {
        let g = Depthwise3x3 {
            channels: 1,
            height: 4,
            width: 8,
            stride: 1,
            relu: false,
        };
        let input = vec![1.0; 32];
        let weights = vec![-1.0; 9];
        let mut out = vec![0.0; 32];
        g.run(&input, &weights, &[0.5], &mut out);
        assert!(out.iter().all(|&v| v < 0.0));
        let g = Depthwise3x3 { relu: true, ..g };
        g.run(&input, &weights, &[0.5], &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }
}

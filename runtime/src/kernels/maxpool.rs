//! 3x3 max pooling, NCHW f32, padding 1, stride 1 or 2 (ShuffleNet's after its first
//! convolution). Same plan as the depthwise kernel: on AVX-512 the vectors read the plane
//! in place under masks (`window3x3_avx512`); elsewhere each plane is copied into a
//! bordered scratch plane (borders at -inf), so the vector loop never tests borders:
//! AVX2 rows of 8 or more outputs, NEON `asm!` for stride 2 on armv7 (see `depthwise.rs`
//! for why not intrinsics), scalar otherwise.

use super::isa::Isa;

/// Geometry of one 3x3 max pool layer (padding 1 on every side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool3x3 {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// 1 or 2.
    pub stride: usize,
}

/// Floats the vector loads may read past the last padded row.
const SCRATCH_SLACK: usize = 32;

impl MaxPool3x3 {
    pub fn output_height(&self) -> usize {
        (self.height - 1) / self.stride + 1
    }

    pub fn output_width(&self) -> usize {
        (self.width - 1) / self.stride + 1
    }

    /// Pools `input.len() / (channels * height * width)` images with the fastest
    /// available path.
    pub fn run(&self, input: &[f32], output: &mut [f32]) {
        self.run_with(Isa::best(), input, output)
    }

    /// Same as [`MaxPool3x3::run`] with a chosen code path.
    ///
    /// Panics if the slice lengths do not match the geometry or `imp` is unavailable
    /// (callers validate shapes).
    pub fn run_with(&self, imp: Isa, input: &[f32], output: &mut [f32]) {
        assert!(imp.is_available(), "{imp:?} is not available on this CPU");
        assert!(
            self.stride == 1 || self.stride == 2,
            "stride must be 1 or 2"
        );
        assert!(self.channels > 0 && self.height > 0 && self.width > 0);
        let (h, w, s) = (self.height, self.width, self.stride);
        let (oh, ow) = (self.output_height(), self.output_width());
        assert_eq!(input.len() % (self.channels * h * w), 0);
        assert_eq!(
            output.len(),
            input.len() / (h * w) * (oh * ow),
            "output length"
        );
        #[cfg(target_arch = "x86_64")]
        if imp == Isa::Avx512 {
            for (in_plane, out_plane) in input
                .chunks_exact(h * w)
                .zip(output.chunks_exact_mut(oh * ow))
            {
                // SAFETY: AVX-512F is available (imp); the planes hold h * w and oh * ow
                // floats, (oh, ow) being this geometry's output size.
                unsafe {
                    super::window3x3_avx512::max_pool_plane(
                        in_plane.as_ptr(),
                        (h, w),
                        s,
                        out_plane.as_mut_ptr(),
                        (oh, ow),
                    )
                };
            }
            return;
        }
        let wp = w + 2;
        let mut padded = vec![f32::NEG_INFINITY; (h + 2) * wp + SCRATCH_SLACK];
        for (in_plane, out_plane) in input
            .chunks_exact(h * w)
            .zip(output.chunks_exact_mut(oh * ow))
        {
            for (y, in_row) in in_plane.chunks_exact(w).enumerate() {
                let start = (y + 1) * wp + 1;
                padded[start..start + w].copy_from_slice(in_row);
            }
            #[cfg(target_arch = "arm")]
            if s == 2 && ow >= 4 && imp == Isa::Neon {
                let args = neon::PlaneArgs {
                    chunks: ow / 4,
                    back_bytes: ((4 - ow % 4) % 4) * 4,
                    wp_bytes: wp * 4,
                    step_bytes: 2 * wp * 4,
                };
                // SAFETY: `padded` holds rows 0..=h+1 plus SCRATCH_SLACK floats, which covers
                // the loads past the last needed column (at most 9 floats); `out_plane`
                // holds oh rows of ow >= 4 floats.
                unsafe { neon::plane_stride2(padded.as_ptr(), &args, out_plane.as_mut_ptr(), oh) };
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if imp.avx2() && ow >= 8 {
                // SAFETY: AVX2 is available (imp); `padded` holds rows 0..=h+1 plus
                // SCRATCH_SLACK floats, which covers the loads past the last needed column
                // (at most 16 floats); `out_plane` holds oh rows of ow >= 8 floats.
                unsafe { avx2::plane(padded.as_ptr(), wp, s, out_plane.as_mut_ptr(), (oh, ow)) };
                continue;
            }
            for (oy, out_row) in out_plane.chunks_exact_mut(ow).enumerate() {
                let rows = &padded[oy * s * wp..];
                for (ox, out) in out_row.iter_mut().enumerate() {
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            m = m.max(rows[ky * wp + ox * s + kx]);
                        }
                    }
                    *out = m;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::kernels::depthwise::avx2::pairs_in_order;
    use std::arch::x86_64::*;

    /// All output rows of one plane from its -inf-bordered copy (rows `wp` apart), in
    /// blocks of 8 outputs, the last one overlapping the one before. At stride 2 the
    /// columns are split with in-lane shuffles only, which leave the outputs in the order
    /// 0 1 4 5 2 3 6 7 in every tap alike: the maximum is put in order once, at the store.
    ///
    /// # Safety
    /// AVX2 available; `padded` readable for the bordered rows `0..stride * (oh - 1) + 3`
    /// plus 16 floats past the last needed column; `out` writable for `oh * ow`; `ow >= 8`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn plane(
        padded: *const f32,
        wp: usize,
        stride: usize,
        out: *mut f32,
        (oh, ow): (usize, usize),
    ) {
        let row_max = |p: *const f32| {
            if stride == 1 {
                let taps = [p, p.add(1), p.add(2)].map(|t| _mm256_loadu_ps(t));
                _mm256_max_ps(_mm256_max_ps(taps[0], taps[1]), taps[2])
            } else {
                let [a, b, c, d] = [0, 8, 2, 10].map(|i| _mm256_loadu_ps(p.add(i)));
                let even = _mm256_shuffle_ps(a, b, 0x88);
                let odd = _mm256_shuffle_ps(a, b, 0xDD);
                let next_even = _mm256_shuffle_ps(c, d, 0x88);
                _mm256_max_ps(_mm256_max_ps(even, odd), next_even)
            }
        };
        for oy in 0..oh {
            let first = padded.add(oy * stride * wp);
            let mut x = 0;
            while x < ow {
                let x0 = x.min(ow - 8);
                let p = first.add(stride * x0);
                let m = _mm256_max_ps(
                    _mm256_max_ps(row_max(p), row_max(p.add(wp))),
                    row_max(p.add(2 * wp)),
                );
                let m = if stride == 1 { m } else { pairs_in_order(m) };
                _mm256_storeu_ps(out.add(oy * ow + x0), m);
                x += 8;
            }
        }
    }
}

#[cfg(target_arch = "arm")]
mod neon {
    /// Read by the assembly at fixed offsets 0, 4, 8, 12.
    #[repr(C)]
    pub struct PlaneArgs {
        pub chunks: usize,
        pub back_bytes: usize,
        pub wp_bytes: usize,
        pub step_bytes: usize,
    }

    /// All `oh` output rows of a stride-2 plane: out[x] = max over 3x3 of row_ky[2x + kx].
    /// `vld2` splits even and odd columns; the kx = 2 vector is the even one shifted by one.
    ///
    /// # Safety
    /// `padded` must hold the bordered plane plus slack, `out` be writable for `oh * ow`
    /// floats, and `ow >= 4`.
    pub unsafe fn plane_stride2(padded: *const f32, args: &PlaneArgs, out: *mut f32, oh: usize) {
        core::arch::asm!(
            "1:",
            "mov {a}, {row}",
            "ldr {b}, [{p}, #8]",
            "add {c}, {a}, {b}, lsl #1",
            "add {b}, {a}, {b}",
            "ldr {n}, [{p}]",
            "ldr {back}, [{p}, #4]",
            "2:",
            "vld2.32 {{d16-d19}}, [{a}]!",
            "vld1.32 {{d20[0]}}, [{a}]",
            "vld2.32 {{d22-d25}}, [{b}]!",
            "vld1.32 {{d26[0]}}, [{b}]",
            "vext.32 q10, q8, q10, #1",
            "vmax.f32 q5, q8, q9",
            "vext.32 q13, q11, q13, #1",
            "vmax.f32 q6, q11, q12",
            "vmax.f32 q5, q5, q10",
            "vmax.f32 q6, q6, q13",
            "vld2.32 {{d16-d19}}, [{c}]!",
            "vld1.32 {{d20[0]}}, [{c}]",
            "vext.32 q10, q8, q10, #1",
            "vmax.f32 q5, q5, q8",
            "vmax.f32 q6, q6, q9",
            "vmax.f32 q5, q5, q10",
            "vmax.f32 q5, q5, q6",
            "vst1.32 {{d10-d11}}, [{o}]!",
            neon_row_end!(", lsl #1", "12"),
            p = in(reg) args as *const PlaneArgs,
            row = inout(reg) padded => _,
            rows = inout(reg) oh => _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            o = inout(reg) out => _,
            n = out(reg) _,
            back = out(reg) _,
            out("q5") _, out("q6") _, out("q8") _, out("q9") _, out("q10") _,
            out("q11") _, out("q12") _, out("q13") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(g: &MaxPool3x3, input: &[f32]) -> Vec<f32> {
        let (h, w, s) = (g.height as isize, g.width as isize, g.stride as isize);
        let (oh, ow) = (g.output_height(), g.output_width());
        let mut out = Vec::new();
        for plane in input.chunks_exact(g.height * g.width) {
            for oy in 0..oh as isize {
                for ox in 0..ow as isize {
                    let mut m = f32::NEG_INFINITY;
                    for ky in -1..=1 {
                        for kx in -1..=1 {
                            let (y, x) = (oy * s + ky, ox * s + kx);
                            if y >= 0 && y < h && x >= 0 && x < w {
                                m = m.max(plane[(y * w + x) as usize]);
                            }
                        }
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    #[test]
    fn awkward_sizes_match_reference() {
        for channels in [1, 3, 5] {
            for (h, w) in [
                (1, 1),
                (2, 2),
                (3, 3),
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
                (2, 31),
                (4, 32),
                (5, 33),
                (112, 112),
            ] {
                for stride in [1, 2] {
                    let g = MaxPool3x3 {
                        channels,
                        height: h,
                        width: w,
                        stride,
                    };
                    let input: Vec<f32> = (0..2 * channels * h * w)
                        .map(|i| ((i * 7919 % 113) as f32 - 56.0) * 0.5)
                        .collect();
                    let expected = reference(&g, &input);
                    for imp in Isa::ALL.into_iter().filter(|imp| imp.is_available()) {
                        let mut got = vec![0f32; expected.len()];
                        g.run_with(imp, &input, &mut got);
                        assert_eq!(got, expected, "{imp:?} {g:?}");
                    }
                }
            }
        }
    }
}

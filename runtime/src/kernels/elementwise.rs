//! Element-wise passes tract leaves unvectorised on armv7: ReLU, and ReLU of a sum.
//!
//! tract runs these through its generic binary-op loops, about 14 instructions per element
//! under qemu-arm -cpu cortex-a9 (`edgebench qemu --per-op`). Here: NEON `asm!` on armv7
//! (see `depthwise.rs` for why not intrinsics), 16 elements per iteration; plain loops
//! elsewhere, which LLVM vectorises on x86-64.

/// `x = max(x, 0)` for every element.
pub fn relu_in_place(data: &mut [f32]) {
    let done = vector_part(data.len());
    #[cfg(target_arch = "arm")]
    if done > 0 && crate::kernels::isa::neon_detected() {
        // SAFETY: `done` is a multiple of 16 within `data`.
        unsafe { neon::relu(data.as_mut_ptr(), done / 16) };
        relu_scalar(&mut data[done..]);
        return;
    }
    let _ = done;
    relu_scalar(data);
}

/// `acc = max(acc + other, 0)` for every element; the slices have the same length.
pub fn add_relu_in_place(acc: &mut [f32], other: &[f32]) {
    assert_eq!(acc.len(), other.len(), "add_relu_in_place: length mismatch");
    let done = vector_part(acc.len());
    #[cfg(target_arch = "arm")]
    if done > 0 && crate::kernels::isa::neon_detected() {
        // SAFETY: `done` is a multiple of 16 within both slices.
        unsafe { neon::add_relu(acc.as_mut_ptr(), other.as_ptr(), done / 16) };
        add_relu_scalar(&mut acc[done..], &other[done..]);
        return;
    }
    let _ = done;
    add_relu_scalar(acc, other);
}

/// `x = x + bias[c]` over `[.., C, plane]` data, then `max(x, 0)` when `relu`: the bias
/// (and ReLU) of a convolution whose matmul could not take them.
pub fn bias_relu_in_place(data: &mut [f32], bias: &[f32], plane: usize, relu: bool) {
    assert!(plane > 0 && !bias.is_empty() && data.len().is_multiple_of(plane * bias.len()));
    let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
    for (i, chunk) in data.chunks_exact_mut(plane).enumerate() {
        let b = bias[i % bias.len()];
        let done = vector_part(chunk.len());
        #[cfg(target_arch = "arm")]
        if done > 0 && crate::kernels::isa::neon_detected() {
            let args = [b, floor];
            // SAFETY: `done` is a multiple of 16 within `chunk`.
            unsafe { neon::bias_floor(chunk.as_mut_ptr(), &args, done / 16) };
            bias_floor_scalar(&mut chunk[done..], b, floor);
            continue;
        }
        let _ = done;
        bias_floor_scalar(chunk, b, floor);
    }
}

fn bias_floor_scalar(data: &mut [f32], bias: f32, floor: f32) {
    for x in data {
        let v = *x + bias;
        *x = if v < floor { floor } else { v };
    }
}

/// Elements handled 16 at a time by the vector loops.
fn vector_part(len: usize) -> usize {
    len / 16 * 16
}

fn relu_scalar(data: &mut [f32]) {
    for x in data {
        // Not `f32::max`: keep NaN as NaN, like tract's Max. An unconditional store (a
        // select, not a branch) lets LLVM vectorise it and avoids mispredicted branches.
        *x = if *x < 0.0 { 0.0 } else { *x };
    }
}

fn add_relu_scalar(acc: &mut [f32], other: &[f32]) {
    for (a, b) in acc.iter_mut().zip(other) {
        let s = *a + *b;
        *a = if s < 0.0 { 0.0 } else { s };
    }
}

#[cfg(target_arch = "arm")]
mod neon {
    /// # Safety
    /// `data` must be valid for `blocks * 16` floats.
    pub unsafe fn relu(data: *mut f32, blocks: usize) {
        core::arch::asm!(
            "vmov.i32 q8, #0",
            "2:",
            "vld1.32 {{d0-d3}}, [{src}]!",
            "vld1.32 {{d4-d7}}, [{src}]!",
            "vmax.f32 q0, q0, q8",
            "vmax.f32 q1, q1, q8",
            "vmax.f32 q2, q2, q8",
            "vmax.f32 q3, q3, q8",
            "vst1.32 {{d0-d3}}, [{dst}]!",
            "vst1.32 {{d4-d7}}, [{dst}]!",
            "subs {n}, {n}, #1",
            "bgt 2b",
            src = inout(reg) data => _,
            dst = inout(reg) data => _,
            n = inout(reg) blocks => _,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q8") _,
            options(nostack),
        );
    }

    /// `x = max(x + args[0], args[1])`.
    ///
    /// # Safety
    /// `data` must be valid for `blocks * 16` floats.
    pub unsafe fn bias_floor(data: *mut f32, args: &[f32; 2], blocks: usize) {
        core::arch::asm!(
            "vld1.32 {{d16}}, [{p}]",
            "vdup.32 q9, d16[1]",
            "vdup.32 q8, d16[0]",
            "2:",
            "vld1.32 {{d0-d3}}, [{src}]!",
            "vld1.32 {{d4-d7}}, [{src}]!",
            "vadd.f32 q0, q0, q8",
            "vadd.f32 q1, q1, q8",
            "vadd.f32 q2, q2, q8",
            "vadd.f32 q3, q3, q8",
            "vmax.f32 q0, q0, q9",
            "vmax.f32 q1, q1, q9",
            "vmax.f32 q2, q2, q9",
            "vmax.f32 q3, q3, q9",
            "vst1.32 {{d0-d3}}, [{dst}]!",
            "vst1.32 {{d4-d7}}, [{dst}]!",
            "subs {n}, {n}, #1",
            "bgt 2b",
            p = in(reg) args.as_ptr(),
            src = inout(reg) data as *const f32 => _,
            dst = inout(reg) data => _,
            n = inout(reg) blocks => _,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q8") _, out("q9") _,
            options(nostack),
        );
    }

    /// # Safety
    /// `acc` and `other` must be valid for `blocks * 16` floats.
    pub unsafe fn add_relu(acc: *mut f32, other: *const f32, blocks: usize) {
        core::arch::asm!(
            "vmov.i32 q12, #0",
            "2:",
            "vld1.32 {{d0-d3}}, [{src}]!",
            "vld1.32 {{d4-d7}}, [{src}]!",
            "vld1.32 {{d16-d19}}, [{b}]!",
            "vld1.32 {{d20-d23}}, [{b}]!",
            "vadd.f32 q0, q0, q8",
            "vadd.f32 q1, q1, q9",
            "vadd.f32 q2, q2, q10",
            "vadd.f32 q3, q3, q11",
            "vmax.f32 q0, q0, q12",
            "vmax.f32 q1, q1, q12",
            "vmax.f32 q2, q2, q12",
            "vmax.f32 q3, q3, q12",
            "vst1.32 {{d0-d3}}, [{dst}]!",
            "vst1.32 {{d4-d7}}, [{dst}]!",
            "subs {n}, {n}, #1",
            "bgt 2b",
            src = inout(reg) acc as *const f32 => _,
            dst = inout(reg) acc => _,
            b = inout(reg) other => _,
            n = inout(reg) blocks => _,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _,
            out("q8") _, out("q9") _, out("q10") _, out("q11") _, out("q12") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.25)
            .collect()
    }

    #[test]
    fn relu_matches_the_definition_at_awkward_lengths() {
        for n in [0, 1, 3, 15, 16, 17, 33, 100] {
            let mut got = values(n);
            relu_in_place(&mut got);
            let want: Vec<f32> = values(n)
                .iter()
                .map(|&x| if x < 0.0 { 0.0 } else { x })
                .collect();
            assert_eq!(got, want, "length {n}");
        }
    }

    #[test]
    fn bias_relu_matches_the_definition_at_awkward_planes() {
        for (channels, plane) in [(1, 1), (3, 5), (2, 16), (3, 17), (5, 49), (4, 33)] {
            let bias: Vec<f32> = (0..channels).map(|c| c as f32 * 0.75 - 1.0).collect();
            for relu in [false, true] {
                let mut got = values(2 * channels * plane);
                bias_relu_in_place(&mut got, &bias, plane, relu);
                let want: Vec<f32> = values(2 * channels * plane)
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        let v = x + bias[(i / plane) % channels];
                        if relu {
                            v.max(0.0)
                        } else {
                            v
                        }
                    })
                    .collect();
                assert_eq!(got, want, "{channels} channels of {plane}, relu {relu}");
            }
        }
    }

    #[test]
    fn add_relu_matches_the_definition_at_awkward_lengths() {
        for n in [0, 1, 5, 16, 31, 48, 101] {
            let b: Vec<f32> = values(n).iter().map(|x| x * -0.5 + 0.125).collect();
            let mut got = values(n);
            add_relu_in_place(&mut got, &b);
            let want: Vec<f32> = values(n)
                .iter()
                .zip(&b)
                .map(|(a, b)| (a + b).max(0.0))
                .collect();
            assert_eq!(got, want, "length {n}");
        }
    }
}

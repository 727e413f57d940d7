//! Packed weights on 64-byte boundaries.
//!
//! A `Vec<f32>` of the size of a layer's weights comes from `malloc` 16 bytes past a
//! line boundary, so every 64-byte vector load of it straddles two cache lines. On an
//! Intel Xeon (Emerald Rapids) the AVX-512 channel panels ran a 7x7 512 -> 512 layer at
//! 73-75 GMAC/s from such weights and at 81-86 from aligned ones (the same kernel, the
//! alignment varying with the allocation), and whole models ran 2-5 % faster with the
//! weights aligned (fd_mobilenet_1.0 and mobilenet_0.5 the most; level with AVX-512
//! hidden). The activations are aligned already: tract allocates tensors on vector-size
//! boundaries.
//!
//! The kernels whose weights are vector loads keep them here: the channel panels, the
//! first convolution, the classifier head and the channels-last depthwise taps. The
//! pixel tiles and the planar depthwise kernel broadcast single weights.

use aligned_vec::{AVec, ConstAlign};

/// Bytes of alignment: a cache line, and an AVX-512 vector.
pub const ALIGN: usize = 64;

/// Floats starting on a 64-byte boundary.
pub type AlignedFloats = AVec<f32, ConstAlign<ALIGN>>;

/// `len` zeros, aligned.
pub fn zeros(len: usize) -> AlignedFloats {
    AVec::from_iter(ALIGN, std::iter::repeat_n(0.0, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_start_on_a_line_and_hold_zeros() {
        // Sizes that malloc serves from its heap (16 bytes past a line, for the first)
        // and by mmap.
        for len in [1, 17, 1000, 300_000] {
            let floats = zeros(len);
            assert_eq!(floats.as_ptr() as usize % ALIGN, 0, "{len} floats");
            assert_eq!(floats.len(), len);
            assert!(floats.iter().all(|&v| v == 0.0));
        }
    }
}

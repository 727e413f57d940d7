//! Deterministic synthetic inputs for benchmarks and cross-target parity checks.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::prelude::Tensor;

/// A standard-normal-ish tensor (Irwin-Hall: the sum of 12 uniforms minus 6), identical bit
/// for bit on every target: ChaCha is portable and the sum uses no transcendental function,
/// so armv7 and the host feed exactly the same input.
pub fn deterministic_input(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len: usize = shape.iter().product();
    let data: Vec<f32> = (0..len)
        .map(|_| {
            let sum: u32 = (0..12).map(|_| rng.next_u32() >> 8).sum::<u32>();
            // Each term is a multiple of 2^-24 in [0, 1): the f64 sum is exact.
            (sum as f64 / (1u64 << 24) as f64 - 6.0) as f32
        })
        .collect();
    Tensor::from_shape(shape, &data).expect("data length matches the shape")
}

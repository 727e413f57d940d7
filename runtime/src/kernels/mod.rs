//! Hand-vectorised kernels (3x3 depthwise, 1x1 pointwise GEMM, the first 3x3 stride-2
//! convolution, 3x3 max pool, the pool-and-classifier head, element-wise ReLU passes) for
//! armv7 NEON and x86-64.

/// The end of a NEON row loop over 4-wide output vectors (depthwise, max pool): after the
/// full vectors, one more that overlaps the previous one when `back` bytes remain to
/// step back (`$input_shift` scales the step for the input rows: `""` at stride 1,
/// `", lsl #1"` at stride 2), then on to the next output row by the step stored at
/// `$row_step` in the argument block. Expects the operands `a`, `b`, `c` (input rows), `o`,
/// `n`, `back`, `p`, `row`, `rows` and the labels `1:` (row) and `2:` (vector).
#[cfg(target_arch = "arm")]
macro_rules! neon_row_end {
    ($input_shift:literal, $row_step:literal) => {
        concat!(
            "subs {n}, {n}, #1\n",
            "bgt 2b\n",
            "cmp {back}, #0\n",
            "beq 3f\n",
            "sub {a}, {a}, {back}",
            $input_shift,
            "\n",
            "sub {b}, {b}, {back}",
            $input_shift,
            "\n",
            "sub {c}, {c}, {back}",
            $input_shift,
            "\n",
            "sub {o}, {o}, {back}\n",
            "mov {n}, #1\n",
            "mov {back}, #0\n",
            "b 2b\n",
            "3:\n",
            "ldr {a}, [{p}, #",
            $row_step,
            "]\n",
            "add {row}, {row}, {a}\n",
            "subs {rows}, {rows}, #1\n",
            "bgt 1b\n",
        )
    };
}

mod aligned;
pub mod conv3x3s2;
pub mod depthwise;
pub mod depthwise_channels_last;
pub mod elementwise;
pub mod isa;
pub mod layout;
pub mod maxpool;
pub mod pointwise;
#[cfg(target_arch = "x86_64")]
mod pointwise_panels;
pub mod pool_linear;
#[cfg(target_arch = "x86_64")]
mod window3x3_avx512;

pub use conv3x3s2::PackedConv3x3s2;
pub use depthwise::{depthwise3x3, Depthwise3x3};
pub use depthwise_channels_last::DepthwiseChannelsLast;
pub use elementwise::{add_relu_in_place, bias_relu_in_place, relu_in_place};
pub use isa::Isa;
pub use layout::{Layout, Layouts};
pub use maxpool::MaxPool3x3;
pub use pointwise::PackedPointwise;
pub use pool_linear::PackedPoolLinear;

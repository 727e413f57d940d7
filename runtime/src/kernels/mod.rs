//! Hand-vectorised kernels (3x3 depthwise, 1x1 pointwise GEMM, the first 3x3 stride-2
//! convolution, 3x3 max pool, the pool-and-classifier head, element-wise ReLU passes) for
//! armv7 NEON and x86-64.

pub mod conv3x3s2;
pub mod depthwise;
pub mod elementwise;
pub mod isa;
pub mod maxpool;
pub mod pointwise;
pub mod pool_linear;

pub use conv3x3s2::PackedConv3x3s2;
pub use depthwise::{depthwise3x3, Depthwise3x3};
pub use elementwise::{add_relu_in_place, bias_relu_in_place, relu_in_place};
pub use isa::Isa;
pub use maxpool::MaxPool3x3;
pub use pointwise::PackedPointwise;
pub use pool_linear::PackedPoolLinear;

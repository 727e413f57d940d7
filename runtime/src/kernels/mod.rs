//! Hand-vectorised kernels (3x3 depthwise, 3x3 max pool, element-wise ReLU passes) for
//! armv7 NEON and x86-64.

pub mod depthwise;
pub mod elementwise;
pub mod maxpool;

pub use depthwise::{depthwise3x3, Depthwise3x3, DepthwiseImpl};
pub use elementwise::{add_relu_in_place, bias_relu_in_place, relu_in_place};
pub use maxpool::MaxPool3x3;

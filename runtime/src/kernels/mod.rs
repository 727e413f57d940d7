//! Hand-vectorised kernels (3x3 depthwise, 1x1 pointwise) for armv7 NEON and x86-64.

pub mod depthwise;

pub use depthwise::{depthwise3x3, Depthwise3x3, DepthwiseImpl};

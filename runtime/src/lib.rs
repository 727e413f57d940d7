//! Edge runtime: load, optimise, run and classify ONNX models with tract, on the host and
//! on armv7 boards.

pub mod classify;
pub mod engine;
mod error;
mod input;
pub mod introspect;
pub mod kernels;
pub mod measure;
mod model;
pub mod roi;
mod threads;

pub use error::RuntimeError;
pub use input::deterministic_input;
pub use introspect::{kernel_info, KernelInfo, ModelInfo, TRACT_VERSION};
pub use model::{
    tensor_to_f32, EdgeModel, Engine, LoadTimings, RuntimeOptions, DEFAULT_INPUT_SHAPE,
    MAX_TENSOR_ELEMENTS,
};
pub use threads::MULTITHREAD_AVAILABLE;
/// tract's tensor type, re-exported so callers need no direct tract dependency.
pub use tract_onnx::prelude::Tensor;

//! The model zoo: network definitions (FD-MobileNet, MobileNet v1, ShuffleNet v1),
//! deterministic ONNX export, safetensors weight import/export, and a MAC/parameter
//! counter that works on any ONNX graph.

pub mod arch;
pub mod count;
pub mod error;
pub mod export;
pub mod forward;
pub mod onnx;
pub mod weights;

pub use arch::{benchmark_models, find_model, BenchmarkModel, Family};
pub use count::{count_onnx_bytes, count_onnx_file, CostReport, NodeCost, ResolutionMacs};
pub use error::{CountError, ZooError};
pub use export::{
    export_models, model_onnx_bytes, ExportOptions, Manifest, ManifestEntry, DEFAULT_MODEL_DIR,
};

//! Error types of the zoo (one line each, naming the file and the problem).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    #[error("unknown model name `{0}` (run `model-zoo list`)")]
    UnknownModel(String),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("{}: {cause}", path.display())]
    Weights { path: PathBuf, cause: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("counting the exported graph failed: {0}")]
    Count(#[from] CountError),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CountError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid ONNX model: {0}")]
    Decode(String),
    #[error("shape inference failed: {0}")]
    Shapes(String),
    #[error("unsupported graph: {0}")]
    Unsupported(String),
    #[error("{}: {cause}", path.display())]
    InFile { path: PathBuf, cause: String },
}

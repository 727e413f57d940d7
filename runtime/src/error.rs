//! The runtime's error type: every variant renders as one line naming the file and the cause.

use std::path::PathBuf;

/// Why loading, running or classifying failed. `what` is the file the problem is in
/// (`<bytes>` for models loaded from memory).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: not an ONNX model: {cause}")]
    NotOnnx { what: String, cause: String },
    #[error("{what}: invalid ONNX model: {cause}")]
    InvalidModel { what: String, cause: String },
    #[error(
        "{what}: operator {op} (node {node:?}) is not supported by tract {}",
        crate::TRACT_VERSION
    )]
    UnsupportedOperator {
        what: String,
        op: String,
        node: String,
    },
    #[error("{what}: input is not an image tensor: {cause}")]
    NotImageInput { what: String, cause: String },
    #[error(
        "{what}: {tensor} would need {elements} elements (limit {limit}): refusing to allocate"
    )]
    TooLarge {
        what: String,
        tensor: String,
        elements: u128,
        limit: u64,
    },
    #[error("{what}: {stage} failed: {cause}")]
    Tract {
        what: String,
        stage: &'static str,
        cause: String,
    },
    #[error("{}: cannot decode image: {cause}", path.display())]
    Image { path: PathBuf, cause: String },
    #[error("input tensor: {0}")]
    Input(String),
    #[error("invalid option: {0}")]
    Option(String),
}

/// Renders an error chain (tract's anyhow errors nest causes, some with model dumps over
/// several lines) as one bounded line, so command-line errors stay one line.
pub(crate) fn one_line(err: &dyn std::fmt::Display) -> String {
    let text = format!("{err:#}");
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    const MAX: usize = 400;
    if line.len() > MAX {
        let mut cut = MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" ...");
    }
    line
}

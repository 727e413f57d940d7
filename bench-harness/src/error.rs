//! Library errors. The binary maps `BadInput` to exit code 2.

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file or option the user gave is wrong: one line naming it and the problem.
    #[error("{file}: {problem}")]
    BadInput { file: String, problem: String },
    /// A results file exists already; results are never overwritten.
    #[error("{0}: already exists; results files are never overwritten (choose another name or remove it)")]
    WouldOverwrite(String),
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("model export failed: {0}")]
    Zoo(#[from] model_zoo::ZooError),
    #[error("{file}: cannot count MACs: {source}")]
    Count {
        file: String,
        #[source]
        source: model_zoo::CountError,
    },
    #[error("{model}: {source}")]
    Runtime {
        model: String,
        #[source]
        source: edge_runtime::RuntimeError,
    },
    #[error("{0}")]
    Other(String),
}

impl HarnessError {
    /// True when the user gave bad input (exit code 2) rather than the run failing.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            HarnessError::BadInput { .. } | HarnessError::WouldOverwrite(_)
        )
    }

    pub fn io(file: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        HarnessError::Io {
            file: file.as_ref().display().to_string(),
            source,
        }
    }
}

//! Thread count -> tract executor.

use tract_onnx::tract_core::tract_linalg::multithread::Executor;

use crate::error::RuntimeError;

/// The executor for `threads` workers: `None` (tract's default, the calling thread) for 1.
/// More threads need the `multithread` feature, which turns on tract-linalg's rayon pool.
pub(crate) fn executor(threads: usize) -> Result<Option<Executor>, RuntimeError> {
    match threads {
        0 => Err(RuntimeError::Option("threads must be at least 1".into())),
        1 => Ok(None),
        #[cfg(feature = "multithread")]
        n => Ok(Some(Executor::multithread(n))),
        #[cfg(not(feature = "multithread"))]
        n => Err(RuntimeError::Option(format!(
            "{n} threads requested but edge-runtime was built without the `multithread` feature"
        ))),
    }
}

/// Whether this build can run tract's matmuls on more than one thread.
pub const MULTITHREAD_AVAILABLE: bool = cfg!(feature = "multithread");

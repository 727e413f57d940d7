//! Report writers: JSON (the versioned schema), Markdown and self-contained HTML.
//! Every writer goes through [`write_new_file`]: temp file, then rename, and never
//! over an existing file.

pub mod html;
pub mod json;
pub mod markdown;

use std::io::Write;
use std::path::Path;

use crate::error::HarnessError;

/// Writes `contents` to a temp file beside `path`, then moves it to `path` without
/// replacing anything there (hard link + unlink: link(2) fails with EEXIST, so a
/// file that appears meanwhile is not overwritten either).
pub fn write_new_file(path: &Path, contents: &[u8]) -> Result<(), HarnessError> {
    if path.exists() {
        return Err(HarnessError::WouldOverwrite(path.display().to_string()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".edgebench-")
        .tempfile_in(dir)
        .map_err(|e| HarnessError::io(path, e))?;
    tmp.write_all(contents)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| HarnessError::io(path, e))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(HarnessError::WouldOverwrite(path.display().to_string()))
        }
        Err(e) => Err(HarnessError::io(path, e.error)),
    }
}

/// "12.3 M" style MAC counts.
pub fn mega(n: u64) -> String {
    format!("{:.2} M", n as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_new_file(&p, b"one").unwrap();
        let e = write_new_file(&p, b"two").unwrap_err();
        assert!(e.to_string().contains("r.json") && e.is_bad_input(), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temp file left behind");
    }
}

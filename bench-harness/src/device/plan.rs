//! Which models go to the board, in which groups, from which local files.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{DeviceError, RemoteRunArgs};
use crate::benchmark::{model_file_name, select_models};

/// How models are split into remote benchmark runs (and result files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// One run per budget: its models are measured interleaved (what the claims need).
    Budget,
    /// One run per model: finer-grained --resume, no paired speedup intervals.
    Model,
}

/// A local model file to deploy, with its digest.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
}

/// The models of one remote benchmark run; `key` names its result file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelGroup {
    pub key: String,
    pub models: Vec<ModelFile>,
}

impl ModelGroup {
    pub fn model_names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.name.clone()).collect()
    }
}

/// File digest, streamed (models are a few MB; the binary ~10 MB).
pub fn sha256_file(path: &Path) -> Result<String, DeviceError> {
    let mut file = std::fs::File::open(path).map_err(|e| DeviceError::Local {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| DeviceError::Local {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })?;
    Ok(hex::encode(hasher.finalize()))
}

/// Resolves `--models`/`--budget`, exports missing models into `--model-dir`, and
/// groups them. Model order within a group follows the zoo (or `--models`).
pub fn plan_groups(args: &RemoteRunArgs) -> Result<Vec<ModelGroup>, DeviceError> {
    let budget = args
        .budget
        .as_deref()
        .map(|b| b.parse::<u32>().expect("validated by clap"));
    let names = if args.model_file.is_empty() || args.models.is_some() || budget.is_some() {
        select_models(args.models.as_deref(), budget)?
    } else {
        Vec::new()
    };
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !args.model_dir.join(format!("{n}.onnx")).is_file())
        .cloned()
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "edgebench: exporting {} into {}",
            missing.join(", "),
            args.model_dir.display()
        );
        model_zoo::export_models(
            &args.model_dir,
            Some(&missing),
            &model_zoo::ExportOptions::default(),
        )
        .map_err(crate::error::HarnessError::from)?;
    }
    let mut chosen: Vec<(String, PathBuf)> = names
        .into_iter()
        .map(|name| {
            let path = args.model_dir.join(format!("{name}.onnx"));
            (name, path)
        })
        .collect();
    for path in &args.model_file {
        let name = model_file_name(path)?;
        if chosen.iter().any(|(n, _)| *n == name) {
            return Err(DeviceError::Usage(format!(
                "{}: a model named '{name}' is already selected; rename the file",
                path.display()
            )));
        }
        chosen.push((name, path.clone()));
    }
    if chosen.is_empty() {
        return Err(DeviceError::Usage("--models: no model selected".into()));
    }
    let mut groups: Vec<ModelGroup> = Vec::new();
    for (name, path) in chosen {
        let sha256 = sha256_file(&path)?;
        let key = match args.group_by {
            // The user's files that are not zoo models share one group, measured interleaved.
            GroupBy::Budget => match model_zoo::find_model(&name) {
                Some(m) => format!("budget-{}", m.budget_mflops),
                None => "model-files".to_string(),
            },
            GroupBy::Model => format!("model-{}", file_safe(&name)),
        };
        let file = ModelFile { name, path, sha256 };
        match groups.iter_mut().find(|g| g.key == key) {
            Some(g) => g.models.push(file),
            None => groups.push(ModelGroup {
                key,
                models: vec![file],
            }),
        }
    }
    Ok(groups)
}

/// A name reduced to characters that are safe in file names everywhere.
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_safe_keeps_only_portable_characters() {
        assert_eq!(file_safe("fd_mobilenet_0.25"), "fd_mobilenet_0.25");
        assert_eq!(file_safe("x'; rm -rf /"), "x___rm_-rf__");
    }
}

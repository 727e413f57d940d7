//! Export of the benchmark models: ONNX files plus manifest.json.
use crate::arch::{self, BenchmarkModel, Family, Network};
use crate::count::count_onnx_bytes;
use crate::error::ZooError;
use crate::weights::{self, WeightMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Default output folder, relative to the current directory (the workspace root
/// when run as `cargo run -p model-zoo` from the repository).
pub const DEFAULT_MODEL_DIR: &str = "models/onnx";
/// Name of the manifest written beside the ONNX files.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportOptions {
    /// Input resolution (a multiple of 32).
    pub resolution: usize,
    /// Fold BatchNorm into the convolutions (Conv with bias).
    pub fold_bn: bool,
    /// Import weights from this safetensors file instead of generating them.
    pub weights: Option<PathBuf>,
    /// Seed of the generated weights.
    pub seed: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            resolution: 224,
            fold_bn: false,
            weights: None,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub models: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    pub family: Family,
    pub width: f32,
    pub resolution: usize,
    pub budget_mflops: u32,
    pub macs: u64,
    pub params: u64,
    pub sha256: String,
    /// File name relative to the manifest's folder.
    pub file: String,
    /// BatchNorm folded into the convolutions.
    #[serde(default)]
    pub fold_bn: bool,
}

/// The network definition of `model` at `resolution`.
pub fn network(model: &BenchmarkModel, resolution: usize) -> Result<Network, ZooError> {
    arch::build(model, resolution).map_err(ZooError::InvalidOption)
}

type WeightCache = Mutex<HashMap<(&'static str, u64), Arc<WeightMap>>>;

/// Generated weights, memoised per (model, seed): generation includes a calibration
/// forward pass at 224x224, and export, list and tests ask for the same models often.
fn generated_weights(model: &BenchmarkModel, seed: u64) -> Result<Arc<WeightMap>, ZooError> {
    static CACHE: OnceLock<WeightCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(w) = cache.lock().expect("weight cache").get(&(model.name, seed)) {
        return Ok(w.clone());
    }
    let net = network(model, weights::CALIBRATION_RESOLUTION)?;
    let w = Arc::new(weights::generate(&net, seed));
    cache
        .lock()
        .expect("weight cache")
        .insert((model.name, seed), w.clone());
    Ok(w)
}

/// The weights `opts` asks for: imported from `opts.weights` or generated from `opts.seed`.
pub fn model_weights(
    model: &BenchmarkModel,
    opts: &ExportOptions,
) -> Result<Arc<WeightMap>, ZooError> {
    match &opts.weights {
        Some(path) => {
            let net = network(model, opts.resolution)?;
            Ok(Arc::new(weights::load_safetensors(&net, path)?))
        }
        None => generated_weights(model, opts.seed),
    }
}

/// Serialized ONNX model of `model`.
pub fn model_onnx_bytes(model: &BenchmarkModel, opts: &ExportOptions) -> Result<Vec<u8>, ZooError> {
    let net = network(model, opts.resolution)?;
    let w = model_weights(model, opts)?;
    Ok(crate::onnx::model_bytes(&net, &w, opts.fold_bn))
}

/// The model's weights as a safetensors file (state-dict names).
pub fn model_safetensors_bytes(
    model: &BenchmarkModel,
    opts: &ExportOptions,
) -> Result<Vec<u8>, ZooError> {
    let w = model_weights(model, opts)?;
    weights::to_safetensors(&w).map_err(ZooError::Other)
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Write `bytes` to `path` through a temporary file in the same folder and a rename,
/// so readers never see a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ZooError> {
    let io = |source| ZooError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and per call: threads of one process (parallel tests) may export
    // the same model at once, and must not share a temporary file.
    static NEXT_TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = NEXT_TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.tmp{}-{seq}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Resolve `names` (all nine when `None`) to benchmark models.
pub fn select_models(names: Option<&[String]>) -> Result<Vec<BenchmarkModel>, ZooError> {
    match names {
        None => Ok(arch::benchmark_models()),
        Some(names) => names
            .iter()
            .map(|n| arch::find_model(n).ok_or_else(|| ZooError::UnknownModel(n.clone())))
            .collect(),
    }
}

/// Write `<out_dir>/<name>.onnx` for the chosen models (all nine by default) and
/// `manifest.json`. Idempotent: a file whose sha256 is already right is not rewritten.
/// All models are built (and imported weights checked) before anything is written.
pub fn export_models(
    out_dir: &Path,
    names: Option<&[String]>,
    opts: &ExportOptions,
) -> Result<Manifest, ZooError> {
    let models = select_models(names)?;
    if opts.weights.is_some() && models.len() != 1 {
        return Err(ZooError::InvalidOption(
            "--weights holds one network: choose it with --only NAME".into(),
        ));
    }
    arch::check_resolution(opts.resolution).map_err(ZooError::InvalidOption)?;
    let mut built = Vec::new();
    for model in &models {
        let bytes = model_onnx_bytes(model, opts)?;
        let cost = count_onnx_bytes(&bytes)?;
        let entry = ManifestEntry {
            name: model.name.to_string(),
            family: model.family,
            width: model.width,
            resolution: opts.resolution,
            budget_mflops: model.budget_mflops,
            macs: cost.macs,
            params: cost.params,
            sha256: sha256_hex(&bytes),
            file: format!("{}.onnx", model.name),
            fold_bn: opts.fold_bn,
        };
        built.push((entry, bytes));
    }
    std::fs::create_dir_all(out_dir).map_err(|source| ZooError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    for (entry, bytes) in &built {
        let path = out_dir.join(&entry.file);
        let up_to_date = std::fs::read(&path)
            .map(|old| sha256_hex(&old) == entry.sha256)
            .unwrap_or(false);
        if !up_to_date {
            write_atomic(&path, bytes)?;
        }
    }
    // Merge with an existing manifest so `--only` keeps the other models' entries.
    let manifest_path = out_dir.join(MANIFEST_FILE);
    let mut entries: Vec<ManifestEntry> = std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .map(|m| m.models)
        .unwrap_or_default();
    entries.retain(|e| !built.iter().any(|(b, _)| b.name == e.name));
    entries.extend(built.iter().map(|(e, _)| e.clone()));
    let order = |name: &str| {
        arch::benchmark_models()
            .iter()
            .position(|m| m.name == name)
            .unwrap_or(usize::MAX)
    };
    entries.sort_by_key(|e| order(&e.name));
    let manifest = Manifest { models: entries };
    let mut json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ZooError::Other(e.to_string()))?;
    json.push(b'\n');
    if std::fs::read(&manifest_path).ok().as_deref() != Some(json.as_slice()) {
        write_atomic(&manifest_path, &json)?;
    }
    Ok(Manifest {
        models: built.into_iter().map(|(e, _)| e).collect(),
    })
}

/// MACs and parameters of `model`'s graph at `resolution`, counted on the exported
/// ONNX structure (zero weights, so no weight generation is needed).
pub fn structure_cost(
    model: &BenchmarkModel,
    resolution: usize,
) -> Result<crate::count::CostReport, ZooError> {
    let net = network(model, resolution)?;
    let zeros: WeightMap = net
        .params()
        .into_iter()
        .map(|p| {
            let n = p.shape.iter().product();
            (
                p.name,
                weights::ParamTensor {
                    shape: p.shape,
                    data: vec![0.0; n],
                },
            )
        })
        .collect();
    Ok(count_onnx_bytes(&crate::onnx::model_bytes(
        &net, &zeros, false,
    ))?)
}

//! What a model is (inputs, outputs, operators, cost) and what the runtime runs it with.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
use tract_onnx::tract_core::tract_linalg::isa::{self, Isa};
use tract_onnx::tract_core::tract_linalg::mmm::MmmDispatch;

use crate::error::RuntimeError;
use crate::model::{decode_checked, onnx_elem_size, real_inputs};
use crate::{EdgeModel, Engine};

/// tract's version, pinned exactly in the workspace manifest.
pub const TRACT_VERSION: &str = "0.23.9";

/// The kernels the runtime runs with on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub target_triple: String,
    pub tract_version: String,
    pub runtime_version: String,
    pub engine: Engine,
    /// Whether tract-linalg enabled its NEON kernels; `None` off 32-bit ARM.
    pub neon: Option<bool>,
    /// `CPU part` from /proc/cpuinfo (0xc09 is a Cortex-A9), which tract uses to pick
    /// CPU-tuned kernels on ARM.
    pub cpu_part: Option<String>,
    /// tract-linalg's instruction set, dispatch tiers and the f32 matmul kernels it picks
    /// for a convolution-sized product and for a matrix-vector product.
    pub linalg_kernels: String,
    /// With the edge engine, the instruction set our kernels run with here ("Neon",
    /// "Avx512", "Avx2Fma" or "Scalar"); `None` with tract's.
    #[serde(default)]
    pub edge_isa: Option<String>,
}

/// The `CPU part` line of /proc/cpuinfo, as tract-linalg reads it.
fn cpu_part() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find(|l| l.starts_with("CPU part"))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_owned)
}

/// Asks tract-linalg's dispatcher what it runs here. The queries mirror the benchmark
/// networks: a pointwise convolution at 56x56 (m=64 output channels, k=64, n=3136) and the
/// classifier (n=1).
pub fn kernel_info(engine: Engine) -> KernelInfo {
    let native = isa::native();
    let dispatch = MmmDispatch::native();
    let tiers: Vec<&str> = dispatch.tiers().iter().map(|t| t.name).collect();
    let pick = |m, k, n| {
        dispatch
            .preferred_kernel(DatumType::F32, Some(m), Some(k), Some(n))
            .map(|k| k.name().to_string())
            .or_else(|| {
                let query = tract_onnx::tract_core::tract_linalg::mmm::Query::plain(
                    DatumType::F32,
                    Some(m),
                    Some(k),
                    Some(n),
                );
                dispatch.pick(&query).map(|s| s.0.name().to_string())
            })
            .unwrap_or_else(|| "none".into())
    };
    let linalg_kernels = format!(
        "isa={native:?} tiers={} conv_f32={} gemv_f32={} runnable={}",
        if tiers.is_empty() {
            "-".to_string()
        } else {
            tiers.join(">")
        },
        pick(64, 64, 3136),
        pick(1000, 1024, 1),
        dispatch.runnable().len(),
    );
    KernelInfo {
        target_triple: env!("EDGE_RUNTIME_TARGET").to_string(),
        tract_version: TRACT_VERSION.to_string(),
        runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        engine,
        neon: cfg!(target_arch = "arm").then(|| native.has(Isa::ArmNeon)),
        cpu_part: cpu_part(),
        linalg_kernels,
        edge_isa: (engine == Engine::Edge).then(|| format!("{:?}", crate::kernels::Isa::best())),
    }
}

/// The matmul kernels and operators of an optimised model, as tract will run them.
pub fn plan_kernels(model: &EdgeModel) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut kernels = std::collections::BTreeSet::new();
    let mut ops = BTreeMap::new();
    for node in model.optimized_model().nodes() {
        *ops.entry(node.op.name().to_string()).or_insert(0) += 1;
        if let Some(mm) = node.op_as::<OptMatMul>() {
            for k in &mm.mmm {
                kernels.insert(k.name().to_string());
            }
        }
    }
    (kernels.into_iter().collect(), ops)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub elem_type: String,
    /// Declared dims: numbers, or the symbol's name for a symbolic dimension.
    pub shape: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub file: String,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// ONNX operator type -> node count.
    pub operators: BTreeMap<String, usize>,
    pub nodes: usize,
    pub macs: u64,
    pub params: u64,
    /// Bytes of the initializers (declared element count x element size).
    pub weight_bytes: u64,
    /// The input shape the runtime fixed when loading.
    pub run_input_shape: Vec<usize>,
    /// Matmul kernels in tract's optimised plan.
    pub plan_kernels: Vec<String>,
    /// Operator histogram of tract's optimised plan.
    pub plan_operators: BTreeMap<String, usize>,
    pub kernels: KernelInfo,
}

fn tensor_info(v: &pb::ValueInfoProto) -> TensorInfo {
    use pb::tensor_shape_proto::dimension::Value as DimValue;
    use pb::type_proto::Value;
    let (elem_type, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(t)) => {
            let elem = pb::tensor_proto::DataType::try_from(t.elem_type)
                .map(|d| d.as_str_name().to_string())
                .unwrap_or_else(|_| format!("type {}", t.elem_type));
            let shape = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(DimValue::DimValue(n)) => n.to_string(),
                            Some(DimValue::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (elem, shape)
        }
        _ => ("unknown".into(), vec![]),
    };
    TensorInfo {
        name: v.name.clone(),
        elem_type,
        shape,
    }
}

/// Describes an ONNX model: loads it (so a model tract cannot run is reported as such) and
/// counts its cost with the model zoo's counter.
pub fn model_info_path(
    path: &Path,
    opts: &crate::RuntimeOptions,
) -> Result<ModelInfo, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
        path: path.to_owned(),
        source,
    })?;
    let what = path.display().to_string();
    let (model, _) = EdgeModel::load_path(path, opts)?;
    model_info(&bytes, &what, &model)
}

/// [`model_info_path`] on a model already loaded from `bytes`.
pub fn model_info(bytes: &[u8], what: &str, model: &EdgeModel) -> Result<ModelInfo, RuntimeError> {
    let proto = decode_checked(bytes, what)?;
    let graph = proto.graph.as_ref().expect("checked by decode_checked");
    let mut operators = BTreeMap::new();
    for node in &graph.node {
        *operators.entry(node.op_type.clone()).or_insert(0) += 1;
    }
    let weight_bytes = graph
        .initializer
        .iter()
        .map(|t| {
            let elements: u64 = t.dims.iter().map(|d| *d as u64).product();
            elements * onnx_elem_size(t.data_type).unwrap_or(0) as u64
        })
        .sum();
    let cost = model_zoo::count_onnx_bytes(bytes).map_err(|e| RuntimeError::InvalidModel {
        what: what.into(),
        cause: format!("cost counter: {e}"),
    })?;
    let (plan_kernels, plan_operators) = plan_kernels(model);
    Ok(ModelInfo {
        file: what.into(),
        inputs: real_inputs(graph).into_iter().map(tensor_info).collect(),
        outputs: graph.output.iter().map(tensor_info).collect(),
        operators,
        nodes: graph.node.len(),
        macs: cost.macs,
        params: cost.params,
        weight_bytes,
        run_input_shape: model.input_shape().to_vec(),
        plan_kernels,
        plan_operators,
        kernels: kernel_info(model.engine()),
    })
}

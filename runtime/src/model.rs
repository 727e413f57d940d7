//! Loading, optimising and running an ONNX model with tract.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::engine::PixelPadding;
use crate::error::{one_line, RuntimeError};

/// Largest tensor (in elements) the loader accepts anywhere in a model: 2^28 f32 elements is
/// 1 GiB. A declared dimension beyond this is refused before anything is allocated, so a
/// hostile or broken model cannot make the process abort on allocation failure.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 28;

/// The default input when neither the options nor the model fix one: one 224x224 RGB image.
pub const DEFAULT_INPUT_SHAPE: [usize; 4] = [1, 3, 224, 224];

/// Which kernels run the convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// tract's own optimised graph and tract-linalg kernels.
    #[default]
    Tract,
    /// tract's graph with our kernels patched in (`crate::engine::apply`, issue 7).
    Edge,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Tract => "tract",
            Engine::Edge => "edge",
        })
    }
}

impl FromStr for Engine {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tract" => Ok(Engine::Tract),
            "edge" => Ok(Engine::Edge),
            other => Err(RuntimeError::Option(format!(
                "unknown engine {other:?} (expected \"tract\" or \"edge\")"
            ))),
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeOptions {
    /// Input shape to fix; `None` takes the model's declared shape when it is fully
    /// concrete, else [`DEFAULT_INPUT_SHAPE`].
    pub input_shape: Option<Vec<usize>>,
    /// Worker threads for tract's matmul executor. 1 (the default, the paper's setting)
    /// runs everything on the calling thread.
    pub threads: usize,
    pub engine: Engine,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            input_shape: None,
            threads: 1,
            engine: Engine::Tract,
        }
    }
}

/// Wall-clock cost of getting a model ready. The first inference is timed separately
/// (`measure::LatencySamples::first_run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadTimings {
    /// Reading and decoding the file, checking it, building tract's typed graph.
    pub load: Duration,
    /// Decluttering, the engine's rewrite, tract's codegen and planning.
    pub optimise: Duration,
}

/// A model ready to run: typed, optimised and planned for one fixed input shape.
#[derive(Debug, Clone)]
pub struct EdgeModel {
    plan: Arc<TypedRunnableModel>,
    input_shape: Vec<usize>,
    input_name: String,
    output_name: String,
    engine: Engine,
    threads: usize,
}

impl EdgeModel {
    /// Loads an ONNX file. Errors name the file.
    pub fn load_path(
        path: &Path,
        opts: &RuntimeOptions,
    ) -> Result<(EdgeModel, LoadTimings), RuntimeError> {
        let start = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
            path: path.to_owned(),
            source,
        })?;
        let dir = path.parent().and_then(|p| p.to_str()).map(str::to_owned);
        load(
            &bytes,
            &path.display().to_string(),
            dir.as_deref(),
            opts,
            start,
        )
    }

    /// Loads an ONNX model held in memory (external tensor data is not resolved).
    pub fn load_bytes(
        bytes: &[u8],
        opts: &RuntimeOptions,
    ) -> Result<(EdgeModel, LoadTimings), RuntimeError> {
        load(bytes, "<bytes>", None, opts, Instant::now())
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    pub fn input_name(&self) -> &str {
        &self.input_name
    }

    pub fn output_name(&self) -> &str {
        &self.output_name
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The optimised graph tract runs.
    pub fn optimized_model(&self) -> &TypedModel {
        self.plan.model()
    }

    /// Runs one inference and returns the first output (the logits).
    pub fn run(&self, input: Tensor) -> Result<Tensor, RuntimeError> {
        if input.shape() != self.input_shape.as_slice() {
            return Err(RuntimeError::Input(format!(
                "shape {:?} does not match the model's input {:?}",
                input.shape(),
                self.input_shape
            )));
        }
        if input.datum_type() != f32::datum_type() {
            return Err(RuntimeError::Input(format!(
                "datum type {:?}, expected f32",
                input.datum_type()
            )));
        }
        let outputs = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| RuntimeError::Tract {
                what: "model".into(),
                stage: "inference",
                cause: one_line(&e),
            })?;
        let first = outputs
            .into_iter()
            .next()
            .ok_or_else(|| RuntimeError::Tract {
                what: "model".into(),
                stage: "inference",
                cause: "the model produced no output".into(),
            })?;
        Ok(first.into_tensor())
    }

    /// [`EdgeModel::run`] on a flat f32 buffer in the input's (NCHW) order.
    pub fn run_f32(&self, input: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        let tensor = Tensor::from_shape(&self.input_shape, input)
            .map_err(|e| RuntimeError::Input(one_line(&e)))?;
        tensor_to_f32(&self.run(tensor)?)
    }
}

/// The elements of an f32 tensor, in row-major order.
pub fn tensor_to_f32(tensor: &Tensor) -> Result<Vec<f32>, RuntimeError> {
    tensor
        .to_plain_array_view::<f32>()
        .map(|view| view.iter().copied().collect())
        .map_err(|e| RuntimeError::Tract {
            what: "model".into(),
            stage: "reading the output",
            cause: one_line(&e),
        })
}

fn element_count(dims: impl IntoIterator<Item = u128>) -> u128 {
    dims.into_iter().fold(1u128, |acc, d| acc.saturating_mul(d))
}

/// Size in bytes of one element of an ONNX tensor data type, `None` for strings and unknowns.
pub(crate) fn onnx_elem_size(data_type: i32) -> Option<usize> {
    use pb::tensor_proto::DataType as D;
    Some(match D::try_from(data_type).ok()? {
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Uint8 | D::Int8 | D::Bool => 1,
        D::Uint16 | D::Int16 | D::Float16 | D::Bfloat16 => 2,
        D::Int64 | D::Uint64 | D::Double | D::Complex64 => 8,
        D::Complex128 => 16,
        _ => return None,
    })
}

/// Elements a tensor proto holds in whichever field carries its data.
fn held_elements(t: &pb::TensorProto, elem_size: usize) -> usize {
    if !t.raw_data.is_empty() {
        return t.raw_data.len() / elem_size;
    }
    t.float_data.len()
        + t.int32_data.len()
        + t.int64_data.len()
        + t.double_data.len()
        + t.uint64_data.len()
        + t.string_data.len()
}

/// Refuses tensors whose declared dims would need absurd memory, or that hold fewer
/// elements than they declare (tract would read past them or allocate zeros).
fn check_tensor_proto(what: &str, t: &pb::TensorProto) -> Result<(), RuntimeError> {
    if t.dims.iter().any(|d| *d < 0) {
        return Err(RuntimeError::InvalidModel {
            what: what.into(),
            cause: format!("tensor {:?} has a negative dimension {:?}", t.name, t.dims),
        });
    }
    let elements = element_count(t.dims.iter().map(|d| *d as u128));
    if elements > MAX_TENSOR_ELEMENTS as u128 {
        return Err(RuntimeError::TooLarge {
            what: what.into(),
            tensor: format!("tensor {:?} {:?}", t.name, t.dims),
            elements,
            limit: MAX_TENSOR_ELEMENTS,
        });
    }
    let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
    if let (false, Some(size)) = (external, onnx_elem_size(t.data_type)) {
        let held = held_elements(t, size) as u128;
        if held != elements {
            return Err(RuntimeError::InvalidModel {
                what: what.into(),
                cause: format!(
                    "tensor {:?} declares {:?} ({elements} elements) but holds {held}",
                    t.name, t.dims
                ),
            });
        }
    }
    Ok(())
}

/// Declared dims of a graph input: `Some(n)` for fixed, `None` for symbolic or missing.
pub(crate) fn declared_dims(input: &pb::ValueInfoProto) -> Option<(i32, Vec<Option<i64>>)> {
    use pb::tensor_shape_proto::dimension::Value as DimValue;
    use pb::type_proto::Value;
    let Some(Value::TensorType(tensor)) = input.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let dims = tensor
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(DimValue::DimValue(v)) if v > 0 => Some(v),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some((tensor.elem_type, dims))
}

/// Decodes the protobuf and checks everything that can be checked cheaply before tract
/// builds a graph: there is one, it has nodes, the operators are known, tensors are sane.
pub(crate) fn decode_checked(bytes: &[u8], what: &str) -> Result<pb::ModelProto, RuntimeError> {
    if bytes.is_empty() {
        return Err(RuntimeError::NotOnnx {
            what: what.into(),
            cause: "the file is empty".into(),
        });
    }
    let proto = pb::ModelProto::decode(bytes).map_err(|e| RuntimeError::NotOnnx {
        what: what.into(),
        cause: format!("protobuf decoding failed ({e})"),
    })?;
    let graph = proto.graph.as_ref().ok_or_else(|| RuntimeError::NotOnnx {
        what: what.into(),
        cause: "no graph in the protobuf message".into(),
    })?;
    if graph.node.is_empty() || graph.output.is_empty() {
        return Err(RuntimeError::NotOnnx {
            what: what.into(),
            cause: "the graph has no nodes or no outputs".into(),
        });
    }
    let register = &tract_onnx::onnx().op_register;
    for node in &graph.node {
        let known_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        if !known_domain || !register.0.contains_key(&node.op_type) {
            let op = if known_domain {
                node.op_type.clone()
            } else {
                format!("{}::{}", node.domain, node.op_type)
            };
            return Err(RuntimeError::UnsupportedOperator {
                what: what.into(),
                op,
                node: node.name.clone(),
            });
        }
        for attr in &node.attribute {
            if let Some(t) = &attr.t {
                check_tensor_proto(what, t)?;
            }
        }
    }
    for t in &graph.initializer {
        check_tensor_proto(what, t)?;
    }
    // tract-onnx 0.23 panics (a map lookup) on a graph output no node produces; found by
    // the fuzzer (runtime/fuzz), so it is refused here as an invalid model.
    for output in &graph.output {
        let produced = graph.node.iter().any(|n| n.output.contains(&output.name))
            || graph.input.iter().any(|i| i.name == output.name)
            || graph.initializer.iter().any(|t| t.name == output.name);
        if !produced {
            return Err(RuntimeError::InvalidModel {
                what: what.into(),
                cause: format!("graph output '{}' is produced by no node", output.name),
            });
        }
    }
    Ok(proto)
}

/// The graph inputs that are real inputs (not initializers listed as inputs, as old
/// exporters do).
pub(crate) fn real_inputs(graph: &pb::GraphProto) -> Vec<&pb::ValueInfoProto> {
    graph
        .input
        .iter()
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .collect()
}

/// Picks the input shape and checks that the input is an NCHW float image tensor.
fn resolve_input_shape(
    graph: &pb::GraphProto,
    what: &str,
    opts: &RuntimeOptions,
) -> Result<(String, Vec<usize>), RuntimeError> {
    let not_image = |cause: String| RuntimeError::NotImageInput {
        what: what.into(),
        cause,
    };
    let inputs = real_inputs(graph);
    let [input] = inputs.as_slice() else {
        return Err(not_image(format!(
            "the model has {} inputs, expected one",
            inputs.len()
        )));
    };
    let (elem_type, declared) = declared_dims(input).unwrap_or((0, vec![]));
    if elem_type != pb::tensor_proto::DataType::Float as i32 {
        let name = pb::tensor_proto::DataType::try_from(elem_type)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| format!("type {elem_type}"));
        return Err(not_image(format!(
            "input {:?} is {name}, expected FLOAT",
            input.name
        )));
    }
    let shape = if let Some(shape) = &opts.input_shape {
        shape.clone()
    } else if !declared.is_empty() && declared.iter().all(Option::is_some) {
        declared.iter().map(|d| d.unwrap_or(0) as usize).collect()
    } else {
        DEFAULT_INPUT_SHAPE.to_vec()
    };
    let elements = element_count(shape.iter().map(|d| *d as u128));
    if elements > MAX_TENSOR_ELEMENTS as u128 {
        return Err(RuntimeError::TooLarge {
            what: what.into(),
            tensor: format!("input {:?} {shape:?}", input.name),
            elements,
            limit: MAX_TENSOR_ELEMENTS,
        });
    }
    if !declared.is_empty() && declared.len() != 4 {
        return Err(not_image(format!(
            "input {:?} has rank {}, expected 4 (NCHW)",
            input.name,
            declared.len()
        )));
    }
    if shape.len() != 4 || shape.contains(&0) || !matches!(shape[1], 1 | 3) {
        return Err(not_image(format!(
            "input {:?} shape {shape:?} is not N x (1 or 3) x H x W",
            input.name
        )));
    }
    for (ix, (want, declared)) in shape.iter().zip(&declared).enumerate() {
        if let Some(declared) = declared {
            if *declared as usize != *want {
                return Err(not_image(format!(
                    "input {:?} declares dimension {ix} = {declared}, requested {want}",
                    input.name
                )));
            }
        }
    }
    Ok((input.name.clone(), shape))
}

fn load(
    bytes: &[u8],
    what: &str,
    model_dir: Option<&str>,
    opts: &RuntimeOptions,
    start: Instant,
) -> Result<(EdgeModel, LoadTimings), RuntimeError> {
    // tract still has panicking paths on malformed graphs (parsing, typing, optimising; the
    // fuzzer found some): user input must give an error naming the file, never a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        load_unguarded(bytes, what, model_dir, opts, start)
    }))
    .unwrap_or_else(|_| {
        Err(RuntimeError::InvalidModel {
            what: what.into(),
            cause: "tract failed on this graph (an internal error in tract while loading it)"
                .into(),
        })
    })
}

fn load_unguarded(
    bytes: &[u8],
    what: &str,
    model_dir: Option<&str>,
    opts: &RuntimeOptions,
    start: Instant,
) -> Result<(EdgeModel, LoadTimings), RuntimeError> {
    let executor = crate::threads::executor(opts.threads)?;
    let proto = decode_checked(bytes, what)?;
    let graph = proto.graph.as_ref().expect("checked by decode_checked");
    let (input_name, input_shape) = resolve_input_shape(graph, what, opts)?;
    let output_name = graph.output[0].name.clone();
    let tract_err = |stage: &'static str| {
        move |e: TractError| RuntimeError::Tract {
            what: what.into(),
            stage,
            cause: one_line(&e),
        }
    };

    let onnx = tract_onnx::onnx();
    // tract's parser still has panicking paths on malformed graphs; user input must give
    // an error, not a crash.
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        onnx.parse(&proto, model_dir)
    }))
    .map_err(|_| RuntimeError::InvalidModel {
        what: what.into(),
        cause: "tract's ONNX parser failed on the graph (an internal error in tract)".into(),
    })?
    .map_err(|e| RuntimeError::InvalidModel {
        what: what.into(),
        cause: one_line(&e),
    })?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(RuntimeError::InvalidModel {
            what: what.into(),
            cause: format!("unresolved inputs {:?}", parsed.unresolved_inputs),
        });
    }
    let typed = parsed
        .model
        .with_input_fact(0, f32::fact(&input_shape).into())
        .and_then(|m| m.into_typed())
        .map_err(tract_err("typing the graph"))?;
    check_typed_sizes(&typed, what)?;
    let load_time = start.elapsed();

    let start = Instant::now();
    let mut model = typed
        .into_decluttered()
        .map_err(tract_err("decluttering"))?;
    if opts.engine == Engine::Edge {
        model = crate::engine::apply(model).map_err(tract_err("the edge engine rewrite"))?;
    }
    let mut model = model.into_optimized().map_err(tract_err("optimising"))?;
    if opts.engine == Engine::Edge {
        model = crate::engine::rewrite_optimised(model)
            .map_err(tract_err("the edge engine rewrite"))?
            .0;
        model = crate::engine::fold_channel_shuffles(model)
            .map_err(tract_err("the edge engine's channel-shuffle fold"))?
            .0;
        if let Some(padding) = channels_last_setting() {
            model = crate::engine::channels_last(model, padding)
                .map_err(tract_err("the edge engine's channels-last pass"))?;
        }
    }
    let run_options = tract_onnx::tract_core::runtime::RunOptions {
        executor,
        ..Default::default()
    };
    let plan = model
        .into_runnable_with_options(&run_options)
        .map_err(tract_err("planning"))?;
    let optimise = start.elapsed();

    Ok((
        EdgeModel {
            plan,
            input_shape,
            input_name,
            output_name,
            engine: opts.engine,
            threads: opts.threads,
        },
        LoadTimings {
            load: load_time,
            optimise,
        },
    ))
}

/// Whether and how the edge engine keeps activations channels-last between the layers
/// that are faster so (`crate::engine::channels_last`, x86 only). On, with padded pixels,
/// unless the environment sets `EDGE_CHANNELS_LAST=0` (off) or `=dense` (no padding):
/// switches that exist to measure each difference in one build.
fn channels_last_setting() -> Option<PixelPadding> {
    match std::env::var_os("EDGE_CHANNELS_LAST") {
        Some(v) if v == "0" => None,
        Some(v) if v == "dense" => Some(PixelPadding::Dense),
        _ => Some(PixelPadding::Padded),
    }
}

/// Every intermediate tensor must fit too: a Reshape or Resize can declare a huge output
/// from a small input.
fn check_typed_sizes(model: &TypedModel, what: &str) -> Result<(), RuntimeError> {
    for node in model.nodes() {
        for (ix, output) in node.outputs.iter().enumerate() {
            let Some(shape) = output.fact.shape.as_concrete() else {
                continue;
            };
            let elements = element_count(shape.iter().map(|d| *d as u128));
            if elements > MAX_TENSOR_ELEMENTS as u128 {
                return Err(RuntimeError::TooLarge {
                    what: what.into(),
                    tensor: format!("output {ix} of node {:?} {shape:?}", node.name),
                    elements,
                    limit: MAX_TENSOR_ELEMENTS,
                });
            }
        }
    }
    Ok(())
}

//! MAC and parameter counter for any ONNX graph.
//!
//! The graph is decoded from protobuf and loaded into tract for shape inference; the
//! shape of every tensor is then found through tract's outlet labels (ONNX value names).
//! MACs are counted for Conv (plain, grouped, depthwise), Gemm and MatMul; parameters are
//! the constant inputs (initializers or Constant outputs) of those nodes.

use crate::error::CountError;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_hir::infer::Factoid;

/// MACs and parameters of an ONNX graph (Conv, Gemm and MatMul nodes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostReport {
    pub macs: u64,
    pub params: u64,
    /// MACs by output feature-map size, largest first (Gemm/MatMul count as 1x1).
    pub by_resolution: Vec<ResolutionMacs>,
    pub nodes: Vec<NodeCost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolutionMacs {
    pub height: usize,
    pub width: usize,
    pub macs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCost {
    pub name: String,
    pub op: String,
    pub macs: u64,
    pub params: u64,
    pub out_height: usize,
    pub out_width: usize,
}

/// Count MACs and parameters of the ONNX file at `path`.
pub fn count_onnx_file(path: &Path) -> Result<CostReport, CountError> {
    let bytes = std::fs::read(path).map_err(|source| CountError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    count_onnx_bytes(&bytes).map_err(|e| CountError::InFile {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })
}

/// Shapes of all values of a graph, by ONNX value name, via tract's analysis.
struct Shapes {
    model: InferenceModel,
    /// Shapes of initializers and Constant outputs, read from the protobuf directly.
    constants: HashMap<String, Vec<usize>>,
}

impl Shapes {
    fn of(&self, name: &str) -> Result<Vec<usize>, CountError> {
        if let Some(shape) = self.constants.get(name) {
            return Ok(shape.clone());
        }
        let outlet = match self.model.find_outlet_label(name) {
            Some(outlet) => outlet,
            None => {
                let node = self
                    .model
                    .node_id_by_name(name)
                    .map_err(|_| CountError::Shapes(format!("no value named `{name}`")))?;
                OutletId::new(node, 0)
            }
        };
        let fact = self
            .model
            .outlet_fact(outlet)
            .map_err(|e| CountError::Shapes(format!("{name}: {e}")))?;
        fact.shape
            .as_concrete_finite()
            .ok()
            .flatten()
            .map(|s| s.to_vec())
            .ok_or_else(|| {
                CountError::Shapes(format!("shape of `{name}` is not known ({:?})", fact.shape))
            })
    }
}

fn load_shapes(proto: &pb::ModelProto) -> Result<Shapes, CountError> {
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .map_err(|e| CountError::Shapes(format!("{e:#}")))?;
    // A symbolic batch dimension becomes 1; other unknown input dims cannot be guessed.
    for ix in 0..model.inputs.len() {
        let fact = model
            .input_fact(ix)
            .map_err(|e| CountError::Shapes(e.to_string()))?
            .clone();
        if fact.shape.as_concrete_finite().ok().flatten().is_some() {
            continue;
        }
        let dims = fact
            .shape
            .dims()
            .enumerate()
            .map(
                |(axis, d)| match d.concretize().and_then(|d| d.to_usize().ok()) {
                    Some(n) => Ok(n),
                    None if axis == 0 => Ok(1),
                    None => Err(CountError::Shapes(format!(
                        "input {ix} has an unknown dimension {axis} ({:?})",
                        fact.shape
                    ))),
                },
            )
            .collect::<Result<Vec<usize>, _>>()?;
        let dt = fact.datum_type.concretize().unwrap_or(f32::datum_type());
        model = model
            .with_input_fact(ix, InferenceFact::dt_shape(dt, dims))
            .map_err(|e| CountError::Shapes(e.to_string()))?;
    }
    model
        .analyse(false)
        .map_err(|e| CountError::Shapes(format!("{e:#}")))?;
    let dims = |t: &pb::TensorProto| t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let graph = proto.graph.as_ref();
    let mut constants: HashMap<String, Vec<usize>> = graph
        .map(|g| {
            g.initializer
                .iter()
                .map(|t| (t.name.clone(), dims(t)))
                .collect()
        })
        .unwrap_or_default();
    for node in graph.map(|g| g.node.as_slice()).unwrap_or_default() {
        if node.op_type == "Constant" {
            if let (Some(out), Some(t)) = (
                node.output.first(),
                node.attribute.iter().find_map(|a| a.t.as_ref()),
            ) {
                constants.insert(out.clone(), dims(t));
            }
        }
    }
    Ok(Shapes { model, constants })
}

/// Count MACs and parameters of an ONNX model held in memory.
pub fn count_onnx_bytes(bytes: &[u8]) -> Result<CostReport, CountError> {
    let proto = pb::ModelProto::decode(bytes).map_err(|e| CountError::Decode(e.to_string()))?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| CountError::Decode("the model holds no graph".into()))?;
    let shapes = load_shapes(&proto)?;
    let mut constants: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for node in &graph.node {
        if node.op_type == "Constant" {
            constants.extend(node.output.iter().map(|s| s.as_str()));
        }
    }
    let mut counted: HashSet<&str> = HashSet::new();
    let mut nodes = Vec::new();
    for node in &graph.node {
        let op = node.op_type.as_str();
        if !matches!(op, "Conv" | "Gemm" | "MatMul") {
            continue;
        }
        let name = if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        };
        let input = |i: usize| {
            node.input.get(i).filter(|s| !s.is_empty()).ok_or_else(|| {
                CountError::Unsupported(format!("{op} node `{name}` lacks input {i}"))
            })
        };
        let output = node
            .output
            .first()
            .ok_or_else(|| CountError::Unsupported(format!("{op} node `{name}` has no output")))?;
        let out_shape = shapes.of(output)?;
        let out_elems: u64 = out_shape.iter().map(|&d| d as u64).product();
        let (macs, out_height, out_width) = match op {
            "Conv" => {
                // Weight [M, C/group, k...]: each output element costs C/group * prod(k) MACs.
                let w = shapes.of(input(1)?)?;
                let per_output: u64 = w.iter().skip(1).map(|&d| d as u64).product();
                let (h, wd) = match out_shape.len() {
                    4 => (out_shape[2], out_shape[3]),
                    3 => (out_shape[2], 1),
                    _ => (1, 1),
                };
                (out_elems * per_output, h, wd)
            }
            "Gemm" => {
                let a = shapes.of(input(0)?)?;
                let trans_a = node
                    .attribute
                    .iter()
                    .any(|a| a.name == "transA" && a.i != 0);
                let k = if a.len() != 2 {
                    return Err(CountError::Unsupported(format!(
                        "Gemm node `{name}` has a rank-{} input",
                        a.len()
                    )));
                } else if trans_a {
                    a[0]
                } else {
                    a[1]
                };
                (out_elems * k as u64, 1, 1)
            }
            _ => {
                let a = shapes.of(input(0)?)?;
                let k = *a.last().ok_or_else(|| {
                    CountError::Unsupported(format!("MatMul node `{name}` has a scalar input"))
                })?;
                (out_elems * k as u64, 1, 1)
            }
        };
        let mut params = 0u64;
        for (i, inp) in node.input.iter().enumerate() {
            let is_data_input = i == 0 && op == "Conv";
            if inp.is_empty() || is_data_input || !constants.contains(inp.as_str()) {
                continue;
            }
            if counted.insert(inp.as_str()) {
                params += shapes.of(inp)?.iter().map(|&d| d as u64).product::<u64>();
            }
        }
        nodes.push(NodeCost {
            name,
            op: op.to_string(),
            macs,
            params,
            out_height,
            out_width,
        });
    }
    let mut by_size: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    for n in &nodes {
        *by_size.entry((n.out_height, n.out_width)).or_default() += n.macs;
    }
    let mut by_resolution: Vec<ResolutionMacs> = by_size
        .into_iter()
        .map(|((height, width), macs)| ResolutionMacs {
            height,
            width,
            macs,
        })
        .collect();
    by_resolution.sort_by_key(|r| std::cmp::Reverse((r.height * r.width, r.height)));
    Ok(CostReport {
        macs: nodes.iter().map(|n| n.macs).sum(),
        params: nodes.iter().map(|n| n.params).sum(),
        by_resolution,
        nodes,
    })
}

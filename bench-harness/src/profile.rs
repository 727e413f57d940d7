//! `edgebench profile MODEL`: time per operator of tract's optimised plan, grouped
//! by operator kind and by feature-map resolution, next to the MACs of each group.
//!
//! Each node is timed by evaluating the plan through `SimpleState::run_plan_with_eval`
//! with a wrapper around `tract_core::plan::eval` (what tract-libcli's profiler does).
//! Each node's MACs are the multiply-adds its own op declares (tract's `TypedOp::cost`,
//! which our kernels implement too): after optimisation a 1x1 convolution's multiply
//! lives in a node named after the ReLU fused into it, so matching by name would put the
//! MACs on the packing node. A node's resolution is the output resolution of the ONNX
//! node whose name prefixes its own ("conv_3.matmatmul"), else of its own 4-D output.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use edge_runtime::Engine;
use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, OpState, SimplePlan};

use crate::error::HarnessError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpGroup {
    pub key: String,
    pub nodes: usize,
    /// Mean time per inference spent in this group, ms.
    pub time_ms: f64,
    pub time_share: f64,
    pub macs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileReport {
    pub model: String,
    pub engine: String,
    pub runs: usize,
    /// Sum of node times per inference, ms.
    pub total_ms: f64,
    pub total_macs: u64,
    pub by_kind: Vec<OpGroup>,
    pub by_resolution: Vec<OpGroup>,
    /// One group per node ("name: operator"), to find the layer behind a slow group.
    pub by_node: Vec<OpGroup>,
}

/// Multiply-adds per inference that a node's op declares (0 when it declares none).
fn node_macs(model: &TypedModel, node: &TypedNode) -> u64 {
    let Ok(facts) = model.node_input_facts(node.id) else {
        return 0;
    };
    let Ok(costs) = node.op.cost(&facts) else {
        return 0;
    };
    costs
        .iter()
        .filter(|(c, _)| matches!(c, tract_onnx::tract_core::internal::Cost::FMA(_)))
        .filter_map(|(_, n)| n.to_i64().ok())
        .map(|n| n.max(0) as u64)
        .sum()
}

/// Output resolution ("HxW") of every node of the ONNX graph with a feature-map output,
/// by ONNX node name, from tract's typed (not yet optimised) model of the file. Empty
/// when the model does not type without its optimiser (the profile then says "other").
fn onnx_resolutions(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(model) = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.into_typed())
    else {
        return out;
    };
    for node in model.nodes() {
        if let Ok(fact) = model.outlet_fact(OutletId::new(node.id, 0)) {
            if let Some(s) = fact.shape.as_concrete() {
                if s.len() == 4 {
                    out.insert(node.name.clone(), format!("{:>4}x{}", s[2], s[3]));
                }
            }
        }
    }
    out
}

/// The entry whose name is `tract_name` or its longest prefix followed by '.': optimised
/// nodes are named after the ONNX node they came from ("conv_3.matmatmul").
fn by_name_prefix<'a, V>(tract_name: &str, map: &'a BTreeMap<String, V>) -> Option<&'a V> {
    map.iter()
        .filter(|(n, _)| {
            tract_name == n.as_str()
                || (tract_name.starts_with(n.as_str())
                    && tract_name.as_bytes().get(n.len()) == Some(&b'.'))
        })
        .max_by_key(|(n, _)| n.len())
        .map(|(_, v)| v)
}

fn groups(
    map: BTreeMap<String, (usize, Duration, u64)>,
    runs: usize,
    total: Duration,
) -> Vec<OpGroup> {
    let mut v: Vec<OpGroup> = map
        .into_iter()
        .map(|(key, (nodes, t, macs))| OpGroup {
            key,
            nodes,
            time_ms: t.as_secs_f64() * 1e3 / runs as f64,
            time_share: if total.is_zero() {
                0.0
            } else {
                t.as_secs_f64() / total.as_secs_f64()
            },
            macs,
        })
        .collect();
    v.sort_by(|a, b| b.time_ms.total_cmp(&a.time_ms));
    v
}

/// Profiles `path` over `runs` inferences (after `warmup` untimed ones), one thread.
pub fn profile_model(
    path: &Path,
    engine: Engine,
    warmup: usize,
    runs: usize,
    seed: u64,
) -> Result<ProfileReport, HarnessError> {
    let runs = runs.max(1);
    let cost = model_zoo::count_onnx_file(path).map_err(|source| HarnessError::Count {
        file: path.display().to_string(),
        source,
    })?;
    let (model, _, input) = crate::benchmark::load_with_input(path, engine, 1, seed)?;
    let typed = model.optimized_model().clone();
    let tract_err = |e: TractError| HarnessError::Other(format!("{}: {e:#}", path.display()));
    let plan = SimplePlan::new(typed).map_err(tract_err)?;
    let mut state = plan.spawn().map_err(tract_err)?;
    let mut per_node = vec![Duration::ZERO; plan.model().nodes().len()];
    for i in 0..warmup + runs {
        let timed = i >= warmup;
        state
            .run_plan_with_eval(
                tvec!(input.clone().into_tvalue()),
                |ctx: &EvalContext,
                 op_state: Option<&mut (dyn OpState + 'static)>,
                 node: &TypedNode,
                 inputs| {
                    let start = Instant::now();
                    let r = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    if timed {
                        per_node[node.id] += start.elapsed();
                    }
                    r
                },
            )
            .map_err(tract_err)?;
    }
    let typed = plan.model();
    let resolutions = onnx_resolutions(path);
    let total: Duration = per_node.iter().sum();
    let mut by_kind: BTreeMap<String, (usize, Duration, u64)> = BTreeMap::new();
    let mut by_res: BTreeMap<String, (usize, Duration, u64)> = BTreeMap::new();
    let mut by_node: BTreeMap<String, (usize, Duration, u64)> = BTreeMap::new();
    for node in typed.nodes() {
        let t = per_node[node.id];
        let macs = node_macs(typed, node);
        let kind = node.op().name().to_string();
        let res = by_name_prefix(&node.name, &resolutions)
            .cloned()
            .or_else(|| {
                let fact = typed.outlet_fact(OutletId::new(node.id, 0)).ok()?;
                let s = fact.shape.as_concrete()?;
                (s.len() == 4).then(|| format!("{:>4}x{}", s[2], s[3]))
            })
            .unwrap_or_else(|| "other".to_string());
        if t.is_zero() && macs == 0 {
            continue; // constants and sources
        }
        let name = format!("{}: {kind} at {}", node.name, res.trim());
        for (map, key) in [
            (&mut by_kind, kind),
            (&mut by_res, res),
            (&mut by_node, name),
        ] {
            let e = map.entry(key).or_insert((0, Duration::ZERO, 0));
            e.0 += 1;
            e.1 += t;
            e.2 += macs;
        }
    }
    Ok(ProfileReport {
        model: path.display().to_string(),
        engine: engine.to_string(),
        runs,
        total_ms: total.as_secs_f64() * 1e3 / runs as f64,
        total_macs: cost.macs,
        by_kind: groups(by_kind, runs, total),
        by_resolution: groups(by_res, runs, total),
        by_node: groups(by_node, runs, total),
    })
}

pub fn group_rows(groups: &[OpGroup], what: &str) -> crate::output::table::Rows {
    crate::output::table::Rows {
        header: [
            what,
            "nodes",
            "ms / inference",
            "share of time",
            "MMACs",
            "share of MACs",
            "GMAC/s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        rows: {
            let total_macs: u64 = groups.iter().map(|g| g.macs).sum();
            groups
                .iter()
                .map(|g| {
                    vec![
                        g.key.trim().to_string(),
                        g.nodes.to_string(),
                        format!("{:.3}", g.time_ms),
                        format!("{:.1} %", g.time_share * 100.0),
                        format!("{:.2}", g.macs as f64 / 1e6),
                        if total_macs > 0 {
                            format!("{:.1} %", g.macs as f64 * 100.0 / total_macs as f64)
                        } else {
                            "-".into()
                        },
                        if g.macs > 0 && g.time_ms > 0.0 {
                            format!("{:.2}", g.macs as f64 / (g.time_ms * 1e-3) / 1e9)
                        } else {
                            "-".into()
                        },
                    ]
                })
                .collect()
        },
    }
}

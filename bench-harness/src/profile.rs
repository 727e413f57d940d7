//! `edgebench profile MODEL`: time per operator of tract's optimised plan, grouped
//! by operator kind and by feature-map resolution, next to the MACs of each group.
//!
//! Each node is timed by evaluating the plan through `SimpleState::run_plan_with_eval`
//! with a wrapper around `tract_core::plan::eval` (what tract-libcli's profiler does).
//! Optimised nodes keep their ONNX node's name as a prefix ("conv_3.matmatmul"), so
//! each tract node maps to the ONNX node whose name is its longest dotted prefix;
//! that node's MACs and output resolution (from `model_zoo::count_onnx_file`) are
//! attributed to the slowest tract node implementing it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use edge_runtime::{EdgeModel, Engine, RuntimeOptions};
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
}

/// Matches a tract node name to the ONNX node it came from: the longest ONNX name
/// equal to it or followed by '.'.
fn onnx_node_for<'a>(
    tract_name: &str,
    onnx: &'a [model_zoo::NodeCost],
) -> Option<&'a model_zoo::NodeCost> {
    onnx.iter()
        .filter(|n| {
            tract_name == n.name
                || (tract_name.starts_with(&n.name)
                    && tract_name.as_bytes().get(n.name.len()) == Some(&b'.'))
        })
        .max_by_key(|n| n.name.len())
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
    let rt = |source| HarnessError::Runtime {
        model: path.display().to_string(),
        source,
    };
    let cost = model_zoo::count_onnx_file(path).map_err(|source| HarnessError::Count {
        file: path.display().to_string(),
        source,
    })?;
    let opts = RuntimeOptions {
        input_shape: None,
        threads: 1,
        engine,
    };
    let (model, _) = EdgeModel::load_path(path, &opts).map_err(rt)?;
    let input = edge_runtime::deterministic_input(model.input_shape(), seed);
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
    let total: Duration = per_node.iter().sum();
    // The slowest tract node of each ONNX node carries that ONNX node's MACs.
    let mut carrier: BTreeMap<&str, (usize, Duration)> = BTreeMap::new();
    for node in typed.nodes() {
        if let Some(onnx) = onnx_node_for(&node.name, &cost.nodes) {
            let e = carrier
                .entry(onnx.name.as_str())
                .or_insert((node.id, per_node[node.id]));
            if per_node[node.id] > e.1 {
                *e = (node.id, per_node[node.id]);
            }
        }
    }
    let mut by_kind: BTreeMap<String, (usize, Duration, u64)> = BTreeMap::new();
    let mut by_res: BTreeMap<String, (usize, Duration, u64)> = BTreeMap::new();
    for node in typed.nodes() {
        let t = per_node[node.id];
        let onnx = onnx_node_for(&node.name, &cost.nodes);
        let macs = onnx
            .filter(|o| carrier.get(o.name.as_str()).map(|c| c.0) == Some(node.id))
            .map(|o| o.macs)
            .unwrap_or(0);
        let kind = node.op().name().to_string();
        let res = match onnx {
            Some(o) if o.out_height > 0 => format!("{:>4}x{}", o.out_height, o.out_width),
            _ => {
                let fact = typed.outlet_fact(OutletId::new(node.id, 0)).ok();
                match fact.and_then(|f| f.shape.as_concrete().map(|s| s.to_vec())) {
                    Some(s) if s.len() == 4 => format!("{:>4}x{}", s[2], s[3]),
                    _ => "other".to_string(),
                }
            }
        };
        if t.is_zero() && macs == 0 {
            continue; // constants and sources
        }
        for (map, key) in [(&mut by_kind, kind), (&mut by_res, res)] {
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

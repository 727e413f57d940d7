//! The latency loop shared by `edge-run bench` and the benchmark harness.
//!
//! One first (cold) run, then warm-up runs until both a minimum count and a minimum time
//! are reached, then measured runs until both a minimum count and a minimum time are
//! reached, capped by a maximum time (never below the minimum count). Every sample is kept;
//! statistics are the caller's business.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::Tensor;

use crate::{roi, EdgeModel, RuntimeError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasureConfig {
    pub warmup_min_runs: usize,
    pub warmup_min_time: Duration,
    pub min_runs: usize,
    pub min_time: Duration,
    /// Stops measuring once exceeded, as soon as `min_runs` samples exist.
    pub max_time: Duration,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            warmup_min_runs: 10,
            warmup_min_time: Duration::from_secs(1),
            min_runs: 50,
            min_time: Duration::from_secs(3),
            max_time: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySamples {
    /// The first inference after loading (cold caches, lazy initialisation).
    pub first_run: Duration,
    pub warmup_runs: usize,
    /// Every measured inference, in order.
    pub samples: Vec<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeasurePhase {
    Warmup,
    Measure,
}

/// Times one inference of `input`, inside the QEMU region of interest when it is enabled.
pub fn time_one_run(model: &EdgeModel, input: &Tensor) -> Result<Duration, RuntimeError> {
    // The clone is outside the timed region: `run` consumes its input.
    let input = input.clone();
    let extra_passes = test_extra_input_passes();
    // The clock reads stay outside the counted region: their instruction counts depend on
    // the time values (carries, retries), which made QEMU counts differ by a few instructions.
    let start = Instant::now();
    roi::begin();
    if extra_passes > 0 {
        extra_input_passes(&input, extra_passes);
    }
    let result = model.run(input);
    roi::end();
    let elapsed = start.elapsed();
    result.map(|_| elapsed)
}

/// Test-only deliberate slowdown (for the QEMU regression check, issue 6): env
/// `EDGE_TEST_EXTRA_INPUT_PASS=N` makes N extra passes over the input inside the timed region.
/// Read once, outside the region, so that an unset switch costs nothing inside it.
fn test_extra_input_passes() -> usize {
    static PASSES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PASSES.get_or_init(|| {
        std::env::var("EDGE_TEST_EXTRA_INPUT_PASS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

fn extra_input_passes(input: &Tensor, passes: usize) {
    if let Ok(values) = input.to_plain_array_view::<f32>() {
        for _ in 0..passes {
            let sum: f32 = values.iter().map(|v| v * v).sum();
            std::hint::black_box(sum);
        }
    }
}

/// Runs the latency loop on a deterministic input (seed 0) of the model's input shape.
/// `progress` is called after every run with the phase and the runs done in that phase.
pub fn measure_latency(
    model: &EdgeModel,
    cfg: &MeasureConfig,
    progress: &mut dyn FnMut(MeasurePhase, usize),
) -> Result<LatencySamples, RuntimeError> {
    let input = crate::deterministic_input(model.input_shape(), 0);
    measure_latency_with_input(model, &input, cfg, progress)
}

/// [`measure_latency`] with a given input.
pub fn measure_latency_with_input(
    model: &EdgeModel,
    input: &Tensor,
    cfg: &MeasureConfig,
    progress: &mut dyn FnMut(MeasurePhase, usize),
) -> Result<LatencySamples, RuntimeError> {
    let first_run = time_one_run(model, input)?;

    let warmup_start = Instant::now();
    let mut warmup_runs = 0;
    while warmup_runs < cfg.warmup_min_runs || warmup_start.elapsed() < cfg.warmup_min_time {
        time_one_run(model, input)?;
        warmup_runs += 1;
        progress(MeasurePhase::Warmup, warmup_runs);
    }

    let measure_start = Instant::now();
    let mut samples = Vec::with_capacity(cfg.min_runs);
    loop {
        let elapsed = measure_start.elapsed();
        let enough = samples.len() >= cfg.min_runs;
        if enough && (elapsed >= cfg.min_time || elapsed >= cfg.max_time) {
            break;
        }
        samples.push(time_one_run(model, input)?);
        progress(MeasurePhase::Measure, samples.len());
    }
    Ok(LatencySamples {
        first_run,
        warmup_runs,
        samples,
    })
}

/// One node of the optimised plan, as evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNode {
    pub id: usize,
    pub name: String,
    /// tract's op name ("OptMatMul", "EdgeDepthwise3x3", ...).
    pub op: String,
}

/// Runs `runs` inferences with every node evaluation in a region of interest of its own,
/// so that the QEMU plugin counts each operator separately (`edgebench qemu --per-op`).
/// Returns the nodes in the order their regions are marked, the same in every inference.
/// A region also holds the few instructions of its own marker call, so the regions add up
/// to a little more than [`time_one_run`]'s single region.
pub fn run_with_node_regions(
    model: &EdgeModel,
    input: &Tensor,
    runs: usize,
) -> Result<Vec<PlanNode>, RuntimeError> {
    use tract_onnx::prelude::{tvec, IntoTValue, TypedModel, TypedNode};
    use tract_onnx::tract_core::internal::{EvalContext, OpState, SimplePlan};

    let tract_err = |e: tract_onnx::prelude::TractError| RuntimeError::Tract {
        what: "model".into(),
        stage: "per-node regions",
        cause: crate::error::one_line(&e),
    };
    let typed: TypedModel = model.optimized_model().clone();
    let plan = SimplePlan::new(typed).map_err(tract_err)?;
    let mut state = plan.spawn().map_err(tract_err)?;
    let mut order: Vec<usize> = Vec::new();
    for run in 0..runs {
        state
            .run_plan_with_eval(
                tvec!(input.clone().into_tvalue()),
                |ctx: &EvalContext,
                 op_state: Option<&mut (dyn OpState + 'static)>,
                 node: &TypedNode,
                 inputs| {
                    if run == 0 {
                        order.push(node.id);
                    }
                    roi::begin();
                    let r = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    roi::end();
                    r
                },
            )
            .map_err(tract_err)?;
    }
    let graph = plan.model();
    Ok(order
        .into_iter()
        .map(|id| {
            let node = graph.node(id);
            PlanNode {
                id,
                name: node.name.clone(),
                op: node.op().name().to_string(),
            }
        })
        .collect())
}

//! ShuffleNet's channel shuffle folded into the grouped 1x1 convolution before it.
//!
//! The shuffle is a reshape of `[N, C, H, W]` to `[N, g, C/g, H, W]`, a swap of the two
//! channel axes and a reshape back: after tract's optimiser, two `IntoShape` nodes around
//! a `Move(1, 2)` that copies the whole activation. When it follows a grouped 1x1
//! convolution of the same `g` groups on our kernel, it only moves that convolution's
//! output channel `(group, row)` to `row * g + group`, and [`EdgePointwise`] can write
//! each output row there directly ([`PackedPointwise::with_shuffled_output`]): the three
//! nodes go, and nothing else changes.
//!
//! [`PackedPointwise::with_shuffled_output`]: crate::kernels::PackedPointwise::with_shuffled_output

use super::{replace_by, sole_successor, EdgePointwise};
use crate::kernels::Layouts;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::change_axes::{AxisOp, IntoShape};

/// Folds every channel shuffle that directly follows a planar grouped [`EdgePointwise`]
/// of as many groups into it; returns the model and the number folded. Runs on the
/// optimised model (after [`super::rewrite_optimised`]).
pub fn fold_channel_shuffles(mut model: TypedModel) -> TractResult<(TypedModel, usize)> {
    let mut folded = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<EdgePointwise>() else {
            continue;
        };
        let kernel = &conv.kernel;
        if kernel.groups < 2 || kernel.shuffled_output() || conv.layouts != Layouts::default() {
            continue;
        }
        let Some(merged) = shuffle_after(&model, id, kernel.groups)? else {
            continue;
        };
        let op = EdgePointwise {
            kernel: Arc::new(kernel.as_ref().clone().with_shuffled_output()),
            layouts: conv.layouts,
        };
        let (name, input) = (format!("{}.edge_shuffled", node.name), node.inputs[0]);
        replace_by(&mut model, &[input], op, name, merged)?;
        folded += 1;
    }
    model.compact()?;
    Ok((model, folded))
}

/// The node that is the only consumer of node `id`'s first output ([`sole_successor`]).
fn sole_consumer(model: &TypedModel, id: usize) -> Option<usize> {
    sole_successor(model, OutletId::new(id, 0)).map(|inlet| inlet.node)
}

/// The concrete shape of node `id`'s first output, if it has one.
fn shape_of(model: &TypedModel, id: usize) -> TractResult<Option<Vec<usize>>> {
    Ok(model
        .outlet_fact(OutletId::new(id, 0))?
        .shape
        .as_concrete()
        .map(|s| s.to_vec()))
}

/// The outlet of the last reshape if what follows node `id` (an `(N)CHW` convolution) is
/// a channel shuffle of `groups` groups: a reshape splitting the channel axis into
/// `[groups, C / groups]`, a swap of those two axes, and a reshape back to the
/// convolution's shape, each the only consumer of the one before.
fn shuffle_after(model: &TypedModel, id: usize, groups: usize) -> TractResult<Option<OutletId>> {
    let Some(shape) = shape_of(model, id)? else {
        return Ok(None);
    };
    let rank = shape.len();
    if !(rank == 3 || rank == 4) || !shape[rank - 3].is_multiple_of(groups) {
        return Ok(None);
    }
    let axis = rank - 3;
    let channels = shape[axis];
    let with_channels = |dims: [usize; 2]| -> Vec<usize> {
        let mut s = shape[..axis].to_vec();
        s.extend(dims);
        s.extend(&shape[axis + 1..]);
        s
    };
    let Some(split) = sole_consumer(model, id) else {
        return Ok(None);
    };
    let Some(swap) = sole_consumer(model, split) else {
        return Ok(None);
    };
    let Some(merge) = sole_consumer(model, swap) else {
        return Ok(None);
    };
    let swaps_channel_axes = matches!(
        model.node(swap).op_as::<AxisOp>(),
        Some(AxisOp::Move(from, to)) if from.min(to) == &axis && from.max(to) == &(axis + 1)
    );
    let is_shuffle = model.node(split).op_is::<IntoShape>()
        && swaps_channel_axes
        && model.node(merge).op_is::<IntoShape>()
        && shape_of(model, split)? == Some(with_channels([groups, channels / groups]))
        && shape_of(model, swap)? == Some(with_channels([channels / groups, groups]))
        && shape_of(model, merge)? == Some(shape);
    Ok(is_shuffle.then_some(OutletId::new(merge, 0)))
}

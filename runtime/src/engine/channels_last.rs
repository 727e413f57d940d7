//! Channels-last activations between the x86 layers that read and write them faster.
//!
//! On x86 the 1x1 convolutions of small maps and deep layers run on channel panels
//! (`kernels::pointwise_panels`), whose vectors run along the output channels. Writing
//! planar (NCHW) output from them needs a transpose in registers that costs 2-12 % of
//! such a layer, and the AVX2 panels first copy a planar input into pixel strips. Kept
//! channels-last (`[pixels][channels]`), the same tiles store plainly and read in place,
//! and the depthwise layer between two of them (`kernels::depthwise_channels_last`) needs
//! no shuffles at stride 2 and wastes no lanes on 7x7 maps.
//!
//! [`channels_last`] runs on the optimised model, last. A tensor is kept channels-last
//! when the layer that writes it can (a panel-run [`EdgePointwise`], or an
//! [`EdgeDepthwise3x3`] whose own input is channels-last) and every layer that reads it
//! can (a panel-run [`EdgePointwise`], [`EdgePoolLinear`], or an [`EdgeDepthwise3x3`]
//! whose output is in turn kept channels-last), possibly through nodes that only add or
//! drop the unit batch axis. Nothing else ever sees such a tensor, and a model's outputs
//! stay planar. The facts keep their NCHW shapes: only the bytes' order changes, which
//! each op records in its own fields (`layouts`, `channels_last`, `layout`).

use super::{EdgeDepthwise3x3, EdgePointwise, EdgePoolLinear};
use crate::kernels::{DepthwiseChannelsLast, Isa, Layout, Layouts};
use std::collections::HashMap;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::change_axes::{AxisOp, IntoShape};

/// What a node is to this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A 1x1 convolution on the channel panels: either side may be channels-last.
    Panels,
    /// A depthwise layer: channels-last on both sides or neither.
    Depthwise,
    /// The pool-and-classifier head: its input may be channels-last.
    Head,
    /// Only adds or drops the unit batch axis: passes the layout through.
    BatchAxis,
    /// Anything else: planar only.
    Other,
}

fn role(model: &TypedModel, node: &TypedNode, imp: Isa) -> TractResult<Role> {
    if let Some(op) = node.op_as::<EdgePointwise>() {
        let x = model.outlet_fact(node.inputs[0])?;
        let pixels = x.shape[x.rank().saturating_sub(2)..]
            .iter()
            .map(|d| d.to_usize().ok())
            .product::<Option<usize>>();
        let capable = pixels.is_some_and(|p| op.kernel.channels_last_capable(imp, p));
        return Ok(if capable { Role::Panels } else { Role::Other });
    }
    if node.op_is::<EdgeDepthwise3x3>() {
        return Ok(Role::Depthwise);
    }
    if node.op_is::<EdgePoolLinear>() {
        return Ok(Role::Head);
    }
    if (node.op_is::<IntoShape>() || node.op_is::<AxisOp>()) && node.inputs.len() == 1 {
        let x = model.outlet_fact(node.inputs[0])?;
        let y = model.outlet_fact(OutletId::new(node.id, 0))?;
        let same_image = |a: &TypedFact, b: &TypedFact| {
            let strip = |f: &TypedFact| -> Vec<TDim> {
                let dims: Vec<TDim> = f.shape.iter().cloned().collect();
                let lead = dims.len().saturating_sub(3);
                if dims[..lead].iter().all(|d| d.is_one()) {
                    dims[lead..].to_vec()
                } else {
                    dims
                }
            };
            a.rank() >= 3 && b.rank() >= 3 && strip(a) == strip(b)
        };
        if same_image(x, y) && node.outputs.len() == 1 {
            return Ok(Role::BatchAxis);
        }
    }
    Ok(Role::Other)
}

/// Keeps the tensors described above channels-last, for the vector path that will run
/// (`Isa::best()`).
pub fn channels_last(mut model: TypedModel) -> TractResult<TypedModel> {
    let imp = Isa::best();
    let order = model.eval_order()?;
    let roles: HashMap<usize, Role> = order
        .iter()
        .map(|&id| Ok((id, role(&model, model.node(id), imp)?)))
        .collect::<TractResult<_>>()?;
    // Whether every reader of a node's output accepts it channels-last, from the last
    // node back (a depthwise reader accepts only if its own readers do).
    let mut accepted: HashMap<usize, bool> = HashMap::new();
    for &id in order.iter().rev() {
        let node = model.node(id);
        let outlet = OutletId::new(id, 0);
        let successors = model.outlet_successors(outlet);
        let ok = node.outputs.len() == 1
            && !model.outputs.contains(&outlet)
            && !successors.is_empty()
            && successors.iter().all(|s| match roles.get(&s.node) {
                Some(Role::Panels | Role::Head) => true,
                Some(Role::Depthwise | Role::BatchAxis) => accepted.get(&s.node) == Some(&true),
                _ => false,
            });
        accepted.insert(id, ok);
    }
    // Which outputs are written channels-last, from the first node on (a node's input is
    // decided before it), each op told its layouts as soon as they are known.
    let mut last: HashMap<usize, bool> = HashMap::new();
    for &id in &order {
        let input_last = model.node(id).inputs.first().is_some_and(|i| last[&i.node]);
        let output_last = match roles[&id] {
            Role::Panels => accepted[&id],
            Role::Depthwise | Role::BatchAxis => input_last,
            Role::Head | Role::Other => false,
        };
        last.insert(id, output_last);
        set_layouts(model.node_mut(id), input_last, output_last)?;
    }
    Ok(model)
}

/// Records a node's input and output layouts in its op (ops without a choice ignore it).
fn set_layouts(node: &mut TypedNode, input_last: bool, output_last: bool) -> TractResult<()> {
    let as_layout = |l: bool| {
        if l {
            Layout::ChannelsLast
        } else {
            Layout::Planar
        }
    };
    if let Some(op) = node.op_as::<EdgePointwise>() {
        let mut op = op.clone();
        op.layouts = Layouts {
            input: as_layout(input_last),
            output: as_layout(output_last),
        };
        node.op = Box::new(op);
    } else if let Some(op) = node.op_as::<EdgeDepthwise3x3>() {
        ensure!(input_last == output_last, "{}: mixed layouts", node.name);
        let mut op = op.clone();
        op.channels_last = if output_last {
            Some(Arc::new(DepthwiseChannelsLast::new(
                op.weights.try_as_plain_ram()?.as_slice::<f32>()?,
                op.bias.try_as_plain_ram()?.as_slice::<f32>()?,
                op.relu,
            )))
        } else {
            None
        };
        node.op = Box::new(op);
    } else if let Some(op) = node.op_as::<EdgePoolLinear>() {
        let mut op = op.clone();
        op.layout = as_layout(input_last);
        node.op = Box::new(op);
    }
    Ok(())
}

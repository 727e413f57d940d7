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
//! stay planar. The facts keep their NCHW shapes and only the bytes' order changes, which
//! each op records in its own fields (`layouts`, `channels_last`, `layout`), but for one
//! thing: a tensor that only 1x1, depthwise and head layers write and read gets
//! [`padded_pixel`] floats per pixel, a line more than its channels where those are a
//! multiple of 128, and its channel axis says so. Unpadded, the depthwise kernel's pixels
//! fall into a few L1 sets (see `kernels::layout`).

use super::{EdgeDepthwise3x3, EdgePointwise, EdgePoolLinear};
use crate::kernels::layout::padded_pixel;
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

/// Whether channels-last tensors between 1x1 and depthwise layers get padded pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelPadding {
    /// [`padded_pixel`] floats per pixel.
    Padded,
    /// As many floats per pixel as channels (to measure what the padding gains).
    Dense,
}

/// Keeps the tensors described above channels-last, for the vector path that will run
/// (`Isa::best()`).
pub fn channels_last(mut model: TypedModel, padding: PixelPadding) -> TractResult<TypedModel> {
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
    // Which outputs are written channels-last, and how, from the first node on (a node's
    // input is decided before it), each op told its layouts as soon as they are known and
    // its output facts worked out again (a padded pixel widens the channel axis).
    let mut layouts: HashMap<usize, Layout> = HashMap::new();
    for &id in &order {
        let node = model.node(id);
        let input = node
            .inputs
            .first()
            .map_or(Layout::Planar, |i| layouts[&i.node]);
        let output_last = match roles[&id] {
            Role::Panels => accepted[&id],
            Role::Depthwise => input.is_channels_last(),
            // The input is never padded (below), so the shape it passes on holds.
            Role::BatchAxis => {
                layouts.insert(id, input);
                continue;
            }
            Role::Head | Role::Other => false,
        };
        let output = if output_last {
            let fact = model.outlet_fact(OutletId::new(id, 0))?;
            let channels = fact.shape[fact.rank() - 3].to_usize()?;
            let readers_take_padding = model
                .outlet_successors(OutletId::new(id, 0))
                .iter()
                .all(|s| matches!(roles[&s.node], Role::Panels | Role::Depthwise | Role::Head));
            Layout::ChannelsLast {
                pixel_floats: if readers_take_padding && padding == PixelPadding::Padded {
                    padded_pixel(channels)
                } else {
                    channels
                },
            }
        } else {
            Layout::Planar
        };
        layouts.insert(id, output);
        if roles[&id] != Role::Other {
            set_layouts(&mut model, id, Layouts { input, output })?;
        }
    }
    Ok(model)
}

/// Records a node's input and output layouts in its op and works its output facts out
/// again from its input facts.
fn set_layouts(model: &mut TypedModel, id: usize, layouts: Layouts) -> TractResult<()> {
    let node = model.node_mut(id);
    if let Some(op) = node.op_as::<EdgePointwise>() {
        let mut op = op.clone();
        op.layouts = layouts;
        node.op = Box::new(op);
    } else if let Some(op) = node.op_as::<EdgeDepthwise3x3>() {
        let output_last = layouts.output.is_channels_last();
        ensure!(
            layouts.input.is_channels_last() == output_last,
            "{}: mixed layouts",
            node.name
        );
        let mut op = op.clone();
        op.layouts = layouts;
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
        op.layout = layouts.input;
        node.op = Box::new(op);
    }
    let node = model.node(id);
    let facts = node.op.output_facts(&model.node_input_facts(id)?)?;
    ensure!(
        facts.len() == node.outputs.len(),
        "{}: output count",
        node.name
    );
    for (slot, fact) in facts.into_iter().enumerate() {
        model.set_outlet_fact(OutletId::new(id, slot), fact)?;
    }
    Ok(())
}

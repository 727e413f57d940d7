//! The `edge` engine: tract's optimised graph with our own kernels patched in
//! (issue 7). Owned by the kernel engineer.
//!
//! [`apply`] runs on the decluttered typed model, before tract's optimiser. It replaces
//! every 3x3 depthwise convolution (group == input channels == output channels, pad 1,
//! stride 1 or 2, NCHW or CHW, f32, constant weights) by [`EdgeDepthwise3x3`], folding
//! into it what directly follows and has no other consumer: the BatchNorm that declutter
//! leaves as per-channel `Mul`/`Add` (or already as the conv bias when the export folded
//! it) and the ReLU, which tract represents as `Max(x, 0)`. Then, where this CPU has a
//! vector path ([`RewriteOptions`]), the 1x1 convolutions become [`EdgePointwise`], the
//! first 3x3 stride-2 convolution [`EdgeConv3x3s2`] and the pool-and-classifier head
//! [`EdgePoolLinear`], each with its bias, BatchNorm and ReLU folded in; ShuffleNet's
//! pools and residual joins get their own ops too. [`rewrite_optimised`] runs after the
//! optimiser, for the ReLUs it leaves as a scalar pass, then [`fold_channel_shuffles`]
//! (ShuffleNet's channel shuffles written by the grouped 1x1 convolutions before them),
//! and [`channels_last()`] last, which on x86 keeps the activations between some of our
//! ops channels-last.

pub mod channels_last;
pub mod depthwise;
pub mod elementwise;
pub mod head;
pub mod maxpool;
pub mod pointwise;
pub mod shuffle;

pub use channels_last::{channels_last, PixelPadding};
pub use depthwise::EdgeDepthwise3x3;
pub use elementwise::{EdgeAddRelu, EdgeBiasRelu, EdgeRelu};
pub use head::EdgePoolLinear;
pub use maxpool::EdgeMaxPool3x3;
pub use pointwise::{EdgeConv3x3s2, EdgePointwise};
pub use shuffle::fold_channel_shuffles;

use crate::kernels::{Isa, Layout, Layouts, PackedConv3x3s2, PackedPointwise, PackedPoolLinear};

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::{OptBinByScalar, TypedBinOp};
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::math::{Add, Max, Mul, Sub};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// What [`rewrite`] changed, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewriteSummary {
    /// Depthwise convolutions now running on our kernel.
    pub depthwise: usize,
    /// Per-channel `Mul`/`Add`/`Sub` nodes (unfolded BatchNorm) folded into them.
    pub affine_folded: usize,
    /// ReLUs fused into them.
    pub relu_fused: usize,
    /// Other convolutions (1x1, grouped, the first) whose BatchNorm was folded into their
    /// weights and bias.
    pub conv_batchnorm_folded: usize,
    /// `Relu(a + b)` joins (ShuffleNet's residual) now one [`EdgeAddRelu`] pass.
    pub add_relu: usize,
    /// Grouped 1x1 convolutions now a batched matmul (no im2col copy).
    pub grouped_pointwise: usize,
    /// 3x3 average pools (padding 1 counted, ShuffleNet's shortcut) on the depthwise kernel.
    pub average_pool: usize,
    /// 3x3 stride-2 max pools (ShuffleNet's stem) on [`EdgeMaxPool3x3`].
    pub max_pool: usize,
    /// 1x1 convolutions (plain or grouped) on [`EdgePointwise`], bias and ReLU fused.
    pub pointwise: usize,
    /// 3x3 stride-2 convolutions (the first layer) on [`EdgeConv3x3s2`].
    pub conv3x3_stride2: usize,
    /// Global average pool + classifier heads on [`EdgePoolLinear`].
    pub pool_linear: usize,
}

/// Which of our kernels [`rewrite_with`] may use where tract has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RewriteOptions {
    /// 1x1 convolutions on [`EdgePointwise`]. By default only where it has a vector path
    /// (armv7 NEON); elsewhere tract's packed matmul kernels are faster than our scalar
    /// tile, and grouped 1x1 convolutions become a batched matmul instead.
    pub pointwise: bool,
    /// 3x3 stride-2 convolutions on [`EdgeConv3x3s2`]; likewise only with a vector path.
    pub conv3x3_stride2: bool,
    /// The average pool and classifier on [`EdgePoolLinear`]. On by default everywhere:
    /// its portable path (a loop over 16 logits per weight row, which compilers vectorise)
    /// already beats tract's one-column matmul, and armv7 has a NEON one.
    pub pool_linear: bool,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        RewriteOptions {
            pointwise: Isa::best() != Isa::Scalar,
            conv3x3_stride2: Isa::best() != Isa::Scalar,
            pool_linear: true,
        }
    }
}

/// Rewrites a decluttered typed model so that the layers we own run on our kernels.
/// Called by the loader for `Engine::Edge` before tract's own optimisation pass.
pub fn apply(model: TypedModel) -> TractResult<TypedModel> {
    Ok(rewrite(model)?.0)
}

/// [`apply`], also saying what was replaced.
pub fn rewrite(model: TypedModel) -> TractResult<(TypedModel, RewriteSummary)> {
    rewrite_with(model, RewriteOptions::default())
}

/// [`rewrite`] with chosen kernels (tests force the pointwise kernel on any CPU).
pub fn rewrite_with(
    mut model: TypedModel,
    options: RewriteOptions,
) -> TractResult<(TypedModel, RewriteSummary)> {
    let mut summary = RewriteSummary::default();
    // Patches only add nodes and reroute consumers, so the ids taken here stay valid;
    // nodes left without consumers are dropped by `compact`.
    for id in model.eval_order()? {
        let Some(plan) = plan_depthwise(&model, id)? else {
            continue;
        };
        summary.depthwise += 1;
        summary.affine_folded += plan.affine_nodes;
        summary.relu_fused += plan.op.relu as usize;
        let data = model.node(id).inputs[0];
        let name = format!("{}.edge_dw3x3", model.node(plan.replaced.node).name);
        replace_by(&mut model, &[data], plan.op, name, plan.replaced)?;
    }
    model.compact()?;
    for id in model.eval_order()? {
        if average_pool_as_depthwise(&mut model, id)? {
            summary.average_pool += 1;
        }
        if max_pool_3x3(&mut model, id)? {
            summary.max_pool += 1;
        }
    }
    model.compact()?;
    for id in model.eval_order()? {
        if fold_batchnorm_into_conv(&mut model, id)? {
            summary.conv_batchnorm_folded += 1;
        }
    }
    model.compact()?;
    for id in model.eval_order()? {
        if options.pointwise {
            if pointwise_conv(&mut model, id)? || pointwise_einsum(&mut model, id)? {
                summary.pointwise += 1;
            }
        } else if grouped_pointwise_as_batched_matmul(&mut model, id)? {
            summary.grouped_pointwise += 1;
        }
        if options.conv3x3_stride2 && conv3x3_stride2(&mut model, id)? {
            summary.conv3x3_stride2 += 1;
        }
        if options.pool_linear && pool_linear(&mut model, id)? {
            summary.pool_linear += 1;
        }
    }
    model.compact()?;
    for id in model.eval_order()? {
        if fuse_add_relu(&mut model, id)? {
            summary.add_relu += 1;
        }
    }
    model.compact()?;
    Ok((model, summary))
}

/// Replaces what `replaced` carries by `op` applied to `inputs`, as one node named
/// `name`; the nodes left without consumers are dropped by the next `compact`.
fn replace_by(
    model: &mut TypedModel,
    inputs: &[OutletId],
    op: impl Into<Box<dyn TypedOp>>,
    name: String,
    replaced: OutletId,
) -> TractResult<()> {
    let mut patch = TypedModelPatch::new(format!("edge: {name}"));
    let taps = inputs
        .iter()
        .map(|&i| patch.tap_model(model, i))
        .collect::<TractResult<TVec<_>>>()?;
    let wire = patch.wire_node(name, op, &taps)?[0];
    patch.shunt_outside(model, replaced, wire)?;
    patch.apply(model)
}

/// The one inlet that reads `outlet`, unless none or several do or it is a model output
/// (fusing across it would then change what the model computes or returns).
fn sole_successor(model: &TypedModel, outlet: OutletId) -> Option<InletId> {
    match model.outlet_successors(outlet) {
        [only] if !model.outputs.contains(&outlet) => Some(*only),
        _ => None,
    }
}

/// The rank of `input` if it is an f32 tensor laid out as `format` (`NCHW` or `CHW`)
/// with `channels` channels.
fn nchw_f32(
    model: &TypedModel,
    format: DataFormat,
    input: OutletId,
    channels: usize,
) -> TractResult<Option<usize>> {
    let rank = match format {
        DataFormat::NCHW => 4,
        DataFormat::CHW => 3,
        _ => return Ok(None),
    };
    let x = model.outlet_fact(input)?;
    let matches = x.datum_type == f32::datum_type()
        && x.rank() == rank
        && x.shape[rank - 3].to_usize().ok() == Some(channels);
    Ok(matches.then_some(rank))
}

/// The elements of an `(N)CHW` shape per channel (images times pixels): an op's work
/// counted by channel, whatever its channel axis holds (a padded channels-last layout
/// has more floats per pixel than channels).
fn per_channel(shape: &ShapeFact) -> TDim {
    let channel_axis = shape.rank() - 3;
    (shape.iter().enumerate())
        .filter(|(axis, _)| *axis != channel_axis)
        .fold(1.to_dim(), |n, (_, d)| n * d.clone())
}

/// Padding 1 on every side, as explicit ONNX pads without ceil mode.
fn padded_by_one(padding: &PaddingSpec) -> bool {
    match padding {
        PaddingSpec::Explicit(before, after)
        | PaddingSpec::ExplicitOnnxPool(before, after, false) => {
            before.iter().chain(after.iter()).all(|&p| p == 1)
        }
        _ => false,
    }
}

/// A 3x3 stride-2 max pool with padding 1 (ShuffleNet's stem) on [`EdgeMaxPool3x3`]:
/// tract's pooling loop is scalar on armv7.
fn max_pool_3x3(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    use tract_onnx::tract_core::ops::cnn::MaxPool;
    let node = model.node(id);
    let Some(pool) = node.op_as::<MaxPool>() else {
        return Ok(false);
    };
    let spec = &pool.pool_spec;
    let channels = spec.input_channels;
    if nchw_f32(model, spec.data_format, node.inputs[0], channels)?.is_none()
        || pool.with_index_outputs.is_some()
        || node.outputs.len() != 1
        || *spec.kernel_shape != [3, 3]
        || spec.dilations().iter().any(|&d| d != 1)
        || spec.stride(0) != 2
        || spec.stride(1) != 2
        || !padded_by_one(&spec.padding)
    {
        return Ok(false);
    }
    let name = format!("{}.edge_max3x3", node.name);
    let data = node.inputs[0];
    let op = EdgeMaxPool3x3 { stride: 2 };
    replace_by(model, &[data], op, name, OutletId::new(id, 0))?;
    Ok(true)
}

/// A 3x3 average pool with padding 1 that counts the padding (ONNX `count_include_pad=1`,
/// ShuffleNet's stride-2 shortcut) is a depthwise convolution with every weight 1/9, so it
/// runs on [`EdgeDepthwise3x3`] instead of tract's scalar pooling loop.
fn average_pool_as_depthwise(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    use tract_onnx::tract_core::ops::cnn::SumPool;
    let node = model.node(id);
    let Some(pool) = node.op_as::<SumPool>() else {
        return Ok(false);
    };
    let spec = &pool.pool_spec;
    let stride = spec.stride(0);
    let channels = spec.input_channels;
    if nchw_f32(model, spec.data_format, node.inputs[0], channels)?.is_none()
        || channels == 0
        || !pool.count_include_pad
        || !pool.normalize
        || *spec.kernel_shape != [3, 3]
        || spec.dilations().iter().any(|&d| d != 1)
        || spec.stride(1) != stride
        || !(stride == 1 || stride == 2)
        || !padded_by_one(&spec.padding)
    {
        return Ok(false);
    }
    let op = EdgeDepthwise3x3 {
        stride,
        relu: false,
        weights: tensor1(&vec![1.0f32 / 9.0; channels * 9])
            .into_shape(&[channels, 9])?
            .into_arc_tensor(),
        bias: tensor1(&vec![0f32; channels]).into_arc_tensor(),
        channels_last: None,
        layouts: Layouts::default(),
    };
    let name = format!("{}.edge_avg3x3", node.name);
    let data = node.inputs[0];
    replace_by(model, &[data], op, name, OutletId::new(id, 0))?;
    Ok(true)
}

/// Folds the per-channel `Mul`/`Add`/`Sub` chain that declutter leaves for a BatchNorm
/// after a (non-depthwise) convolution into the convolution's weights and bias, as a
/// deployment pipeline would. tract fuses such a chain into its matmul only for plain
/// 1x1 convolutions; after grouped ones (ShuffleNet) it stays an element-wise pass.
fn fold_batchnorm_into_conv(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(false);
    };
    let channels = conv.pool_spec.output_channels;
    if conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || !matches!(
            conv.pool_spec.data_format,
            DataFormat::NCHW | DataFormat::CHW
        )
        || node.inputs.len() != 3
    {
        return Ok(false);
    }
    let Some((kernel, bias)) = conv_constants(model, node)? else {
        return Ok(false);
    };
    if kernel.datum_type() != f32::datum_type()
        || kernel.shape().first() != Some(&channels)
        || model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type()
    {
        return Ok(false);
    }
    let Some(mut shift) = broadcast_per_channel(&bias, channels, 0)? else {
        return Ok(false);
    };
    let mut scale = vec![1f32; channels];
    let (tail, folded, _) =
        affine_chain(model, OutletId::new(id, 0), &mut scale, &mut shift, false)?;
    if folded == 0 {
        return Ok(false);
    }
    let per_channel = kernel.len() / channels;
    let mut weights = kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    for (w, s) in weights.chunks_exact_mut(per_channel).zip(&scale) {
        w.iter_mut().for_each(|x| *x *= s);
    }
    let weights = tensor1(&weights).into_shape(kernel.shape())?;
    let conv = conv.clone();
    let name = node.name.clone();
    let data = node.inputs[0];
    let mut patch = TypedModelPatch::new(format!("edge batchnorm fold {name}"));
    let input = patch.tap_model(model, data)?;
    let kernel = patch.add_const(format!("{name}.edge_folded_kernel"), weights)?;
    let bias = patch.add_const(format!("{name}.edge_folded_bias"), tensor1(&shift))?;
    let wire = patch.wire_node(
        format!("{name}.edge_bn_folded"),
        conv,
        &[input, kernel, bias],
    )?[0];
    patch.shunt_outside(model, tail, wire)?;
    patch.apply(model)?;
    Ok(true)
}

/// A grouped 1x1 convolution (stride 1, no padding; ShuffleNet's) as one matmul batched
/// over the groups: `[G, Cout/G, Cin/G] x [G, Cin/G, H*W]`, between two free reshapes.
/// tract lowers grouped convolutions through an im2col copy of the whole input and one
/// small matmul per group; the batched form needs neither the copy nor the per-group
/// plumbing, and tract fuses the bias (and a following ReLU) into its matmul kernel.
fn grouped_pointwise_as_batched_matmul(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let Some(conv) = ConvParams::of(model, id, [1, 1], 1)? else {
        return Ok(false);
    };
    let ConvParams {
        groups,
        c_in,
        c_out,
        rank,
        kernel,
        bias,
        ..
    } = conv;
    if groups < 2 || groups == c_in {
        return Ok(false);
    }
    let node = model.node(id);
    let x = model.outlet_fact(node.inputs[0])?;
    let (h, w) = (x.shape[rank - 2].clone(), x.shape[rank - 1].clone());
    let (g, m, k) = (groups, c_out / groups, c_in / groups);
    let name = node.name.clone();
    let data = node.inputs[0];
    let at = rank - 3;
    let mut patch = TypedModelPatch::new(format!("edge grouped 1x1 {name}"));
    let input = patch.tap_model(model, data)?;
    let grouped = patch.wire_node(
        format!("{name}.edge_split_groups"),
        AxisOp::Reshape(
            at,
            tvec!(c_in.to_dim(), h.clone(), w.clone()),
            tvec!(g.to_dim(), k.to_dim(), h.clone() * w.clone()),
        ),
        &[input],
    )?[0];
    let weights = kernel.into_tensor().into_shape(&[g, m, k])?;
    let weights = patch.add_const(format!("{name}.edge_group_weights"), weights)?;
    let axes: AxesMapping = if rank == 4 {
        "gmk,ngkp->ngmp".parse()?
    } else {
        "gmk,gkp->gmp".parse()?
    };
    let product = patch.wire_node(
        format!("{name}.edge_group_matmul"),
        EinSum::new(axes, f32::datum_type()),
        &[weights, grouped],
    )?[0];
    let merged = patch.wire_node(
        format!("{name}.edge_merge_groups"),
        AxisOp::Reshape(
            at,
            tvec!(g.to_dim(), m.to_dim(), h.clone() * w.clone()),
            tvec!(c_out.to_dim(), h, w),
        ),
        &[product],
    )?[0];
    // tract cannot fuse a bias that varies along the batch (group) axis into the matmul:
    // add it (and a ReLU that directly follows) in one pass of ours.
    let conv_out = OutletId::new(id, 0);
    let relu = relu_successor(model, conv_out)?;
    let op = EdgeBiasRelu {
        bias: tensor1(&bias).into_arc_tensor(),
        relu: relu.is_some(),
    };
    let wire = patch.wire_node(format!("{name}.edge_bias"), op, &[merged])?[0];
    patch.shunt_outside(model, relu.unwrap_or(conv_out), wire)?;
    patch.apply(model)?;
    Ok(true)
}

/// A 1x1 convolution (stride 1, no padding, plain or grouped, constant weights) on
/// [`EdgePointwise`], with the ReLU that directly follows fused. Its BatchNorm was folded
/// into the weights by [`fold_batchnorm_into_conv`] before.
fn pointwise_conv(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let Some(conv) = ConvParams::of(model, id, [1, 1], 1)? else {
        return Ok(false);
    };
    let (groups, c_in, c_out) = (conv.groups, conv.c_in, conv.c_out);
    let conv_out = OutletId::new(id, 0);
    let relu = relu_successor(model, conv_out)?;
    let node = model.node(id);
    let (name, data) = (format!("{}.edge_pointwise", node.name), node.inputs[0]);
    let kernel = PackedPointwise::for_map(
        conv.kernel.try_as_plain_ram()?.as_slice::<f32>()?,
        &conv.bias,
        groups,
        c_out / groups,
        c_in / groups,
        relu.is_some(),
        map_pixels(model, data)?,
    );
    let op = EdgePointwise {
        kernel: Arc::new(kernel),
        layouts: Layouts::default(),
    };
    replace_by(model, &[data], op, name, relu.unwrap_or(conv_out))?;
    Ok(true)
}

/// A convolution our kernels may take: constant f32 weights (OIHW) and bias, not
/// quantised, on an f32 `(N)CHW` input.
struct ConvParams {
    groups: usize,
    c_in: usize,
    c_out: usize,
    /// Of the input.
    rank: usize,
    /// Padding 1 on every side (see [`padded_by_one`]).
    padded_by_one: bool,
    kernel: Arc<Tensor>,
    /// Per output channel.
    bias: Vec<f32>,
}

impl ConvParams {
    /// Node `id`'s parameters if it is such a convolution with this kernel shape and
    /// stride; 1x1 ones must be unpadded.
    fn of(
        model: &TypedModel,
        id: usize,
        kernel_shape: [usize; 2],
        stride: usize,
    ) -> TractResult<Option<ConvParams>> {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            return Ok(None);
        };
        let spec = &conv.pool_spec;
        let (groups, c_in, c_out) = (conv.group, spec.input_channels, spec.output_channels);
        let unpadded = (0..2).all(|d| spec.padding.valid_dim(d, true));
        if groups == 0
            || c_in % groups != 0
            || c_out % groups != 0
            || c_out == 0
            || conv.q_params.is_some()
            || conv.kernel_fmt != KernelFormat::OIHW
            || *spec.kernel_shape != kernel_shape
            || spec.dilations().iter().any(|&d| d != 1)
            || spec.stride(0) != stride
            || spec.stride(1) != stride
            || (kernel_shape == [1, 1] && !unpadded)
        {
            return Ok(None);
        }
        let Some(rank) = nchw_f32(model, spec.data_format, node.inputs[0], c_in)? else {
            return Ok(None);
        };
        let Some((kernel, bias)) = conv_constants(model, node)? else {
            return Ok(None);
        };
        let [kh, kw] = kernel_shape;
        if kernel.datum_type() != f32::datum_type()
            || kernel.shape() != [c_out, c_in / groups, kh, kw]
        {
            return Ok(None);
        }
        let Some(bias) = broadcast_per_channel(&bias, c_out, 0)? else {
            return Ok(None);
        };
        Ok(Some(ConvParams {
            groups,
            c_in,
            c_out,
            rank,
            padded_by_one: padded_by_one(&spec.padding),
            kernel,
            bias,
        }))
    }
}

/// A 3x3 stride-2 convolution with padding 1 (group 1, constant weights; the first layer)
/// on [`EdgeConv3x3s2`], with the ReLU that directly follows fused.
fn conv3x3_stride2(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let Some(conv) = ConvParams::of(model, id, [3, 3], 2)? else {
        return Ok(false);
    };
    if conv.groups != 1 || !conv.padded_by_one {
        return Ok(false);
    }
    let conv_out = OutletId::new(id, 0);
    let relu = relu_successor(model, conv_out)?;
    let kernel = PackedConv3x3s2::new(
        conv.kernel.try_as_plain_ram()?.as_slice::<f32>()?,
        &conv.bias,
        conv.c_in,
        conv.c_out,
        relu.is_some(),
    );
    let op = EdgeConv3x3s2 {
        kernel: Arc::new(kernel),
    };
    let node = model.node(id);
    let (name, data) = (format!("{}.edge_conv3x3s2", node.name), node.inputs[0]);
    replace_by(model, &[data], op, name, relu.unwrap_or(conv_out))?;
    Ok(true)
}

/// The head: an average over each whole plane, then the classifier (`EinSum` with
/// constant `[classes, channels]` weights: ONNX `Gemm` with `transB = 1` after a
/// `Flatten`), and the bias `Add` that may follow: one [`EdgePoolLinear`]. The average is
/// ONNX `AveragePool` with the map as its window (tract's normalised `SumPool`) or
/// `GlobalAveragePool` (tract's `Reduce<Sum>` over the map, then a `Mul` by `1 / (h w)`).
/// Matched from the classifier, the node this visits.
fn pool_linear(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let linear = model.node(id);
    let Some(einsum) = linear.op_as::<EinSum>() else {
        return Ok(false);
    };
    if !matches!(
        einsum.axes.to_string().as_str(),
        "mkba,nk->mn" | "kba,nk->mn"
    ) || linear.inputs.len() != 2
        || einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
    {
        return Ok(false);
    }
    let Some(weights) = model.outlet_fact(linear.inputs[1])?.konst.clone() else {
        return Ok(false);
    };
    let [classes, channels] = *weights.shape() else {
        return Ok(false);
    };
    let Some(data) = plane_average_input(model, linear.inputs[0])? else {
        return Ok(false);
    };
    let x = model.outlet_fact(data)?;
    if x.shape[x.rank() - 3].to_usize().ok() != Some(channels)
        || classes == 0
        || weights.datum_type() != f32::datum_type()
        || x.datum_type != f32::datum_type()
    {
        return Ok(false);
    }
    // The bias: an `Add` of a constant broadcasting along the classes, if it follows.
    let logits = OutletId::new(id, 0);
    let mut bias = vec![0f32; classes];
    let mut tail = logits;
    if let (false, [add_inlet]) = (
        model.outputs.contains(&logits),
        model.outlet_successors(logits),
    ) {
        let add = model.node(add_inlet.node);
        let is_add = add.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Add>());
        let other = add.inputs.get(1 - add_inlet.slot.min(1)).copied();
        let konst = match other {
            Some(o) if is_add => model.outlet_fact(o)?.konst.clone(),
            _ => None,
        };
        let same_shape =
            model.outlet_fact(add.id.into())?.shape == model.outlet_fact(logits)?.shape;
        if let (Some(konst), true) = (konst, same_shape) {
            if let Some(values) = broadcast_per_channel(&konst, classes, 0)? {
                bias = values;
                tail = OutletId::new(add.id, 0);
            }
        }
    }
    let kernel = PackedPoolLinear::new(
        weights.try_as_plain_ram()?.as_slice::<f32>()?,
        &bias,
        channels,
        classes,
    );
    let name = format!("{}.edge_pool_linear", linear.name);
    let op = EdgePoolLinear {
        kernel: Arc::new(kernel),
        layout: Layout::Planar,
    };
    replace_by(model, &[data], op, name, tail)?;
    Ok(true)
}

/// If `pooled` is the average of every plane of an f32 `(N)CHW` tensor (N = 1), used only
/// by its one consumer, the tensor averaged.
fn plane_average_input(model: &TypedModel, pooled: OutletId) -> TractResult<Option<OutletId>> {
    use tract_onnx::tract_core::ops::cnn::SumPool;
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
    if sole_successor(model, pooled).is_none() {
        return Ok(None);
    }
    let node = model.node(pooled.node);
    let (data, scale) = if let Some(pool) = node.op_as::<SumPool>() {
        let spec = &pool.pool_spec;
        let x = model.outlet_fact(node.inputs[0])?;
        let rank = x.rank();
        let map: Option<Vec<usize>> = (rank >= 3)
            .then(|| {
                x.shape[rank - 2..]
                    .iter()
                    .map(|d| d.to_usize().ok())
                    .collect()
            })
            .flatten();
        let unpadded = (0..2).all(|d| spec.padding.valid_dim(d, true));
        if !pool.normalize
            || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
            || spec.data_format.has_n() != (rank == 4)
            || map.as_deref() != Some(&spec.kernel_shape[..])
            || !unpadded
        {
            return Ok(None);
        }
        (node.inputs[0], 1.0)
    } else if let Some(mul) = node.op_as::<TypedBinOp>() {
        // GlobalAveragePool: Mul(Reduce<Sum>(x, [h, w]), 1 / (h w)).
        if !mul.0.is::<Mul>() || node.inputs.len() != 2 {
            return Ok(None);
        }
        let Some((sum, konst)) = [0, 1].into_iter().find_map(|slot| {
            let konst = model
                .outlet_fact(node.inputs[1 - slot])
                .ok()?
                .konst
                .clone()?;
            Some((node.inputs[slot], konst))
        }) else {
            return Ok(None);
        };
        let reduce_node = model.node(sum.node);
        let Some(reduce) = reduce_node.op_as::<Reduce>() else {
            return Ok(None);
        };
        let x = model.outlet_fact(reduce_node.inputs[0])?;
        let rank = x.rank();
        let Ok(scale) = konst.cast_to_scalar::<f32>() else {
            return Ok(None);
        };
        let plane = x.shape[rank.saturating_sub(2)..]
            .iter()
            .map(|d| d.to_usize().ok())
            .product::<Option<usize>>();
        if reduce.reducer != Reducer::Sum
            || !(rank == 3 || rank == 4)
            || *reduce.axes != [rank - 2, rank - 1]
            || sole_successor(model, sum).is_none()
            || konst.len() != 1
            || plane.is_none_or(|p| p == 0)
        {
            return Ok(None);
        }
        (reduce_node.inputs[0], scale * plane.unwrap() as f32)
    } else {
        return Ok(None);
    };
    let x = model.outlet_fact(data)?;
    let rank = x.rank();
    // A plain mean (the constant really is 1 / (h w)), over one image.
    if (scale - 1.0).abs() > 1e-6 || !(rank == 3 || (rank == 4 && x.shape[0].is_one())) {
        return Ok(None);
    }
    Ok(Some(data))
}

/// tract's declutter turns a plain 1x1 convolution into `EinSum` (`IHW,OI->OHW`, with a
/// unit batch axis `N` on either side) followed by its bias `Add`, the BatchNorm's
/// `Mul`/`Add` and the ReLU's `Max`: all of it becomes one [`EdgePointwise`], between
/// free reshapes that drop or restore the unit batch axis.
fn pointwise_einsum(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(false);
    };
    let (batch_in, batch_out) = match einsum.axes.to_string().as_str() {
        "IHW,OI->OHW" => (false, false),
        "NIHW,OI->OHW" => (true, false),
        "IHW,OI->NOHW" => (false, true),
        "NIHW,OI->NOHW" => (true, true),
        _ => return Ok(false),
    };
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || node.inputs.len() != 2
    {
        return Ok(false);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let Some(kernel) = model.outlet_fact(node.inputs[1])?.konst.clone() else {
        return Ok(false);
    };
    let [c_out, c_in] = *kernel.shape() else {
        return Ok(false);
    };
    let rank = 3 + batch_in as usize;
    if x.datum_type != f32::datum_type()
        || kernel.datum_type() != f32::datum_type()
        || x.rank() != rank
        || (batch_in && !x.shape[0].is_one())
        || x.shape[rank - 3].to_usize().ok() != Some(c_in)
        || c_out == 0
        || c_in == 0
    {
        return Ok(false);
    }
    let mut scale = vec![1f32; c_out];
    let mut shift = vec![0f32; c_out];
    let (tail, _, relu) = affine_chain(model, OutletId::new(id, 0), &mut scale, &mut shift, true)?;
    let mut weights = kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    for (row, s) in weights.chunks_exact_mut(c_in).zip(&scale) {
        row.iter_mut().for_each(|w| *w *= s);
    }
    let name = node.name.clone();
    let data = node.inputs[0];
    let kernel = PackedPointwise::for_map(
        &weights,
        &shift,
        1,
        c_out,
        c_in,
        relu,
        map_pixels(model, data)?,
    );
    let mut patch = TypedModelPatch::new(format!("edge pointwise {name}"));
    let mut wire = patch.tap_model(model, data)?;
    if batch_in {
        wire = patch.wire_node(format!("{name}.edge_drop_batch"), AxisOp::Rm(0), &[wire])?[0];
    }
    let op = EdgePointwise {
        kernel: Arc::new(kernel),
        layouts: Layouts::default(),
    };
    wire = patch.wire_node(format!("{name}.edge_pointwise"), op, &[wire])?[0];
    if batch_out {
        wire = patch.wire_node(format!("{name}.edge_add_batch"), AxisOp::Add(0), &[wire])?[0];
    }
    patch.shunt_outside(model, tail, wire)?;
    patch.apply(model)?;
    Ok(true)
}

/// Pixels per image of a `(N)CHW` activation, if its height and width are known numbers.
fn map_pixels(model: &TypedModel, outlet: OutletId) -> TractResult<Option<usize>> {
    let shape = &model.outlet_fact(outlet)?.shape;
    let rank = shape.rank();
    Ok((rank >= 3)
        .then(|| Some(shape[rank - 2].to_usize().ok()? * shape[rank - 1].to_usize().ok()?))
        .flatten())
}

/// The output of the `Max(x, 0)` that is the only consumer of `outlet`, if there is one.
fn relu_successor(model: &TypedModel, outlet: OutletId) -> TractResult<Option<OutletId>> {
    let Some(succ_inlet) = sole_successor(model, outlet) else {
        return Ok(None);
    };
    let succ = model.node(succ_inlet.node);
    let Some(max) = succ.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if !max.0.is::<Max>()
        || model.outlet_fact(succ.id.into())?.shape != model.outlet_fact(outlet)?.shape
    {
        return Ok(None);
    }
    let zero = is_zero_constant(model, succ.inputs[1 - succ_inlet.slot])?;
    Ok(zero.then(|| OutletId::new(succ.id, 0)))
}

/// Whether `outlet` is a constant whose values are all 0 (the floor of a ReLU).
fn is_zero_constant(model: &TypedModel, outlet: OutletId) -> TractResult<bool> {
    let Some(konst) = model.outlet_fact(outlet)?.konst.clone() else {
        return Ok(false);
    };
    let Ok(values) = konst.cast_to::<f32>() else {
        return Ok(false);
    };
    Ok(values
        .try_as_plain_ram()?
        .as_slice::<f32>()?
        .iter()
        .all(|&v| v == 0.0))
}

/// The constant kernel and bias of a convolution node (inputs 1 and 2), if both are.
fn conv_constants(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(Arc<Tensor>, Arc<Tensor>)>> {
    if node.inputs.len() != 3 {
        return Ok(None);
    }
    Ok(model
        .outlet_fact(node.inputs[1])?
        .konst
        .clone()
        .zip(model.outlet_fact(node.inputs[2])?.konst.clone()))
}

/// `Max(Add(a, b), 0)` on two f32 tensors of the same shape, the Add used only by the Max:
/// one [`EdgeAddRelu`] pass instead of tract's element-wise chain.
fn fuse_add_relu(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(false);
    };
    if !bin.0.is::<Add>() || node.inputs.len() != 2 {
        return Ok(false);
    }
    let sum = OutletId::new(id, 0);
    let a = model.outlet_fact(node.inputs[0])?;
    let b = model.outlet_fact(node.inputs[1])?;
    let out = model.outlet_fact(sum)?;
    if a.konst.is_some()
        || b.konst.is_some()
        || a.shape != b.shape
        || a.shape != out.shape
        || a.datum_type != f32::datum_type()
        || b.datum_type != f32::datum_type()
        || model.outputs.contains(&sum)
    {
        return Ok(false);
    }
    let Some(relu_out) = relu_successor(model, sum)? else {
        return Ok(false);
    };
    let name = format!("{}.edge_add_relu", model.node(relu_out.node).name);
    let inputs = node.inputs.clone();
    replace_by(model, &inputs, EdgeAddRelu, name, relu_out)?;
    Ok(true)
}

/// After tract's optimiser, for `Engine::Edge`: the ReLUs it could not fuse into a matmul
/// (after the first convolution, whose im2col output is reshaped before the ReLU; after
/// grouped convolutions) stay a separate `OptMaxByScalar` pass that is not vectorised on
/// armv7. They run on [`EdgeRelu`] instead. Returns the model and how many were replaced.
pub fn rewrite_optimised(mut model: TypedModel) -> TractResult<(TypedModel, usize)> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<OptBinByScalar>() else {
            continue;
        };
        if !op.binop.is::<Max>() || node.inputs.len() != 2 {
            continue;
        }
        let input = model.outlet_fact(node.inputs[0])?;
        let output = model.outlet_fact(OutletId::new(id, 0))?;
        if input.datum_type != f32::datum_type() || output.shape != input.shape {
            continue;
        }
        if !is_zero_constant(&model, node.inputs[1])? {
            continue;
        }
        let (name, data) = (format!("{}.edge_relu", node.name), node.inputs[0]);
        replace_by(&mut model, &[data], EdgeRelu, name, OutletId::new(id, 0))?;
        replaced += 1;
    }
    model.compact()?;
    Ok((model, replaced))
}

struct DepthwisePlan {
    op: EdgeDepthwise3x3,
    /// The outlet (conv, or the last fused node) whose consumers move to the new op.
    replaced: OutletId,
    affine_nodes: usize,
}

/// A depthwise conv our kernel implements: its stride, 3x3 weights and bias.
type DepthwiseParams = (usize, Vec<f32>, Vec<f32>);

/// Stride, weights and bias if node `id` is a depthwise 3x3 conv (padding 1) our kernel
/// implements.
fn depthwise_conv_params(model: &TypedModel, id: usize) -> TractResult<Option<DepthwiseParams>> {
    for stride in [1, 2] {
        let Some(conv) = ConvParams::of(model, id, [3, 3], stride)? else {
            continue;
        };
        if conv.groups != conv.c_in || conv.c_out != conv.c_in || !conv.padded_by_one {
            return Ok(None);
        }
        let weights = conv.kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        return Ok(Some((stride, weights, conv.bias)));
    }
    Ok(None)
}

/// Values of a constant that broadcasts per channel against `[N, C, H, W]`: any shape
/// that is all ones except possibly a `C` on the channel axis (`channel_axis_from_end`
/// counts from the last axis of a rank-4 operand; rank-1 biases use 0).
fn broadcast_per_channel(
    konst: &Tensor,
    channels: usize,
    channel_axis_from_end: usize,
) -> TractResult<Option<Vec<f32>>> {
    let Ok(values) = konst.cast_to::<f32>() else {
        return Ok(None);
    };
    let shape = konst.shape();
    let values = values.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    if values.len() == 1 {
        return Ok(Some(vec![values[0]; channels]));
    }
    let channel_axis = shape.len().checked_sub(channel_axis_from_end + 1);
    let per_channel = values.len() == channels
        && shape
            .iter()
            .enumerate()
            .all(|(axis, &d)| d == 1 || (Some(axis) == channel_axis && d == channels));
    Ok(per_channel.then_some(values))
}

/// What follows a convolution's output, one node at a time, in [`affine_chain`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum ChainStep {
    /// A per-channel Mul/Add/Sub by a constant, folded into `scale`/`shift`.
    Affine,
    /// `Max(x, 0)`.
    Relu,
}

/// Walks the per-channel `Mul`/`Add`/`Sub` constants (declutter's form of a BatchNorm)
/// that follow `start`, each the only consumer of the previous output, accumulating
/// `y = scale * x + shift`; with `take_relu` a final `Max(x, 0)` is taken too. Returns
/// the last outlet taken, how many affine nodes, and whether a ReLU ended the chain.
fn affine_chain(
    model: &TypedModel,
    start: OutletId,
    scale: &mut [f32],
    shift: &mut [f32],
    take_relu: bool,
) -> TractResult<(OutletId, usize, bool)> {
    let channels = scale.len();
    let out_shape = model.outlet_fact(start)?.shape.clone();
    let mut tail = start;
    let mut affine_nodes = 0;
    while let Some(succ_inlet) = sole_successor(model, tail) {
        let succ = model.node(succ_inlet.node);
        let Some(bin) = succ.op_as::<TypedBinOp>() else {
            break;
        };
        let succ_fact = model.outlet_fact(succ.id.into())?;
        if succ_fact.shape != out_shape || succ_fact.datum_type != f32::datum_type() {
            break;
        }
        let Some(konst) = model
            .outlet_fact(succ.inputs[1 - succ_inlet.slot])?
            .konst
            .clone()
        else {
            break;
        };
        // The operand broadcasts against NCHW: its channel axis is third from the end.
        let Some(values) = broadcast_per_channel(&konst, channels, 2)? else {
            break;
        };
        let step = if bin.0.is::<Mul>() {
            for ((sc, sh), v) in scale.iter_mut().zip(shift.iter_mut()).zip(&values) {
                *sc *= v;
                *sh *= v;
            }
            ChainStep::Affine
        } else if bin.0.is::<Add>() {
            shift.iter_mut().zip(&values).for_each(|(s, v)| *s += v);
            ChainStep::Affine
        } else if bin.0.is::<Sub>() && succ_inlet.slot == 0 {
            shift.iter_mut().zip(&values).for_each(|(s, v)| *s -= v);
            ChainStep::Affine
        } else if take_relu && bin.0.is::<Max>() && values.iter().all(|&v| v == 0.0) {
            ChainStep::Relu
        } else {
            break;
        };
        tail = OutletId::new(succ.id, 0);
        if step == ChainStep::Relu {
            return Ok((tail, affine_nodes, true));
        }
        affine_nodes += 1;
    }
    Ok((tail, affine_nodes, false))
}

fn plan_depthwise(model: &TypedModel, id: usize) -> TractResult<Option<DepthwisePlan>> {
    let Some((stride, weights, conv_bias)) = depthwise_conv_params(model, id)? else {
        return Ok(None);
    };
    let channels = conv_bias.len();
    // y = scale * (w . x) + shift, accumulated over the fused nodes.
    let mut scale = vec![1f32; channels];
    let mut shift = conv_bias;
    let (tail, affine_nodes, relu) =
        affine_chain(model, OutletId::new(id, 0), &mut scale, &mut shift, true)?;
    let weights: Vec<f32> = weights
        .chunks_exact(9)
        .zip(&scale)
        .flat_map(|(k, s)| k.iter().map(move |w| w * s))
        .collect();
    let op = EdgeDepthwise3x3 {
        stride,
        relu,
        weights: tensor1(&weights)
            .into_shape(&[channels, 9])?
            .into_arc_tensor(),
        bias: tensor1(&shift).into_arc_tensor(),
        channels_last: None,
        layouts: Layouts::default(),
    };
    Ok(Some(DepthwisePlan {
        op,
        replaced: tail,
        affine_nodes,
    }))
}

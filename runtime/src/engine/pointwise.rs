//! tract ops running our convolution GEMMs: [`crate::kernels::PackedPointwise`], a 1x1
//! convolution (plain or grouped, stride 1, NCHW f32), and
//! [`crate::kernels::PackedConv3x3s2`], the first layer; bias (folded BatchNorm) and ReLU
//! fused in both.

use crate::kernels::{Isa, Layouts, PackedConv3x3s2, PackedPointwise};
use tract_onnx::tract_core::internal::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePointwise {
    pub kernel: Arc<PackedPointwise>,
    /// How the input and output lie in memory; the shapes stay NCHW either way (planar
    /// unless [`crate::engine::channels_last()`] chose otherwise), their channel axes
    /// giving a channels-last side's floats per pixel.
    pub layouts: Layouts,
}

/// Our convolutions accept `[N, C, H, W]` or, after declutter dropped a unit batch axis,
/// `[C, H, W]`, with `expected` channels.
fn check_nchw(op: &str, rank: usize, channels: Option<usize>, expected: usize) -> TractResult<()> {
    ensure!(
        (rank == 3 || rank == 4) && channels == Some(expected),
        "{op} expects (N)CHW input with {expected} channels"
    );
    Ok(())
}

impl EdgePointwise {
    fn check_rank(&self, rank: usize, channels: Option<usize>) -> TractResult<()> {
        check_nchw("EdgePointwise", rank, channels, self.channel_dims().0)
    }

    /// The channel axis of the input and of the output: the channels, or the floats per
    /// pixel of a channels-last layout.
    fn channel_dims(&self) -> (usize, usize) {
        let k = &self.kernel;
        (
            self.layouts.input.floats_per_pixel(k.input_channels()),
            self.layouts.output.floats_per_pixel(k.output_channels()),
        )
    }
}

impl Op for EdgePointwise {
    fn name(&self) -> StaticName {
        "EdgePointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let k = &self.kernel;
        Ok(vec![format!(
            "groups:{} out/group:{} in/group:{} relu:{} kernel:{:?} layouts:{:?}->{:?}",
            k.groups,
            k.rows,
            k.depth,
            k.relu,
            Isa::best(),
            self.layouts.input,
            self.layouts.output
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for EdgePointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape: TVec<usize> = input.shape().into();
        let rank = shape.len();
        self.check_rank(rank, rank.checked_sub(3).map(|a| shape[a]))?;
        let pixels = shape[rank - 2] * shape[rank - 1];
        let mut out_shape = shape.clone();
        out_shape[rank - 3] = self.channel_dims().1;
        // SAFETY: the kernel writes every output element (none when the map is empty), but
        // for the floats after each pixel's channels in a channels-last layout, which
        // nothing reads.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if shape.iter().all(|&d| d > 0) {
            let imp = Isa::best();
            ensure!(
                self.layouts == Layouts::default()
                    || self.kernel.channels_last_capable(imp, pixels),
                "EdgePointwise: no channels-last path for {pixels} pixels on {imp:?}"
            );
            self.kernel.run_layouts(
                imp,
                input.try_as_plain_ram()?.as_slice::<f32>()?,
                pixels,
                output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
                self.layouts,
            );
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for EdgePointwise {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        let shape = &inputs[0].shape;
        let rank = shape.rank();
        let channels = rank.checked_sub(3).and_then(|a| shape[a].to_usize().ok());
        self.check_rank(rank, channels)?;
        let mut dims: TVec<TDim> = shape.iter().cloned().collect();
        dims[rank - 3] = self.channel_dims().1.to_dim();
        Ok(tvec!(f32::fact(dims)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        // Per output channel, not per float of a padded pixel.
        let facts = self.output_facts(inputs)?;
        let planes = super::per_channel(&facts[0].shape);
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            planes * (self.kernel.output_channels() * self.kernel.depth)
        )))
    }
}

/// A 3x3 stride-2 convolution with padding 1 (the networks' first layer) on
/// [`crate::kernels::PackedConv3x3s2`], bias and ReLU fused: no `Pad`, no im2col.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConv3x3s2 {
    pub kernel: Arc<PackedConv3x3s2>,
}

impl EdgeConv3x3s2 {
    fn check_rank(&self, rank: usize, channels: Option<usize>) -> TractResult<()> {
        check_nchw("EdgeConv3x3s2", rank, channels, self.kernel.in_channels)
    }
}

impl Op for EdgeConv3x3s2 {
    fn name(&self) -> StaticName {
        "EdgeConv3x3s2".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let k = &self.kernel;
        Ok(vec![format!(
            "in:{} out:{} relu:{} kernel:{:?}",
            k.in_channels,
            k.out_channels,
            k.relu,
            Isa::best()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for EdgeConv3x3s2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape: TVec<usize> = input.shape().into();
        let rank = shape.len();
        self.check_rank(rank, rank.checked_sub(3).map(|a| shape[a]))?;
        let (h, w) = (shape[rank - 2], shape[rank - 1]);
        let (oh, ow) = PackedConv3x3s2::output_size(h, w);
        let mut out_shape = shape.clone();
        out_shape[rank - 3] = self.kernel.out_channels;
        out_shape[rank - 2] = oh;
        out_shape[rank - 1] = ow;
        // SAFETY: the kernel writes every output element (none when the input is empty).
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if shape.iter().all(|&d| d > 0) {
            self.kernel.run(
                input.try_as_plain_ram()?.as_slice::<f32>()?,
                h,
                w,
                output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
            );
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for EdgeConv3x3s2 {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        let shape = &inputs[0].shape;
        let rank = shape.rank();
        let channels = rank.checked_sub(3).and_then(|a| shape[a].to_usize().ok());
        self.check_rank(rank, channels)?;
        let mut dims: TVec<TDim> = shape.iter().cloned().collect();
        dims[rank - 3] = self.kernel.out_channels.to_dim();
        // Padding 1, kernel 3, stride 2: (d + 2 - 3) / 2 + 1.
        for d in &mut dims[rank - 2..] {
            *d = (d.clone() - 1) / 2 + 1;
        }
        Ok(tvec!(f32::fact(dims)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let facts = self.output_facts(inputs)?;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            facts[0].shape.volume() * (self.kernel.in_channels * 9)
        )))
    }
}

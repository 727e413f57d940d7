//! tract op running [`crate::kernels::Depthwise3x3`]: a 3x3 depthwise convolution
//! (pad 1, stride 1 or 2, NCHW f32) with its BatchNorm/bias and ReLU folded in.

use crate::kernels::{Depthwise3x3, DepthwiseChannelsLast, Isa, Layouts};
use tract_onnx::tract_core::internal::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeDepthwise3x3 {
    pub stride: usize,
    pub relu: bool,
    /// `[channels, 9]` f32, BatchNorm scale already multiplied in.
    pub weights: Arc<Tensor>,
    /// `[channels]` f32: conv bias and BatchNorm shift.
    pub bias: Arc<Tensor>,
    /// Set where [`crate::engine::channels_last()`] keeps this layer's input and output
    /// channels-last (`[N, H, W, C]` in memory, the shapes still NCHW): the weights laid
    /// out for that kernel.
    pub channels_last: Option<Arc<DepthwiseChannelsLast>>,
    /// How the input and output lie in memory: both planar, or both channels-last (the
    /// shapes' channel axes then give the floats per pixel, which may exceed the
    /// channels: see `kernels::layout::padded_pixel`).
    pub layouts: Layouts,
}

impl EdgeDepthwise3x3 {
    pub fn channels(&self) -> usize {
        self.bias.len()
    }

    /// The channel axis of the input and of the output: the channels, or the floats per
    /// pixel of a channels-last layout.
    fn channel_dims(&self) -> (usize, usize) {
        (
            self.layouts.input.floats_per_pixel(self.channels()),
            self.layouts.output.floats_per_pixel(self.channels()),
        )
    }

    /// Accepts `[N, C, H, W]` or, after declutter dropped a unit batch axis, `[C, H, W]`.
    fn geometry(&self, input_shape: &[usize]) -> TractResult<Depthwise3x3> {
        let rank = input_shape.len();
        ensure!(
            (rank == 3 || rank == 4) && input_shape[rank - 3] == self.channel_dims().0,
            "EdgeDepthwise3x3 expects (N)CHW input with {} channels, got {:?}",
            self.channel_dims().0,
            input_shape
        );
        ensure!(
            input_shape.iter().all(|&d| d > 0),
            "empty tensor {input_shape:?}"
        );
        Ok(Depthwise3x3 {
            channels: self.channels(),
            height: input_shape[rank - 2],
            width: input_shape[rank - 1],
            stride: self.stride,
            relu: self.relu,
        })
    }
}

impl Op for EdgeDepthwise3x3 {
    fn name(&self) -> StaticName {
        "EdgeDepthwise3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "channels:{} stride:{} relu:{} kernel:{:?} channels-last:{}",
            self.channels(),
            self.stride,
            self.relu,
            Isa::best(),
            self.channels_last.is_some()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for EdgeDepthwise3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let geometry = self.geometry(input.shape())?;
        let mut shape: TVec<usize> = input.shape().into();
        let rank = shape.len();
        shape[rank - 3] = self.channel_dims().1;
        shape[rank - 2] = geometry.output_height();
        shape[rank - 1] = geometry.output_width();
        // SAFETY: the kernel writes every output element (a channels-last one leaves
        // the floats after each pixel's channels unwritten, and nothing reads them).
        let mut output = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        if let Some(kernel) = &self.channels_last {
            kernel.run(
                Isa::best(),
                input.try_as_plain_ram()?.as_slice::<f32>()?,
                (geometry.height, geometry.width),
                self.stride,
                output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
                self.channel_dims(),
            );
            return Ok(tvec!(output.into_tvalue()));
        }
        geometry.run(
            input.try_as_plain_ram()?.as_slice::<f32>()?,
            self.weights.try_as_plain_ram()?.as_slice::<f32>()?,
            self.bias.try_as_plain_ram()?.as_slice::<f32>()?,
            output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for EdgeDepthwise3x3 {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        let shape = &inputs[0].shape;
        let rank = shape.rank();
        ensure!(
            rank == 3 || rank == 4,
            "EdgeDepthwise3x3 expects rank 3 or 4, got {shape:?}"
        );
        // Padding 1, kernel 3: (d + 2 - 3) / stride + 1.
        let mut dims: TVec<TDim> = shape.iter().cloned().collect();
        dims[rank - 3] = self.channel_dims().1.to_dim();
        for d in &mut dims[rank - 2..] {
            *d = (d.clone() - 1) / self.stride + 1;
        }
        Ok(tvec!(f32::fact(dims)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        // Per channel, not per float of a padded pixel.
        let facts = self.output_facts(inputs)?;
        let planes = super::per_channel(&facts[0].shape);
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            planes * (self.channels() * 9)
        )))
    }
}

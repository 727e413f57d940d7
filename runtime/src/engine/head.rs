//! tract op running [`crate::kernels::PackedPoolLinear`]: the global average pool and the
//! fully connected classifier that follows it, as one op.

use crate::kernels::{Isa, Layout, PackedPoolLinear};
use tract_onnx::tract_core::internal::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePoolLinear {
    pub kernel: Arc<PackedPoolLinear>,
    /// How the input lies in memory (its shape stays NCHW, the channel axis giving a
    /// channels-last layout's floats per pixel).
    pub layout: Layout,
}

impl EdgePoolLinear {
    /// Images in an `[N, C, H, W]` or `[C, H, W]` input (one for rank 3).
    fn images(&self, shape: &[TDim]) -> TractResult<TDim> {
        let rank = shape.len();
        let channels = self.layout.floats_per_pixel(self.kernel.channels);
        ensure!(
            (rank == 3 || rank == 4) && shape[rank - 3].to_usize().ok() == Some(channels),
            "EdgePoolLinear expects (N)CHW input with {channels} channels, got {shape:?}"
        );
        Ok(if rank == 4 {
            shape[0].clone()
        } else {
            1.to_dim()
        })
    }
}

impl Op for EdgePoolLinear {
    fn name(&self) -> StaticName {
        "EdgePoolLinear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "channels:{} classes:{} kernel:{:?} layout:{:?}",
            self.kernel.channels,
            self.kernel.classes,
            Isa::best(),
            self.layout
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for EdgePoolLinear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape: TVec<usize> = input.shape().into();
        let dims: TVec<TDim> = shape.iter().map(|d| d.to_dim()).collect();
        let images = self.images(&dims)?.to_usize()?;
        let rank = shape.len();
        let plane = shape[rank - 2] * shape[rank - 1];
        ensure!(plane > 0, "EdgePoolLinear: empty plane {shape:?}");
        let mut output = Tensor::zero::<f32>(&[images, self.kernel.classes])?;
        if images > 0 {
            self.kernel.run_layout(
                Isa::best(),
                input.try_as_plain_ram()?.as_slice::<f32>()?,
                plane,
                output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
                self.layout,
            );
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for EdgePoolLinear {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        let images = self.images(&inputs[0].shape.to_tvec())?;
        Ok(tvec!(f32::fact([images, self.kernel.classes.to_dim()])))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let images = self.images(&inputs[0].shape.to_tvec())?;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            images * (self.kernel.channels * self.kernel.classes)
        )))
    }
}

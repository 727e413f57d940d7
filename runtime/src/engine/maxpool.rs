//! tract op running [`crate::kernels::MaxPool3x3`]: 3x3 max pooling, padding 1, NCHW f32.

use crate::kernels::MaxPool3x3;
use tract_onnx::tract_core::internal::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgeMaxPool3x3 {
    pub stride: usize,
}

impl Op for EdgeMaxPool3x3 {
    fn name(&self) -> StaticName {
        "EdgeMaxPool3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("stride:{}", self.stride)])
    }

    op_as_typed_op!();
}

impl EvalOp for EdgeMaxPool3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape: TVec<usize> = input.shape().into();
        let rank = shape.len();
        ensure!(
            (rank == 3 || rank == 4) && shape.iter().all(|&d| d > 0),
            "EdgeMaxPool3x3 expects a non-empty (N)CHW input, got {shape:?}"
        );
        let geometry = MaxPool3x3 {
            channels: shape[rank - 3],
            height: shape[rank - 2],
            width: shape[rank - 1],
            stride: self.stride,
        };
        let mut out_shape = shape.clone();
        out_shape[rank - 2] = geometry.output_height();
        out_shape[rank - 1] = geometry.output_width();
        // SAFETY: the kernel writes every output element.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        geometry.run(
            input.try_as_plain_ram()?.as_slice::<f32>()?,
            output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for EdgeMaxPool3x3 {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        let rank = inputs[0].rank();
        ensure!(rank == 3 || rank == 4, "EdgeMaxPool3x3 expects rank 3 or 4");
        let mut dims: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        for d in &mut dims[rank - 2..] {
            *d = (d.clone() - 1) / self.stride + 1;
        }
        Ok(tvec!(f32::fact(dims)))
    }
}

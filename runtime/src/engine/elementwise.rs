//! tract ops running [`crate::kernels::elementwise`]: ReLU, and ReLU of a sum.

use crate::kernels::{add_relu_in_place, bias_relu_in_place, relu_in_place};
use tract_onnx::tract_core::internal::*;

/// `max(x, 0)` on f32, in place when tract hands over the only reference to the input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EdgeRelu;

impl Op for EdgeRelu {
    fn name(&self) -> StaticName {
        "EdgeRelu".into()
    }

    op_as_typed_op!();
}

impl EvalOp for EdgeRelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let mut tensor = input.into_tensor();
        relu_in_place(tensor.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
        Ok(tvec!(tensor.into_tvalue()))
    }
}

impl TypedOp for EdgeRelu {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

/// `max(a + b, 0)` on two f32 tensors of the same shape (ShuffleNet's residual join).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EdgeAddRelu;

impl Op for EdgeAddRelu {
    fn name(&self) -> StaticName {
        "EdgeAddRelu".into()
    }

    op_as_typed_op!();
}

impl EvalOp for EdgeAddRelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        ensure!(
            a.shape() == b.shape(),
            "EdgeAddRelu: {:?} and {:?}",
            a.shape(),
            b.shape()
        );
        let mut acc = a.into_tensor();
        add_relu_in_place(
            acc.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
            b.try_as_plain_ram()?.as_slice::<f32>()?,
        );
        Ok(tvec!(acc.into_tvalue()))
    }
}

impl TypedOp for EdgeAddRelu {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 2
                && inputs.iter().all(|f| f.datum_type == f32::datum_type())
                && inputs[0].shape == inputs[1].shape,
            "EdgeAddRelu needs two f32 inputs of the same shape"
        );
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

/// Per-channel bias on `(N)CHW` f32, then `max(x, 0)` when `relu`; in place when it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeBiasRelu {
    /// `[channels]` f32.
    pub bias: Arc<Tensor>,
    pub relu: bool,
}

impl Op for EdgeBiasRelu {
    fn name(&self) -> StaticName {
        "EdgeBiasRelu".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "channels:{} relu:{}",
            self.bias.len(),
            self.relu
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for EdgeBiasRelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape: TVec<usize> = input.shape().into();
        let rank = shape.len();
        ensure!(
            rank >= 3 && shape[rank - 3] == self.bias.len(),
            "EdgeBiasRelu: {} channels expected, input {:?}",
            self.bias.len(),
            shape
        );
        let plane = shape[rank - 2] * shape[rank - 1];
        let mut tensor = input.into_tensor();
        if plane > 0 && self.bias.len() > 0 {
            bias_relu_in_place(
                tensor.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
                self.bias.try_as_plain_ram()?.as_slice::<f32>()?,
                plane,
                self.relu,
            );
        }
        Ok(tvec!(tensor.into_tvalue()))
    }
}

impl TypedOp for EdgeBiasRelu {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        let rank = inputs[0].rank();
        ensure!(
            rank >= 3 && inputs[0].shape[rank - 3] == self.bias.len().to_dim(),
            "EdgeBiasRelu: channel axis"
        );
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

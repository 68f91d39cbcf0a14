//! Conversions between core's host arrays and burn tensors, and between canonical weights and
//! the network's parameters.
//!
//! burn keeps convolution weights in the canonical `[O, I, kH, kW]` order, but stores dense
//! weights as `[in, out]` (its row layout, the fast one for `x · W`), so dense weights are
//! transposed on the way in and out.

use burn::module::{Param, RunningState};
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use ndarray::{Array2, Array4, ArrayD, ArrayView4, IxDyn};
use parallax_core::spec::{
    ConvNorm as ConvNormOp, ConvOp, DenseOp, NormOp, Op, ParamInfo, ParamOp, ResolvedModel,
};
use parallax_core::{Result, Weights};

use crate::engine_error;
use crate::net::{ConvNorm, Net, Norm, Params, mismatch};

/// A host batch `[N, C, H, W]` as a burn tensor on `device`.
pub(crate) fn images_to_tensor(images: ArrayView4<f32>, device: &Device) -> Tensor<4> {
    let shape: [usize; 4] = images.dim().into();
    let values = match images.as_slice() {
        Some(slice) => slice.to_vec(),
        None => images.iter().copied().collect(),
    };
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A burn tensor's values, row-major, in f32 whatever it computed in.
pub(crate) fn tensor_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    let data = tensor
        .cast(FloatDType::F32)
        .try_into_data()
        .map_err(engine_error)?;
    data.as_slice::<f32>()
        .map(<[f32]>::to_vec)
        .map_err(|error| engine_error(format!("{error:?}")))
}

/// A burn tensor as an `ndarray` array of the same shape.
pub(crate) fn tensor_to_array<const D: usize>(tensor: Tensor<D>) -> Result<ArrayD<f32>> {
    let dims = tensor.dims();
    let values = tensor_values(tensor)?;
    ArrayD::from_shape_vec(IxDyn(&dims), values).map_err(engine_error)
}

/// A `[N, C, H, W]` burn tensor as a host array.
pub(crate) fn tensor_to_array4(tensor: Tensor<4>) -> Result<Array4<f32>> {
    tensor_to_array(tensor)?
        .into_dimensionality()
        .map_err(engine_error)
}

/// `[N, classes]` logits as a host array.
pub(crate) fn logits_to_array(tensor: Tensor<2>) -> Result<Array2<f32>> {
    let [rows, cols] = tensor.dims();
    let values = tensor_values(tensor)?;
    Array2::from_shape_vec((rows, cols), values).map_err(engine_error)
}

/// The canonical tensor `param` names, as a burn tensor of rank `D` on `device`.
fn tensor<const D: usize>(
    weights: &Weights,
    param: &ParamInfo,
    device: &Device,
) -> Result<Tensor<D>> {
    // The weights were checked against the model, so the tensor is there with its shape.
    let array = weights.require(&param.name)?;
    let shape: [usize; D] = array.shape().try_into().map_err(|_| {
        engine_error(format!(
            "tensor {:?} has {} dimensions, burn's layer takes {D}",
            param.name,
            array.ndim()
        ))
    })?;
    let values = array.iter().copied().collect::<Vec<f32>>();
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

fn import_linear(
    linear: &mut Linear,
    op: &DenseOp,
    weights: &Weights,
    device: &Device,
) -> Result<()> {
    let weight: Tensor<2> = tensor(weights, &op.weight, device)?;
    linear.weight = Param::from_tensor(weight.transpose());
    linear.bias = match &op.bias {
        Some(bias) => Some(Param::from_tensor(tensor(weights, bias, device)?)),
        None => None,
    };
    Ok(())
}

fn import_conv(conv: &mut Conv2d, op: &ConvOp, weights: &Weights, device: &Device) -> Result<()> {
    conv.weight = Param::from_tensor(tensor(weights, &op.weight, device)?);
    conv.bias = match &op.bias {
        Some(bias) => Some(Param::from_tensor(tensor(weights, bias, device)?)),
        None => None,
    };
    Ok(())
}

fn import_norm(norm: &mut Norm, op: &NormOp, weights: &Weights, device: &Device) -> Result<()> {
    norm.gamma = Param::from_tensor(tensor(weights, &op.weight, device)?);
    norm.beta = Param::from_tensor(tensor(weights, &op.bias, device)?);
    norm.running_mean = RunningState::new(tensor(weights, &op.running_mean, device)?);
    norm.running_var = RunningState::new(tensor(weights, &op.running_var, device)?);
    Ok(())
}

fn import_conv_norm(
    step: &mut ConvNorm,
    op: &ConvNormOp,
    weights: &Weights,
    device: &Device,
) -> Result<()> {
    import_conv(&mut step.conv, &op.conv, weights, device)?;
    import_norm(&mut step.norm, &op.norm, weights, device)
}

/// Replaces every parameter and running statistic of `net` with canonical `weights`, which
/// core has checked against the model.
pub(crate) fn import(
    net: &mut Net,
    model: &ResolvedModel,
    weights: &Weights,
    device: &Device,
) -> Result<()> {
    for (layer, params) in model.layers.iter().zip(net.layers.iter_mut()) {
        match (&layer.op, params) {
            (Op::Param(ParamOp::Dense(op)), Some(Params::Dense(linear))) => {
                import_linear(linear, op, weights, device)?
            }
            (Op::Param(ParamOp::Conv2d(op)), Some(Params::Conv(conv))) => {
                import_conv(conv, op, weights, device)?
            }
            (Op::Param(ParamOp::BatchNorm(op)), Some(Params::Norm(norm))) => {
                import_norm(norm, op, weights, device)?
            }
            (Op::Param(ParamOp::Block(op)), Some(Params::Block(block))) => {
                for (step, step_op) in block.main.iter_mut().zip(&op.main) {
                    import_conv_norm(step, step_op, weights, device)?;
                }
                match (block.shortcut.as_mut(), &op.shortcut) {
                    (Some(step), Some(step_op)) => {
                        import_conv_norm(step, step_op, weights, device)?
                    }
                    (None, None) => {}
                    (Some(_), None) | (None, Some(_)) => return Err(mismatch(&layer.name)),
                }
            }
            (
                Op::Param(
                    ParamOp::Dense(_)
                    | ParamOp::Conv2d(_)
                    | ParamOp::BatchNorm(_)
                    | ParamOp::Block(_),
                ),
                _,
            ) => {
                return Err(mismatch(&layer.name));
            }
            (Op::Free(_), _) => {}
        }
    }
    Ok(())
}

fn export_conv(out: &mut Weights, conv: &Conv2d, op: &ConvOp) -> Result<()> {
    out.insert(op.weight.name.clone(), tensor_to_array(conv.weight.val())?);
    if let (Some(bias), Some(info)) = (&conv.bias, &op.bias) {
        out.insert(info.name.clone(), tensor_to_array(bias.val())?);
    }
    Ok(())
}

fn export_norm(out: &mut Weights, norm: &Norm, op: &NormOp) -> Result<()> {
    out.insert(op.weight.name.clone(), tensor_to_array(norm.gamma.val())?);
    out.insert(op.bias.name.clone(), tensor_to_array(norm.beta.val())?);
    out.insert(
        op.running_mean.name.clone(),
        tensor_to_array(norm.running_mean.value_sync())?,
    );
    out.insert(
        op.running_var.name.clone(),
        tensor_to_array(norm.running_var.value_sync())?,
    );
    Ok(())
}

fn export_conv_norm(out: &mut Weights, step: &ConvNorm, op: &ConvNormOp) -> Result<()> {
    export_conv(out, &step.conv, &op.conv)?;
    export_norm(out, &step.norm, &op.norm)
}

/// The network's parameters and running statistics in the canonical layout.
pub(crate) fn export(net: &Net, model: &ResolvedModel) -> Result<Weights> {
    let mut out = Weights::new();
    for (layer, params) in model.layers.iter().zip(&net.layers) {
        match (&layer.op, params) {
            (Op::Param(ParamOp::Dense(op)), Some(Params::Dense(linear))) => {
                out.insert(
                    op.weight.name.clone(),
                    tensor_to_array(linear.weight.val().transpose())?,
                );
                if let (Some(bias), Some(info)) = (&linear.bias, &op.bias) {
                    out.insert(info.name.clone(), tensor_to_array(bias.val())?);
                }
            }
            (Op::Param(ParamOp::Conv2d(op)), Some(Params::Conv(conv))) => {
                export_conv(&mut out, conv, op)?
            }
            (Op::Param(ParamOp::BatchNorm(op)), Some(Params::Norm(norm))) => {
                export_norm(&mut out, norm, op)?
            }
            (Op::Param(ParamOp::Block(op)), Some(Params::Block(block))) => {
                for (step, step_op) in block.main.iter().zip(&op.main) {
                    export_conv_norm(&mut out, step, step_op)?;
                }
                if let (Some(step), Some(step_op)) = (&block.shortcut, &op.shortcut) {
                    export_conv_norm(&mut out, step, step_op)?;
                }
            }
            (
                Op::Param(
                    ParamOp::Dense(_)
                    | ParamOp::Conv2d(_)
                    | ParamOp::BatchNorm(_)
                    | ParamOp::Block(_),
                ),
                _,
            ) => {
                return Err(mismatch(&layer.name));
            }
            (Op::Free(_), _) => {}
        }
    }
    Ok(out)
}

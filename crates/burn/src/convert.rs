//! Conversions between core's host arrays and burn tensors, and between canonical weights and
//! the network's parameters.
//!
//! burn keeps convolution weights in the canonical `[O, I, kH, kW]` order, but stores dense
//! weights as `[in, out]` (its row layout, the fast one for `x · W`), so dense weights are
//! transposed on the way in and out.

use burn::module::{Param, RunningState};
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor, TensorData};
use ndarray::{Array2, ArrayD, ArrayView4, IxDyn};
use parallax_core::spec::{Op, ResolvedModel};
use parallax_core::{Error, Result, Weights};

use crate::BACKEND_NAME;
use crate::net::{Block, ConvNorm, Net, Norm, Params};

/// An engine error from burn's side.
pub(crate) fn engine_error(message: impl std::fmt::Display) -> Error {
    Error::engine(BACKEND_NAME, message)
}

/// A host batch `[N, C, H, W]` as a burn tensor on `device`.
pub(crate) fn images_to_tensor(images: ArrayView4<f32>, device: &Device) -> Tensor<4> {
    let shape: [usize; 4] = images.dim().into();
    let values = match images.as_slice() {
        Some(slice) => slice.to_vec(),
        None => images.iter().copied().collect(),
    };
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A burn tensor's values, row-major.
pub(crate) fn tensor_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    let data = tensor.try_into_data().map_err(engine_error)?;
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

/// `[N, classes]` logits as a host array.
pub(crate) fn logits_to_array(tensor: Tensor<2>) -> Result<Array2<f32>> {
    let [rows, cols] = tensor.dims();
    let values = tensor_values(tensor)?;
    Array2::from_shape_vec((rows, cols), values).map_err(engine_error)
}

fn tensor<const D: usize>(weights: &Weights, name: &str, device: &Device) -> Result<Tensor<D>> {
    let array = weights.require(name)?;
    let shape: [usize; D] = array.shape().try_into().map_err(|_| {
        Error::Weights(format!(
            "tensor {name:?} has {} dimensions, expected {D}",
            array.ndim()
        ))
    })?;
    let values = array.iter().copied().collect::<Vec<f32>>();
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

fn import_conv(conv: &mut Conv2d, weights: &Weights, prefix: &str, device: &Device) -> Result<()> {
    conv.weight = Param::from_tensor(tensor(weights, &format!("{prefix}.weight"), device)?);
    if conv.bias.is_some() {
        conv.bias = Some(Param::from_tensor(tensor(
            weights,
            &format!("{prefix}.bias"),
            device,
        )?));
    }
    Ok(())
}

fn import_norm(norm: &mut Norm, weights: &Weights, prefix: &str, device: &Device) -> Result<()> {
    norm.gamma = Param::from_tensor(tensor(weights, &format!("{prefix}.weight"), device)?);
    norm.beta = Param::from_tensor(tensor(weights, &format!("{prefix}.bias"), device)?);
    norm.running_mean =
        RunningState::new(tensor(weights, &format!("{prefix}.running_mean"), device)?);
    norm.running_var =
        RunningState::new(tensor(weights, &format!("{prefix}.running_var"), device)?);
    Ok(())
}

fn import_linear(
    linear: &mut Linear,
    weights: &Weights,
    prefix: &str,
    device: &Device,
) -> Result<()> {
    let weight: Tensor<2> = tensor(weights, &format!("{prefix}.weight"), device)?;
    linear.weight = Param::from_tensor(weight.transpose());
    if linear.bias.is_some() {
        linear.bias = Some(Param::from_tensor(tensor(
            weights,
            &format!("{prefix}.bias"),
            device,
        )?));
    }
    Ok(())
}

/// Replaces every parameter and running statistic of `net` with canonical `weights`.
pub(crate) fn import(
    net: &mut Net,
    model: &ResolvedModel,
    weights: &Weights,
    device: &Device,
) -> Result<()> {
    weights.check(model)?;
    for (layer, params) in model.layers.iter().zip(net.layers.iter_mut()) {
        let prefix = &layer.name;
        match (&layer.op, params) {
            (Op::Dense { .. }, Some(Params::Dense(linear))) => {
                import_linear(linear, weights, prefix, device)?
            }
            (Op::Conv2d(_), Some(Params::Conv(conv))) => {
                import_conv(conv, weights, prefix, device)?
            }
            (Op::BatchNorm(_), Some(Params::Norm(norm))) => {
                import_norm(norm, weights, prefix, device)?
            }
            (Op::Block(op), Some(Params::Block(block))) => {
                for ((conv_name, _, norm_name, _), step) in
                    op.main.iter().zip(block.main.iter_mut())
                {
                    import_conv(
                        &mut step.conv,
                        weights,
                        &format!("{prefix}.{conv_name}"),
                        device,
                    )?;
                    import_norm(
                        &mut step.norm,
                        weights,
                        &format!("{prefix}.{norm_name}"),
                        device,
                    )?;
                }
                if let Some(step) = block.shortcut.as_mut() {
                    import_conv(
                        &mut step.conv,
                        weights,
                        &format!("{prefix}.downsample.0"),
                        device,
                    )?;
                    import_norm(
                        &mut step.norm,
                        weights,
                        &format!("{prefix}.downsample.1"),
                        device,
                    )?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn export_conv(out: &mut Weights, conv: &Conv2d, prefix: &str) -> Result<()> {
    out.insert(
        format!("{prefix}.weight"),
        tensor_to_array(conv.weight.val())?,
    );
    if let Some(bias) = &conv.bias {
        out.insert(format!("{prefix}.bias"), tensor_to_array(bias.val())?);
    }
    Ok(())
}

fn export_norm(out: &mut Weights, norm: &Norm, prefix: &str) -> Result<()> {
    out.insert(
        format!("{prefix}.weight"),
        tensor_to_array(norm.gamma.val())?,
    );
    out.insert(format!("{prefix}.bias"), tensor_to_array(norm.beta.val())?);
    out.insert(
        format!("{prefix}.running_mean"),
        tensor_to_array(norm.running_mean.value_sync())?,
    );
    out.insert(
        format!("{prefix}.running_var"),
        tensor_to_array(norm.running_var.value_sync())?,
    );
    Ok(())
}

fn export_conv_norm(
    out: &mut Weights,
    step: &ConvNorm,
    conv_name: &str,
    norm_name: &str,
) -> Result<()> {
    export_conv(out, &step.conv, conv_name)?;
    export_norm(out, &step.norm, norm_name)
}

fn export_block(
    out: &mut Weights,
    block: &Block,
    op: &parallax_core::spec::BlockOp,
    prefix: &str,
) -> Result<()> {
    for ((conv_name, _, norm_name, _), step) in op.main.iter().zip(&block.main) {
        export_conv_norm(
            out,
            step,
            &format!("{prefix}.{conv_name}"),
            &format!("{prefix}.{norm_name}"),
        )?;
    }
    if let Some(step) = &block.shortcut {
        export_conv_norm(
            out,
            step,
            &format!("{prefix}.downsample.0"),
            &format!("{prefix}.downsample.1"),
        )?;
    }
    Ok(())
}

/// The network's parameters and running statistics in the canonical layout.
pub(crate) fn export(net: &Net, model: &ResolvedModel) -> Result<Weights> {
    let mut out = Weights::new();
    for (layer, params) in model.layers.iter().zip(&net.layers) {
        let prefix = &layer.name;
        match (&layer.op, params) {
            (Op::Dense { .. }, Some(Params::Dense(linear))) => {
                out.insert(
                    format!("{prefix}.weight"),
                    tensor_to_array(linear.weight.val().transpose())?,
                );
                if let Some(bias) = &linear.bias {
                    out.insert(format!("{prefix}.bias"), tensor_to_array(bias.val())?);
                }
            }
            (Op::Conv2d(_), Some(Params::Conv(conv))) => export_conv(&mut out, conv, prefix)?,
            (Op::BatchNorm(_), Some(Params::Norm(norm))) => export_norm(&mut out, norm, prefix)?,
            (Op::Block(op), Some(Params::Block(block))) => {
                export_block(&mut out, block, op, prefix)?
            }
            _ => {}
        }
    }
    Ok(out)
}

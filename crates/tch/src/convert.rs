//! Conversions between core's host arrays and libtorch tensors, and between canonical weights
//! and the network's tensors.
//!
//! libtorch keeps every tensor in the canonical PyTorch layout (Linear `[out, in]`, Conv
//! `[O, I, kH, kW]`), so weights cross without any transposition: import copies each canonical
//! array into the tensor of the same name, in place, and export copies it back out.

use ndarray::{Array2, Array4, ArrayD, ArrayView4, IxDyn};
use parallax_core::{Result, Weights};
use tch::{Kind, TchError, Tensor};

use crate::net::Net;
use crate::{OrEngine, engine_error};

/// A host batch `[N, C, H, W]` as a libtorch tensor of `kind` on `device`.
pub(crate) fn images_to_tensor(
    images: ArrayView4<f32>,
    kind: Kind,
    device: tch::Device,
) -> std::result::Result<Tensor, TchError> {
    let shape: Vec<i64> = images.shape().iter().map(|&d| d as i64).collect();
    let tensor = match images.as_slice() {
        Some(slice) => Tensor::f_from_slice(slice)?,
        None => Tensor::f_from_slice(&images.iter().copied().collect::<Vec<f32>>())?,
    };
    tensor
        .f_reshape(shape.as_slice())?
        .f_to_kind(kind)?
        .f_to_device(device)
}

/// Labels as the int64 class-index tensor that `nll_loss` and `gather` take.
pub(crate) fn labels_to_tensor(
    labels: &[u32],
    device: tch::Device,
) -> std::result::Result<Tensor, TchError> {
    let values: Vec<i64> = labels.iter().map(|&label| i64::from(label)).collect();
    Tensor::f_from_slice(&values)?.f_to_device(device)
}

/// A float tensor's values, row-major, on the host.
fn tensor_values(tensor: &Tensor) -> std::result::Result<Vec<f32>, TchError> {
    let host = tensor
        .f_detach()?
        .f_to_device(tch::Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?;
    let count = host.numel();
    let mut values = vec![0f32; count];
    host.f_copy_data(&mut values, count)?;
    Ok(values)
}

/// A tensor as an `ndarray` array of the same shape.
pub(crate) fn tensor_to_array(tensor: &Tensor) -> Result<ArrayD<f32>> {
    let dims: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
    let values = tensor_values(tensor).or_engine()?;
    ArrayD::from_shape_vec(IxDyn(&dims), values).map_err(engine_error)
}

/// `[N, classes]` logits as a host array.
pub(crate) fn logits_to_array(tensor: &Tensor) -> Result<Array2<f32>> {
    tensor_to_array(tensor)?
        .into_dimensionality()
        .map_err(engine_error)
}

/// A `[N, C, H, W]` tensor as a host array.
pub(crate) fn tensor_to_array4(tensor: &Tensor) -> Result<Array4<f32>> {
    tensor_to_array(tensor)?
        .into_dimensionality()
        .map_err(engine_error)
}

/// Replaces every parameter and running statistic of `net` with canonical `weights`, which
/// core has checked against the model.
///
/// The copy is in place and outside autograd, so the tensors keep their identity (and their
/// `requires_grad`) for the layers that hold them.
pub(crate) fn import(net: &mut Net, weights: &Weights) -> Result<()> {
    for named in &net.named {
        let array = weights.require(&named.info.name)?;
        let values: Vec<f32> = match array.as_slice() {
            Some(slice) => slice.to_vec(),
            None => array.iter().copied().collect(),
        };
        let shape: Vec<i64> = named.info.shape.iter().map(|&d| d as i64).collect();
        tch::no_grad(|| -> std::result::Result<(), TchError> {
            let source = Tensor::f_from_slice(&values)?.f_reshape(shape.as_slice())?;
            let mut target = named.tensor.shallow_clone();
            target.f_copy_(&source)
        })
        .or_engine()?;
    }
    Ok(())
}

/// The network's parameters and running statistics in the canonical layout.
pub(crate) fn export(net: &Net) -> Result<Weights> {
    let mut out = Weights::new();
    for named in &net.named {
        out.insert(named.info.name.clone(), tensor_to_array(&named.tensor)?);
    }
    Ok(out)
}

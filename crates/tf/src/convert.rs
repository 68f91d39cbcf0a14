//! Conversions between the canonical (PyTorch) layout and TensorFlow's, and between core's host
//! arrays and TensorFlow tensors.
//!
//! TensorFlow computes in NHWC on the CPU and stores kernels input-major: a dense kernel is
//! `[in, out]` (canonical `[out, in]`), a convolution kernel is HWIO (canonical OIHW). Flattening
//! an NHWC image gives its features in H,W,C order where the canonical order is C,H,W, so a dense
//! layer fed by a flattened image reads its canonical rows in a permuted order; so does a batch
//! norm over such features. [`Layout`] names each case, and the conversions are exact inverses.

use std::collections::HashMap;

use ndarray::{Array2, Array4, ArrayD, ArrayView4, Axis, IxDyn};
use parallax_core::Result;
use parallax_core::spec::{Op, ParamInfo, ParamOp, ResolvedModel};
use tensorflow::{Operation, Output, Tensor};

use crate::engine_error;
use crate::forward::{FlatOrder, Repr, TfResult, flat_order, input_repr, next_repr};

/// One canonical tensor as a graph variable, with the operations that set it.
pub(crate) struct Param {
    /// Name, canonical shape and role.
    pub(crate) info: ParamInfo,
    /// How the variable stores it.
    pub(crate) layout: Layout,
    /// The variable.
    pub(crate) variable: Output,
    /// The placeholder that [`Self::assign`] copies from.
    pub(crate) feed: Operation,
    /// `variable = feed`: weight import.
    pub(crate) assign: Operation,
    /// TensorFlow's (Keras's) default initialisation of this tensor.
    pub(crate) init: Operation,
}

/// How a canonical tensor is stored in the TensorFlow graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Unchanged: biases, and batch-norm vectors over canonical features.
    Same,
    /// A dense weight: canonical `[out, in]` becomes `[in, out]`, its rows in the input's order.
    DenseKernel(FlatOrder),
    /// A convolution weight: canonical OIHW becomes HWIO.
    ConvKernel,
    /// A per-feature vector over flattened image features in H,W,C order.
    Features([usize; 3]),
}

impl Layout {
    /// The TensorFlow shape of a tensor whose canonical shape is `canonical`.
    pub(crate) fn tf_shape(self, canonical: &[usize]) -> Vec<usize> {
        match (self, canonical) {
            (Layout::DenseKernel(_), [out, inputs]) => vec![*inputs, *out],
            (Layout::ConvKernel, [o, i, h, w]) => vec![*h, *w, *i, *o],
            _ => canonical.to_vec(),
        }
    }

    /// A canonical tensor in this layout, row-major.
    pub(crate) fn to_tf(self, canonical: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let shape = canonical.shape().to_vec();
        let converted = match (self, shape.as_slice()) {
            (Layout::Same, _) => canonical.clone(),
            (Layout::DenseKernel(None), [_, _]) => canonical.t().to_owned(),
            (Layout::DenseKernel(Some([c, h, w])), &[out, inputs]) if c * h * w == inputs => {
                // [out, C, H, W] → [H, W, C, out] → [H·W·C, out].
                let image = reshape(canonical, &[out, c, h, w])?;
                let permuted = image.permuted_axes(IxDyn(&[2, 3, 1, 0]));
                reshape(&permuted, &[inputs, out])?
            }
            (Layout::ConvKernel, [_, _, _, _]) => {
                canonical.clone().permuted_axes(IxDyn(&[2, 3, 1, 0]))
            }
            (Layout::Features([c, h, w]), &[features]) if c * h * w == features => {
                let image = reshape(canonical, &[c, h, w])?;
                reshape(&image.permuted_axes(IxDyn(&[1, 2, 0])), &[features])?
            }
            (layout, shape) => {
                return Err(engine_error(format!(
                    "a tensor of shape {shape:?} does not fit layout {layout:?}"
                )));
            }
        };
        Ok(converted.as_standard_layout().into_owned())
    }

    /// A tensor in this layout back in the canonical one; `canonical` is the canonical shape.
    pub(crate) fn to_canonical(self, tf: &ArrayD<f32>, canonical: &[usize]) -> Result<ArrayD<f32>> {
        let converted = match (self, canonical) {
            (Layout::Same, _) => tf.clone(),
            (Layout::DenseKernel(None), [_, _]) => tf.t().to_owned(),
            (Layout::DenseKernel(Some([c, h, w])), &[out, inputs]) => {
                // [H·W·C, out] → [H, W, C, out] → [out, C, H, W].
                let image = reshape(tf, &[h, w, c, out])?;
                reshape(&image.permuted_axes(IxDyn(&[3, 2, 0, 1])), &[out, inputs])?
            }
            (Layout::ConvKernel, [_, _, _, _]) => tf.clone().permuted_axes(IxDyn(&[3, 2, 0, 1])),
            (Layout::Features([c, h, w]), &[features]) => {
                let image = reshape(tf, &[h, w, c])?;
                reshape(&image.permuted_axes(IxDyn(&[2, 0, 1])), &[features])?
            }
            (layout, shape) => {
                return Err(engine_error(format!(
                    "a tensor of canonical shape {shape:?} does not fit layout {layout:?}"
                )));
            }
        };
        if converted.shape() != canonical {
            return Err(engine_error(format!(
                "converted tensor has shape {:?}, expected {canonical:?}",
                converted.shape()
            )));
        }
        Ok(converted.as_standard_layout().into_owned())
    }
}

/// Each canonical tensor's layout in the graph, by name, from the representation that reaches
/// its layer; tensors absent from the map are stored as they are ([`Layout::Same`]).
pub(crate) fn layouts(model: &ResolvedModel) -> TfResult<HashMap<String, Layout>> {
    let mut layouts = HashMap::new();
    let mut repr = input_repr(model);
    for layer in &model.layers {
        match &layer.op {
            Op::Param(ParamOp::Dense(op)) => {
                let order = match repr {
                    Repr::Image {
                        channels,
                        height,
                        width,
                    } => flat_order(channels, height, width),
                    Repr::Flat { order, .. } => order,
                };
                layouts.insert(op.weight.name.clone(), Layout::DenseKernel(order));
            }
            Op::Param(ParamOp::Conv2d(op)) => {
                layouts.insert(op.weight.name.clone(), Layout::ConvKernel);
            }
            Op::Param(ParamOp::Block(op)) => {
                for step in op.main.iter().chain(&op.shortcut) {
                    layouts.insert(step.conv.weight.name.clone(), Layout::ConvKernel);
                }
            }
            Op::Param(ParamOp::BatchNorm(op)) => {
                if let Repr::Flat {
                    order: Some(order), ..
                } = repr
                {
                    for param in op.params() {
                        layouts.insert(param.name.clone(), Layout::Features(order));
                    }
                }
            }
            Op::Free(_) => {}
        }
        repr = next_repr(&layer.op, repr, &layer.output)?;
    }
    Ok(layouts)
}

/// `array` in row-major order with a new shape of the same size.
fn reshape(array: &ArrayD<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
    let values: Vec<f32> = array.iter().copied().collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).map_err(engine_error)
}

/// A row-major host array as a TensorFlow tensor of the same shape.
pub(crate) fn array_to_tensor(array: &ArrayD<f32>) -> Result<Tensor<f32>> {
    let dims: Vec<u64> = array.shape().iter().map(|&d| d as u64).collect();
    let mut tensor = Tensor::new(&dims);
    match array.as_slice() {
        Some(values) => tensor.copy_from_slice(values),
        None => tensor
            .iter_mut()
            .zip(array.iter())
            .for_each(|(target, value)| *target = *value),
    }
    Ok(tensor)
}

/// A TensorFlow tensor as a host array of the same shape.
pub(crate) fn tensor_to_array(tensor: &Tensor<f32>) -> Result<ArrayD<f32>> {
    let dims: Vec<usize> = tensor.dims().iter().map(|&d| d as usize).collect();
    ArrayD::from_shape_vec(IxDyn(&dims), tensor.to_vec()).map_err(engine_error)
}

/// A host batch `[N, C, H, W]` as the NHWC tensor the graph takes.
///
/// With one channel, NCHW and NHWC hold the same values in the same order, so the batch is
/// copied as it is; otherwise the channels move last.
pub(crate) fn images_to_nhwc(images: ArrayView4<f32>) -> Tensor<f32> {
    let (n, c, h, w) = images.dim();
    let mut tensor = Tensor::new(&[n as u64, h as u64, w as u64, c as u64]);
    match (c, images.as_slice()) {
        (1, Some(values)) => tensor.copy_from_slice(values),
        _ => {
            let nhwc = images.permuted_axes([0, 2, 3, 1]);
            tensor
                .iter_mut()
                .zip(nhwc.iter())
                .for_each(|(target, value)| *target = *value);
        }
    }
    tensor
}

/// An NHWC tensor as a canonical `[N, C, H, W]` host array.
pub(crate) fn nhwc_to_images(tensor: &Tensor<f32>) -> Result<Array4<f32>> {
    let array = tensor_to_array(tensor)?;
    let array: Array4<f32> = array.into_dimensionality().map_err(engine_error)?;
    Ok(array
        .permuted_axes([0, 3, 1, 2])
        .as_standard_layout()
        .into_owned())
}

/// `[N, classes]` logits from a fetched tensor.
pub(crate) fn tensor_to_logits(tensor: &Tensor<f32>) -> Result<Array2<f32>> {
    let array = tensor_to_array(tensor)?;
    let rows = array.len_of(Axis(0));
    let flat = array
        .into_shape_with_order(IxDyn(&[
            rows,
            tensor.dims().iter().skip(1).product::<u64>() as usize,
        ]))
        .map_err(engine_error)?;
    flat.into_dimensionality().map_err(engine_error)
}

/// Labels as the int32 tensor that `OneHot` takes.
pub(crate) fn labels_to_tensor(labels: &[u32]) -> Result<Tensor<i32>> {
    let values = labels
        .iter()
        .map(|&label| i32::try_from(label).map_err(engine_error))
        .collect::<Result<Vec<i32>>>()?;
    let mut tensor = Tensor::new(&[values.len() as u64]);
    tensor.copy_from_slice(&values);
    Ok(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(shape: &[usize]) -> ArrayD<f32> {
        let len = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..len).map(|v| v as f32).collect()).unwrap()
    }

    #[test]
    fn every_layout_round_trips() {
        let cases: [(Layout, &[usize]); 6] = [
            (Layout::Same, &[7]),
            (Layout::DenseKernel(None), &[3, 5]),
            (Layout::DenseKernel(Some([2, 3, 4])), &[5, 24]),
            (Layout::ConvKernel, &[4, 3, 2, 5]),
            (Layout::Features([2, 3, 4]), &[24]),
            (Layout::DenseKernel(None), &[1, 1]),
        ];
        for (layout, shape) in cases {
            let canonical = counting(shape);
            let tf = layout.to_tf(&canonical).unwrap();
            assert_eq!(tf.shape(), layout.tf_shape(shape).as_slice(), "{layout:?}");
            assert_eq!(
                layout.to_canonical(&tf, shape).unwrap(),
                canonical,
                "{layout:?}"
            );
        }
    }

    #[test]
    fn a_conv_kernel_becomes_hwio() {
        let canonical = counting(&[4, 3, 2, 5]);
        let tf = Layout::ConvKernel.to_tf(&canonical).unwrap();
        // tf[h, w, i, o] = canonical[o, i, h, w].
        assert_eq!(tf[[1, 4, 2, 3]], canonical[[3, 2, 1, 4]]);
    }

    /// The permutation a dense layer after a flattened NHWC image needs: the kernel row that
    /// meets NHWC feature (h, w, c) holds the canonical column of feature (c, h, w).
    #[test]
    fn a_dense_kernel_after_a_flattened_image_has_its_rows_permuted() {
        let [c, h, w] = [2, 3, 4];
        let out = 5;
        let canonical = counting(&[out, c * h * w]);
        let tf = Layout::DenseKernel(Some([c, h, w]))
            .to_tf(&canonical)
            .unwrap();
        for o in 0..out {
            for (ci, hi, wi) in
                (0..c).flat_map(|ci| (0..h).flat_map(move |hi| (0..w).map(move |wi| (ci, hi, wi))))
            {
                let nhwc_row = (hi * w + wi) * c + ci;
                let nchw_column = (ci * h + hi) * w + wi;
                assert_eq!(tf[[nhwc_row, o]], canonical[[o, nchw_column]]);
            }
        }
    }

    #[test]
    fn images_cross_as_nhwc_and_back() {
        let images = ndarray::Array4::from_shape_fn((2, 3, 2, 4), |(n, c, h, w)| {
            (n * 1000 + c * 100 + h * 10 + w) as f32
        });
        let tensor = images_to_nhwc(images.view());
        assert_eq!(tensor.dims(), &[2, 2, 4, 3]);
        // tensor[n, h, w, c] = images[n, c, h, w]; here n = 1, h = 1, w = 2, c = 1.
        let (n, h, w, c) = (1, 1, 2, 1);
        let index = ((n * 2 + h) * 4 + w) * 3 + c;
        assert_eq!(tensor[index], images[[1, 1, 1, 2]]);
        assert_eq!(nhwc_to_images(&tensor).unwrap(), images);
    }
}

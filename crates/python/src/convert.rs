//! What crosses into Python and back: the spec's layers as plain dicts, host arrays as numpy
//! arrays, canonical weights as a dict of arrays named as in a PyTorch state dict.

use ndarray::{ArcArray, Array2, Array4, ArrayD, ArrayView4, Ix4, IxDyn};
use numpy::{PyArray1, PyArray4, PyArrayDyn, PyReadonlyArrayDyn};
use parallax_core::Weights;
use parallax_core::spec::{
    BlockKind, ConvNorm, ConvOp, DenseOp, FreeOp, NormOp, Op, ParamInfo, ParamOp, PoolOp,
    ResolvedModel, Shape,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

fn name(info: &ParamInfo) -> &str {
    &info.name
}

fn dense<'py>(py: Python<'py>, op: &DenseOp) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("in_features", op.in_features)?;
    dict.set_item("out_features", op.out_features)?;
    dict.set_item("weight", name(&op.weight))?;
    dict.set_item("bias", op.bias.as_ref().map(name))?;
    Ok(dict)
}

fn conv<'py>(py: Python<'py>, op: &ConvOp) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("in_channels", op.in_channels)?;
    dict.set_item("out_channels", op.out_channels)?;
    dict.set_item("kernel", op.kernel)?;
    dict.set_item("stride", op.stride)?;
    dict.set_item("padding", op.padding)?;
    dict.set_item("weight", name(&op.weight))?;
    dict.set_item("bias", op.bias.as_ref().map(name))?;
    Ok(dict)
}

/// A batch norm; `layer` names it in errors, `image` says whether it normalises channels of
/// an image (BatchNorm2d) or features (BatchNorm1d).
fn norm<'py>(
    py: Python<'py>,
    op: &NormOp,
    layer: &str,
    image: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("name", layer)?;
    dict.set_item("image", image)?;
    dict.set_item("features", op.features)?;
    dict.set_item("epsilon", op.epsilon)?;
    dict.set_item("momentum", op.momentum)?;
    dict.set_item("running_variance", op.running_variance.to_string())?;
    // Scale, shift, running mean, running variance: the state dict's order.
    let tensors = [&op.weight, &op.bias, &op.running_mean, &op.running_var].map(name);
    dict.set_item("tensors", tensors)?;
    Ok(dict)
}

fn pool<'py>(py: Python<'py>, op: &PoolOp) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("kernel", op.kernel)?;
    dict.set_item("stride", op.stride)?;
    dict.set_item("padding", op.padding)?;
    Ok(dict)
}

fn conv_norm<'py>(py: Python<'py>, op: &ConvNorm, layer: &str) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("conv", conv(py, &op.conv)?)?;
    dict.set_item("norm", norm(py, &op.norm, layer, true)?)?;
    Ok(dict)
}

/// Every resolved layer as a dict with its `kind`, `name` and sizes; tensors are named by their
/// canonical names. The match is exhaustive, so a new layer kind fails to compile here until
/// the Python modules learn it.
pub(crate) fn layer_dicts<'py>(
    py: Python<'py>,
    model: &ResolvedModel,
) -> PyResult<Bound<'py, PyList>> {
    let layers = PyList::empty(py);
    // The image whose flattening feeds the current flat features, if any: frameworks that
    // flatten NHWC (Keras) order those features H,W,C rather than the canonical C,H,W, so the
    // dense kernels and batch-norm vectors they meet are permuted.
    let mut flattened: Option<[usize; 3]> = None;
    for layer in &model.layers {
        let image = matches!(layer.input, Shape::Image { .. });
        let input_image = match layer.input {
            Shape::Image {
                channels,
                height,
                width,
            } => Some([channels, height, width]),
            Shape::Flat(_) => None,
        };
        let feeding = if image { input_image } else { flattened };
        let (kind, dict) = match &layer.op {
            Op::Param(ParamOp::Dense(op)) => ("dense", dense(py, op)?),
            Op::Param(ParamOp::Conv2d(op)) => ("conv2d", conv(py, op)?),
            Op::Free(FreeOp::MaxPool2d(op)) => ("max_pool2d", pool(py, op)?),
            Op::Free(FreeOp::AvgPool2d(op)) => ("avg_pool2d", pool(py, op)?),
            Op::Free(FreeOp::GlobalAvgPool) => ("global_avg_pool", PyDict::new(py)),
            Op::Param(ParamOp::BatchNorm(op)) => ("batch_norm", norm(py, op, &layer.name, image)?),
            Op::Free(FreeOp::Relu) => ("relu", PyDict::new(py)),
            Op::Free(FreeOp::Dropout(rate)) => {
                let dict = PyDict::new(py);
                dict.set_item("rate", rate)?;
                ("dropout", dict)
            }
            Op::Free(FreeOp::Flatten) => ("flatten", PyDict::new(py)),
            Op::Param(ParamOp::Block(op)) => {
                let dict = PyDict::new(py);
                let block_kind = match op.kind {
                    BlockKind::Basic => "basic",
                    BlockKind::Bottleneck => "bottleneck",
                };
                dict.set_item("block", block_kind)?;
                let main = op
                    .main
                    .iter()
                    .map(|step| conv_norm(py, step, &layer.name))
                    .collect::<PyResult<Vec<_>>>()?;
                dict.set_item("main", main)?;
                let shortcut = op
                    .shortcut
                    .as_ref()
                    .map(|step| conv_norm(py, step, &layer.name))
                    .transpose()?;
                dict.set_item("shortcut", shortcut)?;
                ("block", dict)
            }
        };
        dict.set_item("kind", kind)?;
        dict.set_item("name", &layer.name)?;
        // The image whose flattening the layer's features are (its own input, for a dense
        // layer that flattens an image itself), or None.
        dict.set_item("flattened_image", feeding)?;
        flattened = match (&layer.op, &layer.output) {
            // Flattening, or a dense layer that flattens its image input, starts the order...
            (Op::Free(FreeOp::Flatten), Shape::Flat(_)) => feeding,
            // ...which element-wise layers and a batch norm over the features keep...
            (
                Op::Param(ParamOp::BatchNorm(_))
                | Op::Free(FreeOp::Relu)
                | Op::Free(FreeOp::Dropout(_)),
                Shape::Flat(_),
            ) => flattened,
            // ...and every other layer ends (a dense layer's outputs are its own units).
            _ => None,
        };
        layers.append(dict)?;
    }
    Ok(layers)
}

/// Canonical weights as a dict of numpy arrays (copies), by canonical name.
pub(crate) fn weights_dict<'py>(
    py: Python<'py>,
    weights: &Weights,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, tensor) in weights.iter() {
        dict.set_item(name, PyArrayDyn::from_array(py, tensor))?;
    }
    Ok(dict)
}

/// The dict the module's `export_weights` returns, as canonical weights.
pub(crate) fn weights_from_dict(dict: &Bound<'_, PyAny>) -> PyResult<Weights> {
    let dict = dict.cast::<PyDict>()?;
    let mut weights = Weights::new();
    for (name, tensor) in dict.iter() {
        let name: String = name.extract()?;
        weights.insert(name, array_from(&tensor)?);
    }
    Ok(weights)
}

/// A float32 numpy array of any shape, copied out of Python.
pub(crate) fn array_from(array: &Bound<'_, PyAny>) -> PyResult<ArrayD<f32>> {
    let readonly: PyReadonlyArrayDyn<'_, f32> = array.extract()?;
    Ok(readonly.as_array().to_owned())
}

/// `[N, classes]` logits from Python.
pub(crate) fn matrix_from(array: &Bound<'_, PyAny>) -> PyResult<Array2<f32>> {
    into_dimension(array_from(array)?)
}

/// `[N, C, H, W]` activations or gradients from Python; an `[N, F]` layer output (a dense layer's)
/// is `[N, F, 1, 1]`, as the other adapters hand it.
pub(crate) fn image_from(array: &Bound<'_, PyAny>) -> PyResult<Array4<f32>> {
    let array = array_from(array)?;
    let array = if array.ndim() == 2 {
        let (n, f) = (array.shape()[0], array.shape()[1]);
        array
            .into_shape_with_order(IxDyn(&[n, f, 1, 1]))
            .map_err(|error| pyo3::exceptions::PyValueError::new_err(error.to_string()))?
    } else {
        array
    };
    into_dimension(array)
}

fn into_dimension<D: ndarray::Dimension>(array: ArrayD<f32>) -> PyResult<ndarray::Array<f32, D>> {
    let shape = array.shape().to_vec();
    array.into_dimensionality::<D>().map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "the framework returned an array of shape {shape:?}, not of {} dimensions",
            D::NDIM.unwrap_or(0)
        ))
    })
}

/// Holds a reference to a data set's images for as long as a numpy array views them: the
/// array's base object.
#[pyclass(frozen)]
struct SharedImages(ArcArray<f32, Ix4>);

/// A data set's images as a read-only float32 numpy array over the same buffer, not a copy
/// (`Dataset::shared_images`). The array keeps the buffer alive however long Python keeps the
/// array. Read-only because the buffer is core's: nothing in the framework modules writes to
/// their input, and numpy now refuses it if one tries.
pub(crate) fn shared_images_to_numpy<'py>(
    py: Python<'py>,
    images: ArcArray<f32, Ix4>,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let owner = Bound::new(py, SharedImages(images))?;
    #[allow(unsafe_code)]
    // SAFETY: `owner` becomes the array's base object, so it outlives the array, and with it
    // its reference to the buffer. An `ArcArray`'s buffer is never reallocated while another
    // reference to it exists (a write through one copies first), and `SharedImages` offers no
    // way to write.
    let array = unsafe { PyArray4::borrow_from_array(&owner.get().0, owner.clone().into_any()) };
    array.getattr("flags")?.setattr("writeable", false)?;
    Ok(array)
}

/// Images as a float32 numpy array (a copy in standard layout).
pub(crate) fn images_to_numpy<'py>(
    py: Python<'py>,
    images: ArrayView4<'_, f32>,
) -> Bound<'py, PyArray4<f32>> {
    PyArray4::from_array(py, &images)
}

/// Class indices as int64, the type PyTorch's losses and indexing take.
pub(crate) fn indices_to_numpy<'py>(
    py: Python<'py>,
    indices: impl IntoIterator<Item = u32>,
) -> Bound<'py, PyArray1<i64>> {
    let values: Vec<i64> = indices.into_iter().map(i64::from).collect();
    PyArray1::from_vec(py, values)
}

#[cfg(test)]
mod tests {
    use ndarray::Array4;
    use numpy::PyArrayMethods;
    use pyo3::prelude::*;

    use super::shared_images_to_numpy;
    use crate::interpreter::{attach, start};

    /// The epoch's images reach Python as a view of core's buffer, read-only, and stay valid
    /// after every Rust reference to them is gone.
    #[test]
    fn shared_images_cross_without_a_copy_and_outlive_the_data_set() {
        start("pytorch").expect("the frameworks' environment (cargo xtask setup)");
        let images = Array4::from_shape_fn((3, 1, 2, 2), |(n, _, h, w)| (n * 4 + h * 2 + w) as f32)
            .into_shared();
        let buffer = images.as_ptr();
        attach(move |py| {
            let array = shared_images_to_numpy(py, images.clone()).expect("a numpy array");
            assert_eq!(
                array.data().cast_const(),
                buffer,
                "the array copied the images"
            );
            let writeable: bool = array
                .getattr("flags")
                .and_then(|flags| flags.getattr("writeable"))
                .and_then(|value| value.extract())
                .expect("flags.writeable");
            assert!(!writeable, "Python could write into core's images");
            drop(images);
            let sum: f32 = array
                .call_method0("sum")
                .and_then(|sum| sum.extract())
                .expect("sum");
            assert_eq!(sum, 66.0, "0 + 1 + … + 11 after the Rust side let go");
        });
    }
}

//! [`PythonModel`]: the `Model` hooks, each one call into the framework's Python module, which
//! holds the network and its optimizer.

use ndarray::{Array2, ArrayView4};
use parallax_core::optim::{AdamFormulation, OptimizerKind};
use parallax_core::roofline::{LAYER_REPEATS, LayerProfile, LayerTime};
use parallax_core::spec::ResolvedModel;
use parallax_core::{
    Batch, Checked, EpochPlan, EpochStats, EpochTally, GradCam, GradCamTarget, Model,
    OptimizerConfig, Precision, Result, StepPhases, StepProgress, TracedStep, Weights,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{
    image_from, images_to_numpy, indices_to_numpy, matrix_from, shared_images_to_numpy,
    weights_dict, weights_from_dict,
};
use crate::interpreter::{self, OrPython};

/// A spec's network in a Python framework, with its optimizer state (both live in Python).
pub struct PythonModel {
    backend: &'static str,
    /// The module's `Model` object.
    handle: Py<PyAny>,
    classes: usize,
}

/// The optimizer as the module's `optimizer_for` reads it.
fn optimizer_dict<'py>(py: Python<'py>, config: &OptimizerConfig) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("lr", config.lr)?;
    match config.kind {
        OptimizerKind::Sgd { momentum } => {
            dict.set_item("kind", "sgd")?;
            dict.set_item("momentum", momentum)?;
        }
        OptimizerKind::Adam {
            beta1,
            beta2,
            epsilon,
            formulation,
        } => {
            dict.set_item("kind", "adam")?;
            dict.set_item("beta1", beta1)?;
            dict.set_item("beta2", beta2)?;
            dict.set_item("epsilon", epsilon)?;
            let formulation = match formulation {
                AdamFormulation::Pytorch => "pytorch",
                AdamFormulation::Keras => "keras",
            };
            dict.set_item("formulation", formulation)?;
        }
    }
    Ok(dict)
}

impl PythonModel {
    pub(crate) fn new(backend: &'static str, handle: Py<PyAny>, model: &ResolvedModel) -> Self {
        PythonModel {
            backend,
            handle,
            classes: model.classes(),
        }
    }

    /// Calls the module's `method` with `args`, mapping its exception to core's error.
    fn call<T>(
        &self,
        method: &str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>>,
        read: impl for<'py> FnOnce(&Bound<'py, PyAny>) -> PyResult<T>,
    ) -> Result<T> {
        interpreter::attach(|py| {
            let result = (|| {
                let args = pyo3::types::PyTuple::new(py, args(py)?)?;
                let value = self.handle.bind(py).call_method1(method, args)?;
                read(&value)
            })();
            result.or_python(self.backend, py)
        })
    }
}

/// A training step's arguments: the batch's images and labels, and the optimizer.
fn step_args<'py>(
    py: Python<'py>,
    batch: &Batch,
    optimizer: &OptimizerConfig,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    Ok(vec![
        images_to_numpy(py, batch.images.view()).into_any(),
        indices_to_numpy(py, batch.labels.iter().copied()).into_any(),
        optimizer_dict(py, optimizer)?.into_any(),
    ])
}

/// An index as a Python integer, for [`PythonModel::call`]'s argument lists.
fn any(value: usize, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    Ok(value.into_pyobject(py)?.into_any())
}

impl Model for PythonModel {
    fn import_weights(&mut self, weights: Checked<&Weights>) -> Result<()> {
        self.call(
            "import_weights",
            |py| Ok(vec![weights_dict(py, &weights)?.into_any()]),
            |_| Ok(()),
        )
    }

    fn export_weights(&self) -> Result<Weights> {
        self.call("export_weights", |_| Ok(Vec::new()), weights_from_dict)
    }

    fn train_step(&mut self, batch: Checked<&Batch>, optimizer: &OptimizerConfig) -> Result<f32> {
        self.call(
            "train_step",
            |py| step_args(py, &batch, optimizer),
            |loss| loss.extract::<f32>(),
        )
    }

    fn layer_times(
        &mut self,
        images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Vec<LayerTime>>> {
        self.call(
            "layer_times",
            |py| {
                Ok(vec![
                    images_to_numpy(py, images.into_inner()).into_any(),
                    any(LAYER_REPEATS, py)?,
                ])
            },
            |times| {
                let pairs: Option<Vec<(f64, f64)>> = times.extract()?;
                Ok(pairs.map(|pairs| {
                    pairs
                        .into_iter()
                        .map(|(forward, backward)| LayerTime { forward, backward })
                        .collect()
                }))
            },
        )
    }

    fn layer_profile(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
    ) -> Result<Option<LayerProfile>> {
        self.call(
            "layer_profile",
            |py| {
                let mut args = step_args(py, &batch, optimizer)?;
                args.push(any(LAYER_REPEATS, py)?);
                Ok(args)
            },
            |profile| {
                let profile: Option<(String, Vec<(f64, f64)>)> = profile.extract()?;
                Ok(profile.map(|(profiler, pairs)| LayerProfile {
                    profiler,
                    steps: LAYER_REPEATS,
                    layers: pairs
                        .into_iter()
                        .map(|(forward, backward)| LayerTime { forward, backward })
                        .collect(),
                }))
            },
        )
    }

    fn traced_step(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
    ) -> Result<Option<TracedStep>> {
        self.call(
            "traced_step",
            |py| step_args(py, &batch, optimizer),
            |traced| {
                let (loss, compiled) = traced.extract::<(f32, bool)>()?;
                Ok(Some(TracedStep { loss, compiled }))
            },
        )
    }

    fn profile_step(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
    ) -> Result<Option<StepPhases>> {
        self.call(
            "profile_step",
            |py| step_args(py, &batch, optimizer),
            |phases| {
                let phase = |name: &str| -> PyResult<f64> {
                    match phases.get_item(name) {
                        Ok(seconds) => seconds.extract(),
                        Err(_) => Ok(0.0),
                    }
                };
                Ok(StepPhases {
                    input: phase("input")?,
                    forward: phase("forward")?,
                    backward: phase("backward")?,
                    optimizer: phase("optimizer")?,
                    readback: phase("readback")?,
                })
            },
        )
        .map(Some)
    }

    /// The framework's own loop over the epoch: the module's `train_epoch` is a generator that
    /// runs the user's loop and yields after each step, so that core's tally times the whole
    /// loop and reports progress as it goes.
    ///
    /// The data set crosses once per epoch, before the clock starts, as a read-only numpy
    /// array over core's own buffer (no copy); the Python side gathers its batches out of it, in
    /// the plan's order.
    fn train_epoch(
        &mut self,
        plan: Checked<&EpochPlan<'_>>,
        optimizer: &OptimizerConfig,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<EpochStats> {
        let plan = plan.into_inner();
        let backend = self.backend;
        interpreter::attach(|py| {
            let steps = (|| {
                let data = plan.data();
                let args = (
                    shared_images_to_numpy(py, data.shared_images())?,
                    indices_to_numpy(py, data.labels().iter().copied()),
                    indices_to_numpy(py, plan.order().iter().copied()),
                    plan.batch_size(),
                    optimizer_dict(py, optimizer)?,
                );
                self.handle.bind(py).call_method1("train_epoch", args)
            })()
            .or_python(backend, py)?;
            let mut tally = EpochTally::start();
            loop {
                let next = match steps.call_method0("__next__") {
                    Ok(step) => step,
                    Err(error) if error.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                        break;
                    }
                    Err(error) => return Err(error).or_python(backend, py),
                };
                let (loss, examples): (f32, usize) = next.extract().or_python(backend, py)?;
                tally.record(loss, examples, on_step)?;
            }
            Ok(tally.finish())
        })
    }

    fn predict(&mut self, images: Checked<ArrayView4<'_, f32>>) -> Result<Array2<f32>> {
        let classes = self.classes;
        self.call(
            "predict",
            |py| Ok(vec![images_to_numpy(py, images.into_inner()).into_any()]),
            |logits| {
                let logits = matrix_from(logits)?;
                if logits.ncols() != classes {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "the network returned {} logits per image, the spec has {classes} classes",
                        logits.ncols()
                    )));
                }
                Ok(logits)
            },
        )
    }

    fn activation_precision(
        &mut self,
        images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Precision>> {
        // The module answers with the framework's own name of the tensor's dtype.
        let dtype: String = self.call(
            "activation_dtype",
            |py| Ok(vec![images_to_numpy(py, images.into_inner()).into_any()]),
            |dtype| dtype.extract(),
        )?;
        match dtype.as_str() {
            "float32" => Ok(Some(Precision::F32)),
            "bfloat16" => Ok(Some(Precision::Bf16)),
            other => Err(parallax_core::Error::engine(
                self.backend,
                format!("the first hidden layer computed in {other}, neither float32 nor bfloat16"),
            )),
        }
    }

    fn grad_cam(&mut self, target: Checked<GradCamTarget<'_>>) -> Result<GradCam> {
        let GradCamTarget {
            images,
            layer,
            classes,
        } = target.into_inner();
        self.call(
            "grad_cam",
            |py| {
                Ok(vec![
                    images_to_numpy(py, images).into_any(),
                    any(layer, py)?,
                    indices_to_numpy(py, classes.iter().copied()).into_any(),
                ])
            },
            |pair| {
                let (activations, gradients): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                    pair.extract()?;
                Ok(GradCam {
                    activations: image_from(&activations)?,
                    gradients: image_from(&gradients)?,
                })
            },
        )
    }
}

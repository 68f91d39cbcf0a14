//! [`Net`]: a model built by a backend, behind core's checks.
//!
//! Every method checks its inputs against the resolved model, then calls the adapter's hook
//! with [`Checked`] values, and checks what comes back where a wrong answer would pass unseen
//! (the logits' shape, GradCAM's arrays). The checks live here once instead of in every
//! adapter, as burn's `check.rs` puts them in front of its engines, and they return errors
//! rather than panic.

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, ArrayView1, ArrayView4, s};

use crate::backend::{
    Checked, EpochStats, Evaluation, GradCam, GradCamTarget, Model, StepPhases, StepProgress,
};
use crate::data::{Batch, DataError, Dataset, EpochPlan};
use crate::metrics::{self, ClassificationReport, ConfusionMatrix};
use crate::optim::OptimizerConfig;
use crate::spec::{ResolvedModel, Shape};
use crate::weights::Weights;
use crate::{Error, Result};

/// A model built by a backend ([`Backend::build`](crate::Backend::build)), with its optimizer
/// state: what callers train, evaluate and explain.
pub struct Net {
    inner: Box<dyn Model>,
    model: Arc<ResolvedModel>,
    backend: String,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("model", &self.model.spec.name)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Net {
    pub(crate) fn new(inner: Box<dyn Model>, model: &ResolvedModel, backend: String) -> Self {
        Net {
            inner,
            model: Arc::new(model.clone()),
            backend,
        }
    }

    /// The resolved model this net computes.
    pub fn model(&self) -> &ResolvedModel {
        &self.model
    }

    /// The name of the backend that built it.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The adapter's own model, for its engine-level methods (a libtorch step on tensors, a
    /// TensorFlow graph's size); `None` when it is another type.
    pub fn engine<M: Model>(&self) -> Option<&M> {
        let inner: &dyn std::any::Any = self.inner.as_ref();
        inner.downcast_ref()
    }

    /// [`Net::engine`], mutably.
    pub fn engine_mut<M: Model>(&mut self) -> Option<&mut M> {
        let inner: &mut dyn std::any::Any = self.inner.as_mut();
        inner.downcast_mut()
    }

    /// Replaces every parameter and buffer with canonical weights, which must be exactly the
    /// model's tensors with their shapes. The optimizer's state is dropped with the old weights.
    pub fn import_weights(&mut self, weights: &Weights) -> Result<()> {
        weights.check(&self.model)?;
        self.inner.import_weights(Checked::new(weights))
    }

    /// The current parameters and buffers in the canonical layout.
    pub fn export_weights(&self) -> Result<Weights> {
        let weights = self.inner.export_weights()?;
        weights.check(&self.model).map_err(|error| {
            Error::engine(
                &self.backend,
                format!("exported weights are wrong: {error}"),
            )
        })?;
        Ok(weights)
    }

    /// One optimizer step on one batch; returns the batch's mean loss before the step.
    ///
    /// See [`Model::train_step`] for the optimizer's state.
    pub fn train_step(&mut self, batch: &Batch, optimizer: &OptimizerConfig) -> Result<f32> {
        let batch = self.check_training_batch(batch)?;
        self.inner.train_step(batch, optimizer)
    }

    /// A training batch whose images have the model's input shape and whose labels are its
    /// classes, one per image.
    fn check_training_batch<'b>(&self, batch: &'b Batch) -> Result<Checked<&'b Batch>> {
        check_input(&self.model, batch.images.view())?;
        check_labels(
            &self.model,
            batch.labels.view(),
            batch.images.dim().0,
            "training batch",
        )?;
        Ok(Checked::new(batch))
    }

    /// One optimizer step, as [`Net::train_step`], with its phases timed apart
    /// ([`Model::profile_step`]).
    pub fn profile_step(
        &mut self,
        batch: &Batch,
        optimizer: &OptimizerConfig,
    ) -> Result<StepPhases> {
        let batch = self.check_training_batch(batch)?;
        self.inner
            .profile_step(batch, optimizer)?
            .ok_or_else(|| Error::Unsupported {
                backend: self.backend.clone(),
                what: "timing a training step's phases apart (it runs the step as one graph)"
                    .into(),
            })
    }

    /// Each layer's forward and backward pass timed in isolation on `images`
    /// ([`Model::layer_times`]), one entry per layer of the spec; the weights, batch norm's
    /// running statistics included, are as they were before, and the optimizer's state starts
    /// afresh at the next step (restoring weights resets it).
    pub fn layer_times(
        &mut self,
        images: ArrayView4<'_, f32>,
    ) -> Result<Vec<crate::roofline::LayerTime>> {
        check_input(&self.model, images)?;
        let before = self.inner.export_weights()?;
        let times = self.inner.layer_times(Checked::new(images));
        self.inner.import_weights(Checked::new(&before))?;
        let times = times?.ok_or_else(|| Error::Unsupported {
            backend: self.backend.clone(),
            what: "timing its layers one at a time".into(),
        })?;
        if times.len() != self.model.layers.len() {
            return Err(Error::engine(
                &self.backend,
                format!(
                    "timed {} layers of a spec of {}",
                    times.len(),
                    self.model.layers.len()
                ),
            ));
        }
        Ok(times)
    }

    /// Each layer's time inside whole training steps on `batch`, as the engine's profiler
    /// attributes it ([`Model::layer_profile`]), one entry per layer of the spec; the weights
    /// are as they were before, and the optimizer's state starts afresh at the next step.
    pub fn layer_profile(
        &mut self,
        batch: &Batch,
        optimizer: &OptimizerConfig,
    ) -> Result<crate::roofline::LayerProfile> {
        let batch = self.check_training_batch(batch)?;
        let before = self.inner.export_weights()?;
        let profile = self.inner.layer_profile(batch, optimizer);
        self.inner.import_weights(Checked::new(&before))?;
        let profile = profile?.ok_or_else(|| Error::Unsupported {
            backend: self.backend.clone(),
            what: "attributing a training step's time to its layers with a profiler".into(),
        })?;
        if profile.layers.len() != self.model.layers.len() {
            return Err(Error::engine(
                &self.backend,
                format!(
                    "{} attributed a step to {} layers of a spec of {}",
                    profile.profiler,
                    profile.layers.len(),
                    self.model.layers.len()
                ),
            ));
        }
        Ok(profile)
    }

    /// One optimizer step, as [`Net::train_step`], traced by the engine so that it says whether
    /// it ran compiled ([`Model::traced_step`]).
    pub fn traced_step(
        &mut self,
        batch: &Batch,
        optimizer: &OptimizerConfig,
    ) -> Result<crate::TracedStep> {
        let batch = self.check_training_batch(batch)?;
        self.inner
            .traced_step(batch, optimizer)?
            .ok_or_else(|| Error::Unsupported {
                backend: self.backend.clone(),
                what: "tracing a training step to see whether it ran compiled".into(),
            })
    }

    /// One epoch over `plan`'s batches, calling `on_step` after each step; a loss that is not
    /// finite ends it with [`Error::Diverged`].
    pub fn train_epoch(
        &mut self,
        plan: &EpochPlan<'_>,
        optimizer: &OptimizerConfig,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<EpochStats> {
        let data = plan.data();
        // The whole data set is checked once, so no step needs checking again.
        check_input(&self.model, data.images())?;
        check_labels(&self.model, data.labels(), data.len(), data.name())?;
        self.inner
            .train_epoch(Checked::new(plan), optimizer, on_step)
    }

    /// Logits `[N, classes]` for images `[N, C, H, W]`, in evaluation mode.
    pub fn predict(&mut self, images: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        check_input(&self.model, images)?;
        let logits = self.inner.predict(Checked::new(images))?;
        let expected = (images.dim().0, self.model.classes());
        if logits.dim() != expected {
            return Err(Error::engine(
                &self.backend,
                format!(
                    "prediction gave {}×{} logits, expected {}×{}",
                    logits.nrows(),
                    logits.ncols(),
                    expected.0,
                    expected.1
                ),
            ));
        }
        Ok(logits)
    }

    /// The precision in which the engine computed the first hidden layer's output on
    /// `images`, as it reports it ([`crate::Model::activation_precision`]).
    pub fn activation_precision(
        &mut self,
        images: ArrayView4<'_, f32>,
    ) -> Result<Option<crate::Precision>> {
        check_input(&self.model, images)?;
        self.inner.activation_precision(Checked::new(images))
    }

    /// Logits for a whole data set, predicted `batch_size` examples at a time, in order.
    pub fn predict_dataset(&mut self, data: &Dataset, batch_size: usize) -> Result<Array2<f32>> {
        let images = data.images();
        let mut logits = Array2::zeros((data.len(), self.model.classes()));
        let batch_size = batch_size.max(1);
        let mut start = 0;
        while start < data.len() {
            let end = (start + batch_size).min(data.len());
            let part = self.predict(images.slice(s![start..end, .., .., ..]))?;
            logits.slice_mut(s![start..end, ..]).assign(&part);
            start = end;
        }
        Ok(logits)
    }

    /// Loss, accuracy, precision/recall/F1 and the confusion matrix on a data set.
    ///
    /// Metrics are computed by core from the logits, identically for every backend.
    pub fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Evaluation> {
        check_labels(&self.model, data.labels(), data.len(), data.name())?;
        let start = Instant::now();
        let logits = self.predict_dataset(data, batch_size)?;
        let labels = data.labels();
        let predictions = metrics::argmax_rows(logits.view());
        let confusion_matrix =
            ConfusionMatrix::from_predictions(labels, &predictions, self.model.classes());
        Ok(Evaluation {
            loss: metrics::cross_entropy(logits.view(), labels),
            report: ClassificationReport::from_confusion(&confusion_matrix),
            confusion_matrix,
            predictions,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The activations of the named layer and the gradient of each image's target class logit
    /// with respect to them, in evaluation mode.
    ///
    /// `layer` is a layer name or a group prefix ([`ResolvedModel::find_layer`]) whose output
    /// is an image; `classes` holds one class of the model per image.
    pub fn grad_cam(
        &mut self,
        images: ArrayView4<'_, f32>,
        layer: &str,
        classes: &[u32],
    ) -> Result<GradCam> {
        check_input(&self.model, images)?;
        let index = self.model.find_layer(layer).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "GradCAM layer {layer:?}: model {:?} has no such layer",
                self.model.spec.name
            ))
        })?;
        let Shape::Image {
            channels,
            height,
            width,
        } = self.model.layers[index].output
        else {
            return Err(Error::InvalidArgument(format!(
                "GradCAM layer {layer:?} gives a flat vector, not an image; pick a convolutional layer"
            )));
        };
        if classes.len() != images.dim().0 {
            return Err(Error::InvalidArgument(format!(
                "GradCAM needs one target class per image: {} classes for {} images",
                classes.len(),
                images.dim().0
            )));
        }
        if let Some(class) = classes
            .iter()
            .find(|&&class| class as usize >= self.model.classes())
        {
            return Err(Error::InvalidArgument(format!(
                "GradCAM class {class} is not a class of model {:?}, which has {}",
                self.model.spec.name,
                self.model.classes()
            )));
        }
        let cam = self.inner.grad_cam(Checked::new(GradCamTarget {
            images,
            layer: index,
            classes,
        }))?;
        let expected = (images.dim().0, channels, height, width);
        if cam.activations.dim() != expected || cam.gradients.dim() != expected {
            return Err(Error::engine(
                &self.backend,
                format!(
                    "GradCAM gave activations {:?} and gradients {:?}, expected {expected:?}",
                    cam.activations.dim(),
                    cam.gradients.dim()
                ),
            ));
        }
        Ok(cam)
    }
}

/// Checks that `images` have the model's input shape, C×H×W.
fn check_input(model: &ResolvedModel, images: ArrayView4<'_, f32>) -> Result<()> {
    let (_, c, h, w) = images.dim();
    if [c, h, w] != model.input() {
        let [ec, eh, ew] = model.input();
        return Err(Error::InputShape {
            expected: format!("{ec}×{eh}×{ew}"),
            actual: format!("{c}×{h}×{w}"),
        });
    }
    Ok(())
}

/// Checks labels: one per image, each a class of the model.
fn check_labels(
    model: &ResolvedModel,
    labels: ArrayView1<'_, u32>,
    images: usize,
    context: &str,
) -> Result<()> {
    if labels.len() != images {
        return Err(Error::Data(DataError::CountMismatch {
            context: context.into(),
            images,
            labels: labels.len(),
        }));
    }
    let classes = model.classes();
    match labels.iter().position(|&label| label as usize >= classes) {
        Some(index) => Err(Error::Data(DataError::LabelOutOfRange {
            context: context.into(),
            index,
            label: labels[index],
            classes,
        })),
        None => Ok(()),
    }
}

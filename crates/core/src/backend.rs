//! The backend trait that every engine adapter implements, and the types that cross it.
//!
//! # Design
//!
//! A [`Backend`] is an engine bound to a device and a thread count; it builds [`Model`]s from a
//! [`ResolvedModel`]. Everything that crosses the boundary is host-side and framework-free:
//! batches are `ndarray` arrays in N,C,H,W order, weights are [`Weights`] in the canonical
//! PyTorch layout, logits come back as `[N, classes]`. That keeps core free of every engine and
//! makes the same test suite run on all of them.
//!
//! The trait is object-safe, so the runner picks a backend at run time (`Box<dyn Backend>`),
//! and heavy generics stay inside each adapter. [`Model`] requires few methods: an epoch, an
//! evaluation and the metrics are provided on top of [`Model::train_step`] and
//! [`Model::predict`], and adapters override them only to go faster. Whatever a backend cannot
//! do returns [`Error::Unsupported`], never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use ndarray::{Array2, Array4, ArrayView4, s};
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Dataset, EpochPlan};
use crate::metrics::{self, ClassificationReport, ConfusionMatrix};
use crate::spec::ResolvedModel;
use crate::weights::Weights;
use crate::{Error, Result};

/// Where a backend computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Device {
    /// The host CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU by index.
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .or_else(|| other.strip_prefix("gpu:"))
                .and_then(|index| index.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device {other:?}: use cpu, cuda or cuda:N")),
        }
    }
}

impl From<Device> for String {
    fn from(device: Device) -> Self {
        device.to_string()
    }
}

impl TryFrom<String> for Device {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// CPU settings that every backend of a comparison shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSettings {
    /// Threads the engine computes with.
    pub threads: usize,
    /// Whether subnormal floats are flushed to zero on the engine's threads
    /// (see [`crate::denormals`]).
    pub flush_denormals: bool,
}

impl CpuSettings {
    /// `threads` threads, flushing subnormals (TensorFlow's default, and parallax's).
    pub fn new(threads: usize) -> Self {
        CpuSettings {
            threads,
            flush_denormals: true,
        }
    }
}

/// What a backend reports about itself; it goes into every run record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// The backend's name, as in `--backends` (`burn`, `tch`, `tf`).
    pub backend: String,
    /// The engine underneath (`burn-flex`, `libtorch`, `tensorflow`).
    pub framework: String,
    /// The engine's version.
    pub framework_version: String,
    /// The device it computes on.
    pub device: Device,
    /// Threads it computes with.
    pub threads: usize,
    /// Whether subnormal floats are flushed to zero on its threads.
    pub flush_denormals: bool,
    /// The fairness ledger: what this engine would do by default where parallax sets a value
    /// explicitly (initialisation, Adam's epsilon, batch-norm momentum...), by topic.
    pub defaults: BTreeMap<String, String>,
}

/// Adam's two formulations, which differ in where epsilon enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdamFormulation {
    /// PyTorch's Algorithm 1: `m̂ / (√v̂ + ε)`.
    #[default]
    Pytorch,
    /// Keras's: `α_t · m / (√v + ε̂)` with `α_t = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`, ε̂ added to the
    /// uncorrected root.
    Keras,
}

/// Which optimizer, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with PyTorch's momentum (`v = μv + g; w -= lr·v`, no dampening).
    Sgd {
        /// Momentum μ; 0 for plain SGD.
        momentum: f64,
    },
    /// Adam.
    Adam {
        /// First-moment decay β₁.
        beta1: f64,
        /// Second-moment decay β₂.
        beta2: f64,
        /// ε.
        epsilon: f64,
        /// Where ε enters.
        formulation: AdamFormulation,
    },
}

/// An optimizer and its learning rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// The optimizer.
    #[serde(flatten)]
    pub kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
}

impl OptimizerConfig {
    /// Adam with PyTorch's defaults (β 0.9/0.999, ε 1e-8) and this learning rate.
    pub fn adam(lr: f64) -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
                formulation: AdamFormulation::Pytorch,
            },
            lr,
        }
    }

    /// SGD with this momentum and learning rate.
    pub fn sgd(lr: f64, momentum: f64) -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Sgd { momentum },
            lr,
        }
    }

    /// Parses `adam`, `adam-keras`, `sgd` (momentum 0.9) or `sgd:M`, with this learning rate.
    pub fn parse(name: &str, lr: f64) -> Result<Self, String> {
        let mut config = match name {
            "adam" => Self::adam(lr),
            "adam-keras" => Self::adam(lr),
            "sgd" => Self::sgd(lr, 0.9),
            other => match other.strip_prefix("sgd:").map(str::parse::<f64>) {
                Some(Ok(momentum)) if (0.0..1.0).contains(&momentum) => Self::sgd(lr, momentum),
                _ => {
                    return Err(format!(
                        "unknown optimizer {other:?}: use adam, adam-keras, sgd or sgd:MOMENTUM"
                    ));
                }
            },
        };
        if name == "adam-keras"
            && let OptimizerKind::Adam {
                epsilon,
                formulation,
                ..
            } = &mut config.kind
        {
            *epsilon = 1e-7;
            *formulation = AdamFormulation::Keras;
        }
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(format!("learning rate must be positive, got {lr}"));
        }
        Ok(config)
    }
}

/// Progress of one training step, reported to the caller's callback.
#[derive(Clone, Copy, Debug)]
pub struct StepProgress {
    /// Steps done in this epoch.
    pub step: usize,
    /// Examples seen in this epoch.
    pub examples: usize,
    /// This step's mean loss.
    pub loss: f32,
}

/// The outcome of one training epoch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Mean training loss over the epoch's examples.
    pub train_loss: f64,
    /// Wall-clock seconds of the training loop (batches, steps, synchronisation).
    pub seconds: f64,
    /// Training examples per second.
    pub samples_per_second: f64,
    /// Steps taken.
    pub steps: usize,
    /// Seconds from the epoch's start to the end of its first step (graph building, warm-up).
    pub first_step_seconds: f64,
}

/// The bookkeeping of a training epoch: the clock, the running loss, divergence and progress.
///
/// [`Model::train_epoch`]'s default uses it, and so do adapters that override the loop, so
/// that every backend's [`EpochStats`] mean the same thing.
#[derive(Debug)]
pub struct EpochTally {
    start: Instant,
    first_step_seconds: f64,
    loss_sum: f64,
    examples: usize,
    steps: usize,
}

impl EpochTally {
    /// Starts the epoch's clock.
    pub fn start() -> Self {
        EpochTally {
            start: Instant::now(),
            first_step_seconds: 0.0,
            loss_sum: 0.0,
            examples: 0,
            steps: 0,
        }
    }

    /// Counts a finished step on `examples` examples with mean loss `loss`, and reports it to
    /// `on_step`; fails with [`Error::Diverged`] when the loss is not finite.
    pub fn record(
        &mut self,
        loss: f32,
        examples: usize,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<()> {
        if !loss.is_finite() {
            return Err(Error::Diverged {
                step: self.steps + 1,
                loss,
            });
        }
        if self.steps == 0 {
            self.first_step_seconds = self.start.elapsed().as_secs_f64();
        }
        self.steps += 1;
        self.examples += examples;
        self.loss_sum += f64::from(loss) * examples as f64;
        on_step(StepProgress {
            step: self.steps,
            examples: self.examples,
            loss,
        });
        Ok(())
    }

    /// Stops the clock and summarises the epoch.
    pub fn finish(self) -> EpochStats {
        let seconds = self.start.elapsed().as_secs_f64();
        EpochStats {
            train_loss: if self.examples > 0 {
                self.loss_sum / self.examples as f64
            } else {
                f64::NAN
            },
            seconds,
            samples_per_second: self.examples as f64 / seconds.max(f64::MIN_POSITIVE),
            steps: self.steps,
            first_step_seconds: self.first_step_seconds,
        }
    }
}

/// Logits and metrics of a model on a data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Accuracy, precision, recall and F1.
    pub report: ClassificationReport,
    /// Rows are true classes, columns predicted ones.
    pub confusion_matrix: ConfusionMatrix,
    /// The predicted class of every example, in data-set order.
    pub predictions: Vec<u32>,
    /// Wall-clock seconds of the evaluation.
    pub seconds: f64,
}

/// A layer's activations and the gradient of one class score with respect to them: what
/// GradCAM needs. Both are `[N, C, H, W]` in the canonical layout.
#[derive(Clone, Debug, PartialEq)]
pub struct GradCam {
    /// The layer's output for each image.
    pub activations: Array4<f32>,
    /// ∂(logit of the target class) / ∂(activations), per image.
    pub gradients: Array4<f32>,
}

/// An engine on one device: builds models from resolved specs.
pub trait Backend {
    /// What this backend is, where it runs, and its defaults.
    fn info(&self) -> BackendInfo;

    /// Builds a model. With `weights`, the model starts from them (canonical layout);
    /// without, from the engine's own default initialisation.
    fn build(&self, model: &ResolvedModel, weights: Option<&Weights>) -> Result<Box<dyn Model>>;
}

/// A model built by a [`Backend`], with its optimizer state.
///
/// Required: weights in and out, one training step, and prediction. The rest has defaults.
pub trait Model {
    /// Replaces every parameter and buffer with canonical weights.
    fn import_weights(&mut self, weights: &Weights) -> Result<()>;

    /// The current parameters and buffers in the canonical layout.
    fn export_weights(&self) -> Result<Weights>;

    /// One optimizer step on one batch, in training mode (batch statistics, dropout on);
    /// returns the batch's mean cross-entropy before the step.
    ///
    /// The optimizer's state (momenta, step count) lives in the model and carries over between
    /// steps and epochs; a different `optimizer` than the previous step's starts it afresh.
    fn train_step(&mut self, batch: &Batch, optimizer: &OptimizerConfig) -> Result<f32>;

    /// Logits `[N, classes]` for images `[N, C, H, W]`, in evaluation mode and without autograd.
    fn predict(&mut self, images: ArrayView4<f32>) -> Result<Array2<f32>>;

    /// The activations of the named layer and the gradient of the target class's logit with
    /// respect to them, in evaluation mode. `layer` is a layer name or group prefix
    /// ([`ResolvedModel::find_layer`]); `class` is one target class per image.
    fn grad_cam(
        &mut self,
        images: ArrayView4<f32>,
        layer: &str,
        classes: &[u32],
    ) -> Result<GradCam> {
        let _ = (images, layer, classes);
        Err(Error::Unsupported {
            backend: "this backend".into(),
            what: "GradCAM activations and gradients".into(),
        })
    }

    /// One epoch over `plan`'s batches, calling `on_step` after each step.
    ///
    /// The default gathers each batch on the host and runs [`Model::train_step`] on it; the
    /// time it reports covers the whole loop. Adapters override it to gather inside their
    /// engine, keeping the loop's accounting through [`EpochTally`].
    fn train_epoch(
        &mut self,
        plan: &EpochPlan<'_>,
        optimizer: &OptimizerConfig,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<EpochStats> {
        let mut tally = EpochTally::start();
        for batch in plan.batches() {
            let loss = self.train_step(&batch, optimizer)?;
            tally.record(loss, batch.len(), on_step)?;
        }
        Ok(tally.finish())
    }

    /// Logits for a whole data set, predicted `batch_size` examples at a time, in order.
    fn predict_dataset(&mut self, data: &Dataset, batch_size: usize) -> Result<Array2<f32>> {
        predict_in_batches(data, batch_size, |images| self.predict(images))
    }

    /// Loss, accuracy, precision/recall/F1 and the confusion matrix on a data set.
    ///
    /// Metrics are computed by core from the logits, identically for every backend.
    fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Evaluation> {
        let start = Instant::now();
        let logits = self.predict_dataset(data, batch_size)?;
        let labels = data.labels();
        let predictions = metrics::argmax_rows(logits.view());
        let confusion_matrix =
            ConfusionMatrix::from_predictions(labels, &predictions, data.num_classes());
        Ok(Evaluation {
            loss: metrics::cross_entropy(logits.view(), labels),
            report: ClassificationReport::from_confusion(&confusion_matrix),
            confusion_matrix,
            predictions,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Runs `predict` over a data set `batch_size` examples at a time, in order, and stacks the
/// logits; checks that every part has one row per example and the same class count.
///
/// [`Model::predict_dataset`]'s default uses it; adapters that prepare something once per pass
/// (an evaluation snapshot, a session) call it with their own closure.
pub fn predict_in_batches(
    data: &Dataset,
    batch_size: usize,
    mut predict: impl FnMut(ArrayView4<f32>) -> Result<Array2<f32>>,
) -> Result<Array2<f32>> {
    let images = data.images();
    let mut logits: Option<Array2<f32>> = None;
    let batch_size = batch_size.max(1);
    let mut start = 0;
    while start < data.len() {
        let end = (start + batch_size).min(data.len());
        let part = predict(images.slice(s![start..end, .., .., ..]))?;
        let all = logits.get_or_insert_with(|| Array2::zeros((data.len(), part.ncols())));
        if part.nrows() != end - start || part.ncols() != all.ncols() {
            return Err(Error::engine(
                "prediction",
                format!(
                    "expected {}×{} logits, got {}×{}",
                    end - start,
                    all.ncols(),
                    part.nrows(),
                    part.ncols()
                ),
            ));
        }
        all.slice_mut(s![start..end, ..]).assign(&part);
        start = end;
    }
    Ok(logits.unwrap_or_else(|| Array2::zeros((0, data.num_classes()))))
}

/// Checks that `images` have the model's input shape, C×H×W.
pub fn check_input(model: &ResolvedModel, images: ArrayView4<f32>) -> Result<()> {
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

/// Checks a GradCAM request and returns the index of the target layer: the images fit the
/// model, the layer exists and gives an image, and there is one valid class per image.
pub fn grad_cam_target(
    model: &ResolvedModel,
    backend: &str,
    images: ArrayView4<f32>,
    layer: &str,
    classes: &[u32],
) -> Result<usize> {
    check_input(model, images)?;
    let unsupported = |what: String| Error::Unsupported {
        backend: backend.into(),
        what,
    };
    let index = model.find_layer(layer).ok_or_else(|| {
        unsupported(format!(
            "GradCAM on layer {layer:?}: model {:?} has no such layer",
            model.spec.name
        ))
    })?;
    if !matches!(model.layers[index].output, crate::spec::Shape::Image { .. }) {
        return Err(unsupported(format!(
            "GradCAM on layer {layer:?}, whose output is not an image"
        )));
    }
    if classes.len() != images.dim().0 {
        return Err(unsupported(format!(
            "GradCAM with {} target classes for {} images (one per image)",
            classes.len(),
            images.dim().0
        )));
    }
    if let Some(class) = classes
        .iter()
        .find(|&&class| class as usize >= model.classes())
    {
        return Err(unsupported(format!(
            "GradCAM for class {class} of a model with {} classes",
            model.classes()
        )));
    }
    Ok(index)
}

/// Checks training labels: one per image, each a class of the model.
pub fn check_labels(model: &ResolvedModel, labels: &[u32], images: usize) -> Result<()> {
    if labels.len() != images {
        return Err(Error::Data(crate::data::DataError::CountMismatch {
            context: "training batch".into(),
            images,
            labels: labels.len(),
        }));
    }
    let classes = model.classes();
    match labels.iter().position(|&label| label as usize >= classes) {
        Some(index) => Err(Error::Data(crate::data::DataError::LabelOutOfRange {
            context: "training batch".into(),
            index,
            label: labels[index],
            classes,
        })),
        None => Ok(()),
    }
}

//! The backend trait that every engine adapter implements, and the types that cross it.
//!
//! # Design
//!
//! A [`Backend`] is an engine bound to a device and a thread count; it builds models from a
//! [`ResolvedModel`]. Everything that crosses the boundary is host-side and framework-free:
//! batches are `ndarray` arrays in N,C,H,W order, weights are [`Weights`] in the canonical
//! PyTorch layout, logits come back as `[N, classes]`. That keeps core free of every engine and
//! makes the same test suite run on all of them.
//!
//! The traits are object-safe, so the runner picks a backend at run time (`Box<dyn Backend>`),
//! and heavy generics stay inside each adapter. An adapter's [`Model`] is a set of hooks; what
//! callers hold is core's [`Net`], which checks every input once, in front of the engine, and
//! then calls the hook. The hooks take their inputs as [`Checked`] values that only core can
//! make, so no adapter can be reached around the checks, and none repeats them. [`Model`]
//! requires few methods: the epoch is provided on top of [`Model::train_step`], and evaluation
//! and the metrics are core's alone. Whatever a backend cannot do returns
//! [`Error::Unsupported`], never a panic.

use std::any::Any;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};
use serde::{Deserialize, Serialize};
use serde_with::{DeserializeFromStr, SerializeDisplay};

use crate::data::{Batch, EpochPlan};
use crate::defaults::NativeDefaults;
use crate::ledger::{Ledger, Topic};
use crate::metrics::{ClassificationReport, ConfusionMatrix};
use crate::net::Net;
use crate::optim::OptimizerConfig;
use crate::precision::{Execution, Precision};
use crate::spec::ResolvedModel;
use crate::weights::Weights;
use crate::{Error, Result};

/// Where a backend computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, SerializeDisplay, DeserializeFromStr)]
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
    /// The fairness ledger: on every topic, what this engine does by default and what parallax
    /// does instead.
    pub ledger: Ledger,
    /// The framework's own defaults, which a native run switches on.
    pub native_defaults: NativeDefaults,
    /// The ledger's topics whose native convention the framework's public API cannot change
    /// (Keras's Adam form in `torch.optim`, say): a run that asks for another convention on one
    /// of them is refused with [`Error::Unsupported`], and the conformance suite accepts that
    /// refusal only for these topics. Empty for engines that parallax drives itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixed: Vec<Topic>,
    /// The precisions it computes in (`--precision`); f32 on every engine.
    #[serde(default = "f32_only")]
    pub precisions: Vec<Precision>,
    /// Whether it compiles its training step (`--compile on`).
    #[serde(default)]
    pub compiles: bool,
    /// What its reduced precision is underneath, where a reader of its speed should know (an
    /// engine whose bf16 matrix product converts to f32); it goes into bf16 runs' records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision_note: Option<String>,
}

/// The precisions of an engine that states none: f32 alone.
pub fn f32_only() -> Vec<Precision> {
    vec![Precision::F32]
}

/// A matrix product prepared on an engine's device, ready to be run again and again.
pub trait MatmulProbe {
    /// Runs the product once and returns the sum of its elements, read back to the host, so
    /// that the product is complete when this returns.
    fn multiply(&mut self) -> Result<f64>;
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

/// One training step that the engine traced ([`Model::traced_step`]): its loss, and whether
/// the engine ran it as compiled code, as the engine itself reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracedStep {
    /// The batch's mean cross-entropy before the step, as [`Model::train_step`] returns it.
    pub loss: f32,
    /// Whether the step ran through the engine's compiler: XLA clusters in TensorFlow's run
    /// metadata, graphs that `torch.compile` captured, Keras's resolved `jit_compile`.
    pub compiled: bool,
}

/// Wall-clock seconds of one training step's phases, from [`Model::profile_step`]: where an
/// engine's step time goes, phase by phase, beside the same split of another engine's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepPhases {
    /// Moving the batch into the engine (host to tensor, to the device).
    pub input: f64,
    /// The forward pass and the loss.
    pub forward: f64,
    /// The backward pass: every parameter's gradient.
    pub backward: f64,
    /// The optimizer's update of every parameter.
    pub optimizer: f64,
    /// Reading the loss back to the host.
    pub readback: f64,
}

impl StepPhases {
    /// The whole step.
    pub fn total(&self) -> f64 {
        self.input + self.forward + self.backward + self.optimizer + self.readback
    }

    /// The phases with their names, in step order.
    pub fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("input", self.input),
            ("forward", self.forward),
            ("backward", self.backward),
            ("optimizer", self.optimizer),
            ("readback", self.readback),
        ]
    }
}

/// Times a step's phases into a [`StepPhases`] for [`Model::profile_step`], or does nothing,
/// so that an adapter runs one step function whether it profiles or not.
#[derive(Debug)]
pub struct StepClock<'a> {
    phases: Option<&'a mut StepPhases>,
    since: Instant,
}

impl<'a> StepClock<'a> {
    /// A clock that records nothing: a plain step.
    pub fn off() -> StepClock<'static> {
        StepClock {
            phases: None,
            since: Instant::now(),
        }
    }

    /// A clock that adds each phase's seconds to `phases`, starting now.
    pub fn on(phases: &'a mut StepPhases) -> Self {
        StepClock {
            phases: Some(phases),
            since: Instant::now(),
        }
    }

    /// Ends a phase: adds the seconds since the last lap to the field `phase` picks.
    pub fn lap(&mut self, phase: fn(&mut StepPhases) -> &mut f64) {
        if let Some(phases) = self.phases.as_deref_mut() {
            let now = Instant::now();
            *phase(phases) += (now - self.since).as_secs_f64();
            self.since = now;
        }
    }
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

/// What a GradCAM pass is asked for, once core has checked it: the images, the index of a
/// layer whose output is an image, and one class of the model per image.
#[derive(Clone, Copy, Debug)]
pub struct GradCamTarget<'a> {
    /// Images `[N, C, H, W]` of the model's input shape.
    pub images: ArrayView4<'a, f32>,
    /// The target layer's index in [`ResolvedModel::layers`].
    pub layer: usize,
    /// One class per image, each below the model's class count.
    pub classes: &'a [u32],
}

/// A value that core has checked against the model before handing it to an adapter's hook.
///
/// Only core makes one: an adapter's [`Model`] methods take their inputs as `Checked`, so that
/// they can be reached only through core's [`Net`], which checks first (the idea of burn's
/// `check.rs`, without its panics). Read the value through `Deref` or [`Checked::into_inner`].
#[derive(Clone, Copy, Debug)]
pub struct Checked<T>(T);

impl<T> Checked<T> {
    /// Marks `value` as checked; core's checks are the only callers.
    pub(crate) fn new(value: T) -> Self {
        Checked(value)
    }

    /// The checked value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Checked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// An engine on one device: builds models from resolved specs.
///
/// An adapter implements [`Backend::info`], [`Backend::create`] and [`Backend::matmul_probe`];
/// callers use [`Backend::build`], which checks the weights and wraps the adapter's model in a
/// [`Net`], and [`crate::peak::measure`].
pub trait Backend {
    /// What this backend is, where it runs, its defaults and its fairness ledger.
    fn info(&self) -> BackendInfo;

    /// Seeds the engine's own random draws (its default initialisation, dropout) from a run's
    /// seed, so that a run that uses the engine's own initialisation is reproducible too.
    /// [`crate::run::execute`] calls it before building.
    fn seed(&self, seed: u64);

    /// The adapter's hook: the engine's model of `model`, starting from `weights` (checked
    /// against the model), or from the engine's own default initialisation without them,
    /// computing as `execution` says. `execution` is one that [`Backend::info`] states
    /// (checked by [`Backend::build_with`]); loss and metrics stay f32 in every precision.
    fn create(
        &self,
        model: &ResolvedModel,
        weights: Option<Checked<&Weights>>,
        execution: Execution,
    ) -> Result<Box<dyn Model>>;

    /// The adapter's hook for [`crate::peak::measure_in`]: `left` and `right`, square f32
    /// matrices of one size, copied to the backend's device once (in `precision`, one of those
    /// [`Backend::info`] states), and a probe that multiplies them there with the engine's own
    /// matrix product (its BLAS), on the backend's threads.
    fn matmul_probe(
        &self,
        left: ArrayView2<'_, f32>,
        right: ArrayView2<'_, f32>,
        precision: Precision,
    ) -> Result<Box<dyn MatmulProbe>>;

    /// Builds `model`, from canonical `weights` when given (they must be exactly the model's
    /// tensors), and returns it behind core's checks.
    fn build(&self, model: &ResolvedModel, weights: Option<&Weights>) -> Result<Net> {
        self.build_with(model, weights, Execution::DEFAULT)
    }

    /// [`Backend::build`], computing as `execution` says: refused with
    /// [`Error::Unsupported`] when the backend does not state its precision or compilation.
    fn build_with(
        &self,
        model: &ResolvedModel,
        weights: Option<&Weights>,
        execution: Execution,
    ) -> Result<Net> {
        let info = self.info();
        execution.check(&info.backend, &info.precisions, info.compiles)?;
        if let Some(weights) = weights {
            weights.check(model)?;
        }
        let inner = self.create(model, weights.map(Checked::new), execution)?;
        Ok(Net::new(inner, model, info.backend))
    }
}

/// A model built by a [`Backend`], with its optimizer state: the adapter's hooks, which core's
/// [`Net`] calls after checking their inputs.
///
/// Required: weights in and out, one training step, prediction and GradCAM's activations and
/// gradients. The epoch has a default; adapters override it only to go faster.
pub trait Model: Any {
    /// Replaces every parameter and buffer with canonical weights, which are exactly the
    /// model's tensors with their canonical shapes.
    fn import_weights(&mut self, weights: Checked<&Weights>) -> Result<()>;

    /// The current parameters and buffers in the canonical layout.
    fn export_weights(&self) -> Result<Weights>;

    /// One optimizer step on one batch, in training mode (batch statistics, dropout on);
    /// returns the batch's mean cross-entropy before the step. The batch's images have the
    /// model's input shape, and its labels are the model's classes, one per image.
    ///
    /// The optimizer's state (momenta, step count) lives in the model and carries over between
    /// steps and epochs; a different `optimizer` than the previous step's starts it afresh.
    fn train_step(&mut self, batch: Checked<&Batch>, optimizer: &OptimizerConfig) -> Result<f32>;

    /// Logits `[N, classes]` for images `[N, C, H, W]` of the model's input shape, in
    /// evaluation mode and without autograd.
    fn predict(&mut self, images: Checked<ArrayView4<'_, f32>>) -> Result<Array2<f32>>;

    /// The activations of the target layer and the gradient of each image's target class
    /// logit with respect to them, in evaluation mode.
    fn grad_cam(&mut self, target: Checked<GradCamTarget<'_>>) -> Result<GradCam>;

    /// The precision in which the engine computed the first hidden layer's output on
    /// `images`, as the engine itself reports that tensor's dtype; `None` when the adapter
    /// cannot ask its engine.
    ///
    /// This is how the conformance suite knows that a bf16 run computed in bf16 rather than
    /// casting its inputs and computing in f32. The default is `None`; every adapter that
    /// states bf16 must answer.
    fn activation_precision(
        &mut self,
        images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Precision>> {
        let _ = images;
        Ok(None)
    }

    /// Each layer's forward and backward pass timed in isolation on `images` (a batch of the
    /// run's size), in the spec's order; `None` when the adapter cannot run its engine's layers
    /// one at a time.
    ///
    /// A layer's input is what the layers before it compute on these images in evaluation
    /// mode, computed outside the timing. Its forward pass runs in training mode; its backward
    /// pass starts from a gradient of ones on its output and computes its parameters'
    /// gradients, and its input's where a layer before it has parameters (as in a training
    /// step). Each pass is timed [`crate::roofline::LAYER_REPEATS`] times after one untimed
    /// warm-up, and the median kept. Nothing is updated, but batch norm's running statistics
    /// move in training mode: [`Net::layer_times`] restores the weights afterwards.
    fn layer_times(
        &mut self,
        images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Vec<crate::roofline::LayerTime>>> {
        let _ = images;
        Ok(None)
    }

    /// Each layer's time inside whole training steps on `batch`, as the engine's own profiler
    /// attributes its operations to the spec's layers; `None` when the adapter cannot read a
    /// profiler that does (an engine without one, or compiled code, whose fused kernels cross
    /// the layers' boundaries).
    ///
    /// One step runs unprofiled to warm up, then [`crate::roofline::LAYER_REPEATS`] profiled
    /// steps, and each layer's passes keep their medians. The steps update the weights and the
    /// optimizer's state: [`Net::layer_profile`] restores the weights afterwards.
    fn layer_profile(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
    ) -> Result<Option<crate::roofline::LayerProfile>> {
        let _ = (batch, optimizer);
        Ok(None)
    }

    /// One [`Model::train_step`], the same computation, traced by the engine so that it can say
    /// whether it ran the step as compiled code; `None` when the adapter cannot ask its engine.
    ///
    /// This is how the conformance suite knows that `--compile on` compiled. The default is
    /// `None`; every adapter that states it compiles must answer.
    fn traced_step(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
    ) -> Result<Option<TracedStep>> {
        let _ = (batch, optimizer);
        Ok(None)
    }

    /// One [`Model::train_step`], the same computation, with each phase timed on its own, for
    /// profiling on the CPU (where each phase has finished when the next starts); `None` when
    /// the engine cannot split its step, which [`Net::profile_step`] reports as unsupported
    /// under the backend's name.
    ///
    /// The default is `None`: an engine that runs the step as one graph has no host-side
    /// boundary between forward, backward and update.
    fn profile_step(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
    ) -> Result<Option<StepPhases>> {
        let _ = (batch, optimizer);
        Ok(None)
    }

    /// One epoch over `plan`'s batches, whose examples all fit the model, calling `on_step`
    /// after each step.
    ///
    /// The default gathers each batch on the host and runs [`Model::train_step`] on it; the
    /// time it reports covers the whole loop. Adapters override it to gather inside their
    /// engine, keeping the loop's accounting through [`EpochTally`]; the conformance check
    /// `an_epoch_equals_its_steps` holds every override to its own steps.
    fn train_epoch(
        &mut self,
        plan: Checked<&EpochPlan<'_>>,
        optimizer: &OptimizerConfig,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<EpochStats> {
        let mut tally = EpochTally::start();
        for batch in plan.batches() {
            // The plan's data set was checked as a whole, so each of its batches fits.
            let loss = self.train_step(Checked::new(&batch), optimizer)?;
            tally.record(loss, batch.len(), on_step)?;
        }
        Ok(tally.finish())
    }
}

//! An implementation of `parallax-core`'s [`Backend`] trait for libtorch through tch.
//!
//! libtorch is PyTorch's C++ engine, so this backend is the reference for PyTorch's semantics:
//! canonical weights need no conversion, batch norm and the optimizers behave as in
//! `torch.nn` and `torch.optim`. It links libtorch 2.9.0, which `cargo xtask setup` provisions.
//!
//! ```no_run
//! use parallax_core::{Backend, CpuSettings, Device, spec::presets};
//! use parallax_tch::TchBackend;
//!
//! let backend = TchBackend::new(Device::Cpu, CpuSettings::new(2))?;
//! let model = presets::mlp([1, 28, 28], 10).resolve()?;
//! let weights = parallax_core::init::canonical(&model, 42);
//! let mut net = backend.build(&model, Some(&weights))?;
//! let logits = net.predict(ndarray::Array4::zeros((4, 1, 28, 28)).view())?;
//! assert_eq!(logits.dim(), (4, 10));
//! # Ok::<(), parallax_core::Error>(())
//! ```

mod convert;
mod feed;
mod net;
mod optim;

use std::collections::BTreeMap;
use std::sync::Arc;

use ndarray::{Array2, Array4, ArrayView4};
use parallax_core::backend::{
    GradCam, StepProgress, check_input, check_labels, grad_cam_target, predict_in_batches,
};
use parallax_core::denormals;
use parallax_core::spec::ResolvedModel;
use parallax_core::{
    Backend, BackendInfo, Batch, CpuSettings, Dataset, Device, EpochPlan, EpochStats, EpochTally,
    Error, Model, OptimizerConfig, Result, Weights,
};
use tch::{Kind, Tensor};

use crate::convert::{
    OrEngine, engine_error, images_to_tensor, labels_to_tensor, logits_to_array, tensor_to_array,
};
use crate::feed::EpochFeed;
use crate::net::{Net, forward};
use crate::optim::Optimizer;

/// The backend's name in `--backends` and in records.
pub const BACKEND_NAME: &str = "tch";

/// The libtorch release this crate links (tch 0.22 checks for exactly this version).
pub const LIBTORCH_VERSION: &str = "2.9.0";

/// libtorch on one device with a fixed number of CPU threads.
#[derive(Clone, Debug)]
pub struct TchBackend {
    device: Device,
    tch_device: tch::Device,
    kind: Kind,
    threads: usize,
    flush_denormals: bool,
}

fn device_error(device: Device, reason: impl Into<String>) -> Error {
    Error::device(BACKEND_NAME, device, reason)
}

fn tch_device(device: Device) -> Result<tch::Device> {
    match device {
        Device::Cpu => Ok(tch::Device::Cpu),
        Device::Cuda(index) => {
            if !tch::Cuda::is_available() {
                return Err(device_error(
                    device,
                    "libtorch sees no CUDA device: this libtorch is a CPU build or no GPU is present (provision the CUDA build with `cargo xtask setup --cuda`, or use --device cpu)",
                ));
            }
            let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
            if index >= count {
                return Err(device_error(
                    device,
                    format!("libtorch sees {count} CUDA device(s), so cuda:{index} does not exist"),
                ));
            }
            Ok(tch::Device::Cuda(index))
        }
    }
}

/// Whether libtorch's intra-op threads flush subnormals, found by computing: a product of two
/// small normal floats whose exact value is subnormal comes out as zero only where
/// flush-to-zero is on. The tensor is large enough for libtorch to split it across all its
/// threads, so a single thread that keeps subnormals shows.
fn libtorch_flushes_denormals() -> bool {
    let probe = || -> std::result::Result<bool, tch::TchError> {
        let small = Tensor::f_full([1 << 20], 1e-20, (Kind::Float, tch::Device::Cpu))?;
        let product = small.f_mul(&small)?;
        let nonzero = product.f_ne(0.0)?.f_any()?.f_int64_value(&[])?;
        Ok(nonzero == 0)
    };
    tch::no_grad(probe).unwrap_or(false)
}

impl TchBackend {
    /// libtorch on `device`, with the comparison's CPU settings.
    ///
    /// libtorch computes on OpenMP threads. Their number is a process-wide setting
    /// (`at::set_num_threads`), applied here. Flush-to-zero is per thread: it is set on the
    /// calling thread, and OpenMP's workers inherit it when they are created, which happens at
    /// the first parallel operation that this thread runs. [`BackendInfo`] reports what a
    /// computation on libtorch's threads actually shows.
    pub fn new(device: Device, cpu: CpuSettings) -> Result<Self> {
        let tch_device = tch_device(device)?;
        denormals::flush_denormals_on_this_thread(cpu.flush_denormals);
        tch::set_num_threads(i32::try_from(cpu.threads.max(1)).unwrap_or(i32::MAX));
        let flush_denormals =
            libtorch_flushes_denormals() && denormals::flushing_denormals_on_this_thread();
        Ok(TchBackend {
            device,
            tch_device,
            kind: Kind::Float,
            threads: usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1),
            flush_denormals,
        })
    }

    /// The same backend computing in 64-bit floats: slower, and meant as a numerical reference
    /// that tells float rounding from a real disagreement between engines. Weights and logits
    /// still cross the trait as 32-bit floats.
    pub fn with_float64(mut self) -> Self {
        self.kind = Kind::Double;
        self
    }
}

impl Backend for TchBackend {
    fn info(&self) -> BackendInfo {
        let defaults: BTreeMap<String, String> = [
            ("layout", "NCHW, the canonical layout itself: weights cross unchanged"),
            ("init", "Linear/Conv2d kaiming_uniform(a=√5): a ±1/√fan_in bound, like PyTorch"),
            ("adam", "torch.optim.Adam ε = 1e-8 (parallax passes the run's ε)"),
            ("sgd_momentum", "torch.optim.SGD dampening 0, the rule parallax uses"),
            (
                "batch_norm",
                "at::batch_norm updates the running variance with the unbiased batch variance, like PyTorch",
            ),
            ("threads", "OpenMP intra-op threads (at::set_num_threads)"),
            (
                "omp_wait_policy",
                "GNU OpenMP spins about 3 ms (GOMP_SPINCOUNT 300000) before its threads sleep; cargo xtask compare sets GOMP_SPINCOUNT=10000 (about 0.1 ms) for libtorch workers",
            ),
            (
                "denormals",
                "libtorch keeps subnormal floats unless torch.set_flush_denormal(True); parallax sets the run's policy",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(std::iter::once((
            "omp_wait_policy_in_effect".to_string(),
            ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"]
                .map(|name| {
                    format!(
                        "{name}={}",
                        std::env::var(name).unwrap_or_else(|_| "unset".into())
                    )
                })
                .join(" "),
        )))
        .collect();
        BackendInfo {
            backend: BACKEND_NAME.into(),
            framework: "libtorch".into(),
            framework_version: LIBTORCH_VERSION.into(),
            device: self.device,
            threads: self.threads,
            flush_denormals: self.flush_denormals,
            defaults,
        }
    }

    fn build(&self, model: &ResolvedModel, weights: Option<&Weights>) -> Result<Box<dyn Model>> {
        Ok(Box::new(self.build_model(model, weights)?))
    }
}

impl TchBackend {
    /// [`Backend::build`] with the concrete model type, for callers that use its libtorch-level
    /// methods ([`TchModel::train_step_tensors`]).
    pub fn build_model(
        &self,
        model: &ResolvedModel,
        weights: Option<&Weights>,
    ) -> Result<TchModel> {
        let mut net = Net::new(model, self.kind, self.tch_device).or_engine()?;
        if let Some(weights) = weights {
            convert::import(&mut net, model, weights)?;
        }
        Ok(TchModel {
            net,
            model: Arc::new(model.clone()),
            device: self.tch_device,
            kind: self.kind,
            optimizer: None,
        })
    }
}

/// A spec's network on libtorch, with its optimizer state.
pub struct TchModel {
    net: Net,
    model: Arc<ResolvedModel>,
    device: tch::Device,
    kind: Kind,
    optimizer: Option<Optimizer>,
}

/// `[N, features]` logits from the last layer's output.
fn flat_logits(tensor: Tensor) -> std::result::Result<Tensor, tch::TchError> {
    let n = tensor.size().first().copied().unwrap_or(0);
    tensor.f_reshape([n, -1])
}

impl TchModel {
    /// One optimizer step on a batch already in libtorch: images `[N, C, H, W]` (floating
    /// point) and labels `[N]` (integral class indices), on any device; they are converted to
    /// the model's precision and device first.
    ///
    /// This is [`Model::train_step`] for callers that keep their data in libtorch tensors.
    /// A label out of range is reported by libtorch, as an engine error.
    pub fn train_step_tensors(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        optimizer: &OptimizerConfig,
    ) -> Result<f32> {
        let size = images.size();
        let [n, c, h, w] = size.as_slice() else {
            return Err(Error::InputShape {
                expected: "[N, C, H, W] images".into(),
                actual: format!("{size:?}"),
            });
        };
        let [ec, eh, ew] = self.model.input();
        if [*c, *h, *w] != [ec, eh, ew].map(|d| d as i64) {
            return Err(Error::InputShape {
                expected: format!("{ec}×{eh}×{ew}"),
                actual: format!("{c}×{h}×{w}"),
            });
        }
        if labels.size() != [*n] {
            return Err(Error::InputShape {
                expected: format!("[{n}] labels"),
                actual: format!("{:?}", labels.size()),
            });
        }
        let x = self.on_model_device(images, self.kind).or_engine()?;
        let targets = self.on_model_device(labels, Kind::Int64).or_engine()?;
        self.step(x, &targets, optimizer)
    }

    /// `tensor` as `kind` on the model's device: itself (a shallow clone) when it already is.
    fn on_model_device(
        &self,
        tensor: &Tensor,
        kind: Kind,
    ) -> std::result::Result<Tensor, tch::TchError> {
        if tensor.kind() == kind && tensor.device() == self.device {
            Ok(tensor.shallow_clone())
        } else {
            tensor
                .f_to_kind(kind)
                .and_then(|converted| converted.f_to_device(self.device))
        }
    }

    /// One optimizer step on inputs of the model's precision, on its device.
    fn step(&mut self, x: Tensor, targets: &Tensor, optimizer: &OptimizerConfig) -> Result<f32> {
        let fresh = !matches!(&self.optimizer, Some(current) if current.config() == optimizer);
        if fresh {
            self.optimizer = Some(Optimizer::new(*optimizer));
        }
        let parameters = self.net.trainable();
        let step = || -> std::result::Result<(Tensor, Vec<Tensor>), tch::TchError> {
            let logits = flat_logits(forward(
                &self.net,
                &self.model,
                x,
                0..self.model.layers.len(),
                true,
            )?)?;
            let loss = logits.f_log_softmax(1, None::<Kind>)?.f_nll_loss(
                targets,
                None::<Tensor>,
                tch::Reduction::Mean,
                -100,
            )?;
            // Gradients come back as values rather than accumulating in `.grad`, so nothing
            // needs zeroing between steps.
            let gradients = Tensor::f_run_backward(&[&loss], &parameters, false, false)?;
            Ok((loss, gradients))
        };
        let (loss, gradients) = step().or_engine()?;
        let Some(optim) = self.optimizer.as_mut() else {
            return Err(engine_error("optimizer missing after creation"));
        };
        optim.step(&parameters, &gradients).or_engine()?;
        let loss = loss.f_double_value(&[]).or_engine()?;
        Ok(loss as f32)
    }

    /// Logits in evaluation mode, without autograd.
    fn predict_tensor(&self, images: ArrayView4<f32>) -> Result<Array2<f32>> {
        let logits = tch::no_grad(|| -> std::result::Result<Tensor, tch::TchError> {
            let x = images_to_tensor(images, self.kind, self.device)?;
            flat_logits(forward(
                &self.net,
                &self.model,
                x,
                0..self.model.layers.len(),
                false,
            )?)
        })
        .or_engine()?;
        logits_to_array(&logits)
    }
}

impl Model for TchModel {
    fn import_weights(&mut self, weights: &Weights) -> Result<()> {
        convert::import(&mut self.net, &self.model, weights)?;
        // The optimizer's state belongs to the old parameters.
        self.optimizer = None;
        Ok(())
    }

    fn export_weights(&self) -> Result<Weights> {
        convert::export(&self.net)
    }

    fn train_step(&mut self, batch: &Batch, optimizer: &OptimizerConfig) -> Result<f32> {
        check_input(&self.model, batch.images.view())?;
        let labels = batch.labels.to_vec();
        check_labels(&self.model, &labels, batch.images.dim().0)?;
        let x = images_to_tensor(batch.images.view(), self.kind, self.device).or_engine()?;
        let targets = labels_to_tensor(&labels, self.device).or_engine()?;
        self.step(x, &targets, optimizer)
    }

    /// Gathers each batch inside libtorch, from a zero-copy view of the data set into a reused
    /// staging tensor (see the `feed` module), rather than on the host and then copied.
    fn train_epoch(
        &mut self,
        plan: &EpochPlan<'_>,
        optimizer: &OptimizerConfig,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<EpochStats> {
        let data = plan.data();
        // The checks that `train_step` makes per batch, made once for the whole data set.
        check_input(&self.model, data.images())?;
        match data.labels().as_slice() {
            Some(labels) => check_labels(&self.model, labels, data.len())?,
            None => check_labels(&self.model, &data.labels().to_vec(), data.len())?,
        }
        let mut tally = EpochTally::start();
        let feed = EpochFeed::new(plan).or_engine()?;
        for step in 0.. {
            let Some((images, labels)) = feed.batch(step).or_engine()? else {
                break;
            };
            let examples = labels.size().first().copied().unwrap_or(0) as usize;
            // On the CPU in f32 both are the feed's own tensors, unconverted.
            let x = self.on_model_device(&images, self.kind).or_engine()?;
            let targets = self.on_model_device(&labels, Kind::Int64).or_engine()?;
            let loss = self.step(x, &targets, optimizer)?;
            tally.record(loss, examples, on_step)?;
        }
        Ok(tally.finish())
    }

    fn predict(&mut self, images: ArrayView4<f32>) -> Result<Array2<f32>> {
        check_input(&self.model, images)?;
        self.predict_tensor(images)
    }

    fn predict_dataset(&mut self, data: &Dataset, batch_size: usize) -> Result<Array2<f32>> {
        predict_in_batches(data, batch_size, |images| {
            check_input(&self.model, images)?;
            self.predict_tensor(images)
        })
    }

    fn grad_cam(
        &mut self,
        images: ArrayView4<f32>,
        layer: &str,
        classes: &[u32],
    ) -> Result<GradCam> {
        let index = grad_cam_target(&self.model, BACKEND_NAME, images, layer, classes)?;
        let run = || -> std::result::Result<(Tensor, Tensor), tch::TchError> {
            let x = images_to_tensor(images, self.kind, self.device)?;
            // The pass up to the layer needs no graph: its output becomes a fresh leaf.
            let activations =
                tch::no_grad(|| forward(&self.net, &self.model, x, 0..index + 1, false))?;
            let leaf = activations.f_detach()?.f_set_requires_grad(true)?;
            let logits = flat_logits(forward(
                &self.net,
                &self.model,
                leaf.shallow_clone(),
                index + 1..self.model.layers.len(),
                false,
            )?)?;
            let targets = labels_to_tensor(classes, self.device)?.f_unsqueeze(1)?;
            let score = logits.f_gather(1, &targets, false)?.f_sum(None::<Kind>)?;
            let mut gradients = Tensor::f_run_backward(&[&score], &[&leaf], false, false)?;
            let gradient = gradients
                .pop()
                .ok_or_else(|| tch::TchError::Torch("no gradient reached the layer".into()))?;
            Ok((leaf, gradient))
        };
        let (activations, gradients) = run().or_engine()?;
        Ok(GradCam {
            activations: to_array4(tensor_to_array(&activations)?)?,
            gradients: to_array4(tensor_to_array(&gradients)?)?,
        })
    }
}

fn to_array4(array: ndarray::ArrayD<f32>) -> Result<Array4<f32>> {
    array.into_dimensionality().map_err(engine_error)
}

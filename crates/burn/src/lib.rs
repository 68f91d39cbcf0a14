//! An implementation of `parallax-core`'s [`Backend`] trait for burn: the pure-Rust Flex backend
//! on the CPU, CubeCL CUDA on GPUs (feature `cuda`), and LibTorch through burn-tch (feature `tch`).
//!
//! burn is parallax's reference backend: it needs no native library, so it runs everywhere.
//!
//! ```no_run
//! use parallax_burn::{BurnBackend, BurnEngine};
//! use parallax_core::{Backend, CpuSettings, Device, spec::presets};
//!
//! let backend = BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(2))?;
//! let model = presets::mlp([1, 28, 28], 10).resolve()?;
//! let weights = parallax_core::init::canonical(&model, 42);
//! let mut net = backend.build(&model, Some(&weights))?;
//! let logits = net.predict(ndarray::Array4::zeros((4, 1, 28, 28)).view())?;
//! assert_eq!(logits.dim(), (4, 10));
//! # Ok::<(), parallax_core::Error>(())
//! ```

mod convert;
mod net;

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::module::Module;
use burn::optim::{
    AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig, momentum::MomentumConfig,
};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use ndarray::{Array2, Array4, ArrayView4};
use parallax_core::backend::{
    AdamFormulation, GradCam, OptimizerKind, check_input, check_labels, grad_cam_target,
    predict_in_batches,
};
use parallax_core::denormals;
use parallax_core::spec::ResolvedModel;
use parallax_core::{
    Backend, BackendInfo, Batch, CpuSettings, Dataset, Device, Error, Model, OptimizerConfig,
    Result, Weights,
};

use crate::convert::{engine_error, images_to_tensor, logits_to_array, tensor_to_array};
use crate::net::{Activation, Net, forward};

/// The backend's name in `--backends` and in records.
pub const BACKEND_NAME: &str = "burn";

/// The burn release this crate is built and pinned against.
pub const BURN_VERSION: &str = "0.22.1";

/// Which of burn's execution backends runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BurnEngine {
    /// Flex, burn's pure-Rust CPU backend (the default; nothing to install).
    Flex,
    /// CubeCL CUDA, for NVIDIA GPUs (cargo feature `cuda`).
    Cuda,
    /// LibTorch through burn-tch (cargo feature `tch`), on CPU or CUDA.
    LibTorch,
}

impl BurnEngine {
    /// The engine for a device: Flex on the CPU, CubeCL CUDA on GPUs.
    pub fn for_device(device: Device) -> Self {
        match device {
            Device::Cpu => BurnEngine::Flex,
            Device::Cuda(_) => BurnEngine::Cuda,
        }
    }

    /// The name in `--backends`: `burn-tch` for LibTorch, so its records don't collide with Flex's.
    pub fn backend_name(&self) -> &'static str {
        match self {
            BurnEngine::LibTorch => "burn-tch",
            BurnEngine::Flex | BurnEngine::Cuda => BACKEND_NAME,
        }
    }

    fn framework(&self) -> &'static str {
        match self {
            BurnEngine::Flex => "burn-flex",
            BurnEngine::Cuda => "burn-cuda",
            BurnEngine::LibTorch => "burn-tch",
        }
    }
}

/// burn on one device with a fixed number of CPU threads.
#[derive(Clone, Debug)]
pub struct BurnBackend {
    engine: BurnEngine,
    device: Device,
    burn_device: burn::tensor::Device,
    threads: usize,
    flush_denormals: bool,
}

fn device_error(device: Device, reason: impl Into<String>) -> Error {
    Error::device(BACKEND_NAME, device, reason)
}

// burn 0.22 deprecates burn-tch in favour of CubeCL; parallax keeps it on purpose, because it
// runs burn's own layer on the very libtorch of the tch adapter and so separates the two costs.
#[allow(deprecated)]
fn burn_device(engine: BurnEngine, device: Device) -> Result<burn::tensor::Device> {
    match (engine, device) {
        (BurnEngine::Flex, Device::Cpu) => Ok(burn::tensor::Device::flex()),
        (BurnEngine::Flex, Device::Cuda(_)) => Err(device_error(
            device,
            "Flex is a CPU backend; use --device cpu, or burn's CUDA engine",
        )),
        #[cfg(feature = "cuda")]
        (BurnEngine::Cuda, Device::Cuda(index)) => Ok(burn::tensor::Device::cuda(index)),
        #[cfg(not(feature = "cuda"))]
        (BurnEngine::Cuda, _) => Err(device_error(
            device,
            "this build has no CUDA support; rebuild parallax-burn with the `cuda` feature (cargo xtask compare --cuda)",
        )),
        #[cfg(feature = "cuda")]
        (BurnEngine::Cuda, Device::Cpu) => {
            Err(device_error(device, "CubeCL CUDA needs a cuda:N device"))
        }
        #[cfg(feature = "tch")]
        (BurnEngine::LibTorch, Device::Cpu) => Ok(burn::tensor::Device::libtorch()),
        #[cfg(feature = "tch")]
        (BurnEngine::LibTorch, Device::Cuda(index)) => {
            Ok(burn::tensor::Device::libtorch_cuda(index))
        }
        #[cfg(not(feature = "tch"))]
        (BurnEngine::LibTorch, _) => Err(device_error(
            device,
            "this build has no LibTorch support; rebuild parallax-burn with the `tch` feature",
        )),
    }
}

/// Threads the engine computes with: rayon's pool, or libtorch's intra-op pool.
fn engine_threads(engine: BurnEngine) -> usize {
    #[cfg(feature = "tch")]
    if engine == BurnEngine::LibTorch {
        return usize::try_from(tch::get_num_threads()).unwrap_or(1);
    }
    let _ = engine;
    rayon::current_num_threads()
}

impl BurnBackend {
    /// burn's `engine` on `device`, with the comparison's CPU settings.
    ///
    /// Flex computes on rayon's global pool, which a process configures once: the first backend
    /// created decides its size and subnormal handling, and [`BackendInfo`] reports what is
    /// actually in effect. The calling thread, which runs the small operations, is set too.
    pub fn new(engine: BurnEngine, device: Device, cpu: CpuSettings) -> Result<Self> {
        let burn_device = burn_device(engine, device)?;
        let flush = cpu.flush_denormals;
        denormals::flush_denormals_on_this_thread(flush);
        // An error only means the pool already exists; what it does is reported in `info`.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(cpu.threads)
            .start_handler(move |_| {
                denormals::flush_denormals_on_this_thread(flush);
            })
            .build_global();
        // libtorch computes on its own OpenMP threads. They start lazily and, like every new
        // thread, copy the creating thread's floating-point environment, set just above.
        #[cfg(feature = "tch")]
        if engine == BurnEngine::LibTorch {
            tch::set_num_threads(i32::try_from(cpu.threads.max(1)).unwrap_or(i32::MAX));
        }
        let pool_flushes = rayon::broadcast(|_| denormals::flushing_denormals_on_this_thread())
            .into_iter()
            .all(|flushing| flushing);
        Ok(BurnBackend {
            engine,
            device,
            burn_device,
            threads: engine_threads(engine),
            flush_denormals: pool_flushes && denormals::flushing_denormals_on_this_thread(),
        })
    }
}

impl Backend for BurnBackend {
    fn info(&self) -> BackendInfo {
        let defaults: BTreeMap<String, String> = [
            ("layout", "NCHW, like the canonical layout"),
            ("init", "Linear/Conv2d KaimingUniform gain 1/√3: PyTorch's ±1/√fan_in bound"),
            ("adam", "AdamConfig ε = 1e-5 (parallax passes the run's ε, PyTorch's 1e-8 by default)"),
            ("sgd_momentum", "MomentumConfig dampening 0.1 (parallax sets 0, PyTorch's rule)"),
            (
                "batch_norm",
                "burn::nn::BatchNorm updates the running variance with the biased batch variance; parallax uses the unbiased one, like PyTorch",
            ),
            ("threads", "Flex: rayon's global pool"),
            (
                "denormals",
                "burn keeps subnormal floats (no flush-to-zero); parallax sets the run's policy",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        BackendInfo {
            backend: self.engine.backend_name().into(),
            framework: self.engine.framework().into(),
            framework_version: BURN_VERSION.into(),
            device: self.device,
            threads: self.threads,
            flush_denormals: self.flush_denormals,
            defaults,
        }
    }

    fn build(&self, model: &ResolvedModel, weights: Option<&Weights>) -> Result<Box<dyn Model>> {
        let device = self.burn_device.clone().autodiff();
        let mut net = Net::new(model, &device);
        if let Some(weights) = weights {
            convert::import(&mut net, model, weights, &device)?;
        }
        Ok(Box::new(BurnModel {
            net: Some(net),
            model: Arc::new(model.clone()),
            device,
            optimizer: None,
        }))
    }
}

/// A spec's network on burn, with its optimizer state.
pub struct BurnModel {
    /// Always `Some` between calls; burn's optimizer takes the module by value for a step.
    net: Option<Net>,
    model: Arc<ResolvedModel>,
    /// The autodiff device the parameters live on.
    device: burn::tensor::Device,
    optimizer: Option<(OptimizerConfig, ModuleOptimizer)>,
}

impl BurnModel {
    fn net(&self) -> Result<&Net> {
        self.net
            .as_ref()
            .ok_or_else(|| engine_error("the model was lost in an earlier failed step"))
    }

    fn optimizer(&mut self, config: &OptimizerConfig) -> Result<&mut ModuleOptimizer> {
        let fresh = !matches!(&self.optimizer, Some((current, _)) if current == config);
        if fresh {
            let optimizer = match config.kind {
                OptimizerKind::Sgd { momentum } => {
                    let mut sgd = SgdConfig::new();
                    if momentum > 0.0 {
                        sgd = sgd.with_momentum(Some(
                            MomentumConfig::new()
                                .with_momentum(momentum)
                                .with_dampening(0.0),
                        ));
                    }
                    sgd.init()
                }
                OptimizerKind::Adam {
                    beta1,
                    beta2,
                    epsilon,
                    formulation: AdamFormulation::Pytorch,
                } => AdamConfig::new()
                    .with_beta_1(beta1 as f32)
                    .with_beta_2(beta2 as f32)
                    .with_epsilon(epsilon as f32)
                    .init(),
                OptimizerKind::Adam {
                    formulation: AdamFormulation::Keras,
                    ..
                } => {
                    return Err(Error::Unsupported {
                        backend: BACKEND_NAME.into(),
                        what: "Keras's Adam formulation (burn implements PyTorch's; use --optimizer adam)".into(),
                    });
                }
            };
            self.optimizer = Some((*config, optimizer));
        }
        match &mut self.optimizer {
            Some((_, optimizer)) => Ok(optimizer),
            None => Err(engine_error("optimizer missing after creation")),
        }
    }

    /// Logits of an evaluation-mode snapshot, without autodiff.
    fn predict_with(&self, valid: &Net, images: ArrayView4<f32>) -> Result<Array2<f32>> {
        let device = self.device.clone().without_autodiff();
        let x = images_to_tensor(images, &device);
        let logits = forward(
            valid,
            &self.model,
            Activation::Image(x),
            0..self.model.layers.len(),
            false,
        );
        logits_to_array(flat(logits))
    }
}

fn flat(activation: Activation) -> Tensor<2> {
    match activation {
        Activation::Flat(tensor) => tensor,
        Activation::Image(tensor) => {
            let [n, c, h, w] = tensor.dims();
            tensor.reshape([n, c * h * w])
        }
    }
}

fn labels_tensor(labels: &[u32], device: &burn::tensor::Device) -> Tensor<2, Int> {
    let values: Vec<i64> = labels.iter().map(|&label| i64::from(label)).collect();
    Tensor::<1, Int>::from_data(TensorData::new(values, [labels.len()]), device)
        .reshape([labels.len(), 1])
}

impl Model for BurnModel {
    fn import_weights(&mut self, weights: &Weights) -> Result<()> {
        let net = self
            .net
            .as_mut()
            .ok_or_else(|| engine_error("the model was lost in an earlier failed step"))?;
        convert::import(net, &self.model, weights, &self.device)?;
        // The optimizer's state belongs to the old parameters.
        self.optimizer = None;
        Ok(())
    }

    fn export_weights(&self) -> Result<Weights> {
        convert::export(self.net()?, &self.model)
    }

    fn train_step(&mut self, batch: &Batch, optimizer: &OptimizerConfig) -> Result<f32> {
        check_input(&self.model, batch.images.view())?;
        let labels = batch.labels.to_vec();
        check_labels(&self.model, &labels, batch.images.dim().0)?;
        let lr = optimizer.lr;
        let device = self.device.clone();
        let model = Arc::clone(&self.model);
        self.optimizer(optimizer)?;
        let net = self
            .net
            .take()
            .ok_or_else(|| engine_error("the model was lost in an earlier failed step"))?;
        let x = images_to_tensor(batch.images.view(), &device);
        let targets = labels_tensor(&labels, &device);
        let logits = flat(forward(
            &net,
            &model,
            Activation::Image(x),
            0..model.layers.len(),
            true,
        ));
        let loss = log_softmax(logits, 1).gather(1, targets).mean().neg();
        let loss_value = loss.clone().try_into_scalar::<f32>();
        let gradients = GradientsParams::from_grads(loss.backward(), &net);
        let Some((_, optim)) = self.optimizer.as_mut() else {
            self.net = Some(net);
            return Err(engine_error("optimizer missing"));
        };
        self.net = Some(optim.step(lr, net, gradients));
        loss_value.map_err(|error| engine_error(format!("{error:?}")))
    }

    fn predict(&mut self, images: ArrayView4<f32>) -> Result<Array2<f32>> {
        check_input(&self.model, images)?;
        let valid = self.net()?.valid();
        self.predict_with(&valid, images)
    }

    fn predict_dataset(&mut self, data: &Dataset, batch_size: usize) -> Result<Array2<f32>> {
        // One evaluation snapshot for the whole pass rather than one per batch.
        let valid = self.net()?.valid();
        predict_in_batches(data, batch_size, |images| {
            check_input(&self.model, images)?;
            self.predict_with(&valid, images)
        })
    }

    fn grad_cam(
        &mut self,
        images: ArrayView4<f32>,
        layer: &str,
        classes: &[u32],
    ) -> Result<GradCam> {
        let index = grad_cam_target(&self.model, BACKEND_NAME, images, layer, classes)?;
        let net = self.net()?;
        let x = images_to_tensor(images, &self.device);
        let Activation::Image(activations) =
            forward(net, &self.model, Activation::Image(x), 0..index + 1, false)
        else {
            return Err(engine_error("GradCAM layer gave a flat activation"));
        };
        let leaf = activations.detach().require_grad();
        let logits = flat(forward(
            net,
            &self.model,
            Activation::Image(leaf.clone()),
            index + 1..self.model.layers.len(),
            false,
        ));
        let score = logits.gather(1, labels_tensor(classes, &self.device)).sum();
        let gradients = score.backward();
        let gradient = leaf
            .grad(&gradients)
            .ok_or_else(|| engine_error("no gradient reached the GradCAM layer"))?;
        Ok(GradCam {
            activations: to_array4(tensor_to_array(leaf.inner())?)?,
            gradients: to_array4(tensor_to_array(gradient)?)?,
        })
    }
}

fn to_array4(array: ndarray::ArrayD<f32>) -> Result<Array4<f32>> {
    array.into_dimensionality().map_err(engine_error)
}

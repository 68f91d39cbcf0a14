//! The burn backend: which of burn's engines runs on which device, with which threads, and
//! what burn does by default (the fairness ledger).

use burn::tensor::{FloatDType, Tensor, TensorData};
use ndarray::ArrayView2;
use parallax_core::backend::MatmulProbe;
use parallax_core::denormals;
use parallax_core::optim::AdamFormulation;
use parallax_core::spec::ResolvedModel;
use parallax_core::{
    Backend, BackendInfo, Checked, CpuSettings, Device, Error, Ledger, Model, Precision, Result,
    Topic, Weights,
};
use parallax_core::{NativeDefaults, VarianceEstimator};

use crate::convert;
use crate::engine_error;
use crate::model::BurnModel;
use crate::net::{Autocast, Net};

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

    /// Whether this engine keeps subnormal floats by default.
    fn subnormals_entry(&self) -> &'static str {
        match self {
            BurnEngine::Flex | BurnEngine::Cuda => {
                "burn keeps subnormal floats (no flush-to-zero); parallax sets the run's policy on its threads"
            }
            BurnEngine::LibTorch => {
                "libtorch keeps subnormal floats unless torch.set_flush_denormal(True); parallax sets the run's policy on the threads libtorch's inherit it from"
            }
        }
    }

    /// What this engine's bf16 is underneath, for the records of bf16 runs.
    fn precision_note(&self) -> String {
        const CASTS: &str = "bf16 by the adapter's own casts from f32 master weights (convolutions and dense layers in bf16, batch norm in f32, the other layers in what they are given)";
        match self {
            BurnEngine::Flex => format!(
                "Flex computes bf16 convolutions, matrix products and pooling by converting to f32 and back, so its bf16 speed is not a bf16 kernel's; {CASTS}"
            ),
            BurnEngine::Cuda => format!("{CASTS}, on CubeCL's bf16 kernels"),
            BurnEngine::LibTorch => format!("{CASTS}, on libtorch's own bf16 kernels"),
        }
    }

    /// How this engine's threads are pooled.
    fn threads_entry(&self) -> &'static str {
        match self {
            BurnEngine::Flex => {
                "Flex computes on rayon's global pool, sized once per process; parallax sizes it to the run's threads"
            }
            BurnEngine::Cuda => "CubeCL computes on the GPU; the host thread only launches kernels",
            BurnEngine::LibTorch => {
                "libtorch's OpenMP intra-op threads (at::set_num_threads), set to the run's threads"
            }
        }
    }
}

/// The backend the registry calls `name`, on `device` with `cpu`'s threads: the one
/// constructor the worker's registry-generated table calls for every backend of this adapter.
pub fn backend_named(name: &str, device: Device, cpu: CpuSettings) -> Result<Box<dyn Backend>> {
    let engine = [BurnEngine::for_device(device), BurnEngine::LibTorch]
        .into_iter()
        .find(|engine| engine.backend_name() == name)
        .ok_or_else(|| not_this_adapter(name))?;
    Ok(Box::new(BurnBackend::new(engine, device, cpu)?))
}

/// The error for a name that is none of this adapter's backends.
fn not_this_adapter(name: &str) -> Error {
    Error::InvalidArgument(format!("{name:?} is not a backend of parallax-burn"))
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

fn device_error(engine: BurnEngine, device: Device, reason: impl Into<String>) -> Error {
    Error::device(engine.backend_name(), device, reason)
}

// burn 0.22 deprecates burn-tch in favour of CubeCL; parallax keeps it on purpose, because it
// runs burn's own layer on the very libtorch of the tch adapter and so separates the two costs.
#[allow(deprecated)]
fn burn_device(engine: BurnEngine, device: Device) -> Result<burn::tensor::Device> {
    match (engine, device) {
        (BurnEngine::Flex, Device::Cpu) => Ok(burn::tensor::Device::flex()),
        (BurnEngine::Flex, Device::Cuda(_)) => Err(device_error(
            engine,
            device,
            "Flex is a CPU backend; use --device cpu, or burn's CUDA engine",
        )),
        #[cfg(feature = "cuda")]
        (BurnEngine::Cuda, Device::Cuda(index)) => Ok(burn::tensor::Device::cuda(index)),
        #[cfg(not(feature = "cuda"))]
        (BurnEngine::Cuda, _) => Err(device_error(
            engine,
            device,
            "this build has no CUDA support; rebuild parallax-burn with the `cuda` feature (`cargo xtask compare --device cuda:N` builds it)",
        )),
        #[cfg(feature = "cuda")]
        (BurnEngine::Cuda, Device::Cpu) => Err(device_error(
            engine,
            device,
            "CubeCL CUDA needs a cuda:N device",
        )),
        #[cfg(feature = "tch")]
        (BurnEngine::LibTorch, Device::Cpu) => Ok(burn::tensor::Device::libtorch()),
        #[cfg(feature = "tch")]
        (BurnEngine::LibTorch, Device::Cuda(index)) => {
            Ok(burn::tensor::Device::libtorch_cuda(index))
        }
        #[cfg(not(feature = "tch"))]
        (BurnEngine::LibTorch, _) => Err(device_error(
            engine,
            device,
            "this build has no LibTorch support; rebuild parallax-burn with the `tch` feature",
        )),
    }
}

/// Two matrices on burn's device, multiplied by burn's own matrix product (Flex's gemm, cuBLAS
/// through CubeCL, or libtorch's): the probe behind the machine's peak.
struct Matmul {
    left: Tensor<2>,
    right: Tensor<2>,
}

impl MatmulProbe for Matmul {
    fn multiply(&mut self) -> Result<f64> {
        // Reading the sum back waits for the product, on a GPU too. Tensors are handles, so
        // the clones copy no data.
        let sum = self.left.clone().matmul(self.right.clone()).sum();
        sum.try_into_scalar::<f32>()
            .map(f64::from)
            .map_err(|error| engine_error(format!("{error:?}")))
    }
}

/// A host matrix as a tensor on `device`.
fn matrix_to_tensor(matrix: ArrayView2<'_, f32>, device: &burn::tensor::Device) -> Tensor<2> {
    let values: Vec<f32> = matrix.iter().copied().collect();
    Tensor::from_data(
        TensorData::new(values, [matrix.nrows(), matrix.ncols()]),
        device,
    )
}

/// The dtype a run of `precision` computes its convolutions and dense layers in.
fn autocast_for(precision: Precision) -> Autocast {
    match precision {
        Precision::F32 => Autocast::Off,
        Precision::Bf16 => Autocast::To(FloatDType::BF16),
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

    /// What burn does by default on each topic of the fairness ledger, and what parallax does.
    fn ledger(&self) -> Ledger {
        Ledger::from_fn(|topic| {
            match topic {
                Topic::Initialisation => "Linear/Conv2d KaimingUniform with gain 1/√3: PyTorch's ±1/√fan_in bound (used with --defaults native)",
                Topic::OptimizerEpsilon => "AdamConfig ε = 1e-5; parallax passes the run's ε (PyTorch's 1e-8 by default)",
                Topic::OptimizerFormulation => "Adam as PyTorch writes it; MomentumConfig dampening 0.1, which parallax sets to 0 (PyTorch's rule); Keras's Adam is parallax's own burn optimizer",
                Topic::BatchNormMomentum => "burn::nn::BatchNorm momentum 0.1 in PyTorch's convention; parallax uses the spec's",
                Topic::BatchNormEpsilon => "burn::nn::BatchNorm ε 1e-5; parallax uses the spec's",
                Topic::BatchNormRunningVariance => "burn::nn::BatchNorm updates the running variance with the biased batch variance; parallax's own norm uses the unbiased one, like PyTorch",
                Topic::Padding => "explicit amounts per side, as core resolves them (TensorFlow's rule for \"same\")",
                Topic::Layout => "NCHW, the canonical layout; dense weights are stored [in, out] and transposed at the boundary",
                Topic::Subnormals => self.engine.subnormals_entry(),
                Topic::Threads => self.engine.threads_entry(),
                Topic::Loss => "log-softmax and the mean of the target class's negative log-probability, as PyTorch's cross-entropy",
            }
            .to_string()
        })
    }
}

impl Backend for BurnBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: self.engine.backend_name().into(),
            framework: self.engine.framework().into(),
            framework_version: BURN_VERSION.into(),
            device: self.device,
            threads: self.threads,
            flush_denormals: self.flush_denormals,
            ledger: self.ledger(),
            native_defaults: NativeDefaults {
                adam_epsilon: 1e-5,
                adam_formulation: AdamFormulation::Pytorch,
                batch_norm_momentum: 0.1,
                batch_norm_epsilon: 1e-5,
                running_variance: VarianceEstimator::Biased,
            },
            fixed: Vec::new(),
            // bf16 from f32 master weights, cast per op (`net::Autocast`); burn has no
            // compiler for a training step, so `build_with` refuses `--compile on`.
            precisions: Precision::ALL.to_vec(),
            compiles: false,
            precision_note: Some(self.engine.precision_note()),
        }
    }

    fn seed(&self, seed: u64) {
        self.burn_device.seed(seed);
    }

    fn matmul_probe(
        &self,
        left: ArrayView2<'_, f32>,
        right: ArrayView2<'_, f32>,
        precision: Precision,
    ) -> Result<Box<dyn MatmulProbe>> {
        let autocast = autocast_for(precision);
        Ok(Box::new(Matmul {
            left: autocast.cast(matrix_to_tensor(left, &self.burn_device)),
            right: autocast.cast(matrix_to_tensor(right, &self.burn_device)),
        }))
    }

    fn create(
        &self,
        model: &ResolvedModel,
        weights: Option<Checked<&Weights>>,
        execution: parallax_core::Execution,
    ) -> Result<Box<dyn Model>> {
        let device = self.burn_device.clone().autodiff();
        let mut net = Net::new(model, &device);
        if let Some(weights) = weights {
            convert::import(&mut net, model, &weights, &device)?;
        }
        let autocast = autocast_for(execution.precision);
        Ok(Box::new(BurnModel::new(net, model, device, autocast)))
    }
}

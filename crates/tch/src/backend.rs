//! The libtorch backend: the device, the thread pool, subnormals, and what libtorch does by
//! default (the fairness ledger).

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
use tch::{Kind, TchError, Tensor};

use crate::OrEngine;
use crate::convert;
use crate::model::TchModel;
use crate::net::Net;

/// The backend's name in `--backends` and in records.
pub const BACKEND_NAME: &str = "tch";

/// The libtorch release this crate links (tch 0.22 checks for exactly this version).
pub const LIBTORCH_VERSION: &str = "2.9.0";

/// The backend the registry calls `name`, on `device` with `cpu`'s threads: the one
/// constructor the worker's registry-generated table calls for every backend of this adapter.
pub fn backend_named(name: &str, device: Device, cpu: CpuSettings) -> Result<Box<dyn Backend>> {
    if name != BACKEND_NAME {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is not a backend of parallax-tch"
        )));
    }
    Ok(Box::new(TchBackend::new(device, cpu)?))
}

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

/// Two matrices on libtorch's device, multiplied by `at::matmul` (oneDNN's or MKL's sgemm on
/// the CPU, cuBLAS on a GPU): the probe behind the machine's peak.
struct Matmul {
    left: Tensor,
    right: Tensor,
}

impl MatmulProbe for Matmul {
    fn multiply(&mut self) -> Result<f64> {
        // Reading the sum back waits for the product, on a GPU too.
        tch::no_grad(|| {
            self.left
                .f_matmul(&self.right)?
                .f_sum(Kind::Double)?
                .f_double_value(&[])
        })
        .or_engine()
    }
}

/// A host matrix as an f32 tensor on `device`.
fn matrix_to_tensor(
    matrix: ArrayView2<'_, f32>,
    device: tch::Device,
) -> std::result::Result<Tensor, TchError> {
    let values: Vec<f32> = matrix.iter().copied().collect();
    let shape = [matrix.nrows() as i64, matrix.ncols() as i64];
    Tensor::f_from_slice(&values)?
        .f_reshape(shape)?
        .f_to_device(device)
}

/// The OpenMP wait settings this process runs with, as the ledger records them.
fn omp_wait_in_effect() -> String {
    ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"]
        .map(|name| {
            format!(
                "{name}={}",
                std::env::var(name).unwrap_or_else(|_| "unset".into())
            )
        })
        .join(" ")
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

    /// The same backend computing in 64-bit floats: slower, and meant as a numerical referee
    /// that tells float rounding from a real disagreement between engines (the parity tests
    /// hold the f32 backend to it). Weights and logits still cross the trait as 32-bit floats.
    pub fn with_float64(mut self) -> Self {
        self.kind = Kind::Double;
        self
    }

    /// What libtorch does by default on each topic of the fairness ledger, and what parallax
    /// does.
    fn ledger(&self) -> Ledger {
        Ledger::from_fn(|topic| {
            match topic {
            Topic::Initialisation => "Linear/Conv2d kaiming_uniform(a=√5): a ±1/√fan_in bound, PyTorch's (used with --defaults native)".into(),
            Topic::OptimizerEpsilon => "torch.optim.Adam ε = 1e-8; parallax passes the run's ε".into(),
            Topic::OptimizerFormulation => "torch.optim's single-tensor Adam and SGD (dampening 0), written as in-place updates; Keras's Adam on request".into(),
            Topic::BatchNormMomentum => "nn.BatchNorm momentum 0.1 (the new batch's weight); parallax uses the spec's".into(),
            Topic::BatchNormEpsilon => "nn.BatchNorm ε 1e-5; parallax uses the spec's".into(),
            Topic::BatchNormRunningVariance => "at::batch_norm updates the running variance with the unbiased batch variance, as PyTorch does".into(),
            Topic::Padding => "symmetric padding in the op; asymmetric padding (\"same\" with a stride or an even kernel) as an explicit pad first: zeros, or −∞ for max pooling".into(),
            Topic::Layout => "NCHW indexing, the canonical layout: weights cross unchanged. On the CPU parallax stores convolution kernels channels-last (NHWC strides, torch.channels_last), so activations follow and oneDNN runs its faster NHWC kernels; PyTorch's default is NCHW-contiguous".into(),
            Topic::Subnormals => "libtorch keeps subnormal floats unless torch.set_flush_denormal(True); parallax sets the run's policy".into(),
            Topic::Threads => format!(
                "OpenMP intra-op threads (at::set_num_threads); GNU OpenMP spins about 3 ms (GOMP_SPINCOUNT 300000) before sleeping, and cargo xtask compare sets GOMP_SPINCOUNT=10000 (about 0.1 ms); in effect: {}",
                omp_wait_in_effect()
            ),
            Topic::Loss => "log_softmax and nll_loss with mean reduction, as nn.CrossEntropyLoss".into(),
        }
        })
    }
}

impl Backend for TchBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: BACKEND_NAME.into(),
            framework: "libtorch".into(),
            framework_version: LIBTORCH_VERSION.into(),
            device: self.device,
            threads: self.threads,
            flush_denormals: self.flush_denormals,
            ledger: self.ledger(),
            native_defaults: NativeDefaults {
                adam_epsilon: 1e-8,
                adam_formulation: AdamFormulation::Pytorch,
                batch_norm_momentum: 0.1,
                batch_norm_epsilon: 1e-5,
                running_variance: VarianceEstimator::Unbiased,
            },
            fixed: Vec::new(),
            // bf16 from f32 master weights, cast per op (`Net::autocast`); the f64 referee
            // computes in f64 alone. libtorch's C++ API has no compiler.
            precisions: if self.kind == Kind::Float {
                Precision::ALL.to_vec()
            } else {
                parallax_core::backend::f32_only()
            },
            compiles: false,
            precision_note: Some(
                "bf16 by the adapter's own casts, autocast's rule: convolutions and dense layers in bf16 from f32 master weights, the other layers in what they are given".into(),
            ),
        }
    }

    fn seed(&self, seed: u64) {
        // libtorch's generator takes a signed seed; the bits are what matter.
        tch::manual_seed(seed as i64);
    }

    fn matmul_probe(
        &self,
        left: ArrayView2<'_, f32>,
        right: ArrayView2<'_, f32>,
        precision: Precision,
    ) -> Result<Box<dyn MatmulProbe>> {
        let on_device = |matrix| {
            let tensor = matrix_to_tensor(matrix, self.tch_device)?;
            match precision {
                Precision::F32 => Ok(tensor),
                Precision::Bf16 => tensor.f_to_kind(Kind::BFloat16),
            }
        };
        Ok(Box::new(Matmul {
            left: on_device(left).or_engine()?,
            right: on_device(right).or_engine()?,
        }))
    }

    fn create(
        &self,
        model: &ResolvedModel,
        weights: Option<Checked<&Weights>>,
        execution: parallax_core::Execution,
    ) -> Result<Box<dyn Model>> {
        let mut net = Net::new(model, self.kind, self.tch_device).or_engine()?;
        match execution.precision {
            Precision::F32 => {}
            Precision::Bf16 => net.autocast(Kind::BFloat16),
        }
        if let Some(weights) = weights {
            convert::import(&mut net, &weights)?;
        }
        Ok(Box::new(TchModel::new(
            net,
            model,
            self.tch_device,
            self.kind,
        )))
    }
}

//! The Python backends: which framework, its module, the device, threads, subnormals, and what
//! the framework does by default (the fairness ledger), read from the framework at run time.

use std::sync::Mutex;

use ndarray::ArrayView2;
use numpy::PyArray2;
use parallax_core::backend::MatmulProbe;
use parallax_core::optim::AdamFormulation;
use parallax_core::spec::ResolvedModel;
use parallax_core::{
    Backend, BackendInfo, Checked, Compile, CpuSettings, Device, Error, Execution, Ledger, Model,
    NativeDefaults, Precision, Result, Topic, VarianceEstimator, Weights,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{layer_dicts, weights_dict};
use crate::interpreter::{self, OrPython};
use crate::model::PythonModel;

/// A framework that runs its own Python code behind the trait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framework {
    /// PyTorch's Python API: an `nn.Module`, the eager loop, `torch.optim`.
    Pytorch,
    /// Keras 3 on TensorFlow: a functional `keras.Model` trained with `model.fit`.
    Keras,
    /// The same Keras code on Keras's PyTorch backend (`KERAS_BACKEND=torch`).
    KerasTorch,
}

impl Framework {
    /// The backend's name in `--backends` and records.
    pub fn backend_name(self) -> &'static str {
        match self {
            Framework::Pytorch => "pytorch",
            Framework::Keras => "keras",
            Framework::KerasTorch => "keras-torch",
        }
    }

    /// The Python module that translates parallax's calls into the framework's API, its file
    /// name in tracebacks, and its module name.
    fn module(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Framework::Pytorch => (
                include_str!("python/pytorch.py"),
                "parallax/pytorch.py",
                "parallax_pytorch",
            ),
            Framework::Keras | Framework::KerasTorch => (
                include_str!("python/keras.py"),
                "parallax/keras.py",
                "parallax_keras",
            ),
        }
    }

    /// The keyword arguments of the module's `Framework`, besides threads and subnormals.
    fn options<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let options = PyDict::new(py);
        match self {
            Framework::Pytorch => {}
            // Keras reads its backend when first imported, so the module sets it before that.
            Framework::Keras => options.set_item("backend", "tensorflow")?,
            Framework::KerasTorch => options.set_item("backend", "torch")?,
        }
        Ok(options)
    }

    /// The framework as the report names it.
    fn label(self) -> &'static str {
        match self {
            Framework::Pytorch => "PyTorch",
            Framework::Keras | Framework::KerasTorch => "Keras",
        }
    }

    /// The conventions that the framework's public API cannot change.
    fn fixed(self) -> Vec<Topic> {
        // torch.optim has no Keras Adam, Keras no PyTorch Adam; nn.BatchNorm has no biased
        // running variance, Keras's BatchNormalization no unbiased one. Replacing the
        // framework's own optimizer or layer would defeat the measurement.
        vec![Topic::OptimizerFormulation, Topic::BatchNormRunningVariance]
    }
}

/// What the framework reports about itself, read once when the backend starts.
#[derive(Clone, Debug)]
struct Reported {
    /// What Keras's `compile(jit_compile="auto")` resolved to; `None` for PyTorch's eager loop.
    jit_compile: Option<bool>,
    version: String,
    engine_version: String,
    threads: usize,
    interop_threads: usize,
    flush_denormals: bool,
    adam_epsilon: f64,
    adam_foreach: String,
    batch_norm_momentum: f64,
    batch_norm_epsilon: f64,
}

/// The backend the registry calls `name`, on `device` with `cpu`'s threads: the one
/// constructor the worker's registry-generated table calls for every backend of this adapter.
pub fn backend_named(name: &str, device: Device, cpu: CpuSettings) -> Result<Box<dyn Backend>> {
    let framework = [Framework::Pytorch, Framework::Keras, Framework::KerasTorch]
        .into_iter()
        .find(|framework| framework.backend_name() == name)
        .ok_or_else(|| {
            Error::InvalidArgument(format!("{name:?} is not a backend of parallax-python"))
        })?;
    Ok(Box::new(PythonBackend::new(framework, device, cpu)?))
}

/// A framework in the embedded interpreter, on one device with a fixed number of threads.
pub struct PythonBackend {
    framework: Framework,
    device: Device,
    /// The module's `Framework` object, set to the run's threads and subnormal policy.
    handle: Py<PyAny>,
    reported: Reported,
    /// The seed of the framework's own draws, applied right before the next model is built,
    /// in the same call, so that nothing draws in between.
    seed: Mutex<Option<u64>>,
}

impl std::fmt::Debug for PythonBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonBackend")
            .field("framework", &self.framework)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Two matrices in the framework, multiplied by its own matrix product.
struct Matmul {
    backend: &'static str,
    probe: Py<PyAny>,
}

impl MatmulProbe for Matmul {
    fn multiply(&mut self) -> Result<f64> {
        interpreter::attach(|py| {
            self.probe
                .bind(py)
                .call_method0("multiply")
                .and_then(|sum| sum.extract::<f64>())
                .or_python(self.backend, py)
        })
    }
}

impl PythonBackend {
    /// `framework` on `device`, with the comparison's CPU settings, set through the framework's
    /// own API (`torch.set_num_threads`, `set_num_interop_threads`, `set_flush_denormal`;
    /// TensorFlow's intra- and inter-op pools) before it computes anything.
    ///
    /// Fails with one [`Error::Engine`] line saying what to do when the frameworks are not
    /// provisioned (or this process holds TensorFlow's C library, beside which CPython
    /// crashes), and with [`Error::Device`] for a device this backend cannot use (the Python
    /// backends run on the CPU).
    pub fn new(framework: Framework, device: Device, cpu: CpuSettings) -> Result<Self> {
        let name = framework.backend_name();
        if device != Device::Cpu {
            return Err(Error::device(
                name,
                device,
                "the Python backends run on the CPU only; use --device cpu",
            ));
        }
        interpreter::start(name)?;
        interpreter::attach(|py| {
            let (source, file, module_name) = framework.module();
            let module =
                interpreter::load_module(py, source, file, module_name).or_python(name, py)?;
            let handle = module
                .getattr("Framework")
                .and_then(|class| {
                    class.call(
                        (cpu.threads.max(1), cpu.flush_denormals),
                        Some(&framework.options(py)?),
                    )
                })
                .or_python(name, py)?;
            let info = handle.call_method0("info").or_python(name, py)?;
            let read = |key: &str| info.get_item(key).or_python(name, py);
            let reported = Reported {
                jit_compile: read("jit_compile")?.extract().or_python(name, py)?,
                version: read("framework_version")?.extract().or_python(name, py)?,
                engine_version: read("engine_version")?.extract().or_python(name, py)?,
                threads: read("threads")?.extract().or_python(name, py)?,
                interop_threads: read("interop_threads")?.extract().or_python(name, py)?,
                flush_denormals: read("flush_denormals")?.extract().or_python(name, py)?,
                adam_epsilon: read("adam_epsilon")?.extract().or_python(name, py)?,
                adam_foreach: read("adam_foreach")?.str().or_python(name, py)?.to_string(),
                batch_norm_momentum: read("batch_norm_momentum")?.extract().or_python(name, py)?,
                batch_norm_epsilon: read("batch_norm_epsilon")?.extract().or_python(name, py)?,
            };
            Ok(PythonBackend {
                framework,
                device,
                handle: handle.unbind(),
                reported,
                seed: Mutex::new(None),
            })
        })
    }

    /// The framework this backend runs.
    pub fn framework(&self) -> Framework {
        self.framework
    }

    fn name(&self) -> &'static str {
        self.framework.backend_name()
    }

    /// What the framework does by default on each topic of the fairness ledger, and what
    /// parallax does, with the values the framework reported.
    fn ledger(&self) -> Ledger {
        match self.framework {
            Framework::Pytorch => self.pytorch_ledger(),
            Framework::Keras | Framework::KerasTorch => self.keras_ledger(),
        }
    }

    fn pytorch_ledger(&self) -> Ledger {
        let reported = &self.reported;
        Ledger::from_fn(|topic| {
            match topic {
            Topic::Initialisation => "nn.Linear/nn.Conv2d reset_parameters: kaiming_uniform(a=√5), a ±1/√fan_in bound (used with --defaults native); otherwise the canonical weights are copied in".into(),
            Topic::OptimizerEpsilon => format!("torch.optim.Adam ε = {:e} (read from Adam(...).defaults); parallax passes the run's ε", reported.adam_epsilon),
            Topic::OptimizerFormulation => format!("torch.optim.Adam and SGD (dampening 0) as a user calls them, foreach={} (the per-tensor loop on the CPU); Keras's Adam form: native (not settable in PyTorch)", reported.adam_foreach),
            Topic::BatchNormMomentum => format!("nn.BatchNorm momentum {} (the new batch's weight, read from a fresh layer); parallax passes the spec's", reported.batch_norm_momentum),
            Topic::BatchNormEpsilon => format!("nn.BatchNorm ε {:e} (read from a fresh layer); parallax passes the spec's", reported.batch_norm_epsilon),
            Topic::BatchNormRunningVariance => "nn.BatchNorm updates the running variance with the unbiased batch variance: native (not settable in PyTorch)".into(),
            Topic::Padding => "symmetric padding in nn.Conv2d/nn.MaxPool2d; asymmetric padding as an explicit F.pad first: zeros, or −∞ for max pooling".into(),
            Topic::Layout => "NCHW-contiguous tensors, PyTorch's default: weights cross unchanged".into(),
            Topic::Subnormals => "PyTorch keeps subnormal floats unless torch.set_flush_denormal(True); parallax sets the run's policy through it".into(),
            Topic::Threads => format!(
                "torch.set_num_threads({}) and set_num_interop_threads({}) before any work, as reported by torch.get_num_threads/get_num_interop_threads",
                reported.threads, reported.interop_threads
            ),
            Topic::Loss => "F.cross_entropy with mean reduction, as nn.CrossEntropyLoss".into(),
        }
        })
    }

    fn keras_ledger(&self) -> Ledger {
        let reported = &self.reported;
        let engine = match self.framework {
            Framework::KerasTorch => format!("PyTorch {}", reported.engine_version),
            _ => format!("TensorFlow {}", reported.engine_version),
        };
        let threads = match self.framework {
            Framework::KerasTorch => "torch.set_num_threads and set_num_interop_threads",
            _ => "tf.config.threading's intra- and inter-op pools",
        };
        Ledger::from_fn(|topic| {
            match topic {
            Topic::Initialisation => "Dense/Conv2D glorot_uniform kernels and zero biases (used with --defaults native); otherwise the canonical weights are assigned".into(),
            Topic::OptimizerEpsilon => format!("keras.optimizers.Adam ε = {:e} (read from a fresh Adam); parallax passes the run's ε", reported.adam_epsilon),
            Topic::OptimizerFormulation => format!(
                "keras.optimizers.Adam and SGD, compiled into model.fit with jit_compile=\"auto\", which resolved to {} here ({}); Adam adds ε to the uncorrected root (Keras's form), and PyTorch's form is native (not settable in Keras)",
                reported.jit_compile.unwrap_or(false),
                if reported.jit_compile == Some(true) { "XLA compiles the step" } else { "no XLA" }
            ),
            Topic::BatchNormMomentum => format!("BatchNormalization momentum {} (the old running value's weight, read from a fresh layer), i.e. {} in parallax's convention; parallax passes 1 − the spec's", 1.0 - reported.batch_norm_momentum, reported.batch_norm_momentum),
            Topic::BatchNormEpsilon => format!("BatchNormalization ε {:e} (read from a fresh layer); parallax passes the spec's", reported.batch_norm_epsilon),
            Topic::BatchNormRunningVariance => "BatchNormalization updates the running variance with the biased batch variance: native (not settable in Keras)".into(),
            Topic::Padding => "'valid' and 'same' (TensorFlow's SAME, the extra cell after) in the layers; other convolution padding as ZeroPadding2D first; other pooling padding cannot be expressed (an error naming the layer)".into(),
            Topic::Layout => "NHWC (channels_last, Keras's default): images are transposed once per call or epoch, kernels OIHW→HWIO and dense kernels transposed at the boundary, and a dense kernel fed by a flattened image has its rows permuted from C,H,W to H,W,C".into(),
            Topic::Subnormals => format!("{engine}: subnormal floats as its threads handle them (TensorFlow's always flush; torch's follow torch.set_flush_denormal, which parallax sets); in effect: flushed = {}", reported.flush_denormals),
            Topic::Threads => format!(
                "{threads}: {} intra-op, {} inter-op, set before any work, as the engine reports them",
                reported.threads, reported.interop_threads
            ),
            Topic::Loss => "SparseCategoricalCrossentropy(from_logits=True), mean over the batch".into(),
        }
        })
    }
}

impl Backend for PythonBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: self.name().into(),
            framework: self.framework.label().into(),
            framework_version: match self.framework {
                Framework::Pytorch => self.reported.version.clone(),
                Framework::Keras | Framework::KerasTorch => format!(
                    "{} on {} {}",
                    self.reported.version,
                    match self.framework {
                        Framework::KerasTorch => "PyTorch",
                        _ => "TensorFlow",
                    },
                    self.reported.engine_version
                ),
            },
            device: self.device,
            threads: self.reported.threads,
            flush_denormals: self.reported.flush_denormals,
            ledger: self.ledger(),
            native_defaults: NativeDefaults {
                adam_epsilon: self.reported.adam_epsilon,
                adam_formulation: match self.framework {
                    Framework::Pytorch => AdamFormulation::Pytorch,
                    Framework::Keras | Framework::KerasTorch => AdamFormulation::Keras,
                },
                batch_norm_momentum: self.reported.batch_norm_momentum,
                batch_norm_epsilon: self.reported.batch_norm_epsilon,
                running_variance: match self.framework {
                    Framework::Pytorch => VarianceEstimator::Unbiased,
                    Framework::Keras | Framework::KerasTorch => VarianceEstimator::Biased,
                },
            },
            fixed: self.framework.fixed(),
            // bf16 through the framework's own mechanism (autocast, the mixed_bfloat16 policy),
            // and its own compiler (torch.compile, XLA).
            precisions: Precision::ALL.to_vec(),
            compiles: true,
            precision_note: None,
        }
    }

    fn seed(&self, seed: u64) {
        *self
            .seed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(seed);
    }

    fn matmul_probe(
        &self,
        left: ArrayView2<'_, f32>,
        right: ArrayView2<'_, f32>,
        precision: Precision,
    ) -> Result<Box<dyn MatmulProbe>> {
        let name = self.name();
        interpreter::attach(|py| {
            let probe = self
                .handle
                .bind(py)
                .call_method1(
                    "matmul_probe",
                    (
                        PyArray2::from_array(py, &left),
                        PyArray2::from_array(py, &right),
                        precision.to_string(),
                    ),
                )
                .or_python(name, py)?;
            Ok(Box::new(Matmul {
                backend: name,
                probe: probe.unbind(),
            }) as Box<dyn MatmulProbe>)
        })
    }

    fn create(
        &self,
        model: &ResolvedModel,
        weights: Option<Checked<&Weights>>,
        execution: Execution,
    ) -> Result<Box<dyn Model>> {
        let name = self.name();
        interpreter::attach(|py| {
            let layers = layer_dicts(py, model).or_python(name, py)?;
            let weights = weights
                .map(|weights| weights_dict(py, &weights))
                .transpose()
                .or_python(name, py)?;
            let framework = self.handle.bind(py);
            let seed = *self
                .seed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(seed) = seed {
                framework
                    .call_method1("seed", (seed,))
                    .or_python(name, py)?;
            }
            let handle = framework
                .call_method1(
                    "create",
                    (
                        layers,
                        weights,
                        model.input(),
                        execution.precision.to_string(),
                        execution.compile == Compile::On,
                    ),
                )
                .or_python(name, py)?;
            Ok(Box::new(PythonModel::new(name, handle.unbind(), model)) as Box<dyn Model>)
        })
    }
}

//! The TensorFlow backend: the session's thread pools and device, subnormals, and what
//! TensorFlow and Keras do by default (the fairness ledger).

use std::cell::Cell;

use ndarray::ArrayView2;
use parallax_core::backend::MatmulProbe;
use parallax_core::denormals;
use parallax_core::optim::AdamFormulation;
use parallax_core::spec::ResolvedModel;
use parallax_core::{
    Backend, BackendInfo, Checked, Compile, CpuSettings, Device, Error, Ledger, Model,
    NativeDefaults, Precision, Result, Topic, VarianceEstimator, Weights,
};
use tensorflow::{
    DataType, Graph, Operation, Output, Scope, Session, SessionOptions, SessionRunArgs, Shape,
    Tensor, ops,
};

use crate::model::TfModel;
use crate::net::Net;
use crate::{OrEngine, engine_error};

/// The backend's name in `--backends` and in records.
pub const BACKEND_NAME: &str = "tf";

/// The TensorFlow release whose C library this crate is provisioned with.
pub const TENSORFLOW_VERSION: &str = "2.21.0";

/// The backend the registry calls `name`, on `device` with `cpu`'s threads: the one
/// constructor the worker's registry-generated table calls for every backend of this adapter.
pub fn backend_named(name: &str, device: Device, cpu: CpuSettings) -> Result<Box<dyn Backend>> {
    if name != BACKEND_NAME {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is not a backend of parallax-tf"
        )));
    }
    Ok(Box::new(TfBackend::new(device, cpu)?))
}

/// TensorFlow on one device with fixed thread pools.
#[derive(Clone, Debug)]
pub struct TfBackend {
    device: Device,
    /// TensorFlow's name for the device (`/device:CPU:0`, `/device:GPU:N`).
    device_name: String,
    threads: usize,
    inter_op_threads: usize,
    flush_denormals: bool,
    version: String,
    /// The op-level seed of the engine's own initial draws, set by [`Backend::seed`].
    seed: Cell<i64>,
}

/// The environment variable from which TensorFlow reads XLA's flags, once per process.
pub const XLA_FLAGS_VARIABLE: &str = "TF_XLA_FLAGS";

/// The flag without which TensorFlow's auto-clustering leaves CPU operations to their own
/// kernels whatever the session's JIT level: a worker that may run `--compile on` starts with
/// it in [`XLA_FLAGS_VARIABLE`] (the registry's row says so, and `compare` sets it).
pub const XLA_CPU_FLAG: &str = "--tf_xla_cpu_global_jit";

/// Whether this process started with [`XLA_CPU_FLAG`] among TensorFlow's XLA flags.
fn xla_cpu_flag_is_set() -> bool {
    std::env::var(XLA_FLAGS_VARIABLE)
        .is_ok_and(|flags| flags.split_whitespace().any(|flag| flag == XLA_CPU_FLAG))
}

/// The session configuration: a serialised `tensorflow.ConfigProto` with the thread counts and,
/// with `xla`, XLA auto-clustering.
///
/// The tensorflow crate keeps its generated protobuf types private, and a message this small
/// is easier to write than a protobuf dependency: an integer field is a tag byte
/// (`field << 3`, wire type 0) and a varint, a message field a tag byte (`field << 3 | 2`),
/// its length and its bytes, per the protobuf encoding.
fn session_config(intra_op: usize, inter_op: usize, xla: bool) -> Vec<u8> {
    // Field numbers from tensorflow/core/protobuf/config.proto.
    const INTRA_OP_PARALLELISM_THREADS: u8 = 2;
    const INTER_OP_PARALLELISM_THREADS: u8 = 5;
    const GRAPH_OPTIONS: u8 = 10;
    // GraphOptions.optimizer_options, and in it OptimizerOptions.global_jit_level = ON_1.
    const OPTIMIZER_OPTIONS: u8 = 3;
    const GLOBAL_JIT_LEVEL: u8 = 5;
    const ON_1: u8 = 1;
    let mut bytes = Vec::new();
    for (field, value) in [
        (INTRA_OP_PARALLELISM_THREADS, intra_op),
        (INTER_OP_PARALLELISM_THREADS, inter_op),
    ] {
        bytes.push(field << 3);
        let mut value = value as u64;
        loop {
            let low = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                bytes.push(low);
                break;
            }
            bytes.push(low | 0x80);
        }
    }
    if xla {
        let jit_level = [GLOBAL_JIT_LEVEL << 3, ON_1];
        let optimizer_options = [&[OPTIMIZER_OPTIONS << 3 | 2, 2][..], &jit_level].concat();
        bytes.extend([GRAPH_OPTIONS << 3 | 2, optimizer_options.len() as u8]);
        bytes.extend(optimizer_options);
    }
    bytes
}

/// A device error of this backend.
fn device_error(device: Device, reason: impl Into<String>) -> Error {
    Error::device(BACKEND_NAME, device, reason)
}

impl TfBackend {
    /// TensorFlow on `device`, with the comparison's CPU settings.
    ///
    /// Both of TensorFlow's thread pools get `cpu.threads` threads: the intra-op pool that
    /// splits one kernel and the inter-op pool that runs independent kernels side by side.
    /// TensorFlow creates its CPU pools once per process, sized by the first session, so every
    /// backend of one process should use the same count (the runner makes one).
    ///
    /// TensorFlow flushes subnormal floats on its own threads whatever the caller asks;
    /// [`BackendInfo::flush_denormals`] reports what a computation on them shows.
    pub fn new(device: Device, cpu: CpuSettings) -> Result<Self> {
        let threads = cpu.threads.max(1);
        let mut backend = TfBackend {
            device,
            device_name: match device {
                Device::Cpu => "/device:CPU:0".into(),
                Device::Cuda(index) => format!("/device:GPU:{index}"),
            },
            threads,
            inter_op_threads: threads,
            flush_denormals: true,
            version: tensorflow::version().map_err(engine_error)?,
            seed: Cell::new(0),
        };
        denormals::flush_denormals_on_this_thread(cpu.flush_denormals);
        if let Device::Cuda(index) = device {
            let gpus = backend.visible_gpus()?;
            if index >= gpus {
                return Err(device_error(
                    device,
                    format!(
                        "TensorFlow sees {gpus} GPU(s), so /device:GPU:{index} does not exist (the provisioned tensorflow-cpu build has none): use --device cpu"
                    ),
                ));
            }
        }
        backend.flush_denormals = backend.flushes_denormals()?;
        Ok(backend)
    }

    fn session_options(&self) -> Result<SessionOptions> {
        self.session_options_with(Compile::Off)
    }

    /// The session's options, with XLA auto-clustering when `compile` is on.
    fn session_options_with(&self, compile: Compile) -> Result<SessionOptions> {
        let mut options = SessionOptions::new();
        options
            .set_config(&session_config(
                self.threads,
                self.inter_op_threads,
                compile == Compile::On,
            ))
            .or_engine()?;
        Ok(options)
    }

    /// The GPUs a session of this process can place operations on.
    fn visible_gpus(&self) -> Result<usize> {
        let session = Session::new(&self.session_options()?, &Graph::new()).or_engine()?;
        let devices = session.device_list().or_engine()?;
        Ok(devices
            .iter()
            .filter(|device| device.device_type == "GPU")
            .count())
    }

    /// Whether TensorFlow's threads flush subnormals, found by computing: the product of two
    /// small normal floats whose exact value is subnormal is zero only where flush-to-zero is
    /// on. The operands are fed rather than constant, so that no graph optimisation folds the
    /// product on the calling thread.
    fn flushes_denormals(&self) -> Result<bool> {
        let probe = || -> std::result::Result<bool, tensorflow::Status> {
            let mut scope = tensorflow::Scope::new_root_scope().with_device(&self.device_name);
            let x = ops::Placeholder::new()
                .dtype(DataType::Float)
                .shape(Shape::from(Some(vec![None])))
                .build(&mut scope)?;
            let product = ops::mul(x.clone(), x.clone(), &mut scope)?;
            let session = Session::new(
                &self.session_options().map_err(|error| {
                    tensorflow::Status::new_set_lossy(
                        tensorflow::Code::Internal,
                        &error.to_string(),
                    )
                })?,
                &scope.graph(),
            )?;
            let small = Tensor::new(&[1 << 16]).with_values(&vec![1e-20f32; 1 << 16])?;
            let mut args = SessionRunArgs::new();
            args.add_feed(&x, 0, &small);
            let token = args.request_fetch(&product, 0);
            session.run(&mut args)?;
            let values: Tensor<f32> = args.fetch(token)?;
            Ok(values.iter().all(|&value| value == 0.0))
        };
        probe().or_engine()
    }
}

/// Two matrices held in variables on TensorFlow's device and the sum of their `MatMul`
/// (Eigen's or oneDNN's contraction on the CPU, cuBLAS on a GPU), in a graph of its own: the
/// probe behind the machine's peak. Variables, not constants, so that no graph optimisation
/// folds the product away, and not feeds, so that no run copies the operands.
struct Matmul {
    session: Session,
    sum: Operation,
}

impl MatmulProbe for Matmul {
    fn multiply(&mut self) -> Result<f64> {
        let mut args = SessionRunArgs::new();
        let token = args.request_fetch(&self.sum, 0);
        self.session.run(&mut args).or_engine()?;
        let sum: Tensor<f32> = args.fetch(token).or_engine()?;
        Ok(f64::from(sum[0]))
    }
}

/// A host matrix as a TensorFlow tensor.
fn matrix_to_tensor(
    matrix: ArrayView2<'_, f32>,
) -> std::result::Result<Tensor<f32>, tensorflow::Status> {
    let values: Vec<f32> = matrix.iter().copied().collect();
    Tensor::new(&[matrix.nrows() as u64, matrix.ncols() as u64]).with_values(&values)
}

/// A variable of `value`'s shape, and the feed and assignment that set it.
fn matrix_variable(
    scope: &mut Scope,
    name: &str,
    value: &Tensor<f32>,
) -> std::result::Result<(Output, Operation, Operation), tensorflow::Status> {
    let shape = Shape::from(Some(
        value
            .dims()
            .iter()
            .map(|&d| Some(d as i64))
            .collect::<Vec<_>>(),
    ));
    let variable: Output = ops::VariableV2::new()
        .dtype(DataType::Float)
        .shape(shape.clone())
        .build(&mut scope.with_op_name(name))?
        .into();
    let feed = ops::Placeholder::new()
        .dtype(DataType::Float)
        .shape(shape)
        .build(&mut scope.with_op_name(&format!("{name}/feed")))?;
    let assign = ops::assign(variable.clone(), feed.clone(), scope)?;
    Ok((variable, feed, assign))
}

impl TfBackend {
    /// A session on this backend's device and threads that holds `left` and `right` and sums
    /// their product.
    fn matmul_session(
        &self,
        left: ArrayView2<'_, f32>,
        right: ArrayView2<'_, f32>,
        compute: DataType,
    ) -> std::result::Result<Matmul, tensorflow::Status> {
        let mut scope = Scope::new_root_scope().with_device(&self.device_name);
        let (left_value, right_value) = (matrix_to_tensor(left)?, matrix_to_tensor(right)?);
        let (left, left_feed, left_assign) = matrix_variable(&mut scope, "left", &left_value)?;
        let (right, right_feed, right_assign) = matrix_variable(&mut scope, "right", &right_value)?;
        // In bf16, the product of bf16 copies, summed in f32: the cast is part of what a bf16
        // layer does too.
        let (left, right): (Output, Output) = if compute == DataType::Float {
            (left.into(), right.into())
        } else {
            (
                ops::Cast::new()
                    .DstT(compute)
                    .build(left, &mut scope)?
                    .into(),
                ops::Cast::new()
                    .DstT(compute)
                    .build(right, &mut scope)?
                    .into(),
            )
        };
        let mut product: Output = ops::mat_mul(left, right, &mut scope)?.into();
        if compute != DataType::Float {
            product = ops::Cast::new()
                .DstT(DataType::Float)
                .build(product, &mut scope)?
                .into();
        }
        let axes = ops::constant(&[0i32, 1][..], &mut scope)?;
        let sum = ops::sum(product, axes, &mut scope)?;
        let options = self.session_options().map_err(|error| {
            tensorflow::Status::new_set_lossy(tensorflow::Code::Internal, &error.to_string())
        })?;
        let session = Session::new(&options, &scope.graph())?;
        let mut args = SessionRunArgs::new();
        args.add_feed(&left_feed, 0, &left_value);
        args.add_feed(&right_feed, 0, &right_value);
        args.add_target(&left_assign);
        args.add_target(&right_assign);
        session.run(&mut args)?;
        Ok(Matmul { session, sum })
    }
}

impl TfBackend {
    /// What TensorFlow and Keras do by default on each topic of the fairness ledger, and what
    /// parallax does.
    fn ledger(&self) -> Ledger {
        Ledger::from_fn(|topic| {
            match topic {
                Topic::Initialisation => "Keras: glorot_uniform kernels and zero biases (used with --defaults native)",
                Topic::OptimizerEpsilon => "Keras Adam ε = 1e-7; parallax passes the run's ε (PyTorch's 1e-8 by default, Keras's with adam-keras)",
                Topic::OptimizerFormulation => "Keras Adam adds ε to the uncorrected root (adam-keras), parallax's default is PyTorch's; Keras SGD keeps v = μv − lr·g, equivalent to PyTorch's rule for a constant learning rate, which parallax uses",
                Topic::BatchNormMomentum => "Keras momentum 0.99 (PyTorch's 0.01, the other convention); parallax uses the spec's, in PyTorch's convention, as FusedBatchNormV3's exponential_avg_factor",
                Topic::BatchNormEpsilon => "Keras ε 1e-3; parallax uses the spec's (PyTorch's 1e-5 by default)",
                Topic::BatchNormRunningVariance => "FusedBatchNormV3 updates the running variance with the unbiased batch variance, like PyTorch; Keras 3 computes batch norm from ops.moments, with the biased one (switched on by --defaults native)",
                Topic::Padding => "\"same\" is TensorFlow's own rule (the extra cell after), passed as SAME; other explicit padding is a Pad before a VALID op",
                Topic::Layout => "NHWC activations, dense kernels [in, out] and conv kernels HWIO: canonical weights are converted at the boundary, and a dense layer after a flattened image has its rows permuted",
                Topic::Subnormals => "TensorFlow flushes subnormal floats on its threads always; --keep-denormals does not change it",
                Topic::Threads => "intra-op and inter-op pools of the session's ConfigProto, both the run's thread count",
                Topic::Loss => "SoftmaxCrossEntropyWithLogits on one-hot labels (the sparse op has no C++ gradient), mean over the batch",
            }
            .to_string()
        })
    }
}

impl Backend for TfBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: BACKEND_NAME.into(),
            framework: "tensorflow".into(),
            framework_version: self.version.clone(),
            device: self.device,
            threads: self.threads,
            flush_denormals: self.flush_denormals,
            ledger: self.ledger(),
            // Keras 3's: Adam(epsilon=1e-7) in its own formulation, and
            // BatchNormalization(momentum=0.99, epsilon=1e-3) with the biased variance of
            // `ops.moments`.
            native_defaults: NativeDefaults {
                adam_epsilon: 1e-7,
                adam_formulation: AdamFormulation::Keras,
                batch_norm_momentum: 0.01,
                batch_norm_epsilon: 1e-3,
                running_variance: VarianceEstimator::Biased,
            },
            fixed: Vec::new(),
            // bf16 by casts in the graph, f32 variables; --compile on by XLA auto-clustering.
            precisions: Precision::ALL.to_vec(),
            compiles: true,
            precision_note: Some(
                "bf16 by casts in the graph: convolutions and dense products in bf16 from f32 variables, their outputs back to f32 for the other layers".into(),
            ),
        }
    }

    fn seed(&self, seed: u64) {
        // TensorFlow draws at random when both op-level seeds are 0; any other pair is
        // reproducible. The bits of the run's seed are what matter.
        self.seed.set(seed as i64);
    }

    fn matmul_probe(
        &self,
        left: ArrayView2<'_, f32>,
        right: ArrayView2<'_, f32>,
        precision: Precision,
    ) -> Result<Box<dyn MatmulProbe>> {
        Ok(Box::new(
            self.matmul_session(left, right, data_type(precision))
                .or_engine()?,
        ))
    }

    fn create(
        &self,
        model: &ResolvedModel,
        weights: Option<Checked<&Weights>>,
        execution: parallax_core::Execution,
    ) -> Result<Box<dyn Model>> {
        if execution.compile == Compile::On && !xla_cpu_flag_is_set() {
            return Err(Error::InvalidArgument(format!(
                "tf compiles with XLA only in a process started with {XLA_FLAGS_VARIABLE}={XLA_CPU_FLAG} in its environment (TensorFlow reads it once, when it loads): set it, or use --compile off"
            )));
        }
        let options = self.session_options_with(execution.compile)?;
        let seed = self.seed.get();
        let compute = match execution.precision {
            Precision::F32 => None,
            Precision::Bf16 => Some(data_type(Precision::Bf16)),
        };
        let net = Net::new(model, &self.device_name, &options, seed, compute).or_engine()?;
        let mut tf_model = TfModel::new(net);
        match weights {
            Some(weights) => tf_model.import_weights(weights)?,
            None => tf_model.initialise()?,
        }
        Ok(Box::new(tf_model))
    }
}

/// TensorFlow's type for a precision.
fn data_type(precision: Precision) -> DataType {
    match precision {
        Precision::F32 => DataType::Float,
        Precision::Bf16 => DataType::BFloat16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_config_encodes_both_thread_counts() {
        // intra_op_parallelism_threads (field 2) = 2, inter_op_parallelism_threads (field 5) = 300.
        assert_eq!(
            session_config(2, 300, false),
            vec![0x10, 2, 0x28, 0xac, 0x02]
        );
    }

    #[test]
    fn the_session_config_turns_on_xla_auto_clustering() {
        // graph_options (field 10, a message of 4 bytes) holding optimizer_options (field 3, 2
        // bytes) holding global_jit_level (field 5) = ON_1.
        assert_eq!(
            session_config(2, 2, true),
            vec![0x10, 2, 0x28, 2, 0x52, 4, 0x1a, 2, 0x28, 1]
        );
    }
}

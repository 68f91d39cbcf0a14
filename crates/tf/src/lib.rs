//! An implementation of `parallax-core`'s [`Backend`] trait for TensorFlow's C API, in graph mode, through the `tensorflow` crate.
//!
//! TensorFlow is the engine under Keras. Each model is one graph, built once from the resolved
//! spec in NHWC (TensorFlow's layout on the CPU) and run by one session: the evaluation pass at
//! build time, the training pass with `Graph::add_gradients` at the first step, one update
//! subgraph per optimizer configuration. Weights cross in the canonical PyTorch layout and are
//! converted at the boundary (`convert`). It links the TensorFlow 2.21 C library, which
//! `cargo xtask setup` provisions.
//!
//! ```no_run
//! use parallax_core::{Backend, CpuSettings, Device, spec::presets};
//! use parallax_tf::TfBackend;
//!
//! let backend = TfBackend::new(Device::Cpu, CpuSettings::new(2))?;
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

use ndarray::{Array2, ArrayView4};
use parallax_core::backend::{
    GradCam, check_input, check_labels, grad_cam_target, predict_in_batches,
};
use parallax_core::denormals;
use parallax_core::spec::ResolvedModel;
use parallax_core::{
    Backend, BackendInfo, Batch, CpuSettings, Dataset, Device, Error, Model, OptimizerConfig,
    Result, Weights,
};
use tensorflow::{DataType, Graph, Session, SessionOptions, SessionRunArgs, Shape, Tensor, ops};

use crate::convert::{
    OrEngine, array_to_tensor, engine_error, images_to_nhwc, labels_to_tensor, nhwc_to_images,
    tensor_to_array, tensor_to_logits,
};
use crate::net::Net;

/// The backend's name in `--backends` and in records.
pub const BACKEND_NAME: &str = "tf";

/// The TensorFlow release whose C library this crate is provisioned with.
pub const TENSORFLOW_VERSION: &str = "2.21.0";

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
}

/// The session configuration: a serialised `tensorflow.ConfigProto` with the thread counts.
///
/// The tensorflow crate keeps its generated protobuf types private, and a message of three
/// integers is easier to write than a protobuf dependency: each field is a tag byte
/// (`field << 3`, wire type 0) and a varint, per the protobuf encoding.
fn session_config(intra_op: usize, inter_op: usize) -> Vec<u8> {
    // Field numbers from tensorflow/core/protobuf/config.proto.
    const INTRA_OP_PARALLELISM_THREADS: u8 = 2;
    const INTER_OP_PARALLELISM_THREADS: u8 = 5;
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
        let mut options = SessionOptions::new();
        options
            .set_config(&session_config(self.threads, self.inter_op_threads))
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

impl Backend for TfBackend {
    fn info(&self) -> BackendInfo {
        let defaults: BTreeMap<String, String> = [
            (
                "layout",
                "NHWC activations, dense kernels [in, out] and conv kernels HWIO: canonical weights are converted at the boundary, and a dense layer after a flattened image has its rows permuted",
            ),
            (
                "init",
                "Keras: glorot_uniform kernels and zero biases (used with --init native)",
            ),
            (
                "adam",
                "Keras Adam ε = 1e-7 added to the uncorrected root (adam-keras); parallax's default is PyTorch's formulation with the run's ε",
            ),
            (
                "sgd_momentum",
                "Keras SGD keeps v = μv − lr·g, equivalent to PyTorch's rule for a constant learning rate; parallax uses PyTorch's",
            ),
            (
                "batch_norm",
                "Keras momentum 0.99 (PyTorch's 0.01) and ε 1e-3; parallax uses the spec's; FusedBatchNormV3 updates the running variance with the unbiased batch variance",
            ),
            (
                "threads",
                "intra-op and inter-op pools of the session's ConfigProto, both the run's thread count",
            ),
            (
                "denormals",
                "TensorFlow flushes subnormal floats on its threads always; --keep-denormals does not change it",
            ),
            (
                "loss",
                "SoftmaxCrossEntropyWithLogits on one-hot labels (the sparse op has no C++ gradient)",
            ),
            (
                "padding",
                "\"same\" is TensorFlow's own rule (extra cell after); other explicit padding is a Pad before a VALID op",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        BackendInfo {
            backend: BACKEND_NAME.into(),
            framework: "tensorflow".into(),
            framework_version: self.version.clone(),
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

impl TfBackend {
    /// [`Backend::build`] with the concrete type, for callers that want TensorFlow's own
    /// diagnostics ([`TfModel::operation_count`]).
    pub fn build_model(&self, model: &ResolvedModel, weights: Option<&Weights>) -> Result<TfModel> {
        let options = self.session_options()?;
        let net = Net::new(model, &self.device_name, &options).or_engine()?;
        let mut tf_model = TfModel {
            net,
            optimizer: None,
        };
        match weights {
            Some(weights) => tf_model.import_weights(weights)?,
            None => tf_model.initialise()?,
        }
        Ok(tf_model)
    }
}

/// A spec's graph on TensorFlow, with its session and optimizer state.
pub struct TfModel {
    net: Net,
    /// The configuration whose state the graph's optimizer slots hold.
    optimizer: Option<OptimizerConfig>,
}

impl TfModel {
    /// Runs every variable's Keras default initialiser.
    fn initialise(&mut self) -> Result<()> {
        let mut args = SessionRunArgs::new();
        for param in &self.net.params {
            args.add_target(&param.init);
        }
        self.net.session.run(&mut args).or_engine()
    }

    /// Logits in evaluation mode.
    fn predict_nhwc(&self, images: ArrayView4<f32>) -> Result<Array2<f32>> {
        let input = images_to_nhwc(images);
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.net.images, 0, &input);
        let token = args.request_fetch(&self.net.eval.logits.operation, self.net.eval.logits.index);
        self.net.session.run(&mut args).or_engine()?;
        let logits: Tensor<f32> = args.fetch(token).or_engine()?;
        tensor_to_logits(&logits)
    }

    /// The number of operations in the model's graph: it stays the same from step to step.
    pub fn operation_count(&self) -> usize {
        self.net.operation_count()
    }
}

impl Model for TfModel {
    fn import_weights(&mut self, weights: &Weights) -> Result<()> {
        weights.check(&self.net.model)?;
        let mut feeds = Vec::with_capacity(self.net.params.len());
        for param in &self.net.params {
            let array = weights.require(&param.info.name)?;
            if array.shape() != param.info.shape.as_slice() {
                return Err(Error::Weights(format!(
                    "tensor {:?} has shape {:?}, expected {:?}",
                    param.info.name,
                    array.shape(),
                    param.info.shape
                )));
            }
            feeds.push(array_to_tensor(&param.layout.to_tf(array)?)?);
        }
        let mut args = SessionRunArgs::new();
        for (param, feed) in self.net.params.iter().zip(&feeds) {
            args.add_feed(&param.feed, 0, feed);
            args.add_target(&param.assign);
        }
        self.net.session.run(&mut args).or_engine()?;
        // The optimizer's state belongs to the old parameters.
        self.optimizer = None;
        Ok(())
    }

    fn export_weights(&self) -> Result<Weights> {
        let mut args = SessionRunArgs::new();
        let tokens: Vec<_> = self
            .net
            .params
            .iter()
            .map(|param| args.request_fetch(&param.variable.operation, param.variable.index))
            .collect();
        self.net.session.run(&mut args).or_engine()?;
        let mut weights = Weights::new();
        for (param, token) in self.net.params.iter().zip(tokens) {
            let tensor: Tensor<f32> = args.fetch(token).or_engine()?;
            let array = tensor_to_array(&tensor)?;
            weights.insert(
                param.info.name.clone(),
                param.layout.to_canonical(&array, &param.info.shape)?,
            );
        }
        Ok(weights)
    }

    fn train_step(&mut self, batch: &Batch, optimizer: &OptimizerConfig) -> Result<f32> {
        check_input(&self.net.model, batch.images.view())?;
        let labels = batch.labels.to_vec();
        check_labels(&self.net.model, &labels, batch.images.dim().0)?;
        let fresh = self.optimizer.as_ref() != Some(optimizer);
        let (step, reset) = {
            let ops = self.net.optimizer(optimizer).or_engine()?;
            (ops.step.clone(), ops.reset.clone())
        };
        if fresh {
            let mut args = SessionRunArgs::new();
            args.add_target(&reset);
            self.net.session.run(&mut args).or_engine()?;
            self.optimizer = Some(*optimizer);
        }
        let loss = self.net.training().or_engine()?.loss.clone();
        let images = images_to_nhwc(batch.images.view());
        let labels = labels_to_tensor(&labels)?;
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.net.images, 0, &images);
        args.add_feed(&self.net.labels, 0, &labels);
        args.add_target(&step);
        let token = args.request_fetch(&loss.operation, loss.index);
        self.net.session.run(&mut args).or_engine()?;
        let loss: Tensor<f32> = args.fetch(token).or_engine()?;
        loss.first()
            .copied()
            .ok_or_else(|| engine_error("the loss came back empty"))
    }

    fn predict(&mut self, images: ArrayView4<f32>) -> Result<Array2<f32>> {
        check_input(&self.net.model, images)?;
        self.predict_nhwc(images)
    }

    fn predict_dataset(&mut self, data: &Dataset, batch_size: usize) -> Result<Array2<f32>> {
        predict_in_batches(data, batch_size, |images| {
            check_input(&self.net.model, images)?;
            self.predict_nhwc(images)
        })
    }

    fn grad_cam(
        &mut self,
        images: ArrayView4<f32>,
        layer: &str,
        classes: &[u32],
    ) -> Result<GradCam> {
        let index = grad_cam_target(&self.net.model, BACKEND_NAME, images, layer, classes)?;
        let (activations, gradient) = self.net.grad_cam_gradient(index).or_engine()?;
        let input = images_to_nhwc(images);
        let targets = labels_to_tensor(classes)?;
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.net.images, 0, &input);
        args.add_feed(&self.net.labels, 0, &targets);
        let activations_token = args.request_fetch(&activations.operation, activations.index);
        let gradient_token = args.request_fetch(&gradient.operation, gradient.index);
        self.net.session.run(&mut args).or_engine()?;
        let activations: Tensor<f32> = args.fetch(activations_token).or_engine()?;
        let gradients: Tensor<f32> = args.fetch(gradient_token).or_engine()?;
        Ok(GradCam {
            activations: nhwc_to_images(&activations)?,
            gradients: nhwc_to_images(&gradients)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_config_encodes_both_thread_counts() {
        // intra_op_parallelism_threads (field 2) = 2, inter_op_parallelism_threads (field 5) = 300.
        assert_eq!(session_config(2, 300), vec![0x10, 2, 0x28, 0xac, 0x02]);
    }
}

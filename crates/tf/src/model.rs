//! [`TfModel`]: the `Model` hooks on a TensorFlow graph, with its session and optimizer state.

use std::time::Instant;

use ndarray::{Array2, ArrayView4};
use parallax_core::roofline::{LayerTime, time_layer};
use parallax_core::spec::Op;
use parallax_core::{
    Batch, Checked, GradCam, GradCamTarget, Model, OptimizerConfig, Precision, Result, TracedStep,
    Weights,
};
use tensorflow::{DataType, SessionRunArgs, Tensor};

use crate::convert::{
    array_to_tensor, images_to_nhwc, labels_to_tensor, nhwc_to_images, tensor_to_array,
    tensor_to_logits,
};
use crate::net::Net;
use crate::{OrEngine, engine_error};

/// A serialised `tensorflow.RunOptions` asking for the full trace: field 1 (`trace_level`),
/// varint 3 (`FULL_TRACE`), as `session_config` encodes its fields.
const FULL_TRACE: [u8; 2] = [0x08, 3];

/// The operation that runs an XLA-compiled cluster, as a trace names it.
const XLA_RUN: &[u8] = b"_XlaRun";

/// A spec's graph on TensorFlow, with its session and optimizer state.
pub struct TfModel {
    net: Net,
    /// The configuration whose state the graph's optimizer slots hold.
    optimizer: Option<OptimizerConfig>,
}

impl TfModel {
    pub(crate) fn new(net: Net) -> Self {
        TfModel {
            net,
            optimizer: None,
        }
    }

    /// Runs every variable's Keras default initialiser.
    pub(crate) fn initialise(&mut self) -> Result<()> {
        let mut args = SessionRunArgs::new();
        for param in &self.net.params {
            args.add_target(&param.init);
        }
        self.net.session.run(&mut args).or_engine()
    }

    /// One training step; with `trace`, TensorFlow's full trace of it (a serialised
    /// `RunMetadata`) as well.
    fn run_step(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
        trace: bool,
    ) -> Result<(f32, Option<Vec<u8>>)> {
        let labels = batch.labels.to_vec();
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
        if trace {
            args.set_run_options(&FULL_TRACE);
            args.set_request_metadata(true);
        }
        let token = args.request_fetch(&loss.operation, loss.index);
        self.net.session.run(&mut args).or_engine()?;
        let loss: Tensor<f32> = args.fetch(token).or_engine()?;
        let loss = loss
            .first()
            .copied()
            .ok_or_else(|| engine_error("the loss came back empty"))?;
        Ok((loss, args.get_metadata().map(<[u8]>::to_vec)))
    }

    /// [`Model::layer_times`] on TensorFlow: each layer's own subgraph ([`crate::net::LayerProbe`])
    /// run by the session, its forward pass fed the layer's input; its backward pass fed the
    /// input and the forward pass's output as well, so that TensorFlow runs the gradient's
    /// operations and, of the forward ones, only what they read that the feeds do not give (a
    /// fused batch norm's saved statistics).
    fn time_layers(&mut self, images: ArrayView4<'_, f32>) -> Result<Vec<LayerTime>> {
        let layers = self.net.model.layers.len();
        // Every layer's input, computed by the evaluation pass outside the timing.
        let images = images_to_nhwc(images);
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.net.images, 0, &images);
        let tokens: Vec<_> = self.net.eval.outputs[..layers.saturating_sub(1)]
            .iter()
            .map(|(output, _)| args.request_fetch(&output.operation, output.index))
            .collect();
        self.net.session.run(&mut args).or_engine()?;
        let mut inputs: Vec<Tensor<f32>> = Vec::with_capacity(layers);
        for token in tokens {
            inputs.push(args.fetch(token).or_engine()?);
        }
        drop(args);
        inputs.insert(0, images);
        let mut upstream = false;
        let mut times = Vec::with_capacity(layers);
        for (index, input) in inputs.iter().enumerate() {
            let has_parameters = matches!(self.net.model.layers[index].op, Op::Param(_));
            let probe = self.net.layer_probe(index, upstream).or_engine()?.clone();
            times.push(time_layer(|| {
                let mut args = SessionRunArgs::new();
                args.add_feed(&probe.input, 0, input);
                let token = args.request_fetch(&probe.output.operation, probe.output.index);
                let start = Instant::now();
                self.net.session.run(&mut args).or_engine()?;
                let forward_seconds = start.elapsed().as_secs_f64();
                let output: Tensor<f32> = args.fetch(token).or_engine()?;
                let mut backward_seconds = 0.0;
                if !probe.gradients.is_empty() {
                    let mut args = SessionRunArgs::new();
                    args.add_feed(&probe.input, 0, input);
                    if !probe.output_is_input {
                        args.add_feed(&probe.output.operation, probe.output.index, &output);
                    }
                    for gradient in &probe.gradients {
                        args.request_fetch(&gradient.operation, gradient.index);
                    }
                    let start = Instant::now();
                    self.net.session.run(&mut args).or_engine()?;
                    backward_seconds = start.elapsed().as_secs_f64();
                }
                Ok::<_, parallax_core::Error>((forward_seconds, backward_seconds))
            })?);
            upstream |= has_parameters;
        }
        Ok(times)
    }

    /// The number of operations in the model's graph: it stays the same from step to step.
    pub fn operation_count(&self) -> usize {
        self.net.operation_count()
    }
}

impl Model for TfModel {
    fn layer_times(
        &mut self,
        images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Vec<LayerTime>>> {
        self.time_layers(images.into_inner()).map(Some)
    }

    fn import_weights(&mut self, weights: Checked<&Weights>) -> Result<()> {
        let mut feeds = Vec::with_capacity(self.net.params.len());
        for param in &self.net.params {
            let array = weights.require(&param.info.name)?;
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

    fn train_step(&mut self, batch: Checked<&Batch>, optimizer: &OptimizerConfig) -> Result<f32> {
        self.run_step(batch, optimizer, false).map(|(loss, _)| loss)
    }

    fn traced_step(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
    ) -> Result<Option<TracedStep>> {
        let (loss, metadata) = self.run_step(batch, optimizer, true)?;
        // XLA's auto-clustering replaces each cluster by a pair of `_XlaCompile` and `_XlaRun`
        // operations, whose names the step's trace lists among the kernels that ran.
        let compiled = metadata
            .as_deref()
            .is_some_and(|bytes| bytes.windows(XLA_RUN.len()).any(|w| w == XLA_RUN));
        Ok(Some(TracedStep { loss, compiled }))
    }

    fn predict(&mut self, images: Checked<ndarray::ArrayView4<'_, f32>>) -> Result<Array2<f32>> {
        let input = images_to_nhwc(images.into_inner());
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.net.images, 0, &input);
        let token = args.request_fetch(&self.net.eval.logits.operation, self.net.eval.logits.index);
        self.net.session.run(&mut args).or_engine()?;
        let logits: Tensor<f32> = args.fetch(token).or_engine()?;
        tensor_to_logits(&logits)
    }

    fn activation_precision(
        &mut self,
        _images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Precision>> {
        // A graph's types are fixed when it is built: the first convolution or dense product's
        // output type is what it computes in on any images.
        match self.net.eval.computed {
            Some(DataType::Float) => Ok(Some(Precision::F32)),
            Some(DataType::BFloat16) => Ok(Some(Precision::Bf16)),
            Some(other) => Err(engine_error(format!(
                "the first hidden layer computed in {other}, neither float nor bfloat16"
            ))),
            None => Ok(None),
        }
    }

    fn grad_cam(&mut self, target: Checked<GradCamTarget<'_>>) -> Result<GradCam> {
        let GradCamTarget {
            images,
            layer,
            classes,
        } = target.into_inner();
        let (activations, gradient) = self.net.grad_cam_gradient(layer).or_engine()?;
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

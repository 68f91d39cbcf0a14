//! [`BurnModel`]: the `Model` hooks on burn, with its optimizer state.

use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};
use ndarray::{Array2, ArrayView4};
use parallax_core::roofline::{LayerTime, time_layer};
use parallax_core::spec::{Op, ResolvedModel};
use parallax_core::{
    Batch, Checked, GradCam, GradCamTarget, Model, OptimizerConfig, Precision, Result, StepClock,
    StepPhases, Weights,
};

use crate::convert::{self, images_to_tensor, logits_to_array, tensor_to_array4};
use crate::engine_error;
use crate::net::{Activation, Autocast, Net, forward};
use crate::optim::module_optimizer;

/// A spec's network on burn, with its optimizer state.
pub struct BurnModel {
    /// Always `Some` between calls; burn's optimizer takes the module by value for a step.
    net: Option<Net>,
    /// The network without autodiff, for predictions; made on first use after a change.
    eval: Option<Net>,
    model: Arc<ResolvedModel>,
    /// The autodiff device the parameters live on.
    device: burn::tensor::Device,
    /// The dtype convolutions and dense layers compute in: the run's precision.
    autocast: Autocast,
    optimizer: Option<(OptimizerConfig, ModuleOptimizer)>,
}

fn lost() -> parallax_core::Error {
    engine_error("the model was lost in an earlier failed step")
}

fn labels_tensor(labels: &[u32], device: &burn::tensor::Device) -> Tensor<2, Int> {
    let values: Vec<i64> = labels.iter().map(|&label| i64::from(label)).collect();
    Tensor::<1, Int>::from_data(TensorData::new(values, [labels.len()]), device)
        .reshape([labels.len(), 1])
}

impl BurnModel {
    pub(crate) fn new(
        net: Net,
        model: &ResolvedModel,
        device: burn::tensor::Device,
        autocast: Autocast,
    ) -> Self {
        BurnModel {
            net: Some(net),
            eval: None,
            model: Arc::new(model.clone()),
            device,
            autocast,
            optimizer: None,
        }
    }

    fn net(&self) -> Result<&Net> {
        self.net.as_ref().ok_or_else(lost)
    }

    /// The network without autodiff, for evaluation: one snapshot serves every call until the
    /// weights change.
    fn eval_net(&mut self) -> Result<&Net> {
        if self.eval.is_none() {
            self.eval = Some(self.net()?.valid());
        }
        self.eval.as_ref().ok_or_else(lost)
    }

    /// Layers `range` on `images` in evaluation mode, without autodiff, in the run's precision.
    fn evaluate(
        &mut self,
        images: ArrayView4<'_, f32>,
        range: std::ops::Range<usize>,
    ) -> Result<Activation> {
        let (model, autocast) = (Arc::clone(&self.model), self.autocast);
        let device = self.device.clone().without_autodiff();
        let x = images_to_tensor(images, &device);
        forward(
            self.eval_net()?,
            &model,
            Activation::Image(x),
            range,
            false,
            autocast,
        )
    }

    /// The optimizer for `config`: the current one, or a fresh one when the configuration
    /// changed.
    fn optimizer(&mut self, config: &OptimizerConfig) -> &mut ModuleOptimizer {
        if !matches!(&self.optimizer, Some((current, _)) if current == config) {
            self.optimizer = None;
        }
        let (_, optimizer) = self
            .optimizer
            .get_or_insert_with(|| (*config, module_optimizer(config)));
        optimizer
    }

    /// One training step, its phases timed by `clock` when profiling. The loss is read back
    /// before the backward pass, which consumes it.
    fn step(
        &mut self,
        batch: &Batch,
        optimizer: &OptimizerConfig,
        clock: &mut StepClock<'_>,
    ) -> Result<f32> {
        let labels = batch.labels.to_vec();
        let lr = optimizer.lr;
        let device = self.device.clone();
        let model = Arc::clone(&self.model);
        self.optimizer(optimizer);
        self.eval = None;
        let net = self.net.take().ok_or_else(lost)?;
        let x = images_to_tensor(batch.images.view(), &device);
        let targets = labels_tensor(&labels, &device);
        clock.lap(|phases| &mut phases.input);
        let logits = match forward(
            &net,
            &model,
            Activation::Image(x),
            0..model.layers.len(),
            true,
            self.autocast,
        ) {
            Ok(output) => output.flat(),
            Err(error) => {
                self.net = Some(net);
                return Err(error);
            }
        };
        // The loss in f32 whatever the layers computed in, as autocast and Keras's policy have it.
        let loss = log_softmax(logits.cast(FloatDType::F32), 1)
            .gather(1, targets)
            .mean()
            .neg();
        clock.lap(|phases| &mut phases.forward);
        let loss_value = loss.clone().try_into_scalar::<f32>();
        clock.lap(|phases| &mut phases.readback);
        let gradients = GradientsParams::from_grads(loss.backward(), &net);
        clock.lap(|phases| &mut phases.backward);
        let Some((_, optim)) = self.optimizer.as_mut() else {
            self.net = Some(net);
            return Err(engine_error("optimizer missing after creation"));
        };
        self.net = Some(optim.step(lr, net, gradients));
        clock.lap(|phases| &mut phases.optimizer);
        loss_value.map_err(|error| engine_error(format!("{error:?}")))
    }
}

impl BurnModel {
    /// [`Model::layer_times`] on burn: each layer through the adapter's own forward code on its
    /// own, its backward through burn's autodiff from the gradient of the output's sum (ones:
    /// burn's backward starts from a scalar), for the parameters and (where a layer before it
    /// has parameters) the input.
    fn time_layers(&self, images: ArrayView4<'_, f32>) -> Result<Vec<LayerTime>> {
        let net = self.net()?;
        // CubeCL and LibTorch on CUDA return before a kernel has run: the clock waits for them.
        let synchronize = || {
            self.device
                .sync()
                .map_err(|error| engine_error(format!("{error:?}")))
        };
        let mut input = Activation::Image(images_to_tensor(images, &self.device));
        let mut upstream = false;
        let mut times = Vec::with_capacity(self.model.layers.len());
        for index in 0..self.model.layers.len() {
            let has_parameters = matches!(self.model.layers[index].op, Op::Param(_));
            times.push(time_layer(|| {
                let leaf = input.clone().leaf(upstream);
                synchronize()?;
                let start = Instant::now();
                let output = forward(
                    net,
                    &self.model,
                    leaf,
                    index..index + 1,
                    true,
                    self.autocast,
                )?;
                synchronize()?;
                let forward_seconds = start.elapsed().as_secs_f64();
                let mut backward_seconds = 0.0;
                if upstream || has_parameters {
                    let start = Instant::now();
                    let gradients = output.sum().backward();
                    synchronize()?;
                    backward_seconds = start.elapsed().as_secs_f64();
                    drop(gradients);
                }
                Ok::<_, parallax_core::Error>((forward_seconds, backward_seconds))
            })?);
            input = forward(
                net,
                &self.model,
                input,
                index..index + 1,
                false,
                self.autocast,
            )?
            .leaf(false);
            upstream |= has_parameters;
        }
        Ok(times)
    }
}

impl Model for BurnModel {
    fn layer_times(
        &mut self,
        images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Vec<LayerTime>>> {
        self.time_layers(images.into_inner()).map(Some)
    }

    fn import_weights(&mut self, weights: Checked<&Weights>) -> Result<()> {
        let net = self.net.as_mut().ok_or_else(lost)?;
        convert::import(net, &self.model, &weights, &self.device)?;
        self.eval = None;
        // The optimizer's state belongs to the old parameters.
        self.optimizer = None;
        Ok(())
    }

    fn export_weights(&self) -> Result<Weights> {
        convert::export(self.net()?, &self.model)
    }

    fn train_step(&mut self, batch: Checked<&Batch>, optimizer: &OptimizerConfig) -> Result<f32> {
        self.step(&batch, optimizer, &mut StepClock::off())
    }

    fn profile_step(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
    ) -> Result<Option<StepPhases>> {
        let mut phases = StepPhases::default();
        self.step(&batch, optimizer, &mut StepClock::on(&mut phases))?;
        Ok(Some(phases))
    }

    fn predict(&mut self, images: Checked<ArrayView4<'_, f32>>) -> Result<Array2<f32>> {
        let layers = self.model.layers.len();
        logits_to_array(self.evaluate(images.into_inner(), 0..layers)?.flat())
    }

    fn activation_precision(
        &mut self,
        images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Precision>> {
        let first = self
            .model
            .layers
            .iter()
            .position(|layer| matches!(layer.op, Op::Param(_)))
            .ok_or_else(|| engine_error("the network has no layer with parameters"))?;
        let hidden = self.evaluate(images.into_inner(), 0..first + 1)?;
        match hidden.dtype() {
            DType::F32 => Ok(Some(Precision::F32)),
            DType::BF16 => Ok(Some(Precision::Bf16)),
            other => Err(engine_error(format!(
                "the first hidden layer computed in {other:?}, neither f32 nor bf16"
            ))),
        }
    }

    fn grad_cam(&mut self, target: Checked<GradCamTarget<'_>>) -> Result<GradCam> {
        let GradCamTarget {
            images,
            layer,
            classes,
        } = target.into_inner();
        let net = self.net()?;
        let x = images_to_tensor(images, &self.device);
        let Activation::Image(activations) = forward(
            net,
            &self.model,
            Activation::Image(x),
            0..layer + 1,
            false,
            self.autocast,
        )?
        else {
            return Err(engine_error("GradCAM layer gave a flat activation"));
        };
        let leaf = activations.detach().require_grad();
        let logits = forward(
            net,
            &self.model,
            Activation::Image(leaf.clone()),
            layer + 1..self.model.layers.len(),
            false,
            self.autocast,
        )?
        .flat();
        let score = logits
            .cast(FloatDType::F32)
            .gather(1, labels_tensor(classes, &self.device))
            .sum();
        let gradients = score.backward();
        let gradient = leaf
            .grad(&gradients)
            .ok_or_else(|| engine_error("no gradient reached the GradCAM layer"))?;
        Ok(GradCam {
            activations: tensor_to_array4(leaf.inner())?,
            gradients: tensor_to_array4(gradient)?,
        })
    }
}

//! [`TchModel`]: the `Model` hooks on libtorch, with its optimizer state, and a training step
//! on batches already in libtorch.

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, ArrayView4};
use parallax_core::roofline::{LayerTime, time_layer};
use parallax_core::spec::{Op, ResolvedModel};
use parallax_core::{
    Batch, Checked, EpochPlan, EpochStats, EpochTally, Error, GradCam, GradCamTarget, Model,
    OptimizerConfig, Precision, Result, StepClock, StepPhases, StepProgress, Weights,
};
use tch::{Kind, Tensor};

use crate::convert::{self, images_to_tensor, labels_to_tensor, logits_to_array, tensor_to_array4};
use crate::feed::EpochFeed;
use crate::net::{Net, first_computed_kind, forward, forward_in_own_kind};
use crate::optim::Optimizer;
use crate::{OrEngine, engine_error};

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
    pub(crate) fn new(net: Net, model: &ResolvedModel, device: tch::Device, kind: Kind) -> Self {
        TchModel {
            net,
            model: Arc::new(model.clone()),
            device,
            kind,
            optimizer: None,
        }
    }

    /// One optimizer step on a batch already in libtorch: images `[N, C, H, W]` (floating
    /// point) and labels `[N]` (integral class indices), on any device; they are converted to
    /// the model's precision and device first.
    ///
    /// This is [`Model::train_step`] for callers that keep their data in libtorch tensors
    /// (reach the model with [`Net::engine_mut`](parallax_core::Net::engine_mut)). Core cannot
    /// see inside libtorch tensors, so the shapes are checked here; a label out of range is
    /// reported by libtorch, as an engine error.
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
        self.step(x, &targets, optimizer, &mut StepClock::off())
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

    /// One training step on tensors already on the model's device, its phases timed by
    /// `clock` when profiling.
    fn step(
        &mut self,
        x: Tensor,
        targets: &Tensor,
        optimizer: &OptimizerConfig,
        clock: &mut StepClock<'_>,
    ) -> Result<f32> {
        let fresh = !matches!(&self.optimizer, Some(current) if current.config() == optimizer);
        if fresh {
            self.optimizer = Some(Optimizer::new(*optimizer));
        }
        let parameters = self.net.trainable();
        let forward_loss = || -> std::result::Result<Tensor, tch::TchError> {
            let logits = flat_logits(forward(
                &self.net,
                &self.model,
                x,
                0..self.model.layers.len(),
                true,
            )?)?;
            logits.f_log_softmax(1, None::<Kind>)?.f_nll_loss(
                targets,
                None::<Tensor>,
                tch::Reduction::Mean,
                -100,
            )
        };
        let loss = forward_loss().or_engine()?;
        clock.lap(|phases| &mut phases.forward);
        let gradients = Tensor::f_run_backward(&[&loss], &parameters, false, false).or_engine()?;
        clock.lap(|phases| &mut phases.backward);
        let Some(optim) = self.optimizer.as_mut() else {
            return Err(engine_error("optimizer missing after creation"));
        };
        optim.step(&parameters, &gradients).or_engine()?;
        clock.lap(|phases| &mut phases.optimizer);
        let loss = loss.f_double_value(&[]).or_engine()?;
        clock.lap(|phases| &mut phases.readback);
        Ok(loss as f32)
    }
}

impl TchModel {
    /// [`Model::layer_times`] on libtorch: each layer through the adapter's own forward code
    /// on its own, its backward through autograd's engine from a gradient of ones, for the
    /// parameters and (where a layer before it has parameters) the input.
    fn time_layers(
        &self,
        images: ArrayView4<'_, f32>,
    ) -> std::result::Result<Vec<LayerTime>, tch::TchError> {
        let parameters: Vec<Tensor> = self
            .net
            .trainable()
            .into_iter()
            .map(Tensor::shallow_clone)
            .collect();
        // A CUDA kernel returns before it has run: the clock waits for the device.
        let synchronize = || {
            if let tch::Device::Cuda(index) = self.device {
                tch::Cuda::synchronize(index as i64);
            }
        };
        let mut input = images_to_tensor(images, self.kind, self.device)?;
        let mut upstream = false;
        let mut times = Vec::with_capacity(self.model.layers.len());
        for (index, layer) in self.model.layers.iter().enumerate() {
            let has_parameters = matches!(layer.op, Op::Param(_));
            times.push(time_layer(|| {
                let leaf = input.detach().set_requires_grad(upstream);
                synchronize();
                let start = Instant::now();
                let output = forward_in_own_kind(
                    &self.net,
                    &self.model,
                    leaf.shallow_clone(),
                    index..index + 1,
                    true,
                )?;
                synchronize();
                let forward_seconds = start.elapsed().as_secs_f64();
                let mut backward_seconds = 0.0;
                if upstream || has_parameters {
                    let mut inputs: Vec<&Tensor> = parameters.iter().collect();
                    if upstream {
                        inputs.push(&leaf);
                    }
                    let start = Instant::now();
                    let gradients = Tensor::f_run_backward(&[&output], &inputs, false, false)?;
                    synchronize();
                    backward_seconds = start.elapsed().as_secs_f64();
                    drop(gradients);
                }
                Ok::<_, tch::TchError>((forward_seconds, backward_seconds))
            })?);
            input = tch::no_grad(|| {
                forward_in_own_kind(&self.net, &self.model, input, index..index + 1, false)
            })?;
            upstream |= has_parameters;
        }
        Ok(times)
    }
}

impl Model for TchModel {
    fn layer_times(
        &mut self,
        images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Vec<LayerTime>>> {
        self.time_layers(images.into_inner()).or_engine().map(Some)
    }

    fn import_weights(&mut self, weights: Checked<&Weights>) -> Result<()> {
        convert::import(&mut self.net, &weights)?;
        // The optimizer's state belongs to the old parameters.
        self.optimizer = None;
        Ok(())
    }

    fn export_weights(&self) -> Result<Weights> {
        convert::export(&self.net)
    }

    fn train_step(&mut self, batch: Checked<&Batch>, optimizer: &OptimizerConfig) -> Result<f32> {
        let labels = batch.labels.to_vec();
        let x = images_to_tensor(batch.images.view(), self.kind, self.device).or_engine()?;
        let targets = labels_to_tensor(&labels, self.device).or_engine()?;
        self.step(x, &targets, optimizer, &mut StepClock::off())
    }

    fn profile_step(
        &mut self,
        batch: Checked<&Batch>,
        optimizer: &OptimizerConfig,
    ) -> Result<Option<StepPhases>> {
        let mut phases = StepPhases::default();
        let mut clock = StepClock::on(&mut phases);
        let labels = batch.labels.to_vec();
        let x = images_to_tensor(batch.images.view(), self.kind, self.device).or_engine()?;
        let targets = labels_to_tensor(&labels, self.device).or_engine()?;
        clock.lap(|phases| &mut phases.input);
        self.step(x, &targets, optimizer, &mut clock)?;
        Ok(Some(phases))
    }

    /// Gathers each batch inside libtorch, from a zero-copy view of the data set into a reused
    /// staging tensor (see the `feed` module), rather than on the host and then copied.
    fn train_epoch(
        &mut self,
        plan: Checked<&EpochPlan<'_>>,
        optimizer: &OptimizerConfig,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<EpochStats> {
        let mut tally = EpochTally::start();
        let feed = EpochFeed::new(plan.into_inner()).or_engine()?;
        for step in 0.. {
            let Some((images, labels)) = feed.batch(step).or_engine()? else {
                break;
            };
            let examples = labels.size().first().copied().unwrap_or(0) as usize;
            // On the CPU in f32 both are the feed's own tensors, unconverted.
            let x = self.on_model_device(&images, self.kind).or_engine()?;
            let targets = self.on_model_device(&labels, Kind::Int64).or_engine()?;
            let loss = self.step(x, &targets, optimizer, &mut StepClock::off())?;
            tally.record(loss, examples, on_step)?;
        }
        Ok(tally.finish())
    }

    fn predict(&mut self, images: Checked<ArrayView4<'_, f32>>) -> Result<Array2<f32>> {
        let logits = tch::no_grad(|| -> std::result::Result<Tensor, tch::TchError> {
            let x = images_to_tensor(images.into_inner(), self.kind, self.device)?;
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

    fn activation_precision(
        &mut self,
        images: Checked<ArrayView4<'_, f32>>,
    ) -> Result<Option<Precision>> {
        let x = images_to_tensor(images.into_inner(), self.kind, self.device).or_engine()?;
        match first_computed_kind(&self.net, &self.model, x).or_engine()? {
            Kind::Float => Ok(Some(Precision::F32)),
            Kind::BFloat16 => Ok(Some(Precision::Bf16)),
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
        let run = || -> std::result::Result<(Tensor, Tensor), tch::TchError> {
            let x = images_to_tensor(images, self.kind, self.device)?;
            // The pass up to the layer needs no graph: its output becomes a fresh leaf.
            let activations =
                tch::no_grad(|| forward(&self.net, &self.model, x, 0..layer + 1, false))?;
            let leaf = activations.f_detach()?.f_set_requires_grad(true)?;
            let logits = flat_logits(forward(
                &self.net,
                &self.model,
                leaf.shallow_clone(),
                layer + 1..self.model.layers.len(),
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
            activations: tensor_to_array4(&activations)?,
            gradients: tensor_to_array4(&gradients)?,
        })
    }
}

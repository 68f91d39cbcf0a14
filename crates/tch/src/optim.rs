//! SGD with momentum and Adam, written as in-place libtorch operations that follow
//! `torch.optim`'s single-tensor code paths step for step.
//!
//! tch's own `nn::Optimizer` works on a `VarStore` and goes through libtorch's C++ optimizers;
//! this network keeps plain tensors under canonical names, and writing the updates out keeps
//! each formula visible next to the PyTorch code it mirrors.
//!
//! libtorch's in-place operations return an alias of the tensor they changed; those aliases are
//! dropped (`let _ =`).

use parallax_core::OptimizerConfig;
use parallax_core::optim::{AdamFormulation, OptimizerKind};
use tch::{TchError, Tensor};

/// An optimizer's configuration and its per-parameter state, which persists across steps and
/// epochs until the configuration changes.
pub(crate) struct Optimizer {
    config: OptimizerConfig,
    /// Steps taken (Adam's bias correction needs it).
    steps: u64,
    /// SGD: the momentum buffer per parameter. Adam: the first moment per parameter.
    first: Vec<Tensor>,
    /// Adam: the second moment per parameter.
    second: Vec<Tensor>,
    /// Adam: one tensor per parameter for the step's intermediate values.
    scratch: Vec<Tensor>,
}

impl Optimizer {
    /// A fresh optimizer; its state is allocated at the first step.
    pub(crate) fn new(config: OptimizerConfig) -> Self {
        Optimizer {
            config,
            steps: 0,
            first: Vec::new(),
            second: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The configuration this state belongs to.
    pub(crate) fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Updates `parameters` in place from their `gradients`, outside autograd.
    pub(crate) fn step(
        &mut self,
        parameters: &[&Tensor],
        gradients: &[Tensor],
    ) -> std::result::Result<(), TchError> {
        if parameters.len() != gradients.len() {
            return Err(TchError::Shape(format!(
                "{} parameters but {} gradients",
                parameters.len(),
                gradients.len()
            )));
        }
        self.steps += 1;
        let lr = self.config.lr;
        tch::no_grad(|| match self.config.kind {
            OptimizerKind::Sgd { momentum } => self.sgd(parameters, gradients, lr, momentum),
            OptimizerKind::Adam {
                beta1,
                beta2,
                epsilon,
                formulation,
            } => self.adam(
                parameters,
                gradients,
                lr,
                beta1,
                beta2,
                epsilon,
                formulation,
            ),
        })
    }

    /// torch.optim.SGD without dampening or Nesterov: the buffer starts as the first gradient,
    /// then `b = μb + g`; `w -= lr·b`.
    fn sgd(
        &mut self,
        parameters: &[&Tensor],
        gradients: &[Tensor],
        lr: f64,
        momentum: f64,
    ) -> std::result::Result<(), TchError> {
        for (index, (parameter, gradient)) in parameters.iter().zip(gradients).enumerate() {
            let mut parameter = parameter.shallow_clone();
            let direction = if momentum == 0.0 {
                gradient.shallow_clone()
            } else if let Some(buffer) = self.first.get_mut(index) {
                let _ = buffer.f_mul_scalar_(momentum)?;
                let _ = buffer.f_add_(gradient)?;
                buffer.shallow_clone()
            } else {
                let buffer = gradient.f_detach_copy()?;
                self.first.push(buffer.shallow_clone());
                buffer
            };
            let _ = parameter.f_sub_(&direction.f_mul_scalar(lr)?)?;
        }
        Ok(())
    }

    /// torch.optim.Adam (Algorithm 1: `w -= lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`), or Keras's
    /// formulation (`w -= lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`).
    ///
    /// Every operation is in place, on the moments and on one scratch tensor per parameter
    /// allocated at the first step, so that a step allocates nothing: the same passes as
    /// `torch.optim`'s single-tensor Adam (`lerp_`, `mul_` and `addcmul_`, `sqrt`, `div_`,
    /// `add_`, `addcdiv_`), which allocates the denominator at every step. libtorch's
    /// `addcmul_` and `addcdiv_` have no `value` through tch, so the scale goes into the scratch
    /// tensor: `v ← lerp(v, g², 1 − β₂)` (= β₂v + (1 − β₂)g²), and the step divides `m` by a
    /// denominator pre-multiplied by `−1/step size`.
    #[allow(clippy::too_many_arguments)]
    fn adam(
        &mut self,
        parameters: &[&Tensor],
        gradients: &[Tensor],
        lr: f64,
        beta1: f64,
        beta2: f64,
        epsilon: f64,
        formulation: AdamFormulation,
    ) -> std::result::Result<(), TchError> {
        if self.first.is_empty() {
            for parameter in parameters {
                self.first.push(parameter.f_zeros_like()?);
                self.second.push(parameter.f_zeros_like()?);
                self.scratch.push(parameter.f_empty_like()?);
            }
        }
        let t = i32::try_from(self.steps).unwrap_or(i32::MAX);
        let correction1 = 1.0 - beta1.powi(t);
        let correction2 = 1.0 - beta2.powi(t);
        for (((parameter, gradient), (m, v)), scratch) in parameters
            .iter()
            .zip(gradients)
            .zip(self.first.iter_mut().zip(self.second.iter_mut()))
            .zip(self.scratch.iter_mut())
        {
            let mut parameter = parameter.shallow_clone();
            let _ = m.f_lerp_(gradient, 1.0 - beta1)?;
            let _ = gradient.f_mul_out(scratch, gradient)?;
            let _ = v.f_lerp_(scratch, 1.0 - beta2)?;
            let _ = v.f_sqrt_out(scratch)?;
            let step_size = match formulation {
                AdamFormulation::Pytorch => {
                    let _ = scratch.f_div_scalar_(correction2.sqrt())?;
                    lr / correction1
                }
                AdamFormulation::Keras => lr * correction2.sqrt() / correction1,
            };
            let _ = scratch.f_add_scalar_(epsilon)?;
            let _ = scratch.f_mul_scalar_(-1.0 / step_size)?;
            let _ = parameter.f_addcdiv_(m, scratch)?;
        }
        Ok(())
    }
}

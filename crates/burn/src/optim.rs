//! The optimizers on burn: SGD with PyTorch's momentum and PyTorch's Adam from `burn::optim`,
//! and Keras's Adam, which burn lacks, as a `burn::optim::Optimizer` of parallax's own.

use burn::optim::{
    AdamConfig, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer, SgdConfig,
    momentum::MomentumConfig,
};
use burn::tensor::{Device, Tensor};
use parallax_core::OptimizerConfig;
use parallax_core::optim::{AdamFormulation, OptimizerKind};

/// burn's module optimizer for `config`, with fresh state.
pub(crate) fn module_optimizer(config: &OptimizerConfig) -> ModuleOptimizer {
    match config.kind {
        OptimizerKind::Sgd { momentum } => {
            let mut sgd = SgdConfig::new();
            if momentum > 0.0 {
                // burn's default dampening is 0.1; PyTorch's, which parallax follows, is 0.
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
            beta1,
            beta2,
            epsilon,
            formulation: AdamFormulation::Keras,
        } => ModuleOptimizer::from(KerasAdam {
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            epsilon: epsilon as f32,
        }),
    }
}

/// Keras's Adam: `w -= lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`, with ε added to the uncorrected
/// root, where PyTorch's adds it to the corrected one. Its moments are burn's own Adam state.
#[derive(Clone, Debug)]
struct KerasAdam {
    beta1: f32,
    beta2: f32,
    epsilon: f32,
}

impl Optimizer for KerasAdam {
    type State<const D: usize> = AdaptiveMomentumState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let state = match state {
            Some(mut state) => {
                state.moment_1 = state
                    .moment_1
                    .mul_scalar(self.beta1)
                    .add(grad.clone().mul_scalar(1.0 - self.beta1));
                state.moment_2 = state
                    .moment_2
                    .mul_scalar(self.beta2)
                    .add(grad.square().mul_scalar(1.0 - self.beta2));
                state.time += 1;
                state
            }
            None => AdaptiveMomentumState::new(
                1,
                grad.clone().mul_scalar(1.0 - self.beta1),
                grad.square().mul_scalar(1.0 - self.beta2),
            ),
        };
        let time = i32::try_from(state.time).unwrap_or(i32::MAX);
        let step_size =
            lr * f64::from((1.0 - self.beta2.powi(time)).sqrt() / (1.0 - self.beta1.powi(time)));
        let update = state
            .moment_1
            .clone()
            .div(state.moment_2.clone().sqrt().add_scalar(self.epsilon))
            .mul_scalar(step_size);
        (tensor - update, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.to_device(device)
    }
}

//! Canonical initial weights drawn from a seed, so that every backend can start from the same point.
//!
//! The distributions are PyTorch's layer defaults: weights and biases of dense and convolution
//! layers are uniform in ±1/√fan_in (`kaiming_uniform_(a=√5)` and the matching bias rule),
//! batch-norm scales are 1, shifts 0, running means 0 and running variances 1.
//! The random numbers come from ChaCha8 with a fixed conversion to `f32`, so the result is the
//! same on every platform and for every backend.

use ndarray::{ArrayD, IxDyn};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};

use crate::spec::{ParamRole, ResolvedModel};
use crate::weights::Weights;

/// Draws the model's canonical initial weights from `seed`.
///
/// Tensors are drawn in [`ResolvedModel::parameters`] order from one ChaCha8 stream.
pub fn canonical(model: &ResolvedModel, seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    model
        .parameters()
        .into_iter()
        .map(|param| {
            let len = param.shape.iter().product();
            let values: Vec<f32> = match param.role {
                ParamRole::Weight { fan_in } | ParamRole::Bias { fan_in } => {
                    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                    (0..len)
                        .map(|_| bound * (2.0 * unit(&mut rng) - 1.0))
                        .collect()
                }
                ParamRole::NormScale | ParamRole::RunningVar => vec![1.0; len],
                ParamRole::NormShift | ParamRole::RunningMean => vec![0.0; len],
            };
            let tensor = ArrayD::from_shape_vec(IxDyn(&param.shape), values)
                .expect("a parameter's value count is the product of its shape");
            (param.name, tensor)
        })
        .collect()
}

/// A uniform `f32` in [0, 1) from the top 24 bits of one `u32`: exact and portable.
fn unit(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::presets;

    #[test]
    fn same_seed_same_weights_and_bounds_hold() {
        let model = presets::mlp([1, 28, 28], 10).resolve().unwrap();
        let a = canonical(&model, 7);
        assert_eq!(a, canonical(&model, 7));
        assert_ne!(a, canonical(&model, 8));
        let w = a.get("fc1.weight").unwrap();
        assert_eq!(w.shape(), &[128, 784]);
        let bound = 1.0 / 784f32.sqrt();
        assert!(w.iter().all(|v| v.abs() <= bound));
        // Uniform in ±bound has mean ~0 and variance bound²/3.
        let n = w.len() as f32;
        let mean = w.sum() / n;
        let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
        assert!(mean.abs() < 0.01 * bound);
        assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.02);
        a.check(&model).unwrap();
    }
}

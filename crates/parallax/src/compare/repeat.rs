//! `--repeat`: whether each engine reproduces its own run bit for bit, from the same seed,
//! weights and data order (its per-epoch losses and accuracy, and its final weights).

use parallax_core::Weights;
use parallax_core::layout::Layout;
use parallax_core::record::RunRecord;

use crate::report::summary::Repeatability;

/// Compares `first` with `second`, and their final weights under the two layouts.
pub fn compare(
    first: &RunRecord,
    second: &RunRecord,
    first_layout: &Layout,
    second_layout: &Layout,
) -> Repeatability {
    let pairs = first.epochs.iter().zip(&second.epochs);
    let same_length = first.epochs.len() == second.epochs.len();
    let losses_identical = same_length
        && pairs.clone().all(|(x, y)| {
            x.train_loss.to_bits() == y.train_loss.to_bits()
                && x.test_loss.to_bits() == y.test_loss.to_bits()
                && x.test_accuracy.to_bits() == y.test_accuracy.to_bits()
        });
    let max_loss_difference = pairs
        .map(|(x, y)| (x.train_loss - y.train_loss).abs())
        .fold(0.0, f64::max);
    let weights =
        |layout: &Layout, record: &RunRecord| Weights::load(&layout.weights(&record.run)).ok();
    let (weights_identical, max_weight_difference) =
        match (weights(first_layout, first), weights(second_layout, second)) {
            (Some(x), Some(y)) => {
                let mut identical = x.len() == y.len();
                let mut largest = 0.0f64;
                for (name, tensor) in x.iter() {
                    match y.get(name) {
                        Some(other) if other.shape() == tensor.shape() => {
                            for (p, q) in tensor.iter().zip(other.iter()) {
                                identical &= p.to_bits() == q.to_bits();
                                largest = largest.max(f64::from((p - q).abs()));
                            }
                        }
                        _ => identical = false,
                    }
                }
                (Some(identical), Some(largest))
            }
            _ => (None, None),
        };
    let verdict = match (losses_identical, weights_identical) {
        (true, Some(true)) => "reproduces itself bit for bit (losses and final weights)".to_string(),
        (true, None) => "reproduces its losses bit for bit (final weights not compared: a weights file is missing)".to_string(),
        (true, Some(false)) => format!(
            "reproduces its losses bit for bit but not its final weights (largest difference {:.3e})",
            max_weight_difference.unwrap_or(0.0)
        ),
        (false, _) => format!(
            "does not reproduce itself: training losses differ by up to {max_loss_difference:.3e}{}",
            max_weight_difference
                .map(|d| format!(", final weights by up to {d:.3e}"))
                .unwrap_or_default()
        ),
    };
    Repeatability {
        backend: first.backend.clone(),
        seed: first.seed,
        losses_identical,
        max_loss_difference,
        weights_identical,
        max_weight_difference,
        line: format!("{} seed {}: {verdict}", first.backend, first.seed),
    }
}

//! Trajectories: two engines trained for several epochs from the same weights in the same
//! order, compared epoch by epoch, and by their final predicted classes, against the noise
//! that f32 arithmetic itself makes over that model and horizon.
//!
//! The noise is measured on the reference engine: the same training with the examples of every
//! batch reordered, three ways (reversed, even positions then odd, halves swapped), and once
//! from initial weights each moved by one unit in the last place; its largest distance from
//! the reference. Every batch holds the same examples, so the mathematics is the same; only
//! the order of each sum over the batch differs, and training amplifies that rounding step
//! after step, as it amplifies any other. The reorderings reach only the sums over the batch,
//! though: two engines also round the forward pass and the update differently (an `addmm`
//! against a product then a sum, `w + (μv − ηg)` against `w − η(μb + g)`), and each such
//! difference moves a weight by at most one ulp at a step. The twin that starts one ulp away
//! in every weight measures how far training carries a difference of that size. How much each
//! source weighs depends on the host's kernels: on a 2-core AMD EPYC with AVX2 only,
//! PyTorch's reorderings moved the cnn's epoch-1 loss by 3.4e-8, its one-ulp twin by 5.5e-6,
//! and Keras on PyTorch ended 7.8e-6 away. One twin alone can land close to the reference by
//! chance at some epoch (a difference of many amplified roundings crosses zero), which would
//! make that epoch's bound a single rounding; four rarely do. The judged engine's own twins
//! never widen a bound; when its own run is beyond one, they count only if one of them meets
//! every bound of the reference ([`TrajectoryJudgement::or_reached_by`]). The rule is the parity rule's ([`super::parity`]): an epoch's train loss
//! may differ from the reference's by at most [`TRAJECTORY_MULTIPLE`] times the larger of that
//! noise and one f32 rounding of the loss; the final predicted classes may disagree on at most
//! that multiple of the noise's disagreements, counted as at least one.

use std::fmt;

use ndarray::Axis;

use super::parity::BatchOrder;
use crate::backend::Backend;
use crate::data::builtin::BuiltinDataset;
use crate::data::{DataRequest, EpochPlan, LoadedData, epoch_order};
use crate::optim::OptimizerConfig;
use crate::spec::{ModelSource, Preset, ResolvedModel};
use crate::weights::Weights;
use crate::{Result, init};

/// How many noises apart two engines' trajectories may be: the parity rule's multiple.
pub const TRAJECTORY_MULTIPLE: f64 = 16.0;

/// One engine's training: each epoch's mean train loss, and the test set's predicted classes
/// after the last.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trajectory {
    /// Mean train loss of each epoch.
    pub losses: Vec<f64>,
    /// The predicted class of every test example, in data-set order.
    pub predictions: Vec<u32>,
}

/// A trajectory case: a preset trained on the bundled Fashion-MNIST subset from canonical
/// weights, in core's epoch order.
#[derive(Debug)]
pub struct TrajectoryCase {
    /// The model.
    pub model: ResolvedModel,
    /// The shared initial weights.
    pub weights: Weights,
    /// Epochs trained.
    pub epochs: u32,
    /// Examples per batch.
    pub batch_size: usize,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The seed of the weights and of every epoch's order.
    pub seed: u64,
    data: LoadedData,
}

impl TrajectoryCase {
    /// `preset` on the bundled subset (2000 training, 500 test images), batch 64, `epochs`
    /// epochs of `optimizer` from canonical weights of seed 42.
    pub fn on_subset(
        preset: Preset,
        epochs: u32,
        optimizer: OptimizerConfig,
        fixtures_dir: std::path::PathBuf,
    ) -> Result<Self> {
        let seed = 42;
        let request = DataRequest::builtin(
            BuiltinDataset::FashionMnistSubset,
            std::env::temp_dir().join("parallax-tests"),
            fixtures_dir,
        );
        let data = request.load(seed)?;
        let model = ModelSource::Preset(preset)
            .spec(data.train.image_shape(), data.train.num_classes())?
            .resolve()?;
        let weights = init::canonical(&model, seed);
        Ok(TrajectoryCase {
            model,
            weights,
            epochs,
            batch_size: 64,
            optimizer,
            seed,
            data,
        })
    }

    /// The case trained on `backend`, the examples of every batch fed in `order`
    /// ([`BatchOrder::Natural`] for the training itself, another for one of its twins).
    pub fn train(&self, backend: &dyn Backend, order: BatchOrder) -> Result<Trajectory> {
        self.train_from(backend, order, &self.weights)
    }

    /// [`Self::train`] from `weights` instead of the case's own.
    fn train_from(
        &self,
        backend: &dyn Backend,
        order: BatchOrder,
        weights: &Weights,
    ) -> Result<Trajectory> {
        let mut net = backend.build(&self.model, Some(weights))?;
        let train = &self.data.train;
        let mut losses = Vec::new();
        for epoch in 0..self.epochs {
            let natural = epoch_order(train.len(), self.seed, epoch);
            let epoch_order: Vec<u32> = natural
                .chunks(self.batch_size)
                .flat_map(|batch| {
                    order
                        .positions(batch.len())
                        .into_iter()
                        .map(move |position| batch[position])
                })
                .collect();
            let plan = EpochPlan::new(train, &epoch_order, self.batch_size)?;
            let stats = net.train_epoch(&plan, &self.optimizer, &mut |_| {})?;
            losses.push(stats.train_loss);
        }
        let logits = net.predict_dataset(&self.data.test, self.batch_size)?;
        let predictions = logits
            .axis_iter(Axis(0))
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (class, &value)| {
                        if value > best.1 { (class, value) } else { best }
                    })
                    .0 as u32
            })
            .collect();
        Ok(Trajectory {
            losses,
            predictions,
        })
    }

    /// The reorderings the noise is measured over: every batch's examples in each of the
    /// orders of a step's noise but the natural one.
    pub const TWIN_ORDERS: [BatchOrder; 3] = [
        BatchOrder::Reversed,
        BatchOrder::EvenThenOdd,
        BatchOrder::HalvesSwapped,
    ];

    /// The case trained on `backend` in each of [`Self::TWIN_ORDERS`], and once from
    /// [`one_ulp_away`] of its initial weights: the twins whose distances from its natural
    /// training measure the noise.
    pub fn twins(&self, backend: &dyn Backend) -> Result<Vec<Trajectory>> {
        let mut twins = Self::TWIN_ORDERS
            .iter()
            .map(|&order| self.train(backend, order))
            .collect::<Result<Vec<_>>>()?;
        twins.push(self.train_from(backend, BatchOrder::Natural, &one_ulp_away(&self.weights))?);
        Ok(twins)
    }
}

impl TrajectoryCase {
    /// `judged` against `reference`, both trained here: the reference and its twins, then the
    /// judged engine, and its own twins only when its run is beyond a bound
    /// ([`TrajectoryJudgement::or_reached_by`]).
    pub fn judge(
        &self,
        (judged_name, judged): (&str, &dyn Backend),
        (reference_name, reference): (&str, &dyn Backend),
    ) -> Result<TrajectoryJudgement> {
        let truth = self.train(reference, BatchOrder::Natural)?;
        let twins = self.twins(reference)?;
        let run = self.train(judged, BatchOrder::Natural)?;
        let judgement =
            TrajectoryJudgement::new((judged_name, &run), (reference_name, &truth), &twins);
        if judgement.holds() {
            return Ok(judgement);
        }
        Ok(judgement.or_reached_by(&truth, &self.twins(judged)?))
    }
}

/// `weights` with every value moved by one unit in the last place, up and down in turn (zeros
/// stay): the difference one rounding of each weight makes.
pub fn one_ulp_away(weights: &Weights) -> Weights {
    let mut moved = Weights::new();
    for (name, tensor) in weights.iter() {
        let mut up = true;
        let shifted = tensor.mapv(|value| {
            up = !up;
            match value {
                0.0 => value,
                _ if up => value.next_up(),
                _ => value.next_down(),
            }
        });
        moved.insert(name, shifted);
    }
    moved
}

/// How many predicted classes differ between two trajectories.
fn disagreements(a: &Trajectory, b: &Trajectory) -> usize {
    a.predictions
        .iter()
        .zip(&b.predictions)
        .filter(|(x, y)| x != y)
        .count()
}

/// One engine's trajectory judged against the reference's.
#[derive(Clone, Debug)]
pub struct TrajectoryJudgement {
    /// The judged engine.
    pub engine: String,
    /// The reference engine.
    pub reference: String,
    /// Per epoch: |loss − reference's|, the noise, and the bound.
    pub epochs: Vec<(f64, f64, f64)>,
    /// Predicted classes that differ from the reference's, the noise's count, and the bound.
    pub predictions: (usize, usize, usize),
    /// Test examples.
    pub examples: usize,
    /// When the judged engine's own run is beyond a bound: the first of its own twins
    /// ([`TrajectoryJudgement::or_reached_by`]) that lands within every bound of the reference.
    pub reached_by_twin: Option<usize>,
}

/// The twins of [`TrajectoryCase::twins`], in order, as the judgement names them.
pub const TWIN_NAMES: [&str; 4] = [
    "every batch reversed",
    "even positions then odd",
    "halves swapped",
    "one ulp from every initial weight",
];

impl TrajectoryJudgement {
    /// `judged` against `reference`, with `twins` (the reference trained with every batch
    /// reordered, [`TrajectoryCase::twins`]) measuring the noise: per epoch, their largest
    /// distance from the reference's loss; for the predictions, their most disagreements.
    pub fn new(
        (engine, judged): (&str, &Trajectory),
        (reference_name, reference): (&str, &Trajectory),
        twins: &[Trajectory],
    ) -> Self {
        let epochs = judged
            .losses
            .iter()
            .zip(&reference.losses)
            .enumerate()
            .map(|(epoch, (&loss, &truth))| {
                let noise = twins
                    .iter()
                    .filter_map(|twin| twin.losses.get(epoch))
                    .map(|&other| (truth - other).abs())
                    .fold(0.0, f64::max);
                // One f32 rounding of the loss, the least two f32 runs can be apart.
                let floor = f64::from(f32::EPSILON) * truth.abs();
                let bound = TRAJECTORY_MULTIPLE * noise.max(floor);
                ((loss - truth).abs(), noise, bound)
            })
            .collect();
        let noise = twins
            .iter()
            .map(|twin| disagreements(reference, twin))
            .max()
            .unwrap_or(0);
        let bound = (TRAJECTORY_MULTIPLE as usize) * noise.max(1);
        TrajectoryJudgement {
            engine: engine.into(),
            reference: reference_name.into(),
            epochs,
            predictions: (disagreements(judged, reference), noise, bound),
            examples: reference.predictions.len(),
            reached_by_twin: None,
        }
    }

    /// The judgement given the judged engine's own twins too ([`TrajectoryCase::twins`] on
    /// it). A twin computes the same mathematics as the engine's own run, with only the order
    /// of the sums over each batch, or the last bit of each initial weight, changed. Training
    /// can pass a knife edge (a ReLU input at zero, two logits tied) that such a change tips one
    /// way or the other, and then one engine's trajectory follows one branch and the reference's
    /// twins all happen to follow the other: on a 2-core AMD EPYC with AVX2 only, Keras on
    /// PyTorch's mlp ended 7.7e-6 from PyTorch's loss, and three of its four twins ended within
    /// 4e-8 of it. When one of the engine's own twins lands within every bound of the
    /// reference, the engine computes the reference's mathematics, and its own run's distance
    /// is a branch that rounding picks. Its twins never widen a bound: they have to meet the
    /// reference's, which an engine computing something else (another learning rate, another
    /// order of the data) does not.
    pub fn or_reached_by(mut self, reference: &Trajectory, judged_twins: &[Trajectory]) -> Self {
        if self.within() {
            return self;
        }
        self.reached_by_twin = judged_twins.iter().position(|twin| {
            twin.losses.len() == self.epochs.len()
                && twin
                    .losses
                    .iter()
                    .zip(&reference.losses)
                    .zip(&self.epochs)
                    .all(|((&loss, &truth), &(_, _, bound))| (loss - truth).abs() <= bound)
                && disagreements(twin, reference) <= self.predictions.2
        });
        self
    }

    /// Whether the judged engine's own run is within every bound.
    fn within(&self) -> bool {
        self.epochs
            .iter()
            .all(|&(distance, _, bound)| distance <= bound)
            && self.predictions.0 <= self.predictions.2
    }

    /// Whether every epoch and the predictions are within their bounds, or one of the judged
    /// engine's own twins is ([`TrajectoryJudgement::or_reached_by`]).
    pub fn holds(&self) -> bool {
        self.within() || self.reached_by_twin.is_some()
    }
}

impl fmt::Display for TrajectoryJudgement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match (self.within(), self.holds()) {
            (true, _) => "within",
            (false, true) => "within (through a twin)",
            (false, false) => "BEYOND",
        };
        write!(
            f,
            "{} against {}: {verdict} {}× the noise;",
            self.engine, self.reference, TRAJECTORY_MULTIPLE
        )?;
        for (epoch, (distance, noise, bound)) in self.epochs.iter().enumerate() {
            write!(
                f,
                " epoch {}: |Δloss| {distance:.2e} (noise {noise:.2e}, bound {bound:.2e});",
                epoch + 1
            )?;
        }
        let (differ, noise, bound) = self.predictions;
        write!(
            f,
            " predicted classes: {differ} of {} differ (noise {noise}, bound {bound})",
            self.examples
        )?;
        match self.reached_by_twin {
            Some(twin) => write!(
                f,
                "; its own run takes another branch, and its twin ({}) lands within every bound of {}",
                TWIN_NAMES.get(twin).copied().unwrap_or("another"),
                self.reference
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trajectory(losses: &[f64], predictions: &[u32]) -> Trajectory {
        Trajectory {
            losses: losses.to_vec(),
            predictions: predictions.to_vec(),
        }
    }

    #[test]
    fn an_engine_on_another_branch_holds_only_when_a_twin_of_its_own_meets_the_reference() {
        let reference = trajectory(&[2.0, 1.1, 0.84], &[0; 40]);
        let twins = vec![trajectory(&[2.0, 1.1 + 1e-8, 0.84 + 1e-8], &[0; 40])];
        let branch = trajectory(&[2.0, 1.1 + 2e-6, 0.84 + 8e-6], &[0; 40]);
        let judged = TrajectoryJudgement::new(("a", &branch), ("b", &reference), &twins);
        assert!(!judged.holds(), "{judged}");
        // Its twins land where the reference is: the same mathematics on another branch.
        let near = trajectory(&[2.0, 1.1 + 2e-8, 0.84 - 1e-8], &[0; 40]);
        let reached = judged
            .clone()
            .or_reached_by(&reference, &[branch.clone(), near]);
        assert!(reached.holds(), "{reached}");
        assert_eq!(reached.reached_by_twin, Some(1));
        assert!(
            reached.to_string().contains("within (through a twin)"),
            "{reached}"
        );
        // Twins that stay on its own branch, or elsewhere, vouch for nothing.
        let elsewhere = trajectory(&[2.0, 1.1 - 5e-6, 0.84], &[0; 40]);
        let alone = judged.or_reached_by(&reference, &[branch.clone(), elsewhere]);
        assert!(!alone.holds(), "{alone}");
    }

    #[test]
    fn the_moved_twin_starts_one_ulp_from_every_nonzero_weight() {
        let mut weights = Weights::new();
        weights.insert("w", ndarray::arr1(&[1.0f32, -0.25, 0.0, 3.0e-5]).into_dyn());
        let moved = one_ulp_away(&weights);
        let (before, after) = (weights.get("w").unwrap(), moved.get("w").unwrap());
        for (&x, &y) in before.iter().zip(after.iter()) {
            if x == 0.0 {
                assert_eq!(y, 0.0);
            } else {
                assert_eq!(x.to_bits().abs_diff(y.to_bits()), 1, "{x} → {y}");
            }
        }
        // Up and down in turn, so that the twin is not the whole model scaled.
        assert!(after[0] < 1.0 && after[1] > -0.25);
    }

    #[test]
    fn a_loss_beyond_sixteen_noises_fails_and_one_within_holds() {
        let reference = trajectory(&[1.0, 0.5], &[0, 1, 2]);
        let twin = trajectory(&[1.0 + 1e-6, 0.5 - 1e-6], &[0, 1, 2]);
        let close = trajectory(&[1.0 + 1e-5, 0.5], &[0, 1, 2]);
        let judged = TrajectoryJudgement::new(
            ("a", &close),
            ("b", &reference),
            std::slice::from_ref(&twin),
        );
        assert!(judged.holds(), "{judged}");
        // 2e-5 is twenty noises of 1e-6: an engine off in the fifth digit is caught.
        let far = trajectory(&[1.0, 0.5 + 2e-5], &[0, 1, 2]);
        let judged =
            TrajectoryJudgement::new(("a", &far), ("b", &reference), std::slice::from_ref(&twin));
        assert!(!judged.holds(), "{judged}");
        assert!(judged.to_string().contains("BEYOND"));
    }

    #[test]
    fn identical_runs_leave_one_f32_rounding_and_one_prediction_of_room() {
        let reference = trajectory(&[2.0], &[0; 40]);
        let twin = reference.clone();
        // The noise is zero: the floor is ε_f32·loss per epoch, and one disagreement.
        let rounding = trajectory(&[2.0 + 8.0 * f64::from(f32::EPSILON)], &[0; 40]);
        assert!(
            TrajectoryJudgement::new(
                ("a", &rounding),
                ("b", &reference),
                std::slice::from_ref(&twin)
            )
            .holds()
        );
        let mut predictions = vec![0; 40];
        predictions[..17].fill(1);
        let wrong = trajectory(&[2.0], &predictions);
        assert!(
            !TrajectoryJudgement::new(
                ("a", &wrong),
                ("b", &reference),
                std::slice::from_ref(&twin)
            )
            .holds()
        );
    }
}

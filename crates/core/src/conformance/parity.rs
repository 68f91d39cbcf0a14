//! Parity between engines, judged against the noise that f32 arithmetic itself makes.
//!
//! A parity case (a model, canonical weights, one batch, and either evaluation logits or one
//! SGD step) is computed by the **referee**, a backend computing in f64, and by every engine in
//! f32, each in several **orders** of the same batch ([`BatchOrder`]): the same arithmetic
//! summed in other orders. What an engine's orders disagree on is f32 noise: its **spread**.
//! For every tensor `t` of an engine's natural-order outcome, the check is
//!
//! ```text
//! distance(t) = max |engine − referee|  ≤  multiple × max(noise(t), ε_f32 · max |referee(t)|)
//! ```
//!
//! where `noise(t)` is the widest spread of every *other* engine on `t` ([`Noise::for_judging`]),
//! so that an engine whose result moves with the batch's order cannot vouch for itself, and the
//! floor is one f32 rounding at the tensor's largest magnitude (the referee's result is rounded
//! to f32 when it crosses the trait). Nothing here is tuned to a host: the noise is measured on
//! the case, on the machine that runs the check, and an engine that computes something else
//! than the arithmetic asks (a skipped update, a scaled gradient) lands many noises away.
//! Distances are printed relative to each tensor's own scale ([`Case::scale`]): for a tensor
//! after a step, the size of its update, floored at ε_f32 times its magnitude where a gradient
//! is near zero; for logits and the loss, their magnitude.
//!
//! The orders: for a step, the batch permuted (natural, reversed, even positions then odd,
//! halves swapped), which reorders every sum over the batch (weight gradients, batch-norm
//! statistics, the mean loss); for logits, which sum nothing over the batch, also one example
//! per call, which changes the kernels and so the order of each example's own sums.
//! docs/conformance.md gives the multiple's reasons and what the rule still catches.

use std::collections::BTreeMap;
use std::fmt;

use ndarray::{Array1, Array4, ArrayD, Axis};

use super::checks::{every_layer_spec, resolve, test_images};
use crate::backend::Backend;
use crate::data::Batch;
use crate::optim::OptimizerConfig;
use crate::spec::VarianceEstimator;
use crate::spec::{Layer, ModelSpec, ResolvedModel, presets};
use crate::weights::Weights;
use crate::{Result, init};

/// f32's machine epsilon, 2⁻²³: the spacing of floats in [1, 2).
pub const EPSILON_F32: f32 = f32::EPSILON;

/// How many noises an engine may be from the f64 referee. See the conformance docs
/// (`docs/conformance.md`) for why this multiple and what it still catches.
pub const REFEREE_MULTIPLE: f32 = 16.0;

/// An order of the batch's examples: the same examples, summed in another order by every
/// reduction over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOrder {
    /// As generated.
    Natural,
    /// Last example first.
    Reversed,
    /// The examples at even positions, then those at odd ones.
    EvenThenOdd,
    /// The second half, then the first.
    HalvesSwapped,
    /// In the natural order, one example per call: for logits, the engines' kernels for a
    /// batch of one sum each example's products in another order than for a full batch (a
    /// matrix-vector product instead of a matrix product, other convolution kernels). A step
    /// takes its batch whole, so for a step this is the natural order.
    OneAtATime,
}

impl BatchOrder {
    /// The orders a step's noise is measured over: each reorders every sum over the batch.
    pub const STEP: [BatchOrder; 4] = [
        BatchOrder::Natural,
        BatchOrder::Reversed,
        BatchOrder::EvenThenOdd,
        BatchOrder::HalvesSwapped,
    ];

    /// The orders the noise of logits is measured over. Evaluation sums nothing over the
    /// batch, so permutations alone change nothing; one example per call changes the kernels.
    pub const LOGITS: [BatchOrder; 3] = [
        BatchOrder::Natural,
        BatchOrder::Reversed,
        BatchOrder::OneAtATime,
    ];

    /// The positions of a batch of `n` in this order: the i-th example fed is `positions[i]`.
    pub fn positions(self, n: usize) -> Vec<usize> {
        match self {
            BatchOrder::Natural | BatchOrder::OneAtATime => (0..n).collect(),
            BatchOrder::Reversed => (0..n).rev().collect(),
            BatchOrder::EvenThenOdd => (0..n).step_by(2).chain((1..n).step_by(2)).collect(),
            BatchOrder::HalvesSwapped => (n / 2..n).chain(0..n / 2).collect(),
        }
    }
}

/// What a parity case computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Probe {
    /// Evaluation-mode logits.
    Logits,
    /// One SGD step (learning rate 0.1) with this momentum: every tensor after it, running
    /// statistics included, and the step's loss.
    SgdStep {
        /// SGD's momentum.
        momentum: f64,
    },
}

/// The learning rate of a parity case's SGD step.
pub const PARITY_LR: f64 = 0.1;

/// One parity case: a model from canonical weights, one batch, one probe.
#[derive(Clone, Debug)]
pub struct Case {
    /// A name for messages: the spec's and the probe's.
    pub name: String,
    model: ResolvedModel,
    weights: Weights,
    batch: Batch,
    probe: Probe,
}

/// What a backend computed for a case: named tensors (`logits`, or every weight after the step
/// and `loss`).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The tensors, by name.
    pub tensors: BTreeMap<String, ArrayD<f32>>,
}

impl Case {
    /// Evaluation logits of `spec` on `batch` test images, from canonical weights (seed 21).
    pub fn logits(spec: ModelSpec, batch: usize) -> Case {
        let model = resolve(&spec);
        let weights = init::canonical(&model, 21);
        let images = test_images(batch, model.input(), 22);
        Case {
            name: format!("{} logits", spec.name),
            batch: Batch {
                labels: Array1::zeros(batch),
                images,
            },
            model,
            weights,
            probe: Probe::Logits,
        }
    }

    /// One SGD step of `spec` on a batch of `batch` test images whose labels cycle through the
    /// classes, from canonical weights (seed 23).
    pub fn sgd_step(spec: ModelSpec, batch: usize, momentum: f64) -> Case {
        Case::sgd_step_on(spec, batch, momentum, 24)
    }

    /// [`Case::sgd_step`] on the test images of another seed (`salt` of [`test_images`]).
    pub fn sgd_step_on(spec: ModelSpec, batch: usize, momentum: f64, images_seed: u64) -> Case {
        let model = resolve(&spec);
        let weights = init::canonical(&model, 23);
        let labels: Vec<u32> = (0..batch).map(|i| (i % model.classes()) as u32).collect();
        Case {
            name: format!("{} SGD step", spec.name),
            batch: Batch {
                images: test_images(batch, model.input(), images_seed),
                labels: Array1::from(labels),
            },
            model,
            weights,
            probe: Probe::SgdStep { momentum },
        }
    }

    /// This case with every batch norm updating its running variance with the biased batch
    /// variance, Keras's convention, which Keras's public API cannot change; the name says so.
    /// Logits, computed in evaluation mode, do not depend on it.
    pub fn with_biased_running_variance(mut self) -> Case {
        for norm in self.model.norms_mut() {
            norm.running_variance = VarianceEstimator::Biased;
        }
        self.name = format!("{} (biased running variance)", self.name);
        self
    }

    /// The model.
    pub fn model(&self) -> &ResolvedModel {
        &self.model
    }

    /// The weights every backend starts from.
    pub fn initial_weights(&self) -> &Weights {
        &self.weights
    }

    /// The probe.
    pub fn probe(&self) -> Probe {
        self.probe
    }

    /// The orders its noise is measured over, the natural one first.
    pub fn orders(&self) -> &'static [BatchOrder] {
        match self.probe {
            Probe::Logits => &BatchOrder::LOGITS,
            Probe::SgdStep { .. } => &BatchOrder::STEP,
        }
    }

    /// Computes the case on `backend`, the batch fed in `order`. Logits come back in the
    /// natural order, so that every order's outcome compares with every other's.
    pub fn run(&self, backend: &dyn Backend, order: BatchOrder) -> Result<Outcome> {
        let positions = order.positions(self.batch.labels.len());
        let images: Array4<f32> = self.batch.images.select(Axis(0), &positions);
        let mut net = backend.build(&self.model, Some(&self.weights))?;
        let mut tensors = BTreeMap::new();
        match self.probe {
            Probe::Logits => {
                let permuted = if order == BatchOrder::OneAtATime {
                    let rows = (0..images.len_of(Axis(0)))
                        .map(|i| net.predict(images.slice(ndarray::s![i..=i, .., .., ..])))
                        .collect::<Result<Vec<_>>>()?;
                    let views: Vec<_> = rows.iter().map(|row| row.view()).collect();
                    ndarray::concatenate(Axis(0), &views).map_err(|error| {
                        crate::Error::InvalidArgument(format!(
                            "stacking one-example logits: {error}"
                        ))
                    })?
                } else {
                    net.predict(images.view())?
                };
                let mut logits = permuted.clone();
                for (fed, &position) in positions.iter().enumerate() {
                    logits.row_mut(position).assign(&permuted.row(fed));
                }
                tensors.insert("logits".to_string(), logits.into_dyn());
            }
            Probe::SgdStep { momentum } => {
                let batch = Batch {
                    images,
                    labels: self.batch.labels.select(Axis(0), &positions),
                };
                let loss = net.train_step(&batch, &OptimizerConfig::sgd(PARITY_LR, momentum))?;
                for (name, tensor) in net.export_weights()?.iter() {
                    tensors.insert(name.to_string(), tensor.clone());
                }
                tensors.insert(
                    "loss".to_string(),
                    ArrayD::from_elem(ndarray::IxDyn(&[1]), loss),
                );
            }
        }
        Ok(Outcome { tensors })
    }

    /// The scale a tensor's distances are read against: for a tensor after a step, the size of
    /// its update (largest absolute change from the initial weights), floored at ε_f32 times its
    /// initial magnitude; for logits and the loss, their largest magnitude.
    pub fn scale(&self, name: &str, referee: &ArrayD<f32>) -> f32 {
        match self.weights.get(name) {
            Some(initial) => {
                let update = max_abs_difference(referee, initial);
                update.max(EPSILON_F32 * max_abs(initial))
            }
            None => max_abs(referee),
        }
    }
}

/// The eight standard cases: logits and one SGD step (momentum 0.9) of the mlp (batch 8), the
/// cnn (batch 8), ResNet-18 on 3×32×32 (logits batch 4, step batch 16) and the every-layer spec
/// without dropout (batch 4 and 8).
///
/// ResNet-18's step takes batch 16 because layer4 works on 1×1 maps, where training-mode batch
/// norm normalises over the batch alone; over 4 values that step is ill-conditioned. Its images
/// are [`RESNET18_STEP_IMAGES`]'s.
pub fn standard_cases() -> Vec<Case> {
    vec![
        Case::logits(presets::mlp([1, 28, 28], 10), 8),
        Case::logits(presets::cnn([1, 28, 28], 10), 8),
        Case::logits(presets::resnet18([3, 32, 32], 10), 4),
        Case::logits(every_layer_spec(), 4),
        Case::sgd_step(presets::mlp([1, 28, 28], 10), 8, 0.9),
        Case::sgd_step(presets::cnn([1, 28, 28], 10), 8, 0.9),
        Case::sgd_step_on(
            presets::resnet18([3, 32, 32], 10),
            16,
            0.9,
            RESNET18_STEP_IMAGES,
        ),
        Case::sgd_step(every_layer_without_dropout(), 8, 0.9),
    ]
}

/// [`standard_cases`] in Keras's conventions, which the Keras backends' panels run: every batch
/// norm's running variance updated with the biased batch variance
/// ([`Case::with_biased_running_variance`]). A single SGD step from zero velocity is the same
/// update in Keras's momentum form (`v = m·v − lr·g; w += v`) as in PyTorch's, so the cases are
/// otherwise the standard ones.
pub fn keras_convention_cases() -> Vec<Case> {
    standard_cases()
        .into_iter()
        .map(Case::with_biased_running_variance)
        .collect()
}

/// A case's name without the conventions it states in parentheses: `mlp SGD step (biased
/// running variance)` is the `mlp SGD step` of its list.
pub fn base_name(name: &str) -> &str {
    name.split(" (").next().unwrap_or(name)
}

/// Expands to one `#[test]` per standard case, each checking the panel that `$compute` makes
/// of that case of `$cases` (`fn() -> Vec<Case>`, `fn(Case) -> Panel`), and a test that no case
/// of `$cases` is left without one. Each panel is computed once, by `computed(name)`, which the
/// caller's other tests may read too.
#[macro_export]
macro_rules! parity_tests {
    ($cases:path, $compute:path) => {
        /// Each case, computed once for every test that reads it.
        fn computed(name: &str) -> &'static $crate::conformance::parity::Panel {
            static COMPUTED: ::std::sync::OnceLock<
                Vec<::std::sync::OnceLock<$crate::conformance::parity::Panel>>,
            > = ::std::sync::OnceLock::new();
            let cases = $cases();
            let index = cases
                .iter()
                .position(|case| $crate::conformance::parity::base_name(&case.name) == name)
                .unwrap_or_else(|| panic!("no parity case {name}"));
            COMPUTED.get_or_init(|| cases.iter().map(|_| ::std::sync::OnceLock::new()).collect())
                [index]
                .get_or_init(|| $compute(cases[index].clone()))
        }

        /// Judges every engine of the panel on one case (`Panel::check`).
        fn check(name: &str) {
            computed(name).check();
        }

        #[test]
        fn mlp_logits() {
            check("mlp logits");
        }

        #[test]
        fn cnn_logits() {
            check("cnn logits");
        }

        #[test]
        fn resnet18_logits() {
            check("resnet18 logits");
        }

        #[test]
        fn every_layer_logits() {
            check("every-layer logits");
        }

        #[test]
        fn mlp_sgd_step() {
            check("mlp SGD step");
        }

        #[test]
        fn cnn_sgd_step() {
            check("cnn SGD step");
        }

        #[test]
        fn resnet18_sgd_step() {
            check("resnet18 SGD step");
        }

        #[test]
        fn every_layer_sgd_step() {
            check("every-layer SGD step");
        }

        #[test]
        fn the_cases_are_all_checked() {
            // The cases the tests above check, by name.
            let checked = [
                "mlp logits",
                "cnn logits",
                "resnet18 logits",
                "every-layer logits",
                "mlp SGD step",
                "cnn SGD step",
                "resnet18 SGD step",
                "every-layer SGD step",
            ];
            for case in $cases() {
                let name = $crate::conformance::parity::base_name(&case.name);
                assert!(
                    checked.contains(&name),
                    "the case {} has no parity test; add one to parity_tests!",
                    case.name
                );
            }
        }
    };
}

/// The seed of the images of ResNet-18's standard step. A step is a piecewise-smooth function
/// of its input: a ReLU's input within f32 rounding of zero opens or closes its gate depending
/// on the order of the sums before it, and changes the update of every tensor upstream by a
/// finite amount. With the images of seed 24 (the parity checks' earlier case), channel 488 of
/// `layer4.0.bn1` is such an input: burn and TensorFlow with the batch reversed, burn-tch with
/// its halves swapped under the AVX2 cap, and ATen's scalar kernels in the natural order all
/// move `layer4.0.bn1.bias` by 0.39 of its update, a gate flipped rather than a kernel wrong.
/// Seeds 25 and 30 have such inputs too; seed 26 showed none in any engine's batch orders on
/// this machine uncapped, under the AVX2, AVX-512 (core), SSE4.1 and ATen-scalar caps, and with
/// TensorFlow's oneDNN operations off. A flip the noise measurement sees widens only the
/// tensors upstream of it; a case without one keeps every bound tight.
pub const RESNET18_STEP_IMAGES: u64 = 26;

/// The every-layer spec without its dropout, whose masks no two engines draw alike.
pub fn every_layer_without_dropout() -> ModelSpec {
    let mut spec = every_layer_spec();
    spec.layers
        .retain(|layer| !matches!(layer.layer, Layer::Dropout { .. }));
    spec
}

fn max_abs(tensor: &ArrayD<f32>) -> f32 {
    tensor.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// The largest absolute difference between two tensors of one shape; NaN if either holds a
/// NaN, so that a NaN anywhere fails a judgement (and, being no measurement, widens no noise).
fn max_abs_difference(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    a.iter().zip(b.iter()).fold(0.0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(d)
        }
    })
}

/// The noise of a case: per tensor and per backend, the largest difference between two batch
/// orders that backend computed in f32.
#[derive(Clone, Debug, Default)]
pub struct Noise {
    /// Tensor → backend → the largest absolute difference between two of its orders.
    spreads: BTreeMap<String, BTreeMap<String, f32>>,
}

impl Noise {
    /// Computes `case` on `backend` in each of its orders ([`Case::orders`]), records each
    /// tensor's largest difference between two of them, and returns the outcomes in that
    /// order, the natural one first.
    pub fn measure(&mut self, case: &Case, backend: &dyn Backend) -> Result<Vec<Outcome>> {
        let outcomes = case
            .orders()
            .iter()
            .map(|&order| case.run(backend, order))
            .collect::<Result<Vec<_>>>()?;
        self.record(&backend.info().backend, &outcomes);
        Ok(outcomes)
    }

    /// Records, for each tensor, the largest difference between two of `outcomes`, which
    /// `source` computed in different orders.
    pub fn record(&mut self, source: &str, outcomes: &[Outcome]) {
        for (i, a) in outcomes.iter().enumerate() {
            for b in &outcomes[i + 1..] {
                for (name, x) in &a.tensors {
                    let Some(y) = b.tensors.get(name) else {
                        continue;
                    };
                    let difference = max_abs_difference(x, y);
                    let widest = self
                        .spreads
                        .entry(name.clone())
                        .or_default()
                        .entry(source.to_string())
                        .or_insert(0.0);
                    // A NaN is no measurement: it must not widen a bound.
                    if difference > *widest {
                        *widest = difference;
                    }
                }
            }
        }
    }

    /// The noise `engine` is judged against on `tensor`: the widest spread of every other
    /// backend measured, and which backend showed it. An engine's own orders never vouch for
    /// it, so an engine whose result moves with the order of the batch (a defect that drops an
    /// example, say) cannot widen its own bound.
    pub fn for_judging(&self, tensor: &str, engine: &str) -> (f32, String) {
        self.spreads
            .get(tensor)
            .into_iter()
            .flatten()
            .filter(|(source, _)| source.as_str() != engine)
            .fold(
                (0.0, "no other backend".to_string()),
                |widest, (source, &spread)| {
                    if spread > widest.0 {
                        (spread, source.clone())
                    } else if widest.0 == 0.0 {
                        // Measured, and every order agreed to the bit.
                        (0.0, "every other backend".to_string())
                    } else {
                        widest
                    }
                },
            )
    }
}

/// One tensor's parity: its distance from the referee, the noise, and the bound.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorParity {
    /// The tensor's name.
    pub name: String,
    /// Largest absolute difference from the referee.
    pub distance: f32,
    /// The noise measured on it (largest difference between two batch orders of one backend).
    pub noise: f32,
    /// The backend whose orders differed most.
    pub noise_source: String,
    /// ε_f32 times the referee's largest magnitude: the noise's floor.
    pub floor: f32,
    /// The scale distances are read against ([`Case::scale`]).
    pub scale: f32,
    /// The bound: the multiple times the noise or its floor, whichever is larger.
    pub bound: f32,
}

impl TensorParity {
    /// Distance over bound: above 1 fails.
    pub fn ratio(&self) -> f32 {
        if self.bound > 0.0 {
            self.distance / self.bound
        } else if self.distance == 0.0 {
            0.0
        } else {
            f32::INFINITY
        }
    }

    /// Whether the tensor is within its bound (a NaN distance is not).
    pub fn holds(&self) -> bool {
        self.distance <= self.bound
    }
}

/// An engine's parity on one case against the referee.
#[derive(Clone, Debug)]
pub struct Judgement {
    /// The case's name.
    pub case: String,
    /// The engine judged.
    pub engine: String,
    /// What it was judged against.
    pub referee: String,
    /// The multiple of the noise allowed.
    pub multiple: f32,
    /// Every tensor, by name.
    pub tensors: Vec<TensorParity>,
}

impl Judgement {
    /// Judges `outcome` (of `engine`) against the referee's outcome on `case`, each tensor
    /// within `multiple` noises.
    pub fn new(
        case: &Case,
        engine: &str,
        outcome: &Outcome,
        referee: (&str, &Outcome),
        noise: &Noise,
        multiple: f32,
    ) -> Judgement {
        let tensors = referee
            .1
            .tensors
            .iter()
            .map(|(name, truth)| {
                let distance = match outcome.tensors.get(name) {
                    Some(ours) if ours.shape() == truth.shape() => max_abs_difference(ours, truth),
                    _ => f32::INFINITY,
                };
                let (noise, noise_source) = noise.for_judging(name, engine);
                let floor = EPSILON_F32 * max_abs(truth);
                TensorParity {
                    name: name.clone(),
                    distance,
                    noise,
                    noise_source,
                    floor,
                    scale: case.scale(name, truth),
                    bound: multiple * noise.max(floor),
                }
            })
            .collect();
        Judgement {
            case: case.name.clone(),
            engine: engine.to_string(),
            referee: referee.0.to_string(),
            multiple,
            tensors,
        }
    }

    /// The tensor nearest its bound (the first that fails, if any fails).
    pub fn worst(&self) -> Option<&TensorParity> {
        self.tensors.iter().max_by(|a, b| {
            let key = |t: &TensorParity| if t.holds() { t.ratio() } else { f32::INFINITY };
            key(a).total_cmp(&key(b))
        })
    }

    /// The tensors beyond their bounds.
    pub fn failures(&self) -> impl Iterator<Item = &TensorParity> {
        self.tensors.iter().filter(|t| !t.holds())
    }

    /// Whether every tensor is within its bound.
    pub fn holds(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The errors this check catches, relative to each tensor's scale: the smallest (on the
    /// tensor whose bound is tightest) and the largest any tensor may carry unseen, with those
    /// tensors' names. An error of a tensor's update beyond its bound over its scale fails.
    pub fn sensitivity(&self) -> Option<((f32, &str), (f32, &str))> {
        let relative = self
            .tensors
            .iter()
            .filter(|t| t.scale > 0.0)
            .map(|t| (t.bound / t.scale, t.name.as_str()));
        let tightest = relative.clone().min_by(|a, b| a.0.total_cmp(&b.0))?;
        let loosest = relative.max_by(|a, b| a.0.total_cmp(&b.0))?;
        Some((tightest, loosest))
    }
}

impl fmt::Display for Judgement {
    /// One line: the verdict, the worst tensor with its distance, noise and bound relative to
    /// its scale; then one line per failing tensor.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.holds() { "agrees" } else { "DISAGREES" };
        write!(
            f,
            "{}: {} {verdict} with {} ",
            self.case, self.engine, self.referee
        )?;
        match self.worst() {
            Some(worst) => write!(f, "(closest to its bound: {})", Row(worst, self.multiple))?,
            None => write!(f, "(no tensors)")?,
        }
        for failure in self.failures() {
            write!(
                f,
                "\n  {} is beyond its bound: {}",
                failure.name,
                Row(failure, self.multiple)
            )?;
        }
        Ok(())
    }
}

/// A tensor's figures, relative to its scale.
struct Row<'a>(&'a TensorParity, f32);

impl fmt::Display for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Row(t, multiple) = *self;
        let relative = |x: f32| if t.scale > 0.0 { x / t.scale } else { x };
        write!(
            f,
            "{} differs by {:.2e} of its scale {:.2e}; noise {:.2e} ({}'s batch orders), floor {:.2e}, bound {multiple}× = {:.2e} ({:.2} of the bound)",
            t.name,
            relative(t.distance),
            t.scale,
            relative(t.noise),
            t.noise_source,
            relative(t.floor),
            relative(t.bound),
            t.ratio(),
        )
    }
}

/// How the referee is named in messages.
const REFEREE_NAME: &str = "the f64 referee";

/// A case computed by the referee, and by every engine in every batch order, which measures
/// the noise; each engine's natural-order outcome is the one judged.
///
/// A test binary computes the panels of the engines it links; the Python frameworks, which
/// cannot share a process with TensorFlow's C library, are judged in a panel of their own.
#[derive(Debug)]
pub struct Panel {
    /// The case.
    pub case: Case,
    /// The referee's outcome in the natural order.
    pub referee: Outcome,
    /// Every engine's spread over the case's orders.
    pub noise: Noise,
    /// Each engine's name and its outcome in the natural order.
    pub engines: Vec<(String, Outcome)>,
}

impl Panel {
    /// Computes `case` on the referee and on every engine, in every order; panics naming the
    /// engine that fails, as a conformance check does.
    pub fn compute(case: Case, referee: &dyn Backend, engines: &[Box<dyn Backend>]) -> Panel {
        let truth = case
            .run(referee, BatchOrder::Natural)
            .unwrap_or_else(|error| panic!("{}: the referee: {error}", case.name));
        let mut noise = Noise::default();
        let engines = engines
            .iter()
            .map(|engine| {
                let name = engine.info().backend;
                let outcomes = noise
                    .measure(&case, engine.as_ref())
                    .unwrap_or_else(|error| panic!("{}: {name}: {error}", case.name));
                let natural = outcomes
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| panic!("{}: {name}: no outcome", case.name));
                (name, natural)
            })
            .collect();
        Panel {
            case,
            referee: truth,
            noise,
            engines,
        }
    }

    /// `engine`'s `outcome` judged against the referee, within [`REFEREE_MULTIPLE`] noises.
    pub fn judge(&self, engine: &str, outcome: &Outcome) -> Judgement {
        Judgement::new(
            &self.case,
            engine,
            outcome,
            (REFEREE_NAME, &self.referee),
            &self.noise,
            REFEREE_MULTIPLE,
        )
    }

    /// Every engine's judgement.
    pub fn judgements(&self) -> Vec<Judgement> {
        self.engines
            .iter()
            .map(|(engine, outcome)| self.judge(engine, outcome))
            .collect()
    }

    /// Judges every engine, prints each engine's line and its sensitivity (and every tensor
    /// with `PARALLAX_PARITY_TABLE=1`), and panics naming each engine and tensor beyond its
    /// bound.
    pub fn check(&self) {
        let judgements = self.judgements();
        for judgement in &judgements {
            eprintln!("parity: {judgement}");
            if let Some(((tightest, on), (loosest, worst))) = judgement.sensitivity() {
                eprintln!(
                    "parity sensitivity: {}: {}: an error of {tightest:.1e} of a tensor's scale is caught on {on}, of {loosest:.1e} on every tensor (the loosest: {worst})",
                    judgement.case, judgement.engine
                );
            }
        }
        if std::env::var_os("PARALLAX_PARITY_TABLE").is_some() {
            self.print_table(&judgements);
        }
        let failures: Vec<String> = judgements
            .iter()
            .filter(|judgement| !judgement.holds())
            .map(ToString::to_string)
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Every tensor: its scale, the noise and the floor relative to it, then each engine's
    /// distance in multiples of the noise (the bound is at [`REFEREE_MULTIPLE`]).
    fn print_table(&self, judgements: &[Judgement]) {
        let Some(first) = judgements.first() else {
            return;
        };
        let mut lines = vec![format!(
            "{:<32} {:>9} {:>9} {:>9} | distance / max(noise, floor): {}",
            "tensor",
            "scale",
            "noise/s",
            "floor/s",
            judgements
                .iter()
                .map(|j| format!("{:>9}", j.engine))
                .collect::<String>()
        )];
        for (row, tensor) in first.tensors.iter().enumerate() {
            let relative = |x: f32| x / tensor.scale;
            let multiples: String = judgements
                .iter()
                .map(|j| {
                    let t = &j.tensors[row];
                    format!("{:>9.2}", t.distance / t.noise.max(t.floor))
                })
                .collect();
            lines.push(format!(
                "{:<32} {:>9.2e} {:>9.2e} {:>9.2e} | {multiples}",
                tensor.name,
                tensor.scale,
                relative(tensor.noise),
                relative(tensor.floor),
            ));
        }
        eprintln!("parity table: {}\n{}", self.case.name, lines.join("\n"));
    }
}

//! The checks of the conformance suite, one function per check, each taking the backend under
//! test; [`conformance_tests!`](crate::conformance_tests) expands to one `#[test]` per check.

use std::path::PathBuf;

use ndarray::{Array1, Array2, Array4, Axis};

use crate::backend::Backend;
use crate::data::{Batch, Dataset, EpochPlan};
use crate::ledger::Topic;
use crate::optim::{AdamFormulation, OptimizerConfig, OptimizerKind};
use crate::spec::VarianceEstimator;
use crate::spec::{Layer, ModelSpec, NamedLayer, Padding, Pair, ResolvedModel, StrideAt, presets};
use crate::weights::{Weights, relative_difference};
use crate::{Error, WeightsError, init};

use super::repo_root;

fn named(name: &str, layer: Layer) -> NamedLayer {
    NamedLayer {
        name: Some(name.into()),
        layer,
    }
}

/// A small spec that uses every layer kind at least once, on 3×12×12 inputs.
pub fn every_layer_spec() -> ModelSpec {
    ModelSpec {
        name: "every-layer".into(),
        input: [3, 12, 12],
        layers: vec![
            named(
                "conv",
                Layer::Conv2d {
                    filters: 8,
                    kernel: Pair::square(3),
                    stride: Pair::square(2),
                    padding: Padding::Same,
                    bias: true,
                },
            ),
            named(
                "bn",
                Layer::BatchNorm {
                    epsilon: 1e-5,
                    momentum: 0.1,
                },
            ),
            named("relu", Layer::Relu),
            named(
                "max",
                Layer::MaxPool2d {
                    kernel: Pair::square(3),
                    stride: Some(Pair::square(1)),
                    padding: Padding::Explicit([1, 0, 1, 0]),
                },
            ),
            named("block", Layer::basic_block(8, 1)),
            named("neck", Layer::bottleneck(4, 2)),
            // Keras's form: the stride in the first 1×1, biases on the convolutions.
            named(
                "neck_v1",
                Layer::Bottleneck {
                    planes: 4,
                    stride: 2,
                    stride_at: StrideAt::Conv1,
                    conv_bias: true,
                    epsilon: 1.001e-5,
                    momentum: 0.01,
                },
            ),
            named(
                "avg",
                Layer::AvgPool2d {
                    kernel: Pair::square(2),
                    stride: Some(Pair::square(1)),
                    padding: Padding::Same,
                },
            ),
            named("flatten", Layer::Flatten),
            named(
                "fc1",
                Layer::Dense {
                    units: 16,
                    in_features: None,
                    bias: true,
                },
            ),
            named(
                "bn_flat",
                Layer::BatchNorm {
                    epsilon: 1e-3,
                    momentum: 0.01,
                },
            ),
            named("dropout", Layer::Dropout { rate: 0.5 }),
            named(
                "fc2",
                Layer::Dense {
                    units: 5,
                    in_features: None,
                    bias: false,
                },
            ),
        ],
    }
}

/// Deterministic pseudo-random inputs in [-1, 1), without an RNG dependency on the caller's side.
pub fn test_images(n: usize, shape: [usize; 3], salt: u64) -> Array4<f32> {
    let [c, h, w] = shape;
    let mut state = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    Array4::from_shape_fn((n, c, h, w), |_| {
        // SplitMix64: a tiny portable generator is all a test input needs.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

pub(super) fn resolve(spec: &ModelSpec) -> ResolvedModel {
    spec.resolve().expect("conformance specs resolve")
}

/// The backend names itself and its engine, and its fairness ledger has an entry on every
/// topic.
pub fn reports_itself(backend: &dyn Backend) {
    let info = backend.info();
    assert!(!info.backend.is_empty(), "backend name is empty");
    assert!(
        !info.framework_version.is_empty(),
        "framework version is empty"
    );
    assert!(info.threads >= 1, "threads must be at least 1");
    assert_eq!(
        info.ledger.missing(),
        Vec::<Topic>::new(),
        "ledger topics without an entry"
    );
    let model = resolve(&presets::mlp([1, 4, 4], 2));
    let net = backend.build(&model, None).expect("build");
    assert_eq!(net.backend(), info.backend, "the net names another backend");
    assert_eq!(net.model(), &model, "the net holds another model");
}

/// The matrix-product probe behind the machine's peak computes the product it times: the sum of
/// its elements matches the host's, run after run, and a peak comes out positive.
pub fn the_matmul_probe_multiplies(backend: &dyn Backend) {
    // A size that is not a multiple of a BLAS block, so that edge handling counts too.
    let (left, right) = crate::peak::operands(67);
    let expected = crate::peak::product_sum(left.view(), right.view());
    let mut probe = backend
        .matmul_probe(left.view(), right.view(), crate::Precision::F32)
        .expect("probe");
    for run in 0..2 {
        let sum = probe.multiply().expect("multiply");
        // Every operand lies in (0, 1), so neither the 4,489 dot products of 67 terms nor their
        // sum (about 7.5e4) cancels. f32 rounding (u = 2⁻²⁴ ≈ 6e-8) then moves the sum by about
        // u·√n/3 ≈ 1.3e-6 relative at one σ even for a plain sequential f32 sum of all 4,489
        // elements, the least accurate order an engine uses (an emulation of it on these
        // operands errs by 2e-7); the worst case γ₄₄₈₉ ≈ 2.7e-4 needs every rounding to go one
        // way, which round-to-nearest on varied values does not do. 1e-5 still catches a
        // transposed operand (1.5e-4 for Bᵀ, 9.7e-4 for Aᵀ) and a lost row, column or edge
        // tile (1.5e-2 per line of 67).
        assert!(
            (sum - expected).abs() <= 1e-5 * expected.abs(),
            "run {run}: the product's sum is {sum}, the host's {expected}"
        );
    }
    let peak = crate::peak::measure(backend, 64, 3).expect("peak");
    assert_eq!(peak.backend, backend.info().backend);
    assert!(peak.gflops.is_finite() && peak.gflops > 0.0, "{peak:?}");
    assert!(peak.best_seconds <= peak.median_seconds);

    // In bf16, where the backend states it: each operand rounds to bf16 (a relative error of
    // at most u = 2⁻⁸), each of the 67 products is summed in f32 (γ₆₇ = 67·2⁻²⁴/(1 − 67·2⁻²⁴)),
    // and each element of the product rounds back to bf16 (u again). Every term is positive,
    // so nothing cancels and the sum of the elements errs by at most (1 + u)³(1 + γ₆₇) − 1 ≈
    // 1.2% of itself. A bf16 peak comes out positive, and labelled bf16.
    use crate::precision::Precision;
    if backend.info().precisions.contains(&Precision::Bf16) {
        let mut probe = backend
            .matmul_probe(left.view(), right.view(), Precision::Bf16)
            .expect("bf16 probe");
        let u = Precision::Bf16.unit_roundoff();
        let gamma = 67.0 * 2f64.powi(-24) / (1.0 - 67.0 * 2f64.powi(-24));
        let bound = (1.0 + u).powi(3) * (1.0 + gamma) - 1.0;
        let sum = probe.multiply().expect("bf16 multiply");
        assert!(
            (sum - expected).abs() <= bound * expected,
            "the bf16 product's sum is {sum}, the host's {expected}: beyond {bound:.4} of it"
        );
        let peak = crate::peak::measure_in(backend, 64, 3, Precision::Bf16).expect("bf16 peak");
        assert_eq!(peak.precision, Precision::Bf16);
        assert!(peak.gflops.is_finite() && peak.gflops > 0.0, "{peak:?}");
    } else {
        assert!(matches!(
            crate::peak::measure_in(backend, 64, 3, Precision::Bf16),
            Err(Error::Unsupported { .. })
        ));
    }
}

/// `predict` gives `[N, classes]` finite logits for every preset.
pub fn predicts_logits_of_the_right_shape(backend: &dyn Backend) {
    for spec in [
        presets::mlp([1, 28, 28], 10),
        presets::cnn([1, 28, 28], 10),
        presets::resnet18([3, 32, 32], 7),
        every_layer_spec(),
    ] {
        let model = resolve(&spec);
        let weights = init::canonical(&model, 1);
        let mut net = backend.build(&model, Some(&weights)).expect("build");
        let logits = net
            .predict(test_images(3, model.input(), 2).view())
            .expect("predict");
        assert_eq!(
            logits.dim(),
            (3, model.classes()),
            "logits shape for {}",
            spec.name
        );
        assert!(
            logits.iter().all(|v| v.is_finite()),
            "non-finite logits for {}",
            spec.name
        );
    }
}

/// Canonical weights go in and come out unchanged, for every layer kind.
pub fn weights_round_trip_for_every_layer_kind(backend: &dyn Backend) {
    for spec in [every_layer_spec(), presets::resnet50([3, 32, 32], 3)] {
        let model = resolve(&spec);
        let weights = init::canonical(&model, 3);
        let net = backend.build(&model, Some(&weights)).expect("build");
        let exported = net.export_weights().expect("export");
        exported
            .check(&model)
            .expect("exported weights fit the model");
        let (name, difference) = weights
            .max_relative_difference(&exported)
            .expect("same names");
        // Import and export only copy and permute f32 values, with no arithmetic, so anything
        // but exact equality on any host is a defect (a cast through another type, a layout
        // permuted one way and not back).
        assert!(
            difference == 0.0,
            "{}: tensor {name} changed by {difference} in a round trip",
            spec.name
        );
    }
}

/// A ResNet with convolution biases (Keras's form) and the same ResNet without them
/// (torchvision's) give the same logits from one set of weights: the biases folded into the
/// running means one way, zeros the other way ([`Weights::fit_to`]).
pub fn one_set_of_weights_runs_in_both_resnet_forms(backend: &dyn Backend) {
    let spec = |conv_bias: bool| ModelSpec {
        name: format!("forms-{conv_bias}"),
        input: [3, 16, 16],
        layers: vec![
            named(
                "conv1",
                Layer::Conv2d {
                    filters: 8,
                    kernel: Pair::square(3),
                    stride: Pair::square(2),
                    padding: Padding::Explicit([1; 4]),
                    bias: conv_bias,
                },
            ),
            named(
                "bn1",
                Layer::BatchNorm {
                    epsilon: 1.001e-5,
                    momentum: 0.01,
                },
            ),
            named("relu", Layer::Relu),
            named(
                "layer1.0",
                Layer::Bottleneck {
                    planes: 4,
                    stride: 2,
                    stride_at: StrideAt::Conv1,
                    conv_bias,
                    epsilon: 1.001e-5,
                    momentum: 0.01,
                },
            ),
            named("avgpool", Layer::GlobalAvgPool),
            named(
                "fc",
                Layer::Dense {
                    units: 3,
                    in_features: None,
                    bias: true,
                },
            ),
        ],
    };
    let (with_bias, without_bias) = (resolve(&spec(true)), resolve(&spec(false)));
    let images = test_images(2, [3, 16, 16], 11);
    let logits = |model: &ResolvedModel, weights: &Weights| {
        let mut net = backend.build(model, Some(weights)).expect("build");
        net.predict(images.view()).expect("predict")
    };
    // Non-zero running means, so that folding a bias into them is visible.
    let mut keras = init::canonical(&with_bias, 12);
    for param in with_bias.params() {
        if param.name.ends_with("running_mean") {
            let values = test_images(1, [1, 1, param.shape[0]], 13)
                .into_shape_clone(param.shape.clone())
                .expect("shape");
            keras.insert(param.name.clone(), values.into_dyn());
        }
    }
    let reference = logits(&with_bias, &keras);
    let folded = keras
        .clone()
        .fit_to(&without_bias)
        .expect("fit to torchvision's form");
    let difference = relative_difference(reference.view(), logits(&without_bias, &folded).view());
    // Both forms run the same network on the same engine; they differ where μ − b is rounded
    // once instead of x + b − μ (a few u = 2⁻²⁴ at each of the five batch norms) and in a
    // kernel fused with a bias, through dot products of at most 36 terms (γ₃₆ ≈ 2e-6). That
    // is about 1e-6 of the logits' scale (a tiny f32 ResNet's logits lie within 1e-6 of an f64
    // evaluation, see `imported_weights_give_their_producers_logits`), a hundredth of the
    // bound. A bias left unfolded, or folded with the wrong sign, shifts its batch norm's input
    // by up to 1/√8 ≈ 0.35 (the biases are drawn within ±1/√fan_in) against a unit running
    // variance: a change as large as the activations themselves.
    assert!(
        difference < 1e-4,
        "folded biases change the logits by {difference}"
    );
    let back = folded.fit_to(&with_bias).expect("fit to Keras's form");
    let difference = relative_difference(reference.view(), logits(&with_bias, &back).view());
    // The same arithmetic as above, with the fold undone (zero biases, μ − b as the mean): the
    // same bound for the same reasons.
    assert!(
        difference < 1e-4,
        "zero biases change the logits by {difference}"
    );
}

/// Missing tensors and wrong shapes are typed errors.
pub fn rejects_weights_that_do_not_fit(backend: &dyn Backend) {
    let model = resolve(&presets::mlp([1, 28, 28], 10));
    let weights = init::canonical(&model, 4);
    let mut missing: Weights = weights
        .iter()
        .filter(|(name, _)| *name != "fc2.bias")
        .map(|(name, tensor)| (name.to_string(), tensor.clone()))
        .collect();
    let error = backend.build(&model, Some(&missing)).unwrap_err();
    assert!(
        matches!(&error, Error::Weights(WeightsError::Missing { name }) if name == "fc2.bias"),
        "{error}"
    );
    missing.insert("fc2.bias", ndarray::ArrayD::zeros(ndarray::IxDyn(&[11])));
    let mut net = backend.build(&model, None).expect("build without weights");
    let error = net.import_weights(&missing).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Weights(WeightsError::Shape { expected, actual, .. })
                if expected == &[10] && actual == &[11]
        ),
        "{error}"
    );
}

/// Images of the wrong shape give an error, not a panic.
pub fn rejects_inputs_of_the_wrong_shape(backend: &dyn Backend) {
    let model = resolve(&presets::mlp([1, 28, 28], 10));
    let mut net = backend.build(&model, None).expect("build");
    let wrong = test_images(2, [1, 27, 28], 5);
    assert!(matches!(
        net.predict(wrong.view()),
        Err(Error::InputShape { .. })
    ));
}

/// Labels that are not classes of the model, or too few of them, are typed errors.
pub fn rejects_labels_out_of_range(backend: &dyn Backend) {
    let model = resolve(&presets::mlp([1, 4, 4], 3));
    let mut net = backend.build(&model, None).expect("build");
    let optimizer = OptimizerConfig::sgd(0.1, 0.0);
    let images = test_images(2, model.input(), 18);
    for labels in [vec![0u32, 3], vec![1]] {
        let batch = Batch {
            images: images.clone(),
            labels: Array1::from(labels),
        };
        assert!(matches!(
            net.train_step(&batch, &optimizer),
            Err(Error::Data(_))
        ));
    }
}

/// Two predictions agree exactly, and evaluation changes no weight or running statistic.
pub fn evaluation_is_deterministic_and_leaves_weights_alone(backend: &dyn Backend) {
    let model = resolve(&every_layer_spec());
    let weights = init::canonical(&model, 6);
    let mut net = backend.build(&model, Some(&weights)).expect("build");
    let images = test_images(4, model.input(), 7);
    let first = net.predict(images.view()).expect("predict");
    let second = net.predict(images.view()).expect("predict");
    assert_eq!(first, second, "prediction is not deterministic");
    let after = net.export_weights().expect("export");
    assert_eq!(
        weights.max_relative_difference(&after).expect("names").1,
        0.0
    );
}

/// One plain SGD step on a linear classifier equals the analytic cross-entropy gradient step:
/// `W ← W − lr · (softmax(xWᵀ + b) − onehot)ᵀ x / N`. This pins down the loss's mean reduction,
/// the weight layout and the sign conventions.
pub fn sgd_step_matches_the_analytic_gradient(backend: &dyn Backend) {
    let spec = ModelSpec {
        name: "linear".into(),
        input: [2, 3, 3],
        layers: vec![
            named("flatten", Layer::Flatten),
            named(
                "fc",
                Layer::Dense {
                    units: 4,
                    in_features: None,
                    bias: true,
                },
            ),
        ],
    };
    let model = resolve(&spec);
    let weights = init::canonical(&model, 8);
    let mut net = backend.build(&model, Some(&weights)).expect("build");
    let images = test_images(5, model.input(), 9);
    let labels = Array1::from(vec![0u32, 3, 1, 3, 2]);
    let lr = 0.5;
    let loss = net
        .train_step(
            &Batch {
                images: images.clone(),
                labels: labels.clone(),
            },
            &OptimizerConfig::sgd(lr, 0.0),
        )
        .expect("train step");

    let x = images.into_shape_with_order((5, 18)).expect("flatten");
    let w = weights
        .get("fc.weight")
        .expect("w")
        .clone()
        .into_dimensionality::<ndarray::Ix2>()
        .expect("2-D");
    let b = weights
        .get("fc.bias")
        .expect("b")
        .clone()
        .into_dimensionality::<ndarray::Ix1>()
        .expect("1-D");
    let logits = x.dot(&w.t()) + &b;
    let mut probabilities = Array2::<f32>::zeros((5, 4));
    let mut expected_loss = 0.0f32;
    for (i, row) in logits.axis_iter(Axis(0)).enumerate() {
        let max = row.fold(f32::MIN, |m, &v| m.max(v));
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        for (j, v) in row.iter().enumerate() {
            probabilities[[i, j]] = (v - max).exp() / sum;
        }
        expected_loss -= (probabilities[[i, labels[i] as usize]]).ln() / 5.0;
    }
    let mut delta = probabilities;
    for (i, &label) in labels.iter().enumerate() {
        delta[[i, label as usize]] -= 1.0;
    }
    delta /= 5.0;
    let expected_w = &w - &(delta.t().dot(&x) * lr as f32);
    let expected_b = &b - &(delta.sum_axis(Axis(0)) * lr as f32);

    // Both sides compute in f32 from bit-identical inputs. Each logit is a dot product of 19
    // terms with Σ|wᵢxᵢ| + |b| ≤ 1.9 for these weights and images, so it errs by at most
    // γ₁₉·1.9 ≈ 2e-6 (γₙ = nu/(1 − nu), u = 2⁻²⁴); the mean loss, whose gradient in the logits
    // sums to at most 2, by about 4e-6 per side. 1e-5·max(|loss|, 1), with the loss ≈ 1.4,
    // covers both sides' worst case. A sum over the five examples instead of their mean
    // multiplies the loss by 5; a wrong label or sign changes it by O(1).
    assert!(
        (loss - expected_loss).abs() <= 1e-5 * expected_loss.abs().max(1.0),
        "loss {loss} vs {expected_loss}"
    );
    let after = net.export_weights().expect("export");
    let got_w = after.get("fc.weight").expect("w");
    let got_b = after.get("fc.bias").expect("b");
    let dw = relative_difference(expected_w.view().into_dyn(), got_w.view());
    let db = relative_difference(expected_b.view().into_dyn(), got_b.view());
    // A logit off by 2e-6 moves a probability by at most 1e-6, a gradient entry (a mean of
    // five terms with |x| < 1, γ₅ on top) by about 1.5e-6 and, times lr = 0.5, a weight by
    // about 8e-7 per side. Against the tensors' scale after the step (about 0.29 for the
    // weight, 0.17 for the bias) that is at most 5e-6 and 9e-6 with both sides' errors added,
    // under 1e-5. The updates are large here (up to 0.12), so a step without the 1/N (five
    // times the update), with the wrong sign or a transposed layout fails by O(1), and even an
    // update scaled by 1 + 1e-4 moves the tensors by 4e-5 of their scale.
    assert!(
        dw <= 1e-5 && db <= 1e-5,
        "SGD step differs from the analytic one: weight {dw}, bias {db}"
    );
}

/// Adam at `lr` in PyTorch's formulation, or in the backend's own where its framework fixes
/// the formulation ([`crate::BackendInfo::fixed`]), with that formulation's usual ε: for the
/// checks that need some Adam, not a particular one.
fn adam_for(backend: &dyn Backend, lr: f64) -> OptimizerConfig {
    let info = backend.info();
    let fixed = info.fixed.contains(&Topic::OptimizerFormulation);
    match info.native_defaults.adam_formulation {
        AdamFormulation::Keras if fixed => OptimizerConfig::adam_keras(lr),
        _ => OptimizerConfig::adam(lr),
    }
}

/// Whether `result` is the backend's refusal of a convention on `topic` that its framework's
/// public API cannot change (a topic in [`crate::BackendInfo::fixed`]), said on stderr so that the
/// check is never skipped silently; any other error fails the check.
fn refused_as_fixed<T>(backend: &dyn Backend, topic: Topic, result: &crate::Result<T>) -> bool {
    match result {
        Ok(_) => false,
        Err(Error::Unsupported { what, .. }) if backend.info().fixed.contains(&topic) => {
            eprintln!(
                "{}: not checked, since {topic:?} is fixed in this framework: {what}",
                backend.info().backend
            );
            true
        }
        Err(error) => panic!("{error}"),
    }
}

/// Training steps update batch-norm running statistics, with the unbiased variance (PyTorch's) or the
/// biased one (Keras's and burn's) as the model says; prediction doesn't.
pub fn batch_norm_updates_running_statistics_in_training_only(backend: &dyn Backend) {
    let spec = ModelSpec {
        name: "bn".into(),
        input: [2, 2, 2],
        layers: vec![
            named(
                "bn",
                Layer::BatchNorm {
                    epsilon: 1e-5,
                    momentum: 0.5,
                },
            ),
            named("flatten", Layer::Flatten),
            named(
                "fc",
                Layer::Dense {
                    units: 2,
                    in_features: None,
                    bias: true,
                },
            ),
        ],
    };
    for estimator in [VarianceEstimator::Unbiased, VarianceEstimator::Biased] {
        let mut model = resolve(&spec);
        for norm in model.norms_mut() {
            norm.running_variance = estimator;
        }
        running_statistics_follow(backend, &model, estimator);
    }
}

/// One training step of `model` (a batch norm over 2×2×2 images, momentum 0.5) moves the
/// running statistics as `estimator` says, and a prediction does not.
fn running_statistics_follow(
    backend: &dyn Backend,
    model: &ResolvedModel,
    estimator: VarianceEstimator,
) {
    let weights = init::canonical(model, 10);
    let built = backend.build(model, Some(&weights));
    if refused_as_fixed(backend, Topic::BatchNormRunningVariance, &built) {
        return;
    }
    let mut net = built.expect("build");
    let images = test_images(3, model.input(), 11);
    net.predict(images.view()).expect("predict");
    let unchanged = net.export_weights().expect("export");
    assert_eq!(
        unchanged.get("bn.running_mean"),
        weights.get("bn.running_mean")
    );
    let step = net.train_step(
        &Batch {
            images: images.clone(),
            labels: Array1::from(vec![0, 1, 0]),
        },
        &OptimizerConfig::sgd(0.0001, 0.0),
    );
    if refused_as_fixed(backend, Topic::BatchNormRunningVariance, &step) {
        return;
    }
    step.expect("train step");
    let after = net.export_weights().expect("export");
    for channel in 0..2 {
        let values: Vec<f32> = images
            .index_axis(Axis(1), channel)
            .iter()
            .copied()
            .collect();
        let n = values.len() as f32;
        let mean = values.iter().sum::<f32>() / n;
        let squares = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>();
        let variance = match estimator {
            VarianceEstimator::Unbiased => squares / (n - 1.0),
            VarianceEstimator::Biased => squares / n,
        };
        let running_mean = after.get("bn.running_mean").expect("mean")[[channel]];
        let running_var = after.get("bn.running_var").expect("var")[[channel]];
        // Each channel's statistics are sums of 12 values in [-1, 1) (Σ|x| ≈ 5.5, Σx² ≤ 4.2),
        // so the engine's mean and variance, by whatever one- or two-pass formula, and this
        // f32 reference each err by a few γ₁₂ ≈ 7e-7 times values below 1: under 2e-6 in all,
        // a fifth of the bound. The unbiased and biased estimators put the running variance
        // 0.010 and 0.016 apart here, a thousand times the bound; a mean pooled over both
        // channels misses by 0.04. At momentum 0.5 PyTorch's and Keras's momentum conventions
        // agree, so that one is left to the parity checks.
        assert!(
            (running_mean - 0.5 * mean).abs() < 1e-5,
            "running mean {running_mean}, expected {}",
            0.5 * mean
        );
        assert!(
            (running_var - (0.5 + 0.5 * variance)).abs() < 1e-5,
            "running var {running_var}, expected {} (the {estimator} update)",
            0.5 + 0.5 * variance
        );
    }
}

/// The engine's own initial weights are the same for the same seed and differ for another, so
/// that a native run is as reproducible as a controlled one.
pub fn the_engines_own_initialisation_follows_the_seed(backend: &dyn Backend) {
    let model = resolve(&every_layer_spec());
    let draw = |seed| {
        backend.seed(seed);
        let net = backend.build(&model, None).expect("build");
        net.export_weights().expect("export")
    };
    let (first, again, other) = (draw(5), draw(5), draw(6));
    let weight = |weights: &Weights| -> Vec<f32> {
        weights
            .iter()
            .filter(|(name, _)| name.ends_with("weight"))
            .flat_map(|(_, tensor)| tensor.iter().copied().collect::<Vec<_>>())
            .collect()
    };
    assert_eq!(
        weight(&first),
        weight(&again),
        "the same seed drew other weights"
    );
    assert_ne!(
        weight(&first),
        weight(&other),
        "another seed drew the same weights"
    );
}

/// Dropout changes training outputs from step to step but never evaluation outputs.
pub fn dropout_is_active_in_training_only(backend: &dyn Backend) {
    let spec = ModelSpec {
        name: "dropout".into(),
        input: [1, 4, 4],
        layers: vec![
            named("flatten", Layer::Flatten),
            named("dropout", Layer::Dropout { rate: 0.5 }),
            named(
                "fc",
                Layer::Dense {
                    units: 3,
                    in_features: None,
                    bias: true,
                },
            ),
        ],
    };
    let model = resolve(&spec);
    let weights = init::canonical(&model, 12);
    let mut net = backend.build(&model, Some(&weights)).expect("build");
    let images = test_images(8, model.input(), 13);
    let batch = Batch {
        images: images.clone(),
        labels: Array1::from(vec![0, 1, 2, 0, 1, 2, 0, 1]),
    };
    // With a learning rate of 1e-12 no weight moves by more than about 1e-12, which changes a
    // loss near 1 by far less than its f32 ulp (1.2e-7): different losses can only come from
    // different dropout masks.
    let optimizer = OptimizerConfig::sgd(1e-12, 0.0);
    let losses: Vec<f32> = (0..4)
        .map(|_| net.train_step(&batch, &optimizer).expect("train step"))
        .collect();
    assert!(
        losses.windows(2).any(|pair| pair[0] != pair[1]),
        "dropout had no effect in training: {losses:?}"
    );
    assert_eq!(
        net.predict(images.view()).expect("predict"),
        net.predict(images.view()).expect("predict")
    );
}

/// A few dozen Adam steps fit a small, linearly separable problem.
pub fn training_fits_a_separable_problem(backend: &dyn Backend) {
    let model = resolve(&presets::cnn([1, 8, 8], 3));
    let weights = init::canonical(&model, 14);
    let mut net = backend.build(&model, Some(&weights)).expect("build");
    // Class k lights up row band k of the image, with noise.
    let noise = test_images(48, model.input(), 15);
    let labels: Vec<u32> = (0..48).map(|i| (i % 3) as u32).collect();
    let mut images = noise * 0.3;
    for (i, &label) in labels.iter().enumerate() {
        for row in 0..8 {
            if row / 3 == label as usize {
                images
                    .slice_mut(ndarray::s![i, 0, row, ..])
                    .mapv_inplace(|v| v + 1.0);
            }
        }
    }
    let batch = Batch {
        images: images.clone(),
        labels: Array1::from(labels.clone()),
    };
    let optimizer = adam_for(backend, 0.01);
    let first = net.train_step(&batch, &optimizer).expect("train step");
    let mut last = first;
    for _ in 0..30 {
        last = net.train_step(&batch, &optimizer).expect("train step");
    }
    // Not a rounding bound: the classes are separable with a margin (a band of +1 over noise
    // within ±0.3, so each band's mean alone tells them apart), and 30 Adam steps of 0.01 can
    // move every weight by up to 0.3, far more than fitting 48 examples needs. The loss starts
    // near ln 3 ≈ 1.1; a fifth of it, and two examples of 48 left wrong, leave room for the
    // engines' different trajectories, while a step that does not descend (a wrong sign, an
    // update that never reaches the weights, gradients of the wrong layer) stays near ln 3
    // and near a third right.
    assert!(last < first * 0.2, "loss went from {first} to only {last}");
    let predictions =
        crate::metrics::argmax_rows(net.predict(images.view()).expect("predict").view());
    let correct = predictions
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    assert!(correct >= 46, "only {correct}/48 right after training");
}

/// [`Model::train_epoch`](crate::Model::train_epoch) over a shuffled order, last batch
/// partial, leaves the same weights as [`Model::train_step`](crate::Model::train_step) on each
/// of the plan's batches, and reports each step; labels the model has no class for fail the
/// epoch with a data error. Adapters that override the epoch (to gather inside their engine)
/// must stay equal to their own steps.
pub fn an_epoch_equals_its_steps(backend: &dyn Backend) {
    let model = resolve(&presets::cnn([1, 8, 8], 3));
    let weights = init::canonical(&model, 21);
    let labels: Vec<u32> = (0..11).map(|i| (i % 3) as u32).collect();
    let classes = |n: usize| (0..n).map(|k| format!("class {k}")).collect::<Vec<_>>();
    let data = Dataset::new(
        "conformance",
        test_images(11, model.input(), 22),
        Array1::from(labels),
        classes(3),
    )
    .expect("a valid data set");
    let order = crate::data::epoch_order(data.len(), 23, 0);
    let plan = EpochPlan::new(&data, &order, 4).expect("a valid plan");
    let optimizer = OptimizerConfig::sgd(0.05, 0.9);

    let mut by_epoch = backend.build(&model, Some(&weights)).expect("build");
    let mut reported = Vec::new();
    let stats = by_epoch
        .train_epoch(&plan, &optimizer, &mut |progress| {
            reported.push((progress.step, progress.examples));
        })
        .expect("epoch");
    assert_eq!(reported, vec![(1, 4), (2, 8), (3, 11)]);
    assert_eq!(stats.steps, 3);

    let mut by_step = backend.build(&model, Some(&weights)).expect("build");
    let mut loss_sum = 0.0;
    for batch in plan.batches() {
        let loss = by_step.train_step(&batch, &optimizer).expect("step");
        loss_sum += f64::from(loss) * batch.len() as f64;
    }
    let (name, difference) = by_epoch
        .export_weights()
        .expect("export")
        .max_relative_difference(&by_step.export_weights().expect("export"))
        .expect("same names");
    // Not a budget for f32 error but for none: the epoch and the steps run the same engine
    // kernels, with the same shapes and threads, on bit-identical batches, so on any host they
    // give the same bits unless a kernel picks another blocking for another buffer. 1e-6 of
    // each tensor's largest value (about 8 ulps, ε = 2⁻²³) admits only such last-bit effects;
    // a batch skipped, repeated or taken in another order, or a momentum buffer reset, moves
    // fc2's bias alone (its gradient a batch mean of p − onehot, of order 0.1) by about
    // lr·0.1 = 5e-3 against its scale 1/√128 ≈ 0.09, and a last batch padded to 4 changes
    // that step's mean by a quarter.
    assert!(
        difference <= 1e-6,
        "the epoch and its steps differ by {difference:e} in {name}"
    );
    let mean_loss = loss_sum / data.len() as f64;
    // Both sides weight the same f32 step losses by their batch sizes in f64, so they agree
    // to f64 rounding, or to the losses' last bits (u = 2⁻²⁴ relative) in the case above;
    // 1e-5 of the loss is far above either. Averaging the three batch means instead differs
    // by (2L₃ − L₁ − L₂)/33, a few 1e-3 for losses that differ by a few hundredths, and
    // reporting one step's loss, or a sum, by O(1).
    assert!(
        (stats.train_loss - mean_loss).abs() <= 1e-5 * mean_loss.abs().max(1.0),
        "epoch loss {} against its steps' {mean_loss}",
        stats.train_loss
    );

    // Four classes in the data, three in the model.
    let wider = Dataset::new(
        "conformance",
        test_images(4, model.input(), 24),
        Array1::from(vec![0u32, 1, 2, 3]),
        classes(4),
    )
    .expect("a valid data set");
    let order = [0, 1, 2, 3];
    let plan = EpochPlan::new(&wider, &order, 4).expect("a valid plan");
    let result = by_epoch.train_epoch(&plan, &optimizer, &mut |_| {});
    assert!(matches!(result, Err(Error::Data(_))), "{result:?}");
}

/// GradCAM returns the layer's activations and, where the rest of the network is linear,
/// gradients equal to the class's weight row.
pub fn grad_cam_returns_activations_and_exact_gradients(backend: &dyn Backend) {
    let spec = ModelSpec {
        name: "cam".into(),
        input: [1, 6, 6],
        layers: vec![
            named(
                "conv",
                Layer::Conv2d {
                    filters: 2,
                    kernel: Pair::square(3),
                    stride: Pair::square(1),
                    padding: Padding::Same,
                    bias: true,
                },
            ),
            named("flatten", Layer::Flatten),
            named(
                "fc",
                Layer::Dense {
                    units: 3,
                    in_features: None,
                    bias: true,
                },
            ),
        ],
    };
    let model = resolve(&spec);
    let weights = init::canonical(&model, 16);
    let mut net = backend.build(&model, Some(&weights)).expect("build");
    let images = test_images(2, model.input(), 17);
    let classes = [2u32, 0];
    let cam = net
        .grad_cam(images.view(), "conv", &classes)
        .expect("grad_cam");
    assert_eq!(cam.activations.dim(), (2, 2, 6, 6));
    assert_eq!(cam.gradients.dim(), (2, 2, 6, 6));
    let w = weights.get("fc.weight").expect("w");
    for (i, &class) in classes.iter().enumerate() {
        let row = w.index_axis(Axis(0), class as usize);
        let expected = row.to_shape((2, 6, 6)).expect("reshape");
        let got = cam.gradients.index_axis(Axis(0), i);
        let difference = relative_difference(expected.view(), got.view());
        // Exact arithmetic, not a rounding budget: the backward pass of the dense layer
        // multiplies the weights by a one-hot row (1 for the class, 0 elsewhere), and 1·w plus
        // exact zeros is w in IEEE f32 on any host, as is the flatten's permutation. 1e-6 of
        // the row's largest value (about 8 ulps) admits only a kernel that reorders or fuses
        // differently; the wrong class's row, a transposed weight or the channels flattened in
        // another order differ by O(1), and gradients of the softmax instead of the logit are
        // scaled by p(1 − p) ≤ 1/4.
        assert!(
            difference <= 1e-6,
            "gradient differs from the weight row by {difference}"
        );
    }
}

/// GradCAM on a layer the model lacks, on a flat layer, or for a class the model lacks, is
/// an invalid argument, not a missing capability.
pub fn grad_cam_refuses_bad_arguments(backend: &dyn Backend) {
    let model = resolve(&presets::cnn([1, 8, 8], 3));
    let mut net = backend.build(&model, None).expect("build");
    let images = test_images(2, model.input(), 19);
    for (layer, classes) in [
        ("no-such-layer", [0, 1]),
        ("fc1", [0, 1]),
        ("conv2", [0, 3]),
    ] {
        let result = net.grad_cam(images.view(), layer, &classes);
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "GradCAM on {layer} for {classes:?}: {result:?}"
        );
    }
}

/// A profiled step computes what a plain step does (the same weights after two steps of
/// Adam), and its phases are timings; an engine that cannot split its step says so
/// with [`Error::Unsupported`], naming itself.
pub fn a_profiled_step_is_the_same_step(backend: &dyn Backend) {
    let model = resolve(&presets::cnn([1, 8, 8], 3));
    let weights = init::canonical(&model, 8);
    let batch = Batch {
        images: test_images(4, model.input(), 23),
        labels: Array1::from(vec![0, 1, 2, 1]),
    };
    let optimizer = adam_for(backend, 1e-2);
    let mut plain = backend.build(&model, Some(&weights)).expect("build");
    let mut profiled = backend.build(&model, Some(&weights)).expect("build");
    for step in 0..2 {
        plain.train_step(&batch, &optimizer).expect("step");
        let Some(phases) = unless_refused(
            backend,
            profiled.profile_step(&batch, &optimizer),
            "profiled step",
        ) else {
            return;
        };
        for (phase, seconds) in phases.named() {
            assert!(
                seconds.is_finite() && seconds >= 0.0,
                "step {step}: {phase} took {seconds} s"
            );
        }
        assert!(phases.total() > 0.0, "step {step}: no time at all");
    }
    let (a, b) = (
        plain.export_weights().expect("export"),
        profiled.export_weights().expect("export"),
    );
    for (name, tensor) in a.iter() {
        let other = b.require(name).expect("the same tensors");
        let gap = tensor
            .iter()
            .zip(other.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        // The profiled step is the plain step with clock reads between its phases: the same
        // kernels on the same data, hence the same bits on any host. 1e-6 absolute is 33 ulps
        // of conv1's largest weight (1/√9) and more of every smaller tensor, room for nothing
        // but a last-bit effect; each Adam step moves a parameter by about lr = 1e-2, so a
        // skipped, repeated or differently corrected step lands ~1e-4 or more away. (Adam
        // divides by |g|, so even this bound presumes the same arithmetic: other kernels could
        // move a parameter whose gradient is near zero by up to lr.)
        assert!(
            gap <= 1e-6,
            "{name}: the profiled step moved it {gap} apart"
        );
    }
}

/// A small batch for a 4×4 single-channel mlp of two classes.
fn small_batch(salt: u64) -> Batch {
    Batch {
        images: test_images(4, [1, 4, 4], salt),
        labels: Array1::from(vec![0, 1, 0, 1]),
    }
}

/// On its first step Adam has m̂ = g and v̂ = g², so every parameter whose gradient is well
/// above ε moves by lr·g/(|g| + ε) ≈ ±lr, in both formulations.
pub fn the_first_adam_step_moves_each_parameter_by_the_learning_rate(backend: &dyn Backend) {
    let model = resolve(&presets::mlp([1, 4, 4], 2));
    let weights = init::canonical(&model, 6);
    for optimizer in [
        OptimizerConfig::adam(1e-3),
        OptimizerConfig::adam_keras(1e-3),
    ] {
        let mut net = backend.build(&model, Some(&weights)).expect("build");
        let step = net.train_step(&small_batch(3), &optimizer);
        if refused_as_fixed(backend, Topic::OptimizerFormulation, &step) {
            continue;
        }
        let after = net.export_weights().expect("export");
        let moved = after.get("fc2.bias").expect("bias") - weights.get("fc2.bias").expect("bias");
        for delta in moved.iter() {
            // The step is lr·|g|/(|g| + ε′), with ε′ = 1e-8 for PyTorch and ε/√(1 − β₂) ≈
            // 3.2e-6 for Keras. The bias's gradient on this batch is ±0.026 (fixed inputs, the
            // same on every host), so the step falls short of lr by 4e-10 and 1.2e-7; f32
            // rounding of the biases (|b| ≤ 0.054, half an ulp 1.9e-9) and of the step adds
            // less. 1e-6, a thousandth of lr, covers that eight times over, while a missing
            // bias correction of m (a step of lr/10) or of v (√1000·lr) misses by O(lr).
            assert!(
                (delta.abs() - 1e-3).abs() < 1e-6,
                "first {:?} step moved a bias by {delta}, expected ±lr",
                optimizer.kind
            );
        }
    }
}

/// Twenty steps of either Adam lower the loss on a fixed batch.
pub fn both_adam_formulations_train(backend: &dyn Backend) {
    let model = resolve(&presets::mlp([1, 4, 4], 2));
    let weights = init::canonical(&model, 5);
    for optimizer in [
        OptimizerConfig::adam(1e-2),
        OptimizerConfig::adam_keras(1e-2),
    ] {
        let mut net = backend.build(&model, Some(&weights)).expect("build");
        let first = net.train_step(&small_batch(3), &optimizer);
        if refused_as_fixed(backend, Topic::OptimizerFormulation, &first) {
            continue;
        }
        let first = first.expect("step");
        let mut last = first;
        for _ in 0..20 {
            last = net.train_step(&small_batch(3), &optimizer).expect("step");
        }
        assert!(
            last < first,
            "{:?}: loss went from {first} to {last}",
            optimizer.kind
        );
    }
}

/// Keras's Adam and PyTorch's differ only in where ε enters; with a large ε the first step
/// shows it: PyTorch moves by lr·g/(|g| + ε), Keras, which adds ε to the uncorrected root, by
/// lr·g/(|g| + ε/√(1−β₂)).
pub fn the_adam_formulations_put_epsilon_where_their_frameworks_do(backend: &dyn Backend) {
    let model = resolve(&presets::mlp([1, 4, 4], 2));
    let weights = init::canonical(&model, 6);
    let epsilon = 0.05;
    let moved = |formulation| {
        let mut net = backend.build(&model, Some(&weights)).expect("build");
        let optimizer = OptimizerConfig {
            kind: OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                epsilon,
                formulation,
            },
            lr: 1e-3,
        };
        let step = net.train_step(&small_batch(7), &optimizer);
        if refused_as_fixed(backend, Topic::OptimizerFormulation, &step) {
            return None;
        }
        let after = net.export_weights().expect("export");
        Some(after.get("fc2.bias").expect("bias") - weights.get("fc2.bias").expect("bias"))
    };
    // A framework fixed to one formulation has no other to set ε in.
    let (Some(pytorch), Some(keras)) = (
        moved(AdamFormulation::Pytorch),
        moved(AdamFormulation::Keras),
    ) else {
        return;
    };
    // Recover |g| from PyTorch's step, then predict Keras's from it.
    for (p, k) in pytorch.iter().zip(keras.iter()) {
        let ratio = (p.abs() as f64) / 1e-3;
        let gradient = ratio * epsilon / (1.0 - ratio);
        let expected = 1e-3 * gradient / (gradient + epsilon / (1.0f64 - 0.999).sqrt());
        // Both runs compute the same gradient (|g| ≈ 0.035 on this batch), so only rounding
        // separates them: each measured step is a difference of f32 biases (|b| ≤ 0.054, half
        // an ulp 1.9e-9), 9e-5 of Keras's step of 2.1e-5 and 5e-6 of PyTorch's 4.1e-4
        // (recovering |g| amplifies the latter by (|g| + ε)/ε ≈ 1.7), and 1 − β₂ rounded to
        // f32 moves ε/√(1 − β₂) by 6e-6. 1e-2 is a hundred times the sum, and ε where the
        // other framework puts it changes Keras's step nineteenfold.
        assert!(
            ((k.abs() as f64) / expected - 1.0).abs() < 1e-2,
            "Keras step {k}, expected ±{expected}"
        );
    }
}

/// A fixture of `fixtures/gradcam/`, made by Keras or PyTorch with its committed script.
fn gradcam_fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures/gradcam").join(name)
}

/// Builds a committed tiny ResNet from its spec file and its producer's weights file.
fn producer_net(backend: &dyn Backend, spec: &str, weights: &str) -> (ResolvedModel, crate::Net) {
    let model = ModelSpec::from_file(&gradcam_fixture(spec))
        .expect("spec")
        .resolve()
        .expect("resolve");
    let weights = Weights::load_any(&gradcam_fixture(weights))
        .expect("read the producer's weights")
        .fit_to(&model)
        .expect("fit");
    let net = backend.build(&model, Some(&weights)).expect("build");
    (model, net)
}

/// Keras's HDF5 weights (a tiny ResNet with keras.applications' names, written by Keras 3.15)
/// and PyTorch's torchvision-named weights give the logits their producers computed, to 1e-4.
pub fn imported_weights_give_their_producers_logits(backend: &dyn Backend) {
    for (spec, weights, expected) in [
        (
            "keras-resnet-tiny.json",
            "keras-resnet-tiny.h5",
            "keras-resnet-tiny.expected.safetensors",
        ),
        (
            "torch-resnet-tiny.json",
            "torch-resnet-tiny.safetensors",
            "torch-resnet-tiny.expected.safetensors",
        ),
    ] {
        let (_, mut net) = producer_net(backend, spec, weights);
        let expected = Weights::load(&gradcam_fixture(expected)).expect("expected outputs");
        let input: Array4<f32> = expected
            .require("input")
            .expect("input")
            .clone()
            .into_dimensionality()
            .expect("4-D");
        let logits = net.predict(input.view()).expect("predict");
        let reference = expected.require("logits").expect("logits");
        let difference = logits
            .iter()
            .zip(reference.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // The logits reach 4.3 (Keras) and 5.0 (PyTorch) through a 7×7 stem (147 terms), two
        // bottlenecks and the head. PyTorch's logits lie within 9e-7 of an f64 evaluation of
        // the same network, and f32 emulations that sum every convolution sequentially,
        // forwards or backwards, land within 1.8e-6 of PyTorch's: f32 noise here is about
        // 2e-6, and the engine and the producer each carry some. 1e-4 absolute (2e-5 of the
        // largest logit) is fifty times that, and a kernel left in HWIO, a flipped kernel, a
        // Keras conv bias (drawn from N(0, 0.1)) lost on import, or the stride in the wrong
        // convolution changes the logits by far more.
        assert!(
            difference < 1e-4,
            "{weights}: logits differ from the producer's by {difference}"
        );
    }
}

/// The engine's activations and gradients, through core's formulas, give the raw maps that
/// PyTorch computed for the same weights (cross-checked by the fixture's script against
/// pytorch-grad-cam 1.5.7), for GradCAM, GradCAM++ and HiResCAM at two layers.
pub fn grad_cam_matches_pytorch_grad_cam(backend: &dyn Backend) {
    use crate::gradcam::{CamMethod, raw_maps};
    let (_, mut net) = producer_net(
        backend,
        "torch-resnet-tiny.json",
        "torch-resnet-tiny.safetensors",
    );
    let expected = Weights::load(&gradcam_fixture("torch-resnet-tiny.expected.safetensors"))
        .expect("expected");
    let input: Array4<f32> = expected
        .require("input")
        .expect("input")
        .clone()
        .into_dimensionality()
        .expect("4-D");
    for (layer, prefix) in [("layer2", ""), ("layer1", "layer1_")] {
        let cam = net
            .grad_cam(input.view(), layer, &[3, 3])
            .expect("grad_cam");
        for (method, name) in [
            (CamMethod::GradCam, "gradcam"),
            (CamMethod::GradCamPlusPlus, "gradcampp"),
            (CamMethod::HiResCam, "hirescam"),
        ] {
            let reference = expected
                .require(&format!("{prefix}{name}_signed"))
                .expect("reference map");
            for (image, map) in raw_maps(&cam, method).iter().enumerate() {
                let reference = reference.index_axis(Axis(0), image);
                // The floor only keeps an all-zero reference from dividing by zero; these maps'
                // scales are 0.14 to 4.8, far above it.
                let scale = reference
                    .iter()
                    .fold(0.0f32, |m, v| m.max(v.abs()))
                    .max(1e-6);
                let difference = map
                    .signed
                    .iter()
                    .zip(reference.iter())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                // The maps are well conditioned: Σₖ|wₖAₖ| is at most 4.4 times the map's
                // largest value, so relative errors δ in the activations and gradients move a
                // map by about 2δ of its scale (perturbing them by 1e-5 moves these maps by
                // 2.3e-5 at most). The engine's and PyTorch's A and G differ by f32 noise near
                // 1e-6 of their scale, so 1e-3 needs errors several hundred times that. Channel
                // weights summed instead of averaged (×16 or ×64), the wrong class, the wrong
                // layer or GradCAM in place of HiResCAM at layer1 all miss by O(1).
                assert!(
                    difference / scale < 1e-3,
                    "{layer} {name} image {image}: relative difference {}",
                    difference / scale
                );
            }
        }
    }
}

/// The case of the bf16 and compilation checks: a multilayer perceptron of L = 3 dense layers,
/// ReLU between, no batch norm (whose rescaling would need a term of its own), with the
/// canonical weights' absolute values and non-negative inputs that bf16 cannot hold exactly.
/// With nothing negative nothing cancels: every sum's absolute sum is the sum itself, so the
/// worst-case analysis of [`PositiveMlp::loss_error`] is tight in magnitude instead of
/// hundreds of times too wide.
struct PositiveMlp {
    model: ResolvedModel,
    weights: Weights,
    images: Array4<f32>,
    labels: Vec<u32>,
    /// The largest logit, computed in f64.
    largest: f64,
    /// The most products one sum adds.
    widest: usize,
    /// The number of dense layers.
    depth: i32,
}

impl PositiveMlp {
    fn new() -> Self {
        let dense = |name: &str, units: usize| {
            named(
                name,
                Layer::Dense {
                    units,
                    in_features: None,
                    bias: true,
                },
            )
        };
        let spec = ModelSpec {
            name: "positive-mlp".into(),
            input: [1, 8, 8],
            layers: vec![
                named("flatten", Layer::Flatten),
                dense("fc1", 48),
                named("relu1", Layer::Relu),
                dense("fc2", 32),
                named("relu2", Layer::Relu),
                dense("fc3", 10),
            ],
        };
        let model = resolve(&spec);
        let mut weights = init::canonical(&model, 29);
        for name in weights
            .iter()
            .map(|(name, _)| name.to_string())
            .collect::<Vec<_>>()
        {
            let positive = weights.get(&name).expect("tensor").mapv(f32::abs);
            weights.insert(name, positive);
        }
        // Non-negative inputs with 24 significant bits, which bf16's 8 cannot hold.
        let images = test_images(16, model.input(), 31).mapv(f32::abs);
        let labels: Vec<u32> = (0..16u32).map(|i| (i * 7) % 10).collect();
        // The logits in f64, and the widest sum.
        let mut logits = images
            .mapv(f64::from)
            .into_shape_with_order((16, 64))
            .expect("flatten");
        let mut widest = 0usize;
        let layers = ["fc1", "fc2", "fc3"];
        for name in layers {
            let tensor = |part: &str| {
                weights
                    .get(&format!("{name}.{part}"))
                    .expect("tensor")
                    .mapv(f64::from)
            };
            let w = tensor("weight")
                .into_dimensionality::<ndarray::Ix2>()
                .expect("2-D");
            let b = tensor("bias")
                .into_dimensionality::<ndarray::Ix1>()
                .expect("1-D");
            widest = widest.max(w.ncols());
            logits = logits.dot(&w.t()) + &b;
        }
        let largest = logits.iter().fold(0.0f64, |m, &v| m.max(v));
        PositiveMlp {
            model,
            weights,
            images,
            labels,
            largest,
            widest,
            depth: layers.len() as i32,
        }
    }

    /// The batch of every example, in `order`.
    fn batch(&self, order: &[usize]) -> Batch {
        Batch {
            images: self.images.select(Axis(0), order),
            labels: Array1::from_iter(order.iter().map(|&i| self.labels[i])),
        }
    }

    /// How far the mean loss can be from its exact value when each layer computes in a format
    /// of unit roundoff `u` and sums its products in f32.
    ///
    /// A layer rounds at most four times: its input, its weights, its product, and its output
    /// after adding the (rounded) bias. A fused kernel (autocast's, oneDNN's) rounds the product
    /// and the bias's sum once; an engine that adds the bias to a rounded product (Flex's bf16,
    /// Keras on torch) rounds both. Each rounding is a relative error of at most u, and a sum of
    /// n products in f32 errs by at most γₙ = n·2⁻²⁴/(1 − n·2⁻²⁴) of itself (its absolute sum,
    /// here the same). Layer l's output zₗ then errs by at most (1 + u)⁴(1 + γₙ) − 1 of itself,
    /// and passes its input's relative error on unchanged (non-negative weights; ReLU is the
    /// identity here), so the logits err by at most c = ((1 + u)⁴(1 + γₙ))ᴸ − 1 of themselves.
    /// Cross-entropy's gradient in a row of logits sums to at most 2 in absolute value, so the
    /// mean loss moves by at most 2c·max z.
    fn loss_error(&self, u: f64) -> f64 {
        let n = self.widest as f64;
        let gamma = n * 2f64.powi(-24) / (1.0 - n * 2f64.powi(-24));
        let per_layer = (1.0 + u).powi(4) * (1.0 + gamma);
        2.0 * (per_layer.powi(self.depth) - 1.0) * self.largest
    }

    /// The f32 step's loss in three other orders of the same batch (the mean over the batch
    /// summed in another order), floored at f32's ε times the loss, as the parity rule
    /// measures noise.
    fn f32_noise(&self, step: impl Fn(&[usize]) -> f64, loss: f64) -> f64 {
        let reversed: Vec<usize> = (0..16).rev().collect();
        let even_odd: Vec<usize> = (0..16).step_by(2).chain((1..16).step_by(2)).collect();
        let swapped: Vec<usize> = (8..16).chain(0..8).collect();
        [reversed, even_odd, swapped]
            .iter()
            .map(|order| (step(order) - loss).abs())
            .fold(f64::from(f32::EPSILON) * loss.abs(), f64::max)
    }
}

/// A backend that states bf16 computes in it: the engine reports its hidden activation's dtype
/// as bf16 (f32 in an f32 build), and one training step's loss moves away from the f32 step's
/// by more than f32's own noise and by less than bf16's bound. A backend that does not state
/// bf16 refuses it in one typed error.
///
/// The case is [`PositiveMlp`]. The bound: a layer computing in bf16 with f32 accumulation
/// rounds its input, its weights, its product and its output after the bias to bf16, each a
/// relative error of at most u = 2⁻⁸ (bf16's ε, 2⁻⁷, halved by rounding to nearest), so the
/// mean loss errs by at most [`PositiveMlp::loss_error`] of u = 2⁻⁸; the f32 step errs by the
/// same formula with u = 2⁻²⁴, and the two losses differ by at most the sum. For this case
/// c ≈ 12u ≈ 4.8% of the largest logit. An engine that accumulated in bf16 would err by up to
/// n·u per layer, many times that.
///
/// The noise ([`PositiveMlp::f32_noise`]): bf16 must move the loss by more than 16 of those,
/// or it did not run.
pub fn bf16_computes_in_bf16_within_its_bound(backend: &dyn Backend) {
    use crate::precision::{Execution, Precision};
    let info = backend.info();
    let case = PositiveMlp::new();
    let bf16 = Execution {
        precision: Precision::Bf16,
        ..Execution::DEFAULT
    };
    if !info.precisions.contains(&Precision::Bf16) {
        assert_refuses(backend, &case, bf16, "--precision bf16");
        return;
    }
    let step = |execution: Execution, order: &[usize]| {
        let batch = case.batch(order);
        let mut net = backend
            .build_with(&case.model, Some(&case.weights), execution)
            .expect("build");
        let precision = net
            .activation_precision(batch.images.view())
            .expect("activation precision")
            .unwrap_or_else(|| {
                panic!(
                    "{} states bf16 but cannot say what it computed in",
                    info.backend
                )
            });
        let loss = net
            .train_step(&batch, &OptimizerConfig::sgd(0.1, 0.0))
            .expect("train step");
        (precision, f64::from(loss))
    };
    let natural: Vec<usize> = (0..16).collect();
    let (f32_precision, f32_loss) = step(Execution::DEFAULT, &natural);
    let (bf16_precision, bf16_loss) = step(bf16, &natural);
    assert_eq!(
        f32_precision,
        Precision::F32,
        "the f32 build's hidden activation"
    );
    assert_eq!(
        bf16_precision,
        Precision::Bf16,
        "the bf16 build's hidden activation"
    );
    let noise = case.f32_noise(|order| step(Execution::DEFAULT, order).1, f32_loss);
    let bound = case.loss_error(Precision::Bf16.unit_roundoff())
        + case.loss_error(Precision::F32.unit_roundoff());
    let moved = (bf16_loss - f32_loss).abs();
    eprintln!(
        "{}: loss f32 {f32_loss:.7}, bf16 {bf16_loss:.7}: moved {moved:.3e}; f32 noise {noise:.3e}; bf16's bound {bound:.3e} (largest logit {:.3})",
        info.backend, case.largest
    );
    assert!(
        moved > 16.0 * noise,
        "bf16's loss {bf16_loss} is within 16 f32 noises ({noise:.3e}) of f32's {f32_loss}: bf16 did not run"
    );
    assert!(
        moved <= bound,
        "bf16's loss {bf16_loss} is {moved:.3e} from f32's {f32_loss}, beyond bf16's bound {bound:.3e}"
    );
}

/// A backend that states bf16 runs every layer kind in it, not only the dense layers of
/// [`bf16_computes_in_bf16_within_its_bound`]: a bf16 build of [`every_layer_spec`] says its
/// first hidden activation is bf16, takes an Adam step, predicts and explains (GradCAM inside
/// the last bottleneck), with every value finite and of the right shape, and the step moves its
/// f32 master weights. What it catches: a layer whose engine refuses bf16, mixes dtypes it
/// cannot (a bf16 activation with an f32 batch-norm parameter, say), or overflows.
pub fn bf16_runs_every_layer_kind(backend: &dyn Backend) {
    use crate::precision::{Execution, Precision};
    let info = backend.info();
    if !info.precisions.contains(&Precision::Bf16) {
        // Its refusal is `bf16_computes_in_bf16_within_its_bound`'s to check.
        return;
    }
    // In the conventions the framework can train in, as a controlled run sets them: its own
    // running variance and Adam form where its API fixes them.
    let mut model = resolve(&every_layer_spec());
    let mut optimizer = OptimizerConfig::adam(1e-2);
    crate::defaults::apply(
        &Default::default(),
        &info.native_defaults,
        &info.fixed,
        &mut optimizer,
        &mut model,
        "canonical",
    );
    let weights = init::canonical(&model, 37);
    let bf16 = Execution {
        precision: Precision::Bf16,
        ..Execution::DEFAULT
    };
    let mut net = backend
        .build_with(&model, Some(&weights), bf16)
        .expect("bf16 build of the every-layer spec");
    let images = test_images(6, model.input(), 41);
    let labels: Vec<u32> = (0..6u32).map(|i| i % 5).collect();
    assert_eq!(
        net.activation_precision(images.view())
            .expect("activation precision"),
        Some(Precision::Bf16),
        "{}: the every-layer spec's first hidden activation in bf16",
        info.backend
    );
    let batch = Batch {
        images: images.clone(),
        labels: Array1::from(labels.clone()),
    };
    let loss = net.train_step(&batch, &optimizer).expect("bf16 train step");
    assert!(loss.is_finite(), "{}: bf16 loss {loss}", info.backend);
    let after = net.export_weights().expect("export");
    let moved = weights
        .iter()
        .filter(|(name, _)| name.ends_with(".weight"))
        .any(|(name, before)| after.get(name).is_some_and(|now| now != before));
    assert!(
        moved,
        "{}: a bf16 Adam step left every weight where it was",
        info.backend
    );
    assert!(
        after
            .iter()
            .all(|(_, tensor)| tensor.iter().all(|v| v.is_finite())),
        "{}: a bf16 step left a weight that is not finite",
        info.backend
    );
    let logits = net.predict(images.view()).expect("bf16 predict");
    assert_eq!(logits.dim(), (6, 5));
    assert!(
        logits.iter().all(|v| v.is_finite()),
        "{}: bf16 logits {logits}",
        info.backend
    );
    let cam = net
        .grad_cam(images.view(), "neck_v1", &labels)
        .expect("bf16 GradCAM");
    assert_eq!(cam.activations.dim(), cam.gradients.dim());
    assert_eq!(cam.activations.dim().0, 6);
    assert!(
        cam.activations
            .iter()
            .chain(cam.gradients.iter())
            .all(|v| v.is_finite()),
        "{}: bf16 GradCAM has values that are not finite",
        info.backend
    );
    assert!(
        cam.gradients.iter().any(|&v| v != 0.0),
        "{}: bf16 GradCAM's gradients are all zero",
        info.backend
    );
}

/// A backend without an axis value refuses it in one typed error that names the flag.
fn assert_refuses(
    backend: &dyn Backend,
    case: &PositiveMlp,
    execution: crate::precision::Execution,
    flag: &str,
) {
    match backend.build_with(&case.model, Some(&case.weights), execution) {
        Err(Error::Unsupported {
            backend: name,
            what,
        }) => {
            assert_eq!(name, backend.info().backend);
            assert_eq!(what, flag);
        }
        other => panic!(
            "a backend without {flag} must refuse it, got {:?}",
            other.err()
        ),
    }
}

/// A backend that states it compiles: with `--compile on` the engine reports that the step ran
/// compiled (and without it that it did not), and the compiled step is the same step: its loss
/// within f32's bound of the eager step's, and its update within 1% of the eager update. A
/// backend that does not compile refuses `--compile on` in one typed error.
///
/// The case is [`PositiveMlp`]. A compiler fuses operations and may sum in another order or
/// with other kernels; each build's loss errs by at most [`PositiveMlp::loss_error`] of
/// u = 2⁻²⁴ from the exact one (a few units of f32's ε more for exp and log, whose
/// implementations differ: 8ε·loss covers them), so the two differ by at most twice that.
/// The update is lr times the gradient, a chain of 2L + 1 sums of at most 64 products each,
/// whose relative errors (γ₆₄ ≈ 4e-6 each, times the condition of softmax minus the one-hot
/// label) stay far below 1%; a compiled step that dropped a bias gradient, applied the
/// learning rate twice or skipped the update misses by the update's own size.
pub fn compiling_keeps_the_step(backend: &dyn Backend) {
    use crate::precision::{Compile, Execution, Precision};
    let info = backend.info();
    let case = PositiveMlp::new();
    let compiled = Execution {
        compile: Compile::On,
        ..Execution::DEFAULT
    };
    if !info.compiles {
        assert_refuses(backend, &case, compiled, "--compile on");
        return;
    }
    let batch = case.batch(&(0..16).collect::<Vec<_>>());
    let optimizer = OptimizerConfig::sgd(0.1, 0.0);
    let step = |execution: Execution| {
        let mut net = backend
            .build_with(&case.model, Some(&case.weights), execution)
            .expect("build");
        let traced = net.traced_step(&batch, &optimizer).expect("traced step");
        (traced, net.export_weights().expect("export"))
    };
    let (eager, eager_weights) = step(Execution::DEFAULT);
    let (compiled, compiled_weights) = step(compiled);
    assert!(
        !eager.compiled,
        "{}: the step ran compiled without --compile on",
        info.backend
    );
    assert!(
        compiled.compiled,
        "{}: --compile on, but the engine reports that the step did not run compiled",
        info.backend
    );
    let (eager_loss, compiled_loss) = (f64::from(eager.loss), f64::from(compiled.loss));
    let bound = 2.0 * case.loss_error(Precision::F32.unit_roundoff())
        + 8.0 * f64::from(f32::EPSILON) * eager_loss;
    let difference = (compiled_loss - eager_loss).abs();
    eprintln!(
        "{}: loss eager {eager_loss:.7}, compiled {compiled_loss:.7}: {difference:.3e} apart, bound {bound:.3e}",
        info.backend
    );
    assert!(
        difference <= bound,
        "the compiled step's loss {compiled_loss} is {difference:.3e} from the eager step's {eager_loss}, beyond f32's bound {bound:.3e}"
    );
    for (name, before) in case.weights.iter() {
        let eager_update = eager_weights.get(name).expect("eager tensor") - before;
        let compiled_update = compiled_weights.get(name).expect("compiled tensor") - before;
        let largest = eager_update.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let apart = (&compiled_update - &eager_update)
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            largest > 0.0 && apart <= 0.01 * largest,
            "{name}: the compiled update differs from the eager one by {apart:.3e}, the eager update's largest element is {largest:.3e}"
        );
    }
}

/// Every backend times its layers one at a time: each layer of the spec gets a forward time and,
/// where a training step runs one, a backward time, and the weights (batch norm's running
/// statistics included) stay as they were.
pub fn layer_times_cover_every_layer_and_change_nothing(backend: &dyn Backend) {
    let model = resolve(&every_layer_spec());
    let weights = init::canonical(&model, 41);
    let mut net = backend.build(&model, Some(&weights)).expect("build");
    let images = test_images(4, model.input(), 43);
    // Every adapter times its layers: the roofline's measured side covers every engine.
    let times = net
        .layer_times(images.view())
        .unwrap_or_else(|error| panic!("layer_times: {error}"));
    assert_times_cover_the_layers(&model, &times);
    assert_weights_unchanged(&net, &weights, "while the layers were timed");
}

/// The engine's profiler attributes a training step to every layer of the spec, forward and
/// backward where a backward runs, and the weights afterwards are the weights before. Engines
/// whose adapter reads no profiler refuse with their own name.
pub fn a_layer_profile_covers_every_layer_and_changes_nothing(backend: &dyn Backend) {
    let model = resolve(&every_layer_spec());
    let weights = init::canonical(&model, 47);
    let mut net = backend.build(&model, Some(&weights)).expect("build");
    let batch = Batch {
        images: test_images(4, model.input(), 53),
        labels: Array1::from_iter((0..4).map(|i| (i % model.classes()) as u32)),
    };
    let Some(profile) = unless_refused(
        backend,
        net.layer_profile(&batch, &OptimizerConfig::sgd(0.1, 0.9)),
        "layer_profile",
    ) else {
        return;
    };
    assert!(!profile.profiler.is_empty(), "the profiler is named");
    assert!(profile.steps > 0, "over no steps");
    // A layer's operations in a real step follow the same rule as the layer alone.
    assert_times_cover_the_layers(&model, &profile.layers);
    assert_weights_unchanged(&net, &weights, "while the steps were profiled");
}

/// One time per layer of `model`: a positive forward time for every layer (each runs at least
/// one operation), and a positive backward time exactly where a training step runs one (the
/// layer has parameters, or a layer before it has), 0 elsewhere.
fn assert_times_cover_the_layers(model: &ResolvedModel, times: &[crate::roofline::LayerTime]) {
    assert_eq!(times.len(), model.layers.len());
    let mut upstream = false;
    for (layer, time) in model.layers.iter().zip(times) {
        let has_parameters = matches!(layer.op, crate::spec::Op::Param(_));
        assert!(
            time.forward.is_finite() && time.forward > 0.0,
            "{}: forward {}",
            layer.name,
            time.forward
        );
        if upstream || has_parameters {
            assert!(
                time.backward.is_finite() && time.backward > 0.0,
                "{}: backward {}",
                layer.name,
                time.backward
            );
        } else {
            assert_eq!(
                time.backward, 0.0,
                "{}: nothing needs its backward",
                layer.name
            );
        }
        upstream |= has_parameters;
    }
}

/// `net`'s weights are bit for bit `weights`.
fn assert_weights_unchanged(net: &crate::Net, weights: &Weights, when: &str) {
    let after = net.export_weights().expect("export");
    for (name, tensor) in weights.iter() {
        assert_eq!(
            after.get(name).expect("tensor"),
            tensor,
            "{name} changed {when}"
        );
    }
}

/// What an optional capability returned, or `None` where the backend refuses it with
/// `Error::Unsupported` under its own name; any other error fails the check.
fn unless_refused<T>(backend: &dyn Backend, result: crate::Result<T>, what: &str) -> Option<T> {
    match result {
        Err(Error::Unsupported { backend: name, .. }) => {
            assert_eq!(
                name,
                backend.info().backend,
                "the refusal names another backend"
            );
            None
        }
        other => Some(other.unwrap_or_else(|error| panic!("{what}: {error}"))),
    }
}

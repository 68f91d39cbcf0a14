//! The conformance suite: one set of checks that every backend must pass, written once.
//!
//! Each adapter runs it from its tests with [`conformance_tests!`](crate::conformance_tests),
//! which expands to one `#[test]` per check. The checks assert through panics, as tests do;
//! they need nothing but the backend, and they finish in seconds on a CPU. The parity checks
//! ([`parity_tests!`](crate::parity_tests)) hold a backend to a reference, and the acceptance
//! checks ([`acceptance_tests!`](crate::acceptance_tests)) train on the full Fashion-MNIST
//! through the run protocol.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, Array4, Axis};

use crate::backend::{AdamFormulation, Backend, OptimizerConfig, OptimizerKind};
use crate::data::builtin::{BuiltinDataset, in_ci};
use crate::data::{Batch, DataRequest, Dataset, EpochPlan};
use crate::defaults::VarianceEstimator;
use crate::ledger::Topic;
use crate::record::{InitMode, RunRequest};
use crate::spec::{
    Layer, ModelSource, ModelSpec, NamedLayer, Padding, Pair, Preset, ResolvedModel, StrideAt,
    presets,
};
use crate::weights::{Weights, relative_difference};
use crate::{Error, WeightsError, init};

/// Expands to one `#[test]` per conformance check, each calling `$make()` for a fresh backend.
///
/// ```text
/// parallax_core::conformance_tests!(|| BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(2)).unwrap());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            reports_itself,
            predicts_logits_of_the_right_shape,
            weights_round_trip_for_every_layer_kind,
            rejects_weights_that_do_not_fit,
            one_set_of_weights_runs_in_both_resnet_forms,
            rejects_inputs_of_the_wrong_shape,
            rejects_labels_out_of_range,
            evaluation_is_deterministic_and_leaves_weights_alone,
            sgd_step_matches_the_analytic_gradient,
            batch_norm_updates_running_statistics_in_training_only,
            the_engines_own_initialisation_follows_the_seed,
            dropout_is_active_in_training_only,
            training_fits_a_separable_problem,
            an_epoch_equals_its_steps,
            the_first_adam_step_moves_each_parameter_by_the_learning_rate,
            both_adam_formulations_train,
            the_adam_formulations_put_epsilon_where_their_frameworks_do,
            grad_cam_returns_activations_and_exact_gradients,
            grad_cam_refuses_bad_arguments,
            imported_weights_give_their_producers_logits,
            grad_cam_matches_pytorch_grad_cam,
            the_matmul_probe_multiplies,
            a_profiled_step_is_the_same_step,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let backend = ($make)();
                $crate::conformance::$check(&backend);
            }
        )*
    };
}

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

fn resolve(spec: &ModelSpec) -> ResolvedModel {
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
        .matmul_probe(left.view(), right.view())
        .expect("probe");
    for run in 0..2 {
        let sum = probe.multiply().expect("multiply");
        assert!(
            (sum - expected).abs() <= 1e-5 * expected.abs(),
            "run {run}: the product's sum is {sum}, the host's {expected}"
        );
    }
    let peak = crate::peak::measure(backend, 64, 3).expect("peak");
    assert_eq!(peak.backend, backend.info().backend);
    assert!(peak.gflops.is_finite() && peak.gflops > 0.0, "{peak:?}");
    assert!(peak.best_seconds <= peak.median_seconds);
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
    assert!(
        difference < 1e-4,
        "folded biases change the logits by {difference}"
    );
    let back = folded.fit_to(&with_bias).expect("fit to Keras's form");
    let difference = relative_difference(reference.view(), logits(&with_bias, &back).view());
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

    assert!(
        (loss - expected_loss).abs() <= 1e-5 * expected_loss.abs().max(1.0),
        "loss {loss} vs {expected_loss}"
    );
    let after = net.export_weights().expect("export");
    let got_w = after.get("fc.weight").expect("w");
    let got_b = after.get("fc.bias").expect("b");
    let dw = relative_difference(expected_w.view().into_dyn(), got_w.view());
    let db = relative_difference(expected_b.view().into_dyn(), got_b.view());
    assert!(
        dw <= 1e-5 && db <= 1e-5,
        "SGD step differs from the analytic one: weight {dw}, bias {db}"
    );
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
    let mut net = backend.build(model, Some(&weights)).expect("build");
    let images = test_images(3, model.input(), 11);
    net.predict(images.view()).expect("predict");
    let unchanged = net.export_weights().expect("export");
    assert_eq!(
        unchanged.get("bn.running_mean"),
        weights.get("bn.running_mean")
    );
    net.train_step(
        &Batch {
            images: images.clone(),
            labels: Array1::from(vec![0, 1, 0]),
        },
        &OptimizerConfig::sgd(0.0001, 0.0),
    )
    .expect("train step");
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
    // With a zero learning rate, different losses can only come from different dropout masks.
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
    let optimizer = OptimizerConfig::adam(0.01);
    let first = net.train_step(&batch, &optimizer).expect("train step");
    let mut last = first;
    for _ in 0..30 {
        last = net.train_step(&batch, &optimizer).expect("train step");
    }
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
    assert!(
        difference <= 1e-6,
        "the epoch and its steps differ by {difference:e} in {name}"
    );
    let mean_loss = loss_sum / data.len() as f64;
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
    let optimizer = OptimizerConfig::adam(1e-2);
    let mut plain = backend.build(&model, Some(&weights)).expect("build");
    let mut profiled = backend.build(&model, Some(&weights)).expect("build");
    for step in 0..2 {
        plain.train_step(&batch, &optimizer).expect("step");
        let phases = match profiled.profile_step(&batch, &optimizer) {
            Err(Error::Unsupported { backend: name, .. }) => {
                assert_eq!(
                    name,
                    backend.info().backend,
                    "the refusal names another backend"
                );
                return;
            }
            other => other.expect("profiled step"),
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
        net.train_step(&small_batch(3), &optimizer).expect("step");
        let after = net.export_weights().expect("export");
        let moved = after.get("fc2.bias").expect("bias") - weights.get("fc2.bias").expect("bias");
        for delta in moved.iter() {
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
        let first = net.train_step(&small_batch(3), &optimizer).expect("step");
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
        net.train_step(&small_batch(7), &optimizer).expect("step");
        let after = net.export_weights().expect("export");
        after.get("fc2.bias").expect("bias") - weights.get("fc2.bias").expect("bias")
    };
    let pytorch = moved(AdamFormulation::Pytorch);
    let keras = moved(AdamFormulation::Keras);
    // Recover |g| from PyTorch's step, then predict Keras's from it.
    for (p, k) in pytorch.iter().zip(keras.iter()) {
        let ratio = (p.abs() as f64) / 1e-3;
        let gradient = ratio * epsilon / (1.0 - ratio);
        let expected = 1e-3 * gradient / (gradient + epsilon / (1.0f64 - 0.999).sqrt());
        assert!(
            ((k.abs() as f64) / expected - 1.0).abs() < 1e-2,
            "Keras step {k}, expected ±{expected}"
        );
    }
}

/// Expands to one `#[test]` per parity check between a backend and a reference backend, each
/// calling `$make()` and `$reference()` for fresh ones: evaluation logits and one SGD step
/// (momentum 0.9) for the mlp, the cnn, ResNet-18 on 3×32×32 and the every-layer spec.
///
/// ```text
/// parallax_core::parity_tests!(|| TchBackend::new(..).unwrap(), || BurnBackend::new(..).unwrap());
/// ```
#[macro_export]
macro_rules! parity_tests {
    ($make:expr, $reference:expr) => {
        $crate::parity_tests!(@each $make, $reference;
            mlp_logits_agree,
            cnn_logits_agree,
            resnet18_logits_agree,
            every_layer_logits_agree,
            mlp_sgd_step_agrees,
            cnn_sgd_step_agrees,
            resnet18_sgd_step_agrees,
            every_layer_sgd_step_agrees,
        );
    };
    (@each $make:expr, $reference:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let (backend, reference) = (($make)(), ($reference)());
                $crate::conformance::parity::$check(&backend, &reference);
            }
        )*
    };
}

/// The checks that [`parity_tests!`](crate::parity_tests) runs, each on a backend and a
/// reference, through [`logits_agree`] and [`one_sgd_step_agrees`].
pub mod parity {
    use super::{every_layer_spec, logits_agree, one_sgd_step_agrees};
    use crate::backend::Backend;
    use crate::spec::{Layer, ModelSpec, presets};

    /// The every-layer spec without its dropout, whose masks no two engines draw alike.
    fn every_layer_without_dropout() -> ModelSpec {
        let mut spec = every_layer_spec();
        spec.layers
            .retain(|layer| !matches!(layer.layer, Layer::Dropout { .. }));
        spec
    }

    /// The mlp's logits, batch 8.
    pub fn mlp_logits_agree(backend: &dyn Backend, reference: &dyn Backend) {
        logits_agree(backend, reference, presets::mlp([1, 28, 28], 10), 8);
    }

    /// The cnn's logits, batch 8.
    pub fn cnn_logits_agree(backend: &dyn Backend, reference: &dyn Backend) {
        logits_agree(backend, reference, presets::cnn([1, 28, 28], 10), 8);
    }

    /// ResNet-18's logits on 3×32×32, batch 4.
    pub fn resnet18_logits_agree(backend: &dyn Backend, reference: &dyn Backend) {
        logits_agree(backend, reference, presets::resnet18([3, 32, 32], 10), 4);
    }

    /// The every-layer spec's logits, batch 4.
    pub fn every_layer_logits_agree(backend: &dyn Backend, reference: &dyn Backend) {
        logits_agree(backend, reference, every_layer_spec(), 4);
    }

    /// One mlp SGD step, batch 8.
    pub fn mlp_sgd_step_agrees(backend: &dyn Backend, reference: &dyn Backend) {
        one_sgd_step_agrees(backend, reference, presets::mlp([1, 28, 28], 10), 8, 0.9);
    }

    /// One cnn SGD step, batch 8.
    pub fn cnn_sgd_step_agrees(backend: &dyn Backend, reference: &dyn Backend) {
        one_sgd_step_agrees(backend, reference, presets::cnn([1, 28, 28], 10), 8, 0.9);
    }

    /// One ResNet-18 SGD step on 3×32×32, batch 16: layer4 works on 1×1 maps, so its
    /// training-mode batch norm normalises over just the batch. Over 4 values the step is
    /// ill-conditioned (scaling the inputs by 1 + 1e-6 moves libtorch's own update by 4.6e-4
    /// relative, and libtorch and burn in f32 both land about 8e-5 from libtorch in f64); over
    /// 16 it is not.
    pub fn resnet18_sgd_step_agrees(backend: &dyn Backend, reference: &dyn Backend) {
        one_sgd_step_agrees(
            backend,
            reference,
            presets::resnet18([3, 32, 32], 10),
            16,
            0.9,
        );
    }

    /// One SGD step of the every-layer spec without dropout, batch 8: batch norm over images
    /// and features, residual blocks, explicit and TensorFlow-`same` padding, and the dense
    /// layer after a flattened image.
    pub fn every_layer_sgd_step_agrees(backend: &dyn Backend, reference: &dyn Backend) {
        one_sgd_step_agrees(backend, reference, every_layer_without_dropout(), 8, 0.9);
    }
}

/// The bound that parity between two engines must hold, on logits and on updated weights:
/// max-abs difference over max-abs value.
pub const PARITY_BOUND: f32 = 1e-5;

/// Parity of evaluation logits: from the same canonical weights and the same `batch` images,
/// `backend` and `reference` agree to [`PARITY_BOUND`]. Prints the difference it measured.
pub fn logits_agree(backend: &dyn Backend, reference: &dyn Backend, spec: ModelSpec, batch: usize) {
    let model = resolve(&spec);
    let weights = init::canonical(&model, 21);
    let images = test_images(batch, model.input(), 22);
    let predict = |backend: &dyn Backend| {
        backend
            .build(&model, Some(&weights))
            .and_then(|mut net| net.predict(images.view()))
            .unwrap_or_else(|error| panic!("{}: {error}", backend.info().backend))
    };
    let (ours, theirs) = (predict(backend), predict(reference));
    let difference = relative_difference(theirs.view(), ours.view());
    eprintln!(
        "{}: eval logits differ by {difference:e} relative",
        spec.name
    );
    assert!(
        difference <= PARITY_BOUND,
        "{}: logits differ by {difference} relative",
        spec.name
    );
}

/// Parity of one SGD step (learning rate 0.1, `momentum`): from the same canonical weights and
/// the same batch, every tensor after the step, running statistics included, and the step's
/// loss agree to [`PARITY_BOUND`]. Prints the worst tensor.
pub fn one_sgd_step_agrees(
    backend: &dyn Backend,
    reference: &dyn Backend,
    spec: ModelSpec,
    batch: usize,
    momentum: f64,
) {
    let model = resolve(&spec);
    let weights = init::canonical(&model, 23);
    let labels: Vec<u32> = (0..batch).map(|i| (i % model.classes()) as u32).collect();
    let batch = Batch {
        images: test_images(batch, model.input(), 24),
        labels: Array1::from(labels),
    };
    let optimizer = OptimizerConfig::sgd(0.1, momentum);
    let step = |backend: &dyn Backend| {
        let mut net = backend.build(&model, Some(&weights))?;
        let loss = net.train_step(&batch, &optimizer)?;
        Ok::<_, Error>((loss, net.export_weights()?))
    };
    let name = |backend: &dyn Backend| backend.info().backend;
    let (our_loss, ours) =
        step(backend).unwrap_or_else(|error| panic!("{}: {error}", name(backend)));
    let (their_loss, theirs) =
        step(reference).unwrap_or_else(|error| panic!("{}: {error}", name(reference)));
    let (tensor, difference) = theirs.max_relative_difference(&ours).expect("same names");
    eprintln!(
        "{}: weights after one SGD step differ by {difference:e} relative (worst: {tensor}); losses {our_loss} vs {their_loss}",
        spec.name
    );
    assert!(
        difference <= PARITY_BOUND,
        "{}: tensor {tensor} differs by {difference} relative after one SGD step",
        spec.name
    );
    assert!(((our_loss - their_loss) / their_loss).abs() <= PARITY_BOUND);
}

/// Expands to the acceptance tests on the full Fashion-MNIST, each calling `$make()` for a
/// fresh backend: the mlp reaches 0.85 test accuracy in 3 epochs and the cnn 0.88 in 2, with
/// canonical weights from seed 42, Adam 1e-3, batch 64, through the run protocol.
///
/// ```text
/// parallax_core::acceptance_tests!(|| TchBackend::new(Device::Cpu, CpuSettings::new(2)).unwrap());
/// ```
#[macro_export]
macro_rules! acceptance_tests {
    ($make:expr) => {
        #[test]
        fn mlp_reaches_085_on_full_fashion_mnist_in_3_epochs() {
            $crate::conformance::reaches_accuracy(&($make)(), $crate::spec::Preset::Mlp, 3, 0.85);
        }

        #[test]
        fn cnn_reaches_088_on_full_fashion_mnist_in_2_epochs() {
            $crate::conformance::reaches_accuracy(&($make)(), $crate::spec::Preset::Cnn, 2, 0.88);
        }
    };
}

/// The repository's root, where `fixtures/` lives.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A request for the full Fashion-MNIST, found as `cargo xtask compare` finds it, or `None`
/// when it is not on this machine; under CI ([`in_ci`]) its absence fails the test, since
/// `cargo xtask test` installs it.
///
/// This is the one rule by which tests decide between the full data set and stopping.
pub fn full_fashion_mnist() -> Option<DataRequest> {
    let cache = std::env::var_os("PARALLAX_CACHE")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("parallax-tests"));
    let request = DataRequest::builtin(
        BuiltinDataset::FashionMnist,
        cache,
        repo_root().join("fixtures"),
    );
    match request.locator().locate(BuiltinDataset::FashionMnist) {
        Ok(_) => Some(request),
        Err(error) => {
            assert!(
                !in_ci(),
                "CI needs the full Fashion-MNIST: {error} (run `cargo xtask test`, which installs it)"
            );
            eprintln!("skipping: {error}");
            None
        }
    }
}

/// A request of the acceptance runs: `preset` for `epochs` on `data` with the seeds' settings.
pub fn acceptance_request(
    backend: &dyn Backend,
    data: DataRequest,
    preset: Preset,
    epochs: u32,
) -> RunRequest {
    let info = backend.info();
    RunRequest {
        backend: info.backend,
        device: info.device,
        threads: info.threads,
        flush_denormals: info.flush_denormals,
        model: ModelSource::Preset(preset),
        data,
        epochs,
        batch_size: 64,
        optimizer: OptimizerConfig::adam(1e-3),
        seed: 42,
        init: InitMode::Canonical,
        native: Default::default(),
        save_weights: false,
        measure_peak: false,
        git_revision: "test".into(),
    }
}

/// Trains `preset` for `epochs` on the full Fashion-MNIST through the run protocol and checks
/// its final test accuracy; says so and stops where the data set is missing outside CI.
pub fn reaches_accuracy(backend: &dyn Backend, preset: Preset, epochs: u32, accuracy: f64) {
    let Some(data) = full_fashion_mnist() else {
        return;
    };
    let request = acceptance_request(backend, data, preset, epochs);
    let record = crate::run::execute(&request, backend, None, &mut |_| {})
        .unwrap_or_else(|error| panic!("{}: {error}", request.backend));
    assert_eq!(record.train_examples, 60_000);
    eprintln!(
        "{} {preset}: test accuracy {:.4} after {epochs} epochs, {:.2} s per epoch",
        record.backend, record.test_accuracy, record.median_epoch_seconds
    );
    assert!(
        record.test_accuracy >= accuracy,
        "{} {preset}: test accuracy {} < {accuracy}",
        record.backend,
        record.test_accuracy
    );
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
                assert!(
                    difference / scale < 1e-3,
                    "{layer} {name} image {image}: relative difference {}",
                    difference / scale
                );
            }
        }
    }
}

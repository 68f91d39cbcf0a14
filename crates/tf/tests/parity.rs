//! Parity with burn, parallax's reference backend: from the same canonical weights and the same
//! batch, TensorFlow and burn's Flex give the same logits in evaluation mode and the same weights
//! after one SGD step, to 1e-5 relative (max-abs difference over max-abs value).

use ndarray::Array1;
use parallax_burn::{BurnBackend, BurnEngine};
use parallax_core::conformance::test_images;
use parallax_core::spec::{ModelSpec, presets};
use parallax_core::weights::relative_difference;
use parallax_core::{Backend, Batch, CpuSettings, Device, OptimizerConfig, init};
use parallax_tf::TfBackend;

/// The bound the issue sets for both logits and updated weights.
const BOUND: f32 = 1e-5;

fn backends() -> (TfBackend, BurnBackend) {
    (
        TfBackend::new(Device::Cpu, CpuSettings::new(2)).expect("TensorFlow on the CPU"),
        BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(2)).expect("Flex"),
    )
}

fn logits_agree(spec: ModelSpec, batch: usize) {
    let (tf, burn) = backends();
    let model = spec.resolve().expect("resolve");
    let weights = init::canonical(&model, 21);
    let images = test_images(batch, model.input(), 22);
    let ours = tf
        .build(&model, Some(&weights))
        .expect("build tf")
        .predict(images.view())
        .expect("predict tf");
    let theirs = burn
        .build(&model, Some(&weights))
        .expect("build burn")
        .predict(images.view())
        .expect("predict burn");
    let difference = relative_difference(theirs.view(), ours.view());
    eprintln!(
        "{}: eval logits differ by {difference:e} relative",
        spec.name
    );
    assert!(
        difference <= BOUND,
        "{}: logits differ by {difference} relative",
        spec.name
    );
}

fn one_sgd_step_agrees(spec: ModelSpec, batch: usize, momentum: f64) {
    let (tf, burn) = backends();
    let model = spec.resolve().expect("resolve");
    let weights = init::canonical(&model, 23);
    let labels: Vec<u32> = (0..batch).map(|i| (i % model.classes()) as u32).collect();
    let batch = Batch {
        images: test_images(batch, model.input(), 24),
        labels: Array1::from(labels),
    };
    let optimizer = OptimizerConfig::sgd(0.1, momentum);
    let mut ours = tf.build(&model, Some(&weights)).expect("build tf");
    let mut theirs = burn.build(&model, Some(&weights)).expect("build burn");
    let our_loss = ours.train_step(&batch, &optimizer).expect("step tf");
    let their_loss = theirs.train_step(&batch, &optimizer).expect("step burn");
    let ours = ours.export_weights().expect("export tf");
    let theirs = theirs.export_weights().expect("export burn");
    let (name, difference) = theirs.max_relative_difference(&ours).expect("same names");
    eprintln!(
        "{}: weights after one SGD step differ by {difference:e} relative (worst: {name}); losses {our_loss} vs {their_loss}",
        spec.name
    );
    assert!(
        difference <= BOUND,
        "{}: tensor {name} differs by {difference} relative after one SGD step",
        spec.name
    );
    assert!(((our_loss - their_loss) / their_loss).abs() <= BOUND);
}

#[test]
fn mlp_logits_match_burn() {
    logits_agree(presets::mlp([1, 28, 28], 10), 8);
}

#[test]
fn cnn_logits_match_burn() {
    logits_agree(presets::cnn([1, 28, 28], 10), 8);
}

#[test]
fn resnet18_logits_match_burn() {
    logits_agree(presets::resnet18([3, 32, 32], 10), 4);
}

#[test]
fn every_layer_logits_match_burn() {
    logits_agree(parallax_core::conformance::every_layer_spec(), 4);
}

#[test]
fn mlp_weights_after_one_sgd_step_match_burn() {
    one_sgd_step_agrees(presets::mlp([1, 28, 28], 10), 8, 0.9);
}

#[test]
fn cnn_weights_after_one_sgd_step_match_burn() {
    one_sgd_step_agrees(presets::cnn([1, 28, 28], 10), 8, 0.9);
}

/// The every-layer spec without its dropout, whose masks no two engines draw alike: batch norm
/// over images and features, residual blocks, explicit and TensorFlow-`same` padding, and the
/// dense layer after a flattened image, all through one SGD step.
#[test]
fn every_layer_weights_after_one_sgd_step_match_burn() {
    let mut spec = parallax_core::conformance::every_layer_spec();
    spec.layers
        .retain(|layer| !matches!(layer.layer, parallax_core::Layer::Dropout { .. }));
    one_sgd_step_agrees(spec, 8, 0.9);
}

/// A batch of 16, as in the libtorch adapter's parity test: with 32×32 inputs, layer4 works on
/// 1×1 maps, and over fewer examples its training-mode batch norm is ill-conditioned.
#[test]
fn resnet18_weights_after_one_sgd_step_match_burn() {
    one_sgd_step_agrees(presets::resnet18([3, 32, 32], 10), 16, 0.9);
}

//! Parity with burn, parallax's reference backend: from the same canonical weights and the same
//! batch, libtorch and burn's Flex give the same logits in evaluation mode and the same weights
//! after one SGD step, to 1e-5 relative (max-abs difference over max-abs value).

use ndarray::Array1;
use parallax_burn::{BurnBackend, BurnEngine};
use parallax_core::conformance::test_images;
use parallax_core::spec::{ModelSpec, presets};
use parallax_core::weights::relative_difference;
use parallax_core::{Backend, Batch, CpuSettings, Device, OptimizerConfig, init};
use parallax_tch::TchBackend;

/// The bound the issue sets for both logits and updated weights.
const BOUND: f32 = 1e-5;

fn backends() -> (TchBackend, BurnBackend) {
    (
        TchBackend::new(Device::Cpu, CpuSettings::new(2)).expect("libtorch on the CPU"),
        BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(2)).expect("Flex"),
    )
}

fn logits_agree(spec: ModelSpec, batch: usize) {
    let (tch, burn) = backends();
    let model = spec.resolve().expect("resolve");
    let weights = init::canonical(&model, 21);
    let images = test_images(batch, model.input(), 22);
    let ours = tch
        .build(&model, Some(&weights))
        .expect("build tch")
        .predict(images.view())
        .expect("predict tch");
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
    let (tch, burn) = backends();
    let model = spec.resolve().expect("resolve");
    let weights = init::canonical(&model, 23);
    let labels: Vec<u32> = (0..batch).map(|i| (i % model.classes()) as u32).collect();
    let batch = Batch {
        images: test_images(batch, model.input(), 24),
        labels: Array1::from(labels),
    };
    let optimizer = OptimizerConfig::sgd(0.1, momentum);
    let mut ours = tch.build(&model, Some(&weights)).expect("build tch");
    let mut theirs = burn.build(&model, Some(&weights)).expect("build burn");
    let our_loss = ours.train_step(&batch, &optimizer).expect("step tch");
    let their_loss = theirs.train_step(&batch, &optimizer).expect("step burn");
    let ours = ours.export_weights().expect("export tch");
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

/// A batch of 16: with 32×32 inputs, layer4 works on 1×1 maps, so its training-mode batch norm
/// normalises over just the batch. Over 4 values the step is ill-conditioned (scaling the
/// inputs by 1 + 1e-6 moves libtorch's own update by 4.6e-4 relative, and libtorch and burn in
/// f32 both land about 8e-5 from libtorch in f64); over 16 it is not.
#[test]
fn resnet18_weights_after_one_sgd_step_match_burn() {
    one_sgd_step_agrees(presets::resnet18([3, 32, 32], 10), 16, 0.9);
}

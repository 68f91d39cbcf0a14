//! Parity with burn, parallax's reference backend: from the same canonical weights and the same
//! batch, TensorFlow and burn's Flex give the same logits in evaluation mode and the same weights
//! after one SGD step, to 1e-5 relative (max-abs difference over max-abs value).

use parallax_burn::{BurnBackend, BurnEngine};
use parallax_core::conformance::{logits_agree as agree, one_sgd_step_agrees as step_agrees};
use parallax_core::spec::{ModelSpec, presets};
use parallax_core::{CpuSettings, Device};
use parallax_tf::TfBackend;

fn backends() -> (TfBackend, BurnBackend) {
    (
        TfBackend::new(Device::Cpu, CpuSettings::new(2)).expect("TensorFlow on the CPU"),
        BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(2)).expect("Flex"),
    )
}

fn logits_agree(spec: ModelSpec, batch: usize) {
    let (ours, burn) = backends();
    agree(&ours, &burn, spec, batch);
}

fn one_sgd_step_agrees(spec: ModelSpec, batch: usize, momentum: f64) {
    let (ours, burn) = backends();
    step_agrees(&ours, &burn, spec, batch, momentum);
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

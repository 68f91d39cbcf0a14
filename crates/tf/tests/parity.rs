//! Parity with burn, parallax's reference backend: from the same canonical weights and the same
//! batch, TensorFlow and burn's Flex give the same logits in evaluation mode and the same weights
//! after one SGD step, to 1e-5 relative (max-abs difference over max-abs value).

use parallax_burn::{BurnBackend, BurnEngine};
use parallax_core::{CpuSettings, Device};
use parallax_tf::TfBackend;

parallax_core::parity_tests!(
    || TfBackend::new(Device::Cpu, CpuSettings::new(2)).expect("TensorFlow on the CPU"),
    || BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(2)).expect("Flex")
);

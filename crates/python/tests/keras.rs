//! The `keras` backend (Keras 3's own Python code on TensorFlow, trained with `model.fit`, in the
//! embedded interpreter) against the shared conformance suite, plus what is particular to it.
//! This is the backend's one integration-test binary: Keras fixes its backend when first
//! imported, so `keras-torch` has a process of its own.

use parallax_core::{Backend, CpuSettings, Device};
use parallax_python::{Framework, PythonBackend};

mod support;

fn cpu() -> PythonBackend {
    PythonBackend::new(Framework::Keras, Device::Cpu, CpuSettings::new(2))
        .expect("Keras in the frameworks' environment (cargo xtask setup)")
}

parallax_core::conformance_tests!(cpu);

mod acceptance {
    parallax_core::acceptance_tests!(super::cpu);
}

#[test]
fn info_reports_keras_on_tensorflow_and_its_own_defaults() {
    let info = cpu().info();
    assert_eq!(info.backend, "keras");
    assert_eq!(info.framework, "Keras");
    assert!(
        info.framework_version
            .starts_with("3.15.1 on TensorFlow 2.21"),
        "{}",
        info.framework_version
    );
    assert_eq!(info.threads, 2);
    // Read from the framework at run time: Keras's Adam ε and a fresh BatchNormalization's
    // momentum 0.99 (0.01 in parallax's convention) and ε.
    assert_eq!(info.native_defaults.adam_epsilon, 1e-7);
    assert!((info.native_defaults.batch_norm_momentum - 0.01).abs() < 1e-12);
    assert_eq!(info.native_defaults.batch_norm_epsilon, 1e-3);
    // compile's jit_compile="auto", as it resolved, is in the ledger.
    let formulation = info
        .ledger
        .get(parallax_core::Topic::OptimizerFormulation)
        .unwrap_or_default();
    assert!(formulation.contains("resolved to"), "{formulation}");
}

/// Max pooling with explicit padding needs −∞ cells, which ZeroPadding2D does not give: one
/// error naming the layer and the backend.
#[test]
fn max_pooling_with_explicit_padding_is_refused_naming_the_layer() {
    support::refuses_padded_max_pool(&cpu(), "keras");
}

/// The parity panel in Keras's conventions (the biased running variance, which Keras's API
/// cannot change): Keras judged against the f64 referee within
/// [`REFEREE_MULTIPLE`](parallax_core::conformance::parity::REFEREE_MULTIPLE) noises, the
/// referee and the noise's engines set to the same convention (`support::panel`).
mod parity {
    crate::parity_tests!(
        parallax_core::conformance::parity::keras_convention_cases,
        super::cpu
    );
}

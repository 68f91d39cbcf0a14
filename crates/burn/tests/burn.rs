//! The burn backend against the shared conformance suite and the full-data acceptance, plus
//! what is particular to burn. This is the crate's one integration-test binary.

use parallax_burn::{BurnBackend, BurnEngine, BurnModel};
use parallax_core::{Backend, CpuSettings, Device, Error, spec::presets};

fn flex() -> BurnBackend {
    BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(2)).expect("Flex on the CPU")
}

parallax_core::conformance_tests!(flex);

mod acceptance {
    use super::flex;

    parallax_core::acceptance_tests!(flex);
}

#[test]
fn flex_refuses_a_gpu_with_a_typed_error() {
    let error =
        BurnBackend::new(BurnEngine::Flex, Device::Cuda(0), CpuSettings::new(2)).unwrap_err();
    assert!(matches!(error, Error::Device { .. }), "{error}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_get_it() {
    let error = BurnBackend::new(
        BurnEngine::for_device(Device::Cuda(0)),
        Device::Cuda(0),
        CpuSettings::new(2),
    )
    .unwrap_err();
    assert!(error.to_string().contains("`cuda` feature"), "{error}");
}

#[test]
fn the_net_hands_out_the_burn_model_and_nothing_else() {
    let model = presets::mlp([1, 4, 4], 2).resolve().expect("resolve");
    let mut net = flex().build(&model, None).expect("build");
    assert!(net.engine::<BurnModel>().is_some());
    assert!(net.engine_mut::<BurnModel>().is_some());
}

#[test]
fn info_reports_the_pinned_burn_version_and_threads() {
    let info = flex().info();
    assert_eq!(info.framework, "burn-flex");
    assert_eq!(info.backend, "burn");
    assert_eq!(info.framework_version, parallax_burn::BURN_VERSION);
    let manifest = include_str!("../../../Cargo.toml");
    assert!(
        manifest.contains(&format!(
            "burn = {{ version = \"={}\"",
            parallax_burn::BURN_VERSION
        )),
        "BURN_VERSION disagrees with the workspace's pinned burn"
    );
    assert!(info.threads >= 1);
}

#[test]
fn the_pool_and_the_caller_flush_denormals_as_asked() {
    let info = flex().info();
    assert!(
        info.flush_denormals,
        "Flex's threads should flush subnormals by default"
    );
}

/// burn on libtorch (burn-tch) passes the same suite; `cargo xtask test` enables it once
/// libtorch is provisioned.
#[cfg(feature = "tch")]
mod libtorch {
    use super::*;

    fn burn_tch() -> BurnBackend {
        BurnBackend::new(BurnEngine::LibTorch, Device::Cpu, CpuSettings::new(2))
            .expect("burn-tch on the CPU")
    }

    parallax_core::conformance_tests!(burn_tch);
}

//! The `pytorch` backend (PyTorch's own Python code in the embedded interpreter) against the
//! shared conformance suite, plus what is particular to it. This is the backend's one
//! integration-test binary: each Python backend has its own, since Keras's backend is fixed
//! when the interpreter starts.

use parallax_core::{Backend, CpuSettings, Device, Error};
use parallax_python::{Framework, PythonBackend};

mod support;

fn cpu() -> PythonBackend {
    PythonBackend::new(Framework::Pytorch, Device::Cpu, CpuSettings::new(2))
        .expect("PyTorch in the frameworks' environment (cargo xtask setup)")
}

parallax_core::conformance_tests!(cpu);

mod acceptance {
    parallax_core::acceptance_tests!(super::cpu);
}

#[test]
fn info_reports_pytorch_and_the_requested_threads() {
    let info = cpu().info();
    assert_eq!(info.backend, "pytorch");
    assert_eq!(info.framework, "PyTorch");
    assert_eq!(info.framework_version, "2.9.0");
    assert_eq!(info.threads, 2);
}

/// A framework exception in the middle of epoch 2 becomes the run's error line, its
/// traceback's last line, and the record keeps epoch 1 (`support`).
#[test]
fn an_exception_mid_epoch_fails_the_run_and_keeps_the_finished_epoch() {
    support::a_failing_epoch_keeps_the_finished_ones(&cpu());
}

#[test]
fn cuda_is_a_typed_device_error() {
    let error =
        PythonBackend::new(Framework::Pytorch, Device::Cuda(0), CpuSettings::new(2)).unwrap_err();
    assert!(matches!(error, Error::Device { .. }), "{error}");
}

/// The parity panel: PyTorch judged against the f64 referee within
/// [`REFEREE_MULTIPLE`](parallax_core::conformance::parity::REFEREE_MULTIPLE) noises, on the
/// standard cases (`support::panel`).
mod parity {
    use parallax_core::conformance::parity::{Case, Panel};

    fn panel(case: Case) -> Panel {
        crate::support::panel(case, super::cpu)
    }

    parallax_core::parity_tests!(parallax_core::conformance::parity::standard_cases, panel);
}

/// The defaults that the tch adapter states for PyTorch (`BackendInfo::native_defaults`, what a
/// `--defaults native` run of tch switches on) are the ones PyTorch itself reports at run time.
#[test]
fn the_defaults_tch_states_for_pytorch_are_pytorchs_own() {
    let stated = parallax_tch::TchBackend::new(Device::Cpu, CpuSettings::new(2))
        .expect("libtorch")
        .info()
        .native_defaults;
    let reported = cpu().info().native_defaults;
    assert_eq!(stated, reported);
}

/// PyTorch's eager loop against libtorch driven from Rust (tch), 3 epochs of the mlp and the
/// cnn with Adam on the bundled subset, from the same weights in the same order: every epoch's
/// train loss and the final predicted classes within 16 times the noise that reordering every
/// batch, or moving every initial weight by one ulp, makes on tch, or one of PyTorch's own twins
/// within those bounds (`parallax_core::conformance::trajectory`).
mod trajectory {
    use parallax_core::conformance::trajectory::TrajectoryCase;
    use parallax_core::spec::Preset;
    use parallax_core::{CpuSettings, Device, OptimizerConfig};
    use parallax_tch::TchBackend;

    fn check(preset: Preset) {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let case = TrajectoryCase::on_subset(preset, 3, OptimizerConfig::adam(1e-3), fixtures)
            .expect("the bundled subset");
        let tch = TchBackend::new(Device::Cpu, CpuSettings::new(2)).expect("libtorch");
        let judgement = case
            .judge(("pytorch", &super::cpu()), ("tch", &tch))
            .expect("pytorch and tch");
        eprintln!("trajectory: {preset:?}: {judgement}");
        assert!(judgement.holds(), "{judgement}");
    }

    #[test]
    fn mlp_for_3_epochs_against_tch() {
        check(Preset::Mlp);
    }

    #[test]
    fn cnn_for_3_epochs_against_tch() {
        check(Preset::Cnn);
    }
}

#[test]
fn the_registry_states_what_this_backend_runs() {
    support::the_registry_states_what_the_backend_runs(&cpu());
}

//! The `keras-torch` backend (the same Keras 3 code as `keras`, on Keras's PyTorch backend,
//! trained with `model.fit`) against the shared conformance suite, plus what is particular to
//! it. This is the backend's one integration-test binary: Keras fixes its backend when first
//! imported, so `keras` has a process of its own.

use parallax_core::{Backend, CpuSettings, Device};
use parallax_python::{Framework, PythonBackend};

mod support;

fn cpu() -> PythonBackend {
    PythonBackend::new(Framework::KerasTorch, Device::Cpu, CpuSettings::new(2))
        .expect("Keras in the frameworks' environment (cargo xtask setup)")
}

parallax_core::conformance_tests!(cpu);

mod acceptance {
    parallax_core::acceptance_tests!(super::cpu);
}

#[test]
fn info_reports_keras_on_pytorch_and_its_own_defaults() {
    let info = cpu().info();
    assert_eq!(info.backend, "keras-torch");
    assert_eq!(info.framework, "Keras");
    assert!(
        info.framework_version
            .starts_with("3.15.1 on PyTorch 2.9.0"),
        "{}",
        info.framework_version
    );
    assert_eq!(info.threads, 2);
    // Read from the framework at run time: Keras's Adam ε and a fresh BatchNormalization's
    // momentum 0.99 (0.01 in parallax's convention) and ε.
    assert_eq!(info.native_defaults.adam_epsilon, 1e-7);
    assert!((info.native_defaults.batch_norm_momentum - 0.01).abs() < 1e-12);
    assert_eq!(info.native_defaults.batch_norm_epsilon, 1e-3);
}

/// A framework exception in the middle of epoch 2 becomes the run's error line, its
/// traceback's last line, and the record keeps epoch 1 (`support`).
#[test]
fn an_exception_mid_epoch_fails_the_run_and_keeps_the_finished_epoch() {
    support::a_failing_epoch_keeps_the_finished_ones(&cpu());
}

/// Max pooling with explicit padding needs −∞ cells, which ZeroPadding2D does not give: one
/// error naming the layer and the backend.
#[test]
fn max_pooling_with_explicit_padding_is_refused_naming_the_layer() {
    support::refuses_padded_max_pool(&cpu(), "keras-torch");
}

/// The parity panel in Keras's conventions (the biased running variance, which Keras's API
/// cannot change): Keras judged against the f64 referee within
/// [`REFEREE_MULTIPLE`](parallax_core::conformance::parity::REFEREE_MULTIPLE) noises, the
/// referee and the noise's engines set to the same convention (`support::panel`).
mod parity {
    use parallax_core::conformance::parity::{Case, Panel};

    fn panel(case: Case) -> Panel {
        crate::support::panel(case, super::cpu)
    }

    parallax_core::parity_tests!(
        parallax_core::conformance::parity::keras_convention_cases,
        panel
    );
}

/// Keras's model.fit on PyTorch against PyTorch's own eager loop, 3 epochs of the mlp and the
/// cnn on the bundled subset, from the same weights in the same order: every epoch's train loss
/// and the final predicted classes within 16 times the noise that reordering every batch, or
/// moving every initial weight by one ulp, makes on pytorch, or one of Keras's own twins within
/// those bounds (`parallax_core::conformance::trajectory`). SGD with momentum 0.9, because it is
/// the one optimizer both APIs can run in the same form: each fixes its own Adam (Keras adds ε
/// to the uncorrected root), and two Adams would differ by design, not by rounding.
mod trajectory {
    use parallax_core::conformance::trajectory::TrajectoryCase;
    use parallax_core::spec::Preset;
    use parallax_core::{CpuSettings, Device, OptimizerConfig};
    use parallax_python::{Framework, PythonBackend};

    fn check(preset: Preset) {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let case = TrajectoryCase::on_subset(preset, 3, OptimizerConfig::sgd(0.01, 0.9), fixtures)
            .expect("the bundled subset");
        let pytorch = PythonBackend::new(Framework::Pytorch, Device::Cpu, CpuSettings::new(2))
            .expect("PyTorch beside Keras on torch");
        let judgement = case
            .judge(("keras-torch", &super::cpu()), ("pytorch", &pytorch))
            .expect("keras-torch and pytorch");
        eprintln!("trajectory: {preset:?}: {judgement}");
        assert!(judgement.holds(), "{judgement}");
    }

    #[test]
    fn mlp_for_3_epochs_against_pytorch() {
        check(Preset::Mlp);
    }

    #[test]
    fn cnn_for_3_epochs_against_pytorch() {
        check(Preset::Cnn);
    }
}

/// `--backends keras-torch` where the frameworks' environment lacks torch: one error line that
/// names the module, the environment and what to do. The interpreter picks its environment once
/// per process, so the check runs in a child process of this binary (`child`), pointed at a
/// copy of the environment without torch: every entry of its `site-packages` linked, except
/// `torch*`.
mod without_torch {
    use std::path::Path;
    use std::process::Command;

    use parallax_core::{CpuSettings, Device, Error};
    use parallax_python::{Framework, PythonBackend, VENV_VARIABLE};

    /// Set for the child, whose environment has no torch.
    const CHILD_VARIABLE: &str = "PARALLAX_TEST_WITHOUT_TORCH";

    /// The frameworks' environment at `venv` linked into `into`, without torch.
    fn environment_without_torch(venv: &Path, into: &Path) {
        let lib = venv.join("lib");
        for python in std::fs::read_dir(&lib).expect("the environment's lib/") {
            let python = python.expect("an entry of lib/");
            let site_packages = python.path().join("site-packages");
            if !site_packages.is_dir() {
                continue;
            }
            let mirror = into
                .join("lib")
                .join(python.file_name())
                .join("site-packages");
            std::fs::create_dir_all(&mirror).expect("the copy's site-packages");
            for entry in std::fs::read_dir(&site_packages).expect("site-packages") {
                let entry = entry.expect("an entry of site-packages");
                if entry.file_name().to_string_lossy().starts_with("torch") {
                    continue;
                }
                std::os::unix::fs::symlink(entry.path(), mirror.join(entry.file_name()))
                    .expect("a link");
            }
        }
    }

    #[test]
    fn keras_torch_is_one_line_that_says_what_to_do() {
        let venv = std::env::var_os(VENV_VARIABLE)
            .expect("the frameworks' environment (cargo xtask setup; cargo xtask test sets it)");
        let without = tempfile::tempdir().expect("tempdir");
        environment_without_torch(Path::new(&venv), without.path());
        let output = Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "--exact",
                "without_torch::child",
                "--ignored",
                "--nocapture",
            ])
            .env(VENV_VARIABLE, without.path())
            .env(CHILD_VARIABLE, "1")
            .output()
            .expect("the child process");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "the child failed:\n{stdout}\n{stderr}"
        );
    }

    /// The child's half: run by the test above, never alone.
    #[test]
    #[ignore = "a child process of keras_torch_is_one_line_that_says_what_to_do"]
    fn child() {
        assert!(
            std::env::var_os(CHILD_VARIABLE).is_some(),
            "run by without_torch::keras_torch_is_one_line_that_says_what_to_do, in an environment without torch"
        );
        let error = PythonBackend::new(Framework::KerasTorch, Device::Cpu, CpuSettings::new(2))
            .expect_err("Keras on torch without torch");
        let line = error.to_string();
        eprintln!("without torch: {line}");
        assert!(matches!(error, Error::Engine { .. }), "{line}");
        assert!(!line.contains('\n'), "more than one line: {line}");
        assert!(
            line.starts_with("keras-torch: the frameworks' environment")
                && line.contains("lacks the Python module 'torch'")
                && line.contains("cargo xtask setup"),
            "{line}"
        );
    }
}

#[test]
fn the_registry_states_what_this_backend_runs() {
    support::the_registry_states_what_the_backend_runs(&cpu());
}

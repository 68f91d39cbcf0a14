//! The acceptance runs: the mlp and the cnn trained on the full Fashion-MNIST through the run
//! protocol ([`acceptance_tests!`](crate::acceptance_tests)), and the data set they need.

use std::path::PathBuf;

use crate::backend::Backend;
use crate::data::DataRequest;
use crate::data::builtin::{BuiltinDataset, in_ci};
use crate::optim::OptimizerConfig;
use crate::record::{InitMode, RunRequest};
use crate::spec::{ModelSource, Preset};

use super::repo_root;

/// Expands to the acceptance tests on the full Fashion-MNIST, each calling `$make()` for a
/// fresh backend: the mlp reaches 0.85 test accuracy in 3 epochs and the cnn 0.88 in 2, with
/// canonical weights from seed 42, Adam 1e-3, batch 64, through the run protocol.
///
/// The bounds are about training, not f32: from the same start two engines' trajectories part
/// after a few hundred steps, so each engine's final accuracy is in effect one draw from the
/// seed-to-seed spread (a few tenths of a point), on top of which the 10,000 test images
/// have a binomial standard error of √(p(1 − p)/10⁴) ≈ 0.0035 near 0.86. Published
/// baselines are 0.87–0.89 for a converged MLP and 0.90–0.93 for a small CNN; these runs are
/// short of convergence. PyTorch and Keras reach 0.857 with the mlp after 2 epochs, and the
/// repository's tch record (`fixtures/records/v1-tch-mlp.json`, this configuration) 0.857 after 3,
/// so 0.85 sits only about two standard errors below it; the cnn reaches 0.880–0.884 after 1
/// epoch, so 0.88 after 2 leaves a margin of one to two points. Both still fail an engine that
/// trains on a small fraction of the data, never updates a layer, or feeds pixels in 0–255,
/// each of which costs several points.
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
        precision: Default::default(),
        compile: Default::default(),
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
    // Fashion-MNIST's training split, exactly: a run on a subset would reach other accuracies.
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

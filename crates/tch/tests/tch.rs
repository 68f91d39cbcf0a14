//! The tch backend against the shared conformance suite and the full-data acceptance, plus what
//! is particular to libtorch (parity with the other engines and the f64 referee is
//! `crates/parity`'s). This is the crate's one integration-test
//! binary.

use ndarray::Array1;
use parallax_core::spec::presets;
use parallax_core::{Backend, Batch, CpuSettings, Device, Error, OptimizerConfig, init};
use parallax_tch::{TchBackend, TchModel};

fn cpu() -> TchBackend {
    TchBackend::new(Device::Cpu, CpuSettings::new(2)).expect("libtorch on the CPU")
}

parallax_core::conformance_tests!(cpu);

mod acceptance {
    parallax_core::acceptance_tests!(super::cpu);
}

#[test]
fn cuda_without_a_gpu_is_a_typed_device_error() {
    let result = TchBackend::new(Device::Cuda(0), CpuSettings::new(2));
    if tch::Cuda::is_available() {
        assert!(result.is_ok(), "CUDA is available but cuda:0 was refused");
    } else {
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Device { .. }), "{error}");
        assert!(error.to_string().contains("CUDA"), "{error}");
    }
}

#[test]
fn a_cuda_index_past_the_last_gpu_is_a_typed_device_error() {
    let error = TchBackend::new(Device::Cuda(4096), CpuSettings::new(2)).unwrap_err();
    assert!(matches!(error, Error::Device { .. }), "{error}");
}

#[test]
fn info_reports_libtorch_and_the_requested_threads() {
    let info = cpu().info();
    assert_eq!(info.backend, parallax_tch::BACKEND_NAME);
    assert_eq!(info.framework, "libtorch");
    assert_eq!(info.framework_version, parallax_tch::LIBTORCH_VERSION);
    assert_eq!(info.threads, 2);
}

#[test]
fn libtorch_threads_flush_denormals_as_asked() {
    assert!(
        cpu().info().flush_denormals,
        "libtorch's threads should flush subnormals by default"
    );
}

#[test]
fn keeping_denormals_is_reported_too() {
    // A thread of its own, since flush-to-zero is per thread and OpenMP's workers inherit it.
    let info = std::thread::spawn(|| {
        let settings = CpuSettings {
            threads: 2,
            flush_denormals: false,
        };
        TchBackend::new(Device::Cpu, settings)
            .expect("libtorch on the CPU")
            .info()
    })
    .join()
    .expect("thread");
    assert!(!info.flush_denormals);
}

/// A batch already in libtorch trains through the model's own step, reached through the net.
#[test]
fn a_step_on_libtorch_tensors_equals_the_host_step() {
    let model = presets::mlp([1, 4, 4], 2).resolve().expect("resolve");
    let weights = init::canonical(&model, 5);
    let images = parallax_core::conformance::test_images(4, [1, 4, 4], 3);
    let labels = Array1::from(vec![0, 1, 0, 1]);
    let optimizer = OptimizerConfig::sgd(0.1, 0.0);
    let mut host = cpu().build(&model, Some(&weights)).expect("build");
    let host_loss = host
        .train_step(
            &Batch {
                images: images.clone(),
                labels,
            },
            &optimizer,
        )
        .expect("step");
    let mut net = cpu().build(&model, Some(&weights)).expect("build");
    let tensors =
        tch::Tensor::from_slice(images.as_slice().expect("standard layout")).reshape([4, 1, 4, 4]);
    let targets = tch::Tensor::from_slice(&[0i64, 1, 0, 1]);
    let loss = net
        .engine_mut::<TchModel>()
        .expect("a libtorch model")
        .train_step_tensors(&tensors, &targets, &optimizer)
        .expect("step");
    assert_eq!(loss, host_loss);
    assert_eq!(
        net.export_weights().expect("export"),
        host.export_weights().expect("export")
    );
}

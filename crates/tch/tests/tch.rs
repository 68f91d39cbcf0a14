//! The tch backend against the shared conformance suite, plus what is particular to libtorch.

use ndarray::Array1;
use parallax_core::spec::presets;
use parallax_core::{Backend, Batch, CpuSettings, Device, Error, OptimizerConfig, init};
use parallax_tch::TchBackend;

fn cpu() -> TchBackend {
    TchBackend::new(Device::Cpu, CpuSettings::new(2)).expect("libtorch on the CPU")
}

parallax_core::conformance_tests!(cpu);

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

fn small_batch() -> Batch {
    Batch {
        images: parallax_core::conformance::test_images(4, [1, 4, 4], 3),
        labels: Array1::from(vec![0, 1, 0, 1]),
    }
}

#[test]
fn both_adam_formulations_train() {
    let model = presets::mlp([1, 4, 4], 2).resolve().expect("resolve");
    let weights = init::canonical(&model, 5);
    for name in ["adam", "adam-keras"] {
        let mut net = cpu().build(&model, Some(&weights)).expect("build");
        let optimizer = OptimizerConfig::parse(name, 1e-2).expect("parse");
        let first = net.train_step(&small_batch(), &optimizer).expect("step");
        let mut last = first;
        for _ in 0..20 {
            last = net.train_step(&small_batch(), &optimizer).expect("step");
        }
        assert!(last < first, "{name}: loss went from {first} to {last}");
    }
}

#[test]
fn the_first_adam_step_moves_each_parameter_by_the_learning_rate() {
    // On its first step PyTorch's Adam has m̂ = g and v̂ = g², so every parameter whose gradient
    // is well above ε moves by lr·g/(|g| + ε) ≈ ±lr.
    let model = presets::mlp([1, 4, 4], 2).resolve().expect("resolve");
    let weights = init::canonical(&model, 6);
    let mut net = cpu().build(&model, Some(&weights)).expect("build");
    let optimizer = OptimizerConfig::adam(1e-3);
    net.train_step(&small_batch(), &optimizer).expect("step");
    let after = net.export_weights().expect("export");
    let before = weights.get("fc2.bias").expect("bias");
    let moved = after.get("fc2.bias").expect("bias") - before;
    for delta in moved.iter() {
        assert!(
            (delta.abs() - 1e-3).abs() < 1e-6,
            "first Adam step moved a bias by {delta}, expected ±lr"
        );
    }
}

//! The TensorFlow backend against the shared conformance suite and the full-data acceptance
//! (parity with the other engines is `crates/parity`'s), plus what is particular to it: one graph that stops growing, typed
//! device errors, thread reporting, Keras's initialisation, NHWC flattening. This is the
//! crate's one integration-test binary.

use ndarray::Array1;
use parallax_core::spec::presets;
use parallax_core::{Backend, Batch, CpuSettings, Device, Error, OptimizerConfig, init};
use parallax_tf::{TfBackend, TfModel};

fn cpu() -> TfBackend {
    TfBackend::new(Device::Cpu, CpuSettings::new(2)).expect("TensorFlow on the CPU")
}

parallax_core::conformance_tests!(cpu);

mod acceptance {
    parallax_core::acceptance_tests!(super::cpu);
}

/// The registry's row sets the variable that `--compile on` needs in the worker's environment,
/// and says the adapter compiles, as its `BackendInfo` does.
#[test]
fn the_registry_sets_what_xla_needs() {
    let entry = parallax_registry::find(parallax_tf::BACKEND_NAME).expect("the tf row");
    assert_eq!(
        entry.worker_env,
        &[(parallax_tf::XLA_FLAGS_VARIABLE, parallax_tf::XLA_CPU_FLAG)]
    );
    assert!(entry.compile.is_yes());
    assert!(cpu().info().compiles);
}

#[test]
fn a_gpu_that_is_not_visible_is_a_typed_device_error() {
    // The provisioned tensorflow-cpu build sees no GPU; an index past any machine's GPUs fails
    // on every build.
    for index in [0, 4096] {
        match TfBackend::new(Device::Cuda(index), CpuSettings::new(2)) {
            Ok(_) => assert_eq!(index, 0, "GPU {index} accepted"),
            Err(error) => {
                assert!(matches!(error, Error::Device { .. }), "{error}");
                assert!(error.to_string().contains("GPU"), "{error}");
            }
        }
    }
}

#[test]
fn info_reports_tensorflow_and_the_requested_threads() {
    let info = cpu().info();
    assert_eq!(info.backend, parallax_tf::BACKEND_NAME);
    assert_eq!(info.framework, "tensorflow");
    assert_eq!(info.framework_version, parallax_tf::TENSORFLOW_VERSION);
    assert_eq!(info.threads, 2);
    assert!(
        info.flush_denormals,
        "TensorFlow's threads flush subnormals"
    );
}

fn batch(n: usize, shape: [usize; 3], classes: usize, salt: u64) -> Batch {
    Batch {
        images: parallax_core::conformance::test_images(n, shape, salt),
        labels: Array1::from((0..n).map(|i| (i % classes) as u32).collect::<Vec<_>>()),
    }
}

/// The graph is built once: training steps, with either optimizer, and predictions add no
/// operations after the first step of each optimizer configuration.
#[test]
fn the_graph_does_not_grow_from_step_to_step() {
    let model = parallax_core::conformance::every_layer_spec()
        .resolve()
        .expect("resolve");
    let weights = init::canonical(&model, 3);
    let mut net = cpu().build(&model, Some(&weights)).expect("build");
    let batch = batch(4, model.input(), model.classes(), 4);
    let adam = OptimizerConfig::adam(1e-3);
    let operations = |net: &parallax_core::Net| {
        net.engine::<TfModel>()
            .expect("a TensorFlow model")
            .operation_count()
    };
    net.train_step(&batch, &adam).expect("first step");
    net.predict(batch.images.view()).expect("predict");
    let after_first = operations(&net);
    for _ in 0..3 {
        net.train_step(&batch, &adam).expect("step");
        net.predict(batch.images.view()).expect("predict");
        net.export_weights().expect("export");
    }
    assert_eq!(operations(&net), after_first);
    net.import_weights(&weights).expect("import");
    net.train_step(&batch, &adam).expect("step after import");
    assert_eq!(operations(&net), after_first);
}

/// Without shared weights, TensorFlow starts from Keras's defaults: Glorot-uniform kernels
/// within ±√(6/(fan_in+fan_out)) and zero biases.
#[test]
fn native_initialisation_is_keras_default() {
    let model = presets::cnn([1, 28, 28], 10).resolve().expect("resolve");
    let weights = cpu()
        .build(&model, None)
        .expect("build")
        .export_weights()
        .expect("export");
    weights.check(&model).expect("complete");
    let kernel = weights.get("fc1.weight").expect("fc1");
    let [out, inputs] = [kernel.shape()[0], kernel.shape()[1]];
    let limit = (6.0 / (out + inputs) as f32).sqrt();
    // The draws are u·2·limit − limit with u ≤ 1 − 2⁻²³ from a seeded integer stream, the same
    // bits on any host; they stop two ulps short of the adapter's limit (√ in f64, rounded),
    // which this f32 computation matches to about an ulp.
    assert!(kernel.iter().all(|v| v.abs() <= limit));
    // Of 401,408 uniform draws, none above half the limit has probability 2⁻⁴⁰¹⁴⁰⁸, while
    // PyTorch's rule (±1/√fan_in = 0.018, 0.42 of Glorot's 0.043 here) never gets there: this
    // tells Keras's initialisation from PyTorch's.
    assert!(kernel.iter().any(|v| v.abs() > 0.5 * limit));
    assert!(
        weights
            .get("fc1.bias")
            .expect("bias")
            .iter()
            .all(|&v| v == 0.0)
    );
}

/// Two channels of 2×2 flattened and fed to a dense layer: TensorFlow flattens NHWC, so the
/// kernel's rows are permuted on import. The logits equal the canonical C,H,W product.
#[test]
fn a_dense_layer_after_a_flattened_image_reads_canonical_order() {
    use parallax_core::spec::{Layer, ModelSpec, NamedLayer};
    let spec = ModelSpec {
        name: "flatten".into(),
        input: [2, 2, 2],
        layers: vec![
            NamedLayer {
                name: Some("flatten".into()),
                layer: Layer::Flatten,
            },
            NamedLayer {
                name: Some("fc".into()),
                layer: Layer::Dense {
                    units: 3,
                    in_features: None,
                    bias: false,
                },
            },
        ],
    };
    let model = spec.resolve().expect("resolve");
    let weights = init::canonical(&model, 8);
    let images = parallax_core::conformance::test_images(2, [2, 2, 2], 9);
    let logits = cpu()
        .build(&model, Some(&weights))
        .expect("build")
        .predict(images.view())
        .expect("predict");
    let kernel = weights.get("fc.weight").expect("kernel");
    for n in 0..2 {
        let flat: Vec<f32> = images
            .index_axis(ndarray::Axis(0), n)
            .iter()
            .copied()
            .collect();
        for o in 0..3 {
            let expected: f32 = (0..8).map(|i| kernel[[o, i]] * flat[i]).sum();
            // Eight products of weights within ±1/√8 and inputs within ±1: Σ|wᵢxᵢ| ≤ 2.9, so
            // TensorFlow's sum and this one each err by at most γ₈·2.9 ≈ 1.4e-6, where
            // γₙ = nu/(1 − nu) and u = 2⁻²⁴: 2.8e-6 together, under 1e-5 on any host. Reading
            // the kernel's rows in NHWC order instead of C,H,W pairs other weights with the
            // pixels and misses by O(0.1).
            assert!(
                (logits[[n, o]] - expected).abs() < 1e-5,
                "{} vs {expected}",
                logits[[n, o]]
            );
        }
    }
}

/// tf's halves of checks against Keras on TensorFlow (`crates/python/tests/keras.rs` judges
/// them), handed off through a directory since TensorFlow's C library and CPython cannot share
/// a process: 3 epochs of the mlp and the cnn with Adam in Keras's form on the bundled subset,
/// with the same training with every batch reversed (the noise's twin), and the defaults this
/// adapter states for Keras (`BackendInfo::native_defaults`).
mod keras_handoff {
    use parallax_core::conformance::handoff::{hand_off, handoff_dir};
    use parallax_core::conformance::parity::BatchOrder;
    use parallax_core::conformance::trajectory::TrajectoryCase;
    use parallax_core::spec::Preset;
    use parallax_core::{Backend, OptimizerConfig};

    fn trajectories(preset: Preset, name: &str) {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        // The case the keras binary trains: keep the two alike.
        let case =
            TrajectoryCase::on_subset(preset, 3, OptimizerConfig::adam_keras(1e-3), fixtures)
                .expect("the bundled subset");
        let tf = super::cpu();
        let reference = case.train(&tf, BatchOrder::Natural).expect("tf");
        let twins = case.twins(&tf).expect("tf, every batch reordered");
        let dir = handoff_dir().expect("the handoff directory");
        hand_off(&dir, name, &(reference, twins)).expect("handing the trajectories off");
    }

    #[test]
    #[ignore = "run by `cargo xtask test`, which then runs the keras binary's half"]
    fn mlp_trajectories() {
        trajectories(Preset::Mlp, "tf-mlp");
    }

    #[test]
    #[ignore = "run by `cargo xtask test`, which then runs the keras binary's half"]
    fn cnn_trajectories() {
        trajectories(Preset::Cnn, "tf-cnn");
    }

    #[test]
    #[ignore = "run by `cargo xtask test`, which then runs the keras binary's half"]
    fn stated_keras_defaults() {
        let dir = handoff_dir().expect("the handoff directory");
        let stated = super::cpu().info().native_defaults;
        hand_off(&dir, "tf-native-defaults", &stated).expect("handing the defaults off");
    }
}

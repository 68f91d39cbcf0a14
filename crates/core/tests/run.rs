//! The run protocol with a test double of a backend: what it records, when it writes the
//! record, what a failure leaves on disk; and records of an older layout, read back.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ndarray::{Array2, ArrayView4};
use parallax_core::data::{DataRequest, builtin::BuiltinDataset};
use parallax_core::optim::{AdamFormulation, OptimizerKind};
use parallax_core::record::{InitMode, Node, ProgressEvent, RunRecord, RunRequest, RunStatus};
use parallax_core::run::{RunFiles, execute};
use parallax_core::spec::{ModelSource, Preset, ResolvedModel};
use parallax_core::{
    Backend, BackendInfo, Batch, Checked, Device, Error, GradCam, GradCamTarget, Ledger, Model,
    OptimizerConfig, Result, Topic, Weights,
};
use parallax_core::{Factor, NativeDefaults, VarianceEstimator};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A backend whose model predicts class 0 always, reports a falling loss, and fails the
/// training step that follows `fail_after` steps.
struct Scripted {
    fail_after: Option<usize>,
    steps: Rc<Cell<usize>>,
}

struct ScriptedModel {
    weights: Weights,
    classes: usize,
    fail_after: Option<usize>,
    steps: Rc<Cell<usize>>,
}

impl Backend for Scripted {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: "scripted".into(),
            framework: "script".into(),
            framework_version: "1".into(),
            device: Device::Cpu,
            threads: 1,
            flush_denormals: true,
            ledger: Ledger::from_fn(|topic: Topic| format!("scripted {topic}")),
            // Keras's values, so that a native run visibly differs from a controlled one.
            native_defaults: NativeDefaults {
                adam_epsilon: 1e-7,
                adam_formulation: AdamFormulation::Keras,
                batch_norm_momentum: 0.01,
                batch_norm_epsilon: 1e-3,
                running_variance: VarianceEstimator::Biased,
            },
            fixed: Vec::new(),
            precisions: parallax_core::backend::f32_only(),
            compiles: false,
            precision_note: None,
        }
    }

    fn seed(&self, _: u64) {
        // The scripted model draws nothing at random.
    }

    fn create(
        &self,
        model: &ResolvedModel,
        weights: Option<Checked<&Weights>>,
        _execution: parallax_core::Execution,
    ) -> Result<Box<dyn Model>> {
        // `build_with` refuses every execution but f32 uncompiled, the one `info` states.
        Ok(Box::new(ScriptedModel {
            weights: weights
                .map(|weights| (*weights).clone())
                .unwrap_or_else(|| parallax_core::init::canonical(model, 0)),
            classes: model.classes(),
            fail_after: self.fail_after,
            steps: Rc::clone(&self.steps),
        }))
    }

    fn matmul_probe(
        &self,
        _: ndarray::ArrayView2<'_, f32>,
        _: ndarray::ArrayView2<'_, f32>,
        _: parallax_core::Precision,
    ) -> Result<Box<dyn parallax_core::backend::MatmulProbe>> {
        Err(Error::Unsupported {
            backend: "scripted".into(),
            what: "a matrix product".into(),
        })
    }
}

impl Model for ScriptedModel {
    fn import_weights(&mut self, weights: Checked<&Weights>) -> Result<()> {
        self.weights = (*weights).clone();
        Ok(())
    }

    fn export_weights(&self) -> Result<Weights> {
        Ok(self.weights.clone())
    }

    fn train_step(&mut self, _: Checked<&Batch>, _: &OptimizerConfig) -> Result<f32> {
        let step = self.steps.get();
        if self.fail_after == Some(step) {
            return Err(Error::engine("scripted", "the engine gave up"));
        }
        self.steps.set(step + 1);
        Ok(1.0 / (1.0 + step as f32))
    }

    fn predict(&mut self, images: Checked<ArrayView4<'_, f32>>) -> Result<Array2<f32>> {
        let mut logits = Array2::zeros((images.dim().0, self.classes));
        logits.column_mut(0).fill(1.0);
        Ok(logits)
    }

    fn grad_cam(&mut self, _: Checked<GradCamTarget<'_>>) -> Result<GradCam> {
        Err(Error::Unsupported {
            backend: "scripted".into(),
            what: "GradCAM".into(),
        })
    }
}

/// Three epochs of the mlp on 256 examples of the bundled subset, batch 64: four steps each.
fn request() -> RunRequest {
    RunRequest {
        backend: "scripted".into(),
        device: Device::Cpu,
        threads: 1,
        flush_denormals: true,
        model: ModelSource::Preset(Preset::Mlp),
        data: DataRequest {
            limit_train: Some(256),
            ..DataRequest::builtin(
                BuiltinDataset::FashionMnistSubset,
                std::env::temp_dir(),
                repo_root().join("fixtures"),
            )
        },
        epochs: 3,
        batch_size: 64,
        optimizer: OptimizerConfig::adam(1e-3),
        seed: 7,
        init: InitMode::Canonical,
        native: Default::default(),
        save_weights: false,
        measure_peak: false,
        precision: Default::default(),
        compile: Default::default(),
        git_revision: "test".into(),
    }
}

fn scripted(fail_after: Option<usize>) -> Scripted {
    Scripted {
        fail_after,
        steps: Rc::new(Cell::new(0)),
    }
}

#[test]
fn a_run_records_every_epoch_and_ends_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = RunFiles {
        record: dir.path().join("record.json"),
        weights: Some(dir.path().join("weights.safetensors")),
        node: Some(Node::here("node-7", true)),
    };
    let mut events = Vec::new();
    let mut request = request();
    request.save_weights = true;
    let record = execute(&request, &scripted(None), Some(&files), &mut |event| {
        events.push(event.clone());
    })
    .expect("run");
    assert_eq!(record.status, RunStatus::Complete);
    assert_eq!(record.epochs.len(), 3);
    assert_eq!(record.train_examples, 256);
    assert_eq!(record.run, request.id());
    assert_eq!(record.ledger.missing(), Vec::<Topic>::new());
    // Class 0 always: the accuracy is the share of class 0 in the test set.
    let zeros = record.confusion_matrix.support(0) as f64;
    assert_eq!(record.test_accuracy, zeros / record.test_examples as f64);
    assert_eq!(
        record.epochs[2].elapsed_training_seconds,
        record.epochs.iter().map(|e| e.seconds).sum::<f64>()
    );
    assert_eq!(RunRecord::load(&files.record).expect("saved"), record);
    // The node the command named is in the record, as it is in every record written before.
    let node = record.node.as_ref().expect("the record names its node");
    assert_eq!((node.name.as_str(), node.exclusive), ("node-7", true));
    assert!(!node.kind.is_empty());
    let model = Preset::Mlp
        .spec([1, 28, 28], 10)
        .resolve()
        .expect("resolve");
    assert_eq!(
        Weights::load(files.weights.as_ref().expect("path")).expect("saved weights"),
        parallax_core::init::canonical(&model, 7)
    );
    assert!(matches!(
        events[0],
        ProgressEvent::Start {
            steps_per_epoch: 4,
            ..
        }
    ));
    let epochs = events
        .iter()
        .filter(|event| matches!(event, ProgressEvent::Epoch(_)))
        .count();
    assert_eq!(epochs, 3);
}

#[test]
fn a_native_run_uses_the_engines_defaults_and_says_so() {
    let steps = Rc::new(Cell::new(0));
    let backend = Scripted {
        fail_after: None,
        steps: Rc::clone(&steps),
    };
    let controlled = execute(&request(), &backend, None, &mut |_| {}).expect("controlled run");
    assert!(controlled.native.is_empty());
    assert_eq!(controlled.optimizer, OptimizerConfig::adam(1e-3));
    assert!(
        controlled
            .ledger
            .get(Topic::Initialisation)
            .unwrap()
            .starts_with("this run: canonical, shared (seed 7)")
    );
    let native = RunRequest {
        native: Factor::ALL.into_iter().collect(),
        ..request()
    };
    let record = execute(&native, &backend, None, &mut |_| {}).expect("native run");
    assert_eq!(record.native.len(), Factor::ALL.len());
    let OptimizerKind::Adam {
        epsilon,
        formulation,
        ..
    } = record.optimizer.kind
    else {
        panic!("{:?}", record.optimizer);
    };
    assert_eq!((epsilon, formulation), (1e-7, AdamFormulation::Keras));
    let entry = |topic| record.ledger.get(topic).unwrap().to_string();
    assert!(
        entry(Topic::Initialisation)
            .starts_with("this run: the engine's own draw. Engine: scripted")
    );
    assert!(entry(Topic::OptimizerEpsilon).starts_with("this run: 1e-7 (the engine's own)"));
    assert!(entry(Topic::BatchNormMomentum).contains("no batch norm in this model"));
    // The configuration differs, so the two runs never share a path or a summary.
    assert_ne!(native.id().configuration, request().id().configuration);
}

#[test]
fn a_run_that_fails_keeps_its_finished_epochs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = RunFiles {
        record: dir.path().join("record.json"),
        weights: None,
        node: None,
    };
    // Four steps an epoch: the sixth step is in epoch 2.
    let error = execute(&request(), &scripted(Some(5)), Some(&files), &mut |_| {})
        .expect_err("the run fails");
    assert!(matches!(error, Error::Engine { .. }), "{error}");
    let record = RunRecord::load(&files.record).expect("a record of the finished epoch");
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.epochs.len(), 1);
    assert_eq!(
        record.error.as_deref(),
        Some("scripted: the engine gave up")
    );
}

#[test]
fn a_run_that_fails_in_its_first_epoch_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = RunFiles {
        record: dir.path().join("record.json"),
        weights: None,
        node: None,
    };
    assert!(execute(&request(), &scripted(Some(2)), Some(&files), &mut |_| {}).is_err());
    assert!(!files.record.exists());
}

#[test]
fn bad_requests_fail_before_any_training() {
    let steps = Rc::new(Cell::new(0));
    let backend = Scripted {
        fail_after: None,
        steps: Rc::clone(&steps),
    };
    let mut zero = request();
    zero.epochs = 0;
    assert!(matches!(
        execute(&zero, &backend, None, &mut |_| {}),
        Err(Error::InvalidArgument(_))
    ));
    let mut missing = request();
    missing.init = InitMode::File(PathBuf::from("/nonexistent/weights.safetensors"));
    assert!(matches!(
        execute(&missing, &backend, None, &mut |_| {}),
        Err(Error::Io { .. })
    ));
    // A precision or compilation the engine does not state is refused in one line.
    let mut bf16 = request();
    bf16.precision = parallax_core::Precision::Bf16;
    let refused = execute(&bf16, &backend, None, &mut |_| {}).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "scripted does not support --precision bf16"
    );
    let mut compiled = request();
    compiled.compile = parallax_core::Compile::On;
    let refused = execute(&compiled, &backend, None, &mut |_| {}).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "scripted does not support --compile on"
    );
    assert_eq!(steps.get(), 0);
}

/// A record written by parallax before records had a status (`fixtures/records/`): it reads
/// as a complete run, with its free-form defaults filed under the ledger's topics.
#[test]
fn a_version_1_record_reads_as_a_complete_run() {
    let path = repo_root().join("fixtures/records/v1-tch-mlp.json");
    let record = RunRecord::load(&path).expect("a version-1 record loads");
    assert_eq!(record.record_version, parallax_core::record::RECORD_VERSION);
    assert_eq!(record.status, RunStatus::Complete);
    assert_eq!(record.run.configuration, "v1");
    assert_eq!((record.run.backend.as_str(), record.run.seed), ("tch", 42));
    let threads = record.ledger.get(Topic::Threads).expect("threads");
    assert!(threads.contains("OpenMP"), "{threads}");
    assert!(threads.contains("GOMP_SPINCOUNT"), "{threads}");
    assert!(record.ledger.get(Topic::OptimizerEpsilon).is_some());
    assert_eq!(record.init, InitMode::Canonical);
}

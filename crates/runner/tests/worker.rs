//! End-to-end tests of the worker binary: real runs on real data, and bad input that must give
//! one clear error line, a non-zero exit and no panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use parallax_core::data::{DataRequest, IdxImages, write_idx_images, write_idx_labels};
use parallax_core::record::{InitMode, RunRecord, RunRequest, RunStatus};
use parallax_core::{Device, OptimizerConfig};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn request(dataset: &str, data_dir: Option<PathBuf>, model: &str, epochs: u32) -> RunRequest {
    RunRequest {
        backend: "burn".into(),
        device: Device::Cpu,
        threads: 2,
        flush_denormals: true,
        model: model.parse().expect("a known model"),
        data: DataRequest {
            dataset: dataset.parse().expect("a known data set"),
            data_dir,
            cache_dir: std::env::temp_dir().join("parallax-test-cache-unused"),
            fixtures_dir: repo_root().join("fixtures"),
            image_size: 16,
            image_channels: 1,
            limit_train: None,
            skip_unreadable: false,
        },
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

/// A request as JSON, with one field replaced, for what the typed request cannot hold.
fn request_json(request: &RunRequest, field: &str, value: serde_json::Value) -> String {
    let mut json = serde_json::to_value(request).expect("json");
    json[field] = value;
    json.to_string()
}

struct Outcome {
    success: bool,
    stderr: String,
    record: Option<RunRecord>,
}

fn run_worker(request: &RunRequest) -> Outcome {
    run_worker_json(&serde_json::to_string(request).expect("json"))
}

fn run_worker_json(request: &str) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let request_path = dir.path().join("request.json");
    let record_path = dir.path().join("record.json");
    std::fs::write(&request_path, request).expect("write request");
    let output = Command::new(env!("CARGO_BIN_EXE_parallax-runner"))
        .arg("--request")
        .arg(&request_path)
        .arg("--record")
        .arg(&record_path)
        .output()
        .expect("run the worker");
    Outcome {
        success: output.status.success(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        record: RunRecord::load(&record_path).ok(),
    }
}

/// What TensorFlow's library prints as it loads, before the worker's `main` runs, when the
/// worker links it (the tests build one worker with every engine). No environment variable
/// silences it (`TF_CPP_MIN_LOG_LEVEL` does not reach it, checked with TF 2.21), and
/// `cargo xtask` reads only the worker's own `error:` line.
fn is_tensorflow_start_up(line: &str) -> bool {
    line.starts_with("WARNING: All log messages before absl::InitializeLog()")
        || (line.contains("port.cc") && line.contains("oneDNN custom operations"))
}

fn assert_one_error_line(outcome: &Outcome, expected: &str) {
    assert!(!outcome.success, "the worker succeeded on bad input");
    assert!(
        !outcome.stderr.contains("panicked"),
        "the worker panicked:\n{}",
        outcome.stderr
    );
    let lines: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| !is_tensorflow_start_up(line))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line, got:\n{}",
        outcome.stderr
    );
    assert!(
        lines[0].starts_with("error: "),
        "not an error line: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(expected),
        "error line {:?} does not mention {expected:?}",
        lines[0]
    );
    assert!(outcome.record.is_none(), "a failed run wrote a record");
}

/// A small, valid IDX data set in `dir`, in Fashion-MNIST's file names.
fn write_tiny_idx(dir: &Path) {
    let images: Vec<u8> = (0..20 * 28 * 28).map(|i| (i % 251) as u8).collect();
    let labels: Vec<u8> = (0..20).map(|i| (i % 10) as u8).collect();
    for split in ["train", "t10k"] {
        let idx = IdxImages {
            count: 20,
            rows: 28,
            cols: 28,
            pixels: images.clone(),
        };
        write_idx_images(&dir.join(format!("{split}-images-idx3-ubyte.gz")), &idx).expect("images");
        write_idx_labels(&dir.join(format!("{split}-labels-idx1-ubyte.gz")), &labels)
            .expect("labels");
    }
}

#[test]
fn a_truncated_idx_file_is_one_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_idx(dir.path());
    // Rewrite the training images uncompressed and cut them short.
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    std::fs::remove_file(&path).expect("remove");
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 20, 0, 0, 0, 28, 0, 0, 0, 28];
    bytes.extend(std::iter::repeat_n(7u8, 1000));
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), bytes).expect("write");
    let outcome = run_worker(&request("fashion-mnist", Some(dir.path().into()), "mlp", 1));
    assert_one_error_line(&outcome, "truncated");
}

#[test]
fn a_corrupted_idx_file_is_one_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_idx(dir.path());
    let path = dir.path().join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(&path, b"\x1f\x8bthis is not gzip data at all").expect("write");
    let outcome = run_worker(&request("fashion-mnist", Some(dir.path().into()), "mlp", 1));
    assert_one_error_line(&outcome, "t10k-labels-idx1-ubyte.gz");
}

#[test]
fn a_missing_data_directory_is_one_error_line() {
    let outcome = run_worker(&request(
        "fashion-mnist",
        Some("/nonexistent/parallax".into()),
        "mlp",
        1,
    ));
    assert_one_error_line(&outcome, "/nonexistent/parallax");
}

#[test]
fn an_unknown_model_or_backend_is_one_error_line() {
    let base = request("fashion-mnist-subset", None, "mlp", 1);
    let outcome = run_worker_json(&request_json(&base, "model", "transformer".into()));
    assert_one_error_line(&outcome, "unknown model \"transformer\"");
    let mut unknown = base;
    unknown.backend = "jax".into();
    assert_one_error_line(
        &run_worker(&unknown),
        &format!(
            "unknown backend \"jax\"; known backends: {}",
            parallax_registry::names()
        ),
    );
}

#[test]
fn a_corrupt_weights_file_is_one_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("start.safetensors");
    std::fs::write(&path, b"not a safetensors file").expect("write");
    let mut corrupt = request("fashion-mnist-subset", None, "mlp", 1);
    corrupt.init = InitMode::File(path);
    assert_one_error_line(
        &run_worker(&corrupt),
        "start.safetensors: not a weights file",
    );
}

#[test]
fn a_spec_that_does_not_fit_is_one_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("bad.json");
    std::fs::write(
        &spec,
        r#"{"name": "bad", "input": [1, 28, 28], "layers": [
            {"type": "flatten"}, {"type": "dense", "units": 10, "in_features": 3136}]}"#,
    )
    .expect("write spec");
    let outcome = run_worker(&request(
        "fashion-mnist-subset",
        None,
        spec.to_str().expect("utf-8"),
        1,
    ));
    assert_one_error_line(&outcome, "layer 2 (dense): expects 3136 inputs, gets 784");
}

#[test]
fn the_bundled_subset_trains_and_records_everything() {
    let outcome = run_worker(&request("fashion-mnist-subset", None, "mlp", 2));
    assert!(outcome.success, "worker failed: {}", outcome.stderr);
    let record = outcome.record.expect("record");
    assert_eq!(record.backend, "burn");
    assert_eq!(record.dataset.to_string(), "fashion-mnist-subset");
    assert_eq!((record.train_examples, record.test_examples), (2000, 500));
    assert_eq!(record.epochs.len(), 2);
    assert!(record.epochs[1].train_loss < record.epochs[0].train_loss);
    // Not a rounding bound: 0.6 is 25 binomial standard errors (about 0.02 on 500 test images)
    // above chance, 0.1, where a run with its labels and images out of step, or one that never
    // trains, ends; and it leaves a short run (64 Adam steps on 2,000 examples, far from
    // converged) room below what the mlp reaches on Fashion-MNIST.
    assert!(
        record.test_accuracy > 0.6,
        "accuracy {} on the subset",
        record.test_accuracy
    );
    let total: u64 = record.confusion_matrix.rows().iter().flatten().sum();
    assert_eq!(total, 500);
    // Measured at all: any real process has resident memory and a first step takes time.
    assert!(record.peak_rss_bytes > 0 && record.time_to_first_step_seconds > 0.0);
    // The same request gives the same model: data order and initial weights are seeded.
    let again = run_worker(&request("fashion-mnist-subset", None, "mlp", 2))
        .record
        .expect("record");
    assert_eq!(again.epochs[1].train_loss, record.epochs[1].train_loss);
    assert_eq!(again.confusion_matrix, record.confusion_matrix);
}

#[test]
fn weights_saved_by_one_run_start_another_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = dir.path().join("trained.safetensors");
    let mut first = request("fashion-mnist-subset", None, "mlp", 1);
    first.save_weights = true;
    first.data.limit_train = Some(256);
    let request_path = dir.path().join("request.json");
    let record_path = dir.path().join("record.json");
    std::fs::write(&request_path, serde_json::to_string(&first).expect("json"))
        .expect("write request");
    let status = Command::new(env!("CARGO_BIN_EXE_parallax-runner"))
        .arg("--request")
        .arg(&request_path)
        .arg("--record")
        .arg(&record_path)
        .arg("--weights")
        .arg(&weights)
        .status()
        .expect("run the worker");
    assert!(status.success());
    let trained = RunRecord::load(&record_path).expect("record");
    assert_eq!(trained.status, RunStatus::Complete);
    // Starting from the trained weights with a learning rate too small to move them, the test
    // accuracy is the trained run's.
    let mut again = first.clone();
    again.save_weights = false;
    again.init = InitMode::File(weights);
    again.optimizer = OptimizerConfig::sgd(1e-30, 0.0);
    let outcome = run_worker(&again);
    assert!(outcome.success, "{}", outcome.stderr);
    let record = outcome.record.expect("record");
    assert_eq!(record.test_accuracy, trained.test_accuracy);
    assert_eq!(record.confusion_matrix, trained.confusion_matrix);
}

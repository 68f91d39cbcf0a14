//! `cargo xtask compare` and `cargo xtask gradcam` refuse bad flags and bad files with one
//! clear line and a non-zero exit, before they build or train anything.

use std::process::Command;

/// Runs `cargo xtask COMMAND ARGS` into an output directory of its own: the tests run in
/// parallel, and two commands into one directory would refuse each other over its lock
/// (`output_lock.rs`) instead of failing for the reason a test expects.
fn xtask(command: &str, args: &[&str]) -> (bool, String) {
    let out = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg(command)
        .args(args)
        .args(["--out", out.path().to_str().expect("utf-8")])
        .output()
        .expect("run xtask");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_line(args: &[&str], expected: &str) {
    assert_one_line_of("compare", args, expected);
}

fn assert_one_line_of(command: &str, args: &[&str], expected: &str) {
    let (success, stderr) = xtask(command, args);
    assert!(!success, "{command} {args:?} succeeded");
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expected),
        "{:?} lacks {expected:?}",
        lines[0]
    );
}

#[test]
fn unknown_backend() {
    let known: Vec<&str> = parallax_registry::BACKENDS
        .iter()
        .map(|entry| entry.name)
        .collect();
    assert_one_line(
        &["--backends", "burn,jax"],
        &format!(
            "unknown backend \"jax\"; known backends: {}",
            known.join(", ")
        ),
    );
}

/// A CUDA device this machine lacks is refused before anything is built or downloaded: on a
/// machine without NVIDIA's driver for want of one, elsewhere because no machine has 99 GPUs.
#[test]
fn a_missing_cuda_device() {
    assert_one_line(
        &["--device", "cuda:99", "--backends", "burn,tch"],
        "--device cuda:99",
    );
}

#[test]
fn missing_initial_weights() {
    assert_one_line(
        &["--weights", "/nonexistent/start.safetensors"],
        "initial weights /nonexistent/start.safetensors do not exist",
    );
}

#[test]
fn bad_seeds_margins_and_attribution() {
    assert_one_line(&["--seeds", "0"], "--seeds 0 runs nothing");
    assert_one_line(&["--seeds", "1,2,1"], "repeats a seed");
    assert_one_line(&["--margin-accuracy", "half"], "--margin-accuracy");
    assert_one_line(
        &["--margin-time", "0"],
        "--margin-time must be a number above 0",
    );
    assert_one_line(
        &["--target-accuracy", "85"],
        "--target-accuracy is a fraction",
    );
    assert_one_line(&["--attribute", "tch,jax"], "unknown backend \"jax\"");
    assert_one_line(
        &["--attribute", "tch"],
        "--attribute takes two different backends",
    );
    assert_one_line(&["--defaults", "keras"], "unknown defaults \"keras\"");
}

#[test]
fn unknown_model() {
    assert_one_line(&["--model", "vgg"], "unknown model \"vgg\"");
}

#[test]
fn missing_data_directory() {
    assert_one_line(
        &["--data", "/nonexistent/fmnist"],
        "data directory /nonexistent/fmnist does not exist",
    );
}

#[test]
fn spec_whose_layers_do_not_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\ninput = [1, 28, 28]\n[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"dense\"\nunits = 128\n[[layers]]\ntype = \"dense\"\nunits = 10\nin_features = 3136\n",
    )
    .expect("write");
    assert_one_line(
        &["--model", path.to_str().expect("utf-8")],
        "layer 3 (dense): expects 3136 inputs, gets 128",
    );
}

#[test]
fn bad_optimizer_and_device() {
    assert_one_line(&["--optimizer", "rmsprop"], "unknown optimizer \"rmsprop\"");
    assert_one_line(&["--device", "tpu"], "unknown device \"tpu\"");
}

fn fixture(path: &str) -> String {
    format!("{}/../fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn gradcam_refuses_a_layer_that_is_not_an_image() {
    assert_one_line_of(
        "gradcam",
        &[
            "--model",
            "resnet18",
            "--layer",
            "fc",
            "--images",
            &fixture("photos"),
        ],
        "gives a flat vector, not an image",
    );
    assert_one_line_of(
        "gradcam",
        &[
            "--model",
            "resnet18",
            "--layer",
            "layer9",
            "--images",
            &fixture("photos"),
        ],
        "has no such layer",
    );
}

#[test]
fn gradcam_refuses_a_class_out_of_range() {
    assert_one_line_of(
        "gradcam",
        &[
            "--model",
            "resnet18",
            "--class",
            "1000",
            "--images",
            &fixture("photos"),
        ],
        "--class 1000 is out of range",
    );
}

/// Keras's tiny ResNet does not fit ResNet-18: the first tensor whose shape differs is named
/// with both shapes.
#[test]
fn gradcam_refuses_weights_of_another_shape() {
    assert_one_line_of(
        "gradcam",
        &[
            "--model",
            "resnet18",
            "--weights",
            &fixture("gradcam/keras-resnet-tiny.h5"),
            "--images",
            &fixture("photos"),
        ],
        "has shape [4, 64, 1, 1], the model expects [64, 64, 3, 3]",
    );
}

#[test]
fn gradcam_refuses_an_hdf5_file_that_is_not_keras_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truncated = dir.path().join("truncated.h5");
    let bytes = std::fs::read(fixture("gradcam/keras-resnet-tiny.h5")).unwrap();
    std::fs::write(&truncated, &bytes[..600]).unwrap();
    assert_one_line_of(
        "gradcam",
        &[
            "--model",
            "resnet18",
            "--weights",
            truncated.to_str().unwrap(),
            "--images",
            &fixture("photos"),
        ],
        "Keras weights",
    );
}

/// `cargo xtask report DIR` over a directory merged by hand: two backends' records of one
/// configuration over three seeds (the committed version-1 record, rewritten), one run that
/// was interrupted, and a record of another configuration, which is reported apart.
#[test]
fn report_rerenders_a_directory_of_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("records/v1-tch-mlp.json")).expect("fixture"),
    )
    .expect("json");
    let write =
        |backend: &str, seed: u64, accuracy: f64, status: Option<&str>, configuration: &str| {
            let mut record = base.clone();
            record["backend"] = backend.into();
            record["seed"] = seed.into();
            record["test_accuracy"] = accuracy.into();
            if let Some(status) = status {
                // A version-2 record of a run still going when it stopped.
                let mut migrated = record.clone();
                migrated["record_version"] = 2.into();
                migrated["status"] = status.into();
                migrated["error"] = serde_json::Value::Null;
                migrated["run"] = serde_json::json!({
                    "model": "mlp", "backend": backend, "seed": seed, "configuration": configuration
                });
                migrated["ledger"] = serde_json::json!({});
                migrated.as_object_mut().unwrap().remove("engine_defaults");
                record = migrated;
            }
            let path = dir.path().join(format!(
                "records/mlp/{backend}/seed-{seed}-{configuration}.json"
            ));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, record.to_string()).unwrap();
        };
    for seed in 1..=3 {
        write("tch", seed, 0.85 + seed as f64 * 1e-3, None, "v1");
        write("tf", seed, 0.86 + seed as f64 * 1e-3, None, "v1");
    }
    write("burn", 4, 0.5, Some("running"), "v1");
    write("burn", 9, 0.7, Some("complete"), "other");
    std::fs::write(
        dir.path().join("records/mlp/tf/broken.json"),
        "{\"record_version\"",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["report", dir.path().to_str().unwrap()])
        .output()
        .expect("run xtask");
    // The broken record fails the command, after both reports are written without it.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("1 file(s) could not be read and were left out of the report"),
        "{stderr}"
    );
    assert!(dir.path().join("report.html").is_file());
    let report = std::fs::read_to_string(dir.path().join("report.md")).expect("report.md");
    assert!(report.contains("runs of 2 configurations"), "{report}");
    assert!(report.contains("# Run 1 of configuration other"));
    assert!(report.contains("# Run 2 of configuration v1"));
    assert!(
        report.contains("test accuracy, tch vs tf: Meaningfully different"),
        "{report}"
    );
    assert!(report.contains("burn s4 (incomplete)"), "{report}");
    assert!(report.contains("## Unreadable records"));
    let empty = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["report", empty.path().to_str().unwrap()])
        .output()
        .expect("run xtask");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("holds neither a records/ directory"),
        "{stderr}"
    );
}

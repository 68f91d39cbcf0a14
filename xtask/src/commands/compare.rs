//! `cargo xtask compare`: trains every requested backend in its own worker process, on the same
//! spec, data order and initial weights, and writes the records, the summary and the report.
//!
//! Steps: check the flags (unknown backends, models and data fail here, before any build),
//! build the worker once, run one worker per backend with live progress, write each record as
//! soon as its run ends, and finish with the report. A backend that fails is reported with its
//! error; the others still run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use parallax_core::data::builtin::{BuiltinDataset, DataLocator};
use parallax_core::record::{
    InitMode, ProgressEvent, RunRecord, RunRequest, write_json_atomically,
};
use parallax_core::spec::ModelSpec;
use parallax_core::{Device, OptimizerConfig};

use super::report::{self, Failure, Summary};
use super::{cache_dir, repo_root, setup};

/// The backends `compare` knows, with the runner features each needs.
pub const BACKENDS: &[(&str, &str)] = &[
    ("burn", "burn"),
    ("tch", "tch"),
    ("burn-tch", "burn-tch"),
    ("tf", "tf"),
];

/// The backends that link a native library provisioned by `cargo xtask setup`.
const NATIVE_BACKENDS: &[&str] = &["tch", "burn-tch", "tf"];

/// The backends that compute on libtorch's OpenMP threads.
const LIBTORCH_BACKENDS: &[&str] = &["tch", "burn-tch"];

/// How long GNU OpenMP's threads spin before they sleep, in libtorch workers (see
/// `run_backend`).
pub(crate) const LIBTORCH_SPIN_COUNT: &str = "10000";

/// Flags of `cargo xtask compare`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backends to train, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "burn")]
    pub backends: Vec<String>,
    /// A preset (mlp, cnn, resnet18, resnet50) or a .json/.toml spec file.
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// fashion-mnist, mnist, fashion-mnist-subset (bundled), or image-folder (with --data).
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Directory holding the data set's files (IDX files, or one subfolder per class).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Image size for image-folder data sets (images are resized to SIZE×SIZE).
    #[arg(long, default_value_t = 64)]
    pub image_size: usize,
    /// Channels for image-folder data sets: 1 (grayscale) or 3 (RGB).
    #[arg(long, default_value_t = 3)]
    pub image_channels: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 3)]
    pub epochs: u32,
    /// Examples per training step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// adam (PyTorch's), adam-keras, sgd (momentum 0.9) or sgd:MOMENTUM.
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of the data order and the shared initial weights.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// CPU threads per backend (the same for all); all cores by default.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Keep subnormal floats instead of flushing them to zero on every backend's threads
    /// (flushing is TensorFlow's default; subnormals can slow CPU training several-fold).
    #[arg(long)]
    pub keep_denormals: bool,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Initial weights: canonical (shared, from the seed) or native (each engine's own).
    #[arg(long, default_value = "canonical", value_parser = parse_init)]
    pub init: InitMode,
    /// Train on the first N examples only (quick runs).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Output directory.
    #[arg(long, default_value = "out/compare")]
    pub out: PathBuf,
}

fn parse_init(text: &str) -> Result<InitMode, String> {
    match text {
        "canonical" => Ok(InitMode::Canonical),
        "native" => Ok(InitMode::Native),
        other => Err(format!("unknown init {other:?}: use canonical or native")),
    }
}

/// Checks the flags and turns them into one request per backend, failing before any build.
fn requests(args: &Args) -> anyhow::Result<Vec<RunRequest>> {
    if args.backends.is_empty() {
        bail!("--backends is empty; known backends: {}", known_backends());
    }
    for name in &args.backends {
        if !BACKENDS.iter().any(|(known, _)| known == name) {
            bail!(
                "unknown backend {name:?}; known backends: {}",
                known_backends()
            );
        }
    }
    let device: Device = args.device.parse().map_err(anyhow::Error::msg)?;
    let optimizer = OptimizerConfig::parse(&args.optimizer, args.lr).map_err(anyhow::Error::msg)?;
    if args.epochs == 0 || args.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    if args.image_channels != 1 && args.image_channels != 3 {
        bail!("--image-channels must be 1 or 3");
    }
    // Presets are checked here by name; spec files are parsed and resolved now, so that a spec
    // whose layers don't fit is reported before anything is built.
    match args.model.as_str() {
        "mlp" | "cnn" | "resnet18" | "resnet50" => {}
        path if path.ends_with(".json") || path.ends_with(".toml") => {
            ModelSpec::from_file(Path::new(path))?.resolve()?;
        }
        other => bail!(
            "unknown model {other:?}; presets are mlp, cnn, resnet18, resnet50, or pass a .json/.toml spec file"
        ),
    }
    if let Some(dir) = &args.data
        && !dir.is_dir()
    {
        bail!(
            "data directory {} does not exist; pass an existing --data DIR",
            dir.display()
        );
    }
    let root = repo_root()?;
    let cache = cache_dir();
    let fixtures = root.join("fixtures");
    let dataset = match args.dataset.as_str() {
        "image-folder" => {
            if args.data.is_none() {
                bail!("--dataset image-folder needs --data DIR with one subfolder per class");
            }
            "image-folder".to_string()
        }
        name => {
            let which: BuiltinDataset = name.parse().map_err(anyhow::Error::msg)?;
            let locator = DataLocator {
                explicit_dir: args.data.clone(),
                cache_dir: cache.clone(),
                fixtures_dir: fixtures.clone(),
            };
            match locator.locate(which) {
                Ok(_) => which.to_string(),
                // Without --data, a missing full data set falls back to the bundled subset, so that
                // the default command works offline with nothing installed. CI must not fall back.
                Err(error)
                    if args.data.is_none() && which == BuiltinDataset::FashionMnist && !in_ci() =>
                {
                    eprintln!("note: {error}");
                    eprintln!(
                        "note: using the bundled subset instead (fixtures/fashion-mnist-subset: 2000 train, 500 test images)"
                    );
                    BuiltinDataset::FashionMnistSubset.to_string()
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let git_revision = git_revision(&root);
    Ok(args
        .backends
        .iter()
        .map(|backend| RunRequest {
            backend: backend.clone(),
            device,
            threads,
            flush_denormals: !args.keep_denormals,
            model: args.model.clone(),
            dataset: dataset.clone(),
            data_dir: args.data.clone(),
            cache_dir: cache.clone(),
            fixtures_dir: fixtures.clone(),
            image_size: args.image_size,
            image_channels: args.image_channels,
            epochs: args.epochs,
            batch_size: args.batch_size,
            optimizer,
            seed: args.seed,
            init: args.init,
            limit_train: args.limit_train,
            git_revision: git_revision.clone(),
        })
        .collect())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

fn known_backends() -> String {
    BACKENDS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn git_revision(root: &Path) -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The native libraries' environment when a selected backend links one; burn-only runs need
/// none, so they never provision libtorch.
fn native_env(backends: &[String]) -> anyhow::Result<Option<setup::NativeEnv>> {
    if backends
        .iter()
        .any(|backend| NATIVE_BACKENDS.contains(&backend.as_str()))
    {
        Ok(Some(setup::ensure(false)?))
    } else {
        Ok(None)
    }
}

/// Builds one worker binary per backend, in release mode, each with only that backend's
/// feature, and returns them by backend name.
///
/// One binary for all would load every engine's libraries into every worker: with libtorch and
/// TensorFlow linked, burn's peak resident memory went from 335 to 608 MiB, which is the other
/// engines' code and not burn's. After the first build, each further one only compiles the
/// runner's own crate and links it.
pub fn build_runner(
    backends: &[String],
    native: Option<&setup::NativeEnv>,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let root = repo_root()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let built = target.join("release").join("parallax-runner");
    eprintln!(
        "building the workers (cargo build --release -p parallax-runner; the first build takes several minutes)"
    );
    let mut runners = BTreeMap::new();
    for backend in backends {
        let Some((_, feature)) = BACKENDS.iter().find(|(name, _)| name == backend) else {
            bail!("unknown backend {backend:?}");
        };
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        if let Some(native) = native {
            native.apply(&mut command);
        }
        let status = command
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "parallax-runner",
                "--no-default-features",
                "--features",
                feature,
            ])
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!("building the {backend} worker failed (see cargo's messages above)");
        }
        let runner = target
            .join("release")
            .join(format!("parallax-runner-{backend}"));
        std::fs::copy(&built, &runner)
            .with_context(|| format!("copying {} to {}", built.display(), runner.display()))?;
        runners.insert(backend.clone(), runner);
    }
    Ok(runners)
}

/// Runs the comparison.
pub fn run(args: Args) -> anyhow::Result<()> {
    let requests = requests(&args)?;
    let native = native_env(&args.backends)?;
    let runners = build_runner(&args.backends, native.as_ref())?;
    std::fs::create_dir_all(args.out.join("records"))
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Records from an earlier comparison in the same directory would be mistaken for this one's.
    for request in &requests {
        let stale = args
            .out
            .join("records")
            .join(format!("{}.json", request.backend));
        if stale.exists() {
            std::fs::remove_file(&stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    let progress = MultiProgress::new();
    let mut summary = Summary::default();
    for request in &requests {
        let runner = runners
            .get(&request.backend)
            .context("no worker was built for this backend")?;
        match run_backend(runner, request, &args.out, &progress, native.as_ref()) {
            Ok(record) => summary.records.push(record),
            Err(error) => {
                let message = format!("{error:#}");
                say(&progress, format!("{}: failed: {message}", request.backend));
                summary.failures.push(Failure {
                    backend: request.backend.clone(),
                    error: message,
                });
            }
        }
        // Each finished run is on disk before the next one starts.
        write_json_atomically(&args.out.join("summary.json"), &summary)?;
    }
    let markdown = report::markdown(&summary, &requests[0]);
    std::fs::write(args.out.join("report.md"), &markdown)
        .with_context(|| format!("writing {}", args.out.join("report.md").display()))?;
    println!("{}", report::terminal_table(&summary));
    println!(
        "wrote {}, {} and {}",
        args.out.join("records").display(),
        args.out.join("summary.json").display(),
        args.out.join("report.md").display()
    );
    if summary.records.is_empty() {
        bail!("every backend failed");
    }
    if !summary.failures.is_empty() {
        bail!(
            "{} of {} backends failed: {}",
            summary.failures.len(),
            requests.len(),
            summary
                .failures
                .iter()
                .map(|f| f.backend.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Prints a line above the progress bars, or plainly when there are none (output to a file
/// or a CI log), where indicatif would drop it.
fn say(progress: &MultiProgress, line: String) {
    if progress.is_hidden() {
        eprintln!("{line}");
    } else {
        let _ = progress.println(line);
    }
}

/// The data a worker's stdout carries back: its progress events, read as they come.
fn follow_progress(stdout: impl Read, backend: &str, progress: &MultiProgress) {
    let bar = progress.add(ProgressBar::new(0));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} epoch {msg} [{bar:30}] {pos}/{len} steps {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(backend.to_string());
    bar.enable_steady_tick(Duration::from_millis(500));
    let mut epochs = 0;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        match serde_json::from_str::<ProgressEvent>(&line) {
            Ok(ProgressEvent::Start {
                dataset,
                source,
                train_examples,
                steps_per_epoch,
                epochs: total,
                framework,
            }) => {
                epochs = total;
                bar.set_length(steps_per_epoch as u64);
                say(
                    progress,
                    format!(
                        "{backend}: {framework}, {dataset} from {source}, {train_examples} training examples"
                    ),
                );
            }
            Ok(ProgressEvent::Step { epoch, step, loss }) => {
                bar.set_message(format!("{epoch}/{epochs} loss {loss:.4}"));
                bar.set_position(step as u64);
            }
            Ok(ProgressEvent::Epoch(record)) => {
                say(
                    progress,
                    format!(
                        "{backend}: epoch {}/{epochs}: train loss {:.4}, {:.2} s, test accuracy {:.4}",
                        record.epoch, record.train_loss, record.seconds, record.test_accuracy
                    ),
                );
            }
            // Anything else on stdout (an engine's own chatter) is shown as it is.
            Err(_) => {
                say(progress, format!("{backend}: {line}"));
            }
        }
    }
    bar.finish_and_clear();
}

fn run_backend(
    runner: &Path,
    request: &RunRequest,
    out: &Path,
    progress: &MultiProgress,
    native: Option<&setup::NativeEnv>,
) -> anyhow::Result<RunRecord> {
    let request_path = out
        .join("requests")
        .join(format!("{}.json", request.backend));
    write_json_atomically(&request_path, request)?;
    let record_path = out
        .join("records")
        .join(format!("{}.json", request.backend));
    let mut command = Command::new(runner);
    // The worker finds libtorch through the loader path that setup provisioned.
    if let Some(native) = native {
        native.apply(&mut command);
    }
    // libtorch's threads are GNU OpenMP's, which spin for about 3 ms (GOMP_SPINCOUNT 300000)
    // before sleeping whenever they wait for each other. On a machine busy with other work that
    // took a two-thread mlp epoch from 1.3 s to 52 s. Sleeping at once (OMP_WAIT_POLICY=PASSIVE)
    // avoids it but pays a wake-up on each of the mlp's tiny operations: 1.85 s per epoch on a
    // quiet machine, against 0.58 s spinning. A short spin of 10,000 rounds (about 0.1 ms) keeps
    // both: 0.56 s on a quiet machine, and faster than passive waiting beside two busy processes.
    // A policy or spin count the user set wins.
    if LIBTORCH_BACKENDS.contains(&request.backend.as_str())
        && std::env::var_os("OMP_WAIT_POLICY").is_none()
        && std::env::var_os("GOMP_SPINCOUNT").is_none()
    {
        command.env("GOMP_SPINCOUNT", LIBTORCH_SPIN_COUNT);
    }
    let mut child = command
        .arg("--request")
        .arg(&request_path)
        .arg("--record")
        .arg(&record_path)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the worker {}", runner.display()))?;
    let stderr = child.stderr.take().context("worker stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    if let Some(stdout) = child.stdout.take() {
        follow_progress(stdout, &request.backend, progress);
    }
    let status = child.wait().context("waiting for the worker")?;
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        // The worker's own last `error:` line says what went wrong; a crash has none.
        let reason = stderr
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .map(str::to_string)
            .unwrap_or_else(|| match status.code() {
                Some(code) => format!(
                    "worker exited with status {code}: {}",
                    stderr.lines().last().unwrap_or("")
                ),
                None => "worker was killed by a signal (crash or out of memory)".to_string(),
            });
        bail!("{reason}");
    }
    Ok(RunRecord::load(&record_path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(backend: &str) -> RunRequest {
        RunRequest {
            backend: backend.into(),
            device: Device::Cpu,
            threads: 1,
            flush_denormals: true,
            model: "mlp".into(),
            dataset: "fashion-mnist-subset".into(),
            data_dir: None,
            cache_dir: std::env::temp_dir(),
            fixtures_dir: std::env::temp_dir(),
            image_size: 64,
            image_channels: 3,
            epochs: 1,
            batch_size: 64,
            optimizer: OptimizerConfig::adam(1e-3),
            seed: 1,
            init: InitMode::Canonical,
            limit_train: None,
            git_revision: "test".into(),
        }
    }

    /// A stand-in worker: a shell script that fails the way a real worker does.
    fn failing_worker(dir: &Path) -> PathBuf {
        let path = dir.join("worker.sh");
        std::fs::write(
            &path,
            "#!/bin/sh\necho '{\"event\":\"step\",\"epoch\":1,\"step\":1,\"loss\":2.3}'\necho 'some engine log' >&2\necho 'error: device cuda:0 is not available on burn: no GPU' >&2\nexit 1\n",
        )
        .unwrap();
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&path, permissions).unwrap();
        path
    }

    #[test]
    fn a_failing_worker_gives_its_error_line_and_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let worker = failing_worker(dir.path());
        let progress = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
        let error =
            run_backend(&worker, &request("burn"), dir.path(), &progress, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "device cuda:0 is not available on burn: no GPU"
        );
        assert!(!dir.path().join("records").join("burn.json").exists());
        assert!(dir.path().join("requests").join("burn.json").exists());
    }

    #[test]
    fn flags_are_checked_before_anything_runs() {
        let args = |backends: &[&str]| Args {
            backends: backends.iter().map(|b| b.to_string()).collect(),
            model: "mlp".into(),
            dataset: "fashion-mnist-subset".into(),
            data: None,
            image_size: 64,
            image_channels: 3,
            epochs: 1,
            batch_size: 64,
            optimizer: "adam".into(),
            lr: 1e-3,
            seed: 1,
            threads: Some(2),
            keep_denormals: false,
            device: "cpu".into(),
            init: InitMode::Canonical,
            limit_train: None,
            out: std::env::temp_dir(),
        };
        let ok = requests(&args(&["burn"])).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].dataset, "fashion-mnist-subset");
        assert!(ok[0].flush_denormals);
        assert!(requests(&args(&[])).is_err());
        assert!(
            requests(&args(&["burn", "mxnet"]))
                .unwrap_err()
                .to_string()
                .contains("mxnet")
        );
    }
}

//! The worker processes: one `parallax-runner` binary per backend, built with only that
//! backend's feature, and one process per run, whose progress is followed live.
//!
//! One binary for all backends would load every engine's libraries into every worker: with
//! libtorch and TensorFlow linked, burn's peak resident memory went from 335 to 608 MiB, which
//! is the other engines' code and not burn's. After the first build, each further one only
//! compiles the worker's own crate and links it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use parallax_core::gradcam::job::CamResult;
use parallax_core::record::{ProgressEvent, RunRecord};
use parallax_registry::BackendEntry;

use crate::error::{Error, Result};
use crate::workspace::{cargo, target_dir};
use parallax_provision::NativeEnv;

/// How long GNU OpenMP's threads spin before they sleep, in libtorch workers (see
/// [`set_openmp_wait`]).
pub const LIBTORCH_SPIN_COUNT: &str = "10000";

/// Sets OpenMP's wait policy for a process whose backend computes on OpenMP threads, unless
/// the user set one.
///
/// libtorch's threads are GNU OpenMP's, which spin for about 3 ms (GOMP_SPINCOUNT 300000)
/// before sleeping whenever they wait for each other. On a machine busy with other work that
/// took a two-thread mlp epoch from 1.3 s to 52 s. Sleeping at once (OMP_WAIT_POLICY=PASSIVE)
/// avoids it but pays a wake-up on each of the mlp's tiny operations: 1.85 s per epoch on a
/// quiet machine, against 0.58 s spinning. A short spin of 10,000 rounds (about 0.1 ms) keeps
/// both: 0.56 s on a quiet machine, and faster than passive waiting beside two busy processes.
pub fn set_openmp_wait(command: &mut Command) {
    if std::env::var_os("OMP_WAIT_POLICY").is_none() && std::env::var_os("GOMP_SPINCOUNT").is_none()
    {
        command.env("GOMP_SPINCOUNT", LIBTORCH_SPIN_COUNT);
    }
}

/// glibc's malloc settings every worker runs with, unless the user set either (see
/// [`keep_freed_memory`]): the largest block served from the heap rather than a fresh mapping
/// (glibc's most, 32 MiB), and the free memory at the heap's top that it keeps (16 GiB).
pub const MALLOC_KEEPS_FREED_MEMORY: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "33554432"),
    ("MALLOC_TRIM_THRESHOLD_", "17179869184"),
];

/// Makes glibc's malloc keep freed memory for the next allocation in a worker, whatever its
/// engine, unless the user set either variable.
///
/// By default glibc serves a block above its mmap threshold (128 KiB, rising to the largest
/// block freed) with a fresh mapping, and returns free memory at the heap's top beyond twice
/// that to the kernel. A training step allocates and frees the same large activations every
/// step, so libtorch's, which allocates through malloc, paid the kernel's page faults and
/// zeroing for each of them at every step: tch's cnn at batch 256 on 2 threads (an AMD EPYC,
/// 2026-12-07, 2 alternated pairs of 3 seeds) took 1.82 and 1.77 s per epoch by default,
/// 1.41 and 1.57 s with these settings; PyTorch's 2.26 and 2.26 s, 1.83 and 2.00 s.
/// TensorFlow pools its own memory. Every worker gets the same settings, as it gets the same
/// threads.
pub fn keep_freed_memory(command: &mut Command) {
    if MALLOC_KEEPS_FREED_MEMORY
        .iter()
        .all(|(name, _)| std::env::var_os(name).is_none())
    {
        command.envs(MALLOC_KEEPS_FREED_MEMORY);
    }
}

/// Where a worker for `cuda` devices or the CPU is built: CUDA builds link the CUDA builds of
/// the native libraries, so they get a target directory of their own rather than rebuilding
/// the CPU ones each time.
fn worker_target(cuda: bool) -> PathBuf {
    let target = target_dir();
    if cuda { target.join("cuda") } else { target }
}

/// The worker binary of `entry` for the CPU or CUDA, as [`build`] leaves it.
pub fn worker_path(entry: &BackendEntry, cuda: bool) -> PathBuf {
    let suffix = if cuda { "-cuda" } else { "" };
    worker_target(cuda)
        .join("release")
        .join(format!("parallax-runner-{}{suffix}", entry.name))
}

/// Builds one worker binary per backend in the parallax workspace, in release mode, each with
/// only its feature, and returns them by backend name. With `prebuilt`, nothing is built: a
/// file is one worker for every backend, and a directory holds one per backend, named as the
/// build names them (`parallax-runner-<backend>`). The first backend that fails fails the whole.
pub fn build(
    entries: &[&'static BackendEntry],
    cuda: bool,
    native: Option<&NativeEnv>,
    prebuilt: Option<&Path>,
) -> Result<BTreeMap<&'static str, PathBuf>> {
    build_each(entries, cuda, native, prebuilt)
        .into_iter()
        .map(|(name, built)| built.map(|path| (name, path)))
        .collect()
}

/// [`build`], going on past a backend that fails: each backend's worker or its error.
pub fn build_each(
    entries: &[&'static BackendEntry],
    cuda: bool,
    native: Option<&NativeEnv>,
    prebuilt: Option<&Path>,
) -> Vec<(&'static str, Result<PathBuf>)> {
    if let Some(prebuilt) = prebuilt {
        return entries
            .iter()
            .map(|entry| (entry.name, found(entry, cuda, prebuilt)))
            .collect();
    }
    eprintln!(
        "building the workers (cargo build --release -p parallax-runner; the first build takes several minutes)"
    );
    entries
        .iter()
        .map(|entry| (entry.name, build_one(entry, cuda, native)))
        .collect()
}

/// `entry`'s worker in `prebuilt`: the file itself, or the one a directory holds for it.
fn found(entry: &BackendEntry, cuda: bool, prebuilt: &Path) -> Result<PathBuf> {
    if prebuilt.is_file() {
        return Ok(prebuilt.to_path_buf());
    }
    if prebuilt.is_dir() {
        let name = worker_path(entry, cuda);
        let worker = prebuilt.join(name.file_name().unwrap_or_default());
        return if worker.is_file() {
            Ok(worker)
        } else {
            Err(Error::Build(format!(
                "--worker {} holds no {}; build it with `cargo build --release -p parallax-runner --features {}` and copy it there",
                prebuilt.display(),
                worker.file_name().unwrap_or_default().to_string_lossy(),
                entry.feature
            )))
        };
    }
    Err(Error::Build(format!(
        "--worker {} does not exist; build it with `cargo build --release -p parallax-runner --features <backends>`",
        prebuilt.display()
    )))
}

/// Builds `entry`'s worker.
fn build_one(
    entry: &'static BackendEntry,
    cuda: bool,
    native: Option<&NativeEnv>,
) -> Result<PathBuf> {
    let target = worker_target(cuda);
    let built = target.join("release").join("parallax-runner");
    let Some(feature) = entry.feature_for(cuda) else {
        return Err(Error::Invalid(format!(
            "{} has no CUDA path; leave it out of --backends or use --device cpu",
            entry.name
        )));
    };
    let mut command = cargo(
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "parallax-runner",
            "--no-default-features",
            "--features",
            feature,
        ],
        native.filter(|_| entry.is_native()),
    );
    command.env("CARGO_TARGET_DIR", &target);
    let status = command
        .status()
        .map_err(|source| Error::process("running cargo", source))?;
    if !status.success() {
        return Err(Error::Build(format!(
            "building the {} worker failed (see cargo's messages above)",
            entry.name
        )));
    }
    let worker = worker_path(entry, cuda);
    std::fs::copy(&built, &worker)
        .map_err(|source| Error::io("copying the worker to", &worker, source))?;
    Ok(worker)
}

/// One run for a worker: its files and its backend.
pub struct Job<'a> {
    /// The backend, from the registry.
    pub entry: &'static BackendEntry,
    /// The worker binary.
    pub worker: &'a Path,
    /// The run request, already written.
    pub request: &'a Path,
    /// The SHA-256 of the request's text, as [`parallax_core::record::RunRequest::save`]
    /// returned it: the worker refuses a request that another command wrote over.
    pub request_sha256: Option<&'a str>,
    /// Where the worker writes the record.
    pub record: &'a Path,
    /// Where the worker writes trained weights, when the request asks for them.
    pub weights: &'a Path,
    /// The label of its progress lines.
    pub label: &'a str,
}

/// A command for `worker`, with the native libraries' loader path when given, malloc's
/// settings, and OpenMP's wait policy when its backend needs it.
fn worker_command(entry: &BackendEntry, worker: &Path, native: Option<&NativeEnv>) -> Command {
    let mut command = Command::new(worker);
    // The worker finds the native libraries through the loader path that setup provisioned; a
    // prebuilt worker with every engine needs it even for a backend that links none.
    if let Some(native) = native {
        native.apply(&mut command);
    }
    keep_freed_memory(&mut command);
    if entry.openmp {
        set_openmp_wait(&mut command);
    }
    for &(name, flag) in entry.worker_env {
        let current = std::env::var(name).ok();
        if let Some(value) = with_flag(current.as_deref(), flag) {
            command.env(name, value);
        }
    }
    command.env("TF_CPP_MIN_LOG_LEVEL", "2");
    command
}

/// A registry row's worker variable ([`BackendEntry::worker_env`]) holding `flag`, given what
/// the environment holds now: `None` when it already has it, else `flag` after what is there.
pub fn with_flag(current: Option<&str>, flag: &str) -> Option<String> {
    match current.map(str::trim) {
        Some(flags) if flags.split_whitespace().any(|f| f == flag) => None,
        Some(flags) if !flags.is_empty() => Some(format!("{flags} {flag}")),
        _ => Some(flag.to_string()),
    }
}

/// Waits for a worker whose stderr is piped; a failure gives the worker's own `error:` line.
fn finish(
    mut child: std::process::Child,
    on_stdout: impl FnOnce(std::process::ChildStdout),
) -> Result<()> {
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::Worker("the worker's stderr was not captured".into()))?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let stdout = child.stdout.take();
    // The watcher owns the child: it kills it on Ctrl-C or SIGTERM (which a `kill` of xtask
    // does not pass on), and reaps it, while this thread reads its progress until the pipe
    // closes.
    let watcher = std::thread::spawn(move || -> std::io::Result<std::process::ExitStatus> {
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if crate::interrupt::interrupted() {
                // Already gone when the terminal's Ctrl-C reached it too.
                let _ = child.kill();
                return child.wait();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    if let Some(stdout) = stdout {
        on_stdout(stdout);
    }
    let status = watcher
        .join()
        .map_err(|_| Error::Worker("the thread waiting for the worker panicked".into()))?
        .map_err(|source| Error::process("waiting for the worker", source))?;
    let stderr = stderr_reader.join().unwrap_or_default();
    if crate::interrupt::interrupted() && !status.success() {
        return Err(Error::Worker("stopped by the interrupt".into()));
    }
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
        return Err(Error::Worker(reason));
    }
    Ok(())
}

/// Runs one worker, follows its progress, and returns its record; a failed worker gives its
/// own error line.
pub fn run(
    job: &Job<'_>,
    progress: &MultiProgress,
    native: Option<&NativeEnv>,
) -> Result<RunRecord> {
    let mut command = worker_command(job.entry, job.worker, native);
    command.arg("--request").arg(job.request);
    if let Some(digest) = job.request_sha256 {
        command.arg("--request-sha256").arg(digest);
    }
    let child = command
        .arg("--record")
        .arg(job.record)
        .arg("--weights")
        .arg(job.weights)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::io("starting the worker", job.worker, source))?;
    finish(child, |stdout| follow_progress(stdout, job.label, progress))?;
    Ok(RunRecord::load(job.record)?)
}

/// Runs one GradCAM request in `entry`'s worker and returns its result.
pub fn run_grad_cam(
    entry: &BackendEntry,
    worker: &Path,
    request: &Path,
    out: &Path,
    native: Option<&NativeEnv>,
) -> Result<CamResult> {
    let child = worker_command(entry, worker, native)
        .arg("--gradcam")
        .arg(request)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::io("starting the worker", worker, source))?;
    finish(child, |_| {})?;
    let text = std::fs::read_to_string(out).map_err(|source| Error::io("reading", out, source))?;
    serde_json::from_str(&text).map_err(|error| Error::Format {
        path: out.to_path_buf(),
        what: "a GradCAM result",
        message: error.to_string(),
    })
}

/// Prints a line above the progress bars, or plainly when there are none (output to a file
/// or a CI log), where indicatif would drop it.
pub fn say(progress: &MultiProgress, line: String) {
    if progress.is_hidden() {
        eprintln!("{line}");
    } else {
        let _ = progress.println(line);
    }
}

/// The data a worker's stdout carries back: its progress events, read as they come.
fn follow_progress(stdout: impl Read, label: &str, progress: &MultiProgress) {
    let bar = progress.add(ProgressBar::new(0));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} epoch {msg} [{bar:30}] {pos}/{len} steps {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(500));
    let mut epochs = 0;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        match serde_json::from_str::<ProgressEvent>(&line) {
            Ok(ProgressEvent::Start {
                dataset,
                source,
                train_examples,
                skipped_unreadable,
                steps_per_epoch,
                epochs: total,
                framework,
            }) => {
                epochs = total;
                bar.set_length(steps_per_epoch as u64);
                let skipped = match skipped_unreadable {
                    0 => String::new(),
                    count => format!(" ({count} unreadable images skipped)"),
                };
                say(
                    progress,
                    format!(
                        "{label}: {framework}, {dataset} from {source}, {train_examples} training examples{skipped}"
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
                        "{label}: epoch {}/{epochs}: train loss {:.4}, {:.2} s, test accuracy {:.4}",
                        record.epoch, record.train_loss, record.seconds, record.test_accuracy
                    ),
                );
            }
            // Anything else on stdout (an engine's own chatter) is shown as it is.
            Err(_) => {
                say(progress, format!("{label}: {line}"));
            }
        }
    }
    bar.finish_and_clear();
}

/// Checks that CUDA device `index` exists here, from `nvidia-smi -L`, before anything is built
/// or downloaded for it.
pub fn check_gpu(index: usize) -> Result<()> {
    check_gpu_with("nvidia-smi", index)
}

/// [`check_gpu`] with another program in `nvidia-smi`'s place, for tests.
fn check_gpu_with(program: &str, index: usize) -> Result<()> {
    let remedy = "use --device cpu, or run on a machine with an NVIDIA GPU, where `cargo xtask setup --cuda` provisions the CUDA libraries";
    let output = match Command::new(program).arg("-L").output() {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            return Err(Error::Device(format!(
                "--device cuda:{index} needs an NVIDIA GPU, and `{program} -L` failed here ({}); {remedy}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Err(error) => {
            return Err(Error::Device(format!(
                "--device cuda:{index} needs an NVIDIA GPU, and this machine has no NVIDIA driver ({program}: {error}); {remedy}"
            )));
        }
    };
    let count = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("GPU "))
        .count();
    if index >= count {
        return Err(Error::Device(format!(
            "--device cuda:{index} does not exist: {program} shows {count} GPU(s); {remedy}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_variable_gains_its_flag_once() {
        let flag = "--tf_xla_cpu_global_jit";
        assert_eq!(with_flag(None, flag).as_deref(), Some(flag));
        assert_eq!(with_flag(Some(" "), flag).as_deref(), Some(flag));
        assert_eq!(
            with_flag(Some("--tf_xla_clustering_debug"), flag).as_deref(),
            Some("--tf_xla_clustering_debug --tf_xla_cpu_global_jit")
        );
        assert_eq!(with_flag(Some("--a --tf_xla_cpu_global_jit"), flag), None);
    }

    /// Every worker, whatever its engine, runs with malloc keeping freed memory, unless the
    /// user set malloc's variables (then they pass through untouched).
    #[test]
    fn every_worker_keeps_freed_memory() {
        let user_set = MALLOC_KEEPS_FREED_MEMORY
            .iter()
            .any(|(name, _)| std::env::var_os(name).is_some());
        for entry in parallax_registry::BACKENDS {
            let command = worker_command(entry, Path::new("worker"), None);
            let set: Vec<(&std::ffi::OsStr, Option<&std::ffi::OsStr>)> =
                command.get_envs().collect();
            for (name, value) in MALLOC_KEEPS_FREED_MEMORY {
                let expected = (!user_set).then_some(std::ffi::OsStr::new(value));
                let found = set
                    .iter()
                    .find(|(set_name, _)| *set_name == name)
                    .and_then(|(_, value)| *value);
                assert_eq!(found, expected, "{} worker, {name}", entry.name);
            }
        }
    }

    /// A shell script at `path` that runs `body`, made executable.
    fn script(path: PathBuf, body: &str) -> PathBuf {
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&path, permissions).unwrap();
        path
    }

    /// A stand-in worker: a shell script that fails the way a real worker does.
    fn failing_worker(dir: &Path) -> PathBuf {
        script(
            dir.join("worker.sh"),
            "echo '{\"event\":\"step\",\"epoch\":1,\"step\":1,\"loss\":2.3}'\necho 'some engine log' >&2\necho 'error: device cuda:0 is not available on burn: no GPU' >&2\nexit 1\n",
        )
    }

    #[test]
    fn a_failing_worker_gives_its_error_line_and_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let worker = failing_worker(dir.path());
        let record = dir.path().join("record.json");
        let progress = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
        let job = Job {
            entry: parallax_registry::find("burn").unwrap(),
            worker: &worker,
            request: &dir.path().join("request.json"),
            request_sha256: None,
            record: &record,
            weights: &dir.path().join("weights.safetensors"),
            label: "burn",
        };
        let error = run(&job, &progress, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "device cuda:0 is not available on burn: no GPU"
        );
        assert!(!record.exists());
    }

    #[test]
    fn cuda_workers_have_their_own_target_and_name() {
        let burn = parallax_registry::find("burn").unwrap();
        let cpu = worker_path(burn, false);
        let cuda = worker_path(burn, true);
        assert!(cpu.ends_with("release/parallax-runner-burn"));
        assert!(cuda.ends_with("cuda/release/parallax-runner-burn-cuda"));
        assert_eq!(burn.feature_for(true), Some("burn-cuda"));
    }

    #[test]
    fn a_gpu_is_looked_up_before_anything_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let fake = script(
            dir.path().join("nvidia-smi"),
            "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-2)'\n",
        );
        let fake = fake.to_str().unwrap();
        assert!(check_gpu_with(fake, 1).is_ok());
        let missing = check_gpu_with(fake, 2).unwrap_err().to_string();
        assert!(missing.contains("shows 2 GPU(s)"), "{missing}");
        let no_driver = check_gpu_with("/nonexistent/nvidia-smi", 0)
            .unwrap_err()
            .to_string();
        assert!(no_driver.contains("no NVIDIA driver"), "{no_driver}");
        assert!(no_driver.contains("--device cpu"), "{no_driver}");
    }
}

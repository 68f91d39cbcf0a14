//! `cargo xtask compare`: trains every requested backend in its own worker process, on the same
//! spec, data order and initial weights, and writes the records, the summary and the report.
//!
//! Steps: check the flags (unknown backends, models and data fail here, before any build; so
//! does a CUDA device this machine lacks), provision the native libraries the backends link,
//! build one worker per backend, run one worker per run with live progress, write each record
//! as soon as its run ends (the worker rewrites it after every epoch), and finish with the
//! report. A backend that fails is reported with its error; the others still run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use indicatif::MultiProgress;
use parallax_core::data::builtin::{BuiltinDataset, in_ci};
use parallax_core::data::{DataRequest, DatasetName};
use parallax_core::layout::{Layout, Manifest};
use parallax_core::record::{InitMode, RunRequest, write_json_atomically};
use parallax_core::spec::{ModelSource, ModelSpec};
use parallax_core::{Device, OptimizerName};
use parallax_registry::BackendEntry;

use crate::cargo::repo_root;
use crate::provision;
use crate::report::{self, Failure, Summary};
use crate::workers::{self, Job};

/// Flags of `cargo xtask compare`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backends to train, comma-separated: burn, tch, burn-tch, tf.
    #[arg(long, value_delimiter = ',', default_value = "burn", value_parser = parse_backend)]
    pub backends: Vec<&'static BackendEntry>,
    /// A preset (mlp, cnn, resnet18, resnet50) or a .json/.toml spec file.
    #[arg(long, default_value = "mlp")]
    pub model: ModelSource,
    /// fashion-mnist, mnist, fashion-mnist-subset (bundled), or image-folder (with --data).
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: DatasetName,
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
    pub optimizer: OptimizerName,
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
    /// Device: cpu, cuda or cuda:N. CUDA builds the CUDA workers and provisions the CUDA
    /// builds of libtorch and TensorFlow (`cargo xtask setup --cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Initial weights: canonical (shared, from the seed), native (each engine's own), or a
    /// safetensors file of canonical weights, shared by every backend.
    #[arg(long, default_value = "canonical")]
    pub init: InitMode,
    /// Start every backend from these weights (safetensors with canonical names, or Keras's
    /// HDF5 weights): the same as `--init FILE`.
    #[arg(long, conflicts_with = "init")]
    pub weights: Option<PathBuf>,
    /// A prebuilt `parallax-runner` with every selected backend's feature, used instead of
    /// building one worker per backend (the tests' GradCAM phase reuses their build this way).
    /// Its peak memory then includes every engine it links.
    #[arg(long)]
    pub worker: Option<PathBuf>,
    /// Write each run's trained weights to OUT/weights/ as safetensors.
    #[arg(long)]
    pub save_weights: bool,
    /// Train on the first N examples only (quick runs).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Output directory.
    #[arg(long, default_value = "out/compare")]
    pub out: PathBuf,
}

fn parse_backend(name: &str) -> Result<&'static BackendEntry, String> {
    parallax_registry::find(name).map_err(|error| error.to_string())
}

/// The data set a comparison trains on. Without `--data`, a missing full Fashion-MNIST falls
/// back to the bundled subset, so that the default command works offline with nothing
/// installed; CI must not fall back.
fn dataset(args: &Args, cache: &Path, fixtures: &Path) -> anyhow::Result<DatasetName> {
    let which = match args.dataset {
        DatasetName::ImageFolder => {
            if args.data.is_none() {
                bail!("--dataset image-folder needs --data DIR with one subfolder per class");
            }
            return Ok(DatasetName::ImageFolder);
        }
        DatasetName::Builtin(which) => which,
        DatasetName::Placed(which) => {
            let locator = DataRequest {
                data_dir: args.data.clone(),
                ..DataRequest::builtin(which, cache.to_path_buf(), fixtures.to_path_buf())
            }
            .locator();
            locator.locate(which)?;
            return Ok(args.dataset);
        }
    };
    let locator = DataRequest {
        data_dir: args.data.clone(),
        ..DataRequest::builtin(which, cache.to_path_buf(), fixtures.to_path_buf())
    }
    .locator();
    match locator.locate(which) {
        Ok(_) => Ok(args.dataset),
        Err(error) if args.data.is_none() && which == BuiltinDataset::FashionMnist && !in_ci() => {
            eprintln!("note: {error}");
            eprintln!(
                "note: using the bundled subset instead (fixtures/fashion-mnist-subset: 2000 train, 500 test images)"
            );
            Ok(DatasetName::Builtin(BuiltinDataset::FashionMnistSubset))
        }
        Err(error) => Err(error.into()),
    }
}

/// Checks the flags and turns them into one request per backend, failing before any build.
fn requests(args: &Args) -> anyhow::Result<Vec<RunRequest>> {
    if args.backends.is_empty() {
        bail!(
            "--backends is empty; known backends: {}",
            parallax_registry::names()
        );
    }
    let optimizer = args.optimizer.with_lr(args.lr)?;
    if args.epochs == 0 || args.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    if args.image_channels != 1 && args.image_channels != 3 {
        bail!("--image-channels must be 1 or 3");
    }
    // A spec file is parsed and resolved now, so that a spec whose layers don't fit is
    // reported before anything is built.
    if let ModelSource::File(path) = &args.model {
        ModelSpec::from_file(path)?.resolve()?;
    }
    let init = match &args.weights {
        Some(path) => InitMode::File(path.clone()),
        None => args.init.clone(),
    };
    if let InitMode::File(path) = &init
        && !path.is_file()
    {
        bail!(
            "initial weights {} do not exist; pass an existing .safetensors file to --init",
            path.display()
        );
    }
    if let Some(dir) = &args.data
        && !dir.is_dir()
    {
        bail!(
            "data directory {} does not exist; pass an existing --data DIR",
            dir.display()
        );
    }
    let cuda = matches!(args.device, Device::Cuda(_));
    if let Some(entry) = args
        .backends
        .iter()
        .find(|entry| entry.feature_for(cuda).is_none())
    {
        bail!(
            "{} has no CUDA path; leave it out of --backends or use --device cpu",
            entry.name
        );
    }
    if let Device::Cuda(index) = args.device {
        workers::check_gpu(index)?;
    }
    let root = repo_root();
    let cache = provision::cache_dir();
    let fixtures = root.join("fixtures");
    let dataset = dataset(args, &cache, &fixtures)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let git_revision = git_revision(&root);
    Ok(args
        .backends
        .iter()
        .map(|entry| RunRequest {
            backend: entry.name.to_string(),
            device: args.device,
            threads,
            flush_denormals: !args.keep_denormals,
            model: args.model.clone(),
            data: DataRequest {
                dataset,
                data_dir: args.data.clone(),
                cache_dir: cache.clone(),
                fixtures_dir: fixtures.clone(),
                image_size: args.image_size,
                image_channels: args.image_channels,
                limit_train: args.limit_train,
            },
            epochs: args.epochs,
            batch_size: args.batch_size,
            optimizer,
            seed: args.seed,
            init: init.clone(),
            save_weights: args.save_weights,
            git_revision: git_revision.clone(),
        })
        .collect())
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

/// The command line that ran this comparison, for the manifest.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// Runs the comparison.
pub fn run(args: Args) -> anyhow::Result<()> {
    let requests = requests(&args)?;
    let cuda = matches!(args.device, Device::Cuda(_));
    // The native libraries' environment only when a selected backend links one; burn-only runs
    // need none, so they never provision libtorch.
    let native = if args.worker.is_some() || args.backends.iter().any(|entry| entry.is_native()) {
        Some(provision::ensure(cuda)?)
    } else {
        None
    };
    let workers = workers::build(
        &args.backends,
        cuda,
        native.as_ref(),
        args.worker.as_deref(),
    )?;
    let layout = Layout::new(&args.out);
    std::fs::create_dir_all(layout.root())
        .with_context(|| format!("creating {}", layout.root().display()))?;
    Manifest::new(&layout, command_line(), &requests).save(&layout)?;
    // A record left from an earlier comparison at one of this run's paths would be mistaken
    // for this one's.
    for request in &requests {
        let stale = layout.record(&request.id());
        if stale.exists() {
            std::fs::remove_file(&stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    let progress = MultiProgress::new();
    let mut summary = Summary::default();
    for (request, entry) in requests.iter().zip(&args.backends) {
        let id = request.id();
        let worker = workers
            .get(entry.name)
            .context("no worker was built for this backend")?;
        let request_path = layout.request(&id);
        write_json_atomically(&request_path, request)?;
        let job = Job {
            entry,
            worker,
            request: &request_path,
            record: &layout.record(&id),
            weights: &layout.weights(&id),
            label: entry.name,
        };
        match workers::run(&job, &progress, native.as_ref()) {
            Ok(record) => summary.records.push(record),
            Err(error) => {
                let message = format!("{error:#}");
                workers::say(&progress, format!("{}: failed: {message}", entry.name));
                summary.failures.push(Failure {
                    backend: entry.name.to_string(),
                    error: message,
                });
            }
        }
        // Each finished run is on disk before the next one starts.
        write_json_atomically(&layout.summary(), &summary)?;
    }
    let markdown = report::markdown(&summary, &requests[0]);
    std::fs::write(layout.report_markdown(), &markdown)
        .with_context(|| format!("writing {}", layout.report_markdown().display()))?;
    println!("{}", report::terminal_table(&summary));
    println!(
        "wrote {}, {} and {}",
        layout.root().join("records").display(),
        layout.summary().display(),
        layout.report_markdown().display()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(backends: &[&str]) -> Args {
        Args {
            backends: backends
                .iter()
                .map(|name| parse_backend(name).unwrap())
                .collect(),
            model: "mlp".parse().unwrap(),
            dataset: "fashion-mnist-subset".parse().unwrap(),
            data: None,
            image_size: 64,
            image_channels: 3,
            epochs: 1,
            batch_size: 64,
            optimizer: "adam".parse().unwrap(),
            lr: 1e-3,
            seed: 1,
            threads: Some(2),
            keep_denormals: false,
            device: Device::Cpu,
            init: InitMode::Canonical,
            weights: None,
            worker: None,
            save_weights: false,
            limit_train: None,
            out: std::env::temp_dir(),
        }
    }

    #[test]
    fn flags_become_one_request_per_backend_of_one_configuration() {
        let made = requests(&args(&["burn", "tf"])).unwrap();
        assert_eq!(made.len(), 2);
        assert_eq!(made[0].data.dataset.to_string(), "fashion-mnist-subset");
        assert!(made[0].flush_denormals);
        let (burn, tf) = (made[0].id(), made[1].id());
        assert_eq!((burn.backend.as_str(), tf.backend.as_str()), ("burn", "tf"));
        assert_eq!(burn.configuration, tf.configuration);
        assert!(requests(&args(&[])).is_err());
    }

    #[test]
    fn a_lr_that_is_not_positive_is_refused() {
        let mut bad = args(&["burn"]);
        bad.lr = 0.0;
        assert!(
            requests(&bad)
                .unwrap_err()
                .to_string()
                .contains("learning rate")
        );
    }
}

//! `parallax-runner`: the worker process that trains one backend and writes its run record.
//!
//! `cargo xtask compare` starts one runner per backend, so that each engine's peak memory,
//! thread pools and crashes stay apart. The runner reads a [`RunRequest`] (JSON), reports
//! progress as JSON lines on stdout ([`ProgressEvent`]), writes the [`RunRecord`] and exits 0;
//! on failure it prints one `error:` line on stderr and exits 1.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use parallax_core::data::builtin::{BuiltinDataset, DataLocator};
use parallax_core::data::folder::read_image_folder;
use parallax_core::data::{Normalization, epoch_order};
use parallax_core::record::{EpochRecord, InitMode, ProgressEvent, RunRecord, RunRequest, median};
use parallax_core::spec::ModelSpec;
use parallax_core::{Backend, CpuSettings, Dataset, Device, EpochPlan, init};

/// Trains one backend as a `cargo xtask compare` worker.
#[derive(Parser)]
#[command(name = "parallax-runner", version, about)]
struct Cli {
    /// The run request, as JSON.
    #[arg(long)]
    request: PathBuf,
    /// Where to write the run record.
    #[arg(long)]
    record: PathBuf,
}

fn emit(event: &ProgressEvent) {
    if let Ok(line) = serde_json::to_string(event) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe only means nobody is watching the progress; the record still gets written.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(&cli) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// Builds the backend a request names. Unknown names and backends left out of this build are
/// errors that say what to do.
fn make_backend(name: &str, device: Device, cpu: CpuSettings) -> anyhow::Result<Box<dyn Backend>> {
    match name {
        #[cfg(feature = "burn")]
        "burn" => Ok(Box::new(parallax_burn::BurnBackend::new(
            parallax_burn::BurnEngine::for_device(device),
            device,
            cpu,
        )?)),
        #[cfg(feature = "burn-tch")]
        "burn-tch" => Ok(Box::new(parallax_burn::BurnBackend::new(
            parallax_burn::BurnEngine::LibTorch,
            device,
            cpu,
        )?)),
        #[cfg(feature = "tch")]
        "tch" => Ok(Box::new(parallax_tch::TchBackend::new(device, cpu)?)),
        #[cfg(feature = "tf")]
        "tf" => Ok(Box::new(parallax_tf::TfBackend::new(device, cpu)?)),
        other => bail!(
            "backend {other:?} is not compiled into this runner; known backends: {}",
            KNOWN_BACKENDS.join(", ")
        ),
    }
}

/// The backends this build of the runner contains.
const KNOWN_BACKENDS: &[&str] = &[
    #[cfg(feature = "burn")]
    "burn",
    #[cfg(feature = "burn-tch")]
    "burn-tch",
    #[cfg(feature = "tch")]
    "tch",
    #[cfg(feature = "tf")]
    "tf",
];

/// Loads the request's train and test sets; returns them with the name and source to record.
fn load_data(request: &RunRequest) -> anyhow::Result<(Dataset, Dataset, String, String)> {
    if request.dataset == "image-folder" {
        let root = request
            .data_dir
            .as_deref()
            .context("--dataset image-folder needs --data DIR (one subfolder per class)")?;
        let all = read_image_folder(
            root,
            request.image_channels,
            request.image_size,
            request.image_size,
            &Normalization::UnitRange,
        )?;
        // A fixed 80/20 split from the run's seed: the same for every backend.
        let (train, test) = all.split(0.2, request.seed)?;
        return Ok((
            train,
            test,
            "image-folder".into(),
            root.display().to_string(),
        ));
    }
    let which: BuiltinDataset = request.dataset.parse().map_err(anyhow::Error::msg)?;
    let locator = DataLocator {
        explicit_dir: request.data_dir.clone(),
        cache_dir: request.cache_dir.clone(),
        fixtures_dir: request.fixtures_dir.clone(),
    };
    let (train, test, found) = locator.load(which, &Normalization::UnitRange)?;
    Ok((train, test, which.to_string(), found.display().to_string()))
}

fn peak_rss_bytes() -> u64 {
    // VmHWM is the process's true peak resident set, C++ allocations of the engines included.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&cli.request)
        .with_context(|| format!("reading run request {}", cli.request.display()))?;
    let request: RunRequest = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", cli.request.display()))?;
    let record = train(&request)?;
    record.save(&cli.record)?;
    Ok(())
}

fn resolve_model(
    request: &RunRequest,
    train: &Dataset,
) -> anyhow::Result<parallax_core::spec::ResolvedModel> {
    let spec =
        ModelSpec::from_name_or_file(&request.model, train.image_shape(), train.num_classes())?;
    if spec.input != train.image_shape() {
        let [c, h, w] = spec.input;
        let [dc, dh, dw] = train.image_shape();
        bail!(
            "model {} expects {c}×{h}×{w} inputs, data set {} has {dc}×{dh}×{dw}",
            spec.name,
            request.dataset
        );
    }
    let model = spec.resolve()?;
    if model.classes() != train.num_classes() {
        bail!(
            "model {} has {} outputs, data set {} has {} classes",
            model.spec.name,
            model.classes(),
            request.dataset,
            train.num_classes()
        );
    }
    Ok(model)
}

/// Trains and evaluates as the request says, and returns the record.
fn train(request: &RunRequest) -> anyhow::Result<RunRecord> {
    if request.batch_size == 0 || request.epochs == 0 {
        bail!("--batch-size and --epochs must be at least 1");
    }
    let backend = make_backend(
        &request.backend,
        request.device,
        CpuSettings {
            threads: request.threads,
            flush_denormals: request.flush_denormals,
        },
    )?;
    let info = backend.info();
    let (mut train, test, dataset, source) = load_data(request)?;
    if let Some(limit) = request.limit_train {
        train = train.take(limit);
    }
    let model = resolve_model(request, &train)?;
    let weights = match request.init {
        InitMode::Canonical => Some(init::canonical(&model, request.seed)),
        InitMode::Native => None,
    };

    let build_start = Instant::now();
    let mut net = backend.build(&model, weights.as_ref())?;
    let build_seconds = build_start.elapsed().as_secs_f64();
    let steps_per_epoch = train.len().div_ceil(request.batch_size);
    emit(&ProgressEvent::Start {
        dataset: dataset.clone(),
        source: source.clone(),
        train_examples: train.len(),
        steps_per_epoch,
        epochs: request.epochs,
        framework: format!("{} {}", info.framework, info.framework_version),
    });

    let mut epochs = Vec::new();
    let mut elapsed_training = 0.0;
    let mut time_to_first_step = f64::NAN;
    let mut last_evaluation = None;
    for epoch in 1..=request.epochs {
        let order = epoch_order(train.len(), request.seed, epoch - 1);
        let plan = EpochPlan::new(&train, &order, request.batch_size)?;
        let mut last_report = Instant::now();
        let stats = net.train_epoch(&plan, &request.optimizer, &mut |progress| {
            if last_report.elapsed().as_millis() >= 250 || progress.step == steps_per_epoch {
                last_report = Instant::now();
                emit(&ProgressEvent::Step {
                    epoch,
                    step: progress.step,
                    loss: progress.loss,
                });
            }
        })?;
        if epoch == 1 {
            time_to_first_step = build_seconds + stats.first_step_seconds;
        }
        elapsed_training += stats.seconds;
        let evaluation = net.evaluate(&test, 1000)?;
        let record = EpochRecord {
            epoch,
            train_loss: stats.train_loss,
            seconds: stats.seconds,
            samples_per_second: stats.samples_per_second,
            test_accuracy: evaluation.report.accuracy,
            test_loss: evaluation.loss,
            elapsed_training_seconds: elapsed_training,
        };
        emit(&ProgressEvent::Epoch(record.clone()));
        epochs.push(record);
        last_evaluation = Some(evaluation);
    }
    let evaluation = last_evaluation.context("no epoch ran")?;
    let parameters = model
        .parameters()
        .iter()
        .filter(|p| p.role.is_trainable())
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    let seconds: Vec<f64> = epochs.iter().map(|e| e.seconds).collect();
    let mut record = RunRecord {
        record_version: parallax_core::record::RECORD_VERSION,
        backend: String::new(),
        framework: String::new(),
        framework_version: String::new(),
        device: String::new(),
        threads: 0,
        flush_denormals: false,
        model: model.spec.name.clone(),
        parameters,
        dataset,
        data_source: source,
        train_examples: train.len(),
        test_examples: test.len(),
        seed: request.seed,
        init: match request.init {
            InitMode::Canonical => "canonical".into(),
            InitMode::Native => "native".into(),
        },
        batch_size: request.batch_size,
        optimizer: request.optimizer,
        git_revision: request.git_revision.clone(),
        median_epoch_seconds: median(&seconds),
        epochs,
        test_accuracy: evaluation.report.accuracy,
        test_loss: evaluation.loss,
        macro_f1: evaluation.report.macro_avg.f1,
        weighted_f1: evaluation.report.weighted_avg.f1,
        report: evaluation.report,
        confusion_matrix: evaluation.confusion_matrix,
        class_names: test.class_names().to_vec(),
        peak_rss_bytes: peak_rss_bytes(),
        time_to_first_step_seconds: time_to_first_step,
        engine_defaults: Default::default(),
    };
    record.describe_backend(&info);
    Ok(record)
}

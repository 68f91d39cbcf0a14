//! The run protocol: what one run of a backend does, from its request to its record.
//!
//! [`execute`] loads the data, resolves the model, draws or reads the initial weights, builds
//! the model, trains epoch by epoch with an evaluation after each, times the first step, and
//! assembles the [`RunRecord`] in one place. The worker binary is argument parsing, a backend
//! and this call; tests and benches call the same code, so what they measure is what
//! `cargo xtask compare` runs.
//!
//! A request with `measure_peak` first measures the machine's matrix-product peak through the
//! backend ([`crate::peak`]), before the model is built and outside every timing.
//!
//! When given a [`RunFiles`], the protocol writes the record after every epoch (status
//! `running`), at the end (`complete`), and when a later part fails (`failed`, with the error),
//! so that what finished is on disk before anything after it can go wrong.

use std::path::PathBuf;
use std::time::Instant;

use crate::backend::{Backend, BackendInfo, Evaluation};
use crate::data::{EpochPlan, LoadedData, epoch_order};
use crate::error::one_line;
use crate::ledger::Topic;
use crate::memory::EVALUATION_BATCH;
use crate::optim::OptimizerConfig;
use crate::peak::MatmulPeak;
use crate::precision::{Bf16Units, Precision};
use crate::record::{
    EpochRecord, InitMode, ProgressEvent, RECORD_VERSION, RunRecord, RunRequest, RunStatus,
};
use crate::spec::ResolvedModel;
use crate::stats::median;
use crate::weights::Weights;
use crate::{Error, Result, defaults, init};

/// Timed products of the peak measurement, when a request asks for one: about a second on
/// two cores with 2048² operands.
const PEAK_REPEATS: usize = 5;

/// Timed copies of the bandwidth measurement: 5 copies of 256 MiB take about a quarter of a
/// second at 10 GB/s.
const BANDWIDTH_REPEATS: usize = 5;

/// Where a run writes its record and, when its request asks for them, its trained weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFiles {
    /// The record, rewritten after every epoch.
    pub record: PathBuf,
    /// The trained weights, written at the end.
    pub weights: Option<PathBuf>,
    /// The machine the run executes on, written into the record when known (a cluster task's
    /// node).
    pub node: Option<crate::record::Node>,
}

/// Checks what a request asks for that no data set or backend needs to see.
pub fn validate(request: &RunRequest) -> Result<()> {
    if request.epochs == 0 || request.batch_size == 0 {
        return Err(Error::InvalidArgument(
            "--epochs and --batch-size must be at least 1".into(),
        ));
    }
    if request.data.limit_train == Some(0) {
        return Err(Error::InvalidArgument(
            "--limit-train 0 leaves nothing to train on; give at least 1 example, or leave it out for the whole training set".into(),
        ));
    }
    Ok(())
}

/// The request's model, resolved for its data: a preset takes the data's input shape and class
/// count; a spec file must fit both.
pub fn resolve_model(request: &RunRequest, data: &LoadedData) -> Result<ResolvedModel> {
    let train = &data.train;
    let spec = request
        .model
        .spec(train.image_shape(), train.num_classes())?;
    let mismatch = |message: String| Error::InvalidArgument(message);
    if spec.input != train.image_shape() {
        let [c, h, w] = spec.input;
        let [dc, dh, dw] = train.image_shape();
        return Err(mismatch(format!(
            "model {} expects {c}×{h}×{w} inputs, data set {} has {dc}×{dh}×{dw}",
            spec.name, data.name
        )));
    }
    let model = spec.resolve()?;
    if model.classes() != train.num_classes() {
        return Err(mismatch(format!(
            "model {} has {} outputs, data set {} has {} classes",
            model.spec.name,
            model.classes(),
            data.name,
            train.num_classes()
        )));
    }
    Ok(model)
}

/// The run's initial weights: drawn from the seed, read from a file, or `None` for the
/// engine's own.
pub fn initial_weights(request: &RunRequest, model: &ResolvedModel) -> Result<Option<Weights>> {
    match &request.init {
        InitMode::Canonical => Ok(Some(init::canonical(model, request.seed))),
        InitMode::Native => Ok(None),
        InitMode::File(path) => {
            let weights = Weights::load_any(path)?.fit_to(model)?;
            weights.check(model)?;
            Ok(Some(weights))
        }
    }
}

/// Executes `request` on `backend`: see the [module documentation](self).
///
/// `progress` sees every [`ProgressEvent`]; step events come at most every quarter second and
/// at each epoch's last step.
pub fn execute(
    request: &RunRequest,
    backend: &dyn Backend,
    files: Option<&RunFiles>,
    progress: &mut dyn FnMut(&ProgressEvent),
) -> Result<RunRecord> {
    validate(request)?;
    let info = backend.info();
    let data = request.data.load(request.seed)?;
    let mut model = resolve_model(request, &data)?;
    let mut optimizer = request.optimizer;
    let applied = defaults::apply(
        &request.native,
        &info.native_defaults,
        &info.fixed,
        &mut optimizer,
        &mut model,
        &match &request.init {
            InitMode::Canonical => format!("canonical, shared (seed {})", request.seed),
            InitMode::Native => "the engine's own draw".to_string(),
            InitMode::File(path) => format!("shared, from {}", path.display()),
        },
    );
    // A precision or compilation the engine lacks is refused before anything is loaded or
    // measured.
    request
        .execution()
        .check(&info.backend, &info.precisions, info.compiles)?;
    let bf16_units = match request.precision {
        Precision::Bf16 => Some(Bf16Units::of_this_cpu()?),
        Precision::F32 => None,
    };
    // Refused here, before the initial weights or the engine allocate anything.
    let memory = crate::memory::check_fits(&model, request.batch_size, &optimizer.kind)?;
    let weights = if applied.native_initialisation {
        None
    } else {
        initial_weights(request, &model)?
    };

    // Measured before the model exists, and outside every timing that the record reports.
    let matmul_peak = if request.measure_peak {
        // The size follows what the CPU really has, not an override that simulates other
        // units for the record: it only keeps an emulated product from taking minutes.
        let size = match request.precision {
            Precision::Bf16 if Bf16Units::detected().is_emulated() => {
                crate::peak::EMULATED_BF16_SIZE
            }
            _ => crate::peak::DEFAULT_SIZE,
        };
        Some(crate::peak::measure_in(
            backend,
            size,
            PEAK_REPEATS,
            request.precision,
        )?)
    } else {
        None
    };
    // The roofline's other ceiling, with the run's threads, beside the peak.
    let memory_bandwidth = request.measure_peak.then(|| {
        crate::roofline::measure_bandwidth(
            info.threads,
            crate::roofline::STREAM_BYTES,
            BANDWIDTH_REPEATS,
        )
    });

    backend.seed(request.seed);
    let build_start = Instant::now();
    let mut net = backend.build_with(&model, weights.as_ref(), request.execution())?;
    let build_seconds = build_start.elapsed().as_secs_f64();
    let train = &data.train;
    let steps_per_epoch = train.len().div_ceil(request.batch_size);
    progress(&ProgressEvent::Start {
        dataset: data.name.to_string(),
        source: data.source.display().to_string(),
        train_examples: train.len(),
        skipped_unreadable: data.skipped.len(),
        steps_per_epoch,
        epochs: request.epochs,
        framework: format!("{} {}", info.framework, info.framework_version),
    });

    let mut record = start_record(
        request,
        &info,
        &model,
        &data,
        optimizer,
        applied.used,
        matmul_peak,
    );
    record.memory_estimate = Some(memory);
    record.memory_bandwidth = memory_bandwidth;
    record.bf16_units = bf16_units;
    record.node = files.and_then(|files| files.node.clone());
    let mut epochs = || -> Result<()> {
        for epoch in 1..=request.epochs {
            let order = epoch_order(train.len(), request.seed, epoch - 1);
            let plan = EpochPlan::new(train, &order, request.batch_size)?;
            let mut last_report = Instant::now();
            let stats = net.train_epoch(&plan, &optimizer, &mut |step| {
                if last_report.elapsed().as_millis() >= 250 || step.step == steps_per_epoch {
                    last_report = Instant::now();
                    progress(&ProgressEvent::Step {
                        epoch,
                        step: step.step,
                        loss: step.loss,
                    });
                }
            })?;
            if epoch == 1 {
                record.time_to_first_step_seconds = build_seconds + stats.first_step_seconds;
            }
            let evaluation = net.evaluate(&data.test, EVALUATION_BATCH)?;
            let elapsed = record
                .epochs
                .last()
                .map_or(0.0, |last: &EpochRecord| last.elapsed_training_seconds)
                + stats.seconds;
            let epoch_record = EpochRecord {
                epoch,
                train_loss: stats.train_loss,
                seconds: stats.seconds,
                samples_per_second: stats.samples_per_second,
                test_accuracy: evaluation.report.accuracy,
                test_loss: evaluation.loss,
                elapsed_training_seconds: elapsed,
            };
            progress(&ProgressEvent::Epoch(epoch_record.clone()));
            finish_epoch(&mut record, epoch_record, evaluation);
            if let Some(files) = files {
                record.save(&files.record)?;
            }
        }
        if let Some(path) = files.and_then(|files| files.weights.as_ref()) {
            net.export_weights()?.save(path)?;
        }
        // The roofline's measured side: each layer timed on its own, after training and
        // outside every timing above, on the first batch of the training set.
        if request.measure_peak {
            let count = request.batch_size.min(train.len());
            let images = train.images();
            match net.layer_times(images.slice(ndarray::s![..count, .., .., ..])) {
                Ok(times) => record.layer_times = times,
                // An engine that cannot run its layers one at a time leaves the column empty.
                Err(Error::Unsupported { .. }) => {}
                Err(error) => return Err(error),
            }
            // The same batch in whole training steps, under the engine's own profiler.
            let first: Vec<u32> = (0..count as u32).collect();
            match net.layer_profile(&train.try_batch(&first)?, &optimizer) {
                Ok(profile) => record.layer_profile = Some(profile),
                Err(Error::Unsupported { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    };
    match epochs() {
        Ok(()) => {
            record.status = RunStatus::Complete;
            record.peak_rss_bytes = peak_rss_bytes();
            if let Some(files) = files {
                record.save(&files.record)?;
            }
            Ok(record)
        }
        Err(error) => {
            // What finished stays on disk; a run that failed before its first epoch has no
            // record.
            if let Some(files) = files
                && !record.epochs.is_empty()
            {
                record.status = RunStatus::Failed;
                record.error = Some(one_line(&error));
                record.peak_rss_bytes = peak_rss_bytes();
                // The run's own error is what matters; a failure to save is secondary.
                let _ = record.save(&files.record);
            }
            Err(error)
        }
    }
}

/// The record of a run that has not finished an epoch yet: everything the request, the backend
/// and the data say, with empty results.
fn start_record(
    request: &RunRequest,
    info: &BackendInfo,
    model: &ResolvedModel,
    data: &LoadedData,
    optimizer: OptimizerConfig,
    used: Vec<(Topic, String)>,
    matmul_peak: Option<MatmulPeak>,
) -> RunRecord {
    // On the topics the native factors touch, the ledger says what this run used before what
    // the engine does by default.
    let mut ledger = info.ledger.clone();
    for (topic, used) in used {
        let default = ledger.get(topic).unwrap_or_default().to_string();
        ledger.insert(topic, crate::ledger::run_entry(&used, &default));
    }
    RunRecord {
        record_version: RECORD_VERSION,
        status: RunStatus::Running,
        error: None,
        run: request.id(),
        backend: info.backend.clone(),
        framework: info.framework.clone(),
        framework_version: info.framework_version.clone(),
        device: info.device,
        threads: info.threads,
        flush_denormals: info.flush_denormals,
        malloc: crate::record::malloc_settings(),
        model: model.spec.name.clone(),
        parameters: model.trainable_count(),
        dataset: data.name,
        data_source: data.source.display().to_string(),
        train_examples: data.train.len(),
        test_examples: data.test.len(),
        skipped_unreadable: data.skipped.len(),
        seed: request.seed,
        init: request.init.clone(),
        native: request.native.clone(),
        batch_size: request.batch_size,
        optimizer,
        git_revision: request.git_revision.clone(),
        epochs: Vec::new(),
        test_accuracy: 0.0,
        test_loss: 0.0,
        macro_f1: 0.0,
        weighted_f1: 0.0,
        report: crate::metrics::ClassificationReport::from_confusion(
            &crate::metrics::ConfusionMatrix::new(model.classes()),
        ),
        confusion_matrix: crate::metrics::ConfusionMatrix::new(model.classes()),
        class_names: data.test.class_names().to_vec(),
        peak_rss_bytes: 0,
        time_to_first_step_seconds: 0.0,
        median_epoch_seconds: 0.0,
        flops: Some(crate::flops::count(model, &optimizer.kind)),
        layer_costs: crate::roofline::layer_costs(model, request.batch_size, &optimizer.kind),
        memory_bandwidth: None,
        layer_times: Vec::new(),
        layer_profile: None,
        matmul_peak,
        memory_estimate: None,
        node: None,
        ledger,
        precision: request.precision,
        compile: request.compile,
        bf16_units: None,
        precision_note: match request.precision {
            Precision::Bf16 => info.precision_note.clone(),
            Precision::F32 => None,
        },
    }
}

/// Adds a finished epoch and its evaluation: the final figures are always the last epoch's.
fn finish_epoch(record: &mut RunRecord, epoch: EpochRecord, evaluation: Evaluation) {
    record.epochs.push(epoch);
    let seconds: Vec<f64> = record.epochs.iter().map(|e| e.seconds).collect();
    record.median_epoch_seconds = median(&seconds);
    record.test_accuracy = evaluation.report.accuracy;
    record.test_loss = evaluation.loss;
    record.macro_f1 = evaluation.report.macro_avg.f1;
    record.weighted_f1 = evaluation.report.weighted_avg.f1;
    record.report = evaluation.report;
    record.confusion_matrix = evaluation.confusion_matrix;
    record.peak_rss_bytes = peak_rss_bytes();
}

/// The process's peak resident memory (Linux's `VmHWM`, the engines' native allocations
/// included), or 0 where it is not known.
pub fn peak_rss_bytes() -> u64 {
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

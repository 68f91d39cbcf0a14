//! The run record: one JSON document per backend run, documented in `docs/run-record.md`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendInfo, OptimizerConfig};
use crate::metrics::{ClassificationReport, ConfusionMatrix};
use crate::{Error, Result};

/// The version of the record's layout; bumped when a field changes meaning or disappears.
pub const RECORD_VERSION: u32 = 1;

/// How a run's initial weights are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitMode {
    /// The canonical weights drawn from the run's seed: the same start on every backend.
    #[default]
    Canonical,
    /// The engine's own default initialisation.
    Native,
}

/// What one worker process is asked to do: train one backend on one model and data set.
///
/// `cargo xtask compare` writes one per backend and hands it to the worker; the worker answers
/// with a [`RunRecord`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Backend name (`burn`, ...).
    pub backend: String,
    /// Device.
    pub device: crate::backend::Device,
    /// CPU threads for the engine.
    pub threads: usize,
    /// Flush subnormal floats to zero on the engine's threads.
    pub flush_denormals: bool,
    /// A preset name (`mlp`, `cnn`, `resnet18`, `resnet50`) or a spec file path.
    pub model: String,
    /// A built-in data set name, or `image-folder`.
    pub dataset: String,
    /// An explicit data directory (`--data`).
    pub data_dir: Option<std::path::PathBuf>,
    /// The cache directory where downloaded data sets live.
    pub cache_dir: std::path::PathBuf,
    /// The repository's `fixtures/` directory (the bundled subset).
    pub fixtures_dir: std::path::PathBuf,
    /// Image size (height = width) for `image-folder` data sets.
    pub image_size: usize,
    /// Channels (1 or 3) for `image-folder` data sets.
    pub image_channels: usize,
    /// Epochs.
    pub epochs: u32,
    /// Batch size.
    pub batch_size: usize,
    /// Optimizer.
    pub optimizer: OptimizerConfig,
    /// Seed of the data order and the canonical weights.
    pub seed: u64,
    /// Initial weights.
    pub init: InitMode,
    /// Use only the first N training examples, for quick runs.
    pub limit_train: Option<usize>,
    /// `git describe` of the checkout.
    pub git_revision: String,
}

/// One epoch of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: u32,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Seconds of the training loop, evaluation excluded.
    pub seconds: f64,
    /// Training examples per second.
    pub samples_per_second: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f64,
    /// Test loss after the epoch.
    pub test_loss: f64,
    /// Seconds since training began (first epoch's start) at the end of this epoch's training
    /// loop, evaluation excluded: the x axis of a time-to-accuracy curve.
    pub elapsed_training_seconds: f64,
}

/// Everything one backend run produced, with what is needed to reproduce it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RECORD_VERSION`].
    pub record_version: u32,
    /// The backend's name (`burn`, `tch`, `tf`).
    pub backend: String,
    /// The engine (`burn-flex`, `libtorch`, `tensorflow`).
    pub framework: String,
    /// The engine's version.
    pub framework_version: String,
    /// Device, as `cpu` or `cuda:N`.
    pub device: String,
    /// Threads the engine was given.
    pub threads: usize,
    /// Whether subnormal floats were flushed to zero on the engine's threads.
    pub flush_denormals: bool,
    /// Model spec name.
    pub model: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// Data set name, as resolved (`fashion-mnist`, `fashion-mnist-subset`...).
    pub dataset: String,
    /// Where the data came from.
    pub data_source: String,
    /// Training and test examples.
    pub train_examples: usize,
    /// Test examples.
    pub test_examples: usize,
    /// Seed of the data order and of the canonical initial weights.
    pub seed: u64,
    /// `canonical` (shared initial weights from the seed) or `native` (the engine's own).
    pub init: String,
    /// Batch size.
    pub batch_size: usize,
    /// Optimizer and learning rate.
    pub optimizer: OptimizerConfig,
    /// `git describe --always --dirty` of the checkout, when known.
    pub git_revision: String,
    /// Per-epoch figures.
    pub epochs: Vec<EpochRecord>,
    /// Final test accuracy.
    pub test_accuracy: f64,
    /// Final test loss.
    pub test_loss: f64,
    /// Final macro-averaged F1.
    pub macro_f1: f64,
    /// Final weighted-averaged F1.
    pub weighted_f1: f64,
    /// Final precision, recall and F1 per class and averaged.
    pub report: ClassificationReport,
    /// Rows are true classes, columns predicted ones.
    pub confusion_matrix: ConfusionMatrix,
    /// Class names, in index order.
    pub class_names: Vec<String>,
    /// Peak resident memory of the worker process (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Seconds from the start of model building to the end of the first training step:
    /// build, weight import, graph construction and the first step's warm-up.
    pub time_to_first_step_seconds: f64,
    /// Median of the epochs' training seconds (robust to a slow first epoch).
    pub median_epoch_seconds: f64,
    /// The fairness ledger: the engine's own defaults where parallax sets values explicitly.
    pub engine_defaults: std::collections::BTreeMap<String, String>,
}

impl RunRecord {
    /// Fills the fields that describe the backend from its [`BackendInfo`].
    pub fn describe_backend(&mut self, info: &BackendInfo) {
        self.backend = info.backend.clone();
        self.framework = info.framework.clone();
        self.framework_version = info.framework_version.clone();
        self.device = info.device.to_string();
        self.threads = info.threads;
        self.flush_denormals = info.flush_denormals;
        self.engine_defaults = info.defaults.clone();
    }

    /// Writes the record as pretty JSON, through a temporary file so a reader never sees half of it.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json_atomically(path, self)
    }

    /// Reads a record.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::io(path, error))?;
        serde_json::from_str(&text).map_err(|error| Error::Format {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
    }
}

/// A worker's progress, one JSON object per line on its stdout, read by `cargo xtask compare`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// Data loaded and model built; training starts.
    Start {
        /// Data set name.
        dataset: String,
        /// Where it came from.
        source: String,
        /// Training examples.
        train_examples: usize,
        /// Steps per epoch.
        steps_per_epoch: usize,
        /// Epochs.
        epochs: u32,
        /// Engine and version.
        framework: String,
    },
    /// Training progress within an epoch (at most a few per second).
    Step {
        /// Epoch, from 1.
        epoch: u32,
        /// Steps done.
        step: usize,
        /// Latest step's loss.
        loss: f32,
    },
    /// An epoch finished and was evaluated.
    Epoch(EpochRecord),
}

/// Median of a list of numbers (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Serialises `value` as pretty JSON to `path` via a sibling temporary file and a rename.
pub fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|error| Error::Format {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| Error::io(parent, error))?;
    }
    let temporary = path.with_extension("json.partial");
    std::fs::write(&temporary, text + "\n").map_err(|error| Error::io(&temporary, error))?;
    std::fs::rename(&temporary, path).map_err(|error| Error::io(path, error))
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}

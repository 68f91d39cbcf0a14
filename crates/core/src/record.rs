//! The run request and the run record: what a worker is asked to do, and the JSON document it
//! writes, documented in `docs/run-record.md`.
//!
//! Records of an older layout still read: [`RunRecord::load`] migrates them to the current one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_with::{DeserializeFromStr, SerializeDisplay};
use sha2::{Digest, Sha256};

use crate::backend::Device;
use crate::data::{DataRequest, DatasetName};
use crate::defaults::Factor;
use crate::flops::FlopCount;
use crate::ledger::{Ledger, Topic};
use crate::memory::MemoryEstimate;
use crate::metrics::{ClassificationReport, ConfusionMatrix};
use crate::optim::OptimizerConfig;
use crate::precision::{Bf16Units, Compile, Execution, Precision};
use crate::roofline::{LayerCost, LayerProfile, LayerTime, MemoryBandwidth};
use crate::spec::ModelSource;
use crate::{Error, Result};

/// The version of the record's layout; bumped when a field changes meaning or disappears.
///
/// Version 2 added `status`, `error`, `run` and the typed `ledger` (version 1's
/// `engine_defaults`), and made `init` a value that can name a weights file. Version 3 reads
/// `device` and `dataset` as the types a request names them with ([`Device`],
/// [`DatasetName`]) rather than free text: the same text, which a reader now checks.
pub const RECORD_VERSION: u32 = 3;

/// How a run's initial weights are chosen.
///
/// Serialised as `canonical`, `native`, or the path of a safetensors file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, SerializeDisplay, DeserializeFromStr)]
pub enum InitMode {
    /// The canonical weights drawn from the run's seed: the same start on every backend.
    #[default]
    Canonical,
    /// The engine's own default initialisation.
    Native,
    /// Canonical weights read from a safetensors file (PyTorch names and layouts), the same on
    /// every backend.
    File(PathBuf),
}

impl std::fmt::Display for InitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitMode::Canonical => f.write_str("canonical"),
            InitMode::Native => f.write_str("native"),
            InitMode::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for InitMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "canonical" => Ok(InitMode::Canonical),
            "native" => Ok(InitMode::Native),
            path if path.ends_with(".safetensors") => Ok(InitMode::File(PathBuf::from(path))),
            other => Err(format!(
                "unknown init {other:?}: use canonical, native or a .safetensors weights file"
            )),
        }
    }
}

/// What one worker process is asked to do: train one backend on one model and data set.
///
/// `cargo xtask compare` writes one per run of its matrix and hands it to a worker, which
/// executes it with [`crate::run::execute`] and answers with a [`RunRecord`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Backend name (`burn`, ...).
    pub backend: String,
    /// Device.
    pub device: Device,
    /// CPU threads for the engine.
    pub threads: usize,
    /// Flush subnormal floats to zero on the engine's threads.
    pub flush_denormals: bool,
    /// A preset (`mlp`, `cnn`, `resnet18`, `resnet50`) or a spec file.
    pub model: ModelSource,
    /// The data set and where to find it.
    #[serde(flatten)]
    pub data: DataRequest,
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
    /// The factors switched to the engine's own defaults (none in a controlled run; all of
    /// them with `--defaults native`; one at a time in attribution). The engine's own
    /// initialisation overrides `init`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub native: BTreeSet<Factor>,
    /// Write the trained weights beside the record.
    #[serde(default)]
    pub save_weights: bool,
    /// Measure the machine's matrix-product peak, in the run's precision, through the engine
    /// before training ([`crate::peak`]), for the record's [`RunRecord::matmul_peak`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub measure_peak: bool,
    /// The precision the layers compute in (`--precision`); f32 is left out of the JSON, so
    /// that an f32 request keeps the configuration digest it had before the axis existed.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Whether the framework compiles the step (`--compile`); off is left out, as f32 is.
    #[serde(default, skip_serializing_if = "Compile::is_off")]
    pub compile: Compile,
    /// `git describe` of the checkout.
    pub git_revision: String,
}

impl RunRequest {
    /// The run's precision and compilation.
    pub fn execution(&self) -> Execution {
        Execution {
            precision: self.precision,
            compile: self.compile,
        }
    }

    /// The run's identity: its model, backend and seed, and the digest of everything else it
    /// was asked (so two runs of one comparison share a configuration, and runs of another
    /// configuration don't).
    pub fn id(&self) -> RunId {
        RunId {
            model: self.model.key(),
            backend: self.backend.clone(),
            seed: self.seed,
            configuration: self.configuration(),
        }
    }

    /// The first 12 hex digits of the SHA-256 of the request's canonical JSON, without what
    /// varies within one comparison (backend, seed) or says nothing about the computation
    /// (directories of the cache and fixtures, git revision, whether weights are saved).
    pub fn configuration(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            for key in [
                "backend",
                "seed",
                "cache_dir",
                "fixtures_dir",
                "git_revision",
                "save_weights",
                "measure_peak",
            ] {
                object.remove(key);
            }
        }
        // serde_json's maps are sorted by key, so the text is canonical.
        let digest = Sha256::digest(value.to_string().as_bytes());
        hex::encode(digest)[..12].to_string()
    }
}

impl RunRequest {
    /// Writes the request to `path` and returns the SHA-256 of the text written, which the
    /// worker is given with the path ([`RunRequest::load`]), so that it can only ever run the
    /// request its command wrote.
    pub fn save(&self, path: &Path) -> Result<String> {
        let text = pretty_json(path, self)?;
        write_atomically(path, &text)?;
        Ok(text_digest(&text))
    }

    /// Reads a request; with `expected_sha256`, a request whose text has another digest (a
    /// second command wrote over it) is refused rather than run.
    pub fn load(path: &Path, expected_sha256: Option<&str>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::io(path, error))?;
        let format_error = |message: String| Error::Format {
            path: path.to_path_buf(),
            message,
        };
        if let Some(expected) = expected_sha256
            && !text_digest(&text).eq_ignore_ascii_case(expected)
        {
            return Err(format_error(
                "this run request changed after its command wrote it (another command is writing into the same output directory); run each command with its own --out".into(),
            ));
        }
        serde_json::from_str(&text).map_err(|error| format_error(error.to_string()))
    }
}

/// A run's identity, from its request; it decides where its files go
/// ([`Layout`](crate::layout::Layout)).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunId {
    /// The model's key: the preset's name or the spec file's stem.
    pub model: String,
    /// The backend's name.
    pub backend: String,
    /// The seed.
    pub seed: u64,
    /// [`RunRequest::configuration`]: the same for every run of one comparison.
    pub configuration: String,
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/seed-{}", self.model, self.backend, self.seed)
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Training goes on; the record holds the epochs finished so far.
    Running,
    /// Every epoch ran.
    #[default]
    Complete,
    /// The run failed after at least one epoch; `error` says why.
    Failed,
}

/// One epoch of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: u32,
    /// Mean training loss over the epoch.
    #[serde(with = "crate::float")]
    pub train_loss: f64,
    /// Seconds of the training loop, evaluation excluded.
    #[serde(with = "crate::float")]
    pub seconds: f64,
    /// Training examples per second.
    #[serde(with = "crate::float")]
    pub samples_per_second: f64,
    /// Test accuracy after the epoch.
    #[serde(with = "crate::float")]
    pub test_accuracy: f64,
    /// Test loss after the epoch.
    #[serde(with = "crate::float")]
    pub test_loss: f64,
    /// Seconds since training began (first epoch's start) at the end of this epoch's training
    /// loop, evaluation excluded: the x axis of a time-to-accuracy curve.
    #[serde(with = "crate::float")]
    pub elapsed_training_seconds: f64,
}

/// Everything one backend run produced, with what is needed to reproduce it.
///
/// [`crate::run::execute`] assembles it, in one place; nothing patches it afterwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RECORD_VERSION`].
    pub record_version: u32,
    /// Running, complete or failed.
    pub status: RunStatus,
    /// Why a failed run failed.
    pub error: Option<String>,
    /// The run's identity.
    pub run: RunId,
    /// The backend's name (`burn`, `tch`, `tf`).
    pub backend: String,
    /// The engine (`burn-flex`, `libtorch`, `tensorflow`).
    pub framework: String,
    /// The engine's version.
    pub framework_version: String,
    /// Device, written as `cpu` or `cuda:N`.
    pub device: Device,
    /// Threads the engine was given.
    pub threads: usize,
    /// Whether subnormal floats were flushed to zero on the engine's threads.
    pub flush_denormals: bool,
    /// glibc malloc's settings in the run's environment ([`malloc_settings`]), which change
    /// the speed of an engine that allocates its tensors through malloc; empty where none was
    /// set (glibc's defaults) and in older records.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub malloc: BTreeMap<String, String>,
    /// Model spec name.
    pub model: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// The data set, as resolved (`fashion-mnist`, `fashion-mnist-subset`...).
    pub dataset: DatasetName,
    /// Where the data came from.
    pub data_source: String,
    /// Training examples.
    pub train_examples: usize,
    /// Test examples.
    pub test_examples: usize,
    /// Images of an image-folder data set skipped because they could not be read
    /// (`--skip-unreadable`).
    #[serde(default)]
    pub skipped_unreadable: usize,
    /// Seed of the data order and of the canonical initial weights.
    pub seed: u64,
    /// `canonical` (shared initial weights from the seed), `native` (the engine's own) or the
    /// weights file every backend started from.
    pub init: InitMode,
    /// The factors the run switched to the engine's own defaults; the ledger says what each
    /// topic used.
    #[serde(default)]
    pub native: BTreeSet<Factor>,
    /// Batch size.
    pub batch_size: usize,
    /// Optimizer and learning rate, as the run used them (a native run's Adam is the engine's).
    pub optimizer: OptimizerConfig,
    /// `git describe --always --dirty` of the checkout, when known.
    pub git_revision: String,
    /// Per-epoch figures.
    pub epochs: Vec<EpochRecord>,
    /// Test accuracy after the last finished epoch.
    #[serde(with = "crate::float")]
    pub test_accuracy: f64,
    /// Test loss after the last finished epoch.
    #[serde(with = "crate::float")]
    pub test_loss: f64,
    /// Macro-averaged F1 after the last finished epoch.
    #[serde(with = "crate::float")]
    pub macro_f1: f64,
    /// Weighted-averaged F1 after the last finished epoch.
    #[serde(with = "crate::float")]
    pub weighted_f1: f64,
    /// Precision, recall and F1 per class and averaged, after the last finished epoch.
    pub report: ClassificationReport,
    /// Rows are true classes, columns predicted ones.
    pub confusion_matrix: ConfusionMatrix,
    /// Class names, in index order.
    pub class_names: Vec<String>,
    /// Peak resident memory of the worker process (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Seconds from the start of model building to the end of the first training step:
    /// build, weight import, graph construction and the first step's warm-up.
    #[serde(with = "crate::float")]
    pub time_to_first_step_seconds: f64,
    /// Median of the epochs' training seconds (robust to a slow first epoch).
    #[serde(with = "crate::float")]
    pub median_epoch_seconds: f64,
    /// The fairness ledger: the engine's own defaults, topic by topic, and what parallax does.
    pub ledger: Ledger,
    /// The model's FLOPs, counted from its spec (`crate::flops`); absent in older records.
    #[serde(default)]
    pub flops: Option<FlopCount>,
    /// The matrix-product peak, in the run's precision, measured through this run's engine
    /// before training when the request asked for it ([`crate::peak`]); the report divides
    /// achieved GFLOP/s by the best of a comparison's peaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matmul_peak: Option<MatmulPeak>,
    /// The model's memory, estimated from its spec before anything was allocated
    /// ([`crate::memory`]); absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_estimate: Option<MemoryEstimate>,
    /// The machine the run executed on, when its command named it (a cluster's tasks do; a
    /// local comparison's summary describes its one machine instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// The precision its layers computed in (f32 in records older than the axis).
    #[serde(default)]
    pub precision: Precision,
    /// Whether its framework compiled the step (off in records older than the axis).
    #[serde(default)]
    pub compile: Compile,
    /// For a bf16 run, the CPU's bf16 units; `emulated` means its speed says nothing about
    /// bf16 hardware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16_units: Option<Bf16Units>,
    /// What the engine does with this run's precision that a reader of its speed should know
    /// (an engine whose bf16 matrix product converts to f32, say), from
    /// [`crate::BackendInfo::precision_note`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision_note: Option<String>,
    /// Each layer's FLOPs and the bytes it moves in one training step, then the optimizer's,
    /// counted from the spec ([`crate::roofline`]); empty in older records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_costs: Vec<LayerCost>,
    /// The memory bandwidth a stream copy reached, measured with the peak
    /// ([`crate::roofline::measure_bandwidth`]): the roofline's other ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bandwidth: Option<MemoryBandwidth>,
    /// Each layer's forward and backward pass timed on its own after training, in the spec's
    /// order ([`crate::Net::layer_times`]), when the request measured the peak and the engine
    /// can run its layers one at a time; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_times: Vec<LayerTime>,
    /// Each layer's time inside training steps on the same batch, as the engine's own profiler
    /// attributes it ([`crate::Net::layer_profile`]), when the request measured the peak and
    /// the adapter reads a profiler; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_profile: Option<LayerProfile>,
}

/// glibc malloc's settings in this process's environment: its `MALLOC_*` variables and
/// `GLIBC_TUNABLES`, read when the process started. A training step allocates and frees the same
/// large activations every step, and whether malloc keeps them or returns them to the kernel
/// moves an epoch's seconds by a fifth or more, so a record says which it ran with.
pub fn malloc_settings() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
        .filter(|(name, _)| name.starts_with("MALLOC_") || name == "GLIBC_TUNABLES")
        .map(|(name, value)| (name, value.to_string_lossy().into_owned()))
        .collect()
}

/// The machine a run executed on, as a cluster scheduler placed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's name, as the scheduler calls it.
    pub name: String,
    /// What kind of machine it is: its CPU model, and its GPU's for a CUDA run. Speed is only
    /// compared between runs on the same kind.
    pub kind: String,
    /// Whether the run had the node to itself; runs that shared one disturbed each other's
    /// timings, so they get no speed verdicts.
    pub exclusive: bool,
}

impl Node {
    /// `name`, with this machine's CPU model (from `/proc/cpuinfo`) as its kind.
    pub fn here(name: impl Into<String>, exclusive: bool) -> Self {
        let kind = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("model name"))
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".to_string());
        Node {
            name: name.into(),
            kind,
            exclusive,
        }
    }
}

impl RunRecord {
    /// The run's precision and compilation.
    pub fn execution(&self) -> Execution {
        Execution {
            precision: self.precision,
            compile: self.compile,
        }
    }

    /// The GFLOP/s an epoch achieved: its training FLOPs (forward and backward per example,
    /// the update per step) over its training seconds; `None` without a FLOP count.
    pub fn achieved_gflops(&self, epoch: &EpochRecord) -> Option<f64> {
        let flops = self.flops?;
        let examples = self.train_examples as u64;
        let steps = examples.div_ceil(self.batch_size.max(1) as u64);
        (epoch.seconds > 0.0).then(|| flops.training(examples, steps) as f64 / epoch.seconds / 1e9)
    }

    /// Writes the record as pretty JSON, through a temporary file so a reader never sees half of it.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json_atomically(path, self)
    }

    /// Reads a record of this layout or an older one (migrated to this one).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::io(path, error))?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|error| format_error(path, error.to_string()))?;
        Self::migrate(&mut value, path)?;
        serde_json::from_value(value).map_err(|error| format_error(path, error.to_string()))
    }

    /// Turns the JSON of a record of any version into this version's, in place; `path` names
    /// the file that holds it in the error (a record inside a comparison's summary, too).
    pub fn migrate(value: &mut serde_json::Value, path: &Path) -> Result<()> {
        match value
            .get("record_version")
            .and_then(serde_json::Value::as_u64)
        {
            Some(1) => {
                migrate_v1(value);
                migrate_v2(value).map_err(|message| format_error(path, message))
            }
            Some(2) => migrate_v2(value).map_err(|message| format_error(path, message)),
            Some(version) if version == u64::from(RECORD_VERSION) => Ok(()),
            Some(version) => Err(format_error(
                path,
                format!(
                    "record version {version} is newer than this parallax reads ({RECORD_VERSION}); update parallax"
                ),
            )),
            None => Err(format_error(
                path,
                "not a run record: no record_version".into(),
            )),
        }
    }
}

/// An [`Error::Format`] for the record in `path`.
fn format_error(path: &Path, message: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// Turns a version-2 record into a version-3 one. The text of `device` and `dataset` stays as
/// it was, since version 2 wrote it from the same types; a value neither names (a record
/// written by hand, or by a build that knew another data set) fails here, with the field and
/// the value, rather than in the middle of a comparison.
fn migrate_v2(value: &mut serde_json::Value) -> Result<(), String> {
    let Some(object) = value.as_object_mut() else {
        return Err("not a run record: not a JSON object".into());
    };
    let text = |key: &str| {
        object
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("a version-2 record without a `{key}`"))
    };
    let device = text("device")?;
    device
        .parse::<Device>()
        .map_err(|error| format!("`device` of a version-2 record: {error}"))?;
    let dataset = text("dataset")?;
    dataset
        .parse::<DatasetName>()
        .map_err(|error| format!("`dataset` of a version-2 record: {error}"))?;
    object.insert("record_version".into(), RECORD_VERSION.into());
    Ok(())
}

/// Turns a version-1 record into a version-2 one: a finished run (version 1 wrote records only
/// then), an identity without a configuration digest (`v1`), `init` as it was, and the
/// free-form `engine_defaults` filed under the ledger's topics.
fn migrate_v1(value: &mut serde_json::Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    let text = |object: &serde_json::Map<String, serde_json::Value>, key: &str| {
        object
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let run = RunId {
        model: text(object, "model"),
        backend: text(object, "backend"),
        seed: object
            .get("seed")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_default(),
        configuration: "v1".into(),
    };
    let mut ledger = Ledger::default();
    if let Some(defaults) = object
        .remove("engine_defaults")
        .and_then(|defaults| defaults.as_object().cloned())
    {
        for (key, entry) in defaults {
            let topic = match key.as_str() {
                "init" => Topic::Initialisation,
                "adam" => Topic::OptimizerEpsilon,
                "sgd_momentum" => Topic::OptimizerFormulation,
                "batch_norm" => Topic::BatchNormRunningVariance,
                "padding" => Topic::Padding,
                "layout" => Topic::Layout,
                "denormals" => Topic::Subnormals,
                "loss" => Topic::Loss,
                // threads, omp_wait_policy and omp_wait_policy_in_effect
                _ => Topic::Threads,
            };
            let entry = entry.as_str().unwrap_or_default().to_string();
            let joined = match ledger.get(topic) {
                Some(earlier) => format!("{earlier}; {entry}"),
                None => entry,
            };
            ledger.insert(topic, joined);
        }
    }
    object.insert("record_version".into(), 2.into());
    object.insert("status".into(), "complete".into());
    object.insert("error".into(), serde_json::Value::Null);
    object.insert("run".into(), serde_json::to_value(run).unwrap_or_default());
    object.insert(
        "ledger".into(),
        serde_json::to_value(ledger).unwrap_or_default(),
    );
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
        /// Images skipped because they could not be read (`--skip-unreadable`).
        #[serde(default)]
        skipped_unreadable: usize,
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
        #[serde(with = "crate::float::f32")]
        loss: f32,
    },
    /// An epoch finished and was evaluated.
    Epoch(EpochRecord),
}

/// How one engine did on the square f32 matrix product ([`crate::peak::measure`]), as records
/// carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatmulPeak {
    /// The backend that ran it, as in `--backends`.
    pub backend: String,
    /// The operands' side.
    pub size: usize,
    /// Timed repetitions.
    pub repeats: usize,
    /// The fastest repetition's seconds.
    #[serde(with = "crate::float")]
    pub best_seconds: f64,
    /// The median repetition's seconds.
    #[serde(with = "crate::float")]
    pub median_seconds: f64,
    /// GFLOP/s of the fastest repetition: the peak.
    #[serde(with = "crate::float")]
    pub gflops: f64,
    /// The precision of the operands the product multiplied (f32 in records older than bf16
    /// peaks).
    #[serde(default)]
    pub precision: Precision,
}

impl MatmulPeak {
    /// The share of this peak that `achieved_gflops` is.
    pub fn utilisation(&self, achieved_gflops: f64) -> f64 {
        achieved_gflops / self.gflops
    }
}

/// Serialises `value` as pretty JSON to `path` via a sibling temporary file and a rename.
pub fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomically(path, &pretty_json(path, value)?)
}

/// `value` as pretty JSON with a final newline, the text every document here is written as.
fn pretty_json<T: Serialize>(path: &Path, value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map(|text| text + "\n")
        .map_err(|error| Error::Format {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
}

/// Writes `text` to `path` via a sibling temporary file and a rename, so that a reader never
/// sees half of it.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| Error::io(parent, error))?;
    }
    let temporary = path.with_extension("json.partial");
    std::fs::write(&temporary, text).map_err(|error| Error::io(&temporary, error))?;
    std::fs::rename(&temporary, path).map_err(|error| Error::io(path, error))
}

/// The hex SHA-256 of a document's text.
fn text_digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_modes_parse_and_print_alike() {
        for text in ["canonical", "native", "weights/resnet50.safetensors"] {
            assert_eq!(text.parse::<InitMode>().unwrap().to_string(), text);
        }
        assert!("glorot".parse::<InitMode>().is_err());
    }

    #[test]
    fn a_record_holding_nan_and_infinities_reads_back_as_written() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/records");
        let mut record = RunRecord::load(&fixtures.join("v1-tch-mlp.json")).unwrap();
        record.epochs[0].train_loss = f64::NAN;
        record.epochs[0].samples_per_second = f64::INFINITY;
        record.test_loss = f64::NEG_INFINITY;
        record.median_epoch_seconds = f64::NAN;
        record.report.macro_avg.f1 = f64::NAN;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        record.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""train_loss": "NaN""#), "{text}");
        let back = RunRecord::load(&path).unwrap();
        assert!(back.epochs[0].train_loss.is_nan() && back.median_epoch_seconds.is_nan());
        assert_eq!(back.epochs[0].samples_per_second, f64::INFINITY);
        assert_eq!(back.test_loss, f64::NEG_INFINITY);
        assert!(back.report.macro_avg.f1.is_nan());
        // Everything else is unchanged: the two records write the same text.
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&record).unwrap()
        );
    }

    #[test]
    fn a_worker_reads_only_the_request_its_command_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("request.json");
        let mut request = RunRequest {
            backend: "burn".into(),
            device: Device::Cpu,
            threads: 1,
            flush_denormals: true,
            model: "mlp".parse().unwrap(),
            data: DataRequest::builtin(
                crate::data::builtin::BuiltinDataset::FashionMnistSubset,
                "cache".into(),
                "fixtures".into(),
            ),
            epochs: 1,
            batch_size: 64,
            optimizer: "adam"
                .parse::<crate::optim::OptimizerName>()
                .unwrap()
                .with_lr(1e-3)
                .unwrap(),
            seed: 1,
            init: InitMode::Canonical,
            native: BTreeSet::new(),
            save_weights: false,
            measure_peak: false,
            precision: Default::default(),
            compile: Default::default(),
            git_revision: "test".into(),
        };
        let digest = request.save(&path).unwrap();
        assert_eq!(RunRequest::load(&path, Some(&digest)).unwrap(), request);
        // A second command writes the same path with its own seed.
        request.seed += 1;
        request.save(&path).unwrap();
        let error = RunRequest::load(&path, Some(&digest))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("changed after its command wrote it"),
            "{error}"
        );
        assert_eq!(RunRequest::load(&path, None).unwrap().seed, request.seed);
    }

    #[test]
    fn a_record_written_with_null_for_nan_still_reads() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/records");
        let record = RunRecord::load(&fixtures.join("v1-tch-mlp.json")).unwrap();
        let mut value = serde_json::to_value(&record).unwrap();
        value["epochs"][0]["train_loss"] = serde_json::Value::Null;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        std::fs::write(&path, value.to_string()).unwrap();
        assert!(
            RunRecord::load(&path).unwrap().epochs[0]
                .train_loss
                .is_nan()
        );
    }

    #[test]
    fn a_version_2_record_reads_as_version_3_and_names_a_value_it_cannot_read() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/records");
        let record = RunRecord::load(&fixtures.join("v1-tch-mlp.json")).unwrap();
        assert_eq!(record.record_version, RECORD_VERSION);
        let mut value = serde_json::to_value(&record).unwrap();
        value["record_version"] = 2.into();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        std::fs::write(&path, value.to_string()).unwrap();
        assert_eq!(RunRecord::load(&path).unwrap(), record);
        for (field, text) in [("dataset", "no-such-set"), ("device", "tpu")] {
            let mut bad = value.clone();
            bad[field] = text.into();
            std::fs::write(&path, bad.to_string()).unwrap();
            let error = RunRecord::load(&path).unwrap_err().to_string();
            assert!(
                error.contains(&format!("`{field}` of a version-2 record")) && error.contains(text),
                "{error}"
            );
        }
    }
}

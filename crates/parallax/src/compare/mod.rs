//! A comparison (`cargo xtask compare`): trains every requested backend in its own worker
//! process, on the same spec, data order and initial weights, and writes the records, the
//! summary and the report. [`plan`] lays the runs out without building or writing anything;
//! [`run`] runs them, here or as a Slurm job array.
//!
//! Steps: check the flags (unknown backends, models and data fail here, before any build; so
//! does a CUDA device this machine lacks), provision the native libraries the backends link,
//! build one worker per backend, run one worker per run with live progress, write each record
//! as soon as its run ends (the worker rewrites it after every epoch), and finish with the
//! report. A backend that fails is reported with its error; the others still run.

mod axes;
mod plan;
mod repeat;
mod slurm;

pub use plan::{PlannedRun, Role, Seeds};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use indicatif::MultiProgress;
use parallax_core::data::builtin::{BuiltinDataset, in_ci};
use parallax_core::data::{DataRequest, DatasetName};
use parallax_core::layout::{Layout, Manifest};
use parallax_core::record::{InitMode, RunRecord, RunRequest};
use parallax_core::spec::{ModelSource, ModelSpec};
use parallax_core::stats::attribution::{self, Configuration};
use parallax_core::stats::comparison::{self, Margins};
use parallax_core::{Compile, DefaultsMode, Device, Execution, Factor, OptimizerName, Precision};
use parallax_registry::BackendEntry;

use crate::error::{Error, Result};
use crate::output_lock::OutputLock;
use crate::report::{self, Environment, Failure, Skipped, Summary, TaggedRecord, html};
use crate::workers::{self, Job};
use crate::workspace::repo_root;
use parallax_provision as provision;
use plan::{AttributePair, attribution_plan};

/// The seeds of a comparison that names none: enough for verdicts over seeds (3 is the least).
pub const DEFAULT_SEEDS: u64 = 5;

/// The flags of a comparison (`cargo xtask compare`): a downstream crate parses them with clap,
/// or fills them in from [`Args::default`].
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Backends to train, comma-separated: burn, tch, burn-tch, tf, pytorch, keras,
    /// keras-torch. By default burn, tch, tf, pytorch, keras and keras-torch, where a native
    /// library or the Python frameworks that cannot be provisioned (offline, no pip) leave
    /// their backends out with the reason; backends named here that fail make the command fail.
    #[arg(long, value_delimiter = ',', value_parser = parallax_registry::find)]
    pub backends: Option<Vec<&'static BackendEntry>>,
    /// A preset (mlp, cnn, resnet18, resnet50) or a .json/.toml spec file; a comma-separated
    /// list compares each model on its own, in OUT/<model>/, in one matrix.
    #[arg(long, default_value = "mlp", value_delimiter = ',')]
    pub model: Vec<ModelSource>,
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
    /// Seed of the data order and the shared initial weights, for a single-seed comparison.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Seeds: a count N (seeds 1 to N) or a comma-separated list. Every backend runs once per
    /// seed, from that seed's weights and data order; 3 or more give verdicts. Without
    /// `--seed` or `--seeds`, 5, so that a first comparison ends with verdicts.
    #[arg(long)]
    pub seeds: Option<Seeds>,
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
    /// controlled: the same initial weights, optimizer formulation and ε, and PyTorch's
    /// batch-norm conventions on every engine; native: each engine as its framework's users get
    /// it (its own initialisation, Adam ε and formulation, batch-norm momentum, ε and
    /// running-variance estimator).
    #[arg(long, default_value = "controlled")]
    pub defaults: DefaultsMode,
    /// Start every backend from these weights (safetensors with canonical names, Keras's HDF5
    /// weights or a PyTorch state dict).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Attribute the gap between two engines A,B to the defaults that cause it: both
    /// controlled, B with each factor native in turn, and both native, over the same seeds.
    #[arg(long, value_delimiter = ',', num_args = 1, value_parser = parallax_registry::find, conflicts_with_all = ["backends", "defaults", "repeat"])]
    pub attribute: Vec<&'static BackendEntry>,
    /// Report, for each run, the training seconds and epochs at which its test accuracy first
    /// reaches this fraction (e.g. 0.85).
    #[arg(long)]
    pub target_accuracy: Option<f64>,
    /// Run the first seed twice per backend and report whether each engine reproduces itself
    /// bit for bit (losses and final weights).
    #[arg(long)]
    pub repeat: bool,
    /// Equivalence margin of test accuracy, percentage points.
    #[arg(long, default_value_t = 0.5)]
    pub margin_accuracy: f64,
    /// Equivalence margin of macro and weighted F1, percentage points.
    #[arg(long, default_value_t = 1.0)]
    pub margin_f1: f64,
    /// Equivalence margin of seconds per epoch and time to accuracy, percent.
    #[arg(long, default_value_t = 5.0)]
    pub margin_time: f64,
    /// Equivalence margin of peak memory, percent.
    #[arg(long, default_value_t = 5.0)]
    pub margin_memory: f64,
    /// Equivalence margin of time to first step, percent.
    #[arg(long, default_value_t = 10.0)]
    pub margin_first_step: f64,
    /// Prebuilt workers, used instead of building one per backend: a `parallax-runner` with
    /// every selected backend's feature (the tests reuse their build this way; its peak memory
    /// then includes every engine it links), or a directory holding `parallax-runner-<backend>`
    /// for each, as a comparison builds them into target/release.
    #[arg(long)]
    pub worker: Option<PathBuf>,
    /// Write each run's trained weights to OUT/weights/ as safetensors.
    #[arg(long)]
    pub save_weights: bool,
    /// Train on the first N examples only (quick runs).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Skip the images of an image-folder data set that cannot be read, rather than fail; the
    /// records count them.
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Precisions, comma-separated: f32 (every engine's default) or bf16 (layers in bfloat16
    /// from f32 master weights: autocast, mixed_bfloat16). A run axis like --model: f32,bf16
    /// compares each precision on its own, in OUT/<precision>/, over the same seeds, and gives
    /// verdicts between them per backend. A backend without bf16 is skipped for it, with the
    /// reason.
    #[arg(long, default_value = "f32", value_delimiter = ',')]
    pub precision: Vec<Precision>,
    /// Whether each framework compiles its training step: off (each framework's CPU default)
    /// or on (XLA for TensorFlow and Keras, torch.compile for PyTorch and Keras on torch). A
    /// run axis like --precision: off,on compares both, in OUT/compile-off/ and
    /// OUT/compile-on/.
    #[arg(long, default_value = "off", value_delimiter = ',')]
    pub compile: Vec<Compile>,
    /// Output directory.
    #[arg(long, default_value = "out/compare")]
    pub out: PathBuf,
    /// Run the matrix (backends × models × seeds) as one Slurm job array, one task per run,
    /// from this machine (a login node): the output directory and the built workers must be
    /// on a file system that the compute nodes share.
    #[arg(long)]
    pub slurm: bool,
    /// Arguments for `sbatch` (partition, time limit, account), split as a shell would:
    /// `--slurm-args "--partition=gpu --time=2:00:00"`.
    #[arg(
        long,
        requires = "slurm",
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub slurm_args: Option<String>,
    /// Submit the job array, print its id and how to follow and merge it later, and return.
    #[arg(long, requires = "slurm")]
    pub no_wait: bool,
    /// Let tasks share their nodes (more runs at once) instead of each asking for its node
    /// exclusively; runs that shared a node get no speed verdicts.
    #[arg(long, requires = "slurm")]
    pub shared: bool,
    /// Follow and merge the Slurm matrix of an earlier `compare --slurm --out DIR`, and
    /// resubmit every run whose record is not complete and that is no longer queued. The
    /// matrix's own flags apply; `--slurm-args` and `--no-wait` may be given again.
    #[arg(long, requires = "slurm", value_name = "DIR")]
    pub resume: Option<PathBuf>,
}

/// The flags on a command line of their own: what a Slurm matrix re-reads for `--resume`, and
/// where [`Args::default`] takes the defaults from.
#[derive(clap::Parser)]
#[command(name = "compare")]
struct Flags {
    #[command(flatten)]
    args: Args,
}

impl Default for Args {
    /// The flags' defaults, as `cargo xtask compare` with no flags has them.
    fn default() -> Self {
        use clap::Parser;
        Flags::try_parse_from(["compare"])
            .map(|flags| flags.args)
            .expect("every flag of compare has a default")
    }
}

impl Args {
    /// The one model of a comparison; [`run`] splits a list of models into one comparison each.
    fn model(&self) -> &ModelSource {
        &self.model[0]
    }

    /// The one execution (precision and compilation) of a comparison.
    fn execution(&self) -> Execution {
        Execution {
            precision: self.precision[0],
            compile: self.compile[0],
        }
    }

    /// One comparison per model, precision and compilation: these flags with one value of
    /// each, into OUT/<model>/<precision>/compile-<off|on>/, each part only where its flag
    /// lists several values.
    fn per_comparison(&self) -> Vec<Args> {
        let mut each = Vec::new();
        for model in &self.model {
            for &precision in &self.precision {
                for &compile in &self.compile {
                    let mut out = self.out.clone();
                    if self.model.len() > 1 {
                        out.push(model.key());
                    }
                    if self.precision.len() > 1 {
                        out.push(precision.to_string());
                    }
                    if self.compile.len() > 1 {
                        out.push(format!("compile-{compile}"));
                    }
                    each.push(Args {
                        model: vec![model.clone()],
                        precision: vec![precision],
                        compile: vec![compile],
                        out,
                        ..self.clone()
                    });
                }
            }
        }
        each
    }

    /// Whether a run axis (precision, compilation) lists several values.
    fn varies_execution(&self) -> bool {
        self.precision.len() > 1 || self.compile.len() > 1
    }
}

/// The data set a comparison trains on. Without `--data`, a missing full Fashion-MNIST falls
/// back to the bundled subset, so that the default command works offline with nothing
/// installed; CI must not fall back.
fn dataset(args: &Args, cache: &Path, fixtures: &Path) -> Result<DatasetName> {
    let which = match args.dataset {
        DatasetName::ImageFolder => {
            let Some(root) = &args.data else {
                return Err(Error::Invalid(format!(
                    "--dataset image-folder needs --data DIR with one subfolder per class"
                )));
            };
            // The layout is checked now (an empty class folder, say), before any build, so
            // that it is one line rather than one failure per backend.
            parallax_core::data::check_image_folder(root)?;
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

/// What the flags ask for, checked: the backends, the seeds, the request of any backend and
/// seed, and the margins. Everything fails here, before any build.
#[derive(Debug)]
struct Checked {
    backends: Vec<&'static BackendEntry>,
    /// Whether the backends were named (`--backends`, `--attribute`) rather than the default
    /// set, whose backends are skipped when they cannot be made ready.
    named: bool,
    seeds: Vec<u64>,
    base: RunRequest,
    margins: Margins,
    /// The backends asked for that cannot run this comparison's precision or compilation.
    unsupported: Vec<Skipped>,
}

impl Checked {
    /// The request of `entry` on `seed` with `native` factors.
    fn request(
        &self,
        entry: &'static BackendEntry,
        seed: u64,
        native: BTreeSet<Factor>,
    ) -> RunRequest {
        RunRequest {
            backend: entry.name.to_string(),
            seed,
            native,
            ..self.base.clone()
        }
    }
}

/// Checks the flags and turns them into the comparison's settings, failing before any build.
fn check(args: &Args) -> Result<Checked> {
    let named = args.backends.is_some() || !args.attribute.is_empty();
    let backends = if args.attribute.is_empty() {
        args.backends
            .clone()
            .unwrap_or_else(parallax_registry::compared_by_default)
    } else {
        match args.attribute.as_slice() {
            [a, b] if a.name != b.name => vec![*a, *b],
            _ => {
                return Err(Error::Invalid(format!(
                    "--attribute takes two different backends A,B (for example tch,tf); known backends: {}",
                    parallax_registry::names()
                )));
            }
        }
    };
    if backends.is_empty() {
        return Err(Error::Invalid(format!(
            "--backends is empty; known backends: {}",
            parallax_registry::names()
        )));
    }
    for (flag, values) in [
        (
            "--precision",
            args.precision
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        ),
        (
            "--compile",
            args.compile.iter().map(ToString::to_string).collect(),
        ),
    ] {
        if let Some(twice) = values
            .iter()
            .find(|v| values.iter().filter(|w| w == v).count() > 1)
        {
            return Err(Error::Invalid(format!(
                "{flag} lists {twice} twice; list each value once"
            )));
        }
    }
    if args.slurm && args.varies_execution() {
        return Err(Error::Invalid(
            "--slurm runs one precision and one compilation per matrix; submit one matrix per value (--precision bf16 --out DIR/bf16, say)".into(),
        ));
    }
    // Backends without this comparison's precision or compilation are skipped for it, with the
    // registry's reason; a comparison left with none fails here, before any build.
    let execution = args.execution();
    let mut unsupported = Vec::new();
    let backends: Vec<&'static BackendEntry> = backends
        .into_iter()
        .filter(|entry| match lacks(entry, execution) {
            Some(reason) => {
                unsupported.push(Skipped {
                    backend: entry.name.to_string(),
                    reason,
                });
                false
            }
            None => true,
        })
        .collect();
    if backends.is_empty() || (!args.attribute.is_empty() && !unsupported.is_empty()) {
        let with = parallax_registry::BACKENDS
            .iter()
            .filter(|entry| lacks(entry, execution).is_none())
            .map(|entry| entry.name)
            .collect::<Vec<_>>();
        return Err(Error::Invalid(format!(
            "{}: {}; name a backend that has it ({}), or leave it out",
            unsupported[0].backend,
            unsupported[0].reason,
            if with.is_empty() {
                "none has".to_string()
            } else {
                with.join(", ")
            }
        )));
    }
    let optimizer = args.optimizer.with_lr(args.lr)?;
    if args.image_channels != 1 && args.image_channels != 3 {
        return Err(Error::Invalid("--image-channels must be 1 or 3".into()));
    }
    if let Some(target) = args.target_accuracy
        && !(target > 0.0 && target <= 1.0)
    {
        return Err(Error::Invalid(format!(
            "--target-accuracy is a fraction of the test set above 0 and at most 1 (e.g. 0.85), got {target}"
        )));
    }
    let margins = margins(args)?;
    // A spec file is parsed and resolved now, so that a spec whose layers don't fit is
    // reported before anything is built.
    if let ModelSource::File(path) = args.model() {
        let model = ModelSpec::from_file(path)?.resolve()?;
        parallax_core::memory::check_fits(&model, args.batch_size, &optimizer.kind)?;
    }
    let init = match &args.weights {
        Some(path) => InitMode::File(path.clone()),
        None => InitMode::Canonical,
    };
    if let InitMode::File(path) = &init {
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "initial weights {} do not exist; pass an existing weights file to --weights",
                path.display()
            )));
        }
        if args.defaults == DefaultsMode::Native || !args.attribute.is_empty() {
            return Err(Error::Invalid(format!(
                "--weights gives every engine the same start, which native defaults replace with each engine's own; leave out --weights or --defaults native/--attribute"
            )));
        }
    }
    if let Some(dir) = &args.data
        && !dir.is_dir()
    {
        return Err(Error::Invalid(format!(
            "data directory {} does not exist; pass an existing --data DIR",
            dir.display()
        )));
    }
    let cuda = matches!(args.device, Device::Cuda(_));
    if let Some(entry) = backends
        .iter()
        .find(|entry| entry.feature_for(cuda).is_none())
    {
        return Err(Error::Invalid(format!(
            "{} has no CUDA path; leave it out of --backends or use --device cpu",
            entry.name
        )));
    }
    // A cluster's GPUs are on its compute nodes, not on the machine that submits.
    if let Device::Cuda(index) = args.device
        && !args.slurm
    {
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
    let seeds = match (&args.seeds, args.seed) {
        (Some(Seeds(seeds)), _) => seeds.clone(),
        (None, Some(seed)) => vec![seed],
        (None, None) => (1..=DEFAULT_SEEDS).collect(),
    };
    let base = RunRequest {
        backend: String::new(),
        device: args.device,
        threads,
        flush_denormals: !args.keep_denormals,
        model: args.model().clone(),
        data: DataRequest {
            dataset,
            data_dir: args.data.clone(),
            cache_dir: cache,
            fixtures_dir: fixtures,
            image_size: args.image_size,
            image_channels: args.image_channels,
            limit_train: args.limit_train,
            skip_unreadable: args.skip_unreadable,
        },
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer,
        seed: seeds[0],
        init,
        native: BTreeSet::new(),
        save_weights: args.save_weights,
        // Every run measures the machine's matrix-product peak through its engine, so that
        // the report's utilisation divides by a peak of the same session.
        measure_peak: true,
        precision: args.execution().precision,
        compile: args.execution().compile,
        git_revision: git_revision(&root),
    };
    // The run protocol's own checks (epochs, batch size, --limit-train), as a worker would
    // make them, but before any build.
    parallax_core::run::validate(&base)?;
    Ok(Checked {
        backends,
        named,
        seeds,
        base,
        margins,
        unsupported,
    })
}

/// The equivalence margins of the flags, checked.
fn margins(args: &Args) -> Result<Margins> {
    let margins = Margins {
        accuracy_pp: args.margin_accuracy,
        f1_pp: args.margin_f1,
        time_percent: args.margin_time,
        memory_percent: args.margin_memory,
        first_step_percent: args.margin_first_step,
    };
    margins.check().map_err(Error::Invalid)?;
    Ok(margins)
}

/// Why `entry` cannot run `execution`, by the registry's row, or `None` when it can.
fn lacks(entry: &BackendEntry, execution: Execution) -> Option<String> {
    use parallax_registry::Support;
    if let (Precision::Bf16, Support::No(reason)) = (execution.precision, entry.bf16) {
        return Some(format!("it cannot run --precision bf16: {reason}"));
    }
    if let (Compile::On, Support::No(reason)) = (execution.compile, entry.compile) {
        return Some(format!("it cannot run --compile on: {reason}"));
    }
    None
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

/// The planned runs of these flags.
fn planned(args: &Args, checked: &Checked) -> Vec<PlannedRun> {
    let template = |entry, seed, native| checked.request(entry, seed, native);
    match args.attribute.as_slice() {
        [a, b] => attribution_plan(
            &AttributePair { a, b },
            &checked.seeds,
            &template,
            &args.out,
        ),
        _ => plan::plan(
            &checked.backends,
            &checked.seeds,
            &template,
            &args.defaults.factors(),
            &args.out,
            args.repeat,
        ),
    }
}

/// A comparison's plan: every run, in the order it runs, with its request and where its files
/// go.
#[derive(Debug)]
pub struct Plan {
    runs: Vec<PlannedRun>,
}

impl Plan {
    /// The runs, model after model, seed after seed (each seed's engines in a rotated order).
    pub fn runs(&self) -> &[PlannedRun] {
        &self.runs
    }
}

/// Plans the comparison of `args`: checks the flags as [`run`] does (unknown models, missing
/// data, a spec that does not fit fail here) and lays out every run of every model. Nothing is
/// built, provisioned or written.
pub fn plan(args: &Args) -> Result<Plan> {
    let mut runs = Vec::new();
    for one in args.per_comparison() {
        let checked = check(&one)?;
        runs.extend(planned(&one, &checked));
    }
    Ok(Plan { runs })
}

/// Runs the comparison: here, or as a Slurm job array with `--slurm`; a list of models, of
/// precisions or of compilations runs one comparison per combination, and then compares the
/// values of each run axis per backend ([`axes`]).
pub fn run(args: Args) -> Result<()> {
    if args.slurm {
        return slurm::run(args);
    }
    let each = args.per_comparison();
    if each.len() == 1 {
        return run_one(args);
    }
    // Every combination is checked before the first runs, so that a flag that fails for one
    // (bf16 where no named backend has it) fails at once, not after the others' minutes.
    for one in &each {
        check(one)?;
    }
    // One comparison per combination, each into its own directory; one that fails does not
    // stop the others.
    let mut failed = Vec::new();
    for one in each {
        let name = comparison_name(&args, &one);
        eprintln!("== {name}: comparing into {}", one.out.display());
        if let Err(error) = run_one(one) {
            if crate::interrupt::interrupted() {
                return Err(error);
            }
            eprintln!("error: {name}: {}", parallax_core::error::one_line(&error));
            failed.push(name);
        }
    }
    if args.varies_execution() {
        axes::write_all(&args)?;
    }
    if !failed.is_empty() {
        return Err(Error::Failed(format!(
            "{} of {} comparisons failed: {}",
            failed.len(),
            args.per_comparison().len(),
            failed.join(", ")
        )));
    }
    Ok(())
}

/// The name of one of the comparisons of `args` in progress lines: its model and execution,
/// each where `args` lists several.
fn comparison_name(args: &Args, one: &Args) -> String {
    let mut parts = Vec::new();
    if args.model.len() > 1 {
        parts.push(one.model().key());
    }
    if args.varies_execution() {
        parts.push(one.execution().label());
    }
    parts.join(" ")
}

/// What a comparison is ready to run: the planned runs whose backends have a worker, those
/// workers, the native libraries' environment, and the backends left out with their reasons.
struct Ready {
    runs: Vec<PlannedRun>,
    workers: std::collections::BTreeMap<&'static str, PathBuf>,
    native: Option<provision::NativeEnv>,
    skipped: Vec<Skipped>,
}

/// Provisions what the backends need and builds their workers. Without `--backends`, backends
/// whose library cannot be provisioned or whose worker cannot be built are left out with the
/// reason, and the others still compare.
fn make_ready(args: &Args, checked: &Checked) -> Result<Ready> {
    let runs = planned(args, checked);
    let cuda = matches!(args.device, Device::Cuda(_));
    let mut skipped: Vec<Skipped> = checked.unsupported.clone();
    // The native libraries' environment only when a selected backend links one; burn-only runs
    // need none, so they never provision libtorch.
    let mut native = if args.worker.is_some()
        || checked.backends.iter().any(|entry| entry.is_native())
    {
        match provision::ensure(cuda) {
            Ok(native) => Some(native),
            Err(error) if !checked.named && args.worker.is_none() => {
                let reason = format!(
                    "its native library could not be provisioned ({}); `cargo xtask setup` says more",
                    parallax_core::error::one_line(&error)
                );
                for entry in checked.backends.iter().filter(|entry| entry.is_native()) {
                    skipped.push(Skipped {
                        backend: entry.name.to_string(),
                        reason: reason.clone(),
                    });
                }
                None
            }
            Err(error) => return Err(error.into()),
        }
    } else {
        None
    };
    // The Python backends need the frameworks' environment as well; without it (offline, or no
    // shared libpython) they are skipped like a backend whose library is missing.
    let runs_frameworks = |entry: &&&'static BackendEntry| {
        entry
            .native
            .contains(&parallax_registry::NativeLibrary::Frameworks)
    };
    if let Some(native) = native.as_mut()
        && args.worker.is_none()
        && checked.backends.iter().any(|entry| runs_frameworks(&entry))
        && let Err(error) = provision::ensure_frameworks(native)
    {
        if checked.named {
            return Err(error.into());
        }
        for entry in checked.backends.iter().filter(runs_frameworks) {
            skipped.push(Skipped {
                backend: entry.name.to_string(),
                reason: format!(
                    "the Python frameworks could not be provisioned ({}); `cargo xtask setup` says more",
                    parallax_core::error::one_line(&error)
                ),
            });
        }
    }
    let ready: Vec<&'static BackendEntry> = checked
        .backends
        .iter()
        .copied()
        .filter(|entry| !skipped.iter().any(|s| s.backend == entry.name))
        .collect();
    let mut workers = std::collections::BTreeMap::new();
    for (name, built) in workers::build_each(&ready, cuda, native.as_ref(), args.worker.as_deref())
    {
        match built {
            Ok(path) => {
                workers.insert(name, path);
            }
            Err(error) if !checked.named => skipped.push(Skipped {
                backend: name.to_string(),
                reason: format!(
                    "its worker could not be built: {}",
                    parallax_core::error::one_line(&error)
                ),
            }),
            Err(error) => return Err(error),
        }
    }
    for skip in &skipped {
        eprintln!("skipping {}: {}", skip.backend, skip.reason);
    }
    let runs: Vec<PlannedRun> = runs
        .into_iter()
        .filter(|run| workers.contains_key(run.entry.name))
        .collect();
    if runs.is_empty() {
        return Err(Error::Failed(format!(
            "no backend could be made ready, so nothing was compared"
        )));
    }
    Ok(Ready {
        runs,
        workers,
        native,
        skipped,
    })
}

/// Creates the output directory with its manifest, and removes any record left at one of the
/// runs' paths by an earlier comparison, which would be mistaken for this one's.
fn start_directory(layout: &Layout, runs: &[PlannedRun]) -> Result<()> {
    std::fs::create_dir_all(layout.root())
        .map_err(|source| Error::io("creating", layout.root(), source))?;
    Manifest::new(
        layout,
        crate::output_lock::this_command(),
        runs.iter().map(|run| (&run.layout, &run.request)),
    )
    .save(layout)?;
    for run in runs {
        let stale = run.layout.record(&run.request.id());
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|source| Error::io("removing", &stale, source))?;
        }
    }
    Ok(())
}

/// Files one run's outcome in the summary: its record (a failed run may have left its
/// finished epochs) under its role, and its error as a failure.
fn file_outcome(
    summary: &mut Summary,
    run: &PlannedRun,
    record: Option<RunRecord>,
    error: Option<String>,
) {
    if let Some(error) = error {
        summary.failures.push(Failure {
            backend: run.entry.name.to_string(),
            seed: Some(run.request.seed),
            configuration: configuration_key(run.role),
            error,
        });
    }
    if let Some(record) = record {
        match run.role {
            Role::Main => summary.records.push(record),
            Role::Attribution(_) | Role::Repeat => summary.other_runs.push(TaggedRecord {
                configuration: configuration_key(run.role).unwrap_or_default(),
                record,
            }),
        }
    }
}

/// Runs one model's comparison here, run after run.
fn run_one(args: Args) -> Result<()> {
    let started = Instant::now();
    let checked = check(&args)?;
    // Taken before the workers are built, so that a second command into this directory fails
    // at once rather than after minutes of building.
    let _lock = OutputLock::acquire(&args.out)?;
    crate::interrupt::install();
    let Ready {
        runs,
        workers,
        native,
        skipped,
    } = make_ready(&args, &checked)?;
    let layout = Layout::new(&args.out);
    start_directory(&layout, &runs)?;
    let progress = MultiProgress::new();
    let mut summary = Summary {
        skipped,
        environment: Some(Environment::of_this_machine()),
        ..Summary::default()
    };
    let mut ended = 0;
    for run in &runs {
        if crate::interrupt::interrupted() {
            break;
        }
        let id = run.request.id();
        let worker = workers
            .get(run.entry.name)
            .ok_or_else(|| Error::Build(format!("no worker was built for {}", run.entry.name)))?;
        let request_path = run.layout.request(&id);
        let request_sha256 = run.request.save(&request_path)?;
        let record_path = run.layout.record(&id);
        let label = run.label();
        let job = Job {
            entry: run.entry,
            worker,
            request: &request_path,
            request_sha256: Some(&request_sha256),
            record: &record_path,
            weights: &run.layout.weights(&id),
            label: &label,
        };
        let outcome = workers::run(&job, &progress, native.as_ref());
        let (record, error) = match outcome {
            Ok(record) => (Some(record), None),
            // A worker that failed or was killed may have left its finished epochs.
            Err(error) => (
                RunRecord::load(&record_path).ok(),
                Some(parallax_core::error::one_line(&error)),
            ),
        };
        if let Some(error) = &error {
            workers::say(&progress, format!("{label}: failed: {error}"));
        }
        file_outcome(&mut summary, run, record, error);
        // Each finished run is on disk before the next one starts.
        summary.save(&layout.summary())?;
        ended += 1;
    }
    conclude(&args, &checked, &runs, summary, started, ended)
}

/// Finishes a comparison whose runs have ended: the statistics, `summary.json`, `report.md`
/// and `report.html`, the terminal's table, and an error when runs failed or it was
/// interrupted after `ended` runs.
fn conclude(
    args: &Args,
    checked: &Checked,
    runs: &[PlannedRun],
    mut summary: Summary,
    started: Instant,
    ended: usize,
) -> Result<()> {
    let layout = Layout::new(&args.out);
    finish_summary(args, checked, runs, &mut summary);
    summary.wall_seconds = Some(started.elapsed().as_secs_f64());
    summary.command = Some(crate::output_lock::this_command());
    summary.save(&layout.summary())?;
    let setup = report::Setup::of_request(&checked.base);
    let markdown = report::markdown(&summary, &setup);
    std::fs::write(layout.report_markdown(), &markdown)
        .map_err(|source| Error::io("writing", layout.report_markdown(), source))?;
    let page = html::Page {
        title: html::title(&summary, &setup),
        sections: vec![html::Section {
            heading: None,
            summary: &summary,
            setup: &setup,
        }],
        // GradCAM output that cannot be read does not cost the comparison its report.
        gradcam: html::GradCamOutput::load(layout.root()).unwrap_or_else(|error| {
            eprintln!(
                "warning: {}; the report leaves GradCAM out",
                parallax_core::error::one_line(&error)
            );
            None
        }),
        unreadable: Vec::new(),
    };
    let report_html = html::write(layout.root(), &page)?;
    println!("{}", report::terminal(&summary));
    println!(
        "wrote {}, {} and {} in {:.1} min",
        layout.root().join("records").display(),
        layout.summary().display(),
        layout.report_markdown().display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    println!("report: {}", report_html.display());
    if crate::interrupt::interrupted() {
        return Err(crate::interrupt::Interrupted {
            finished: ended,
            planned: runs.len(),
            summary: layout.summary().display().to_string(),
        }
        .into());
    }
    if summary.records.is_empty() {
        return Err(Error::Failed(format!("every run of the comparison failed")));
    }
    if !summary.failures.is_empty() {
        return Err(Error::Failed(format!(
            "{} of {} runs failed: {}",
            summary.failures.len(),
            runs.len(),
            summary
                .failures
                .iter()
                .map(Failure::label)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// The configuration a run's role files it under in the summary, when it is not the main one.
fn configuration_key(role: Role) -> Option<String> {
    match role {
        Role::Main => None,
        Role::Attribution(configuration) => Some(configuration.key()),
        Role::Repeat => Some("repeat".into()),
    }
}

/// The statistics of the finished runs: the comparison over seeds, the attribution and the
/// repeats.
fn finish_summary(args: &Args, checked: &Checked, runs: &[PlannedRun], summary: &mut Summary) {
    let failed: Vec<(String, u64)> = summary
        .failures
        .iter()
        .filter(|failure| failure.configuration.is_none())
        .filter(|failure| {
            // A failure that left a record is counted through the record.
            !summary.records.iter().any(|record| {
                Some(record.seed) == failure.seed && record.backend == failure.backend
            })
        })
        .filter_map(|failure| Some((failure.backend.clone(), failure.seed?)))
        .collect();
    summary.comparison = Some(comparison::compare(
        &summary.records,
        &failed,
        &checked.margins,
        args.target_accuracy,
    ));
    if let [a, b] = args.attribute.as_slice() {
        let mut tagged: Vec<(Configuration, RunRecord)> = summary
            .records
            .iter()
            .map(|record| (Configuration::Controlled, record.clone()))
            .collect();
        for run in runs {
            if let Role::Attribution(configuration) = run.role
                && let Some(tagged_record) = summary.other_runs.iter().find(|other| {
                    other.configuration == configuration.key()
                        && other.record.run == run.request.id()
                })
            {
                tagged.push((configuration, tagged_record.record.clone()));
            }
        }
        summary.attribution = Some(attribution::attribute(
            a.name,
            b.name,
            &tagged,
            &checked.margins,
        ));
    }
    if args.repeat {
        let main = Layout::new(&args.out);
        let again = Layout::new(args.out.join("repeat"));
        summary.repeat = summary
            .other_runs
            .iter()
            .filter(|other| other.configuration == "repeat")
            .filter_map(|other| {
                let first = summary.records.iter().find(|record| {
                    record.backend == other.record.backend && record.seed == other.record.seed
                })?;
                Some(repeat::compare(first, &other.record, &main, &again))
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags of a quick comparison of `backends`, for the tests of this module and
    /// `slurm.rs`.
    pub(super) fn args(backends: &[&str]) -> Args {
        Args {
            backends: Some(
                backends
                    .iter()
                    .map(|name| parallax_registry::find(name).unwrap())
                    .collect(),
            ),
            model: vec!["mlp".parse().unwrap()],
            precision: vec![Precision::F32],
            compile: vec![Compile::Off],
            dataset: "fashion-mnist-subset".parse().unwrap(),
            data: None,
            image_size: 64,
            image_channels: 3,
            epochs: 1,
            batch_size: 64,
            optimizer: "adam".parse().unwrap(),
            lr: 1e-3,
            seed: Some(1),
            seeds: None,
            threads: Some(2),
            keep_denormals: false,
            device: Device::Cpu,
            defaults: DefaultsMode::Controlled,
            weights: None,
            attribute: Vec::new(),
            target_accuracy: None,
            repeat: false,
            margin_accuracy: 0.5,
            margin_f1: 1.0,
            margin_time: 5.0,
            margin_memory: 5.0,
            margin_first_step: 10.0,
            worker: None,
            save_weights: false,
            limit_train: None,
            skip_unreadable: false,
            out: std::env::temp_dir().join("parallax-compare-unit"),
            slurm: false,
            slurm_args: None,
            no_wait: false,
            shared: false,
            resume: None,
        }
    }

    #[test]
    fn the_default_flags_are_those_of_a_bare_command_and_plan_five_seeds_per_backend() {
        let defaults = Args::default();
        assert_eq!(defaults.epochs, 3);
        assert_eq!(defaults.out, PathBuf::from("out/compare"));
        let args = Args {
            backends: Some(vec![parallax_registry::find("burn").unwrap()]),
            dataset: "fashion-mnist-subset".parse().unwrap(),
            ..Args::default()
        };
        let plan = plan(&args).unwrap();
        let seeds: Vec<u64> = plan.runs().iter().map(|run| run.request.seed).collect();
        assert_eq!(seeds, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn without_seed_flags_a_comparison_runs_five_seeds() {
        let mut flags = args(&["burn"]);
        flags.seed = None;
        let checked = check(&flags).unwrap();
        assert_eq!(checked.seeds, [1, 2, 3, 4, 5]);
        flags.seed = Some(42);
        assert_eq!(check(&flags).unwrap().seeds, [42]);
    }

    #[test]
    fn flags_become_one_request_per_backend_and_seed_of_one_configuration() {
        let mut flags = args(&["burn", "tf"]);
        flags.seeds = Some("3".parse().unwrap());
        let checked = check(&flags).unwrap();
        let runs = planned(&flags, &checked);
        assert_eq!(runs.len(), 6);
        assert_eq!(
            runs[0].request.data.dataset.to_string(),
            "fashion-mnist-subset"
        );
        assert!(runs[0].request.flush_denormals);
        let order: Vec<(&str, u64)> = runs
            .iter()
            .map(|run| (run.entry.name, run.request.seed))
            .collect();
        assert_eq!(
            order,
            [
                ("burn", 1),
                ("tf", 1),
                ("tf", 2),
                ("burn", 2),
                ("burn", 3),
                ("tf", 3)
            ]
        );
        let configurations: BTreeSet<String> = runs
            .iter()
            .map(|run| run.request.id().configuration)
            .collect();
        assert_eq!(configurations.len(), 1);
        flags.backends = Some(Vec::new());
        assert!(check(&flags).is_err());
        flags.backends = None;
        let default = check(&flags).unwrap();
        assert!(!default.named);
        let names: Vec<&str> = default.backends.iter().map(|entry| entry.name).collect();
        assert_eq!(
            names,
            ["burn", "tch", "tf", "pytorch", "keras", "keras-torch"]
        );
    }

    #[test]
    fn a_list_of_models_becomes_one_comparison_per_model_in_its_own_directory() {
        let mut flags = args(&["burn"]);
        flags.model = vec!["mlp".parse().unwrap(), "cnn".parse().unwrap()];
        let each = flags.per_comparison();
        let outs: Vec<PathBuf> = each.iter().map(|one| one.out.clone()).collect();
        assert_eq!(outs, [flags.out.join("mlp"), flags.out.join("cnn")]);
        assert!(each.iter().all(|one| one.model.len() == 1));
        let configurations: BTreeSet<String> = each
            .iter()
            .map(|one| {
                let checked = check(one).unwrap();
                planned(one, &checked)[0].request.id().configuration
            })
            .collect();
        assert_eq!(
            configurations.len(),
            2,
            "each model is its own configuration"
        );
        // One model stays in OUT itself, as before lists.
        flags.model.truncate(1);
        assert_eq!(flags.per_comparison()[0].out, flags.out);
    }

    #[test]
    fn precisions_and_compilations_are_run_axes_each_value_a_comparison_of_its_own() {
        let mut flags = args(&["pytorch", "keras"]);
        flags.model = vec!["mlp".parse().unwrap(), "cnn".parse().unwrap()];
        flags.precision = vec![Precision::F32, Precision::Bf16];
        let each = flags.per_comparison();
        let outs: Vec<PathBuf> = each.iter().map(|one| one.out.clone()).collect();
        assert_eq!(
            outs,
            [
                flags.out.join("mlp/f32"),
                flags.out.join("mlp/bf16"),
                flags.out.join("cnn/f32"),
                flags.out.join("cnn/bf16")
            ]
        );
        let requests: Vec<RunRequest> = each[..2]
            .iter()
            .map(|one| planned(one, &check(one).unwrap())[0].request.clone())
            .collect();
        assert_eq!(requests[0].precision, Precision::F32);
        assert_eq!(requests[1].precision, Precision::Bf16);
        assert_ne!(
            requests[0].id().configuration,
            requests[1].id().configuration,
            "each precision is its own configuration"
        );
        // Not a framework default: --defaults native leaves the precision as asked.
        flags.defaults = DefaultsMode::Native;
        let native = &flags.per_comparison()[1];
        assert_eq!(
            planned(native, &check(native).unwrap())[0]
                .request
                .precision,
            Precision::Bf16
        );
        // Compilation nests inside precision.
        flags.compile = vec![Compile::Off, Compile::On];
        assert_eq!(
            flags.per_comparison()[3].out,
            flags.out.join("mlp/bf16/compile-on")
        );
        assert_eq!(
            comparison_name(&flags, &flags.per_comparison()[3]),
            "mlp bf16 compiled"
        );
    }

    /// A registry row without bf16, as a future engine's may be: every engine in the registry
    /// runs bf16 today, and the skip must still work.
    static WITHOUT_BF16: BackendEntry = BackendEntry {
        name: "f32-engine",
        bf16: parallax_registry::Support::No("its adapter computes in f32 only"),
        ..parallax_registry::BACKENDS[0]
    };

    #[test]
    fn a_backend_without_a_precision_is_skipped_for_it_and_one_without_any_fails_in_one_line() {
        let mut flags = args(&["pytorch"]);
        flags.backends = Some(vec![
            &WITHOUT_BF16,
            parallax_registry::find("pytorch").unwrap(),
        ]);
        flags.precision = vec![Precision::Bf16];
        let checked = check(&flags).unwrap();
        assert_eq!(
            checked
                .backends
                .iter()
                .map(|entry| entry.name)
                .collect::<Vec<_>>(),
            ["pytorch"]
        );
        assert_eq!(checked.unsupported[0].backend, "f32-engine");
        assert_eq!(
            checked.unsupported[0].reason,
            "it cannot run --precision bf16: its adapter computes in f32 only"
        );
        // Alone: nothing left to run.
        flags.backends = Some(vec![&WITHOUT_BF16]);
        let error = check(&flags).unwrap_err().to_string();
        assert!(
            error.starts_with("f32-engine: it cannot run --precision bf16: "),
            "{error}"
        );
        assert!(
            error.ends_with(
                "name a backend that has it (burn, tch, burn-tch, tf, pytorch, keras, keras-torch), or leave it out"
            ),
            "{error}"
        );
        assert!(!error.contains('\n'));
        // --compile on for tch.
        flags.backends = args(&["tch"]).backends;
        flags.precision = vec![Precision::F32];
        flags.compile = vec![Compile::On];
        let error = check(&flags).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "tch: it cannot run --compile on: libtorch's C++ API has no torch.compile"
            ),
            "{error}"
        );
        // A value listed twice, and a Slurm matrix of several values.
        flags.backends = args(&["pytorch"]).backends;
        flags.compile = vec![Compile::Off, Compile::Off];
        assert_eq!(
            check(&flags).unwrap_err().to_string(),
            "--compile lists off twice; list each value once"
        );
        flags.compile = vec![Compile::Off, Compile::On];
        flags.slurm = true;
        assert!(
            check(&flags)
                .unwrap_err()
                .to_string()
                .starts_with("--slurm runs one precision and one compilation per matrix")
        );
    }

    #[test]
    fn native_defaults_switch_every_factor_and_attribution_one_at_a_time() {
        let mut flags = args(&["burn", "tf"]);
        flags.defaults = DefaultsMode::Native;
        let checked = check(&flags).unwrap();
        assert!(
            planned(&flags, &checked)
                .iter()
                .all(|run| run.request.native.len() == Factor::ALL.len())
        );
        let mut flags = args(&["burn"]);
        flags.attribute = vec![
            parallax_registry::find("tch").unwrap(),
            parallax_registry::find("tf").unwrap(),
        ];
        flags.seeds = Some("2".parse().unwrap());
        let checked = check(&flags).unwrap();
        let runs = planned(&flags, &checked);
        // Per seed: A and B controlled, B with each factor, A and B native.
        assert_eq!(runs.len(), 2 * (2 + Factor::ALL.len() + 2));
        let one_factor = runs
            .iter()
            .filter(|run| run.request.native.len() == 1)
            .collect::<Vec<_>>();
        assert_eq!(one_factor.len(), 2 * Factor::ALL.len());
        assert!(one_factor.iter().all(|run| run.entry.name == "tf"));
        flags.attribute = vec![
            parallax_registry::find("tf").unwrap(),
            parallax_registry::find("tf").unwrap(),
        ];
        assert!(check(&flags).is_err());
    }

    #[test]
    fn an_image_folder_with_an_empty_class_is_refused_before_any_build() {
        let dir = tempfile::tempdir().unwrap();
        let cats = dir.path().join("cats");
        std::fs::create_dir_all(&cats).unwrap();
        std::fs::create_dir_all(dir.path().join("dogs")).unwrap();
        image::RgbImage::new(2, 2).save(cats.join("a.png")).unwrap();
        let mut flags = args(&["burn"]);
        flags.dataset = "image-folder".parse().unwrap();
        flags.data = Some(dir.path().to_path_buf());
        let error = check(&flags).unwrap_err().to_string();
        assert!(
            error.contains("dogs: class folder holds no PNG or JPEG files"),
            "{error}"
        );
    }

    #[test]
    fn a_lr_or_margin_that_is_not_positive_is_refused() {
        let mut bad = args(&["burn"]);
        bad.lr = 0.0;
        assert!(
            check(&bad)
                .unwrap_err()
                .to_string()
                .contains("learning rate")
        );
        let mut bad = args(&["burn"]);
        bad.margin_time = -1.0;
        assert!(
            check(&bad)
                .unwrap_err()
                .to_string()
                .contains("--margin-time")
        );
        let mut bad = args(&["burn"]);
        bad.limit_train = Some(0);
        assert!(
            check(&bad)
                .unwrap_err()
                .to_string()
                .contains("--limit-train 0 leaves nothing to train on")
        );
    }
}

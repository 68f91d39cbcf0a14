//! `cargo xtask bench --references`: parallax's tch and tf engines side by side with PyTorch's
//! own Python training loop and Keras 3's `model.fit`, in the same session, alternated.
//!
//! The references run in two virtual environments under `<cache>/references/`, one per
//! framework (as Keras's own benchmarks keep each framework apart), installed from the wheels
//! that `cargo xtask setup` downloaded: the same torch 2.9.0 as parallax's libtorch, the same
//! tensorflow-cpu 2.21.0 as its TensorFlow. The harnesses are `benches/references/*.py`.
//!
//! Each pair runs the engine, then its reference (A B A B …), on the same model, data (the
//! first `--limit-train` Fashion-MNIST training images), batch size and threads; each side's
//! last epoch counts, after a warm-up epoch. The ratio of a pair is engine ÷ reference; the
//! verdict is the median of the pairs' ratios with their range, because on this shared machine
//! one pair is noise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, bail};
use comfy_table::{Table, presets};
use parallax_core::data::builtin::{BuiltinDataset, DataLocator};
use parallax_core::record::{RunRecord, median};
use serde::{Deserialize, Serialize};

use crate::cargo::{cargo, repo_root};
use crate::provision::{self, NativeEnv};
use crate::workers::set_openmp_wait;

/// Flags of the reference comparison.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Pairs per engine and model.
    pub pairs: usize,
    /// Models (`mlp`, `cnn`).
    pub models: Vec<String>,
    /// Epochs per run; the last one counts.
    pub epochs: u32,
    /// Training images per epoch; by default all 60,000 for the mlp, whose epoch is short,
    /// and 12,800 (200 steps) for the cnn.
    pub limit_train: Option<usize>,
    /// Batch size.
    pub batch_size: usize,
    /// Threads per engine.
    pub threads: usize,
}

/// One reference framework: its virtual environment and its harness.
struct Reference {
    /// The engine it is compared with, as in `--backends`.
    engine: &'static str,
    /// Its name in tables.
    name: &'static str,
    /// The virtual environment's directory name.
    venv: &'static str,
    /// The pinned wheel it installs.
    wheel: &'static str,
    /// What the harnesses need besides the wheel and its dependencies.
    extra: &'static [&'static str],
    /// The harness under `benches/references/`.
    script: &'static str,
    /// A module import that proves the install works.
    check: &'static str,
}

const REFERENCES: [Reference; 2] = [
    Reference {
        engine: "tch",
        name: "PyTorch",
        venv: "torch",
        wheel: "torch",
        // The data loader reads the IDX files with numpy, which torch does not depend on.
        extra: &["numpy"],
        script: "pytorch_loop.py",
        check: "import torch",
    },
    Reference {
        engine: "tf",
        name: "Keras",
        venv: "keras",
        wheel: "tensorflow-cpu",
        extra: &[],
        script: "keras_fit.py",
        check: "import keras, tensorflow",
    },
];

/// What a harness prints.
#[derive(Debug, Deserialize)]
struct HarnessOutput {
    framework: String,
    #[serde(rename = "loop")]
    loop_: Option<String>,
    epochs: Vec<HarnessEpoch>,
}

#[derive(Debug, Deserialize)]
struct HarnessEpoch {
    seconds: f64,
}

/// One pair: the engine's and the reference's last-epoch seconds.
#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    /// Seconds of the engine's last epoch.
    pub engine_seconds: f64,
    /// Seconds of the reference's last epoch.
    pub reference_seconds: f64,
    /// engine ÷ reference.
    pub ratio: f64,
}

/// The pairs of one engine and model.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The model.
    pub model: String,
    /// parallax's engine.
    pub engine: String,
    /// The reference (`PyTorch`, `Keras`).
    pub reference: String,
    /// The reference's versions and loop, as its harness reported them.
    pub reference_framework: String,
    /// Every pair, in the order run.
    pub pairs: Vec<Pair>,
    /// The median of the pairs' ratios.
    pub median_ratio: f64,
    /// The smallest and largest ratio.
    pub range: [f64; 2],
}

impl Comparison {
    fn new(
        model: &str,
        engine: &str,
        (reference, reference_framework): (String, String),
        pairs: Vec<Pair>,
    ) -> Self {
        let ratios: Vec<f64> = pairs.iter().map(|pair| pair.ratio).collect();
        let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Comparison {
            model: model.into(),
            engine: engine.into(),
            reference,
            reference_framework,
            median_ratio: median(&ratios),
            range: [low, high],
            pairs,
        }
    }

    /// The verdict line: the median ratio and its range over the pairs.
    pub fn line(&self) -> String {
        format!(
            "{model}: {engine}/{reference} = {median:.2}× (median of {n} alternated pairs; range {low:.2}–{high:.2})",
            model = self.model,
            engine = self.engine,
            reference = self.reference,
            median = self.median_ratio,
            n = self.pairs.len(),
            low = self.range[0],
            high = self.range[1],
        )
    }
}

impl Settings {
    /// Training images per epoch of `model`.
    fn limit_for(&self, model: &str) -> usize {
        self.limit_train
            .unwrap_or(if model == "mlp" { 60_000 } else { 12_800 })
    }
}

/// Everything `references.json` holds.
#[derive(Debug, Serialize)]
struct ReferencesReport<'a> {
    pairs: usize,
    epochs: u32,
    limit_train: BTreeMap<String, usize>,
    batch_size: usize,
    threads: usize,
    comparisons: &'a [Comparison],
    profiles: &'a Profiles,
}

/// Runs the comparison and the profiles, and writes `out/references.md` and
/// `out/references.json`.
pub fn run(settings: &Settings, native: &NativeEnv, out: &Path) -> anyhow::Result<()> {
    if settings.pairs == 0 || settings.epochs == 0 || settings.limit_train == Some(0) {
        bail!("--pairs, the epochs and --limit-train must be at least 1");
    }
    let venvs = provision::cache_dir().join("references");
    let pythons: Vec<PathBuf> = REFERENCES
        .iter()
        .map(|reference| ensure_venv(&venvs, reference))
        .collect::<anyhow::Result<_>>()?;
    let data = DataLocator {
        explicit_dir: None,
        cache_dir: provision::cache_dir(),
        fixtures_dir: repo_root().join("fixtures"),
    }
    .locate(BuiltinDataset::FashionMnist)
    .context("the references train on full Fashion-MNIST (`cargo xtask data` fetches it)")?;
    let xtask = std::env::current_exe().context("cannot find xtask's own binary")?;

    let mut comparisons = Vec::new();
    for model in &settings.models {
        for (reference, python) in REFERENCES.iter().zip(&pythons) {
            let mut pairs = Vec::new();
            let mut framework = reference.name.to_string();
            for pair in 1..=settings.pairs {
                let dir = out
                    .join("references")
                    .join(model)
                    .join(format!("{}-pair-{pair}", reference.engine));
                let engine_seconds =
                    run_engine(&xtask, reference.engine, model, &data, settings, &dir)?;
                let harness = run_reference(python, reference, model, &data, settings, &dir)?;
                framework = match &harness.loop_ {
                    Some(loop_) => format!("{} ({loop_})", harness.framework),
                    None => harness.framework.clone(),
                };
                let reference_seconds = harness
                    .epochs
                    .last()
                    .map(|epoch| epoch.seconds)
                    .context("the reference harness reported no epoch")?;
                let ratio = engine_seconds / reference_seconds;
                println!(
                    "references: {model} pair {pair}/{}: {} {engine_seconds:.2} s, {} {reference_seconds:.2} s, ratio {ratio:.2}",
                    settings.pairs, reference.engine, reference.name
                );
                pairs.push(Pair {
                    engine_seconds,
                    reference_seconds,
                    ratio,
                });
            }
            comparisons.push(Comparison::new(
                model,
                reference.engine,
                (reference.name.to_string(), framework),
                pairs,
            ));
        }
    }

    std::fs::create_dir_all(out)?;
    let profiles = profiles(settings, native, &pythons[0], &data, out)?;
    let mut markdown = render(settings, &comparisons);
    markdown.push_str(&profiles.render());
    println!("\n{markdown}");
    let json = out.join("references.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&ReferencesReport {
            pairs: settings.pairs,
            epochs: settings.epochs,
            limit_train: settings
                .models
                .iter()
                .map(|model| (model.clone(), settings.limit_for(model)))
                .collect(),
            batch_size: settings.batch_size,
            threads: settings.threads,
            comparisons: &comparisons,
            profiles: &profiles,
        })?,
    )
    .with_context(|| format!("cannot write {}", json.display()))?;
    let md = out.join("references.md");
    std::fs::write(&md, &markdown).with_context(|| format!("cannot write {}", md.display()))?;
    println!("tables: {}\n        {}", md.display(), json.display());
    Ok(())
}

/// A cnn training step split into phases (median milliseconds), on PyTorch and on each of
/// parallax's engines that can split its step, with torch.profiler's busiest operators.
#[derive(Debug, Serialize, Deserialize)]
pub struct Profiles {
    /// The model profiled.
    pub model: String,
    /// Engine (`PyTorch`, `tch`, `burn-tch`, `burn`) to phase to median milliseconds.
    pub phases: BTreeMap<String, BTreeMap<String, f64>>,
    /// torch.profiler's table for PyTorch's step.
    pub pytorch_operators: String,
}

/// What `pytorch_phases.py` prints.
#[derive(Deserialize)]
struct PytorchPhases {
    phases: BTreeMap<String, f64>,
    profile: String,
}

impl Profiles {
    fn render(&self) -> String {
        let engines: Vec<&String> = self.phases.keys().collect();
        let mut table = Table::new();
        let mut header = vec!["phase (median ms)".to_string()];
        header.extend(engines.iter().map(|e| e.to_string()));
        table.load_style(presets::ASCII_MARKDOWN).set_header(header);
        for phase in [
            "input",
            "forward",
            "backward",
            "optimizer",
            "readback",
            "step",
        ] {
            let mut row = vec![phase.to_string()];
            row.extend(engines.iter().map(|engine| {
                self.phases[*engine]
                    .get(phase)
                    .map_or("—".into(), |ms| format!("{ms:.2}"))
            }));
            table.add_row(row);
        }
        format!(
            "\n## Where a {model} step goes\n\nOne training step of batch 64 split into phases, each engine's median over 100 steps after 10 warm-up steps (`benches/benches/step_phases.rs`, `benches/references/pytorch_phases.py`). TensorFlow runs a step as one graph and cannot be split.\n\n{table}\n\ntorch.profiler, PyTorch's step (20 steps):\n\n```text\n{ops}\n```\n",
            model = self.model,
            ops = self.pytorch_operators.trim_end()
        )
    }
}

/// Profiles the cnn's step on PyTorch and on parallax's engines that can split theirs.
fn profiles(
    settings: &Settings,
    native: &NativeEnv,
    torch_python: &Path,
    data: &Path,
    out: &Path,
) -> anyhow::Result<Profiles> {
    let model = "cnn";
    let script = repo_root().join("benches/references/pytorch_phases.py");
    let output = checked(
        Command::new(torch_python)
            .arg(&script)
            .args(["--model", model, "--data"])
            .arg(data)
            .args(["--threads", &settings.threads.to_string()])
            .env("GOMP_SPINCOUNT", "10000"),
        "profiling PyTorch's step (pytorch_phases.py)",
    )?;
    let pytorch: PytorchPhases = harness_result(&output, "pytorch_phases.py")?;

    let file = out.join("phases.json");
    let mut bench = cargo(
        &[
            "bench",
            "-p",
            "parallax-benches",
            "--features",
            "tch,burn-tch",
            "--bench",
            "step_phases",
        ],
        Some(native),
    );
    bench
        .env("PARALLAX_BENCH_PHASES", &file)
        .env("PARALLAX_BENCH_MODEL", model)
        .env("PARALLAX_BENCH_THREADS", settings.threads.to_string());
    set_openmp_wait(&mut bench);
    if !bench.status().context("running cargo bench")?.success() {
        bail!("the step-phases benchmark failed: see its output above");
    }
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("the step-phases benchmark wrote no {}", file.display()))?;
    let mut phases: BTreeMap<String, BTreeMap<String, f64>> =
        serde_json::from_str(&text).with_context(|| format!("{} is not phases", file.display()))?;
    phases.insert("PyTorch".into(), pytorch.phases);
    Ok(Profiles {
        model: model.into(),
        phases,
        pytorch_operators: pytorch.profile,
    })
}

/// The tables: each pair's seconds and ratio, then the verdict lines.
fn render(settings: &Settings, comparisons: &[Comparison]) -> String {
    let mut out = format!(
        "# parallax against PyTorch's and Keras's own loops\n\nEach pair runs parallax's engine, then the reference, on the first {} Fashion-MNIST training images, batch {}, {} thread(s), Adam 1e-3; each side's epoch {} counts (after the warm-up). Ratio = engine ÷ reference: below 1, parallax is faster.\n\n",
        settings
            .models
            .iter()
            .map(|model| format!("{} ({model})", settings.limit_for(model)))
            .collect::<Vec<_>>()
            .join(" or "),
        settings.batch_size,
        settings.threads,
        settings.epochs
    );
    for comparison in comparisons {
        let mut table = Table::new();
        table.load_style(presets::ASCII_MARKDOWN).set_header(vec![
            "pair".to_string(),
            format!("{} s", comparison.engine),
            format!("{} s", comparison.reference),
            "ratio".to_string(),
        ]);
        for (i, pair) in comparison.pairs.iter().enumerate() {
            table.add_row(vec![
                (i + 1).to_string(),
                format!("{:.3}", pair.engine_seconds),
                format!("{:.3}", pair.reference_seconds),
                format!("{:.3}", pair.ratio),
            ]);
        }
        out.push_str(&format!(
            "## {} {} / {}\n\n{}.\n\n{table}\n\n",
            comparison.model,
            comparison.engine,
            comparison.reference,
            comparison.reference_framework
        ));
    }
    out.push_str("## Verdicts\n\n");
    for comparison in comparisons {
        out.push_str(&format!("- {}\n", comparison.line()));
    }
    out
}

/// The virtual environment of `reference`, installed on first use; returns its Python.
fn ensure_venv(root: &Path, reference: &Reference) -> anyhow::Result<PathBuf> {
    let dir = root.join(reference.venv);
    let python = dir.join("bin/python");
    let (requirement, cached) = provision::pinned_wheel(reference.wheel)?;
    let marker = dir.join(".parallax-installed");
    let wanted = std::iter::once(requirement.as_str())
        .chain(reference.extra.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    if std::fs::read_to_string(&marker).is_ok_and(|text| text.trim() == wanted) {
        return Ok(python);
    }
    let start = Instant::now();
    println!(
        "references: installing {requirement} into {} (once; {})",
        dir.display(),
        if cached.is_some() {
            "the wheel from setup's cache, its dependencies from the package index"
        } else {
            "everything from the package index"
        }
    );
    // An environment from an earlier, interrupted or different install is completed by pip,
    // which keeps what is already there.
    if !python.is_file() {
        let interpreter = std::env::var_os("PARALLAX_PYTHON").unwrap_or_else(|| "python3".into());
        checked(
            Command::new(&interpreter).arg("-m").arg("venv").arg(&dir),
            "creating the virtual environment (Debian needs python3-venv)",
        )?;
    }
    // torch's wheel is built with CUDA: `import torch` loads libtorch_cuda.so, cuDNN, cuBLAS
    // and NCCL even on a CPU, so it comes with its nvidia dependencies (see docs/bench.md).
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    match &cached {
        Some(wheel) => pip.arg(wheel),
        None => pip.arg(&requirement),
    };
    pip.args(reference.extra);
    checked(&mut pip, &format!("installing {requirement} with pip"))?;
    checked(
        Command::new(&python).args(["-c", reference.check]),
        &format!("checking the install ({})", reference.check),
    )?;
    let size = directory_size(&dir);
    println!(
        "references: {requirement} installed in {:.0} s, {:.2} GB on disk",
        start.elapsed().as_secs_f64(),
        size as f64 / 1e9
    );
    std::fs::write(&marker, &wanted)?;
    Ok(python)
}

fn directory_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => directory_size(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |meta| meta.len()),
            _ => 0,
        })
        .sum()
}

/// Runs `command`, and on failure says `what` failed with the command's last output lines.
fn checked(command: &mut Command, what: &str) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", command.get_program()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed ({}): {}", output.status, tail.join(" | "));
    }
    Ok(output)
}

/// Runs parallax's `engine` through `cargo xtask compare` (its worker, its environment) and
/// returns its last epoch's seconds.
fn run_engine(
    xtask: &Path,
    engine: &str,
    model: &str,
    data: &Path,
    settings: &Settings,
    dir: &Path,
) -> anyhow::Result<f64> {
    let out = dir.join("parallax");
    let mut command = Command::new(xtask);
    command
        .arg("compare")
        .args(["--backends", engine, "--model", model])
        .args(["--dataset", "fashion-mnist", "--data"])
        .arg(data)
        .args(["--epochs", &settings.epochs.to_string()])
        .args(["--limit-train", &settings.limit_for(model).to_string()])
        .args(["--batch-size", &settings.batch_size.to_string()])
        .args(["--threads", &settings.threads.to_string()])
        .arg("--out")
        .arg(&out);
    checked(
        &mut command,
        &format!("cargo xtask compare --backends {engine}"),
    )?;
    let records = out.join("records").join(model).join(engine);
    let record = std::fs::read_dir(&records)
        .with_context(|| format!("compare wrote no record under {}", records.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "json"))
        .with_context(|| format!("compare wrote no record under {}", records.display()))?;
    let record = RunRecord::load(&record)?;
    record
        .epochs
        .last()
        .map(|epoch| epoch.seconds)
        .with_context(|| format!("{engine}'s record has no epoch"))
}

/// Runs `reference`'s harness and reads the JSON object it prints last.
fn run_reference(
    python: &Path,
    reference: &Reference,
    model: &str,
    data: &Path,
    settings: &Settings,
    dir: &Path,
) -> anyhow::Result<HarnessOutput> {
    let script = repo_root()
        .join("benches/references")
        .join(reference.script);
    let mut command = Command::new(python);
    command
        .arg(&script)
        .args(["--model", model, "--data"])
        .arg(data)
        .args(["--epochs", &settings.epochs.to_string()])
        .args(["--limit-train", &settings.limit_for(model).to_string()])
        .args(["--batch-size", &settings.batch_size.to_string()])
        .args(["--threads", &settings.threads.to_string()])
        // The same OpenMP spin as parallax's libtorch workers get.
        .env("GOMP_SPINCOUNT", "10000");
    let output = checked(
        &mut command,
        &format!("{} ({})", reference.name, reference.script),
    )?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{}.json", reference.venv)), &output.stdout)?;
    harness_result(&output, reference.script)
}

/// The JSON object a harness prints last (TensorFlow's and PyTorch's own logging may come
/// before it).
fn harness_result<T: serde::de::DeserializeOwned>(
    output: &Output,
    script: &str,
) -> anyhow::Result<T> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .with_context(|| format!("{script} printed no result"))?;
    serde_json::from_str(last).with_context(|| format!("{script} printed no JSON result"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_the_median_of_the_pairs_with_their_range() {
        let pair = |engine_seconds: f64, reference_seconds: f64| Pair {
            engine_seconds,
            reference_seconds,
            ratio: engine_seconds / reference_seconds,
        };
        let comparison = Comparison::new(
            "cnn",
            "tch",
            ("PyTorch".into(), "PyTorch 2.9.0 (eager loop)".into()),
            vec![
                pair(1.13, 1.0),
                pair(0.85, 1.0),
                pair(0.9, 1.0),
                pair(0.8, 1.0),
                pair(1.0, 1.0),
            ],
        );
        assert!((comparison.median_ratio - 0.9).abs() < 1e-12);
        assert_eq!(comparison.range, [0.8, 1.13]);
        assert_eq!(
            comparison.line(),
            "cnn: tch/PyTorch = 0.90× (median of 5 alternated pairs; range 0.80–1.13)"
        );
    }

    #[test]
    fn every_harness_is_committed() {
        for reference in REFERENCES {
            let script = repo_root()
                .join("benches/references")
                .join(reference.script);
            assert!(script.is_file(), "{} is missing", script.display());
        }
        assert!(
            repo_root()
                .join("benches/references/fashion_mnist.py")
                .is_file()
        );
    }
}

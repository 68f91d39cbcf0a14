//! `cargo xtask test`: provisions what the tests need on a fresh machine, then runs them all,
//! printing the minutes of each phase.
//!
//! This is the README's test command and what CI runs. It installs Debian's Fashion-MNIST
//! package and Chromium when they are missing (as root), provisions libtorch and TensorFlow from
//! their pinned wheels (`cargo xtask setup`), then runs `cargo test` over the whole workspace in
//! release mode, the profile `compare` uses too, with the native libraries' environment and the
//! features that the backend registry lists for the tests (burn's LibTorch engine), so every
//! adapter's tests run, and builds the benchmarks, which `cargo test` leaves out. Then xtask's
//! `acceptance` test target (`xtask/tests/acceptance/`) runs its scenarios through `compare`,
//! one phase each: comparisons over seeds; two comparisons into one directory, a worker killed
//! after its first epoch and a comparison interrupted with SIGINT; a Slurm job array on a
//! cluster of its own; and f32 against bf16 over seeds on a CPU simulated without bf16 units,
//! tf compiled through XLA against uncompiled with the roofline in its report, with the flags
//! that cannot run refused in one line. The GradCAM phase
//! trains the cnn on `fashion-mnist-subset-placed` with tch, maps it on tch, tf and burn from
//! those weights, and maps ResNet-18 and ResNet-50 on the bundled photos, holding the engines
//! to agreement and the cnn's maps to localisation bounds; the browser phase (`browser.rs`)
//! renders those runs' `report.html` in headless Chromium; the downstream example
//! (`crates/parallax/examples/downstream.rs`) plans and runs a comparison through the library;
//! and last `compare` with no `--backends` runs where nothing native can be provisioned. Under CI nothing is skipped: a
//! missing data set or browser is a failure.

mod browser;
mod layout;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail, ensure};

use crate::apt::ensure_fashion_mnist;
use crate::cargo::cargo;
use parallax_provision as provision;

/// Flags of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Extra arguments passed to `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

/// The names of the fuzz targets in `crates/core/tests/fuzz.rs` start with this.
const FUZZ_PREFIX: &str = "fuzz_";

/// Each fuzz target's budget in the test command, seconds: four targets on two cores take
/// about 40 s.
const FUZZ_SECONDS: &str = "20";

/// Times one phase and prints its minutes when it ends, whether it succeeded or not.
fn phase<T>(name: &str, work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let start = Instant::now();
    let result = work();
    eprintln!(
        "xtask test: {name}: {:.1} min{}",
        start.elapsed().as_secs_f64() / 60.0,
        if result.is_ok() { "" } else { " (failed)" }
    );
    result
}

/// Runs the whole test suite.
pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    // The host first: which kernels the engines pick, and so their f32 rounding, depends on it.
    let host = parallax::report::Environment::of_this_machine();
    eprintln!(
        "xtask test: host: {}",
        parallax::report::host_line(&host.cpu_model, &host.vector_extensions)
    );
    // Chromium is checked first so that a machine without it fails now, not after the build.
    let chromium = phase("data set, Chromium and Slurm", || {
        ensure_fashion_mnist()?;
        crate::apt::ensure_slurm()?;
        crate::apt::ensure_chromium()
    })?;
    let native = phase("native libraries and the Python frameworks", || {
        let mut native = provision::ensure(false)?;
        provision::ensure_frameworks(&mut native)?;
        Ok(native)
    })?;
    let features = crate::cargo::test_features();
    let test_command = |extra: &[&str]| {
        let mut command = cargo(
            &["test", "--workspace", "--release", "--features", &features],
            Some(&native),
        );
        command.args(extra);
        command
    };
    phase("build and run the tests", || {
        let mut tests = test_command(&[]);
        // The fuzzers run in a phase of their own, where their figures are printed.
        tests
            .args(["--", "--skip", FUZZ_PREFIX])
            .args(&args.cargo_args);
        if !tests.status().context("running cargo test")?.success() {
            bail!("tests failed");
        }
        Ok(())
    })?;
    // Keras on TensorFlow and tf cannot share a process (TensorFlow's C library and CPython
    // crash together): tf's binary hands its trajectories and stated Keras defaults off through
    // a directory, then the keras binary judges Keras against them.
    phase("keras against tf, across two processes", || {
        let handoff = crate::cargo::target_dir().join("acceptance/trajectory-handoff");
        let _ = std::fs::remove_dir_all(&handoff);
        for (binary, filter) in [("tf", "keras_handoff::"), ("keras", "against_tf::")] {
            let ran = test_command(&["--test", binary])
                .args(["--", "--ignored", filter, "--nocapture"])
                .env(
                    parallax_core::conformance::handoff::HANDOFF_VARIABLE,
                    &handoff,
                )
                .status()
                .with_context(|| format!("running the {binary} binary's half"))?;
            if !ran.success() {
                bail!("keras against tf failed in the {binary} binary");
            }
        }
        Ok(())
    })?;
    // The engines pick their kernels once, when they load: the parity checks run once more in a
    // process whose engines are capped at AVX2, with the evidence that the cap took effect.
    phase("parity under the AVX2 cap", || {
        crate::parity::under_cap(
            &crate::parity::AVX2,
            &native,
            &features,
            &crate::parity::out_dir(),
        )
    })?;
    phase("fuzz the readers", || {
        let fuzzed = test_command(&["--test", "fuzz"])
            .args(["--", FUZZ_PREFIX, "--nocapture"])
            .env("PARALLAX_FUZZ_SECONDS", FUZZ_SECONDS)
            .status()
            .context("running the fuzzers")?;
        if !fuzzed.success() {
            bail!("a fuzzer found an input that panics or allocates what a header claims");
        }
        Ok(())
    })?;
    // `cargo test` does not build benchmarks; building them here keeps `cargo xtask bench`
    // from rotting unseen.
    phase("build the benchmarks", || {
        let built = test_command(&["--benches", "--no-run"])
            .status()
            .context("building the benchmarks")?;
        if !built.success() {
            bail!("the benchmarks do not build");
        }
        Ok(())
    })?;
    // The runner's integration tests made `cargo test` build the worker binary itself, with the
    // test build's features: every engine (see `features`). A separate `cargo build` would
    // unify features without the dev-dependencies and compile burn again. It is copied aside,
    // because the default comparison's phase builds a burn-only worker at the same path.
    let built = crate::cargo::target_dir().join("release/parallax-runner");
    let worker = crate::cargo::target_dir().join("release/parallax-runner-all-engines");
    let built_worker = || {
        if !built.is_file() {
            bail!(
                "{} was not built by the tests; run the whole suite, not a filtered part",
                built.display()
            )
        }
        std::fs::copy(&built, &worker)
            .with_context(|| format!("copying {} to {}", built.display(), worker.display()))?;
        Ok(worker.clone())
    };
    let worker = built_worker()?;
    let built_worker = || Ok::<_, anyhow::Error>(worker.clone());
    // The scenarios run through `cargo xtask compare` as a user types it; they are xtask's
    // `acceptance` test target (`xtask/tests/acceptance/`), run here one phase each.
    let scenario = |name: &str| -> anyhow::Result<()> {
        let ran = test_command(&["--test", "acceptance", "--", name])
            .arg(built_worker()?)
            .status()
            .with_context(|| format!("running the {name} acceptance"))?;
        ensure!(ran.success(), "the {name} acceptance failed");
        Ok(())
    };
    phase("seeds, verdicts and attribution", || scenario("seeds"))?;
    phase("runs that collide, crash or are interrupted", || {
        scenario("reliability")
    })?;
    phase("a Slurm job array on a cluster of its own", || {
        scenario("slurm")
    })?;
    phase(
        "f32 against bf16, compiled against not, and what cannot run",
        || scenario("precision"),
    )?;
    phase("GradCAM across engines", || {
        grad_cam_acceptance(&built_worker()?)
    })?;
    phase("the library as a downstream crate uses it", || {
        downstream_example(&built_worker()?)
    })?;
    phase("the HTML report in Chromium", || {
        let acceptance = crate::cargo::target_dir().join("acceptance");
        browser::acceptance(
            &chromium,
            &[
                (
                    acceptance.join("seeds/report.html"),
                    browser::COMPARISON.to_vec(),
                ),
                (
                    acceptance.join("placed-gradcam/report.html"),
                    vec!["id=\"gradcam\"", "<img", "data:image/png;base64,"],
                ),
            ],
            &acceptance.join("browser"),
        )
    })?;
    // Last, because it builds a burn-only worker where `cargo test` left its own.
    phase("the default comparison, offline", default_comparison)?;
    eprintln!(
        "xtask test: all phases: {:.1} min",
        start.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

/// `cargo xtask compare` with no `--backends` and no seeds, where the native libraries and
/// the Python frameworks cannot be provisioned (an empty cache and no Python to run pip): tch,
/// tf, pytorch, keras and keras-torch are reported as skipped, burn compares over the default
/// 5 seeds, and the command succeeds; naming tch with `--backends` then fails.
fn default_comparison() -> anyhow::Result<()> {
    let out = crate::cargo::target_dir().join("acceptance/default");
    let cache = out.join("empty-cache");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&cache)?;
    let compare = |extra: &[&str]| -> anyhow::Result<bool> {
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        let mut command = Command::new(exe);
        command
            .args([
                "compare",
                "--dataset",
                "fashion-mnist-subset",
                "--limit-train",
                "500",
            ])
            .args(["--epochs", "1", "--threads", "2", "--out"])
            .arg(&out)
            .args(extra)
            .env("PARALLAX_CACHE", &cache)
            .env("PARALLAX_PYTHON", out.join("no-python-here"))
            .env_remove("LIBTORCH")
            .env_remove("LIBTORCH_USE_PYTORCH")
            .env_remove("PARALLAX_TF_DIR");
        Ok(command
            .status()
            .context("running cargo xtask compare")?
            .success())
    };
    ensure!(
        compare(&[])?,
        "`cargo xtask compare` with no --backends failed although burn could run"
    );
    let summary = parallax::report::Summary::load(&out.join("summary.json"))?;
    let skipped: Vec<&str> = summary.skipped.iter().map(|s| s.backend.as_str()).collect();
    let compared: Vec<&str> = summary.records.iter().map(|r| r.backend.as_str()).collect();
    eprintln!(
        "default comparison, offline: compared {compared:?}, skipped {skipped:?}: {}",
        summary
            .skipped
            .first()
            .map_or("", |skipped| skipped.reason.as_str())
    );
    // Every default backend but burn needs a native library or the Python frameworks, and
    // without seed flags compare runs seeds 1 to 5 (its DEFAULT_SEEDS).
    let seeds: Vec<u64> = summary.records.iter().map(|r| r.seed).collect();
    // The registry's default set: the backends that need nothing native compare, the others
    // are skipped with their reason.
    let (expected_compared, expected_skipped): (
        Vec<&parallax_registry::BackendEntry>,
        Vec<&parallax_registry::BackendEntry>,
    ) = parallax_registry::BACKENDS
        .iter()
        .filter(|entry| entry.compared_by_default)
        .partition(|entry| !entry.is_native());
    let expected_skipped: Vec<&str> = expected_skipped.iter().map(|entry| entry.name).collect();
    ensure!(
        skipped == expected_skipped
            && compared
                .iter()
                .all(|backend| expected_compared.iter().any(|entry| entry.name == *backend))
            && seeds == [1, 2, 3, 4, 5],
        "expected {:?} compared over seeds 1 to 5 and {expected_skipped:?} skipped; got {compared:?} over seeds {seeds:?} and {skipped:?}",
        expected_compared
            .iter()
            .map(|entry| entry.name)
            .collect::<Vec<_>>()
    );
    ensure!(
        out.join("report.html").is_file(),
        "no report.html was written"
    );
    eprintln!("default comparison, offline: the next command names tch and must fail");
    ensure!(
        !compare(&["--backends", "burn,tch"])?,
        "`--backends burn,tch` succeeded although tch could not be provisioned"
    );
    Ok(())
}

/// Runs `cargo xtask <args>` with this very binary, so that the acceptance phase goes through
/// the commands a user types, workers included.
fn xtask(args: &[&str]) -> anyhow::Result<()> {
    if !xtask_status(args)? {
        bail!("`cargo xtask {}` failed", args.join(" "));
    }
    Ok(())
}

/// [`xtask`], returning whether the command succeeded.
fn xtask_status(args: &[&str]) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let status = Command::new(exe)
        .args(args)
        .status()
        .with_context(|| format!("running cargo xtask {}", args.join(" ")))?;
    Ok(status.success())
}

/// The numbers the GradCAM acceptance reads back from a `summary.json`: the smallest
/// layer-resolution Pearson's r between two backends, and per backend the mean energy
/// pointing game and argmax hit rate over images with boxes.
fn grad_cam_figures(dir: &Path) -> anyhow::Result<(f64, Vec<(String, f64, f64)>)> {
    let path = dir.join("gradcam/summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let summary: serde_json::Value = serde_json::from_str(&text)?;
    let images = summary["images"]
        .as_array()
        .context("summary without images")?;
    let mut min_pearson = f64::INFINITY;
    let mut localisation: std::collections::BTreeMap<String, (f64, f64, usize)> =
        Default::default();
    for image in images {
        for pair in image["pairs"].as_array().into_iter().flatten() {
            // A correlation that is undefined (a constant map) counts as no agreement.
            min_pearson =
                min_pearson.min(pair["raw"]["pearson"].as_f64().unwrap_or(f64::NEG_INFINITY));
        }
        for (backend, result) in image["backends"].as_object().into_iter().flatten() {
            if let Some(hit) = result["argmax_hit"].as_bool() {
                let entry = localisation.entry(backend.clone()).or_default();
                entry.0 += result["pointing"].as_f64().unwrap_or(0.0);
                entry.1 += f64::from(u8::from(hit));
                entry.2 += 1;
            }
        }
    }
    if images.is_empty() || min_pearson == f64::INFINITY {
        bail!("{}: no pair of backends was compared", path.display());
    }
    let localisation = localisation
        .into_iter()
        .map(|(backend, (pointing, hits, n))| (backend, pointing / n as f64, hits / n as f64))
        .collect();
    Ok((min_pearson, localisation))
}

/// The smallest Pearson r between two engines' raw GradCAM maps (layer resolution: the cnn's
/// 16×16 `pool2` on 100 placed canvases, ResNet-18's and ResNet-50's 7×7 `layer4` on the
/// photos) from the same weights and input tensors. Only f32 rounding separates the engines:
/// activations and gradients agree to δ ≲ 3e-5 of their scale (√n·u ≈ 4e-6 per 4,608-term dot
/// product, compounded over ~50 layers), and Σₖ αₖAₖ, whose terms sum to κ times the map's
/// maximum (2–4 on the tiny ResNet fixture, ~√2048 ≈ 45 for random-signed ResNet-50 channels),
/// moves by κδ of it. An uncorrelated perturbation e lowers r by ½σ²(e)/σ²(a), so r ≥ 0.999
/// holds while σ(e) < 0.045σ(a); with σ(a) ≈ max/5 and κδ ≈ 1.4e-3, 1 − r ≈ 2.5e-5, forty
/// times inside. A transposed, flipped or shifted map, the wrong class, softmax gradients or
/// permuted channels fall far below. Only a map whose spatial variation is itself at noise
/// level (a cell or two barely above zero after the ReLU, channels cancelling to a near
/// constant) can fail without a defect; exactly flat maps fall back to the signed ones, and an
/// undefined r counts as no agreement.
const AGREEMENT: f64 = 0.999;
/// The smallest mean energy pointing game (the share of a map's mass inside the item's box)
/// over the 100 placed canvases, per engine, for the cnn tch trained for 8 epochs. The 28×28 box
/// is 19% of the 64×64 canvas, what a map that ignores the item scores. Over uniform placements
/// (top, left ∈ 0..=36) a transposed copy of a map with all its mass in the box averages 0.41
/// and a flipped one 0.38, so 0.5 (2.6× chance) asks for the mass on the item, the only
/// structure on faint noise, and rejects both; the mean over 100 canvases has a standard error
/// under 0.03.
const POINTING: f64 = 0.5;
/// The smallest share of those canvases whose map maximum lies inside the box. Chance is 0.19;
/// with the true maximum at the box's centre, a transposed map still hits on 60% of placements
/// (|top − left| ≤ 13) and a flipped one on 35%, so 0.8 rejects both while leaving a correct
/// engine a few misread or edge-weighted items beyond the binomial noise of 100 canvases
/// (0.03 at 0.9).
const ARGMAX_HITS: f64 = 0.8;

/// GradCAM on tch, tf and burn: a cnn trained briefly on the placed subset by one engine, then
/// mapped on all three from those weights; ResNet-18 and ResNet-50 with canonical weights on
/// the bundled photos.
fn grad_cam_acceptance(worker: &Path) -> anyhow::Result<()> {
    let worker = worker.to_string_lossy().into_owned();
    let root = crate::cargo::repo_root();
    let out = crate::cargo::target_dir().join("acceptance");
    let train = out.join("placed-train");
    let train_dir = train.to_string_lossy().into_owned();
    xtask(&[
        "compare",
        "--backends",
        "tch",
        "--model",
        "cnn",
        "--dataset",
        "fashion-mnist-subset-placed",
        "--epochs",
        "8",
        "--seed",
        "42",
        "--save-weights",
        "--out",
        &train_dir,
        "--worker",
        &worker,
    ])?;
    let weights = train.join("weights/cnn/tch/seed-42.safetensors");
    let cnn = out.join("placed-gradcam");
    xtask(&[
        "gradcam",
        "--model",
        "cnn",
        "--dataset",
        "fashion-mnist-subset-placed",
        "--count",
        "100",
        "--weights",
        &weights.to_string_lossy(),
        "--faithfulness-steps",
        "0",
        "--backends",
        "tch,tf,burn",
        "--out",
        &cnn.to_string_lossy(),
        "--worker",
        &worker,
    ])?;
    let mut failures = Vec::new();
    let (pearson, localisation) = grad_cam_figures(&cnn)?;
    eprintln!(
        "gradcam acceptance: cnn on fashion-mnist-subset-placed: smallest raw Pearson {pearson:.6}"
    );
    if pearson < AGREEMENT {
        failures.push(format!(
            "cnn maps agree to Pearson {pearson:.6} < {AGREEMENT}"
        ));
    }
    for (backend, pointing, hits) in localisation {
        eprintln!(
            "gradcam acceptance: {backend}: energy pointing game {pointing:.3}, argmax hit rate {hits:.3}"
        );
        if pointing < POINTING || hits < ARGMAX_HITS {
            failures.push(format!(
                "{backend} localises with pointing {pointing:.3} (bound {POINTING}) and hits {hits:.3} (bound {ARGMAX_HITS})"
            ));
        }
    }
    let photos = root.join("fixtures/photos");
    for model in ["resnet18", "resnet50"] {
        let dir = out.join(format!("{model}-photos"));
        xtask(&[
            "gradcam",
            "--model",
            model,
            "--images",
            &photos.to_string_lossy(),
            "--faithfulness-steps",
            "0",
            "--backends",
            "tch,tf,burn",
            "--out",
            &dir.to_string_lossy(),
            "--worker",
            &worker,
        ])?;
        let (pearson, _) = grad_cam_figures(&dir)?;
        eprintln!("gradcam acceptance: {model} on the photos: smallest raw Pearson {pearson:.6}");
        if pearson < AGREEMENT {
            failures.push(format!(
                "{model} maps agree to Pearson {pearson:.6} < {AGREEMENT}"
            ));
        }
    }
    if !failures.is_empty() {
        bail!("GradCAM acceptance: {}", failures.join("; "));
    }
    Ok(())
}

/// Runs `crates/parallax/examples/downstream.rs`, which `cargo test` built: a comparison of two
/// backends planned and run through the library, its records read back, and `report.html`
/// rendered from them.
fn downstream_example(worker: &Path) -> anyhow::Result<()> {
    let example = crate::cargo::target_dir().join("release/examples/downstream");
    ensure!(
        example.is_file(),
        "{} was not built by the tests; run the whole suite, not a filtered part",
        example.display()
    );
    let out = crate::cargo::target_dir().join("acceptance/downstream");
    let _ = std::fs::remove_dir_all(&out);
    let ran = Command::new(&example)
        .arg(&out)
        .arg(worker)
        .status()
        .with_context(|| format!("running {}", example.display()))?;
    ensure!(ran.success(), "the downstream example failed");
    for written in ["report.html", "downstream/report.html"] {
        ensure!(
            out.join(written).is_file(),
            "the downstream example wrote no {written}"
        );
    }
    Ok(())
}

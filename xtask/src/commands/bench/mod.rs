//! `cargo xtask bench`: runs the criterion benchmarks in `benches/` in release mode with the
//! native libraries provisioned, then prints and writes (`DIR/bench.md`, `DIR/bench.json`) one
//! table per model with each engine's median step time, throughput, ratio to the fastest engine
//! and utilisation of the machine's matrix-product peak, measured in the same run. With
//! `--harness-share`, the harness's share of a libtorch epoch. Framework speed (tch against
//! PyTorch's own loop, tf against Keras's `fit`) is `cargo xtask compare`'s, over seeds.

mod results;

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};

use crate::cargo::{cargo, target_dir};
use parallax::workers::set_openmp_wait;
use parallax_provision as provision;

/// Flags of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A criterion filter, such as `tch/cnn`, `train_step/256` or `peak`.
    pub filter: Option<String>,
    /// Where `bench.md` and `bench.json` go.
    #[arg(long, default_value = "out/bench")]
    pub out: PathBuf,
    /// Threads per engine.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Instead of the criterion benchmarks, measure the share of a libtorch epoch on full
    /// Fashion-MNIST that is the harness's (`benches/benches/harness_share.rs`; settings through
    /// `PARALLAX_BENCH_MODEL`, `PARALLAX_BENCH_ROUNDS`, `PARALLAX_BENCH_THREADS`).
    #[arg(long, conflicts_with = "filter")]
    pub harness_share: bool,
    /// Retired: framework speed is `cargo xtask compare` over the `pytorch` and `keras`
    /// backends; kept so that the old flag says where to go.
    #[arg(long, hide = true)]
    pub references: bool,
}

/// Runs the benchmarks.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.references {
        bail!(
            "`bench --references` is retired: PyTorch's loop and Keras's fit are backends now; run `cargo xtask compare --backends tch,pytorch,tf,keras --model cnn --seeds 5` for s/epoch verdicts over seeds (docs/bench.md)"
        );
    }
    let native = provision::ensure(false)?;
    if args.harness_share {
        let mut command = cargo(
            &[
                "bench",
                "-p",
                "parallax-benches",
                "--features",
                "tch",
                "--bench",
                "harness_share",
            ],
            Some(&native),
        );
        command.env("PARALLAX_CACHE", provision::cache_dir());
        // As in `cargo xtask compare`'s libtorch workers: a short OpenMP spin, unless set.
        set_openmp_wait(&mut command);
        if !command.status().context("running cargo bench")?.success() {
            bail!("the harness-share benchmark failed");
        }
        return Ok(());
    }

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output directory {}", args.out.display()))?;
    // Absolute, because cargo runs the benchmark in the package's own directory.
    let out = std::path::absolute(&args.out)?;
    let criterion_home = target_dir().join("criterion");
    let flops_path = out.join("flops.json");
    let started = SystemTime::now();
    let benched: Vec<&str> = parallax_registry::BACKENDS
        .iter()
        .filter(|entry| entry.benched)
        .map(|entry| entry.feature)
        .collect();
    let features = benched.join(",");
    let mut command = cargo(
        &[
            "bench",
            "-p",
            "parallax-benches",
            "--features",
            &features,
            "--bench",
            "train_step",
        ],
        Some(&native),
    );
    command
        .env("CRITERION_HOME", &criterion_home)
        .env("PARALLAX_BENCH_FLOPS", &flops_path)
        .env("PARALLAX_BENCH_THREADS", args.threads.to_string());
    set_openmp_wait(&mut command);
    if let Some(filter) = &args.filter {
        command.arg("--").arg(filter);
    }
    if !command.status().context("running cargo bench")?.success() {
        bail!("the benchmarks failed: see criterion's output above");
    }

    let measurements = results::read(&criterion_home, started)?;
    results::require_some(&measurements, args.filter.as_deref())?;
    let flops = results::read_flops(&flops_path)?;
    let report = results::BenchReport::new(&measurements, &flops, args.threads);
    println!("{}", report.render(false));
    let json = out.join("bench.json");
    let markdown = out.join("bench.md");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    std::fs::write(&markdown, report.render(true))
        .with_context(|| format!("cannot write {}", markdown.display()))?;
    println!("tables: {}\n        {}", markdown.display(), json.display());
    Ok(())
}

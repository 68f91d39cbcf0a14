//! `cargo xtask bench`: runs the criterion benchmarks in `benches/` in release mode, or with
//! `--harness-share` the measurement of the harness's share of a libtorch epoch, with the
//! native libraries provisioned.

use anyhow::{Context, bail};

use crate::cargo::cargo;
use crate::provision;
use crate::workers::set_openmp_wait;

/// Flags of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A criterion filter, such as `tch/cnn`, `train_step/256` or `harness`.
    pub filter: Option<String>,
    /// Instead of the criterion benchmarks, measure the share of a libtorch epoch on full
    /// Fashion-MNIST that is the harness's (`benches/benches/harness_share.rs`; settings through
    /// `PARALLAX_BENCH_MODEL`, `PARALLAX_BENCH_ROUNDS`, `PARALLAX_BENCH_THREADS`).
    #[arg(long, conflicts_with = "filter")]
    pub harness_share: bool,
}

/// Runs the benchmarks.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut command = if args.harness_share {
        let native = provision::ensure(false)?;
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
        command
    } else {
        let native = provision::ensure(false)?;
        let mut command = cargo(
            &[
                "bench",
                "-p",
                "parallax-benches",
                "--features",
                "tch,tf,burn-tch",
                "--bench",
                "train_step",
            ],
            Some(&native),
        );
        set_openmp_wait(&mut command);
        command
    };
    if let Some(filter) = &args.filter {
        command.arg("--").arg(filter);
    }
    if !command.status().context("running cargo bench")?.success() {
        bail!("the benchmarks failed");
    }
    Ok(())
}

//! `cargo xtask bench`: runs the criterion benchmarks in `benches/` in release mode, or with
//! `--harness-share` the measurement of the harness's share of a libtorch epoch, with the
//! native libraries provisioned.

use std::process::Command;

use anyhow::{Context, bail};

use super::{repo_root, setup};

/// Flags of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A criterion filter, such as `burn-flex/cnn` or `harness`.
    pub filter: Option<String>,
    /// Instead of the criterion benchmarks, measure the share of a libtorch epoch on full
    /// Fashion-MNIST that is the harness's (`benches/benches/harness_share.rs`; settings through
    /// `PARALLAX_BENCH_MODEL`, `PARALLAX_BENCH_ROUNDS`, `PARALLAX_BENCH_THREADS`).
    #[arg(long, conflicts_with = "filter")]
    pub harness_share: bool,
}

/// Runs the benchmarks.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(repo_root()?)
        .args(["bench", "-p", "parallax-benches"]);
    if args.harness_share {
        setup::ensure(false)?.apply(&mut command);
        command
            .args(["--features", "tch", "--bench", "harness_share"])
            .env("PARALLAX_CACHE", setup::cache_dir());
        // As in `cargo xtask compare`'s libtorch workers: a short OpenMP spin, unless set.
        if std::env::var_os("OMP_WAIT_POLICY").is_none()
            && std::env::var_os("GOMP_SPINCOUNT").is_none()
        {
            command.env("GOMP_SPINCOUNT", super::compare::LIBTORCH_SPIN_COUNT);
        }
    } else {
        command.args(["--bench", "train_step"]);
    }
    if let Some(filter) = &args.filter {
        command.arg("--").arg(filter);
    }
    if !command.status().context("running cargo bench")?.success() {
        bail!("the benchmarks failed");
    }
    Ok(())
}

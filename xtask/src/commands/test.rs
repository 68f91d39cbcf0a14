//! `cargo xtask test`: provisions what the tests need on a fresh machine, then runs them all,
//! printing the minutes of each phase.
//!
//! This is the README's test command and what CI runs. It installs Debian's Fashion-MNIST
//! package when the data set is missing (as root), provisions libtorch and TensorFlow from
//! their pinned wheels (`cargo xtask setup`), then runs `cargo test` over the whole workspace in
//! release mode, the profile `compare` uses too, with the native libraries' environment and the
//! features that the backend registry lists for the tests (burn's LibTorch engine), so every
//! adapter's tests run, and builds the benchmarks, which `cargo test` leaves out. Under CI
//! nothing is skipped: a missing data set is a failure.

use std::time::Instant;

use anyhow::{Context, bail};

use crate::cargo::cargo;
use crate::provision::{self, data::ensure_fashion_mnist};

/// Flags of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Extra arguments passed to `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

/// The features of every `cargo` run here: those the registry's backends ask for, and the
/// libtorch harness-share benchmark. Both runs take the same, so the second reuses the first's
/// builds.
fn features() -> String {
    parallax_registry::BACKENDS
        .iter()
        .flat_map(|entry| entry.test_features.iter().copied())
        .chain(["parallax-benches/tch"])
        .collect::<Vec<_>>()
        .join(",")
}

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
    phase("data set", ensure_fashion_mnist)?;
    let native = phase("native libraries", || provision::ensure(false))?;
    let features = features();
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
        if !args.cargo_args.is_empty() {
            tests.arg("--").args(&args.cargo_args);
        }
        if !tests.status().context("running cargo test")?.success() {
            bail!("tests failed");
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
    eprintln!(
        "xtask test: all phases: {:.1} min",
        start.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

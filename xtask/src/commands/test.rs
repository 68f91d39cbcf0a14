//! `cargo xtask test`: provisions what the tests need on a fresh machine, then runs them all.
//!
//! This is the README's test command and what CI runs. It installs Debian's Fashion-MNIST
//! package when the data set is missing (as root), provisions libtorch and TensorFlow from
//! their pinned wheels (`cargo xtask setup`), then runs `cargo test` over the whole workspace in
//! release mode, the profile `compare` uses too, with the native libraries' environment and
//! burn's LibTorch engine enabled, so every adapter's tests run, and builds the benchmarks,
//! which `cargo test` leaves out. With `CI=true` nothing is skipped: a missing data set is a
//! failure.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::{repo_root, setup};

/// Where Debian's `dataset-fashion-mnist` package puts the data set.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Flags of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Extra arguments passed to `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Makes sure the full Fashion-MNIST data set is on this machine.
pub fn ensure_fashion_mnist() -> anyhow::Result<()> {
    if Path::new(DEBIAN_FASHION_MNIST)
        .join("train-images-idx3-ubyte.gz")
        .is_file()
    {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Fashion-MNIST is missing: install it with `sudo apt-get install dataset-fashion-mnist` (or run `cargo xtask data download fashion-mnist`), then run the tests again"
        );
    }
    eprintln!("installing Debian's dataset-fashion-mnist (30 MB) for the tests");
    let install = |update_first: bool| -> anyhow::Result<bool> {
        if update_first {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        }
        Ok(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "dataset-fashion-mnist",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?
            .success())
    };
    if !install(false)? && !install(true)? {
        bail!(
            "apt-get could not install dataset-fashion-mnist; install it by hand, or run `cargo xtask data download fashion-mnist`"
        );
    }
    Ok(())
}

/// The features of every `cargo` run here: burn's LibTorch engine, and the libtorch
/// harness-share benchmark. Both runs take the same, so the second reuses the first's builds.
const FEATURES: &str = "parallax-burn/tch,parallax-benches/tch";

/// Runs the whole test suite.
pub fn run(args: Args) -> anyhow::Result<()> {
    ensure_fashion_mnist()?;
    let native = setup::ensure(false)?;
    let root = repo_root()?;
    let cargo = |extra: &[&str]| {
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command
            .current_dir(&root)
            .args(["test", "--workspace", "--release", "--features", FEATURES])
            .args(extra);
        native.apply(&mut command);
        command
    };
    let mut tests = cargo(&[]);
    if !args.cargo_args.is_empty() {
        tests.arg("--").args(&args.cargo_args);
    }
    if !tests.status().context("running cargo test")?.success() {
        bail!("tests failed");
    }
    // `cargo test` does not build benchmarks; building them here keeps `cargo xtask bench`
    // from rotting unseen.
    let built = cargo(&["--benches", "--no-run"])
        .status()
        .context("building the benchmarks")?;
    if !built.success() {
        bail!("the benchmarks do not build");
    }
    Ok(())
}

//! `cargo xtask bench`: runs the criterion benchmarks in `benches/`, in release mode, with the
//! native libraries' environment.

use std::process::Command;

use anyhow::{Context, bail};

use super::repo_root;

/// Flags of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A criterion filter, such as `burn-flex/cnn` or `harness`.
    pub filter: Option<String>,
}

/// Runs the benchmarks.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(repo_root()?).args([
        "bench",
        "-p",
        "parallax-benches",
        "--bench",
        "train_step",
    ]);
    if let Some(filter) = &args.filter {
        command.arg("--").arg(filter);
    }
    if !command.status().context("running cargo bench")?.success() {
        bail!("the benchmarks failed");
    }
    Ok(())
}

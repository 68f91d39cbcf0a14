//! `cargo xtask setup`: provisions libtorch 2.9.0 and the TensorFlow 2.21 C library from pinned
//! PyPI wheels into a per-user cache, and the Python frameworks into a virtual environment
//! there (the work is in [`crate::provision`]).

use std::time::Instant;

use anyhow::Result;

use parallax_provision::{Outcome, dry_run, provision};

/// Flags of `cargo xtask setup`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Provision the CUDA builds: libtorch with torch's NVIDIA libraries, and the GPU build of
    /// TensorFlow with its `and-cuda` libraries (about 7 GB to download), instead of the CPU ones.
    #[arg(long)]
    pub cuda: bool,
    /// Print the wheels that setup would fetch, with their sizes, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Hash every cached wheel again, fetch any that fail, and extract everything afresh.
    #[arg(long)]
    pub verify: bool,
    /// Leave out the Python frameworks (PyTorch, TensorFlow and Keras in a virtual environment,
    /// about 3.7 GB to download and 8.7 GB on disk), which the pytorch backend needs.
    #[arg(long)]
    pub no_frameworks: bool,
}

/// Runs `cargo xtask setup`.
pub fn run(args: Args) -> Result<()> {
    if args.dry_run {
        return Ok(dry_run(args.cuda)?);
    }
    let start = Instant::now();
    let (mut env, mut outcome) = provision(args.cuda, args.verify)?;
    if !args.no_frameworks && env.frameworks.is_none() {
        parallax_provision::ensure_frameworks(&mut env)?;
        outcome = Outcome::Provisioned;
    }
    let elapsed = start.elapsed();
    match outcome {
        Outcome::Provisioned => eprintln!("setup: done in {:.1} s", elapsed.as_secs_f64()),
        Outcome::Present => eprintln!(
            "setup: everything is present, nothing to do (checked in {:.1} ms)",
            elapsed.as_secs_f64() * 1e3
        ),
        Outcome::ProvisionedByAnother => eprintln!(
            "setup: everything is present: another setup provisioned it while this one waited"
        ),
    }
    for (name, value) in env.vars() {
        eprintln!("  {name}={value}");
    }
    eprintln!(
        "setup: `cargo xtask` passes these on; for a plain cargo, run: eval \"$(cargo xtask env)\""
    );
    Ok(())
}

//! `cargo xtask fixtures`: regenerates the committed fixtures from their sources.

use std::path::PathBuf;

use anyhow::Context;

use parallax_core::data::builtin::DEBIAN_FASHION_MNIST_DIR;

use crate::apt::ensure_fashion_mnist;
use crate::cargo::repo_root;

/// Training and test images in the bundled Fashion-MNIST subset.
pub const SUBSET_TRAIN: usize = 2000;
/// Test images in the bundled subset.
pub const SUBSET_TEST: usize = 500;

/// Flags of `cargo xtask fixtures`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of the full Fashion-MNIST IDX files.
    #[arg(long, default_value = DEBIAN_FASHION_MNIST_DIR)]
    pub source: PathBuf,
}

/// Rewrites `fixtures/fashion-mnist-subset` from the full data set.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.source.as_os_str() == DEBIAN_FASHION_MNIST_DIR {
        ensure_fashion_mnist()?;
    }
    let target = repo_root().join("fixtures").join("fashion-mnist-subset");
    parallax_core::data::write_subset(&args.source, &target, SUBSET_TRAIN, SUBSET_TEST)
        .with_context(|| format!("writing {}", target.display()))?;
    println!(
        "wrote {} ({SUBSET_TRAIN} train, {SUBSET_TEST} test images)",
        target.display()
    );
    Ok(())
}

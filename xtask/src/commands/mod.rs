//! One module per `cargo xtask` subcommand, each exposing `run(args) -> anyhow::Result<()>`,
//! and the few helpers they share.

pub mod bench;
pub mod compare;
pub mod data;
pub mod env;
pub mod fixtures;
pub mod report;
pub mod setup;
pub mod test;

pub use setup::cache_dir;

use std::path::PathBuf;

use anyhow::Context;

/// The repository's root: the parent of xtask's own manifest directory.
pub fn repo_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(PathBuf::from)
        .context("xtask's manifest directory has no parent")
}

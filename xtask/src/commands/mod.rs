//! One module per `cargo xtask` subcommand, each exposing `run(args) -> anyhow::Result<()>`,
//! and the few helpers they share.

pub mod compare;
pub mod data;
pub mod env;
pub mod fixtures;
pub mod report;
pub mod setup;
pub mod test;

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

/// parallax's per-user cache: `$PARALLAX_CACHE`, else `$XDG_CACHE_HOME/parallax`, else
/// `~/.cache/parallax`. Native libraries and downloaded data sets live there.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PARALLAX_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("parallax");
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("parallax"))
        .unwrap_or_else(|| std::env::temp_dir().join("parallax-cache"))
}

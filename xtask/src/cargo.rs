//! The one helper that builds cargo invocations: the cargo that runs xtask, in the repository's
//! root, with the native libraries' environment when a build links one.

use std::path::PathBuf;
use std::process::Command;

use crate::provision::NativeEnv;

/// The repository's root: the parent of xtask's own manifest directory.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The workspace's target directory: `CARGO_TARGET_DIR`, or `target/` in the repository.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// `cargo <args>` in the repository's root, with `native`'s environment when given.
pub fn cargo(args: &[&str], native: Option<&NativeEnv>) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(repo_root()).args(args);
    if let Some(native) = native {
        native.apply(&mut command);
    }
    command
}

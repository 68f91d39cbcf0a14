//! The parallax checkout this library was built in, where `compare` and `gradcam` build their
//! workers: its root, its target directory, and the one helper that runs cargo there with the
//! native libraries' environment when a build links one.

use std::path::PathBuf;
use std::process::Command;

use parallax_provision::NativeEnv;

/// The checkout's root: two levels above this crate's manifest (`crates/parallax`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|crates| crates.parent())
        .map(PathBuf::from)
        .unwrap_or(manifest)
}

/// The workspace's target directory: `CARGO_TARGET_DIR`, or `target/` in the checkout.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// `cargo <args>` in the checkout's root, with `native`'s environment when given.
pub fn cargo(args: &[&str], native: Option<&NativeEnv>) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(repo_root()).args(args);
    if let Some(native) = native {
        native.apply(&mut command);
    }
    command
}

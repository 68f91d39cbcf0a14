//! The one helper that builds cargo invocations: the cargo that runs xtask, in the repository's
//! root, with the native libraries' environment when a build links one.

use std::path::PathBuf;
use std::process::Command;

use parallax_provision::NativeEnv;

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

/// The features of every `cargo` run of `cargo xtask test` and `cargo xtask parity`: those the
/// registry's backends ask for, every engine's benchmarks, and every CPU backend in the
/// worker, whose one binary the GradCAM phase then uses for all engines. All runs take the
/// same, so each reuses the first's builds.
pub fn test_features() -> String {
    let workers = parallax_registry::BACKENDS
        .iter()
        .map(|entry| format!("parallax-runner/{}", entry.feature));
    parallax_registry::BACKENDS
        .iter()
        .flat_map(|entry| {
            entry
                .test_features
                .iter()
                .map(|feature| feature.to_string())
        })
        .chain(
            parallax_registry::BACKENDS
                .iter()
                .filter(|entry| entry.benched)
                .map(|entry| format!("parallax-benches/{}", entry.feature)),
        )
        .chain(workers)
        .collect::<Vec<_>>()
        .join(",")
}

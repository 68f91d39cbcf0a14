//! The cargo helpers of the parallax library (the checkout's root, its target directory, cargo
//! with the native libraries' environment), and the features of the test build.

pub use parallax::workspace::{cargo, repo_root, target_dir};

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

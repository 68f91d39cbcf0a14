//! parallax as a library: what `cargo xtask` runs, for downstream crates to reuse. Today it
//! holds a comparison's report: the schema of `summary.json` with its version and migration,
//! and its views (Markdown, terminal, a self-contained HTML page), rendered from a
//! directory's records by [`report::dir::render_dir`].
//!
//! It depends on core and the registry, never on an adapter: each engine runs in a worker
//! process of its own, so this crate builds before any native library exists.

pub mod error;
pub mod report;

pub use error::{Error, Result};

/// The repository's root, for the tests' committed fixtures.
#[cfg(test)]
pub(crate) fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

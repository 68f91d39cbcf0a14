//! Where a command's runs put their files: one output directory, one path per run.
//!
//! ```text
//! OUT/manifest.json                                the matrix the command ran
//! OUT/requests/<model>/<backend>/seed-<S>.json     each run's request
//! OUT/records/<model>/<backend>/seed-<S>.json      each run's record, written after every epoch
//! OUT/weights/<model>/<backend>/seed-<S>.safetensors  trained weights, when asked for
//! OUT/summary.json, OUT/report.md                  the comparison
//! ```
//!
//! `compare` (its seeds, attribution configurations and repeats), the report, and the commands that come later (Slurm) all write
//! and read this layout through [`Layout`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::record::{RunId, RunRequest, write_json_atomically};

/// The version of the manifest's layout.
pub const MANIFEST_VERSION: u32 = 1;

/// The files of one output directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

/// `<model>/<backend>/seed-<S>` with `extension`, each part reduced to characters that are safe
/// in a file name.
fn run_path(id: &RunId, extension: &str) -> PathBuf {
    let safe = |part: &str| -> String {
        let safe: String = part
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // A part made only of dots would climb out of the directory.
        if safe.chars().all(|c| c == '.') {
            "_".repeat(safe.len().max(1))
        } else {
            safe
        }
    };
    PathBuf::from(safe(&id.model))
        .join(safe(&id.backend))
        .join(format!("seed-{}.{extension}", id.seed))
}

impl Layout {
    /// The layout of `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// The output directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run's request.
    pub fn request(&self, id: &RunId) -> PathBuf {
        self.root.join("requests").join(run_path(id, "json"))
    }

    /// The run's record.
    pub fn record(&self, id: &RunId) -> PathBuf {
        self.root.join("records").join(run_path(id, "json"))
    }

    /// The run's trained weights.
    pub fn weights(&self, id: &RunId) -> PathBuf {
        self.root.join("weights").join(run_path(id, "safetensors"))
    }

    /// The matrix of runs the command ran.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    /// The comparison's records and failures in one document.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// The Markdown report.
    pub fn report_markdown(&self) -> PathBuf {
        self.root.join("report.md")
    }
}

/// One run of a command's matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRun {
    /// The run's identity.
    pub id: RunId,
    /// Its request, relative to the output directory.
    pub request: PathBuf,
    /// Its record, relative to the output directory.
    pub record: PathBuf,
}

/// The matrix of runs one command ran, in the order it ran them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// The command line that ran the matrix.
    pub command: String,
    /// The runs.
    pub runs: Vec<ManifestRun>,
}

impl Manifest {
    /// The manifest of `runs` under `layout`, run by `command`: each run's request with the
    /// layout its files go to, which is `layout` itself or a subdirectory of it (a
    /// configuration of an attribution, the repeats); paths are relative to `layout`'s root.
    pub fn new<'a>(
        layout: &Layout,
        command: String,
        runs: impl IntoIterator<Item = (&'a Layout, &'a RunRequest)>,
    ) -> Self {
        let relative = |path: PathBuf| {
            path.strip_prefix(layout.root())
                .map(Path::to_path_buf)
                .unwrap_or(path)
        };
        Manifest {
            manifest_version: MANIFEST_VERSION,
            command,
            runs: runs
                .into_iter()
                .map(|(own, request)| {
                    let id = request.id();
                    ManifestRun {
                        request: relative(own.request(&id)),
                        record: relative(own.record(&id)),
                        id,
                    }
                })
                .collect(),
        }
    }

    /// Writes the manifest to `layout`'s path for it.
    pub fn save(&self, layout: &Layout) -> Result<()> {
        write_json_atomically(&layout.manifest(), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_paths_nest_model_backend_and_seed_and_stay_in_the_directory() {
        let layout = Layout::new("/out");
        let id = RunId {
            model: "my net/../x".into(),
            backend: "burn-tch".into(),
            seed: 7,
            configuration: "abc".into(),
        };
        assert_eq!(
            layout.record(&id),
            Path::new("/out/records/my_net_.._x/burn-tch/seed-7.json")
        );
        let dots = RunId {
            model: "..".into(),
            ..id.clone()
        };
        assert!(layout.record(&dots).starts_with("/out/records/__/"));
        assert_eq!(
            layout.weights(&id),
            Path::new("/out/weights/my_net_.._x/burn-tch/seed-7.safetensors")
        );
    }
}

//! The library's errors. Each keeps its source (an I/O error, core's error) reachable through
//! [`std::error::Error::source`], and each message says what parallax was doing, so that
//! `parallax_core::error::one_line` reads the chain as one sentence.

use std::path::PathBuf;

/// What a comparison's report can fail on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory that could not be read or written.
    #[error("{doing} {}", path.display())]
    Io {
        /// What parallax was doing: `reading`, `writing`, `creating`.
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file parallax writes that does not read back: truncated, edited by hand, or written
    /// by a newer parallax.
    #[error("{} is not {what}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What it should be (`a comparison's summary`, `a GradCAM summary`).
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A directory that holds nothing to report.
    #[error("{} holds {missing}; {hint}", dir.display())]
    NothingToReport {
        /// The directory.
        dir: PathBuf,
        /// What it lacks.
        missing: &'static str,
        /// What to pass instead.
        hint: &'static str,
    },
    /// Files that could not be read and were left out of a report that was written anyway.
    #[error("{} file(s) could not be read and were left out of the report: {}", files.len(), listed(files))]
    Unreadable {
        /// Each file and its error line.
        files: Vec<(String, String)>,
    },
    /// A chart that plotters could not draw.
    #[error("drawing a chart: {0}")]
    Chart(String),
    /// An error of core's: a record that does not read, a spec, data.
    #[error(transparent)]
    Core(#[from] parallax_core::Error),
}

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`]: `doing` `path` failed with `source`.
    pub fn io(doing: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            doing,
            path: path.into(),
            source,
        }
    }
}

fn listed(files: &[(String, String)]) -> String {
    files
        .iter()
        .map(|(path, error)| format!("{path}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

//! The library's errors. Each keeps its source (an I/O error, core's error) reachable through
//! [`std::error::Error::source`], and each message says what parallax was doing, so that
//! `parallax_core::error::one_line` reads the chain as one sentence.

use std::path::PathBuf;

/// What a comparison, GradCAM or a report can fail on.
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
    /// An image that could not be written.
    #[error("writing {}", path.display())]
    Image {
        /// The image's file.
        path: PathBuf,
        /// The image crate's error.
        #[source]
        source: image::ImageError,
    },
    /// A chart that plotters could not draw.
    #[error("drawing a chart: {0}")]
    Chart(String),
    /// An error of core's: a record that does not read, a spec, data.
    #[error(transparent)]
    Core(#[from] parallax_core::Error),
    /// A backend name that the registry does not list.
    #[error(transparent)]
    UnknownBackend(#[from] parallax_registry::UnknownBackend),
    /// The native libraries or the Python frameworks, which could not be provisioned.
    #[error(transparent)]
    Provision(#[from] parallax_provision::Error),
    /// Flags or inputs that cannot be used as given; the message says what to pass instead.
    #[error("{0}")]
    Invalid(String),
    /// A process parallax starts (cargo, a worker, Slurm's clients) that could not be started
    /// or waited for.
    #[error("{doing}")]
    Process {
        /// What parallax was doing: `starting the worker …`, `running cargo`.
        doing: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A worker that could not be built; the message holds cargo's first error.
    #[error("{0}")]
    Build(String),
    /// A worker that failed: its error line.
    #[error("{0}")]
    Worker(String),
    /// A device the machine does not have.
    #[error("{0}")]
    Device(String),
    /// Slurm refused, lost or failed part of a matrix; the message says what to do.
    #[error("{0}")]
    Slurm(String),
    /// An output directory that another command holds.
    #[error("{0}")]
    InUse(String),
    /// Runs that failed, after everything that finished was written.
    #[error("{0}")]
    Failed(String),
    /// A command stopped by Ctrl-C or SIGTERM, after it wrote what finished.
    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),
}

impl From<parallax_core::error::SpecError> for Error {
    fn from(error: parallax_core::error::SpecError) -> Self {
        Error::Core(error.into())
    }
}

impl From<parallax_core::error::DataError> for Error {
    fn from(error: parallax_core::error::DataError) -> Self {
        Error::Core(error.into())
    }
}

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Process`]: `doing` failed to start or to be waited for, with `source`.
    pub fn process(doing: impl Into<String>, source: std::io::Error) -> Self {
        Error::Process {
            doing: doing.into(),
            source,
        }
    }

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

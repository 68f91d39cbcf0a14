//! Provisioning's errors. Each says what to do next in its message, and keeps its source (the
//! operating system's error, zip's, TOML's) reachable through [`std::error::Error::source`].

use std::path::PathBuf;

/// What provisioning can fail on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory of the cache that could not be read, written, moved or locked.
    #[error("cannot {doing} {}", path.display())]
    Io {
        /// What was being done (`read`, `create`, `lock`, `move the wheel to`).
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The cache directory, which could not be created.
    #[error("cannot create the cache directory {}; set PARALLAX_CACHE to a writable directory", path.display())]
    Cache {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A program provisioning runs (Python, pip) that could not be started.
    #[error("cannot run {program}")]
    Run {
        /// The program, as the message shows it.
        program: String,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// A wheel in the cache that is not a readable zip archive.
    #[error("{} is not a readable wheel", path.display())]
    Wheel {
        /// The wheel.
        path: PathBuf,
        /// zip's error.
        #[source]
        source: zip::result::ZipError,
    },
    /// The pins compiled into this build (`wheels.toml`) are inconsistent: the build is broken,
    /// not the machine.
    #[error("crates/provision/wheels.toml is invalid: {0}")]
    Pins(String),
    /// A wheel whose contents are not what the pins say.
    #[error("{0}")]
    Contents(String),
    /// This machine cannot provision as it is: another platform, too little disk space, no
    /// pip, no suitable Python. The message says what to change.
    #[error("{0}")]
    Machine(String),
    /// A library the user named (`LIBTORCH`, `LIBTORCH_USE_PYTORCH`, `PARALLAX_TF_DIR`) that
    /// is not one parallax can use. The message says what to point it at.
    #[error("{0}")]
    Override(String),
    /// A download or an install that failed (pip's, a wheel's checksum, the frameworks'
    /// environment). The message says what to check.
    #[error("{0}")]
    Install(String),
}

/// `Result` with provisioning's [`Error`].
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

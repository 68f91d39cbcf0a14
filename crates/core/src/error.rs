//! The one error type of parallax-core, grouped by concern; adapters convert into it.

use std::fmt;
use std::path::PathBuf;

pub use crate::data::DataError;
pub use crate::spec::SpecError;

/// Everything that can go wrong in parallax-core or in a backend adapter.
///
/// Every variant renders as one line that says what happened and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // === Model specs ===
    /// A spec that cannot be parsed or whose layers don't fit together.
    #[error(transparent)]
    Spec(#[from] SpecError),

    // === Data ===
    /// A data set that is missing, truncated or malformed.
    #[error(transparent)]
    Data(#[from] DataError),

    /// A batch whose examples don't have the model's input shape.
    #[error("examples of shape {actual} given to a model whose input is {expected}")]
    InputShape {
        /// The model's input, C×H×W.
        expected: String,
        /// What was given.
        actual: String,
    },

    // === Weights ===
    /// Canonical weights that don't match the model: a missing tensor, a wrong shape, a bad file.
    #[error("weights: {0}")]
    Weights(String),

    // === Backends ===
    /// A capability that this backend does not provide (yet, or ever).
    #[error("{backend} does not support {what}")]
    Unsupported {
        /// The backend's name, as in `--backends`.
        backend: String,
        /// What was asked for.
        what: String,
    },
    /// A device that is not there, or that this build of the backend cannot use.
    #[error("device {device} is not available on {backend}: {reason}")]
    Device {
        /// The backend's name.
        backend: String,
        /// The device as the user wrote it.
        device: String,
        /// Why it can't be used, and what to do.
        reason: String,
    },
    /// A failure inside the engine (a libtorch exception, a TensorFlow status).
    #[error("{backend}: {message}")]
    Engine {
        /// The backend's name.
        backend: String,
        /// The engine's own message.
        message: String,
    },

    /// Training produced a loss that is not a finite number.
    #[error("the training loss diverged to {loss} at step {step}; lower --lr or check the data")]
    Diverged {
        /// The step, counting from 1 in its epoch.
        step: usize,
        /// The loss it produced.
        loss: f32,
    },

    // === Files ===
    /// An I/O failure on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON or TOML document that could not be read or written.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file involved.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// `Result` with parallax-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Engine`]: `backend`'s engine failed with `message`.
    pub fn engine(backend: &str, message: impl fmt::Display) -> Self {
        Error::Engine {
            backend: backend.into(),
            message: message.to_string(),
        }
    }

    /// An [`Error::Device`]: `device` can't be used by `backend`, for `reason`.
    pub fn device(backend: &str, device: impl fmt::Display, reason: impl Into<String>) -> Self {
        Error::Device {
            backend: backend.into(),
            device: device.to_string(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

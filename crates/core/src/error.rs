//! The one error type of parallax-core, grouped by concern; adapters convert into it.
//!
//! Errors keep their sources: an engine's exception, an I/O error or a parser's error stays
//! reachable through [`std::error::Error::source`]. Each variant's message is nevertheless a
//! whole sentence on its own, the source's text included, because that is what a user reads;
//! [`one_line`] prints a chain without saying the same thing twice.

use std::fmt;
use std::path::PathBuf;

pub use crate::data::DataError;
pub use crate::spec::SpecError;

/// An engine's own error, kept as the source of an [`Error::Engine`].
pub type EngineError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    /// Canonical weights that don't match the model, or a weights file that can't be read.
    #[error(transparent)]
    Weights(#[from] WeightsError),

    // === Requests ===
    /// An argument outside what the model or the run allows (a GradCAM class the model does
    /// not have, a layer it does not have, zero epochs).
    #[error("{0}")]
    InvalidArgument(String),

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
    /// A failure inside the engine (a libtorch exception, a TensorFlow status), with the
    /// engine's own error as the source.
    #[error("{backend}: {source}")]
    Engine {
        /// The backend's name.
        backend: String,
        /// The engine's error.
        source: EngineError,
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

/// Defines an adapter's `engine_error` and `OrEngine` for the backend named `$backend`: the one
/// way an engine's own errors become [`Error::Engine`]. Each adapter invokes it once, in its
/// `lib.rs`, so that every module of the adapter reaches both at the crate's root.
#[macro_export]
macro_rules! engine_errors {
    ($backend:expr) => {
        /// An engine error from this adapter's engine: the engine's own error, or a message of
        /// the adapter's.
        pub(crate) fn engine_error(
            source: impl ::std::convert::Into<$crate::error::EngineError>,
        ) -> $crate::Error {
            $crate::Error::engine($backend, source)
        }

        /// Maps the engine's errors into core's `Error::Engine`, at the trait boundary.
        #[allow(
            dead_code,
            reason = "an engine whose calls return values rather than results maps none"
        )]
        pub(crate) trait OrEngine<T> {
            /// The value, or the engine's error as an engine error.
            fn or_engine(self) -> $crate::Result<T>;
        }

        impl<T, E: ::std::convert::Into<$crate::error::EngineError>> OrEngine<T>
            for ::std::result::Result<T, E>
        {
            fn or_engine(self) -> $crate::Result<T> {
                self.map_err(engine_error)
            }
        }
    };
}

/// `Result` with parallax-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Engine`]: `backend`'s engine failed with `source`, an engine error or a
    /// message of the adapter's own.
    pub fn engine(backend: &str, source: impl Into<EngineError>) -> Self {
        Error::Engine {
            backend: backend.into(),
            source: source.into(),
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

/// Canonical weights that don't fit a model, or a weights file that can't be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// A Keras weights file that does not hold what a Keras weights file holds.
    #[error("Keras weights: {message}")]
    Keras {
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is absent.
    #[error("weights: tensor {name:?} is missing")]
    Missing {
        /// The canonical name.
        name: String,
    },
    /// A tensor whose shape is not the one the model expects.
    #[error("weights: tensor {name:?} has shape {actual:?}, the model expects {expected:?}")]
    Shape {
        /// The canonical name.
        name: String,
        /// The model's canonical shape.
        expected: Vec<usize>,
        /// The tensor's shape.
        actual: Vec<usize>,
    },
    /// A tensor that is not a parameter of the model.
    #[error("weights: tensor {name:?} is not a parameter of model {model:?}")]
    Unexpected {
        /// The tensor's name.
        name: String,
        /// The model's name.
        model: String,
    },
    /// A file that is not a safetensors file of `f32` tensors.
    #[error(
        "{}: not a weights file parallax can read ({message}); pass a safetensors file of F32 tensors with canonical (PyTorch) names",
        path.display()
    )]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
        /// The reader's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// An error and its sources as one line, `outer: inner: innermost`, leaving out a source whose
/// text its outer error already says (as parallax's errors and `#[error(transparent)]` do).
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = Error::io("/data/x", io);
        assert_eq!(one_line(&error), "/data/x: no such file");
        let engine = Error::engine("tch", "out of memory");
        assert_eq!(one_line(&engine), "tch: out of memory");
        assert!(std::error::Error::source(&engine).is_some());
    }
}

//! An implementation of `parallax-core`'s [`Backend`](parallax_core::Backend) trait for PyTorch and Keras themselves, running their own Python code in an embedded CPython.
//!
//! The other adapters drive an engine from Rust; this one runs the frameworks a user writes
//! against: for `pytorch`, an `nn.Module` built from the resolved spec and trained in PyTorch's
//! eager loop with `torch.optim`; for `keras` and `keras-torch`, a functional `keras.Model`
//! trained with `model.fit`, on TensorFlow or on PyTorch. The Python side is a small module per
//! framework, kept in this crate (`src/python/`). What crosses: each layer once as a plain dict,
//! canonical weights as numpy arrays named as in a PyTorch state dict, the epoch's data set once
//! per epoch (a read-only numpy array over core's own buffer, not a copy) and its order; losses,
//! logits, weights and GradCAM's tensors come back. Metrics, checks and records stay in core.
//!
//! The interpreter loads the frameworks from the virtual environment that
//! `cargo xtask setup` makes; the worker finds it through `PARALLAX_FRAMEWORKS_VENV`.
//!
//! ```no_run
//! use parallax_core::{Backend, CpuSettings, Device, spec::presets};
//! use parallax_python::{Framework, PythonBackend};
//!
//! let backend = PythonBackend::new(Framework::Pytorch, Device::Cpu, CpuSettings::new(2))?;
//! let model = presets::mlp([1, 28, 28], 10).resolve()?;
//! let weights = parallax_core::init::canonical(&model, 42);
//! let mut net = backend.build(&model, Some(&weights))?;
//! let logits = net.predict(ndarray::Array4::zeros((4, 1, 28, 28)).view())?;
//! assert_eq!(logits.dim(), (4, 10));
//! # Ok::<(), parallax_core::Error>(())
//! ```
//!
//! - `backend.rs`: the frameworks, the device, threads, subnormals and the fairness ledger;
//! - `model.rs`: the `Model` hooks, each one call into the framework's module;
//! - `convert.rs`: the spec's layers, arrays and weights in and out of Python;
//! - `interpreter.rs`: the embedded interpreter, the environment it imports from, and Python's
//!   exceptions as core's errors.

mod backend;
mod convert;
mod interpreter;
mod model;

pub use backend::{Framework, PythonBackend, backend_named};
pub use interpreter::VENV_VARIABLE;
pub use model::PythonModel;

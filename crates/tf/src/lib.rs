//! An implementation of `parallax-core`'s [`Backend`](parallax_core::Backend) trait for TensorFlow's C API, in graph mode, through the `tensorflow` crate.
//!
//! TensorFlow is the engine under Keras. Each model is one graph, built once from the resolved
//! spec in NHWC (TensorFlow's layout on the CPU) and run by one session: the evaluation pass at
//! build time, the training pass with `Graph::add_gradients` at the first step, one update
//! subgraph per optimizer configuration. Weights cross in the canonical PyTorch layout and are
//! converted at the boundary (`convert`). It links the TensorFlow 2.21 C library, which
//! `cargo xtask setup` provisions.
//!
//! ```no_run
//! use parallax_core::{Backend, CpuSettings, Device, spec::presets};
//! use parallax_tf::TfBackend;
//!
//! let backend = TfBackend::new(Device::Cpu, CpuSettings::new(2))?;
//! let model = presets::mlp([1, 28, 28], 10).resolve()?;
//! let weights = parallax_core::init::canonical(&model, 42);
//! let mut net = backend.build(&model, Some(&weights))?;
//! let logits = net.predict(ndarray::Array4::zeros((4, 1, 28, 28)).view())?;
//! assert_eq!(logits.dim(), (4, 10));
//! # Ok::<(), parallax_core::Error>(())
//! ```
//!
//! - `backend.rs`: the session's thread pools and device, subnormals and the fairness ledger;
//! - `model.rs`: the `Model` hooks;
//! - `net.rs`: the model's graph: variables, passes, gradients, built once;
//! - `forward.rs`: each layer as graph operations, in NHWC;
//! - `convert.rs`: canonical weights and host arrays to TensorFlow's layouts and back;
//! - `optim.rs`: the optimizers as update subgraphs.

mod backend;
mod convert;
mod forward;
mod model;
mod net;
mod optim;

pub use backend::{
    BACKEND_NAME, TENSORFLOW_VERSION, TfBackend, XLA_CPU_FLAG, XLA_FLAGS_VARIABLE, backend_named,
};
pub use model::TfModel;

// `engine_error` and `OrEngine`, at the root where every module reaches them.
parallax_core::engine_errors!(BACKEND_NAME);

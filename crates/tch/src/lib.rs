//! An implementation of `parallax-core`'s [`Backend`](parallax_core::Backend) trait for libtorch through tch.
//!
//! libtorch is PyTorch's C++ engine, so this backend is the reference for PyTorch's semantics:
//! canonical weights need no conversion, batch norm and the optimizers behave as in
//! `torch.nn` and `torch.optim`. It links libtorch 2.9.0, which `cargo xtask setup` provisions.
//!
//! ```no_run
//! use parallax_core::{Backend, CpuSettings, Device, spec::presets};
//! use parallax_tch::TchBackend;
//!
//! let backend = TchBackend::new(Device::Cpu, CpuSettings::new(2))?;
//! let model = presets::mlp([1, 28, 28], 10).resolve()?;
//! let weights = parallax_core::init::canonical(&model, 42);
//! let mut net = backend.build(&model, Some(&weights))?;
//! let logits = net.predict(ndarray::Array4::zeros((4, 1, 28, 28)).view())?;
//! assert_eq!(logits.dim(), (4, 10));
//! # Ok::<(), parallax_core::Error>(())
//! ```
//!
//! - `backend.rs`: the device, threads, subnormals and the fairness ledger;
//! - `model.rs`: the `Model` hooks, and a step on batches already in libtorch;
//! - `net.rs`: the spec's tensors and the forward pass in libtorch's functional ops;
//! - `convert.rs`: host arrays and canonical weights in and out;
//! - `optim.rs`: the optimizers, as `torch.optim` writes them;
//! - `feed.rs`: an epoch's batches gathered inside libtorch;
//! - `capability.rs`: the instruction set ATen's kernels run on.

mod backend;
mod capability;
mod convert;
mod feed;
mod model;
mod net;
mod optim;

pub use backend::{BACKEND_NAME, LIBTORCH_VERSION, TchBackend, backend_named};
pub use capability::aten_cpu_capability;
pub use model::TchModel;

// `engine_error` and `OrEngine`, at the root where every module reaches them.
parallax_core::engine_errors!(BACKEND_NAME);

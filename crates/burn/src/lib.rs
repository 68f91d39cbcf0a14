//! An implementation of `parallax-core`'s [`Backend`](parallax_core::Backend) trait for burn: the pure-Rust Flex backend on the CPU, CubeCL CUDA on GPUs (feature `cuda`), and LibTorch through burn-tch (feature `tch`).
//!
//! burn is parallax's reference backend: it needs no native library, so it runs everywhere.
//!
//! ```no_run
//! use parallax_burn::{BurnBackend, BurnEngine};
//! use parallax_core::{Backend, CpuSettings, Device, spec::presets};
//!
//! let backend = BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(2))?;
//! let model = presets::mlp([1, 28, 28], 10).resolve()?;
//! let weights = parallax_core::init::canonical(&model, 42);
//! let mut net = backend.build(&model, Some(&weights))?;
//! let logits = net.predict(ndarray::Array4::zeros((4, 1, 28, 28)).view())?;
//! assert_eq!(logits.dim(), (4, 10));
//! # Ok::<(), parallax_core::Error>(())
//! ```
//!
//! - `backend.rs`: engines, devices, threads and the fairness ledger;
//! - `model.rs`: the `Model` hooks;
//! - `net.rs`: the spec's layers as burn modules and the forward pass;
//! - `convert.rs`: host arrays and canonical weights in and out;
//! - `optim.rs`: the optimizers.

mod backend;
mod convert;
mod model;
mod net;
mod optim;

pub use backend::{BACKEND_NAME, BURN_VERSION, BurnBackend, BurnEngine, backend_named};
pub use model::BurnModel;

/// The README's library example, compiled as a doctest so that it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

// `engine_error` and `OrEngine`, at the root where every module reaches them.
parallax_core::engine_errors!(BACKEND_NAME);

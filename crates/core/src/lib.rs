//! Framework-agnostic core of parallax: model specs, data, batch order, metrics, canonical weights,
//! run records, and the [`Backend`] trait that every engine adapter implements.
//!
//! **Architecture invariant:** this crate never names a framework. Host-side tensors are
//! [`ndarray`] arrays, weights use one canonical PyTorch-style layout, and everything an engine
//! does differently is the adapter's business.

pub mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod data;
pub mod denormals;
mod error;
pub mod init;
pub mod metrics;
pub mod record;
pub mod spec;
pub mod weights;

pub use backend::{
    Backend, BackendInfo, CpuSettings, Device, EpochStats, EpochTally, GradCam, Model,
    OptimizerConfig, OptimizerKind,
};
pub use data::{Batch, Dataset, EpochPlan};
pub use error::{Error, Result};
pub use spec::{Layer, ModelSpec, Padding};
pub use weights::Weights;

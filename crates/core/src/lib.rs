//! Framework-agnostic core of parallax: model specs, data, batch order, metrics, canonical weights,
//! the run protocol and its records, and the [`Backend`] trait that every engine adapter
//! implements.
//!
//! **Architecture invariant:** this crate never names a framework. Host-side tensors are
//! [`ndarray`] arrays, weights use one canonical PyTorch-style layout, and everything an engine
//! does differently is the adapter's business.

pub mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod data;
pub mod defaults;
pub mod denormals;
pub mod error;
pub mod float;
pub mod flops;
pub mod gradcam;
pub mod init;
pub mod layout;
pub mod ledger;
pub mod memory;
pub mod metrics;
mod net;
pub mod optim;
pub mod peak;
pub mod precision;
pub mod record;
pub mod roofline;
pub mod run;
pub mod spec;
pub mod stats;
pub mod weights;

pub use backend::{
    Backend, BackendInfo, Checked, CpuSettings, Device, EpochStats, EpochTally, Evaluation,
    GradCam, GradCamTarget, Model, StepClock, StepPhases, StepProgress, TracedStep,
};
pub use data::{Batch, Dataset, EpochPlan};
pub use defaults::{DefaultsMode, Factor, NativeDefaults};
pub use error::{Error, Result, WeightsError};
pub use ledger::{Ledger, Topic};
pub use net::Net;
pub use optim::{AdamFormulation, OptimizerConfig, OptimizerKind, OptimizerName};
pub use precision::{Bf16Units, Compile, Execution, Precision};
pub use spec::{Layer, ModelSpec, Padding, VarianceEstimator};
pub use weights::Weights;

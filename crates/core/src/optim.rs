//! The optimizers a run can ask for: what `--optimizer` names, and each one's hyper-parameters
//! as every adapter reads them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Adam's two formulations, which differ in where epsilon enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdamFormulation {
    /// PyTorch's Algorithm 1: `m̂ / (√v̂ + ε)`.
    #[default]
    Pytorch,
    /// Keras's: `α_t · m / (√v + ε̂)` with `α_t = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`, ε̂ added to the
    /// uncorrected root.
    Keras,
}

/// Which optimizer, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with PyTorch's momentum (`v = μv + g; w -= lr·v`, no dampening).
    Sgd {
        /// Momentum μ; 0 for plain SGD.
        momentum: f64,
    },
    /// Adam.
    Adam {
        /// First-moment decay β₁.
        beta1: f64,
        /// Second-moment decay β₂.
        beta2: f64,
        /// ε.
        epsilon: f64,
        /// Where ε enters.
        formulation: AdamFormulation,
    },
}

/// As a reader writes it: `Adam (β₁ 0.9, β₂ 0.999, ε 1e-8, PyTorch form)`, `SGD (momentum 0.9)`.
impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OptimizerKind::Sgd { momentum } if momentum == 0.0 => write!(f, "SGD"),
            OptimizerKind::Sgd { momentum } => write!(f, "SGD (momentum {momentum})"),
            OptimizerKind::Adam {
                beta1,
                beta2,
                epsilon,
                formulation,
            } => {
                let form = match formulation {
                    AdamFormulation::Pytorch => "PyTorch form",
                    AdamFormulation::Keras => "Keras form",
                };
                write!(f, "Adam (β₁ {beta1}, β₂ {beta2}, ε {epsilon:e}, {form})")
            }
        }
    }
}

/// An optimizer and its learning rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// The optimizer.
    #[serde(flatten)]
    pub kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
}

impl OptimizerConfig {
    /// Adam with PyTorch's defaults (β 0.9/0.999, ε 1e-8) and this learning rate.
    pub fn adam(lr: f64) -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
                formulation: AdamFormulation::Pytorch,
            },
            lr,
        }
    }

    /// SGD with this momentum and learning rate.
    pub fn sgd(lr: f64, momentum: f64) -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Sgd { momentum },
            lr,
        }
    }

    /// Adam in Keras's formulation with Keras's defaults (β 0.9/0.999, ε 1e-7) and this
    /// learning rate.
    pub fn adam_keras(lr: f64) -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-7,
                formulation: AdamFormulation::Keras,
            },
            lr,
        }
    }
}

/// An optimizer as `--optimizer` names it: `adam`, `adam-keras`, `sgd` (momentum 0.9) or
/// `sgd:M`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerName {
    /// PyTorch's Adam with its defaults.
    Adam,
    /// Keras's Adam with its defaults.
    AdamKeras,
    /// SGD with this momentum.
    Sgd(f64),
}

impl OptimizerName {
    /// The optimizer with learning rate `lr`, which must be positive and finite.
    pub fn with_lr(self, lr: f64) -> Result<OptimizerConfig> {
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "learning rate must be positive, got {lr}"
            )));
        }
        Ok(match self {
            OptimizerName::Adam => OptimizerConfig::adam(lr),
            OptimizerName::AdamKeras => OptimizerConfig::adam_keras(lr),
            OptimizerName::Sgd(momentum) => OptimizerConfig::sgd(lr, momentum),
        })
    }
}

impl FromStr for OptimizerName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "adam" => Ok(OptimizerName::Adam),
            "adam-keras" => Ok(OptimizerName::AdamKeras),
            "sgd" => Ok(OptimizerName::Sgd(0.9)),
            other => match other.strip_prefix("sgd:").map(str::parse::<f64>) {
                Some(Ok(momentum)) if (0.0..1.0).contains(&momentum) => {
                    Ok(OptimizerName::Sgd(momentum))
                }
                _ => Err(format!(
                    "unknown optimizer {other:?}: use adam, adam-keras, sgd or sgd:MOMENTUM (momentum in [0, 1))"
                )),
            },
        }
    }
}

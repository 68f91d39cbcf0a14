//! Controlled or native defaults: the factors on which frameworks differ by default, each
//! engine's own values for them, and how a run switches some of them on.
//!
//! A controlled run gives every engine the same initial weights, one optimizer formulation and
//! ε, and PyTorch's batch-norm conventions. A native run hands each factor back to the engine:
//! an adapter states its framework's values in [`NativeDefaults`], and
//! [`crate::run::execute`] applies the factors a request names ([`RunRequest::native`]) before
//! building, so the adapter sees only a model and an optimizer, never a mode.
//!
//! [`RunRequest::native`]: crate::record::RunRequest::native

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ledger::Topic;
use crate::optim::{AdamFormulation, OptimizerConfig, OptimizerKind};
use crate::spec::{ResolvedModel, VarianceEstimator};

/// A default on which engines differ, switched as one unit by attribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// The engine's own initial weights instead of the shared canonical ones.
    Initialisation,
    /// The engine's Adam: its ε and its formulation.
    Optimizer,
    /// The engine's batch-norm momentum.
    BatchNormMomentum,
    /// The engine's batch-norm ε.
    BatchNormEpsilon,
    /// The engine's estimator of the running variance (biased or unbiased batch variance).
    RunningVariance,
}

impl Factor {
    /// Every factor, in the order reports list them.
    pub const ALL: [Factor; 5] = [
        Factor::Initialisation,
        Factor::Optimizer,
        Factor::BatchNormMomentum,
        Factor::BatchNormEpsilon,
        Factor::RunningVariance,
    ];

    /// The factor as a report names it.
    pub fn title(self) -> &'static str {
        match self {
            Factor::Initialisation => "initialisation",
            Factor::Optimizer => "optimizer ε and formulation",
            Factor::BatchNormMomentum => "batch-norm momentum",
            Factor::BatchNormEpsilon => "batch-norm ε",
            Factor::RunningVariance => "running-variance estimator",
        }
    }

    /// The factor's name in file names and on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Factor::Initialisation => "initialisation",
            Factor::Optimizer => "optimizer",
            Factor::BatchNormMomentum => "batch-norm-momentum",
            Factor::BatchNormEpsilon => "batch-norm-epsilon",
            Factor::RunningVariance => "running-variance",
        }
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// Which defaults a comparison runs with, as `--defaults` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultsMode {
    /// The same initial weights, optimizer and batch-norm conventions on every engine.
    #[default]
    Controlled,
    /// Each engine as its framework's users get it.
    Native,
}

impl DefaultsMode {
    /// The factors this mode switches to the engine's own values.
    pub fn factors(self) -> BTreeSet<Factor> {
        match self {
            DefaultsMode::Controlled => BTreeSet::new(),
            DefaultsMode::Native => Factor::ALL.into_iter().collect(),
        }
    }
}

impl FromStr for DefaultsMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "controlled" => Ok(DefaultsMode::Controlled),
            "native" => Ok(DefaultsMode::Native),
            other => Err(format!(
                "unknown defaults {other:?}: use controlled or native"
            )),
        }
    }
}

impl fmt::Display for DefaultsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DefaultsMode::Controlled => "controlled",
            DefaultsMode::Native => "native",
        })
    }
}

/// An engine's own values on every [`Factor`] but initialisation (which the engine draws
/// itself), as its framework's users get them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NativeDefaults {
    /// Adam's default ε.
    pub adam_epsilon: f64,
    /// Where Adam's ε enters.
    pub adam_formulation: AdamFormulation,
    /// Batch norm's default momentum, in PyTorch's convention (the new batch's weight).
    pub batch_norm_momentum: f64,
    /// Batch norm's default ε.
    pub batch_norm_epsilon: f64,
    /// Batch norm's running-variance estimator.
    pub running_variance: VarianceEstimator,
}

impl NativeDefaults {
    /// The controlled values: PyTorch's conventions, which parallax holds every engine to.
    pub const CONTROLLED: NativeDefaults = NativeDefaults {
        adam_epsilon: 1e-8,
        adam_formulation: AdamFormulation::Pytorch,
        batch_norm_momentum: 0.1,
        batch_norm_epsilon: 1e-5,
        running_variance: VarianceEstimator::Unbiased,
    };
}

/// What a run used on each factor's ledger topic, for the record.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The ledger topic and the value used, one per topic the factors touch.
    pub used: Vec<(Topic, String)>,
    /// Whether the engine draws its own initial weights.
    pub native_initialisation: bool,
}

/// Switches the `factors` to `engine`'s values: Adam's ε and formulation in `optimizer`, and
/// the momentum, ε and running-variance estimator of every batch norm in `model`. On the
/// `fixed` topics ([`crate::BackendInfo::fixed`]: conventions the framework's API cannot
/// change) the engine's value runs whatever the factors say, and the ledger says so. Returns
/// what the run uses on each topic; `initial_weights` says what the shared start is when the
/// engine does not draw its own.
pub fn apply(
    factors: &BTreeSet<Factor>,
    engine: &NativeDefaults,
    fixed: &[Topic],
    optimizer: &mut OptimizerConfig,
    model: &mut ResolvedModel,
    initial_weights: &str,
) -> Applied {
    let native_initialisation = factors.contains(&Factor::Initialisation);
    if fixed.contains(&Topic::OptimizerFormulation)
        && let OptimizerKind::Adam { formulation, .. } = &mut optimizer.kind
    {
        *formulation = engine.adam_formulation;
    }
    if fixed.contains(&Topic::BatchNormRunningVariance) {
        for norm in model.norms_mut() {
            norm.running_variance = engine.running_variance;
        }
    }
    if factors.contains(&Factor::Optimizer)
        && let OptimizerKind::Adam {
            epsilon,
            formulation,
            ..
        } = &mut optimizer.kind
    {
        *epsilon = engine.adam_epsilon;
        *formulation = engine.adam_formulation;
    }
    for norm in model.norms_mut() {
        if factors.contains(&Factor::BatchNormMomentum) {
            norm.momentum = engine.batch_norm_momentum;
        }
        if factors.contains(&Factor::BatchNormEpsilon) {
            norm.epsilon = engine.batch_norm_epsilon;
        }
        if factors.contains(&Factor::RunningVariance) {
            norm.running_variance = engine.running_variance;
        }
    }
    let origin = |factor: Factor, topic: Topic| {
        if fixed.contains(&topic) {
            "native: not settable in this framework"
        } else if factors.contains(&factor) {
            "the engine's own"
        } else {
            "controlled"
        }
    };
    let norms = model.norms();
    let distinct = |value: &dyn Fn(&crate::spec::NormOp) -> String| {
        let mut values: Vec<String> = norms.iter().map(|norm| value(norm)).collect();
        values.dedup();
        if values.is_empty() {
            "no batch norm in this model".to_string()
        } else {
            values.join(", ")
        }
    };
    let (epsilon, formulation) = match optimizer.kind {
        OptimizerKind::Adam {
            epsilon,
            formulation,
            ..
        } => (
            format!("{epsilon:e}"),
            match formulation {
                AdamFormulation::Pytorch => "PyTorch's Adam",
                AdamFormulation::Keras => "Keras's Adam",
            }
            .to_string(),
        ),
        OptimizerKind::Sgd { momentum } => (
            "none (SGD)".to_string(),
            format!("SGD, PyTorch's momentum {momentum}"),
        ),
    };
    let used = vec![
        (
            Topic::Initialisation,
            if native_initialisation {
                "the engine's own draw".to_string()
            } else {
                initial_weights.to_string()
            },
        ),
        (
            Topic::OptimizerEpsilon,
            format!(
                "{epsilon} ({})",
                origin(Factor::Optimizer, Topic::OptimizerEpsilon)
            ),
        ),
        (
            Topic::OptimizerFormulation,
            format!(
                "{formulation} ({})",
                origin(Factor::Optimizer, Topic::OptimizerFormulation)
            ),
        ),
        (
            Topic::BatchNormMomentum,
            format!(
                "{} ({})",
                distinct(&|norm| norm.momentum.to_string()),
                origin(Factor::BatchNormMomentum, Topic::BatchNormMomentum)
            ),
        ),
        (
            Topic::BatchNormEpsilon,
            format!(
                "{} ({})",
                distinct(&|norm| format!("{:e}", norm.epsilon)),
                origin(Factor::BatchNormEpsilon, Topic::BatchNormEpsilon)
            ),
        ),
        (
            Topic::BatchNormRunningVariance,
            format!(
                "{} ({})",
                distinct(&|norm| norm.running_variance.to_string()),
                origin(Factor::RunningVariance, Topic::BatchNormRunningVariance)
            ),
        ),
    ];
    Applied {
        used,
        native_initialisation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ModelSource, Preset};

    fn keras_like() -> NativeDefaults {
        NativeDefaults {
            adam_epsilon: 1e-7,
            adam_formulation: AdamFormulation::Keras,
            batch_norm_momentum: 0.01,
            batch_norm_epsilon: 1e-3,
            running_variance: VarianceEstimator::Biased,
        }
    }

    #[test]
    fn each_factor_changes_only_its_own_values() {
        let spec = ModelSource::Preset(Preset::Resnet18)
            .spec([3, 32, 32], 10)
            .unwrap();
        let controlled = spec.resolve().unwrap();
        for factor in Factor::ALL {
            let mut model = controlled.clone();
            let mut optimizer = OptimizerConfig::adam(1e-3);
            let factors = BTreeSet::from([factor]);
            let applied = apply(
                &factors,
                &keras_like(),
                &[],
                &mut optimizer,
                &mut model,
                "canonical",
            );
            assert_eq!(
                applied.native_initialisation,
                factor == Factor::Initialisation
            );
            assert_eq!(
                optimizer != OptimizerConfig::adam(1e-3),
                factor == Factor::Optimizer
            );
            let norm = model.norms()[0].clone();
            assert_eq!(norm.momentum == 0.01, factor == Factor::BatchNormMomentum);
            assert_eq!(norm.epsilon == 1e-3, factor == Factor::BatchNormEpsilon);
            assert_eq!(
                norm.running_variance == VarianceEstimator::Biased,
                factor == Factor::RunningVariance
            );
            assert_eq!(applied.used.len(), 6);
        }
        assert_eq!(DefaultsMode::Native.factors().len(), Factor::ALL.len());
        assert!("keras".parse::<DefaultsMode>().is_err());
    }

    #[test]
    fn a_fixed_convention_runs_the_engines_own_whatever_the_factors() {
        let spec = ModelSource::Preset(Preset::Resnet18)
            .spec([3, 32, 32], 10)
            .unwrap();
        let mut model = spec.resolve().unwrap();
        let mut optimizer = OptimizerConfig::adam(1e-3);
        let fixed = [Topic::OptimizerFormulation, Topic::BatchNormRunningVariance];
        let applied = apply(
            &BTreeSet::new(),
            &keras_like(),
            &fixed,
            &mut optimizer,
            &mut model,
            "canonical",
        );
        let OptimizerKind::Adam {
            epsilon,
            formulation,
            ..
        } = optimizer.kind
        else {
            panic!("Adam stays Adam");
        };
        // The formulation is fixed; ε is settable, so the controlled one stays.
        assert_eq!(formulation, AdamFormulation::Keras);
        assert_eq!(epsilon, 1e-8);
        for norm in model.norms() {
            assert_eq!(norm.running_variance, VarianceEstimator::Biased);
            assert_eq!(norm.momentum, 0.1);
        }
        let said = |topic| {
            applied
                .used
                .iter()
                .find(|(used, _)| *used == topic)
                .map(|(_, text)| text.clone())
                .unwrap_or_default()
        };
        assert!(said(Topic::OptimizerFormulation).contains("not settable"));
        assert!(said(Topic::BatchNormRunningVariance).contains("not settable"));
        assert!(said(Topic::BatchNormMomentum).contains("controlled"));
    }
}

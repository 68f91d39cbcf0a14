//! Attribution of a gap between two engines A and B to the native defaults that cause it.
//!
//! The design runs, over the same seeds: C0 with both engines controlled; for each factor f a
//! configuration C_f in which B switches f to its framework's value while A stays controlled;
//! and C_n with both native. A's controlled runs of C0 serve every C_f, since its request is the
//! same there. Per seed, the gap is A − B (or ln A/B); a factor's effect is its gap minus C0's,
//! and the residual, native gap − controlled gap − the sum of the effects, is what the factors'
//! interactions account for. Every quantity gets its mean and paired 95% CI over seeds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::comparison::{Margins, Metric, interval_text, signed};
use super::{Interval, Paired, paired};
use crate::defaults::Factor;
use crate::record::{RunRecord, RunStatus};

/// One configuration of the design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "factor")]
pub enum Configuration {
    /// C0: both engines controlled.
    Controlled,
    /// C_f: B switches one factor to its own value.
    Factor(Factor),
    /// C_n: both engines native.
    Native,
}

impl Configuration {
    /// Every configuration, in the order of the design.
    pub fn all() -> Vec<Configuration> {
        let mut all = vec![Configuration::Controlled];
        all.extend(Factor::ALL.map(Configuration::Factor));
        all.push(Configuration::Native);
        all
    }

    /// The configuration's directory name.
    pub fn key(self) -> String {
        match self {
            Configuration::Controlled => "controlled".into(),
            Configuration::Factor(factor) => format!("native-{}", factor.key()),
            Configuration::Native => "native".into(),
        }
    }

    /// The configuration as the report names it, for engine `b`.
    pub fn title(self, b: &str) -> String {
        match self {
            Configuration::Controlled => "C0: both controlled".into(),
            Configuration::Factor(factor) => format!("C_f: {b}'s own {}", factor.title()),
            Configuration::Native => "C_n: both native".into(),
        }
    }
}

/// A mean over seeds with its paired 95% CI, on the metric's paired scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Seeds.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// 95% CI; `None` under 2 seeds.
    pub ci95: Option<Interval>,
    /// Two-sided p of the paired t test against 0; `None` under 2 seeds.
    pub p: Option<f64>,
}

impl Estimate {
    fn of(values: &[f64], margin: Interval) -> Option<Estimate> {
        if values.is_empty() {
            return None;
        }
        let summary: Option<Paired> = paired(values, margin);
        Some(Estimate {
            n: values.len(),
            mean: values.iter().sum::<f64>() / values.len() as f64,
            ci95: summary.as_ref().map(|s| s.ci95),
            p: summary.map(|s| s.p_t),
        })
    }

    /// Whether the 95% CI excludes 0.
    pub fn measurable(&self) -> bool {
        self.ci95.is_some_and(|ci| !ci.contains(0.0))
    }
}

/// One metric's attribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricAttribution {
    /// The metric.
    pub metric: Metric,
    /// The A − B gap in each configuration that has runs.
    pub gaps: Vec<(Configuration, Estimate)>,
    /// Each factor's effect on the gap: its C_f gap minus C0's, per seed.
    pub effects: Vec<(Factor, Estimate)>,
    /// Native gap − controlled gap − the sum of the effects: the interactions.
    pub residual: Option<Estimate>,
    /// One sentence per factor and one for the residual.
    pub lines: Vec<String>,
}

/// The attribution of the A − B gap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// The engine that stays controlled in every C_f.
    pub a: String,
    /// The engine whose factors are switched one at a time.
    pub b: String,
    /// Per metric.
    pub metrics: Vec<MetricAttribution>,
}

/// The metrics attribution reports.
pub const METRICS: [Metric; 3] = [
    Metric::TestAccuracy,
    Metric::WeightedF1,
    Metric::EpochSeconds,
];

/// Attributes the gap between `a` and `b` from each configuration's complete records.
pub fn attribute(
    a: &str,
    b: &str,
    runs: &[(Configuration, RunRecord)],
    margins: &Margins,
) -> Attribution {
    let metrics = METRICS
        .iter()
        .map(|&metric| metric_attribution(a, b, runs, margins, metric))
        .collect();
    Attribution {
        a: a.to_string(),
        b: b.to_string(),
        metrics,
    }
}

fn metric_attribution(
    a: &str,
    b: &str,
    runs: &[(Configuration, RunRecord)],
    margins: &Margins,
    metric: Metric,
) -> MetricAttribution {
    let scale = metric.scale();
    let margin = margins.interval(metric);
    let value = |configuration: Configuration, backend: &str| -> BTreeMap<u64, f64> {
        runs.iter()
            .filter(|(c, record)| {
                *c == configuration
                    && record.backend == backend
                    && record.status == RunStatus::Complete
            })
            .filter_map(|(_, record)| Some((record.seed, metric.value(record, None)?)))
            .collect()
    };
    let controlled_a = value(Configuration::Controlled, a);
    // Per configuration, the gap per seed.
    let mut gaps: BTreeMap<Configuration, BTreeMap<u64, f64>> = BTreeMap::new();
    for configuration in Configuration::all() {
        let of_a = match configuration {
            Configuration::Factor(_) => {
                let own = value(configuration, a);
                if own.is_empty() {
                    controlled_a.clone()
                } else {
                    own
                }
            }
            Configuration::Controlled | Configuration::Native => value(configuration, a),
        };
        let of_b = value(configuration, b);
        let gap: BTreeMap<u64, f64> = of_a
            .iter()
            .filter_map(|(seed, x)| Some((*seed, scale.paired_value(*x, *of_b.get(seed)?)?)))
            .collect();
        if !gap.is_empty() {
            gaps.insert(configuration, gap);
        }
    }
    let empty = BTreeMap::new();
    let controlled = gaps.get(&Configuration::Controlled).unwrap_or(&empty);
    let change = |gap: &BTreeMap<u64, f64>| -> BTreeMap<u64, f64> {
        gap.iter()
            .filter_map(|(seed, g)| Some((*seed, g - controlled.get(seed)?)))
            .collect()
    };
    let effects_by_seed: Vec<(Factor, BTreeMap<u64, f64>)> = Factor::ALL
        .iter()
        .filter_map(|&factor| {
            let gap = gaps.get(&Configuration::Factor(factor))?;
            Some((factor, change(gap)))
        })
        .collect();
    let residual_by_seed: Option<Vec<f64>> = gaps.get(&Configuration::Native).map(|native| {
        change(native)
            .iter()
            .filter_map(|(seed, total)| {
                let mut explained = 0.0;
                for (_, effect) in &effects_by_seed {
                    explained += effect.get(seed)?;
                }
                Some(total - explained)
            })
            .collect()
    });
    let estimate = |values: &BTreeMap<u64, f64>| {
        Estimate::of(&values.values().copied().collect::<Vec<_>>(), margin)
    };
    let gaps: Vec<(Configuration, Estimate)> = gaps
        .iter()
        .filter_map(|(configuration, gap)| Some((*configuration, estimate(gap)?)))
        .collect();
    let effects: Vec<(Factor, Estimate)> = effects_by_seed
        .iter()
        .filter_map(|(factor, values)| Some((*factor, estimate(values)?)))
        .collect();
    let residual = residual_by_seed.and_then(|values| Estimate::of(&values, margin));
    let with_ci = |estimate: &Estimate| match estimate.ci95 {
        Some(ci) => format!(
            "{} (95% CI {})",
            signed(scale, estimate.mean),
            interval_text(scale, ci)
        ),
        None => format!("{} (one seed, no CI)", signed(scale, estimate.mean)),
    };
    let mut lines: Vec<String> = effects
        .iter()
        .map(|(factor, estimate)| {
            if estimate.mean == 0.0 && estimate.ci95.is_none_or(|ci| ci.low == ci.high) {
                format!(
                    "{}: {b}'s own {} changes nothing: the metric came out exactly the same in all {} seeds",
                    metric.title(),
                    factor.title(),
                    estimate.n
                )
            } else if estimate.measurable() {
                format!(
                    "{}: {b}'s own {} explains {} of the {a} vs {b} gap",
                    metric.title(),
                    factor.title(),
                    with_ci(estimate)
                )
            } else {
                format!(
                    "{}: {b}'s own {} explains nothing measurable: {}",
                    metric.title(),
                    factor.title(),
                    with_ci(estimate)
                )
            }
        })
        .collect();
    if let Some(residual) = &residual {
        lines.push(format!(
            "{}: interactions (native gap − controlled gap − the effects) {}",
            metric.title(),
            with_ci(residual)
        ));
    }
    MetricAttribution {
        metric,
        gaps,
        effects,
        residual,
        lines,
    }
}

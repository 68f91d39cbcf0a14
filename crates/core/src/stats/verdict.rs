//! The verdict on one metric and one pair of engines: exactly one of six cases, checked in the
//! order of `docs/statistics.md`, from the paired intervals and the equivalence margin.

use serde::{Deserialize, Serialize};

use super::{Interval, Paired, t_quantile};

/// Which of the six cases holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// Every paired difference is exactly 0.
    Identical,
    /// The 95% CI lies wholly beyond +Δ or wholly beyond −Δ.
    MeaningfullyDifferent,
    /// The 95% CI excludes 0 and the 90% CI lies within ±Δ: real, and smaller than the margin.
    DetectableButSmall,
    /// The 95% CI includes 0 and the 90% CI lies within ±Δ (TOST at 5%).
    NoMeaningfulDifference,
    /// The 95% CI excludes 0, but its size relative to the margin is not settled.
    DetectableSizeUnclear,
    /// None of the above.
    Inconclusive,
}

impl VerdictKind {
    /// The verdict as a report writes it.
    pub fn title(self) -> &'static str {
        match self {
            VerdictKind::Identical => "Identical",
            VerdictKind::MeaningfullyDifferent => "Meaningfully different",
            VerdictKind::DetectableButSmall => "Detectable but small",
            VerdictKind::NoMeaningfulDifference => "No meaningful difference",
            VerdictKind::DetectableSizeUnclear => "Detectable, size unclear",
            VerdictKind::Inconclusive => "Inconclusive",
        }
    }
}

/// How many seeds an inconclusive comparison would need, if its mean and spread held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedsNeeded {
    /// About this many seeds in all.
    About(usize),
    /// More than this many: the difference sits too close to the margin to settle.
    MoreThan(usize),
}

/// A verdict, with the seeds that would settle it when it is inconclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The case.
    pub kind: VerdictKind,
    /// For [`VerdictKind::Inconclusive`] only.
    pub seeds_needed: Option<SeedsNeeded>,
}

/// The most seeds [`seeds_needed`] projects.
pub const MOST_SEEDS: usize = 1000;

/// The verdict on paired `differences` summarised by `paired`, against the margin.
pub fn decide(differences: &[f64], paired: &Paired, margin: Interval) -> Verdict {
    let verdict = |kind| Verdict {
        kind,
        seeds_needed: None,
    };
    if differences.iter().all(|d| *d == 0.0) {
        return verdict(VerdictKind::Identical);
    }
    let (ci95, ci90) = (paired.ci95, paired.ci90);
    if ci95.low > margin.high || ci95.high < margin.low {
        return verdict(VerdictKind::MeaningfullyDifferent);
    }
    let excludes_zero = !ci95.contains(0.0);
    let equivalent = ci90.within(margin);
    match (excludes_zero, equivalent) {
        (true, true) => verdict(VerdictKind::DetectableButSmall),
        (false, true) => verdict(VerdictKind::NoMeaningfulDifference),
        (true, false) => verdict(VerdictKind::DetectableSizeUnclear),
        (false, false) => Verdict {
            kind: VerdictKind::Inconclusive,
            seeds_needed: Some(seeds_needed(paired, margin)),
        },
    }
}

/// The fewest seeds at which, if the mean and standard deviation of the differences stayed as
/// they are, the comparison would no longer be inconclusive: either the 90% CI fits inside the
/// margin (equivalence) or the 95% CI excludes 0 (a detectable difference).
pub fn seeds_needed(paired: &Paired, margin: Interval) -> SeedsNeeded {
    let room = (margin.high - paired.mean).min(paired.mean - margin.low);
    for n in paired.n + 1..=MOST_SEEDS {
        let se = paired.sd / (n as f64).sqrt();
        let equivalent = room > 0.0 && t_quantile(0.95, n - 1) * se < room;
        let detectable = paired.mean != 0.0 && t_quantile(0.975, n - 1) * se < paired.mean.abs();
        if equivalent || detectable {
            return SeedsNeeded::About(n);
        }
    }
    SeedsNeeded::MoreThan(MOST_SEEDS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::paired;

    const MARGIN: Interval = Interval {
        low: -0.5,
        high: 0.5,
    };

    fn kind(differences: &[f64]) -> VerdictKind {
        let summary = paired(differences, MARGIN).unwrap();
        decide(differences, &summary, MARGIN).kind
    }

    #[test]
    fn each_case_is_reached_in_order() {
        assert_eq!(kind(&[0.0, 0.0, 0.0]), VerdictKind::Identical);
        assert_eq!(
            kind(&[2.0, 2.1, 1.9, 2.05]),
            VerdictKind::MeaningfullyDifferent
        );
        assert_eq!(
            kind(&[-2.0, -2.1, -1.9]),
            VerdictKind::MeaningfullyDifferent
        );
        assert_eq!(
            kind(&[0.1, 0.12, 0.09, 0.11]),
            VerdictKind::DetectableButSmall
        );
        assert_eq!(
            kind(&[0.01, -0.02, 0.015, -0.01]),
            VerdictKind::NoMeaningfulDifference
        );
        assert_eq!(
            kind(&[0.3, 0.7, 0.5, 0.6, 0.4]),
            VerdictKind::DetectableSizeUnclear
        );
        assert_eq!(kind(&[1.0, -1.2, 0.8]), VerdictKind::Inconclusive);
    }

    #[test]
    fn an_inconclusive_verdict_says_how_many_seeds_would_settle_it() {
        let differences = [0.3, -0.2, 0.4];
        let summary = paired(&differences, MARGIN).unwrap();
        let verdict = decide(&differences, &summary, MARGIN);
        let Some(SeedsNeeded::About(n)) = verdict.seeds_needed else {
            panic!("{verdict:?}");
        };
        assert!(n > 3 && n < 50, "{n}");
        // At that many seeds, the projected 90% CI fits the margin or the 95% CI excludes 0.
        let se = summary.sd / (n as f64).sqrt();
        assert!(
            summary.mean.abs() + t_quantile(0.95, n - 1) * se < 0.5
                || t_quantile(0.975, n - 1) * se < summary.mean.abs()
        );
    }
}

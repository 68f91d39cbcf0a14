//! Statistics over seeds: descriptives, paired comparisons with their intervals and tests,
//! Holm's correction, and the verdicts that decide whether a difference between two engines is
//! real (`docs/statistics.md`).
//!
//! The unit of replication is the seed: one seed is one run per engine from the same weights
//! and data order, so engines are compared **paired by seed**, never by epochs or test
//! examples. Every formula here is checked against scipy and statsmodels on the fixtures in
//! `fixtures/stats/` (made by `fixtures/stats/make_expected.py`).
//!
//! - this file: the primitives ([`describe`], [`paired`], [`holm`], the Student t helpers);
//! - [`verdict`]: the six verdicts and how many seeds would settle an inconclusive one;
//! - [`comparison`]: the metrics of run records, per backend and per pair of backends;
//! - [`attribution`]: how much of a gap between two engines each native default explains.

pub mod attribution;
pub mod comparison;
pub mod verdict;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

pub use verdict::{Verdict, VerdictKind};

/// Mean, standard deviation (N − 1), extremes and robust means of one metric over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Describe {
    /// Values.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (N − 1); `None` for one value.
    pub sd: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// MLPerf's olympic mean: one smallest and one largest value dropped; `None` under 3.
    pub olympic_mean: Option<f64>,
    /// rliable's interquartile mean: scipy's `trim_mean(values, 0.25)`.
    pub interquartile_mean: f64,
}

/// Median of a list of numbers (the mean of the middle two for an even count), NaN values left
/// out; NaN when none is left. The one median of parallax: records, peaks and the report's charts.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Descriptives of `values`, or `None` when there are none.
pub fn describe(values: &[f64]) -> Option<Describe> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = mean(values);
    let olympic_mean = (n >= 3).then(|| self::mean(&sorted[1..n - 1]));
    // scipy's trim_mean cuts int(0.25·n) values from each end.
    let cut = n / 4;
    Some(Describe {
        n,
        mean,
        sd: sample_sd(values),
        min: sorted[0],
        max: sorted[n - 1],
        olympic_mean,
        interquartile_mean: self::mean(&sorted[cut..n - cut]),
    })
}

impl Describe {
    /// The Student-t confidence interval of the mean at `level` (0.95 for 95%), the whiskers of
    /// a bar chart; `None` for one value.
    pub fn mean_interval(&self, level: f64) -> Option<Interval> {
        let sd = self.sd?;
        let half = t_quantile(1.0 - (1.0 - level) / 2.0, self.n - 1) * sd / (self.n as f64).sqrt();
        Some(Interval {
            low: self.mean - half,
            high: self.mean + half,
        })
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn sample_sd(values: &[f64]) -> Option<f64> {
    let n = values.len();
    (n >= 2).then(|| {
        let mean = mean(values);
        let squares: f64 = values.iter().map(|value| (value - mean).powi(2)).sum();
        (squares / (n - 1) as f64).sqrt()
    })
}

/// How two engines' values of a metric are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// The difference a − b (accuracy, F1).
    Difference,
    /// The log ratio ln(a / b) (times, memory): its mean is a geometric-mean ratio.
    LogRatio,
}

impl Scale {
    /// The paired quantity of one seed, or `None` where it is not defined (a non-finite value,
    /// or a ratio of values that are not positive).
    pub fn paired_value(self, a: f64, b: f64) -> Option<f64> {
        let value = match self {
            Scale::Difference => a - b,
            Scale::LogRatio if a > 0.0 && b > 0.0 => a.ln() - b.ln(),
            Scale::LogRatio => return None,
        };
        value.is_finite().then_some(value)
    }
}

/// A closed interval `[low, high]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    #[serde(with = "crate::float")]
    pub low: f64,
    /// Upper end.
    #[serde(with = "crate::float")]
    pub high: f64,
}

impl Interval {
    /// Whether the interval holds `value`.
    pub fn contains(self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }

    /// Whether the interval lies strictly inside `(margin.low, margin.high)`.
    pub fn within(self, margin: Interval) -> bool {
        margin.low < self.low && self.high < margin.high
    }
}

/// A paired comparison over seeds, on the scale of the paired quantity d (a difference or a
/// log ratio): the paired t test, its intervals, the exact sign-flip test, TOST equivalence and
/// the wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Seeds compared.
    pub n: usize,
    /// Mean of d.
    #[serde(with = "crate::float")]
    pub mean: f64,
    /// Standard deviation of d (N − 1).
    #[serde(with = "crate::float")]
    pub sd: f64,
    /// The paired t statistic, mean / (sd / √N); infinite when every d is the same non-zero
    /// value, NaN when all are zero.
    // NaN and ±∞ happen (identical runs give t = 0/0): written so that they read back.
    #[serde(with = "crate::float")]
    pub t: f64,
    /// Degrees of freedom, N − 1.
    pub df: usize,
    /// Two-sided p of the paired t test.
    #[serde(with = "crate::float")]
    pub p_t: f64,
    /// 95% confidence interval of the mean of d (paired t).
    pub ci95: Interval,
    /// 90% confidence interval, the one TOST's equivalence at 5% reads.
    pub ci90: Interval,
    /// Exact two-sided sign-flip p from 6 seeds up (all 2^N sign patterns); `None` below 6,
    /// where it can never reach 0.05, and above 24 seeds, where enumerating is too slow.
    pub p_sign_flip: Option<f64>,
    /// TOST equivalence p against the margin: the larger of the two one-sided p values.
    #[serde(with = "crate::float")]
    pub p_tost: f64,
    /// Seeds where d > 0 (the first engine's value is the larger).
    pub wins_a: usize,
    /// Seeds where d < 0.
    pub wins_b: usize,
    /// Seeds where d = 0.
    pub ties: usize,
}

/// The paired comparison of `differences` (d_i over seeds) against the equivalence `margin`,
/// or `None` under 2 seeds.
pub fn paired(differences: &[f64], margin: Interval) -> Option<Paired> {
    let n = differences.len();
    let sd = sample_sd(differences)?;
    let mean = mean(differences);
    let df = n - 1;
    let se = sd / (n as f64).sqrt();
    let t = mean / se;
    let interval = |level: f64| {
        let half = t_quantile(1.0 - (1.0 - level) / 2.0, df) * se;
        Interval {
            low: mean - half,
            high: mean + half,
        }
    };
    let (p_t, p_tost) = if se > 0.0 {
        let lower = t_upper_tail((mean - margin.low) / se, df);
        let upper = t_upper_tail((margin.high - mean) / se, df);
        (two_sided_p(t, df), lower.max(upper))
    } else {
        // Every difference is the same: the test is decided without spread.
        let p_t = if mean == 0.0 { 1.0 } else { 0.0 };
        let inside = margin.low < mean && mean < margin.high;
        (p_t, if inside { 0.0 } else { 1.0 })
    };
    Some(Paired {
        n,
        mean,
        sd,
        t,
        df,
        p_t,
        ci95: interval(0.95),
        ci90: interval(0.90),
        p_sign_flip: (6..=24).contains(&n).then(|| sign_flip_p(differences)),
        p_tost,
        wins_a: differences.iter().filter(|d| **d > 0.0).count(),
        wins_b: differences.iter().filter(|d| **d < 0.0).count(),
        ties: differences.iter().filter(|d| **d == 0.0).count(),
    })
}

/// The exact two-sided sign-flip p of the mean: the share of the 2^N sign patterns whose sum is
/// at least as far from 0 as the observed one (a relative tolerance absorbs rounding, as
/// scipy's `permutation_test` does).
pub fn sign_flip_p(differences: &[f64]) -> f64 {
    let n = differences.len();
    let observed: f64 = differences.iter().sum::<f64>().abs();
    let scale: f64 = differences.iter().map(|d| d.abs()).sum();
    let tolerance = 1e-12 * scale.max(f64::MIN_POSITIVE);
    let patterns = 1u64 << n;
    let mut extreme = 0u64;
    for pattern in 0..patterns {
        let sum: f64 = differences
            .iter()
            .enumerate()
            .map(|(i, d)| if pattern >> i & 1 == 1 { -d } else { *d })
            .sum();
        if sum.abs() >= observed - tolerance {
            extreme += 1;
        }
    }
    extreme as f64 / patterns as f64
}

/// Holm's step-down adjustment of `p` (in any order; the result is in the same order):
/// sorted ascending, p̃₍ᵢ₎ = min(1, max over j ≤ i of (m − j + 1)·p₍ⱼ₎).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &index) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[index]).min(1.0));
        adjusted[index] = running;
    }
    adjusted
}

fn students_t(df: usize) -> StudentsT {
    // A location of 0, a scale of 1 and df ≥ 1 are always valid.
    StudentsT::new(0.0, 1.0, df.max(1) as f64).expect("valid Student t parameters")
}

/// The `probability` quantile of Student's t with `df` degrees of freedom.
pub fn t_quantile(probability: f64, df: usize) -> f64 {
    students_t(df).inverse_cdf(probability)
}

/// P(T > t) for Student's t with `df` degrees of freedom.
pub fn t_upper_tail(t: f64, df: usize) -> f64 {
    students_t(df).sf(t)
}

/// The two-sided p of a t statistic: 2·P(T > |t|).
pub fn two_sided_p(t: f64, df: usize) -> f64 {
    (2.0 * t_upper_tail(t.abs(), df)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn median_leaves_out_nan() {
        assert_eq!(median(&[f64::NAN, 1.0, 3.0]), 2.0);
        assert!(median(&[f64::NAN]).is_nan());
    }

    #[test]
    fn one_value_has_no_spread_and_none_compare() {
        let one = describe(&[0.5]).unwrap();
        assert_eq!((one.sd, one.olympic_mean), (None, None));
        assert!(describe(&[]).is_none());
        let margin = Interval {
            low: -1.0,
            high: 1.0,
        };
        assert!(paired(&[0.1], margin).is_none());
    }

    #[test]
    fn the_interval_of_a_mean_is_the_paired_interval_of_the_same_values() {
        let values = [1.25, 0.5, 2.0, 1.75, 0.9];
        let margin = Interval {
            low: -1.0,
            high: 1.0,
        };
        let of_mean = describe(&values).unwrap().mean_interval(0.95).unwrap();
        let of_pairs = paired(&values, margin).unwrap().ci95;
        assert!((of_mean.low - of_pairs.low).abs() < 1e-12);
        assert!((of_mean.high - of_pairs.high).abs() < 1e-12);
        assert!(describe(&[1.0]).unwrap().mean_interval(0.95).is_none());
    }

    #[test]
    fn constant_differences_are_decided_without_spread() {
        let margin = Interval {
            low: -0.5,
            high: 0.5,
        };
        let same = paired(&[0.25, 0.25, 0.25], margin).unwrap();
        assert_eq!((same.p_t, same.p_tost), (0.0, 0.0));
        assert_eq!(
            same.ci95,
            Interval {
                low: 0.25,
                high: 0.25
            }
        );
        let zero = paired(&[0.0; 4], margin).unwrap();
        assert_eq!((zero.p_t, zero.ties), (1.0, 4));
        assert_eq!(Scale::LogRatio.paired_value(1.0, 0.0), None);
        assert_eq!(Scale::Difference.paired_value(f64::NAN, 0.0), None);
    }
}

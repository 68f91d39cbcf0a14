//! The comparison of a set of run records over seeds: each metric's descriptives per backend,
//! and per pair of backends the paired statistics, Holm's adjustment and the verdict, each as
//! one line with its numbers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::verdict::{SeedsNeeded, Verdict, VerdictKind, decide};
use super::{Describe, Interval, Paired, Scale, describe, holm, paired};
use crate::record::{RunRecord, RunStatus};
use crate::stats::median;

/// Fewer seeds than this give descriptives only.
pub const MIN_SEEDS: usize = 3;

/// A metric of a run that the comparison analyses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Test accuracy after the last epoch.
    TestAccuracy,
    /// Macro-averaged F1 after the last epoch.
    MacroF1,
    /// Weighted-averaged F1 after the last epoch.
    WeightedF1,
    /// Median training seconds of epochs 2..E (epoch 1 holds the warm-up); epoch 1's when it is
    /// the only one.
    EpochSeconds,
    /// Peak resident memory of the worker.
    PeakMemory,
    /// Seconds from building the model to the end of the first step.
    TimeToFirstStep,
    /// Training seconds until the test accuracy first reaches `--target-accuracy`.
    TimeToAccuracy,
}

impl Metric {
    /// The metrics every comparison analyses; [`Metric::TimeToAccuracy`] joins them when a
    /// target is given.
    pub const STANDARD: [Metric; 6] = [
        Metric::TestAccuracy,
        Metric::MacroF1,
        Metric::WeightedF1,
        Metric::EpochSeconds,
        Metric::PeakMemory,
        Metric::TimeToFirstStep,
    ];

    /// The metric as reports name it.
    pub fn title(self) -> &'static str {
        match self {
            Metric::TestAccuracy => "test accuracy",
            Metric::MacroF1 => "macro F1",
            Metric::WeightedF1 => "weighted F1",
            Metric::EpochSeconds => "s/epoch",
            Metric::PeakMemory => "peak RSS",
            Metric::TimeToFirstStep => "time to first step",
            Metric::TimeToAccuracy => "time to accuracy",
        }
    }

    /// How two engines' values are paired.
    pub fn scale(self) -> Scale {
        match self {
            Metric::TestAccuracy | Metric::MacroF1 | Metric::WeightedF1 => Scale::Difference,
            Metric::EpochSeconds
            | Metric::PeakMemory
            | Metric::TimeToFirstStep
            | Metric::TimeToAccuracy => Scale::LogRatio,
        }
    }

    /// The run's value of this metric, when it has one.
    pub fn value(self, record: &RunRecord, target_accuracy: Option<f64>) -> Option<f64> {
        let value = match self {
            Metric::TestAccuracy => record.test_accuracy,
            Metric::MacroF1 => record.macro_f1,
            Metric::WeightedF1 => record.weighted_f1,
            Metric::EpochSeconds => steady_epoch_seconds(record)?,
            Metric::PeakMemory => record.peak_rss_bytes as f64,
            Metric::TimeToFirstStep => record.time_to_first_step_seconds,
            Metric::TimeToAccuracy => time_to_accuracy(record, target_accuracy?)?.seconds,
        };
        value.is_finite().then_some(value)
    }

    /// Whether the metric measures speed, which only runs on the same kind of machine, each
    /// with its node to itself, can compare.
    pub fn is_speed(self) -> bool {
        matches!(
            self,
            Metric::EpochSeconds | Metric::TimeToFirstStep | Metric::TimeToAccuracy
        )
    }

    /// A value as the descriptive tables show it.
    pub fn show(self, value: f64) -> String {
        match self {
            Metric::TestAccuracy | Metric::MacroF1 | Metric::WeightedF1 => format!("{value:.4}"),
            Metric::PeakMemory => format!("{:.0} MiB", value / (1024.0 * 1024.0)),
            Metric::EpochSeconds | Metric::TimeToFirstStep | Metric::TimeToAccuracy => {
                format!("{value:.3} s")
            }
        }
    }
}

/// The median training seconds of epochs 2..E, or epoch 1's when it is the only one.
pub fn steady_epoch_seconds(record: &RunRecord) -> Option<f64> {
    let seconds: Vec<f64> = record.epochs.iter().map(|epoch| epoch.seconds).collect();
    match seconds.len() {
        0 => None,
        1 => Some(seconds[0]),
        _ => Some(median(&seconds[1..])),
    }
}

/// When a run first reached a test accuracy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reached {
    /// Cumulative training seconds at the end of that epoch.
    pub seconds: f64,
    /// The epoch, from 1.
    pub epoch: u32,
}

/// The first epoch after which `record`'s test accuracy is at least `target`.
pub fn time_to_accuracy(record: &RunRecord, target: f64) -> Option<Reached> {
    record
        .epochs
        .iter()
        .find(|epoch| epoch.test_accuracy >= target)
        .map(|epoch| Reached {
            seconds: epoch.elapsed_training_seconds,
            epoch: epoch.epoch,
        })
}

/// The equivalence margins Δ, one per kind of metric (`docs/statistics.md`'s defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Margins {
    /// Test accuracy, percentage points.
    pub accuracy_pp: f64,
    /// Macro and weighted F1, percentage points.
    pub f1_pp: f64,
    /// Seconds per epoch and time to accuracy, percent of the ratio.
    pub time_percent: f64,
    /// Peak memory, percent.
    pub memory_percent: f64,
    /// Time to first step, percent.
    pub first_step_percent: f64,
}

impl Default for Margins {
    fn default() -> Self {
        Margins {
            accuracy_pp: 0.5,
            f1_pp: 1.0,
            time_percent: 5.0,
            memory_percent: 5.0,
            first_step_percent: 10.0,
        }
    }
}

impl Margins {
    /// The margin of `metric` as the report states it (pp or %).
    pub fn shown(&self, metric: Metric) -> f64 {
        match metric {
            Metric::TestAccuracy => self.accuracy_pp,
            Metric::MacroF1 | Metric::WeightedF1 => self.f1_pp,
            Metric::EpochSeconds | Metric::TimeToAccuracy => self.time_percent,
            Metric::PeakMemory => self.memory_percent,
            Metric::TimeToFirstStep => self.first_step_percent,
        }
    }

    /// The margin on the paired quantity's scale: ±pp/100 for differences of fractions, and
    /// `[ln(1 − p/100), ln(1 + p/100)]` for log ratios.
    pub fn interval(&self, metric: Metric) -> Interval {
        let shown = self.shown(metric);
        match metric.scale() {
            Scale::Difference => Interval {
                low: -shown / 100.0,
                high: shown / 100.0,
            },
            Scale::LogRatio => Interval {
                low: (1.0 - shown / 100.0).ln(),
                high: (1.0 + shown / 100.0).ln(),
            },
        }
    }

    /// Checks that every margin is a positive number (and a ratio's below 100%).
    pub fn check(&self) -> Result<(), String> {
        let all = [
            ("accuracy", self.accuracy_pp, 100.0),
            ("f1", self.f1_pp, 100.0),
            ("time", self.time_percent, 100.0),
            ("memory", self.memory_percent, 100.0),
            ("first-step", self.first_step_percent, 100.0),
        ];
        for (name, value, most) in all {
            if !(value > 0.0 && value < most) {
                return Err(format!(
                    "--margin-{name} must be a number above 0 and below {most}, got {value}"
                ));
            }
        }
        Ok(())
    }
}

/// A paired quantity in the report's units: percentage points for differences, percent of
/// the ratio for log ratios.
pub fn shown(scale: Scale, value: f64) -> f64 {
    match scale {
        Scale::Difference => 100.0 * value,
        Scale::LogRatio => 100.0 * value.exp_m1(),
    }
}

/// The unit of [`shown`] values.
pub fn unit(scale: Scale) -> &'static str {
    match scale {
        Scale::Difference => " pp",
        Scale::LogRatio => "%",
    }
}

/// How one backend's runs went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCounts {
    /// The backend.
    pub backend: String,
    /// Complete runs, analysed.
    pub complete: usize,
    /// Runs that failed or stopped early (their records, when any, are kept and listed).
    pub incomplete: usize,
    /// Complete runs whose training loss became NaN or infinite.
    pub diverged: usize,
}

/// One backend's descriptives of one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendMetric {
    /// The metric.
    pub metric: Metric,
    /// The backend.
    pub backend: String,
    /// Over its complete runs with a value; `None` when it has none.
    pub describe: Option<Describe>,
    /// Complete runs without a value (for time to accuracy: those that never reached it).
    pub missing: usize,
}

/// The verdict on one metric and one pair of backends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairVerdict {
    /// The metric.
    pub metric: Metric,
    /// The first backend; differences are its value minus (or over) the second's.
    pub a: String,
    /// The second backend.
    pub b: String,
    /// The seeds both completed, in order.
    pub seeds: Vec<u64>,
    /// The paired quantity per seed (difference or log ratio).
    pub differences: Vec<f64>,
    /// The paired statistics on that scale.
    pub paired: Paired,
    /// The paired t p-value after Holm's correction across the pairs of this metric.
    #[serde(with = "crate::float")]
    pub p_holm: f64,
    /// The margin on the paired scale.
    pub margin: Interval,
    /// The verdict.
    pub verdict: Verdict,
    /// The verdict as one line with its numbers.
    pub line: String,
}

/// A comparison over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The backends, in the order first seen.
    pub backends: Vec<String>,
    /// The seeds with at least one complete run.
    pub seeds: Vec<u64>,
    /// The margins used.
    pub margins: Margins,
    /// `--target-accuracy`, when given.
    pub target_accuracy: Option<f64>,
    /// How each backend's runs went.
    pub runs: Vec<RunCounts>,
    /// Descriptives per metric and backend.
    pub descriptives: Vec<BackendMetric>,
    /// Verdicts per metric and pair; empty with fewer than [`MIN_SEEDS`] seeds.
    pub verdicts: Vec<PairVerdict>,
    /// Why there are no verdicts, when there are none.
    pub no_verdicts_because: Option<String>,
    /// Which speed pairs were left out, and why, when the runs' nodes ([`RunRecord::node`])
    /// differ in kind or were shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_note: Option<String>,
}

/// Whether two runs' timings can be compared: both on the same kind of machine (runs without a
/// node ran on the comparison's one machine), neither sharing its node.
fn timings_comparable(x: &RunRecord, y: &RunRecord) -> bool {
    fn exclusive(record: &RunRecord) -> bool {
        record.node.as_ref().is_none_or(|node| node.exclusive)
    }
    fn kind(record: &RunRecord) -> Option<&str> {
        record.node.as_ref().map(|node| node.kind.as_str())
    }
    exclusive(x) && exclusive(y) && kind(x) == kind(y)
}

/// Analyses `records` (one per backend and seed; incomplete ones are counted, not analysed).
/// `failed` lists the runs that left no record at all, as (backend, seed).
pub fn compare(
    records: &[RunRecord],
    failed: &[(String, u64)],
    margins: &Margins,
    target_accuracy: Option<f64>,
) -> Comparison {
    let mut backends: Vec<String> = Vec::new();
    for backend in records
        .iter()
        .map(|record| &record.backend)
        .chain(failed.iter().map(|(backend, _)| backend))
    {
        if !backends.contains(backend) {
            backends.push(backend.clone());
        }
    }
    let complete: Vec<&RunRecord> = records
        .iter()
        .filter(|record| record.status == RunStatus::Complete)
        .collect();
    let runs = backends
        .iter()
        .map(|backend| {
            let own = |record: &RunRecord| &record.backend == backend;
            RunCounts {
                backend: backend.clone(),
                complete: complete.iter().filter(|record| own(record)).count(),
                incomplete: records
                    .iter()
                    .filter(|record| record.status != RunStatus::Complete && own(record))
                    .count()
                    + failed.iter().filter(|(b, _)| b == backend).count(),
                diverged: complete
                    .iter()
                    .filter(|record| own(record))
                    .filter(|record| record.epochs.iter().any(|e| !e.train_loss.is_finite()))
                    .count(),
            }
        })
        .collect();
    let seeds: Vec<u64> = complete
        .iter()
        .map(|record| record.seed)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut metrics = Metric::STANDARD.to_vec();
    if target_accuracy.is_some() {
        metrics.push(Metric::TimeToAccuracy);
    }
    // (metric, backend) → seed → value.
    let mut values: BTreeMap<(Metric, &str), BTreeMap<u64, f64>> = BTreeMap::new();
    let mut descriptives = Vec::new();
    for &metric in &metrics {
        for backend in &backends {
            let own: Vec<&&RunRecord> = complete
                .iter()
                .filter(|record| &record.backend == backend)
                .collect();
            let by_seed: BTreeMap<u64, f64> = own
                .iter()
                .filter_map(|record| {
                    metric
                        .value(record, target_accuracy)
                        .map(|value| (record.seed, value))
                })
                .collect();
            let list: Vec<f64> = by_seed.values().copied().collect();
            descriptives.push(BackendMetric {
                metric,
                backend: backend.clone(),
                describe: describe(&list),
                missing: own.len() - list.len(),
            });
            values.insert((metric, backend.as_str()), by_seed);
        }
    }
    let most_paired = seeds.len();
    let no_verdicts_because = (most_paired < MIN_SEEDS).then(|| {
        format!(
            "{most_paired} seed{} completed: verdicts need at least {MIN_SEEDS} seeds per pair (with fewer, a 95% CI is too wide to decide anything), so only descriptives are shown; run with --seeds 3 or more",
            if most_paired == 1 { "" } else { "s" }
        )
    });
    let record_of = |backend: &str, seed: u64| {
        complete
            .iter()
            .find(|record| record.backend == backend && record.seed == seed)
            .copied()
    };
    let mut speed_pairs_left_out = 0;
    let mut verdicts = Vec::new();
    if no_verdicts_because.is_none() {
        for &metric in &metrics {
            let mut pairs = Vec::new();
            for (i, a) in backends.iter().enumerate() {
                for b in &backends[i + 1..] {
                    let (Some(of_a), Some(of_b)) = (
                        values.get(&(metric, a.as_str())),
                        values.get(&(metric, b.as_str())),
                    ) else {
                        continue;
                    };
                    let (seeds, differences): (Vec<u64>, Vec<f64>) = of_a
                        .iter()
                        .filter_map(|(seed, x)| {
                            let y = of_b.get(seed)?;
                            if metric.is_speed()
                                && let (Some(x), Some(y)) =
                                    (record_of(a, *seed), record_of(b, *seed))
                                && !timings_comparable(x, y)
                            {
                                speed_pairs_left_out += 1;
                                return None;
                            }
                            Some((*seed, metric.scale().paired_value(*x, *y)?))
                        })
                        .unzip();
                    if seeds.len() < MIN_SEEDS {
                        continue;
                    }
                    let margin = margins.interval(metric);
                    let Some(summary) = paired(&differences, margin) else {
                        continue;
                    };
                    let verdict = decide(&differences, &summary, margin);
                    pairs.push((
                        a.clone(),
                        b.clone(),
                        seeds,
                        differences,
                        summary,
                        verdict,
                        margin,
                    ));
                }
            }
            let adjusted = holm(&pairs.iter().map(|pair| pair.4.p_t).collect::<Vec<_>>());
            for ((a, b, seeds, differences, summary, verdict, margin), p_holm) in
                pairs.into_iter().zip(adjusted)
            {
                let line = verdict_line(metric, &a, &b, &summary, verdict, margins, p_holm);
                verdicts.push(PairVerdict {
                    metric,
                    a,
                    b,
                    seeds,
                    differences,
                    paired: summary,
                    p_holm,
                    margin,
                    verdict,
                    line,
                });
            }
        }
    }
    let shared = complete
        .iter()
        .any(|record| record.node.as_ref().is_some_and(|node| !node.exclusive));
    let speed_note = (speed_pairs_left_out > 0).then(|| {
        if shared {
            "No speed verdicts: the runs shared their nodes with other work (`--shared`), which disturbs timings; accuracy, F1 and memory are compared as usual. Leave out `--shared` for speed verdicts.".to_string()
        } else {
            format!(
                "Speed verdicts pair only runs on the same kind of node: {speed_pairs_left_out} pair(s) of runs ran on different kinds and were left out. Ask Slurm for one kind of node (a partition, or `--constraint`, in `--slurm-args`)."
            )
        }
    });
    Comparison {
        backends,
        seeds,
        margins: *margins,
        target_accuracy,
        runs,
        descriptives,
        verdicts,
        no_verdicts_because,
        speed_note,
    }
}

/// A signed number in the report's units, e.g. `+0.04 pp` or `−31.0%`.
pub fn signed(scale: Scale, value: f64) -> String {
    let shown = shown(scale, value);
    let text = format!("{shown:+.2}");
    format!("{}{}", text.replace('-', "−"), unit(scale))
}

/// An interval in the report's units, e.g. `−0.10 to +0.18 pp`.
pub fn interval_text(scale: Scale, interval: Interval) -> String {
    let low = format!("{:+.2}", shown(scale, interval.low)).replace('-', "−");
    let high = format!("{:+.2}", shown(scale, interval.high)).replace('-', "−");
    format!("{low} to {high}{}", unit(scale))
}

/// A p-value with two significant digits.
pub fn p_text(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

/// One verdict line: the case, the mean difference with both intervals, the margin, the
/// wins, the Holm-adjusted p, the sign-flip p from 6 seeds up, and for an inconclusive verdict
/// how many seeds would settle it.
pub fn verdict_line(
    metric: Metric,
    a: &str,
    b: &str,
    summary: &Paired,
    verdict: Verdict,
    margins: &Margins,
    p_holm: f64,
) -> String {
    let scale = metric.scale();
    let quantity = match scale {
        Scale::Difference => format!("{a} − {b}"),
        Scale::LogRatio => format!("{a} / {b} − 1"),
    };
    let mut line = format!(
        "{}, {a} vs {b}: {}: {quantity} = {} (95% CI {}; 90% CI {}), margin ±{}{}; {a} higher in {}/{} seeds, lower in {}{}; paired t p = {} (Holm)",
        metric.title(),
        verdict.kind.title(),
        signed(scale, summary.mean),
        interval_text(scale, summary.ci95),
        interval_text(scale, summary.ci90),
        margins.shown(metric),
        unit(scale),
        summary.wins_a,
        summary.n,
        summary.wins_b,
        if summary.ties > 0 {
            format!(", tied in {}", summary.ties)
        } else {
            String::new()
        },
        p_text(p_holm),
    );
    if let Some(p) = summary.p_sign_flip {
        line.push_str(&format!("; sign-flip p = {}", p_text(p)));
    }
    if verdict.kind == VerdictKind::Identical {
        line = format!(
            "{}, {a} vs {b}: Identical: every one of {} seeds gave exactly the same value",
            metric.title(),
            summary.n
        );
    }
    match verdict.seeds_needed {
        Some(SeedsNeeded::About(n)) => line.push_str(&format!("; about {n} seeds would settle it")),
        Some(SeedsNeeded::MoreThan(n)) => line.push_str(&format!(
            "; more than {n} seeds would be needed: the difference sits at the margin"
        )),
        None => {}
    }
    line
}

/// What a report without verdicts says about the scope of its numbers: no CI or p-value is
/// shown, so none is qualified.
pub fn scope_note_without_verdicts(threads: usize, cpu: &str) -> String {
    format!(
        "These numbers hold for this test set, this machine ({cpu}) and {threads} thread{}.",
        if threads == 1 { "" } else { "s" }
    )
}

/// What every report with verdicts says about the scope of its conclusions.
pub fn scope_note(threads: usize, cpu: &str) -> String {
    format!(
        "These conclusions hold for this test set, this machine ({cpu}) and {threads} thread{}; the CIs are per pair and unadjusted, the p-values are Holm-adjusted across the pairs of each metric.",
        if threads == 1 { "" } else { "s" }
    )
}

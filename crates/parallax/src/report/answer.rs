//! The report's first screen: the answer in words, one line per metric family, built from
//! core's verdicts when there are enough seeds and from the runs' own numbers when there are
//! not; then the caveats that apply, each with what removes it.

use parallax_core::data::{BuiltinDataset, DatasetName};
use parallax_core::record::RunRecord;
use parallax_core::stats::Scale;
use parallax_core::stats::comparison::{Comparison, MIN_SEEDS, Metric, PairVerdict, signed};
use parallax_core::stats::verdict::VerdictKind;

use super::Summary;
use super::numbers;

/// The answer: a line per metric family (at most six), then the caveats.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Answer {
    /// One line per metric family: accuracy, speed, memory, start-up, time to accuracy.
    pub lines: Vec<String>,
    /// What limits the lines, each with the command or install that removes it.
    pub caveats: Vec<String>,
}

impl Answer {
    /// The answer as plain text: its lines, then its caveats.
    pub(crate) fn text(&self) -> String {
        let mut out = self.lines.join("\n");
        for caveat in &self.caveats {
            out.push_str("\n- ");
            out.push_str(caveat);
        }
        out
    }
}

/// A metric family of the answer: the metric its line is about and how it names things.
struct Family {
    metric: Metric,
    /// The line's opening word.
    name: &'static str,
    /// The best engine, as the line says it ("fastest").
    best: &'static str,
    /// What the numbers measure, after the name when it is not obvious ("peak RSS").
    measure: Option<&'static str>,
}

const FAMILIES: [Family; 5] = [
    Family {
        metric: Metric::TestAccuracy,
        name: "Accuracy",
        best: "most accurate",
        measure: Some("test accuracy"),
    },
    Family {
        metric: Metric::EpochSeconds,
        name: "Speed",
        best: "fastest",
        measure: Some("per epoch"),
    },
    Family {
        metric: Metric::PeakMemory,
        name: "Memory",
        best: "leanest",
        measure: Some("peak RSS"),
    },
    Family {
        metric: Metric::TimeToFirstStep,
        name: "Start-up",
        best: "quickest",
        measure: Some("to the first step"),
    },
    Family {
        metric: Metric::TimeToAccuracy,
        name: "Time to accuracy",
        best: "quickest",
        measure: None,
    },
];

/// The answer for a comparison's summary.
pub(crate) fn answer(summary: &Summary) -> Answer {
    let mut answer = Answer::default();
    if summary.records.is_empty() {
        answer
            .lines
            .push("No run completed: see the failed runs below.".into());
        return answer;
    }
    let comparison = summary.comparison.as_ref();
    let decided = comparison.filter(|c| c.no_verdicts_because.is_none() && !c.verdicts.is_empty());
    for family in &FAMILIES {
        let line = match decided {
            Some(comparison) => decided_line(family, comparison),
            None => undecided_line(family, summary),
        };
        answer.lines.extend(line);
    }
    answer.caveats = caveats(summary, decided.is_some());
    answer
}

/// Each backend's value of `metric`: the mean over its runs, in the order the backends ran.
fn values(summary: &Summary, metric: Metric) -> Vec<(String, f64)> {
    let target = summary.comparison.as_ref().and_then(|c| c.target_accuracy);
    summary
        .one_per_backend()
        .into_iter()
        .map(|first| first.backend.as_str())
        .filter_map(|backend| {
            let runs: Vec<f64> = summary
                .records
                .iter()
                .filter(|r| r.backend == backend)
                .filter_map(|r| metric.value(r, target))
                .collect();
            (!runs.is_empty()).then(|| {
                (
                    backend.to_string(),
                    runs.iter().sum::<f64>() / runs.len() as f64,
                )
            })
        })
        .collect()
}

/// Best first: the highest accuracy, the lowest time or memory.
fn ranked(mut values: Vec<(String, f64)>, metric: Metric) -> Vec<(String, f64)> {
    let higher_is_better = metric.scale() == Scale::Difference;
    values.sort_by(|(_, x), (_, y)| {
        let order = x.total_cmp(y);
        if higher_is_better {
            order.reverse()
        } else {
            order
        }
    });
    values
}

/// Engine names as a sentence lists them: `a, b and c`.
pub(crate) fn listed(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The family's line from the verdicts: every engine against the best one, each with the
/// verdict of that pair; or, when no pair differs, one clause naming them all.
fn decided_line(family: &Family, comparison: &Comparison) -> Option<String> {
    let metric = family.metric;
    let pairs: Vec<&PairVerdict> = comparison
        .verdicts
        .iter()
        .filter(|v| v.metric == metric)
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let means: Vec<(String, f64)> = comparison
        .descriptives
        .iter()
        .filter(|d| d.metric == metric)
        .filter_map(|d| Some((d.backend.clone(), d.describe.as_ref()?.mean)))
        .collect();
    // Engines in no verdict (too few complete seeds beside any other) are listed at the end,
    // so that the best is the best of those the verdicts speak for.
    let in_a_verdict = |name: &str| pairs.iter().any(|v| v.a == name || v.b == name);
    let (ranked, undecided): (Vec<_>, Vec<_>) = ranked(means, metric)
        .into_iter()
        .partition(|(name, _)| in_a_verdict(name));
    let undecided = if undecided.is_empty() {
        String::new()
    } else {
        let items: Vec<String> = undecided
            .iter()
            .map(|(name, value)| format!("{name} {}", numbers::metric_value(metric, *value)))
            .collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        format!("; {}: too few complete seeds to decide", listed(&items))
    };
    let (best, best_value) = ranked.first()?;
    let seeds = comparison.seeds.len();
    let measure = family.measure.map(|m| format!(" {m}")).unwrap_or_default();
    let names: Vec<&str> = ranked.iter().map(|(name, _)| name.as_str()).collect();
    let margin = comparison.margins.shown(metric);
    let unit = parallax_core::stats::comparison::unit(metric.scale());
    if pairs
        .iter()
        .all(|v| v.verdict.kind == VerdictKind::Identical)
    {
        return Some(format!(
            "{}, {seeds} seeds: identical on {} in every seed ({}{measure}){undecided}.",
            family.name,
            listed(&names),
            numbers::metric_value(metric, *best_value),
        ));
    }
    let last = ranked.last().map_or(*best_value, |(_, value)| *value);
    if pairs.iter().all(|v| {
        matches!(
            v.verdict.kind,
            VerdictKind::Identical | VerdictKind::NoMeaningfulDifference
        )
    }) {
        return Some(format!(
            "{}, {seeds} seeds: no meaningful difference between {} ({} to {}{measure}; margin ±{margin}{unit}){undecided}.",
            family.name,
            listed(&names),
            numbers::metric_value(metric, last.min(*best_value)),
            numbers::metric_value(metric, last.max(*best_value)),
        ));
    }
    // The others in rank order, grouped by their verdict against the best, each group in the
    // order its first member ranks.
    let mut groups: Vec<(VerdictKind, Vec<String>)> = Vec::new();
    let mut unjudged: Vec<String> = Vec::new();
    for (other, value) in ranked.iter().skip(1) {
        let pair = pairs
            .iter()
            .find(|v| (v.a == *best && v.b == *other) || (v.a == *other && v.b == *best));
        let Some(pair) = pair else {
            unjudged.push(format!("{other} {}", numbers::metric_value(metric, *value)));
            continue;
        };
        // The pair's mean is a − b; the line reads other against best.
        let difference = if pair.a == *best {
            -pair.paired.mean
        } else {
            pair.paired.mean
        };
        // An identical pair needs no difference: it is 0.
        let item = if pair.verdict.kind == VerdictKind::Identical {
            format!("{other} {}", numbers::metric_value(metric, *value))
        } else {
            format!(
                "{other} {} ({})",
                numbers::metric_value(metric, *value),
                relative(metric.scale(), difference)
            )
        };
        match groups
            .iter_mut()
            .find(|(kind, _)| *kind == pair.verdict.kind)
        {
            Some((_, items)) => items.push(item),
            None => groups.push((pair.verdict.kind, vec![item])),
        }
    }
    let mut clauses: Vec<String> = groups
        .into_iter()
        .map(|(kind, items)| {
            let items: Vec<&str> = items.iter().map(String::as_str).collect();
            format!("{}: {}", listed(&items), kind.title().to_lowercase())
        })
        .collect();
    if !unjudged.is_empty() {
        let items: Vec<&str> = unjudged.iter().map(String::as_str).collect();
        clauses.push(format!("{}: no verdict", listed(&items)));
    }
    Some(format!(
        "{}, {seeds} seeds: {best} {} at {}{measure}; {}{undecided}.",
        family.name,
        family.best,
        numbers::metric_value(metric, *best_value),
        clauses.join("; "),
    ))
}

/// A difference to the best engine as the answer writes it: percentage points for accuracy;
/// for times and memory a percentage, or a factor from twice the best on (`3.4×`).
fn relative(scale: Scale, difference: f64) -> String {
    match scale {
        Scale::Difference => signed(scale, difference),
        Scale::LogRatio => {
            let ratio = difference.exp();
            if ratio >= 2.0 {
                format!("{}×", numbers::significant(ratio, 2))
            } else {
                let percent = 100.0 * (ratio - 1.0);
                let text = if percent.abs() < 10.0 {
                    format!("{percent:+.1}%")
                } else {
                    format!("{percent:+.0}%")
                };
                text.replace('-', "−")
            }
        }
    }
}

/// The family's line from the runs alone (fewer seeds than verdicts need): the values, and
/// that they decide nothing; accuracy says when every engine gave the very same predictions.
fn undecided_line(family: &Family, summary: &Summary) -> Option<String> {
    let metric = family.metric;
    let values = values(summary, metric);
    if values.is_empty() {
        return None;
    }
    let seeds = summary.seed_count();
    let runs = if seeds == 1 {
        "1 seed".to_string()
    } else {
        format!("{seeds} seeds")
    };
    let names: Vec<&str> = values.iter().map(|(name, _)| name.as_str()).collect();
    if metric == Metric::TestAccuracy && values.len() > 1 && same_predictions(summary) {
        return Some(format!(
            "Accuracy: identical on {} ({}, the same confusion matrix; {runs}).",
            listed(&names),
            numbers::metric_value(metric, values[0].1),
        ));
    }
    let ranked = ranked(values, metric);
    let mut each = ranked
        .iter()
        .map(|(name, value)| format!("{name} {}", numbers::metric_value(metric, *value)));
    let first = each.next()?;
    let rest: Vec<String> = each.collect();
    let measure = family
        .measure
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    if ranked.len() == 1 {
        return Some(format!("{}{measure}: {first} ({runs}).", family.name));
    }
    Some(format!(
        "{}{measure}: {first}, {}: not decided ({runs}).",
        family.name,
        rest.join(", ")
    ))
}

/// Whether every engine, in every seed, predicted exactly what the others predicted in that
/// seed: the same confusion matrix and the same test accuracy.
fn same_predictions(summary: &Summary) -> bool {
    summary.records.iter().all(|record| {
        summary
            .records
            .iter()
            .filter(|other| other.seed == record.seed)
            .all(|other| same_run_outcome(record, other))
    })
}

fn same_run_outcome(a: &RunRecord, b: &RunRecord) -> bool {
    a.confusion_matrix == b.confusion_matrix && a.test_accuracy == b.test_accuracy
}

/// The caveats that apply, each with what removes it.
fn caveats(summary: &Summary, decided: bool) -> Vec<String> {
    let mut caveats = Vec::new();
    if !decided {
        let seeds = summary.seed_count();
        caveats.push(if seeds < MIN_SEEDS {
            format!(
                "{} seed{}: differences between engines are not decided below {MIN_SEEDS} seeds. Add `--seeds 5` for verdicts.",
                seeds,
                if seeds == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "No pair of engines completed {MIN_SEEDS} seeds together, so no difference is decided: rerun with more seeds, or fix the failed runs."
            )
        });
    }
    if let Some(record) = summary.records.iter().find(|r| {
        matches!(
            r.dataset,
            DatasetName::Builtin(BuiltinDataset::FashionMnistSubset)
                | DatasetName::Placed(BuiltinDataset::FashionMnistSubset)
        )
    }) {
        caveats.push(format!(
            "The bundled subset of Fashion-MNIST ({} training examples), not the full data set: install Debian's `dataset-fashion-mnist` package, or run `cargo xtask data download fashion-mnist` where the network allows.",
            numbers::thousands(record.train_examples as u64)
        ));
    }
    if !summary.failures.is_empty() {
        caveats.push(format!(
            "{} run{} failed, and {} left out of these lines: see the failed runs below.",
            summary.failures.len(),
            if summary.failures.len() == 1 { "" } else { "s" },
            if summary.failures.len() == 1 {
                "is"
            } else {
                "are"
            }
        ));
    }
    if let Some(note) = summary
        .comparison
        .as_ref()
        .and_then(|comparison| comparison.speed_note.as_ref())
    {
        caveats.push(note.clone());
    }
    for skipped in &summary.skipped {
        caveats.push(format!(
            "{} was skipped: {}",
            skipped.backend, skipped.reason
        ));
    }
    if summary.records.iter().any(|record| {
        record
            .bf16_units
            .is_some_and(parallax_core::Bf16Units::is_emulated)
    }) {
        caveats.push(EMULATED_BF16.to_string());
    }
    for record in summary.one_per_backend() {
        if let Some(note) = &record.precision_note {
            caveats.push(format!("{}'s {}: {note}", record.backend, record.precision));
        }
    }
    caveats
}

/// The caveat of a comparison whose bf16 ran emulated.
pub const EMULATED_BF16: &str = "bf16 ran emulated on this CPU (it has neither AVX-512 BF16 nor AMX): the engines convert to f32 and back, so bf16's speed here says nothing about bf16 hardware; its accuracy still does.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{records, summary_of};

    #[test]
    fn an_emulated_bf16_comparison_warns_that_its_speed_means_nothing() {
        let mut runs = records(&[1, 2, 3]);
        assert!(
            !answer(&summary_of(runs.clone()))
                .caveats
                .iter()
                .any(|c| c == EMULATED_BF16)
        );
        for record in &mut runs {
            record.precision = parallax_core::Precision::Bf16;
            record.bf16_units = Some(parallax_core::Bf16Units::Emulated);
        }
        assert!(
            answer(&summary_of(runs.clone()))
                .caveats
                .iter()
                .any(|c| c == EMULATED_BF16)
        );
        for record in &mut runs {
            record.bf16_units = Some(parallax_core::Bf16Units::Avx512Bf16);
        }
        assert!(
            !answer(&summary_of(runs))
                .caveats
                .iter()
                .any(|c| c == EMULATED_BF16)
        );
    }

    #[test]
    fn three_seeds_answer_from_the_verdicts_and_name_every_engine() {
        let answer = answer(&summary_of(records(&[1, 2, 3])));
        assert!(answer.lines.len() <= 6, "{answer:?}");
        assert!(
            answer.lines[0]
                == "Accuracy, 3 seeds: tf most accurate at 0.8620 test accuracy; tch 0.8520 (−1.00 pp): meaningfully different.",
            "{answer:?}"
        );
        assert!(
            answer.lines[1].starts_with("Speed, 3 seeds: tch fastest at")
                && answer.lines[1].contains("tf")
                && answer.lines[1].contains("(+20%): meaningfully different."),
            "{answer:?}"
        );
        for line in &answer.lines {
            assert!(line.contains("tch") && line.contains("tf"), "{line}");
            assert!(!line.contains("Holm") && !line.contains("CI"), "{line}");
        }
        assert!(answer.caveats.is_empty(), "{answer:?}");
    }

    #[test]
    fn one_seed_claims_no_ordering_and_says_how_to_get_one() {
        let mut one = records(&[7]);
        for record in &mut one {
            record.dataset = DatasetName::Builtin(BuiltinDataset::FashionMnistSubset);
        }
        let answer = answer(&summary_of(one.clone()));
        assert!(
            answer.lines[0].starts_with(
                "Accuracy (test accuracy): tf 0.8670, tch 0.8570: not decided (1 seed)"
            ),
            "{answer:?}"
        );
        assert!(
            answer.lines[1].starts_with("Speed (per epoch): tch ")
                && answer.lines[1].ends_with(": not decided (1 seed)."),
            "{answer:?}"
        );
        assert!(answer.caveats[0].contains("`--seeds 5`"), "{answer:?}");
        assert!(
            answer.caveats[1].contains("dataset-fashion-mnist"),
            "{answer:?}"
        );
        assert!(!answer.text().contains("Holm") && !answer.text().contains("CI"));

        // The same predictions everywhere are said as such.
        for record in &mut one {
            record.test_accuracy = 0.778;
        }
        let answer = super::answer(&summary_of(one));
        assert_eq!(
            answer.lines[0],
            "Accuracy: identical on tch and tf (0.7780, the same confusion matrix; 1 seed)."
        );
    }

    /// An engine without 3 complete seeds is in no verdict: it is named apart, and the best is
    /// the best of the engines the verdicts speak for.
    #[test]
    fn an_engine_without_enough_seeds_is_named_apart() {
        let mut records = records(&[1, 2, 3]);
        let mut burn = records[0].clone();
        burn.backend = "burn".into();
        burn.test_accuracy = 0.99;
        records.push(burn);
        let answer = answer(&summary_of(records));
        assert!(
            answer.lines[0].starts_with("Accuracy, 3 seeds: tf most accurate at 0.8620")
                && answer.lines[0].ends_with("; burn 0.9900: too few complete seeds to decide."),
            "{answer:?}"
        );
    }

    #[test]
    fn differences_read_as_points_percentages_or_factors() {
        assert_eq!(relative(Scale::Difference, -0.0025), "−0.25 pp");
        assert_eq!(relative(Scale::LogRatio, 1.0211f64.ln()), "+2.1%");
        assert_eq!(relative(Scale::LogRatio, 1.3436f64.ln()), "+34%");
        assert_eq!(relative(Scale::LogRatio, 0.6157f64.ln()), "−38%");
        assert_eq!(relative(Scale::LogRatio, 40.15f64.ln()), "40×");
        assert_eq!(relative(Scale::LogRatio, 3.3636f64.ln()), "3.4×");
    }

    #[test]
    fn engines_that_never_differ_are_named_in_one_clause() {
        let mut same = records(&[1, 2, 3]);
        for record in &mut same {
            record.test_accuracy = 0.85 + record.seed as f64 * 1e-3;
        }
        let answer = answer(&summary_of(same));
        assert_eq!(
            answer.lines[0],
            "Accuracy, 3 seeds: identical on tch and tf in every seed (0.8520 test accuracy)."
        );
    }
}

//! The rows and lines that every view of the report shows (the Markdown report, the terminal,
//! the HTML page), each computed once from a [`Summary`].

use comfy_table::{Table, TableStyle};
use parallax_core::Topic;
use parallax_core::peak::MatmulPeak;
use parallax_core::record::RunRecord;
use parallax_core::stats::attribution::{Attribution, Estimate};
use parallax_core::stats::comparison::{
    Comparison, Metric, interval_text, scope_note, scope_note_without_verdicts, signed,
    time_to_accuracy,
};

use super::{Summary, answer, numbers};

/// Bytes as whole MiB, with thousands separators, for a column whose header names the unit.
pub(crate) fn mib(bytes: u64) -> String {
    numbers::whole(bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>, preset: TableStyle) -> Table {
    let mut table = Table::new();
    table.load_style(preset).set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    table
}

pub(crate) fn speed_rows(summary: &Summary) -> Vec<Vec<String>> {
    summary
        .records
        .iter()
        .map(|r| {
            let median_rate = r.train_examples as f64 / r.median_epoch_seconds;
            vec![
                summary.label(r),
                numbers::seconds(r.median_epoch_seconds),
                numbers::whole(median_rate),
                r.epochs
                    .iter()
                    .map(|e| numbers::seconds(e.seconds))
                    .collect::<Vec<_>>()
                    .join(" / "),
                numbers::seconds(r.time_to_first_step_seconds),
                mib(r.peak_rss_bytes),
                gflops_per_epoch(r),
                utilisation_per_epoch(r, summary.matmul_peak()),
            ]
        })
        .collect()
}

/// Each epoch's achieved GFLOP/s (training FLOPs from the spec over the epoch's seconds),
/// written by `show`, or a dash for a record without a FLOP count.
fn per_epoch_gflops(record: &RunRecord, show: impl Fn(f64) -> String) -> String {
    if record.flops.is_none() {
        return "—".into();
    }
    record
        .epochs
        .iter()
        .map(|epoch| record.achieved_gflops(epoch).map_or("—".into(), &show))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Each epoch's achieved GFLOP/s.
fn gflops_per_epoch(record: &RunRecord) -> String {
    per_epoch_gflops(record, |g| format!("{g:.2}"))
}

/// Each epoch's achieved GFLOP/s as a share of the comparison's measured peak, or a dash
/// without a peak.
fn utilisation_per_epoch(record: &RunRecord, peak: Option<&MatmulPeak>) -> String {
    match peak {
        Some(peak) => per_epoch_gflops(record, |g| format!("{:.0}%", 100.0 * peak.utilisation(g))),
        None => "—".into(),
    }
}

pub(crate) fn quality_rows(summary: &Summary) -> Vec<Vec<String>> {
    summary
        .records
        .iter()
        .map(|r| {
            vec![
                summary.label(r),
                format!("{:.4}", r.test_accuracy),
                format!("{:.4}", r.test_loss),
                format!("{:.4}", r.report.weighted_avg.precision),
                format!("{:.4}", r.report.weighted_avg.recall),
                format!("{:.4}", r.weighted_f1),
                format!("{:.4}", r.macro_f1),
            ]
        })
        .collect()
}

pub(crate) const SPEED: &[&str] = &[
    "backend",
    "median per epoch",
    "samples/s",
    "each epoch",
    "to first step",
    "peak RSS MiB",
    "GFLOP/s per epoch",
    "of peak",
];
pub(crate) const QUALITY: &[&str] = &[
    "backend",
    "test acc",
    "test loss",
    "weighted P",
    "weighted R",
    "weighted F1",
    "macro F1",
];

/// The fairness ledger in Markdown, topic by topic, each engine's entry on a line of its own:
/// a table's row would put every engine's prose on one line of hundreds of characters.
pub(crate) fn ledger_list(summary: &Summary) -> String {
    let (header, rows) = ledger_rows(summary);
    let mut out = String::new();
    for row in rows {
        let Some((topic, entries)) = row.split_first() else {
            continue;
        };
        out.push_str(&format!("- **{topic}**\n"));
        for (backend, entry) in header.iter().skip(1).zip(entries) {
            out.push_str(&format!("  - {backend}: {entry}\n"));
        }
    }
    out
}

/// The fairness ledger's header and rows: a row per topic, a column per backend.
pub(crate) fn ledger_rows(summary: &Summary) -> (Vec<String>, Vec<Vec<String>>) {
    let records = summary.one_per_backend();
    let mut header = vec!["topic".to_string()];
    header.extend(records.iter().map(|r| r.backend.clone()));
    let rows = Topic::ALL
        .iter()
        .map(|&topic| {
            let mut row = vec![topic.title().to_string()];
            row.extend(
                records
                    .iter()
                    .map(|r| r.ledger.get(topic).unwrap_or("(not recorded)").to_string()),
            );
            row
        })
        .collect();
    (header, rows)
}

/// The fairness ledger in a few lines: per topic a run's defaults touch, what this run used
/// and on which engines ("the same on every engine" when all agree); the topics that do not
/// apply to the model in one line; the engines' own ways of computing the rest in one line.
/// Each line is its topics' title and its text.
pub(crate) fn ledger_lines(summary: &Summary) -> Vec<(String, String)> {
    use parallax_core::ledger::run_part;
    let records = summary.one_per_backend();
    let mut lines = Vec::new();
    let mut not_applicable: Vec<&str> = Vec::new();
    let mut engines_own: Vec<&str> = Vec::new();
    for topic in Topic::ALL {
        // What each engine used, grouped: the text, and the engines that used it.
        let mut used: Vec<(&str, Vec<&str>)> = Vec::new();
        let mut described = false;
        for record in &records {
            let entry = record.ledger.get(topic).unwrap_or("(not recorded)");
            match run_part(entry) {
                (Some(text), _) => match used.iter_mut().find(|(t, _)| *t == text) {
                    Some((_, engines)) => engines.push(&record.backend),
                    None => used.push((text, vec![&record.backend])),
                },
                (None, _) => described = true,
            }
        }
        if described || used.is_empty() {
            engines_own.push(topic.title());
        } else if used
            .iter()
            .all(|(text, _)| text.starts_with("no batch norm in this model"))
        {
            not_applicable.push(topic.title());
        } else if let [(text, _)] = used.as_slice() {
            lines.push((
                capitalised(topic.title()),
                format!("{text}, the same on every engine."),
            ));
        } else {
            let groups: Vec<String> = used
                .iter()
                .map(|(text, engines)| format!("{text} on {}", answer::listed(engines)))
                .collect();
            lines.push((
                capitalised(topic.title()),
                format!("{}.", groups.join("; ")),
            ));
        }
    }
    if !not_applicable.is_empty() {
        lines.push((
            capitalised(&answer::listed(&not_applicable)),
            "not in this model (it has no batch norm).".into(),
        ));
    }
    if !engines_own.is_empty() {
        lines.push((
            capitalised(&answer::listed(&engines_own)),
            "each engine computes the same thing its own way: see the table.".into(),
        ));
    }
    lines
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Each backend's mean ± standard deviation over seeds, one row per backend.
pub(crate) fn descriptives_rows(comparison: &Comparison) -> Vec<Vec<String>> {
    comparison
        .backends
        .iter()
        .map(|backend| {
            let mut row = vec![backend.clone()];
            if let Some(runs) = comparison.runs.iter().find(|r| &r.backend == backend) {
                let mut counts = format!("{}", runs.complete);
                if runs.incomplete > 0 {
                    counts.push_str(&format!(" (+{} incomplete)", runs.incomplete));
                }
                if runs.diverged > 0 {
                    counts.push_str(&format!(" ({} diverged)", runs.diverged));
                }
                row.push(counts);
            }
            for metric in descriptive_metrics(comparison) {
                let cell = comparison
                    .descriptives
                    .iter()
                    .find(|d| d.metric == metric && &d.backend == backend)
                    .and_then(|d| {
                        let describe = d.describe.as_ref()?;
                        let mut cell = numbers::metric_value(metric, describe.mean);
                        if let Some(sd) = describe.sd {
                            cell.push_str(&format!(" ± {}", numbers::metric_value(metric, sd)));
                        }
                        if metric == Metric::TimeToAccuracy {
                            if let Some(olympic) = describe.olympic_mean {
                                cell.push_str(&format!(
                                    " (olympic {})",
                                    numbers::metric_value(metric, olympic)
                                ));
                            }
                            if d.missing > 0 {
                                cell.push_str(&format!("; {} never reached", d.missing));
                            }
                        }
                        Some(cell)
                    })
                    .unwrap_or_else(|| "—".into());
                row.push(cell);
            }
            row
        })
        .collect()
}

fn descriptive_metrics(comparison: &Comparison) -> Vec<Metric> {
    let mut metrics = Metric::STANDARD.to_vec();
    if comparison.target_accuracy.is_some() {
        metrics.push(Metric::TimeToAccuracy);
    }
    metrics
}

pub(crate) fn descriptives_header(comparison: &Comparison) -> Vec<String> {
    let mut header = vec!["backend".to_string(), "runs".to_string()];
    header.extend(descriptive_metrics(comparison).iter().map(|m| {
        if *m == Metric::TimeToAccuracy {
            format!(
                "time to {:.2}% accuracy",
                100.0 * comparison.target_accuracy.unwrap_or(0.0)
            )
        } else {
            m.title().to_string()
        }
    }));
    header
}

/// Above this many verdict lines (two pairs' worth), the terminal points to the reports, and
/// the reports fold them into a `<details>`.
pub(crate) const FOLDED_VERDICTS: usize = 12;

/// The scope of the report's numbers: with verdicts, of its conclusions, their CIs and
/// p-values; without, of the numbers alone.
pub(crate) fn scope(summary: &Summary, threads: usize, cpu: &str) -> String {
    let with_verdicts = summary
        .comparison
        .as_ref()
        .is_some_and(|c| c.no_verdicts_because.is_none() && !c.verdicts.is_empty());
    if with_verdicts {
        scope_note(threads, cpu)
    } else {
        scope_note_without_verdicts(threads, cpu)
    }
}

/// The headline numbers' header: one seed's runs, the quality and cost of each.
pub(crate) const HEADLINE: &[&str] = &[
    "backend",
    "engine",
    "test acc",
    "weighted F1",
    "macro F1",
    "median per epoch",
    "to first step",
    "peak RSS MiB",
];

/// The headline numbers, one row per run.
pub(crate) fn headline_rows(summary: &Summary) -> Vec<Vec<String>> {
    summary
        .records
        .iter()
        .map(|r| {
            vec![
                summary.label(r),
                engine_label(r),
                format!("{:.4}", r.test_accuracy),
                format!("{:.4}", r.weighted_f1),
                format!("{:.4}", r.macro_f1),
                numbers::seconds(r.median_epoch_seconds),
                numbers::seconds(r.time_to_first_step_seconds),
                mib(r.peak_rss_bytes),
            ]
        })
        .collect()
}

/// The engine as a reader knows it: the registry's label ("PyTorch 2.9 (Python, eager)"), or
/// the record's own framework and version for a backend the registry no longer lists. The
/// exact versions are in the report's Engines section.
pub(crate) fn engine_label(record: &RunRecord) -> String {
    parallax_registry::label_of(&record.backend)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{} {}", record.framework, record.framework_version))
}

/// The rows of one metric's attribution: each configuration's gap, each factor's effect and
/// the interactions, with seeds and 95% CIs.
pub(crate) fn attribution_rows(
    attribution: &Attribution,
    metric: &parallax_core::stats::attribution::MetricAttribution,
) -> Vec<Vec<String>> {
    let scale = metric.metric.scale();
    let row = |label: String, estimate: &Estimate| {
        vec![
            label,
            estimate.n.to_string(),
            signed(scale, estimate.mean),
            estimate
                .ci95
                .map(|ci| interval_text(scale, ci))
                .unwrap_or_else(|| "—".into()),
        ]
    };
    let mut rows: Vec<Vec<String>> = metric
        .gaps
        .iter()
        .map(|(configuration, estimate)| row(configuration.title(&attribution.b), estimate))
        .collect();
    rows.extend(metric.effects.iter().map(|(factor, estimate)| {
        row(
            format!("effect of {}'s own {}", attribution.b, factor.title()),
            estimate,
        )
    }));
    if let Some(residual) = &metric.residual {
        rows.push(row("interactions (residual)".into(), residual));
    }
    rows
}

/// Each run's training seconds and epoch when its test accuracy first reached `target`.
pub(crate) fn time_to_accuracy_rows(summary: &Summary, target: f64) -> Vec<Vec<String>> {
    summary
        .records
        .iter()
        .map(|record| {
            let reached = time_to_accuracy(record, target);
            vec![
                record.backend.clone(),
                record.seed.to_string(),
                reached.map_or("never".into(), |r| numbers::seconds(r.seconds)),
                reached.map_or("never".into(), |r| r.epoch.to_string()),
            ]
        })
        .collect()
}

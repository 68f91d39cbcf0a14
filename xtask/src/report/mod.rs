//! The comparison's summary (`summary.json`), its Markdown report and its terminal table; the
//! HTML report (`html`) renders the same tables and adds the charts (`charts`).

mod answer;
pub(crate) mod charts;
pub mod dir;
pub mod environment;
pub mod html;
mod numbers;
pub mod summary;

use comfy_table::{Table, TableStyle, presets};
use parallax_core::Topic;
use parallax_core::peak::{self, MatmulPeak};
use parallax_core::record::{RunRecord, RunStatus};
use parallax_core::stats::attribution::{Attribution, Estimate};
use parallax_core::stats::comparison::{
    Comparison, Metric, interval_text, scope_note, scope_note_without_verdicts, signed,
    time_to_accuracy,
};

pub use environment::{Environment, cpu_model, host_line};
use serde::{Deserialize, Serialize};
pub use summary::{Repeatability, Setup};

/// A backend that `compare` left out because it could not be made ready (its native library
/// could not be provisioned, or its worker not built), when it was not named with `--backends`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    /// Backend name.
    pub backend: String,
    /// Why, in one line.
    pub reason: String,
}

/// A run that failed, with its error line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    /// Backend name.
    pub backend: String,
    /// The run's seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The attribution configuration or `repeat`, for runs outside the main comparison.
    #[serde(default)]
    pub configuration: Option<String>,
    /// The worker's error.
    pub error: String,
}

impl Failure {
    /// The run as a short label: backend, seed and configuration.
    pub fn label(&self) -> String {
        let mut label = self.backend.clone();
        if let Some(seed) = self.seed {
            label.push_str(&format!(" seed {seed}"));
        }
        if let Some(configuration) = &self.configuration {
            label.push_str(&format!(" [{configuration}]"));
        }
        label
    }
}

/// A record of a run outside the main comparison: an attribution configuration, or a repeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaggedRecord {
    /// The configuration's key (`native-optimizer`, `native`, `repeat`...).
    pub configuration: String,
    /// The record.
    pub record: RunRecord,
}

/// All records of one comparison, the failures beside them, and the statistics over seeds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// The comparison's runs (in an attribution, the controlled ones), in the order they ran;
    /// runs that stopped early keep their finished epochs here with their status.
    pub records: Vec<RunRecord>,
    /// Runs of the attribution's other configurations and of `--repeat`.
    #[serde(default)]
    pub other_runs: Vec<TaggedRecord>,
    /// Failed runs.
    pub failures: Vec<Failure>,
    /// Descriptives and verdicts over seeds.
    #[serde(default)]
    pub comparison: Option<Comparison>,
    /// The attribution of a gap to the engines' defaults, with `--attribute`.
    #[serde(default)]
    pub attribution: Option<Attribution>,
    /// Whether each engine reproduced itself, with `--repeat`.
    #[serde(default)]
    pub repeat: Vec<Repeatability>,
    /// The command line.
    #[serde(default)]
    pub command: Option<String>,
    /// Wall seconds of the whole comparison, builds included.
    #[serde(default)]
    pub wall_seconds: Option<f64>,
    /// Backends compared by default that could not be made ready, and why.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// The machine the comparison ran on.
    #[serde(default)]
    pub environment: Option<Environment>,
}

impl Summary {
    /// The machine the runs ran on, as the scope of the conclusions names it: the cluster's
    /// nodes and their kinds when the records name them (a Slurm matrix), else the machine
    /// of the summary, else this one.
    pub fn machine_of_runs(&self) -> String {
        let mut kinds: Vec<(String, Vec<String>)> = Vec::new();
        for node in self
            .records
            .iter()
            .filter_map(|record| record.node.as_ref())
        {
            match kinds.iter_mut().find(|(kind, _)| *kind == node.kind) {
                Some((_, names)) if names.contains(&node.name) => {}
                Some((_, names)) => names.push(node.name.clone()),
                None => kinds.push((node.kind.clone(), vec![node.name.clone()])),
            }
        }
        if kinds.is_empty() {
            return self
                .environment
                .as_ref()
                .map(|environment| environment.cpu_model.clone())
                .unwrap_or_else(cpu_model);
        }
        kinds
            .iter()
            .map(|(kind, names)| {
                let plural = if names.len() == 1 { "" } else { "s" };
                format!("Slurm node{plural} {}: {kind}", names.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether the records span more than one seed.
    pub(crate) fn several_seeds(&self) -> bool {
        self.seed_count() > 1
    }

    /// How many distinct seeds the records span.
    pub(crate) fn seed_count(&self) -> usize {
        let mut seeds: Vec<u64> = self.records.iter().map(|r| r.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        seeds.len()
    }

    /// A record's row label: its backend, with its seed when there are several, and its
    /// status when it did not complete.
    pub(crate) fn label(&self, record: &RunRecord) -> String {
        let mut label = record.backend.clone();
        if self.several_seeds() {
            label.push_str(&format!(" s{}", record.seed));
        }
        if record.status != RunStatus::Complete {
            label.push_str(" (incomplete)");
        }
        label
    }

    /// The machine's f32 matrix-product peak: the best that any of the records' engines
    /// measured in this comparison ([`parallax_core::peak`]).
    pub(crate) fn matmul_peak(&self) -> Option<&MatmulPeak> {
        peak::best(self.records.iter().filter_map(|r| r.matmul_peak.as_ref()))
    }

    /// One line on the peak: the best engine's, then every engine's.
    pub(crate) fn matmul_peak_line(&self) -> Option<String> {
        let best = self.matmul_peak()?;
        let mut each: Vec<(String, f64)> = Vec::new();
        for peak in self.records.iter().filter_map(|r| r.matmul_peak.as_ref()) {
            match each
                .iter_mut()
                .find(|(backend, _)| *backend == peak.backend)
            {
                Some((_, gflops)) => *gflops = gflops.max(peak.gflops),
                None => each.push((peak.backend.clone(), peak.gflops)),
            }
        }
        let each: Vec<String> = each
            .iter()
            .map(|(backend, gflops)| format!("{backend} {gflops:.0}"))
            .collect();
        Some(format!(
            "{:.0} GFLOP/s through {} (f32 {n}×{n} product, the best of {} timed; per engine: {})",
            best.gflops,
            best.backend,
            best.repeats,
            each.join(", "),
            n = best.size
        ))
    }
}

/// Bytes as whole MiB, with thousands separators, for a column whose header names the unit.
pub(crate) fn mib(bytes: u64) -> String {
    numbers::whole(bytes as f64 / (1024.0 * 1024.0))
}

fn table(header: &[&str], rows: Vec<Vec<String>>, preset: TableStyle) -> Table {
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
fn ledger_list(summary: &Summary) -> String {
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
    let records = one_per_backend(summary);
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
    let records = one_per_backend(summary);
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

/// Each backend's first record: what is the same over seeds (engine, version, ledger).
pub(crate) fn one_per_backend(summary: &Summary) -> Vec<&RunRecord> {
    let mut seen: Vec<&RunRecord> = Vec::new();
    for record in &summary.records {
        if !seen.iter().any(|r| r.backend == record.backend) {
            seen.push(record);
        }
    }
    seen
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

/// The lines that end the terminal output: the verdicts (without them, the answer's caveats
/// said why), the attribution, the repeats, and the scope of the conclusions.
fn conclusions(summary: &Summary, threads: usize) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(comparison) = summary
        .comparison
        .as_ref()
        .filter(|c| c.no_verdicts_because.is_none())
    {
        // Many pairs would push the answer off the screen: the reports hold them.
        if comparison.verdicts.len() > FOLDED_VERDICTS {
            lines.push(format!(
                "{} verdict lines, one per metric and pair, are in report.md and report.html.",
                comparison.verdicts.len()
            ));
        } else {
            lines.extend(comparison.verdicts.iter().map(|v| v.line.clone()));
        }
    }
    if let Some(attribution) = &summary.attribution {
        for metric in &attribution.metrics {
            lines.extend(metric.lines.iter().cloned());
        }
    }
    lines.extend(summary.repeat.iter().map(|r| r.line.clone()));
    if !summary.records.is_empty() {
        lines.push(scope(summary, threads, &summary.machine_of_runs()));
    }
    lines
}

/// What `cargo xtask compare` prints at the end: the answer in words and its caveats; the table
/// of one seed's runs, or each backend's means over seeds; the failures; then one line per
/// verdict.
pub fn terminal(summary: &Summary) -> String {
    let mut out = answer::answer(summary).text();
    out.push_str("\n\n");
    out.push_str(&match &summary.comparison {
        Some(comparison) if summary.several_seeds() => {
            let header = descriptives_header(comparison);
            let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
            let mut text = table(
                &header_refs,
                descriptives_rows(comparison),
                presets::UTF8_FULL_CONDENSED,
            )
            .to_string();
            for failure in &summary.failures {
                text.push_str(&format!("\nfailed: {}: {}", failure.label(), failure.error));
            }
            text
        }
        _ => terminal_table(summary),
    });
    let threads = summary.records.first().map_or(0, |r| r.threads);
    for line in conclusions(summary, threads) {
        out.push('\n');
        out.push_str(&line);
    }
    out
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

/// The table of one seed's runs, one row per run, and the failed runs.
pub fn terminal_table(summary: &Summary) -> String {
    let mut rows = headline_rows(summary);
    for f in &summary.failures {
        rows.push(vec![f.label(), "failed".into(), f.error.clone()]);
    }
    table(HEADLINE, rows, presets::UTF8_FULL_CONDENSED).to_string()
}

/// `report.md`: one table per metric family, one row per backend.
pub fn markdown(summary: &Summary, setup: &Setup) -> String {
    let md = presets::ASCII_MARKDOWN;
    let mut out = String::new();
    let first = summary.records.first();
    out.push_str("# parallax comparison\n\n");
    let answer = answer::answer(summary);
    for line in &answer.lines {
        match line.split_once(": ") {
            Some((family, rest)) => out.push_str(&format!("- **{family}:** {rest}\n")),
            None => out.push_str(&format!("- {line}\n")),
        }
    }
    out.push('\n');
    for caveat in &answer.caveats {
        out.push_str(&format!("- {caveat}\n"));
    }
    if !answer.caveats.is_empty() {
        out.push('\n');
    }
    out.push_str(&description(summary, setup));
    out.push('\n');
    out.push_str("Every backend saw the same examples in the same order; within a seed the engines ran one after another, their order rotating from seed to seed.\n");
    if let (Some(command), Some(wall)) = (&summary.command, summary.wall_seconds) {
        out.push_str(&format!(
            "\nReproduce with `{command}` (this run took {:.1} min of wall time).\n",
            wall / 60.0
        ));
    }
    out.push('\n');
    out.push_str(&verdict_sections(summary, setup.threads));

    out.push_str("## Engines\n\n");
    let engines = one_per_backend(summary)
        .into_iter()
        .map(|r| {
            vec![
                r.backend.clone(),
                r.framework.clone(),
                r.framework_version.clone(),
                r.device.to_string(),
                r.threads.to_string(),
                if r.flush_denormals { "yes" } else { "no" }.to_string(),
                r.git_revision.clone(),
            ]
        })
        .collect();
    out.push_str(
        &table(
            &[
                "backend",
                "engine",
                "version",
                "device",
                "threads",
                "flush subnormals",
                "git",
            ],
            engines,
            md,
        )
        .to_string(),
    );

    out.push_str("\n\n## Speed and memory\n\nSeconds per epoch cover the training loop only; the median is robust to the first epoch's warm-up, which `to first step` shows on its own (build, weight import and first step). GFLOP/s are each epoch's training FLOPs, counted from the spec (forward and backward per example, the optimizer's update per step; a multiply-add is 2 FLOPs), over its seconds; `of peak` divides them by the machine's f32 matrix-product peak, measured through every engine in the same comparison (the best of them).\n\n");
    if let Some(line) = summary.matmul_peak_line() {
        out.push_str(&format!("Peak: {line}.\n\n"));
    }
    out.push_str(&table(SPEED, speed_rows(summary), md).to_string());

    out.push_str("\n\n## Quality (test set, after the last epoch)\n\n");
    out.push_str(&table(QUALITY, quality_rows(summary), md).to_string());

    out.push_str("\n\n## Test accuracy after each epoch\n\nWith the cumulative training seconds at that point: the data of a time-to-accuracy curve.\n\n");
    let epochs = summary
        .records
        .iter()
        .map(|r| r.epochs.len())
        .max()
        .unwrap_or(0);
    let mut header = vec!["backend".to_string()];
    header.extend((1..=epochs).map(|e| format!("epoch {e}")));
    let rows = summary
        .records
        .iter()
        .map(|r| {
            let mut row = vec![summary.label(r)];
            row.extend(r.epochs.iter().map(|e| {
                format!(
                    "{:.4} ({})",
                    e.test_accuracy,
                    numbers::seconds(e.elapsed_training_seconds)
                )
            }));
            row
        })
        .collect();
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    out.push_str(&table(&header_refs, rows, md).to_string());

    if let Some(first) = first {
        out.push_str("\n\n## Per-class F1\n\n");
        let mut header = vec!["backend".to_string()];
        header.extend(first.class_names.iter().cloned());
        let rows = summary
            .records
            .iter()
            .map(|r| {
                let mut row = vec![summary.label(r)];
                row.extend(r.report.per_class.iter().map(|c| format!("{:.3}", c.f1)));
                row
            })
            .collect();
        let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push_str(&table(&header_refs, rows, md).to_string());
    }

    out.push_str(
        "\n\n## Fairness ledger\n\nWhat this run made every engine do, and where they differ.\n\n",
    );
    for (title, text) in ledger_lines(summary) {
        out.push_str(&format!("- **{title}:** {text}\n"));
    }
    out.push_str("\n<details><summary>Each engine's defaults, topic by topic</summary>\n\n");
    out.push_str(&ledger_list(summary));
    out.push_str("\n</details>\n");

    if !summary.skipped.is_empty() {
        out.push_str("\n## Skipped backends\n\n");
        for skipped in &summary.skipped {
            out.push_str(&format!("- {}: {}\n", skipped.backend, skipped.reason));
        }
    }
    if !summary.failures.is_empty() {
        out.push_str("\n## Failed runs\n\n");
        let rows = summary
            .failures
            .iter()
            .map(|f| vec![f.label(), f.error.clone()])
            .collect();
        out.push_str(&table(&["backend", "error"], rows, md).to_string());
        out.push('\n');
    }
    out
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

/// What was compared, in one sentence: model, data, epochs, batch, optimizer, seeds, initial
/// weights, defaults, threads and device.
pub(crate) fn description(summary: &Summary, setup: &Setup) -> String {
    let first = summary.records.first();
    let mut seeds: Vec<u64> = summary.records.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let defaults = if summary.attribution.is_some() {
        "controlled defaults for the comparison, and the attribution's configurations below"
            .to_string()
    } else if setup.native.is_empty() {
        "controlled defaults".to_string()
    } else {
        "each engine's native defaults".to_string()
    };
    format!(
        "Model `{}` on `{}` ({} training, {} test examples), {} epochs, batch {}, optimizer {} at lr {}, {} seed{} ({}), {} initial weights, {defaults}, {} threads, device {}.",
        setup.model,
        first.map_or(setup.dataset, |r| r.dataset),
        numbers::thousands(first.map_or(0, |r| r.train_examples as u64)),
        numbers::thousands(first.map_or(0, |r| r.test_examples as u64)),
        setup.epochs,
        setup.batch_size,
        setup.optimizer.kind,
        setup.optimizer.lr,
        seeds.len(),
        if seeds.len() == 1 { "" } else { "s" },
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        match (
            &setup.init,
            setup
                .native
                .contains(&parallax_core::Factor::Initialisation)
        ) {
            (_, true) => "each engine's own".to_string(),
            (parallax_core::record::InitMode::Canonical, false) => "shared canonical".to_string(),
            (parallax_core::record::InitMode::Native, false) => "each engine's own".to_string(),
            (parallax_core::record::InitMode::File(path), false) =>
                format!("shared, from {}", path.display()),
        },
        setup.threads,
        setup.device,
    )
}

/// The report's statistical sections: the verdicts (or why there are none), the descriptives
/// over seeds, the attribution and the repeats.
fn verdict_sections(summary: &Summary, threads: usize) -> String {
    let md = presets::ASCII_MARKDOWN;
    let mut out = String::new();
    let Some(comparison) = &summary.comparison else {
        return out;
    };
    // Without verdicts, the answer's caveats say why and what gives them.
    if comparison.no_verdicts_because.is_none() {
        out.push_str("## Verdicts\n\n");
        {
            out.push_str("One verdict per metric and pair, paired by seed. The 95% and 90% CIs are per pair and unadjusted (paired t); the p-values are Holm-adjusted across the pairs of each metric. Accuracy and F1 differences are in percentage points; times and memory are geometric-mean ratios in percent.\n\n");
            // Many pairs fold away, as on the page: the answer above draws on them.
            let folded = comparison.verdicts.len() > FOLDED_VERDICTS;
            if folded {
                out.push_str(&format!(
                    "<details><summary>All {} verdicts, one per metric and pair</summary>\n\n",
                    comparison.verdicts.len()
                ));
            }
            for verdict in &comparison.verdicts {
                out.push_str(&format!("- {}\n", verdict.line));
            }
            if folded {
                out.push_str("\n</details>\n");
            }
            out.push('\n');
        }
    }
    if !summary.records.is_empty() {
        out.push_str(&format!(
            "{}\n\n",
            scope(summary, threads, &summary.machine_of_runs())
        ));
    }
    out.push_str("## Over seeds\n\nMean ± standard deviation over each backend's complete runs; s/epoch is the median of epochs 2 and later (epoch 1 holds the warm-up).\n\n");
    let header = descriptives_header(comparison);
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    out.push_str(&table(&header_refs, descriptives_rows(comparison), md).to_string());
    out.push_str("\n\n");
    if let Some(target) = comparison.target_accuracy {
        out.push_str(&format!(
            "## Time to {:.2}% test accuracy\n\nEach run's training seconds (evaluation excluded) and epoch when its test accuracy first reached the target; runs that never did are shown, not dropped.\n\n",
            100.0 * target
        ));
        let rows = time_to_accuracy_rows(summary, target);
        out.push_str(&table(&["backend", "seed", "training time", "epoch"], rows, md).to_string());
        out.push_str("\n\n");
    }
    if let Some(attribution) = &summary.attribution {
        out.push_str(&format!(
            "## Attribution of the {a} vs {b} gap\n\nC0 runs both engines controlled; each C_f switches one of {b}'s defaults to its framework's value while {a} stays controlled ({a}'s C0 runs serve there); C_n runs both native. A factor's effect is its C_f gap minus the C0 gap, per seed; the interactions are the native gap minus the controlled gap minus the effects.\n\n",
            a = attribution.a,
            b = attribution.b
        ));
        for metric in &attribution.metrics {
            out.push_str(&format!("### {}\n\n", metric.metric.title()));
            let rows = attribution_rows(attribution, metric);
            let quantity = format!("{} vs {} gap", attribution.a, attribution.b);
            out.push_str(
                &table(&["configuration", "seeds", &quantity, "95% CI"], rows, md).to_string(),
            );
            out.push_str("\n\n");
            for line in &metric.lines {
                out.push_str(&format!("- {line}\n"));
            }
            out.push('\n');
        }
    }
    if !summary.repeat.is_empty() {
        out.push_str("## Determinism\n\nThe first seed run twice per backend.\n\n");
        for repeat in &summary.repeat {
            out.push_str(&format!("- {}\n", repeat.line));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use parallax_core::record::RunRequest;

    #[test]
    fn the_report_has_every_section_and_lists_failures() {
        let summary = Summary {
            records: Vec::new(),
            failures: vec![Failure {
                backend: "tf".into(),
                seed: Some(1),
                configuration: None,
                error: "no GPU".into(),
            }],
            ..Summary::default()
        };
        let request = request();
        assert!(!request.save_weights);
        let markdown = markdown(&summary, &Setup::of_request(&request));
        for section in [
            "## Engines",
            "## Speed and memory",
            "## Quality",
            "## Test accuracy after each epoch",
            "## Fairness ledger",
            "## Failed runs",
        ] {
            assert!(markdown.contains(section), "missing {section}");
        }
        assert!(markdown.contains("| tf seed 1 | no GPU |"), "{markdown}");
        assert!(terminal_table(&summary).contains("failed"));
    }

    /// Records of two backends over `seeds`, made from the committed version-1 record, with tf
    /// 1 pp more accurate and 20% slower per epoch than tch in every seed.
    pub(crate) fn records(seeds: &[u64]) -> Vec<RunRecord> {
        let path = crate::cargo::repo_root().join("fixtures/records/v1-tch-mlp.json");
        let base = RunRecord::load(&path).unwrap();
        let mut records = Vec::new();
        for &seed in seeds {
            for (backend, accuracy, slower) in [("tch", 0.85, 1.0), ("tf", 0.86, 1.2)] {
                let mut record = base.clone();
                record.backend = backend.into();
                record.seed = seed;
                record.test_accuracy = accuracy + seed as f64 * 1e-3;
                for epoch in &mut record.epochs {
                    epoch.seconds *= slower * (1.0 + seed as f64 * 0.01);
                }
                records.push(record);
            }
        }
        records
    }

    pub(crate) fn summary_of(records: Vec<RunRecord>) -> Summary {
        let comparison = parallax_core::stats::comparison::compare(
            &records,
            &[],
            &Default::default(),
            Some(0.5),
        );
        Summary {
            records,
            comparison: Some(comparison),
            ..Summary::default()
        }
    }

    /// The setup of [`request`]'s runs.
    pub(crate) fn setup() -> Setup {
        Setup::of_request(&request())
    }

    pub(crate) fn request() -> RunRequest {
        serde_json::from_value(serde_json::json!({
            "backend": "tch", "device": "cpu", "threads": 2, "flush_denormals": true,
            "model": "mlp", "dataset": "fashion-mnist", "data_dir": null,
            "cache_dir": "/tmp", "fixtures_dir": "/tmp", "image_size": 64, "image_channels": 3,
            "epochs": 3, "batch_size": 64,
            "optimizer": {"kind": "sgd", "momentum": 0.9, "lr": 0.1},
            "seed": 1, "init": "canonical", "limit_train": null, "git_revision": "x"
        }))
        .unwrap()
    }

    /// The ledger reads in a few lines: agreement said once, differences by engine, what the
    /// model lacks in one line, the engines' own ways in another.
    #[test]
    fn the_ledger_says_what_agrees_and_what_differs_in_a_line_each() {
        use parallax_core::ledger::run_entry;
        let mut records = records(&[1]);
        for record in &mut records {
            record.ledger = parallax_core::Ledger::from_fn(|topic| match topic {
                Topic::OptimizerEpsilon => run_entry("1e-8 (controlled)", "x"),
                Topic::OptimizerFormulation if record.backend == "tf" => {
                    run_entry("Keras's Adam (native)", "y")
                }
                Topic::OptimizerFormulation => run_entry("PyTorch's Adam (controlled)", "y"),
                Topic::BatchNormMomentum | Topic::BatchNormEpsilon => {
                    run_entry("no batch norm in this model (controlled)", "z")
                }
                Topic::BatchNormRunningVariance if record.backend == "tf" => {
                    run_entry("no batch norm in this model (native: not settable)", "z")
                }
                Topic::BatchNormRunningVariance => {
                    run_entry("no batch norm in this model (controlled)", "z")
                }
                other => format!("how {} does {other}", record.backend),
            });
        }
        let lines = ledger_lines(&summary_of(records));
        let text: Vec<String> = lines.iter().map(|(t, l)| format!("{t}: {l}")).collect();
        assert!(
            text.contains(&"Optimizer ε: 1e-8 (controlled), the same on every engine.".to_string()),
            "{text:#?}"
        );
        assert!(text.contains(&"Optimizer formulation: PyTorch's Adam (controlled) on tch; Keras's Adam (native) on tf.".to_string()), "{text:#?}");
        assert!(text.contains(&"Batch-norm momentum, batch-norm ε and batch-norm running variance: not in this model (it has no batch norm).".to_string()), "{text:#?}");
        assert!(
            text.last().unwrap().starts_with(
                "Initialisation, padding, layout, subnormals, threads and loss: each engine"
            ),
            "{text:#?}"
        );
        assert!(lines.len() <= 5);
    }

    /// With many pairs, the terminal keeps to the answer, the table and a pointer to the
    /// verdicts, so that the answer stays on the screen.
    #[test]
    fn many_pairs_fold_their_verdicts_in_the_terminal() {
        let mut all = records(&[1, 2, 3]);
        for (name, faster) in [("burn", 0.5), ("pytorch", 0.7), ("keras", 0.9)] {
            for mut record in records(&[1, 2, 3])
                .into_iter()
                .filter(|r| r.backend == "tch")
            {
                record.backend = name.into();
                for epoch in &mut record.epochs {
                    epoch.seconds *= faster;
                }
                all.push(record);
            }
        }
        let printed = terminal(&summary_of(all));
        assert!(printed.starts_with("Accuracy, 3 seeds: "), "{printed}");
        assert!(
            printed.contains("70 verdict lines, one per metric and pair, are in report.md"),
            "{printed}"
        );
        assert!(!printed.contains("paired t p"), "{printed}");
        assert!(printed.lines().count() < 40, "{printed}");
    }

    #[test]
    fn three_seeds_give_verdict_lines_first_and_one_seed_says_why_it_gives_none() {
        let summary = summary_of(records(&[1, 2, 3]));
        let text = markdown(&summary, &setup());
        let verdicts = text.find("## Verdicts").expect("a verdicts section");
        assert!(verdicts < text.find("## Engines").unwrap());
        assert!(
            text.contains(
                "- test accuracy, tch vs tf: Meaningfully different: tch − tf = −1.00 pp"
            ),
            "{text}"
        );
        assert!(
            text.contains("s/epoch, tch vs tf: Meaningfully different: tch / tf − 1 = −16.67%")
        );
        assert!(text.contains("These conclusions hold for this test set"));
        assert!(text.contains("## Time to 50.00% test accuracy"));
        let printed = terminal(&summary);
        assert!(
            printed
                .trim_end()
                .ends_with("Holm-adjusted across the pairs of each metric.")
        );
        assert!(printed.contains("│ tch"), "{printed}");

        // The committed version-1 record predates FLOP counts: its GFLOP/s are a dash.
        assert!(text.contains("| — |") || text.contains("| —"), "{text}");
        let mut counted = records(&[7]);
        for record in &mut counted {
            record.flops = Some(parallax_core::flops::FlopCount {
                forward_per_example: 200_000,
                backward_per_example: 300_000,
                optimizer_per_step: 1_000,
            });
        }
        let epoch = counted[0].epochs[0].clone();
        let expected = counted[0].achieved_gflops(&epoch).unwrap();
        let text = markdown(&summary_of(counted.clone()), &setup());
        assert!(text.contains(&format!("{expected:.2}")), "{text}");
        // Without a measured peak there is no utilisation; with one, the best engine's peak
        // divides every engine's GFLOP/s.
        assert!(!text.contains("Peak:"), "{text}");
        for (record, gflops) in counted.iter_mut().zip([2.0 * expected, 4.0 * expected]) {
            record.matmul_peak = Some(parallax_core::peak::MatmulPeak {
                backend: record.backend.clone(),
                size: 2048,
                repeats: 5,
                best_seconds: parallax_core::peak::product_flops(2048) / gflops / 1e9,
                median_seconds: 0.2,
                gflops,
            });
        }
        let best = counted[1].backend.clone();
        let text = markdown(&summary_of(counted), &setup());
        assert!(text.contains(&format!("through {best}")), "{text}");
        assert!(text.contains("| 25%"), "{text}");
        let one = summary_of(records(&[7]));
        let text = markdown(&one, &setup());
        assert!(text.contains("- 1 seed: differences between engines are not decided"));
        assert!(
            !text.contains("## Verdicts") && !text.contains("Holm"),
            "{text}"
        );
        let printed = terminal(&one);
        assert!(
            printed.contains("libtorch") && printed.starts_with("Accuracy (test accuracy): "),
            "{printed}"
        );
        assert!(
            !printed.contains("Holm") && !printed.contains("CI"),
            "{printed}"
        );
    }
}

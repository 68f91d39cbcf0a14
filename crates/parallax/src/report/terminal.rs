//! What `compare` prints at the end: the answer in words, the table of runs or of each
//! backend's means over seeds, the failures, and the conclusions.

use comfy_table::presets;

use super::Summary;
use super::answer;
use super::tables::{
    FOLDED_VERDICTS, HEADLINE, descriptives_header, descriptives_rows, headline_rows, scope, table,
};

/// The lines that end the terminal output: the verdicts (without them, the answer's caveats
/// said why), the attribution, the repeats, the roofline's answer, and the scope of the
/// conclusions.
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
    // Where the step's time goes, in words: the table is in the reports.
    if let Some(roofline) = super::roofline::Roofline::of(summary) {
        lines.push(roofline.answer());
    }
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

/// The table of one seed's runs, one row per run, and the failed runs.
pub fn terminal_table(summary: &Summary) -> String {
    let mut rows = headline_rows(summary);
    for f in &summary.failures {
        rows.push(vec![f.label(), "failed".into(), f.error.clone()]);
    }
    table(HEADLINE, rows, presets::UTF8_FULL_CONDENSED).to_string()
}

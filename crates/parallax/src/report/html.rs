//! `report.html`: one self-contained page (inline CSS and SVG, GradCAM's PNGs as `data:` URIs,
//! no script) that opens offline and prints. maud builds it and escapes every value it
//! interpolates: spec names, paths, class names and error lines are user-controlled.
//!
//! The page shows, in order: the verdicts (or, with one seed, the headline numbers), the
//! statistics over seeds, the charts (time to accuracy and training loss with a band over
//! seeds; seconds per epoch, peak memory and time to first step as bars with 95% whiskers),
//! the confusion matrices and per-class F1 as heatmaps, every run, the fairness ledger, the
//! environment with the command that reproduces the comparison, and GradCAM's grids and
//! metrics when the directory holds `gradcam/` output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use parallax_core::record::RunRecord;
use parallax_core::stats::VerdictKind;
use parallax_core::stats::comparison::Metric;

use super::charts::{self, Bar};
use super::summary::{GradCamSummary, PairImage, Setup};
use super::{Environment, Summary};
use crate::error::{Error, Result};

/// At most this many GradCAM images are inlined; the rest stay in `gradcam/`, and the page
/// says so.
pub const GRADCAM_IMAGES_SHOWN: usize = 12;

/// One comparison's part of the page.
pub struct Section<'a> {
    /// Its heading, when the page holds several comparisons (one per configuration).
    pub heading: Option<String>,
    /// Its summary: records, failures and statistics.
    pub summary: &'a Summary,
    /// What its runs share.
    pub setup: &'a Setup,
}

/// `cargo xtask gradcam`'s output in a directory: its summary and the first images, read as
/// PNG bytes.
pub struct GradCamOutput {
    /// `gradcam/summary.json`.
    pub summary: GradCamSummary,
    /// The first images' names and PNG files' bytes, in the summary's order.
    pub images: Vec<(String, Vec<u8>)>,
}

impl GradCamOutput {
    /// Reads `dir/gradcam/`, or `None` when the directory holds no GradCAM output.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let gradcam = dir.join("gradcam");
        let path = gradcam.join("summary.json");
        if !path.is_file() {
            return Ok(None);
        }
        let summary = GradCamSummary::load(&path)?;
        let images = summary
            .images
            .iter()
            .take(GRADCAM_IMAGES_SHOWN)
            .filter_map(|image| {
                let png = std::fs::read(gradcam.join(format!("{}.png", image.name))).ok()?;
                Some((image.name.clone(), png))
            })
            .collect();
        Ok(Some(Self { summary, images }))
    }
}

/// The `src` and `href` attributes of `html` whose value is an `http:` or `https:` URL.
pub fn remote_attributes(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=", "href="] {
        for (at, _) in html.match_indices(attribute) {
            let value = html[at + attribute.len()..].trim_start_matches(['"', '\'']);
            let value: String = value
                .chars()
                .take_while(|c| !matches!(c, '"' | '\'' | ' ' | '>'))
                .collect();
            let lower = value.to_ascii_lowercase();
            if lower.starts_with("http:") || lower.starts_with("https:") || lower.starts_with("//")
            {
                found.push(format!("{attribute}\"{value}\""));
            }
        }
    }
    found
}

/// Everything the page shows.
pub struct Page<'a> {
    /// The page's title.
    pub title: String,
    /// The comparisons, one per configuration.
    pub sections: Vec<Section<'a>>,
    /// GradCAM's output, when the directory holds it.
    pub gradcam: Option<GradCamOutput>,
    /// Records that could not be read: path and error line.
    pub unreadable: Vec<(String, String)>,
}

/// Renders the page.
pub fn render(page: &Page<'_>) -> String {
    let several = page.sections.len() > 1;
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="generator" content="parallax";
                title { (page.title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { (page.title) }
                    @if several {
                        p.note { "This directory holds runs of " (page.sections.len()) " configurations; each is reported on its own, and none is pooled with another." }
                    }
                }
                @for (index, section) in page.sections.iter().enumerate() {
                    (comparison_section(section, if several { format!("run{}-", index + 1) } else { String::new() }))
                }
                @if let Some(gradcam) = &page.gradcam {
                    (gradcam_section(gradcam))
                }
                @if !page.unreadable.is_empty() {
                    section #unreadable {
                        h2 { "Unreadable records" }
                        ul {
                            @for (path, error) in &page.unreadable {
                                li { code { (path) } ": " (error) }
                            }
                        }
                    }
                }
                @if page.sections.is_empty() {
                    section #environment {
                        h2 { "Environment" }
                        (environment_list(&Environment::of_this_machine(), &[], None, None, None))
                    }
                }
                footer { "Written by parallax. Self-contained: no script, font or image is fetched." }
            }
        }
    };
    markup.into_string()
}

/// Writes `dir/report.html` and returns its path.
pub fn write(dir: &Path, page: &Page<'_>) -> Result<PathBuf> {
    let path = dir.join("report.html");
    std::fs::write(&path, render(page)).map_err(|source| Error::io("writing", &path, source))?;
    Ok(path)
}

const CSS: &str = r#"
:root { --ink: #1d2733; --muted: #5b6673; --line: #d8dee6; --paper: #ffffff; --band: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 1.2rem 1.6rem 3rem; color: var(--ink); background: var(--paper);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 1.6rem; margin: 0.4rem 0 0.6rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 0.6rem; padding-bottom: 0.2rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.2rem 0 0.4rem; }
p, li { max-width: 75rem; }
.note, figcaption, .muted { color: var(--muted); font-size: 0.9rem; }
code { font: 0.88rem/1.4 ui-monospace, "DejaVu Sans Mono", monospace; background: var(--band); padding: 0 0.2rem; border-radius: 3px; word-break: break-all; }
table { border-collapse: collapse; margin: 0.4rem 0 1rem; font-size: 0.88rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 0.25rem 0.5rem; text-align: right; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
section.answer { padding: 0.2rem 1rem 0.6rem; margin: 0.6rem 0 1.2rem; background: var(--band); border-left: 5px solid var(--ink); }
section.answer h2 { margin-top: 0.6rem; border: none; }
section.answer p.line { margin: 0.35rem 0; font-size: 1.05rem; }
ul.caveats { color: var(--muted); font-size: 0.9rem; padding-left: 1.2rem; }
ul.verdicts { list-style: none; padding: 0; }
details > summary { cursor: pointer; font-weight: 600; margin: 0.4rem 0; }
.print-note { display: none; }
ul.ledger { padding-left: 1.2rem; }
ul.ledger li { margin: 0.2rem 0; }
ul.verdicts li { margin: 0.3rem 0; padding: 0.3rem 0.6rem; border-left: 5px solid #9aa5b1; background: var(--band); }
ul.verdicts li.different { border-color: #c0392b; }
ul.verdicts li.small { border-color: #e69f00; }
ul.verdicts li.same { border-color: #2e8b57; }
ul.verdicts li.unclear { border-color: #9aa5b1; }
.legend span.series { display: inline-flex; align-items: center; gap: 0.35rem; margin-right: 1.1rem; }
h3.chart-title { font-size: 1rem; margin: 0.2rem 0 0.3rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; }
figure.chart.line { flex: 1 1 440px; max-width: 600px; }
figure.chart.bar { flex: 1 1 300px; max-width: 420px; }
figure svg, figure img { display: block; width: 100%; height: auto; }
.heatmaps { display: flex; flex-wrap: wrap; gap: 1.2rem; align-items: flex-start; }
figure.confusion { flex: 0 1 auto; max-width: 100%; }
table.heat { font-size: 0.78rem; }
table.heat td, table.heat th { min-width: 1.9rem; padding: 0.12rem 0.2rem; text-align: center; line-height: 1.15; }
table.heat td small { display: block; font-size: 0.68rem; opacity: 0.85; }
table.heat td.same { color: var(--muted); }
table.heat th.class { vertical-align: bottom; padding: 0.3rem 0.1rem; }
table.heat th.class span { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; font-weight: 500; }
table.heat th.true-class { text-align: right; white-space: nowrap; font-weight: 500; }
table.heat th.corner { font-weight: 400; font-size: 0.7rem; color: var(--muted); vertical-align: bottom; }
table.f1 td { min-width: 2.8rem; }
table.ledger td, table.ledger th { text-align: left; max-width: 28rem; }
dl.environment { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.environment dt { font-weight: 600; }
dl.environment dd { margin: 0; }
.grid { display: grid; grid-template-columns: minmax(0, 1fr); gap: 1rem; }
.grid img { image-rendering: pixelated; border: 1px solid var(--line); }
footer { margin-top: 2.5rem; color: var(--muted); font-size: 0.85rem; }
@media (max-width: 600px) {
  body { padding: 0.8rem 0.7rem 2rem; }
  table.stack, table.stack tbody, table.stack tr, table.stack td { display: block; width: 100%; }
  table.stack thead { display: none; }
  table.stack tr { margin: 0 0 0.6rem; border: 1px solid var(--line); }
  table.stack td { border: none; border-top: 1px solid var(--band); text-align: right; overflow-wrap: anywhere;
    display: grid; grid-template-columns: minmax(6.5rem, 40%) 1fr; gap: 0.5rem; }
  table.stack td::before { content: attr(data-label); text-align: left; font-weight: 600; color: var(--muted); }
  table.stack td:first-child { background: var(--band); font-weight: 600; }
  table.ledger.stack td { text-align: left; }
  table.heat { font-size: 0.7rem; }
  table.heat td, table.heat th { min-width: 1.45rem; padding: 0.1rem 0.05rem; }
  table.heat.confusion td small { display: none; }
  table.heat th.true-class { white-space: normal; max-width: 4.6rem; }
}
@page { size: A4; margin: 12mm 11mm; }
@media print {
  /* Sections flow across pages, so that none leaves a page near empty; figures, table rows
     and list items stay whole; headings stay with what follows. */
  body { max-width: none; padding: 0; font-size: 9pt; line-height: 1.35; }
  h1 { font-size: 14pt; }
  h2 { font-size: 11.5pt; margin: 1rem 0 0.4rem; break-after: avoid; }
  h3 { font-size: 10pt; break-after: avoid; }
  .print-note { display: inline; font-weight: 400; color: var(--muted); }
  figure, tr, li, section.answer { break-inside: avoid; }
  .charts { gap: 0.5rem; }
  figure.chart.line { flex: 1 1 38%; max-width: 42%; }
  figure.chart.bar { flex: 1 1 26%; max-width: 28%; }
  footer { display: none; }
  table { font-size: 7.5pt; }
  table.heat { font-size: 6.5pt; }
  table.heat td, table.heat th { min-width: 1.5rem; padding: 0.05rem 0.1rem; }
  .heatmaps { gap: 0.6rem; }
  figure.confusion { max-width: 49%; }
  .note, figcaption { font-size: 7.5pt; }
}
"#;

/// A table of plain cells; the first row is the header. On a narrow screen each row stacks
/// into a card, every cell labelled with its column's header (`data-label`), so that no
/// table is wider than the screen.
fn table(header: &[String], rows: &[Vec<String>], class: &str) -> Markup {
    html! {
        table class=(format!("{class} stack")) {
            thead { tr { @for cell in header { th { (cell) } } } }
            tbody {
                @for row in rows {
                    tr {
                        @for (index, cell) in row.iter().enumerate() {
                            td data-label=(header.get(index).map_or("", String::as_str)) { (cell) }
                        }
                    }
                }
            }
        }
    }
}

fn strings(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|cell| cell.to_string()).collect()
}

/// The class of a verdict's line: what the reader should take from it, as a colour.
fn verdict_class(kind: VerdictKind) -> &'static str {
    match kind {
        VerdictKind::Identical | VerdictKind::NoMeaningfulDifference => "same",
        VerdictKind::MeaningfullyDifferent => "different",
        VerdictKind::DetectableButSmall => "small",
        VerdictKind::DetectableSizeUnclear | VerdictKind::Inconclusive => "unclear",
    }
}

/// Each backend in the order the comparison lists them, with its colour.
fn backends(summary: &Summary) -> Vec<String> {
    let mut names: Vec<String> = summary
        .comparison
        .as_ref()
        .map(|comparison| comparison.backends.clone())
        .unwrap_or_default();
    for record in &summary.records {
        if !names.contains(&record.backend) {
            names.push(record.backend.clone());
        }
    }
    names
}

/// The charts' one legend: each backend's line as the charts draw it, its colour, dash pattern
/// and marker.
fn legend(names: &[String]) -> Markup {
    html! {
        p.legend {
            @for name in names {
                span.series { (line_sample(name)) (name) }
            }
        }
    }
}

/// A short stretch of a backend's line with its marker, as inline SVG.
fn line_sample(backend: &str) -> Markup {
    let colour = charts::css_colour(backend);
    let stroke = charts::stroke(backend);
    let dash = stroke.dash.map(|(size, gap)| format!("{size} {gap}"));
    let filled = colour.as_str();
    html! {
        svg.sample width="36" height="14" viewBox="0 0 36 14" aria-hidden="true" data-dash=(dash.as_deref().unwrap_or("solid")) data-marker=(format!("{:?}", stroke.marker)) {
            line x1="0" y1="7" x2="36" y2="7" stroke=(colour) stroke-width="2" stroke-dasharray=[dash.as_deref()] {}
            @match stroke.marker {
                charts::Marker::Disc => circle cx="18" cy="7" r="4" fill=(filled) {},
                charts::Marker::Ring => circle cx="18" cy="7" r="4.5" fill="white" stroke=(colour) stroke-width="2" {},
                charts::Marker::Square => rect x="14" y="3" width="8" height="8" fill=(filled) {},
                charts::Marker::Box => rect x="13" y="2" width="10" height="10" fill="white" stroke=(colour) stroke-width="2" {},
                charts::Marker::Triangle => polygon points="18,2 23,11 13,11" fill=(filled) {},
                charts::Marker::Diamond => polygon points="18,1 23,7 18,13 13,7" fill=(filled) {},
                charts::Marker::Cross => path d="M14 3 L22 11 M14 11 L22 3" stroke=(colour) stroke-width="2" {},
            }
        }
    }
}

fn comparison_section(section: &Section<'_>, prefix: String) -> Markup {
    let summary = section.summary;
    let id = |name: &str| format!("{prefix}{name}");
    let threads = summary.records.first().map_or(0, |r| r.threads);
    let cpu = summary.machine_of_runs();
    html! {
        section.comparison id=(id("comparison")) {
            @if let Some(heading) = &section.heading {
                h2 { (heading) }
            }
            (answer_section(summary, &id))
            p.description { (super::markdown::description(summary, section.setup).replace('`', "")) }
            section id=(id("verdicts")) {
                h2 { @if summary.several_seeds() { "Verdicts" } @else { "Headline numbers" } }
                (verdicts(summary, threads, &cpu))
            }
            @if let Some(comparison) = summary.comparison.as_ref().filter(|_| summary.several_seeds()) {
                section id=(id("over-seeds")) {
                    h2 { "Over seeds" }
                    p.note { "Mean ± standard deviation over each backend's complete runs; s/epoch is the median of epochs 2 and later (epoch 1 holds the warm-up)." }
                    (table(&super::tables::descriptives_header(comparison), &super::tables::descriptives_rows(comparison), "descriptives"))
                    @if let Some(target) = comparison.target_accuracy {
                        h3 { "Time to " (format!("{:.2}", 100.0 * target)) "% test accuracy" }
                        (table(&strings(&["backend", "seed", "training time", "epoch"]), &super::tables::time_to_accuracy_rows(summary, target), "time-to-accuracy"))
                    }
                }
            }
            @if let Some(attribution) = &summary.attribution {
                section id=(id("attribution")) {
                    h2 { "Attribution of the " (attribution.a) " vs " (attribution.b) " gap" }
                    p.note { "C0 runs both engines controlled; each C_f switches one of " (attribution.b) "'s defaults to its framework's value while " (attribution.a) " stays controlled; C_n runs both native. A factor's effect is its C_f gap minus the C0 gap, per seed; the interactions are the rest." }
                    @for metric in &attribution.metrics {
                        h3 { (metric.metric.title()) }
                        (table(&strings(&["configuration", "seeds", &format!("{} vs {} gap", attribution.a, attribution.b), "95% CI"]), &super::tables::attribution_rows(attribution, metric), "attribution"))
                        ul { @for line in &metric.lines { li { (line) } } }
                    }
                }
            }
            @if !summary.records.is_empty() {
                (charts_section(summary, &id))
                (heatmaps_section(summary, &id))
                section id=(id("runs")) {
                    h2 { "Every run" }
                    @let runs = html! {
                        p.note { "Seconds per epoch cover the training loop only; to first step is building, weight import and the first step." }
                        (table(&strings(super::tables::SPEED), &super::tables::speed_rows(summary), "speed"))
                        (table(&strings(super::tables::QUALITY), &super::tables::quality_rows(summary), "quality"))
                    };
                    // Over seeds, the means above say it; each run's numbers fold away.
                    @if summary.several_seeds() {
                        details.runs {
                            summary { "Each of the " (summary.records.len()) " runs: speed, memory and quality" span.print-note { " (collapsed in print: open it first to print it)" } }
                            (runs)
                        }
                    } @else {
                        (runs)
                    }
                }
                @if let Some(roofline) = super::roofline::Roofline::of(summary) {
                    section id=(id("roofline")) {
                        h2 { "Roofline" }
                        p { (roofline.answer()) }
                        details.roofline {
                            summary { "Each layer against the two ceilings" span.print-note { " (collapsed in print: open it first to print it)" } }
                            p.note { (roofline.method()) }
                            (table(&roofline.header(), &roofline.rows(), "roofline"))
                        }
                    }
                }
                section id=(id("ledger")) {
                    h2 { "Fairness ledger" }
                    p.note { "What this run made every engine do, and where they differ." }
                    ul.ledger {
                        @for (title, text) in super::tables::ledger_lines(summary) {
                            li { strong { (title) ":" } " " (text) }
                        }
                    }
                    details.ledger {
                        summary { "Each engine's defaults, topic by topic" span.print-note { " (collapsed in print: open it first to print it)" } }
                        @let (header, rows) = super::tables::ledger_rows(summary);
                        (table(&header, &rows, "ledger"))
                    }
                }
            }
            @if !summary.failures.is_empty() {
                section id=(id("failures")) {
                    h2 { "Failed runs" }
                    (table(&strings(&["run", "error"]), &summary.failures.iter().map(|f| vec![f.label(), f.error.clone()]).collect::<Vec<_>>(), "failures"))
                }
            }
            section id=(id("environment")) {
                h2 { "Environment" }
                @match &summary.environment {
                    Some(environment) => (environment_list(environment, &summary.records, summary.matmul_peak_line(), summary.command.as_deref(), summary.wall_seconds)),
                    None => {
                        p.note { "The comparison's summary does not record its machine (it predates that); shown is the machine that rendered this report." }
                        (environment_list(&Environment::of_this_machine(), &summary.records, summary.matmul_peak_line(), summary.command.as_deref(), summary.wall_seconds))
                    }
                }
            }
        }
    }
}

/// The answer in words, the first thing on the page: a line per metric family, its name in
/// bold, then the caveats with what removes each.
fn answer_section(summary: &Summary, id: &dyn Fn(&str) -> String) -> Markup {
    let answer = super::answer::answer(summary);
    html! {
        section.answer id=(id("answer")) {
            h2 { "In short" }
            @for line in &answer.lines {
                @match line.split_once(": ") {
                    Some((family, rest)) => p.line { strong { (family) ":" } " " (rest) },
                    None => p.line { (line) },
                }
            }
            @if !answer.caveats.is_empty() {
                ul.caveats {
                    @for caveat in &answer.caveats {
                        li { @for (index, part) in caveat.split('`').enumerate() { @if index % 2 == 1 { code { (part) } } @else { (part) } } }
                    }
                }
            }
        }
    }
}

/// The verdict lines, coloured by kind, or with one seed the headline numbers; then the
/// attribution's and the repeats' lines, and the scope of it all (the skipped backends are in the answer's caveats).
fn verdicts(summary: &Summary, threads: usize, cpu: &str) -> Markup {
    let comparison = summary.comparison.as_ref();
    let verdicts: Vec<_> = comparison
        .filter(|c| c.no_verdicts_because.is_none())
        .map(|c| c.verdicts.iter().collect())
        .unwrap_or_default();
    let list = html! {
        p.note { "One verdict per metric and pair, paired by seed. The 95% and 90% CIs are per pair and unadjusted (paired t); the p-values are Holm-adjusted across the pairs of each metric." }
        ul.verdicts {
            @for verdict in &verdicts {
                li class=(verdict_class(verdict.verdict.kind)) { (verdict.line) }
            }
        }
    };
    html! {
        // Beyond two pairs' worth, the lines fold away: the answer above draws on them.
        @if verdicts.len() > super::tables::FOLDED_VERDICTS {
            details.verdicts {
                summary { "All " (verdicts.len()) " verdicts, one per metric and pair" span.print-note { " (collapsed in print: open it first to print it)" } }
                (list)
            }
        } @else if !verdicts.is_empty() {
            (list)
        }
        @if !summary.several_seeds() && !summary.records.is_empty() {
            (table(&strings(super::tables::HEADLINE), &super::tables::headline_rows(summary), "headline"))
        }
        @if let Some(attribution) = &summary.attribution {
            ul.verdicts { @for metric in &attribution.metrics { @for line in &metric.lines { li.unclear { (line) } } } }
        }
        @if !summary.repeat.is_empty() {
            ul.verdicts { @for repeat in &summary.repeat { li.unclear { (repeat.line) } } }
        }
        @if !summary.records.is_empty() {
            p.note { (super::tables::scope(summary, threads, cpu)) }
        }
    }
}

/// A chart's figure: its title above, the chart, its caption below; or a line saying why the
/// chart could not be drawn.
fn figure(id: String, kind: &str, title: &str, caption: &str, svg: Result<String>) -> Markup {
    html! {
        figure class=(format!("chart {kind}")) id=(id) {
            h3.chart-title { (title) }
            @match svg {
                Ok(svg) => (PreEscaped(svg)),
                Err(error) => p.note { "This chart could not be drawn: " (error.to_string()) },
            }
            figcaption { (caption) }
        }
    }
}

/// Each backend's mean of `metric` over its runs, with the 95% interval of that mean.
fn bars(summary: &Summary, metric: Metric, scale: f64) -> Vec<Bar> {
    backends(summary)
        .into_iter()
        .filter_map(|backend| {
            let values: Vec<f64> = summary
                .records
                .iter()
                .filter(|r| r.backend == backend)
                .filter_map(|r| metric.value(r, None))
                .filter(|v| v.is_finite())
                .map(|v| v * scale)
                .collect();
            let describe = parallax_core::stats::describe(&values)?;
            Some(Bar {
                backend,
                value: describe.mean,
                interval: describe.mean_interval(0.95),
            })
        })
        .collect()
}

fn charts_section(summary: &Summary, id: &dyn Fn(&str) -> String) -> Markup {
    let records: Vec<&RunRecord> = summary.records.iter().collect();
    let names = backends(summary);
    let seeds = summary.several_seeds();
    let band = if seeds {
        "The line is the mean over seeds, the band spans the lowest to the highest seed; x is the median over seeds."
    } else {
        "One seed: no band."
    };
    let accuracy = charts::bands(
        &records,
        |e| e.elapsed_training_seconds,
        |e| e.test_accuracy,
    );
    let loss = charts::bands(&records, |e| f64::from(e.epoch), |e| e.train_loss);
    let whiskers = if seeds {
        "Bars are means over seeds; whiskers are 95% confidence intervals of the mean (Student's t)."
    } else {
        "One seed: no interval."
    };
    let mib = 1.0 / (1024.0 * 1024.0);
    let coincide = |bands: &[charts::Band]| {
        let groups = charts::coinciding(bands);
        if groups.is_empty() {
            return String::new();
        }
        let groups: Vec<String> = groups
            .iter()
            .map(|group| {
                let names: Vec<&str> = group.iter().map(String::as_str).collect();
                super::answer::listed(&names)
            })
            .collect();
        format!(
            " The lines of {} coincide (within a line's width at every point): their markers tell them apart.",
            groups.join("; of ")
        )
    };
    let warm_up = warm_up_note(summary);
    html! {
        section id=(id("charts")) {
            h2 { "Charts" }
            (legend(&names))
            div.charts {
                (figure(id("chart-time-to-accuracy"), "line", "Test accuracy over training time",
                    &format!("Test accuracy after each epoch against the cumulative training seconds (time to accuracy); the axis starts at 0.{warm_up} {band}{}", coincide(&accuracy)),
                    charts::line_chart("Test accuracy over training time", "training seconds", "test accuracy", &accuracy, charts::XAxis::Seconds)))
                (figure(id("chart-loss"), "line", "Training loss per epoch",
                    &format!("The mean loss over each epoch's steps. {band}{}", coincide(&loss)),
                    charts::line_chart("Training loss per epoch", "epoch", "training loss", &loss, charts::XAxis::Epochs)))
            }
            div.charts {
                (figure(id("chart-epoch-seconds"), "bar", "Time per epoch",
                    &format!("The median of epochs 2 and later (epoch 1 holds the warm-up). {whiskers}"),
                    charts::bar_chart("Time per epoch", "seconds", &bars(summary, Metric::EpochSeconds, 1.0), &super::numbers::seconds)))
                (figure(id("chart-peak-memory"), "bar", "Peak memory",
                    &format!("The worker's peak resident memory, MiB. {whiskers}"),
                    charts::bar_chart("Peak memory", "MiB", &bars(summary, Metric::PeakMemory, mib), &super::numbers::whole)))
                (figure(id("chart-first-step"), "bar", "Time to the first step",
                    &format!("Building the model, importing the weights and the first step. {whiskers}"),
                    charts::bar_chart("Time to the first step", "seconds", &bars(summary, Metric::TimeToFirstStep, 1.0), &super::numbers::seconds)))
            }
        }
    }
}

/// What the time axis owes to the first epoch: each line starts after epoch 1, which holds
/// the warm-up; the backend whose first epoch ran longest beyond its later ones is named.
fn warm_up_note(summary: &Summary) -> String {
    let mut longest: Option<(&str, f64)> = None;
    for record in &summary.records {
        let Some(first) = record.epochs.first() else {
            continue;
        };
        let Some(steady) = parallax_core::stats::comparison::steady_epoch_seconds(record) else {
            continue;
        };
        let extra = first.seconds - steady;
        if record.epochs.len() > 1 && longest.is_none_or(|(_, most)| extra > most) {
            longest = Some((&record.backend, extra));
        }
    }
    match longest {
        Some((backend, extra)) if extra > 0.0 => format!(
            " Each line's first point follows epoch 1, which holds the warm-up: the most is {backend}'s, {} beyond its later epochs.",
            super::numbers::seconds(extra)
        ),
        _ => " Each line's first point follows epoch 1, which holds the warm-up.".into(),
    }
}

/// A heatmap cell's background and text colours for `t` in [0, 1]: white to deep blue.
fn heat(t: f64) -> String {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let stops = [
        (247.0, 251.0, 255.0),
        (107.0, 174.0, 214.0),
        (8.0, 48.0, 107.0),
    ];
    let (from, to, u) = if t < 0.5 {
        (stops[0], stops[1], t * 2.0)
    } else {
        (stops[1], stops[2], (t - 0.5) * 2.0)
    };
    let mix = |a: f64, b: f64| (a + (b - a) * u).round() as u8;
    let ink = if t > 0.55 { "#ffffff" } else { "#1d2733" };
    format!(
        "background:rgb({},{},{});color:{ink}",
        mix(from.0, to.0),
        mix(from.1, to.1),
        mix(from.2, to.2)
    )
}

fn heatmaps_section(summary: &Summary, id: &dyn Fn(&str) -> String) -> Markup {
    let names = backends(summary);
    let classes = summary
        .records
        .first()
        .map(|r| r.class_names.clone())
        .unwrap_or_default();
    // Per backend: each seed's confusion matrix, their sum, and each class's mean F1.
    let mut by_seed: BTreeMap<&str, BTreeMap<u64, &[Vec<u64>]>> = BTreeMap::new();
    let mut confusion: BTreeMap<&str, (usize, Vec<Vec<u64>>)> = BTreeMap::new();
    let mut f1: BTreeMap<&str, Vec<(f64, usize)>> = BTreeMap::new();
    for record in &summary.records {
        let rows = record.confusion_matrix.rows();
        if rows.len() != classes.len() {
            continue;
        }
        by_seed
            .entry(record.backend.as_str())
            .or_default()
            .entry(record.seed)
            .or_insert(rows);
        let entry = confusion
            .entry(record.backend.as_str())
            .or_insert_with(|| (0, vec![vec![0; classes.len()]; classes.len()]));
        entry.0 += 1;
        for (total, row) in entry.1.iter_mut().zip(rows) {
            for (cell, count) in total.iter_mut().zip(row) {
                *cell += count;
            }
        }
        let scores = f1
            .entry(record.backend.as_str())
            .or_insert_with(|| vec![(0.0, 0); classes.len()]);
        for (score, class) in scores.iter_mut().zip(&record.report.per_class) {
            if class.f1.is_finite() {
                score.0 += class.f1;
                score.1 += 1;
            }
        }
    }
    // The reference: the first backend with a matrix. Every other one is shown as its
    // difference to it over the seeds both completed, or not at all when all are the same.
    let with_matrix: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| confusion.contains_key(name))
        .collect();
    let reference = with_matrix.first().copied();
    let differences: Vec<(&str, usize, Vec<Vec<i64>>)> = reference
        .map(|reference| {
            with_matrix
                .iter()
                .skip(1)
                .map(|name| {
                    let (seeds, difference) =
                        difference(&by_seed[reference], &by_seed[name], classes.len());
                    (*name, seeds, difference)
                })
                .collect()
        })
        .unwrap_or_default();
    // The same in every seed two engines share, and no engine without a shared seed.
    let all_same = differences
        .iter()
        .all(|(_, seeds, difference)| *seeds > 0 && difference.iter().flatten().all(|d| *d == 0))
        && with_matrix.windows(2).all(|pair| {
            by_seed[pair[0]]
                .iter()
                .all(|(seed, m)| by_seed[pair[1]].get(seed).is_none_or(|other| other == m))
        });
    let f1_same = all_same
        && with_matrix
            .windows(2)
            .all(|pair| f1.get(pair[0]) == f1.get(pair[1]));
    let listed = super::answer::listed(&with_matrix);
    let columns: Vec<(String, &Vec<(f64, usize)>)> = if f1_same && with_matrix.len() > 1 {
        reference
            .and_then(|name| f1.get(name))
            .map(|scores| ("all, identical".to_string(), scores))
            .into_iter()
            .collect()
    } else {
        names
            .iter()
            .filter_map(|name| Some((name.clone(), f1.get(name.as_str())?)))
            .collect()
    };
    html! {
        section id=(id("heatmaps")) {
            h2 { "Confusion matrices" }
            @if let Some(reference) = reference {
                @let (runs, matrix) = &confusion[reference];
                @if all_same && with_matrix.len() > 1 {
                    p { "All identical: " (listed) " predicted exactly the same classes for every test example, in every seed they share." }
                } @else if with_matrix.len() > 1 {
                    p { "The engines differ: " (reference) "'s matrix first, then each other engine's difference to it, in examples." }
                }
                div.heatmaps {
                    figure.confusion {
                        (confusion_table(&classes, matrix))
                        figcaption {
                            strong { (reference) } ", summed over its " (runs) " run" @if *runs != 1 { "s" } ": rows are true classes, columns predicted ones; each cell is the share of its true class in %, with its count below it on wide screens and on paper."
                        }
                    }
                    @if !all_same {
                        @for (name, seeds, difference) in differences.iter().filter(|(_, _, d)| d.iter().flatten().any(|c| *c != 0)) {
                            figure.confusion {
                                (difference_table(&classes, difference, &confusion[reference].1))
                                figcaption {
                                    strong { (name) " − " (reference) } ", over the " (seeds) " seed" @if *seeds != 1 { "s" } " both completed: "
                                    @let moved = difference.iter().flatten().map(|c| c.unsigned_abs()).sum::<u64>() / 2;
                                    (super::numbers::thousands(moved)) " example" @if moved != 1 { "s" } " predicted differently; a cell shows how many more (+) or fewer (−) " (name) " put there."
                                }
                            }
                        }
                    }
                }
                @let same_as_reference: Vec<&str> = differences.iter().filter(|(_, seeds, d)| *seeds > 0 && d.iter().flatten().all(|c| *c == 0)).map(|(name, _, _)| *name).collect();
                @if !all_same && !same_as_reference.is_empty() {
                    p { (super::answer::listed(&same_as_reference)) ": identical to " (reference) " in every seed they share." }
                }
                @let unshared: Vec<&str> = differences.iter().filter(|(_, seeds, _)| *seeds == 0).map(|(name, _, _)| *name).collect();
                @if !unshared.is_empty() {
                    p.note { (super::answer::listed(&unshared)) ": no seed in common with " (reference) ", so no difference is shown." }
                }
            }
            h3 { "Per-class F1" }
            p.note { "Each backend's mean F1 per class over its runs; darker is higher." }
            // Classes down, engines across: as narrow as the engines are few.
            table.heat.f1 {
                thead { tr { th { "class" } @for (label, _) in &columns { th.class { span { (label) } } } } }
                tbody {
                    @for (index, class) in classes.iter().enumerate() {
                        tr {
                            th.true-class { (class) }
                            @for (_, scores) in &columns {
                                @match scores.get(index) {
                                    Some((sum, n)) if *n > 0 => {
                                        @let mean = sum / *n as f64;
                                        td style=(heat(mean)) { (format!("{mean:.3}")) }
                                    }
                                    _ => td { "—" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Over the seeds both backends completed, the sum of `other − reference`, cell by cell, and
/// how many seeds that is.
fn difference(
    reference: &BTreeMap<u64, &[Vec<u64>]>,
    other: &BTreeMap<u64, &[Vec<u64>]>,
    classes: usize,
) -> (usize, Vec<Vec<i64>>) {
    let mut sum = vec![vec![0_i64; classes]; classes];
    let mut seeds = 0;
    for (seed, matrix) in other {
        let Some(base) = reference.get(seed) else {
            continue;
        };
        seeds += 1;
        for (total, (row, base_row)) in sum.iter_mut().zip(matrix.iter().zip(base.iter())) {
            for (cell, (count, base_count)) in total.iter_mut().zip(row.iter().zip(base_row)) {
                *cell += *count as i64 - *base_count as i64;
            }
        }
    }
    (seeds, sum)
}

/// A confusion matrix with the class names on both axes; each cell its share of the true class
/// in % above its count.
fn confusion_table(classes: &[String], matrix: &[Vec<u64>]) -> Markup {
    html! {
        table.heat.confusion {
            (class_header(classes))
            tbody {
                @for (i, row) in matrix.iter().enumerate() {
                    @let total = row.iter().sum::<u64>().max(1) as f64;
                    tr {
                        th.true-class { (classes.get(i).map_or("", String::as_str)) }
                        @for count in row {
                            @let share = *count as f64 / total;
                            td style=(heat(share)) { (format!("{:.0}", 100.0 * share)) small { (super::numbers::thousands(*count)) } }
                        }
                    }
                }
            }
        }
    }
}

/// A difference of confusion matrices in examples, blank where there is none; coloured by the
/// share of the true class (in `reference`) that moved.
fn difference_table(classes: &[String], difference: &[Vec<i64>], reference: &[Vec<u64>]) -> Markup {
    html! {
        table.heat.confusion.difference {
            (class_header(classes))
            tbody {
                @for (i, row) in difference.iter().enumerate() {
                    @let total = reference.get(i).map_or(0, |r| r.iter().sum::<u64>()).max(1) as f64;
                    tr {
                        th.true-class { (classes.get(i).map_or("", String::as_str)) }
                        @for change in row {
                            @if *change == 0 {
                                td.same { "·" }
                            } @else {
                                td style=(change_colour(*change, total)) { (format!("{change:+}").replace('-', "−")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A confusion table's header: the predicted classes, written upwards.
fn class_header(classes: &[String]) -> Markup {
    html! {
        thead { tr { th.corner { "true ↓ predicted →" } @for class in classes { th.class { span { (class) } } } } }
    }
}

/// A difference cell's colours: blue for more examples than the reference, orange for fewer,
/// deeper with the share of the true class that moved (full at 5%).
fn change_colour(change: i64, class_total: f64) -> String {
    let depth = (change.unsigned_abs() as f64 / class_total / 0.05).clamp(0.15, 1.0);
    let (r, g, b) = if change > 0 {
        (0.0, 114.0, 178.0)
    } else {
        (213.0, 94.0, 0.0)
    };
    let mix = |c: f64| (255.0 + (c - 255.0) * depth).round() as u8;
    let ink = if depth > 0.6 { "#ffffff" } else { "#1d2733" };
    format!(
        "background:rgb({},{},{});color:{ink}",
        mix(r),
        mix(g),
        mix(b)
    )
}

fn environment_list(
    environment: &Environment,
    records: &[RunRecord],
    peak: Option<String>,
    command: Option<&str>,
    wall_seconds: Option<f64>,
) -> Markup {
    let mut engines: Vec<String> = Vec::new();
    let mut threads: Vec<String> = Vec::new();
    let mut revisions: Vec<String> = Vec::new();
    for record in records {
        let engine = format!(
            "{}: {} {} on {}",
            record.backend, record.framework, record.framework_version, record.device
        );
        if !engines.contains(&engine) {
            engines.push(engine);
        }
        let thread = format!("{}: {}", record.backend, record.threads);
        if !threads.contains(&thread) {
            threads.push(thread);
        }
        if !revisions.contains(&record.git_revision) {
            revisions.push(record.git_revision.clone());
        }
    }
    html! {
        dl.environment {
            dt { "CPU" } dd { (environment.cpu_model) }
            @if !environment.vector_extensions.is_empty() { dt { "Vector extensions" } dd { (environment.vector_extensions.join(", ")) } }
            dt { "Logical CPUs" } dd { (environment.logical_cpus) }
            dt { "Memory" } dd { (environment.memory_bytes.map_or("unknown".to_string(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))) }
            dt { "OS" } dd { (environment.os) ", kernel " (environment.kernel) }
            @if !threads.is_empty() { dt { "Threads per engine" } dd { (threads.join(", ")) } }
            @if !engines.is_empty() { dt { "Engines" } dd { (engines.join("; ")) } }
            @if !revisions.is_empty() { dt { "parallax revision" } dd { code { (revisions.join(", ")) } } }
            @if let Some(peak) = peak { dt { "Matrix-product peak" } dd { (peak) } }
            @if let Some(command) = command { dt { "Reproduce with" } dd { code { (command) } } }
            @if let Some(wall) = wall_seconds { dt { "Wall time" } dd { (format!("{:.1} min, builds included", wall / 60.0)) } }
        }
    }
}

fn number(value: Option<f64>, digits: usize) -> String {
    value.map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn mean_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let finite: Vec<f64> = values.flatten().filter(|v| v.is_finite()).collect();
    (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
}

fn gradcam_section(output: &GradCamOutput) -> Markup {
    let summary = &output.summary;
    let localisation = summary.localisation();
    let backend_rows: Vec<Vec<String>> = summary
        .frameworks
        .iter()
        .map(|(backend, framework)| {
            let results = || {
                summary
                    .images
                    .iter()
                    .filter_map(move |image| image.backends.get(backend))
            };
            let local = localisation.get(backend);
            vec![
                backend.clone(),
                framework.clone(),
                summary
                    .seconds_per_image
                    .get(backend)
                    .map_or("—".into(), |&s| super::numbers::seconds(s)),
                number(mean_of(results().map(|r| r.spread_map.area_above_half)), 3),
                number(mean_of(results().map(|r| r.spread_map.entropy)), 3),
                number(local.map(|l| l.0), 3),
                number(local.map(|l| l.1), 3),
            ]
        })
        .collect();
    let mut pairs: BTreeMap<(String, String), Vec<&PairImage>> = BTreeMap::new();
    for image in &summary.images {
        for pair in &image.pairs {
            pairs
                .entry((pair.a.clone(), pair.b.clone()))
                .or_default()
                .push(pair);
        }
    }
    let pair_rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|((a, b), images)| {
            let raw: Vec<f64> = images.iter().filter_map(|p| p.raw.pearson).collect();
            let low = raw.iter().copied().fold(f64::INFINITY, f64::min);
            vec![
                format!("{a} vs {b}"),
                images.len().to_string(),
                number(mean_of(raw.iter().map(|&r| Some(r))), 6),
                number(low.is_finite().then_some(low), 6),
                number(mean_of(images.iter().map(|p| p.map.pearson)), 6),
                format!(
                    "{:.0}%",
                    100.0 * images.iter().filter(|p| p.same_prediction).count() as f64
                        / images.len() as f64
                ),
            ]
        })
        .collect();
    let method = summary
        .settings
        .as_ref()
        .map_or("—".to_string(), |s| s.method.to_string());
    html! {
        section #gradcam {
            h2 { "GradCAM" }
            p.description {
                "Model " code { (summary.model) } ", layer " code { (summary.layer) } ", method " (method)
                ", weights " code { (summary.weights) } ", preprocessing " (summary.preprocess) ", "
                (summary.images.len()) " image" @if summary.images.len() != 1 { "s" } "."
            }
            (table(&strings(&["backend", "engine", "per image", "area above half", "entropy", "energy pointing game", "argmax in box"]), &backend_rows, "gradcam-backends"))
            @if !pair_rows.is_empty() {
                h3 { "Agreement between engines" }
                p.note { "Pearson's r of the layer-resolution maps (raw) and of the upsampled maps, over images." }
                (table(&strings(&["pair", "images", "mean raw r", "lowest raw r", "mean map r", "same prediction"]), &pair_rows, "gradcam-pairs"))
            }
            @if !output.images.is_empty() {
                h3 { "Maps" }
                @if output.images.len() < summary.images.len() {
                    p.note { "The first " (output.images.len()) " of " (summary.images.len()) " images; all are in gradcam/." }
                }
                div.grid {
                    @for (name, png) in &output.images {
                        figure.gradcam {
                            img alt=(format!("GradCAM of {name}")) src=(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png)));
                            figcaption { (name) ": the input, each engine's map over it (" (if summary.colour_map.is_empty() { "jet, as summaries before the colour map was recorded" } else { summary.colour_map.as_str() }) "), and the first two engines' difference on a scale of its own." }
                        }
                    }
                }
            }
            @if !summary.failures.is_empty() {
                h3 { "Failures" }
                ul { @for (what, error) in &summary.failures { li { (what) ": " (error) } } }
            }
        }
    }
}

/// The title of a page of one comparison: the model, the data set and the backends.
pub fn title(summary: &Summary, setup: &Setup) -> String {
    let dataset = summary.records.first().map_or(setup.dataset, |r| r.dataset);
    let names = backends(summary);
    if names.is_empty() {
        format!("parallax: {} on {dataset}", setup.model)
    } else {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        format!(
            "parallax: {} on {dataset}, {} compared",
            setup.model,
            super::answer::listed(&names)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{records, setup, summary_of};
    use crate::report::{Failure, Skipped};

    /// The page's structure: one line per element (name, id and classes), indented by depth,
    /// with the text of headings, header cells, terms, list items and captions; the insides of
    /// SVG charts and of the style sheet are left out, and so are table data, whose numbers the
    /// other tests check.
    fn skeleton(html: &str) -> String {
        const VOID: [&str; 5] = ["meta", "img", "br", "link", "input"];
        const TEXT_OF: [&str; 9] = [
            "title",
            "h1",
            "h2",
            "h3",
            "th",
            "dt",
            "li",
            "figcaption",
            "strong",
        ];
        let attribute = |tag: &str, name: &str| -> Option<String> {
            let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
            let end = tag[at..].find('"')?;
            Some(tag[at..at + end].to_string())
        };
        let mut out = String::new();
        let mut stack: Vec<String> = Vec::new();
        let mut rest = html;
        while let Some(open) = rest.find('<') {
            let text = rest[..open].trim();
            if !text.is_empty()
                && stack
                    .last()
                    .is_some_and(|top| TEXT_OF.contains(&top.as_str()))
            {
                out.push_str(&format!("{}\"{text}\"\n", "  ".repeat(stack.len())));
            }
            let close = rest[open..].find('>').map_or(rest.len(), |at| open + at);
            let tag = &rest[open + 1..close];
            rest = &rest[(close + 1).min(rest.len())..];
            if let Some(name) = tag.strip_prefix('/') {
                if let Some(at) = stack.iter().rposition(|open| open == name) {
                    stack.truncate(at);
                }
                continue;
            }
            if tag.starts_with('!') {
                continue;
            }
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let mut line = format!("{}{name}", "  ".repeat(stack.len()));
            if let Some(id) = attribute(tag, "id") {
                line.push_str(&format!("#{id}"));
            }
            if let Some(class) = attribute(tag, "class") {
                line.push_str(&format!(".{}", class.replace(' ', ".")));
            }
            out.push_str(&line);
            out.push('\n');
            // A chart's and the style sheet's insides are plotters' and CSS's, not structure.
            if name == "svg" || name == "style" {
                let end = format!("</{name}>");
                rest = rest.find(&end).map_or("", |at| &rest[at + end.len()..]);
                continue;
            }
            if !VOID.contains(&name.as_str()) && !tag.ends_with('/') {
                stack.push(name);
            }
        }
        // Runs of the same line (a row's cells) are written once, with their count.
        let mut compact: Vec<(String, usize)> = Vec::new();
        for line in out.lines() {
            match compact.last_mut() {
                Some((last, count)) if last == line => *count += 1,
                _ => compact.push((line.to_string(), 1)),
            }
        }
        compact
            .into_iter()
            .map(|(line, count)| match count {
                1 => format!("{line}\n"),
                n => format!("{line} ×{n}\n"),
            })
            .collect()
    }

    fn page_of(summary: &Summary) -> String {
        let setup = setup();
        render(&Page {
            title: title(summary, &setup),
            sections: vec![Section {
                heading: None,
                summary,
                setup: &setup,
            }],
            gradcam: None,
            unreadable: vec![("records/x.json".into(), "not JSON <at all>".into())],
        })
    }

    #[test]
    fn the_page_of_three_seeds_keeps_its_structure() {
        let mut summary = summary_of(records(&[1, 2, 3]));
        summary.skipped.push(Skipped {
            backend: "burn-tch".into(),
            reason: "its native library could not be provisioned".into(),
        });
        summary.command = Some("cargo xtask compare --seeds 3".into());
        // The structure must not depend on the host: a CPU without vector extensions would drop
        // their row.
        let mut environment = Environment::of_this_machine();
        environment.vector_extensions = vec!["AVX2".into()];
        summary.environment = Some(environment);
        let html = page_of(&summary);
        insta::with_settings!({filters => vec![
            // Timings differ from run to run: the verdict lines of speed and memory keep their
            // metric and pair only.
            (r#"((?:s/epoch|peak RSS|time to first step|time to accuracy), \w+ vs \w+):[^"\n]*"#, "$1: [timing redacted]"),
        ]}, {
            insta::assert_snapshot!(skeleton(&html));
        });
    }

    #[test]
    fn user_text_is_escaped_and_nothing_is_fetched() {
        let mut records = records(&[1]);
        for record in &mut records {
            record.class_names[0] = "<script>alert(1)</script>".into();
        }
        let mut summary = summary_of(records);
        summary.failures.push(Failure {
            backend: "tf".into(),
            seed: Some(1),
            configuration: None,
            error: "a \"quoted\" <error> & more".into(),
        });
        let html = page_of(&summary);
        assert!(!html.contains("<script>"), "a class name was not escaped");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a &quot;quoted&quot; &lt;error&gt; &amp; more"));
        assert!(html.contains("not JSON &lt;at all&gt;"));
        assert!(remote_attributes(&html).is_empty());
        // One seed: the headline numbers instead of verdicts, and every chart still drawn.
        assert!(html.contains("Headline numbers") && html.contains("not decided"));
        assert!(!html.contains("Holm") && !html.contains("95%"), "{html}");
        assert_eq!(html.matches("<figure class=\"chart").count(), 5);
        assert_eq!(html.matches("<svg width=").count(), 5);
        // The legend draws each backend's line: its dash and its marker.
        assert_eq!(html.matches("<svg class=\"sample\"").count(), 2);
    }

    /// Every time and memory field reads the same in the terminal, `report.md` and
    /// `report.html`: times with 3 significant figures in their unit, memory in whole MiB.
    #[test]
    fn times_and_memory_read_the_same_everywhere() {
        let mut records = records(&[7]);
        let fields = [(0.015123, 0.0371234, 647.4), (0.012345, 0.22912, 1115.2)];
        for (record, (epoch, first, mib)) in records.iter_mut().zip(fields) {
            for each in &mut record.epochs {
                each.seconds = epoch;
            }
            record.median_epoch_seconds = epoch;
            record.time_to_first_step_seconds = first;
            record.peak_rss_bytes = (mib * 1024.0 * 1024.0) as u64;
        }
        let summary = summary_of(records);
        let page = page_of(&summary);
        // The bars are labelled as the tables write their values.
        let bars = page
            .split("<figure class=\"chart bar\"")
            .skip(1)
            .map(|figure| figure.split("</figure>").next().unwrap_or_default())
            .collect::<String>();
        for label in ["15.1 ms", "12.3 ms", "647", "1,115", "37.1 ms", "229 ms"] {
            let text = format!(">\n{label}\n</text>");
            assert!(bars.contains(&text), "no bar is labelled {label}: {bars}");
        }
        // The rest of the page, without its style sheet and charts, whose coordinates and
        // axes are numbers of their own.
        let mut html = String::new();
        let mut rest = page.as_str();
        while let Some(start) = rest.find("<style>").or_else(|| rest.find("<svg")) {
            html.push_str(&rest[..start]);
            let close = if rest[start..].starts_with("<style>") {
                "</style>"
            } else {
                "</svg>"
            };
            let end = rest[start..]
                .find(close)
                .map_or(rest.len(), |end| start + end + close.len());
            rest = &rest[end..];
        }
        html.push_str(rest);
        let views = [
            ("the terminal", crate::report::terminal(&summary)),
            ("report.md", crate::report::markdown(&summary, &setup())),
            ("report.html", html),
        ];
        for (view, text) in &views {
            for shown in ["15.1 ms", "37.1 ms", "647", "12.3 ms", "229 ms", "1,115"] {
                assert!(text.contains(shown), "{view} lacks {shown}:\n{text}");
            }
            for other in [
                "0.02", "0.015", "0.012", "0.229", "0.037", "1115", "15.12", "12.35",
            ] {
                assert!(!text.contains(other), "{view} writes {other}:\n{text}");
            }
        }
        assert_eq!(
            parallax_core::OptimizerConfig::adam(1e-3).kind.to_string(),
            "Adam (β₁ 0.9, β₂ 0.999, ε 1e-8, PyTorch form)"
        );
    }

    /// Engines that predict the same are shown as one matrix said to be all of theirs; an
    /// engine that differs is shown as its difference to the first, over the seeds both ran.
    #[test]
    fn confusion_matrices_show_what_differs() {
        let records = records(&[1, 2, 3]);
        let html = page_of(&summary_of(records.clone()));
        assert_eq!(
            html.matches("<table class=\"heat confusion\"").count(),
            1,
            "{html}"
        );
        assert!(html.contains("All identical: tch and tf predicted exactly the same classes"));
        let first_class = &records[0].class_names[0];
        assert!(html.contains(&format!("<th class=\"true-class\">{first_class}</th>")));

        // tf moves 3 examples of class 0 from class 0 to class 1 in seed 2 only; tch lacks seed 3.
        let mut records = records;
        let mut moved = false;
        records.retain(|r| !(r.backend == "tch" && r.seed == 3));
        for record in &mut records {
            if record.backend == "tf" && record.seed == 2 {
                let mut rows = record.confusion_matrix.rows().to_vec();
                rows[0][0] -= 3;
                rows[0][1] += 3;
                record.confusion_matrix = rows.try_into().unwrap();
                moved = true;
            }
        }
        assert!(moved);
        let html = page_of(&summary_of(records));
        assert!(
            html.contains("<table class=\"heat confusion difference\""),
            "{html}"
        );
        assert!(
            html.contains("over the 2 seeds both completed: 3 examples predicted differently"),
            "{html}"
        );
        assert!(
            html.contains(">−3</td>") && html.contains(">+3</td>"),
            "{html}"
        );
    }

    #[test]
    fn heat_goes_from_white_to_dark_blue_with_readable_ink() {
        assert_eq!(heat(0.0), "background:rgb(247,251,255);color:#1d2733");
        assert_eq!(heat(1.0), "background:rgb(8,48,107);color:#ffffff");
        assert_eq!(heat(f64::NAN), heat(0.0));
    }

    #[test]
    fn remote_urls_in_src_and_href_are_found_and_local_ones_are_not() {
        let html = r##"<a href="#verdicts">v</a><img src="data:image/png;base64,AA"><img src='https://x.test/a.png'><link href="//cdn.test/x.css"><svg xmlns="http://www.w3.org/2000/svg"></svg>"##;
        let found = remote_attributes(html);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("https://x.test/a.png"));
        assert!(found[1].contains("//cdn.test/x.css"));
    }
}

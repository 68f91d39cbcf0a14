//! The reports of a directory, rendered from what it holds: `DIR/report.md` and
//! `DIR/report.html` from the records (and GradCAM output) in `DIR`, with the statistics over
//! seeds recomputed by core. `cargo xtask report DIR` and `cargo xtask gradcam` use it.
//!
//! It reads every record under `DIR/records/` (older record versions are migrated as they are
//! read; interrupted runs show as incomplete) and the failures of `DIR/summary.json` when there
//! is one. Records of different configurations (a directory merged by hand, or reused by
//! several comparisons) are never pooled: each configuration is reported on its own, run by
//! run. An attribution is recomputed from its configurations' subdirectories, and the repeats
//! of `--repeat` are kept from the summary. `summary.json` and the records are left as they
//! are. A record that cannot be read is listed in both reports, which render without it, and
//! makes the command fail after writing them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parallax_core::layout::Layout;
use parallax_core::record::{RunRecord, RunRequest};
use parallax_core::stats::attribution::{self, Attribution, Configuration};
use parallax_core::stats::comparison::{self, Margins};

use crate::error::{Error, Result};
use crate::report::{self, Setup, Summary, html};

/// Every `.json` file under `dir`, in a stable order.
pub fn json_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in
            std::fs::read_dir(&next).map_err(|source| Error::io("reading", &next, source))?
        {
            let path = entry
                .map_err(|source| Error::io("reading", &next, source))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// What a configuration's runs share: the request the directory still holds for its first
/// run, or else what the records themselves say.
fn setup_of(layout: &Layout, records: &[RunRecord]) -> Option<Setup> {
    let from_request = records.first().and_then(|record| {
        let text = std::fs::read_to_string(layout.request(&record.run)).ok()?;
        serde_json::from_str::<RunRequest>(&text).ok()
    });
    match from_request {
        Some(request) => Some(Setup::of_request(&request)),
        None => Setup::of_records(records),
    }
}

/// The attribution of the `a` vs `b` gap from the controlled `records` and each other
/// configuration's records, read from its subdirectory.
fn reattribute(
    layout: &Layout,
    a: &str,
    b: &str,
    records: &[RunRecord],
    margins: &Margins,
) -> Result<Attribution> {
    let mut tagged: Vec<(Configuration, RunRecord)> = records
        .iter()
        .map(|record| (Configuration::Controlled, record.clone()))
        .collect();
    for configuration in Configuration::all() {
        if configuration == Configuration::Controlled {
            continue;
        }
        let dir = layout.root().join(configuration.key()).join("records");
        if !dir.is_dir() {
            continue;
        }
        for path in json_files(&dir)? {
            let record = RunRecord::load(&path)?;
            tagged.push((configuration, record));
        }
    }
    Ok(attribution::attribute(a, b, &tagged, margins))
}

/// What [`render_dir`] wrote, and the records it could not read.
#[derive(Debug)]
pub struct Rendered {
    /// The reports written.
    pub written: Vec<PathBuf>,
    /// Records that could not be read: path and error line.
    pub unreadable: Vec<(String, String)>,
}

impl Rendered {
    /// One line naming the records that could not be read, when there are any.
    pub fn unreadable_error(&self) -> Option<Error> {
        (!self.unreadable.is_empty()).then(|| Error::Unreadable {
            files: self.unreadable.clone(),
        })
    }
}

/// The comparison of one configuration's records, ready to render.
struct Part {
    heading: Option<String>,
    summary: Summary,
    setup: Setup,
    label: String,
}

/// Renders `DIR/report.md` and `DIR/report.html` from the records and GradCAM output in
/// `dir`; `cargo xtask gradcam` calls it for a directory that also holds a comparison.
pub fn render_dir(dir: &Path, target_accuracy: Option<f64>) -> Result<Rendered> {
    let layout = Layout::new(dir);
    let records_dir = layout.root().join("records");
    let mut unreadable = Vec::new();
    // GradCAM output that cannot be read is listed like a corrupt record, and the rest renders.
    let gradcam = html::GradCamOutput::load(layout.root()).unwrap_or_else(|error| {
        let path = layout.root().join("gradcam/summary.json");
        unreadable.push((
            path.display().to_string(),
            parallax_core::error::one_line(&error),
        ));
        None
    });
    if !records_dir.is_dir() {
        if gradcam.is_none() && unreadable.is_empty() {
            return Err(Error::NothingToReport {
                dir: dir.to_path_buf(),
                missing: "neither a records/ directory nor gradcam/ output",
                hint: "pass the --out DIR of a `cargo xtask compare` or `cargo xtask gradcam`",
            });
        }
        let page = html::Page {
            title: format!("parallax: GradCAM in {}", dir.display()),
            sections: Vec::new(),
            gradcam,
            unreadable: unreadable.clone(),
        };
        return Ok(Rendered {
            written: vec![html::write(layout.root(), &page)?],
            unreadable,
        });
    }
    // The summary only adds to what the records say: one that cannot be read is left aside.
    let previous = Summary::load(&layout.summary()).ok();
    let by_configuration = read_records(&records_dir, &mut unreadable)?;
    let parts = parts(
        &layout,
        by_configuration,
        previous.as_ref(),
        target_accuracy,
    )?;
    if parts.len() > 1 {
        let labels: Vec<&str> = parts.iter().map(|part| part.label.as_str()).collect();
        eprintln!(
            "note: {} holds runs of {} configurations ({}); each is reported on its own",
            dir.display(),
            parts.len(),
            labels.join(", ")
        );
    }
    std::fs::write(layout.report_markdown(), markdown(dir, &parts, &unreadable))
        .map_err(|source| Error::io("writing", layout.report_markdown(), source))?;
    let title = match parts.as_slice() {
        [one] => html::title(&one.summary, &one.setup),
        _ => format!("parallax: the runs in {}", dir.display()),
    };
    let page = html::Page {
        title,
        sections: parts
            .iter()
            .map(|part| html::Section {
                heading: part.heading.clone(),
                summary: &part.summary,
                setup: &part.setup,
            })
            .collect(),
        gradcam,
        unreadable: unreadable.clone(),
    };
    let report_html = html::write(layout.root(), &page)?;
    Ok(Rendered {
        written: vec![layout.report_markdown(), report_html],
        unreadable,
    })
}

/// The records under `records_dir`, by configuration; each file that does not read is added to
/// `unreadable` with its error line.
pub fn read_records(
    records_dir: &Path,
    unreadable: &mut Vec<(String, String)>,
) -> Result<BTreeMap<String, Vec<RunRecord>>> {
    let mut by_configuration: BTreeMap<String, Vec<RunRecord>> = BTreeMap::new();
    for path in json_files(records_dir)? {
        match RunRecord::load(&path) {
            Ok(record) => by_configuration
                .entry(record.run.configuration.clone())
                .or_default()
                .push(record),
            Err(error) => unreadable.push((
                path.display().to_string(),
                parallax_core::error::one_line(&error),
            )),
        }
    }
    if by_configuration.is_empty() && unreadable.is_empty() {
        return Err(Error::NothingToReport {
            dir: records_dir.to_path_buf(),
            missing: "no run records",
            hint: "a comparison writes them there as its runs finish",
        });
    }
    Ok(by_configuration)
}

/// Each configuration's comparison, its statistics recomputed from its records. The summary
/// the comparison wrote (`previous`) gives the margins, the target accuracy, the backends'
/// order, and, when the directory holds its one configuration, its failures, attribution,
/// repeats, command line and machine.
fn parts(
    layout: &Layout,
    by_configuration: BTreeMap<String, Vec<RunRecord>>,
    previous: Option<&Summary>,
    target_accuracy: Option<f64>,
) -> Result<Vec<Part>> {
    let (margins, target) = match previous.and_then(|s| s.comparison.as_ref()) {
        Some(comparison) => (comparison.margins, comparison.target_accuracy),
        None => (Margins::default(), None),
    };
    let target = target_accuracy.or(target);
    let several = by_configuration.len() > 1;
    // The comparison's own order of backends, which decides the direction of each pair.
    let order: Vec<String> = previous
        .iter()
        .flat_map(|summary| summary.records.iter().map(|record| record.backend.clone()))
        .fold(Vec::new(), |mut seen, backend| {
            if !seen.contains(&backend) {
                seen.push(backend);
            }
            seen
        });
    let rank = |backend: &str| {
        order
            .iter()
            .position(|known| known == backend)
            .unwrap_or(order.len())
    };
    // The comparison's own summary speaks for the directory only when it holds one configuration.
    let same_run = previous.filter(|_| !several);
    let mut parts = Vec::new();
    for (index, (configuration, mut records)) in by_configuration.into_iter().enumerate() {
        records.sort_by(|x, y| {
            (x.seed, rank(&x.backend), &x.backend).cmp(&(y.seed, rank(&y.backend), &y.backend))
        });
        let failures = same_run
            .map(|summary| summary.failures.clone())
            .unwrap_or_default();
        let failed: Vec<(String, u64)> = failures
            .iter()
            .filter(|failure| failure.configuration.is_none())
            .filter_map(|failure| Some((failure.backend.clone(), failure.seed?)))
            .filter(|(backend, seed)| {
                !records
                    .iter()
                    .any(|r| &r.backend == backend && r.seed == *seed)
            })
            .collect();
        let Some(setup) = setup_of(layout, &records) else {
            continue;
        };
        let attribution = match same_run.and_then(|s| s.attribution.as_ref()) {
            Some(earlier) => Some(reattribute(
                layout, &earlier.a, &earlier.b, &records, &margins,
            )?),
            None => None,
        };
        let label = format!("{} on {}", records[0].model, records[0].dataset);
        let summary = Summary {
            comparison: Some(comparison::compare(&records, &failed, &margins, target)),
            attribution,
            repeat: same_run.map(|s| s.repeat.clone()).unwrap_or_default(),
            records,
            failures,
            // The command line, wall time, skipped backends and machine are the comparison's,
            // which ran one configuration.
            command: same_run.and_then(|s| s.command.clone()),
            wall_seconds: same_run.and_then(|s| s.wall_seconds),
            skipped: same_run.map(|s| s.skipped.clone()).unwrap_or_default(),
            environment: previous.and_then(|s| s.environment.clone()),
            ..Summary::default()
        };
        parts.push(Part {
            heading: several.then(|| {
                format!(
                    "Run {} of configuration {configuration}: {label}",
                    index + 1
                )
            }),
            summary,
            setup,
            label,
        });
    }
    Ok(parts)
}

/// `report.md` of the parts, each under its heading when there are several, then the records
/// that could not be read.
fn markdown(dir: &Path, parts: &[Part], unreadable: &[(String, String)]) -> String {
    let mut out = String::new();
    if parts.len() > 1 {
        out.push_str(&format!(
            "# parallax report of {}\n\nThis directory holds runs of {} configurations; each is reported on its own, and none is pooled with another.\n\n",
            dir.display(),
            parts.len()
        ));
    }
    for part in parts {
        let markdown = report::markdown(&part.summary, &part.setup);
        match &part.heading {
            Some(heading) => {
                out.push_str(&markdown.replacen(
                    "# parallax comparison",
                    &format!("# {heading}"),
                    1,
                ));
                out.push_str("\n---\n\n");
            }
            None => out.push_str(&markdown),
        }
    }
    if !unreadable.is_empty() {
        out.push_str("\n## Unreadable records\n\n");
        for (path, error) in unreadable {
            out.push_str(&format!("- `{path}`: {error}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use parallax_core::record::write_json_atomically;

    /// A record of `model` and `seed` from the committed version-1 record, written into `dir`
    /// where a comparison would write it.
    fn place(dir: &Path, model: &str, seed: u64) -> RunRecord {
        let fixture = crate::workspace::repo_root().join("fixtures/records/v1-tch-mlp.json");
        let mut record = RunRecord::load(&fixture).unwrap();
        record.seed = seed;
        record.run.seed = seed;
        record.model = model.into();
        record.run.model = model.into();
        record.run.configuration = format!("configuration-of-{model}");
        write_json_atomically(&Layout::new(dir).record(&record.run), &record).unwrap();
        record
    }

    #[test]
    fn a_directory_without_records_gets_one_line_saying_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        let error = render_dir(dir.path(), None).unwrap_err().to_string();
        assert!(error.contains("holds neither a records/ directory nor gradcam/ output"));
        std::fs::create_dir(dir.path().join("records")).unwrap();
        let error = render_dir(dir.path(), None).unwrap_err().to_string();
        assert!(error.contains("holds no run records"), "{error}");
        assert!(!error.contains('\n'));
    }

    #[test]
    fn a_corrupt_record_is_listed_and_the_rest_still_renders() {
        let dir = tempfile::tempdir().unwrap();
        place(dir.path(), "mlp", 1);
        let corrupt = dir.path().join("records/mlp/tf/seed-1.json");
        std::fs::create_dir_all(corrupt.parent().unwrap()).unwrap();
        std::fs::write(&corrupt, b"{\"record_version\": 3, \"status\": ").unwrap();
        let rendered = render_dir(dir.path(), None).unwrap();
        assert_eq!(rendered.unreadable.len(), 1);
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("Unreadable records") && html.contains("seed-1.json"));
        assert!(html.contains("id=\"chart-time-to-accuracy\""));
        let error = rendered.unreadable_error().unwrap().to_string();
        assert!(
            error.starts_with("1 file(s) could not be read and were left out of the report"),
            "{error}"
        );
        assert!(!error.contains('\n'));
    }

    #[test]
    fn records_of_different_models_are_reported_apart() {
        let dir = tempfile::tempdir().unwrap();
        for seed in 1..=3 {
            place(dir.path(), "mlp", seed);
        }
        place(dir.path(), "cnn", 1);
        let rendered = render_dir(dir.path(), None).unwrap();
        assert!(rendered.unreadable.is_empty());
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("runs of 2 configurations"));
        assert!(html.contains("Run 1 of configuration configuration-of-cnn: cnn on"));
        assert!(html.contains("Run 2 of configuration configuration-of-mlp: mlp on"));
        // Each configuration's section has its own ids, so the page stays valid.
        assert!(html.contains("id=\"run1-verdicts\"") && html.contains("id=\"run2-verdicts\""));
        let markdown = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        // Each has its answer; only the 3-seed one has verdicts.
        assert_eq!(markdown.matches("- **Accuracy").count(), 2, "{markdown}");
        assert_eq!(markdown.matches("## Verdicts").count(), 1);
    }
}

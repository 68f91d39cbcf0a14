//! `cargo xtask report DIR`: re-renders `DIR/report.md` from the records in `DIR`, with the
//! statistics over seeds recomputed by core.
//!
//! It reads every record under `DIR/records/` (older record versions are migrated as they are
//! read; interrupted runs show as incomplete) and the failures of `DIR/summary.json` when there
//! is one. Records of different configurations (a directory merged by hand, or reused by
//! several comparisons) are never pooled: each configuration is reported on its own, run by
//! run. An attribution is recomputed from its configurations' subdirectories, and the repeats
//! of `--repeat` are kept from the summary. `summary.json` and the records are left as they
//! are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use parallax_core::Device;
use parallax_core::data::{DataRequest, DatasetName};
use parallax_core::layout::Layout;
use parallax_core::record::{RunRecord, RunRequest};
use parallax_core::spec::ModelSource;
use parallax_core::stats::attribution::{self, Attribution, Configuration};
use parallax_core::stats::comparison::{self, Margins};

use crate::report::{self, Failure, Summary};

/// Flags of `cargo xtask report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The output directory of a comparison (`cargo xtask compare --out DIR`).
    pub dir: PathBuf,
    /// Report, for each run, when its test accuracy first reached this fraction; by default
    /// the target the comparison's summary names, if any.
    #[arg(long)]
    pub target_accuracy: Option<f64>,
}

/// Every `.json` file under `dir`, in a stable order.
fn json_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in
            std::fs::read_dir(&next).with_context(|| format!("reading {}", next.display()))?
        {
            let path = entry?.path();
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

/// The request a record's run was made from: its request file when the directory still has
/// it, or else the request the record itself describes.
fn request_of(layout: &Layout, record: &RunRecord) -> RunRequest {
    let path = layout.request(&record.run);
    if let Some(request) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<RunRequest>(&text).ok())
    {
        return request;
    }
    RunRequest {
        backend: record.backend.clone(),
        device: record.device.parse().unwrap_or(Device::Cpu),
        threads: record.threads,
        flush_denormals: record.flush_denormals,
        model: record
            .run
            .model
            .parse()
            .unwrap_or_else(|_| ModelSource::File(PathBuf::from(&record.run.model))),
        data: DataRequest {
            dataset: record.dataset.parse().unwrap_or(DatasetName::ImageFolder),
            data_dir: None,
            cache_dir: PathBuf::new(),
            fixtures_dir: PathBuf::new(),
            image_size: 0,
            image_channels: 0,
            limit_train: None,
        },
        epochs: record.epochs.len() as u32,
        batch_size: record.batch_size,
        optimizer: record.optimizer,
        seed: record.seed,
        init: record.init.clone(),
        native: record.native.clone(),
        save_weights: false,
        git_revision: record.git_revision.clone(),
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
) -> anyhow::Result<Attribution> {
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

/// Re-renders the report.
pub fn run(args: Args) -> anyhow::Result<()> {
    let layout = Layout::new(&args.dir);
    let records_dir = layout.root().join("records");
    if !records_dir.is_dir() {
        bail!(
            "{} holds no records/ directory; pass the --out DIR of a `cargo xtask compare`",
            args.dir.display()
        );
    }
    let previous: Option<Summary> = std::fs::read_to_string(layout.summary())
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let mut by_configuration: BTreeMap<String, Vec<RunRecord>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for path in json_files(&records_dir)? {
        match RunRecord::load(&path) {
            Ok(record) => by_configuration
                .entry(record.run.configuration.clone())
                .or_default()
                .push(record),
            Err(error) => unreadable.push(Failure {
                backend: path.display().to_string(),
                seed: None,
                configuration: None,
                error: parallax_core::error::one_line(&error),
            }),
        }
    }
    if by_configuration.is_empty() && unreadable.is_empty() {
        bail!("{} holds no run records", records_dir.display());
    }
    let (margins, target) = match previous.as_ref().and_then(|s| s.comparison.as_ref()) {
        Some(comparison) => (comparison.margins, comparison.target_accuracy),
        None => (Margins::default(), None),
    };
    let target = args.target_accuracy.or(target);
    let several = by_configuration.len() > 1;
    let mut out = String::new();
    if several {
        out.push_str(&format!(
            "# parallax report of {}\n\nThis directory holds runs of {} configurations; each is reported on its own, and none is pooled with another.\n\n",
            args.dir.display(),
            by_configuration.len()
        ));
    }
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
    for (index, (configuration, mut records)) in by_configuration.into_iter().enumerate() {
        records.sort_by(|x, y| {
            (x.seed, rank(&x.backend), &x.backend).cmp(&(y.seed, rank(&y.backend), &y.backend))
        });
        // Failures of the comparison's own summary belong to its configuration only when the
        // directory holds one.
        let failures = if several {
            Vec::new()
        } else {
            previous
                .as_ref()
                .map(|summary| summary.failures.clone())
                .unwrap_or_default()
        };
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
        let request = request_of(&layout, &records[0]);
        let attribution = match previous.as_ref().and_then(|s| s.attribution.as_ref()) {
            Some(earlier) if !several => Some(reattribute(
                &layout, &earlier.a, &earlier.b, &records, &margins,
            )?),
            _ => None,
        };
        let summary = Summary {
            comparison: Some(comparison::compare(&records, &failed, &margins, target)),
            attribution,
            repeat: previous
                .as_ref()
                .filter(|_| !several)
                .map(|s| s.repeat.clone())
                .unwrap_or_default(),
            records,
            failures,
            // The command line and wall time are the comparison's, which ran one configuration.
            command: previous
                .as_ref()
                .filter(|_| !several)
                .and_then(|s| s.command.clone()),
            wall_seconds: previous
                .as_ref()
                .filter(|_| !several)
                .and_then(|s| s.wall_seconds),
            ..Summary::default()
        };
        let markdown = report::markdown(&summary, &request);
        if several {
            out.push_str(&markdown.replacen(
                "# parallax comparison",
                &format!("# Run {} of configuration {configuration}", index + 1),
                1,
            ));
            out.push_str("\n---\n\n");
        } else {
            out.push_str(&markdown);
        }
    }
    if !unreadable.is_empty() {
        out.push_str("\n## Unreadable records\n\n");
        for failure in &unreadable {
            out.push_str(&format!("- `{}`: {}\n", failure.backend, failure.error));
        }
    }
    std::fs::write(layout.report_markdown(), &out)
        .with_context(|| format!("writing {}", layout.report_markdown().display()))?;
    println!("wrote {}", layout.report_markdown().display());
    Ok(())
}

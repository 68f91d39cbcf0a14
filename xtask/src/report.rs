//! The comparison's summary (`summary.json`), its Markdown report and its terminal table.

use comfy_table::{Table, TableStyle, presets};
use parallax_core::Topic;
use parallax_core::record::{RunRecord, RunRequest};
use serde::{Deserialize, Serialize};

/// A backend whose run failed, with its error line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    /// Backend name.
    pub backend: String,
    /// The worker's error.
    pub error: String,
}

/// All records of one comparison and the failures beside them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Successful runs, in the order they ran.
    pub records: Vec<RunRecord>,
    /// Failed runs.
    pub failures: Vec<Failure>,
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1024.0 * 1024.0))
}

fn table(header: &[&str], rows: Vec<Vec<String>>, preset: TableStyle) -> Table {
    let mut table = Table::new();
    table.load_style(preset).set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    table
}

fn speed_rows(summary: &Summary) -> Vec<Vec<String>> {
    summary
        .records
        .iter()
        .map(|r| {
            let median_rate = r.train_examples as f64 / r.median_epoch_seconds;
            vec![
                r.backend.clone(),
                format!("{:.2}", r.median_epoch_seconds),
                format!("{median_rate:.0}"),
                r.epochs
                    .iter()
                    .map(|e| format!("{:.2}", e.seconds))
                    .collect::<Vec<_>>()
                    .join(" / "),
                format!("{:.3}", r.time_to_first_step_seconds),
                mib(r.peak_rss_bytes),
            ]
        })
        .collect()
}

fn quality_rows(summary: &Summary) -> Vec<Vec<String>> {
    summary
        .records
        .iter()
        .map(|r| {
            vec![
                r.backend.clone(),
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

const SPEED: &[&str] = &[
    "backend",
    "median s/epoch",
    "samples/s",
    "s per epoch",
    "to first step s",
    "peak RSS MiB",
];
const QUALITY: &[&str] = &[
    "backend",
    "test acc",
    "test loss",
    "weighted P",
    "weighted R",
    "weighted F1",
    "macro F1",
];

/// The fairness ledger as one table: a row per topic, a column per backend. Markdown cells
/// cannot hold a `|`, so one is written as a slash.
fn ledger_table(summary: &Summary) -> Table {
    let mut header = vec!["topic".to_string()];
    header.extend(summary.records.iter().map(|r| r.backend.clone()));
    let rows = Topic::ALL
        .iter()
        .map(|&topic| {
            let mut row = vec![topic.title().to_string()];
            row.extend(summary.records.iter().map(|r| {
                r.ledger
                    .get(topic)
                    .unwrap_or("(not recorded)")
                    .replace('|', "/")
            }));
            row
        })
        .collect();
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    table(&header_refs, rows, presets::ASCII_MARKDOWN)
}

/// The table printed at the end of `cargo xtask compare`.
pub fn terminal_table(summary: &Summary) -> String {
    let mut rows = Vec::new();
    for r in &summary.records {
        rows.push(vec![
            r.backend.clone(),
            format!("{} {}", r.framework, r.framework_version),
            format!("{:.4}", r.test_accuracy),
            format!("{:.4}", r.weighted_f1),
            format!("{:.2}", r.median_epoch_seconds),
            format!("{:.3}", r.time_to_first_step_seconds),
            mib(r.peak_rss_bytes),
        ]);
    }
    for f in &summary.failures {
        rows.push(vec![f.backend.clone(), "failed".into(), f.error.clone()]);
    }
    table(
        &[
            "backend",
            "engine",
            "test acc",
            "weighted F1",
            "median s/epoch",
            "to first step s",
            "peak RSS MiB",
        ],
        rows,
        presets::UTF8_FULL_CONDENSED,
    )
    .to_string()
}

/// `report.md`: one table per metric family, one row per backend.
pub fn markdown(summary: &Summary, request: &RunRequest) -> String {
    let md = presets::ASCII_MARKDOWN;
    let mut out = String::new();
    let first = summary.records.first();
    out.push_str("# parallax comparison\n\n");
    out.push_str(&format!(
        "Model `{}` on `{}` ({} training, {} test examples), {} epochs, batch {}, optimizer {:?} at lr {}, seed {}, {} initial weights, {} threads, device {}.\n",
        request.model,
        first
            .map(|r| r.dataset.clone())
            .unwrap_or_else(|| request.data.dataset.to_string()),
        first.map(|r| r.train_examples).unwrap_or(0),
        first.map(|r| r.test_examples).unwrap_or(0),
        request.epochs,
        request.batch_size,
        request.optimizer.kind,
        request.optimizer.lr,
        request.seed,
        match &request.init {
            parallax_core::record::InitMode::Canonical => "shared canonical".to_string(),
            parallax_core::record::InitMode::Native => "each engine's own".to_string(),
            parallax_core::record::InitMode::File(path) => format!("shared, from {}", path.display()),
        },
        request.threads,
        request.device,
    ));
    out.push_str("Every backend saw the same examples in the same order.\n\n");

    out.push_str("## Engines\n\n");
    let engines = summary
        .records
        .iter()
        .map(|r| {
            vec![
                r.backend.clone(),
                r.framework.clone(),
                r.framework_version.clone(),
                r.device.clone(),
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

    out.push_str("\n\n## Speed and memory\n\nSeconds per epoch cover the training loop only; the median is robust to the first epoch's warm-up, which `to first step` shows on its own (build, weight import and first step).\n\n");
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
            let mut row = vec![r.backend.clone()];
            row.extend(r.epochs.iter().map(|e| {
                format!(
                    "{:.4} ({:.1} s)",
                    e.test_accuracy, e.elapsed_training_seconds
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
                let mut row = vec![r.backend.clone()];
                row.extend(r.report.per_class.iter().map(|c| format!("{:.3}", c.f1)));
                row
            })
            .collect();
        let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push_str(&table(&header_refs, rows, md).to_string());
    }

    out.push_str("\n\n## Fairness ledger\n\nWhat each engine does by default, and what parallax does instead so that every backend computes the same thing, topic by topic.\n\n");
    out.push_str(&ledger_table(summary).to_string());
    out.push('\n');

    if !summary.failures.is_empty() {
        out.push_str("\n## Failed runs\n\n");
        let rows = summary
            .failures
            .iter()
            .map(|f| vec![f.backend.clone(), f.error.clone()])
            .collect();
        out.push_str(&table(&["backend", "error"], rows, md).to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_every_section_and_lists_failures() {
        let summary = Summary {
            records: Vec::new(),
            failures: vec![Failure {
                backend: "tf".into(),
                error: "no GPU".into(),
            }],
        };
        let request: RunRequest = serde_json::from_value(serde_json::json!({
            "backend": "burn", "device": "cpu", "threads": 2, "flush_denormals": true,
            "model": "mlp", "dataset": "fashion-mnist", "data_dir": null,
            "cache_dir": "/tmp", "fixtures_dir": "/tmp", "image_size": 64, "image_channels": 3,
            "epochs": 1, "batch_size": 64,
            "optimizer": {"kind": "sgd", "momentum": 0.9, "lr": 0.1},
            "seed": 1, "init": "canonical", "limit_train": null, "git_revision": "x"
        }))
        .unwrap();
        assert!(!request.save_weights);
        let markdown = markdown(&summary, &request);
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
        assert!(
            markdown.contains("| tf      | no GPU |") || markdown.contains("| tf | no GPU |"),
            "{markdown}"
        );
        assert!(terminal_table(&summary).contains("failed"));
    }
}

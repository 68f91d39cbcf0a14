//! The comparison's report: the schema of `summary.json` (`summary`), and its views: the
//! Markdown report (`markdown`), what `compare` prints (`terminal`), and the self-contained
//! HTML page (`html`, with `charts`). `dir` renders a directory's reports from its records;
//! `environment` describes the machine; `tables` holds the rows every view shows.

mod answer;
pub mod charts;
pub mod dir;
pub mod environment;
pub mod html;
pub mod markdown;
mod numbers;
mod roofline;
pub mod summary;
mod tables;
pub mod terminal;

pub use answer::EMULATED_BF16;
pub use dir::{Rendered, render_dir};
pub use environment::{Environment, cpu_model, host_line};
pub use markdown::markdown;
pub use summary::{
    Failure, GradCamSummary, Repeatability, SUMMARY_VERSION, Setup, Skipped, Summary, TaggedRecord,
};
pub use terminal::{terminal, terminal_table};

#[cfg(test)]
pub(crate) mod tests {
    use super::tables::ledger_lines;
    use super::*;
    use parallax_core::Topic;
    use parallax_core::record::RunRecord;
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
        let path = crate::workspace::repo_root().join("fixtures/records/v1-tch-mlp.json");
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
                precision: parallax_core::Precision::F32,
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

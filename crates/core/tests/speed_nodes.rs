//! Speed verdicts across cluster nodes: timings are paired only between runs on the same kind
//! of node, each with its node to itself; accuracy is compared wherever the runs ran.

use std::path::PathBuf;

use parallax_core::record::{Node, RunRecord};
use parallax_core::stats::comparison::{Margins, Metric, compare};

/// A complete record of `backend` and `seed` from the committed v1 fixture, with epochs of
/// `seconds` each and accuracy `accuracy`, on `node`.
fn record(
    backend: &str,
    seed: u64,
    seconds: f64,
    accuracy: f64,
    node: Option<(&str, bool)>,
) -> RunRecord {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/records/v1-tch-mlp.json");
    let mut record = RunRecord::load(&path).expect("fixture record");
    record.backend = backend.into();
    record.seed = seed;
    record.test_accuracy = accuracy;
    for epoch in &mut record.epochs {
        epoch.seconds = seconds;
    }
    record.node = node.map(|(kind, exclusive)| Node {
        name: format!("node-{seed}"),
        kind: kind.into(),
        exclusive,
    });
    record
}

/// Three seeds of two backends; b takes twice a's seconds, and its accuracy wobbles.
fn matrix(node_of_b: impl Fn(u64) -> Option<(&'static str, bool)>) -> Vec<RunRecord> {
    (1..=3)
        .flat_map(|seed| {
            let wobble = seed as f64 * 1e-3;
            [
                record("a", seed, 1.0, 0.80 + wobble, Some(("Xeon", true))),
                record("b", seed, 2.0, 0.79 + 2.0 * wobble, node_of_b(seed)),
            ]
        })
        .collect()
}

fn verdict_metrics(records: &[RunRecord]) -> (Vec<Metric>, Option<String>) {
    let comparison = compare(records, &[], &Margins::default(), None);
    (
        comparison.verdicts.iter().map(|v| v.metric).collect(),
        comparison.speed_note,
    )
}

#[test]
fn runs_on_the_same_kind_of_dedicated_node_get_speed_verdicts() {
    let (metrics, note) = verdict_metrics(&matrix(|_| Some(("Xeon", true))));
    assert!(metrics.contains(&Metric::EpochSeconds), "{metrics:?}");
    assert!(metrics.contains(&Metric::TestAccuracy));
    assert_eq!(note, None);
}

#[test]
fn runs_on_another_kind_of_node_get_no_speed_verdict_but_keep_accuracy() {
    // Seeds 1 and 2 of b ran on an EPYC: one comparable pair is left, fewer than a verdict needs.
    let (metrics, note) = verdict_metrics(&matrix(|seed| {
        Some((if seed < 3 { "EPYC" } else { "Xeon" }, true))
    }));
    assert!(
        !metrics.iter().any(|metric| metric.is_speed()),
        "{metrics:?}"
    );
    assert!(metrics.contains(&Metric::TestAccuracy));
    assert!(metrics.contains(&Metric::PeakMemory));
    let note = note.expect("a note says why");
    assert!(note.contains("same kind of node"), "{note}");
}

#[test]
fn runs_that_shared_their_node_get_no_speed_verdicts() {
    let (metrics, note) = verdict_metrics(&matrix(|_| Some(("Xeon", false))));
    assert!(
        !metrics.iter().any(|metric| metric.is_speed()),
        "{metrics:?}"
    );
    assert!(metrics.contains(&Metric::TestAccuracy));
    assert!(note.expect("a note says why").contains("--shared"));
}

//! The acceptance of comparisons over seeds, through `cargo xtask compare` as a user runs it:
//! verdicts from three seeds with one run deliberately failing, the attribution of a gap on a
//! model with batch norm, and native defaults with `--repeat` and `--target-accuracy`.

use std::path::Path;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::support::{summary, xtask, xtask_status};

/// A worker that fails tch's run of seed 2 the way a crashed worker does, and hands every
/// other run to the real worker.
fn failing_worker(dir: &Path, worker: &Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("worker-failing-tch-seed-2.sh");
    crate::support::write_script(
        &path,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n  */tch/seed-2.json*) echo 'error: deliberately failed by the seeds acceptance' >&2; exit 3;;\nesac\nexec '{}' \"$@\"\n",
            worker.display()
        ),
    )
}

fn array<'a>(value: &'a Value, key: &str) -> anyhow::Result<&'a Vec<Value>> {
    value[key]
        .as_array()
        .with_context(|| format!("summary.json has no {key} list"))
}

/// Runs the three comparisons and checks their summaries.
pub fn acceptance(worker: &Path) -> anyhow::Result<()> {
    let out = crate::support::acceptance_dir();
    let worker_text = worker.to_string_lossy().into_owned();
    // 500 training examples and 2 threads keep each run to seconds: these checks count runs,
    // verdicts and effects, which do not depend on how well a model trains.
    let quick = [
        "--dataset",
        "fashion-mnist-subset",
        "--limit-train",
        "500",
        "--threads",
        "2",
    ];

    // Three seeds on three engines, tch's seed 2 failing: the other runs are kept, the failure
    // is counted, and the pair without tch still gets its verdicts.
    let seeds = out.join("seeds");
    let failing = failing_worker(&out, worker)?;
    let mut args = vec![
        "compare",
        "--backends",
        "burn,tch,tf",
        "--seeds",
        "3",
        "--epochs",
        "2",
        "--out",
    ];
    let seeds_text = seeds.to_string_lossy().into_owned();
    let failing_text = failing.to_string_lossy().into_owned();
    args.extend([seeds_text.as_str(), "--worker", failing_text.as_str()]);
    args.extend(quick);
    eprintln!(
        "seeds acceptance: the next comparison fails tch's seed 2 on purpose; its error lines are expected"
    );
    let succeeded = xtask_status(&args)?;
    ensure!(!succeeded, "a comparison with a failed run exited 0");
    let summary_seeds = summary(&seeds)?;
    let records = array(&summary_seeds, "records")?;
    let failures = array(&summary_seeds, "failures")?;
    // By design: 3 engines × 3 seeds = 9 runs, exactly one failed on purpose (tch, seed 2).
    ensure!(
        records.len() == 8 && failures.len() == 1,
        "expected 8 records and 1 failure, got {} and {}",
        records.len(),
        failures.len()
    );
    ensure!(
        failures[0]["backend"] == "tch" && failures[0]["seed"] == 2,
        "the failure is {}",
        failures[0]
    );
    let comparison = &summary_seeds["comparison"];
    let verdicts = array(comparison, "verdicts")?;
    // One verdict per standard metric (Metric::STANDARD: accuracy, two F1s, epoch seconds, peak
    // memory, time to first step) for the one pair with the 3 paired seeds a verdict needs
    // (MIN_SEEDS); both pairs with tch have only 2.
    let pairs: Vec<(String, String)> = verdicts
        .iter()
        .map(|v| {
            (
                v["a"].as_str().unwrap_or_default().to_string(),
                v["b"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    ensure!(
        verdicts.len() == 6
            && pairs
                .iter()
                .all(|pair| pair == &("burn".into(), "tf".into())),
        "expected one verdict per metric for burn vs tf only (tch has 2 seeds), got {pairs:?}"
    );
    let tch = array(comparison, "runs")?
        .iter()
        .find(|runs| runs["backend"] == "tch")
        .context("no run counts for tch")?;
    // tch's seeds 1 and 3 complete and seed 2 is the failed one.
    ensure!(
        tch["complete"] == 2 && tch["incomplete"] == 1,
        "tch's runs are counted as {tch}"
    );
    eprintln!(
        "seeds acceptance: 8 of 9 runs kept, the failed one counted; {} verdicts for burn vs tf",
        verdicts.len()
    );

    // Attribution of the tch vs tf gap on a cnn with batch norm.
    let attribution = out.join("attribution");
    let spec = parallax::workspace::repo_root().join("specs/cnn-bn.toml");
    let mut args = vec!["compare", "--attribute", "tch,tf", "--model"];
    let spec_text = spec.to_string_lossy().into_owned();
    let attribution_text = attribution.to_string_lossy().into_owned();
    args.extend([
        spec_text.as_str(),
        "--seeds",
        "3",
        "--epochs",
        "1",
        "--out",
        attribution_text.as_str(),
        "--worker",
        worker_text.as_str(),
    ]);
    args.extend(quick);
    xtask(&args)?;
    let summary_attribution = summary(&attribution)?;
    let metrics = array(&summary_attribution["attribution"], "metrics")?;
    let accuracy = metrics
        .iter()
        .find(|metric| metric["metric"] == "test_accuracy")
        .context("no attribution of test accuracy")?;
    let effects = array(accuracy, "effects")?;
    // One effect per native factor (Factor::ALL has 5), each over the 3 seeds asked for.
    ensure!(
        effects.len() == 5 && effects.iter().all(|effect| effect[1]["n"] == 3),
        "expected 5 effects over 3 seeds, got {}",
        accuracy["effects"]
    );
    ensure!(
        accuracy["residual"]["n"] == 3,
        "no residual over 3 seeds: {}",
        accuracy["residual"]
    );
    for line in array(accuracy, "lines")? {
        eprintln!(
            "attribution acceptance: {}",
            line.as_str().unwrap_or_default()
        );
    }

    // Native defaults, one seed run twice, time to accuracy.
    let native = out.join("native");
    let native_text = native.to_string_lossy().into_owned();
    let mut args = vec![
        "compare",
        "--backends",
        "burn,tch,tf",
        "--seed",
        "42",
        "--defaults",
        "native",
        "--repeat",
        // Low enough for each engine to reach within 2 epochs of 500 examples (chance is 0.1),
        // so that time to accuracy has values; nothing below fails if one never does.
        "--target-accuracy",
        "0.5",
        "--epochs",
        "2",
        "--out",
        native_text.as_str(),
        "--worker",
        worker_text.as_str(),
    ];
    args.extend(quick);
    xtask(&args)?;
    let summary_native = summary(&native)?;
    for record in array(&summary_native, "records")? {
        // Every native factor of Factor::ALL, 5, set the engine's way.
        ensure!(
            array(record, "native")?.len() == 5,
            "{} ran without every native factor",
            record["backend"]
        );
    }
    let repeats = array(&summary_native, "repeat")?;
    // One repeat per engine: the seed run twice on each of the 3.
    ensure!(
        repeats.len() == 3,
        "expected 3 repeats, got {}",
        repeats.len()
    );
    for repeat in repeats {
        eprintln!(
            "native acceptance: {}",
            repeat["line"].as_str().unwrap_or_default()
        );
    }
    if summary_native["comparison"]["no_verdicts_because"].is_null() {
        bail!("one seed gave verdicts instead of descriptives only");
    }
    Ok(())
}

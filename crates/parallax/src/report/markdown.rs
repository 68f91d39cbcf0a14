//! `report.md`: the answer, then one table per metric family, the statistics over seeds, the
//! fairness ledger and the environment, as Markdown.

use comfy_table::presets;

use super::tables::*;
use super::{Setup, Summary, answer, numbers};

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
    let engines = summary
        .one_per_backend()
        .into_iter()
        .map(|r| {
            vec![
                r.backend.clone(),
                r.framework.clone(),
                r.framework_version.clone(),
                r.device.to_string(),
                r.threads.to_string(),
                if r.flush_denormals { "yes" } else { "no" }.to_string(),
                malloc_column(&r.malloc),
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
                "malloc",
                "git",
            ],
            engines,
            md,
        )
        .to_string(),
    );

    out.push_str("\n\n## Speed and memory\n\nSeconds per epoch cover the training loop only; the median is robust to the first epoch's warm-up, which `to first step` shows on its own (build, weight import and first step). GFLOP/s are each epoch's training FLOPs, counted from the spec (forward and backward per example, the optimizer's update per step; a multiply-add is 2 FLOPs), over its seconds; `of peak` divides them by the machine's matrix-product peak in the runs' precision (f32, or bf16 for bf16 runs), measured through every engine in the same comparison (the best of them).\n\n");
    if let Some(line) = summary.matmul_peak_line() {
        out.push_str(&format!("Peak: {line}.\n\n"));
    }
    out.push_str(&table(SPEED, speed_rows(summary), md).to_string());
    if let Some(roofline) = super::roofline::Roofline::of(summary) {
        out.push_str("\n\n");
        out.push_str(&roofline.markdown());
    }

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
    ) + &execution_words(setup.execution)
}

/// The precision and compilation in words, after the setup's sentence: nothing for f32
/// uncompiled, every engine's default.
fn execution_words(execution: parallax_core::Execution) -> String {
    use parallax_core::{Compile, Precision};
    let mut words = Vec::new();
    if execution.precision == Precision::Bf16 {
        words.push("Layers compute in bf16 from f32 master weights; loss and metrics in f32.");
    }
    if execution.compile == Compile::On {
        words.push("Each framework compiles its step (XLA, torch.compile): the first epoch and the time to first step carry the compile time, the steady s/epoch does not.");
    }
    words.iter().map(|w| format!(" {w}")).collect()
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

/// The engines table's malloc column: the workers' own settings by what they do, glibc's
/// defaults by name, anything else as its variables.
fn malloc_column(settings: &std::collections::BTreeMap<String, String>) -> String {
    let keeps = crate::workers::MALLOC_KEEPS_FREED_MEMORY;
    if settings.is_empty() {
        "glibc's defaults".into()
    } else if settings.len() == keeps.len()
        && keeps
            .iter()
            .all(|(name, value)| settings.get(*name).map(String::as_str) == Some(*value))
    {
        "keeps freed memory".into()
    } else {
        settings
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::malloc_column;
    use crate::workers::MALLOC_KEEPS_FREED_MEMORY;

    #[test]
    fn the_malloc_column_names_the_workers_settings_by_what_they_do() {
        let mut settings = std::collections::BTreeMap::new();
        assert_eq!(malloc_column(&settings), "glibc's defaults");
        for (name, value) in MALLOC_KEEPS_FREED_MEMORY {
            settings.insert(name.to_string(), value.to_string());
        }
        assert_eq!(malloc_column(&settings), "keeps freed memory");
        // A user's own setting is shown as it was set.
        settings.insert("MALLOC_ARENA_MAX".into(), "2".into());
        assert!(
            malloc_column(&settings).starts_with("MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_="),
            "{}",
            malloc_column(&settings)
        );
    }
}

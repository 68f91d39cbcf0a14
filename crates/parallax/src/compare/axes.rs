//! The run axes compared per backend. After `compare --precision f32,bf16` (or `--compile
//! off,on`) has run one comparison per value, each backend's runs at one value are set against
//! its runs at the first value listed, paired by seed, with the same statistics and verdicts
//! as between engines. The contrasts go to `axes.json` and `report.md` in the directory that
//! holds the values' comparisons (OUT, or OUT/<model>/), and to the terminal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use parallax_core::record::{RunRecord, write_json_atomically};
use parallax_core::stats::comparison::{self, Comparison, Margins, Metric, PairVerdict};
use parallax_core::stats::verdict::VerdictKind;
use parallax_core::{Bf16Units, Compile, Execution, Precision};
use serde::{Deserialize, Serialize};

use super::Args;
use crate::error::{Error, Result};
use crate::report::Summary;

/// A run axis: what differs between the two sides of a contrast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// `--precision`.
    Precision,
    /// `--compile`.
    Compile,
}

/// One value of an axis against the first value listed, with the other axis held.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Contrast {
    /// The axis that differs.
    pub axis: Axis,
    /// The side the other is measured against (the first value listed).
    pub baseline: Execution,
    /// The other side.
    pub other: Execution,
    /// Each backend's contrast, in the order the comparisons list them.
    pub backends: Vec<BackendContrast>,
}

/// One backend's runs at two values of an axis.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendContrast {
    /// The backend.
    pub backend: String,
    /// The runs of both sides compared over seeds, the arms named `<backend> <side>` (`tch
    /// bf16`, `tch f32`), the other side first; `None` when a side has no runs.
    pub comparison: Option<Comparison>,
    /// Why there is no comparison: the backend was skipped for a side, with the reason.
    pub missing: Option<String>,
    /// For a contrast with a bf16 side, the CPU's bf16 units as its runs recorded them.
    pub bf16_units: Option<Bf16Units>,
}

/// The contrasts of one directory's comparisons, as `axes.json` holds them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Axes {
    /// The contrasts, precision's before compilation's.
    pub contrasts: Vec<Contrast>,
}

/// The directory that holds the comparisons of `one`'s model, and each comparison's directory
/// with its execution.
fn model_dirs(args: &Args, model: &str) -> (PathBuf, Vec<(Execution, PathBuf)>) {
    let root = if args.model.len() > 1 {
        args.out.join(model)
    } else {
        args.out.clone()
    };
    let each = args
        .per_comparison()
        .into_iter()
        .filter(|one| one.model().key() == model)
        .map(|one| (one.execution(), one.out))
        .collect();
    (root, each)
}

/// Writes and prints the contrasts of every model of `args`.
pub fn write_all(args: &Args) -> Result<()> {
    let margins = super::margins(args)?;
    for model in &args.model {
        let model = model.key();
        let (root, each) = model_dirs(args, &model);
        let axes = contrasts(&each, &margins, args.target_accuracy)?;
        write_json_atomically(&root.join("axes.json"), &axes)?;
        let text = markdown(&model, &axes);
        let path = root.join("report.md");
        std::fs::write(&path, &text).map_err(|source| Error::io("writing", &path, source))?;
        eprintln!("\n{}", terminal(&model, &axes));
        eprintln!("run axes: {}", path.display());
    }
    Ok(())
}

/// The contrasts between the comparisons `each` (one per execution, in the order the flags
/// list them): for each axis with several values, every value against the first, the other
/// axis held at each of its values.
pub fn contrasts(
    each: &[(Execution, PathBuf)],
    margins: &Margins,
    target_accuracy: Option<f64>,
) -> Result<Axes> {
    let summaries = each
        .iter()
        .map(|(execution, dir)| Ok((*execution, read(dir)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut contrasts = Vec::new();
    for axis in [Axis::Precision, Axis::Compile] {
        let baseline_value = |execution: &Execution| match axis {
            Axis::Precision => execution.precision == each[0].0.precision,
            Axis::Compile => execution.compile == each[0].0.compile,
        };
        for (baseline, base_summary) in summaries.iter().filter(|(e, _)| baseline_value(e)) {
            for (other, other_summary) in summaries.iter().filter(|(e, _)| {
                !baseline_value(e)
                    && match axis {
                        Axis::Precision => e.compile == baseline.compile,
                        Axis::Compile => e.precision == baseline.precision,
                    }
            }) {
                contrasts.push(Contrast {
                    axis,
                    baseline: *baseline,
                    other: *other,
                    backends: backend_contrasts(
                        (*baseline, base_summary),
                        (*other, other_summary),
                        margins,
                        target_accuracy,
                    ),
                });
            }
        }
    }
    Ok(Axes { contrasts })
}

/// A comparison's summary, or `None` when it left none (it failed before its first run).
fn read(dir: &Path) -> Result<Option<Summary>> {
    let path = parallax_core::layout::Layout::new(dir).summary();
    if !path.exists() {
        return Ok(None);
    }
    Summary::load(&path).map(Some)
}

/// Each backend of either side, with its runs of both compared.
fn backend_contrasts(
    (baseline, base): (Execution, &Option<Summary>),
    (other, theirs): (Execution, &Option<Summary>),
    margins: &Margins,
    target_accuracy: Option<f64>,
) -> Vec<BackendContrast> {
    let mut names: Vec<String> = Vec::new();
    for summary in [base, theirs].into_iter().flatten() {
        let listed = summary
            .records
            .iter()
            .map(|record| &record.backend)
            .chain(summary.skipped.iter().map(|skipped| &skipped.backend))
            .chain(summary.failures.iter().map(|failure| &failure.backend));
        for name in listed {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|backend| {
            let side = |summary: &Option<Summary>, execution: Execution| {
                let Some(summary) = summary else {
                    return Err(format!(
                        "the {} comparison left no summary",
                        execution.label()
                    ));
                };
                if let Some(skipped) = summary.skipped.iter().find(|s| s.backend == backend) {
                    return Err(format!(
                        "skipped for {}: {}",
                        execution.label(),
                        skipped.reason
                    ));
                }
                let records: Vec<RunRecord> = summary
                    .records
                    .iter()
                    .filter(|record| record.backend == backend)
                    .cloned()
                    .map(|mut record| {
                        // Arms by side, so that core's pairing by seed sets one side against
                        // the other.
                        record.backend = format!("{backend} {}", execution.label());
                        record
                    })
                    .collect();
                let failed: Vec<(String, u64)> = summary
                    .failures
                    .iter()
                    .filter(|failure| failure.backend == backend)
                    .filter_map(|failure| {
                        Some((format!("{backend} {}", execution.label()), failure.seed?))
                    })
                    .collect();
                if records.is_empty() {
                    return Err(format!("no runs at {}", execution.label()));
                }
                Ok((records, failed))
            };
            let bf16_units = [base, theirs]
                .into_iter()
                .flatten()
                .flat_map(|summary| &summary.records)
                .filter(|record| record.backend == backend)
                .find_map(|record| record.bf16_units);
            match (side(theirs, other), side(base, baseline)) {
                (Ok((mut records, mut failed)), Ok((base_records, base_failed))) => {
                    records.extend(base_records);
                    failed.extend(base_failed);
                    BackendContrast {
                        backend,
                        comparison: Some(comparison::compare(
                            &records,
                            &failed,
                            margins,
                            target_accuracy,
                        )),
                        missing: None,
                        bf16_units,
                    }
                }
                (Err(why), _) | (_, Err(why)) => BackendContrast {
                    backend,
                    comparison: None,
                    missing: Some(why),
                    bf16_units,
                },
            }
        })
        .collect()
}

impl Contrast {
    /// "bf16 against f32" (with the held value when the other axis varies too).
    pub fn title(&self) -> String {
        match self.axis {
            Axis::Precision => format!(
                "{} against {}{}",
                self.other.precision,
                self.baseline.precision,
                match self.baseline.compile {
                    Compile::On => ", compiled",
                    Compile::Off => "",
                }
            ),
            Axis::Compile => format!(
                "compiled against uncompiled{}",
                match self.baseline.precision {
                    Precision::Bf16 => ", in bf16",
                    Precision::F32 => "",
                }
            ),
        }
    }

    /// Whether any bf16 side of it ran emulated.
    pub fn emulated(&self) -> bool {
        self.backends
            .iter()
            .any(|backend| backend.bf16_units.is_some_and(Bf16Units::is_emulated))
    }
}

impl BackendContrast {
    /// The verdict of `metric`, when the contrast has one.
    fn verdict(&self, metric: Metric) -> Option<&PairVerdict> {
        self.comparison
            .as_ref()?
            .verdicts
            .iter()
            .find(|verdict| verdict.metric == metric)
    }

    /// The contrast in words: how the other side's speed and accuracy stand against the
    /// baseline's, each with its verdict.
    pub fn sentence(&self, contrast: &Contrast) -> String {
        let other = contrast.other.label();
        let baseline = contrast.baseline.label();
        if let Some(why) = &self.missing {
            return format!("{}: no contrast ({why})", self.backend);
        }
        let Some(comparison) = &self.comparison else {
            return format!("{}: no contrast", self.backend);
        };
        let mut parts = Vec::new();
        match self.verdict(Metric::EpochSeconds) {
            Some(verdict) => {
                let ratio = verdict.paired.mean.exp();
                parts.push(format!(
                    "{other} takes {ratio:.2}× {baseline}'s s/epoch ({})",
                    kind_words(verdict.verdict.kind)
                ));
            }
            None => parts.push(format!(
                "no speed verdict ({})",
                comparison
                    .no_verdicts_because
                    .clone()
                    .unwrap_or_else(|| "too few seeds".into())
            )),
        }
        if let Some(verdict) = self.verdict(Metric::TimeToFirstStep) {
            parts.push(format!(
                "{:.2}× the time to the first step ({})",
                verdict.paired.mean.exp(),
                kind_words(verdict.verdict.kind)
            ));
        }
        if let Some(verdict) = self.verdict(Metric::TestAccuracy) {
            parts.push(format!(
                "test accuracy {} ({})",
                comparison::signed(verdict.metric.scale(), verdict.paired.mean),
                kind_words(verdict.verdict.kind)
            ));
        }
        format!("{}: {}", self.backend, parts.join("; "))
    }
}

/// A verdict's kind in a sentence's parentheses.
fn kind_words(kind: VerdictKind) -> String {
    kind.title().to_lowercase()
}

/// The warning every view of an emulated bf16 contrast gives, as a comparison's caveat does.
const EMULATED: &str = crate::report::EMULATED_BF16;

/// The contrasts for the terminal: the answer per backend, then where the evidence is.
fn terminal(model: &str, axes: &Axes) -> String {
    let mut out = String::new();
    for contrast in &axes.contrasts {
        let _ = writeln!(out, "{model}: {}, per backend:", contrast.title());
        for backend in &contrast.backends {
            let _ = writeln!(out, "  {}", backend.sentence(contrast));
        }
        if contrast.emulated() {
            let _ = writeln!(out, "warning: {EMULATED}");
        }
    }
    out
}

/// The contrasts as the directory's `report.md`: the answer in words first, then every verdict
/// line, then where each value's own comparison of the engines is.
fn markdown(model: &str, axes: &Axes) -> String {
    let mut out = format!("# {model}: run axes per backend\n\n");
    for contrast in &axes.contrasts {
        let _ = writeln!(out, "## {}\n", contrast.title());
        if contrast.emulated() {
            let _ = writeln!(out, "> **Warning:** {EMULATED}\n");
        }
        for backend in &contrast.backends {
            let _ = writeln!(out, "- {}", backend.sentence(contrast));
        }
        out.push('\n');
        let verdicts: Vec<&PairVerdict> = contrast
            .backends
            .iter()
            .filter_map(|backend| backend.comparison.as_ref())
            .flat_map(|comparison| &comparison.verdicts)
            .collect();
        if !verdicts.is_empty() {
            out.push_str("Verdicts over seeds, paired by seed:\n\n");
            for verdict in verdicts {
                let _ = writeln!(out, "- {}", verdict.line);
            }
            out.push('\n');
        }
    }
    out.push_str(
        "Each value's own comparison of the engines (tables, ledger, charts) is in its directory's report.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Skipped;

    /// Five seeds of one backend at one precision: epochs `seconds` long, accuracy `accuracy`
    /// (each seed a little apart, so that the statistics have a spread).
    fn runs(backend: &str, precision: Precision, seconds: f64, accuracy: f64) -> Vec<RunRecord> {
        crate::report::tests::records(&[1, 2, 3, 4, 5])
            .into_iter()
            .filter(|record| record.backend == "tch")
            .map(|mut record| {
                let jitter = record.seed as f64 * 0.001;
                record.backend = backend.into();
                record.precision = precision;
                record.bf16_units = (precision == Precision::Bf16).then_some(Bf16Units::Emulated);
                record.test_accuracy = accuracy + jitter;
                for epoch in &mut record.epochs {
                    epoch.seconds = seconds * (1.0 + jitter);
                }
                record
            })
            .collect()
    }

    #[test]
    fn each_backends_bf16_runs_are_set_against_its_f32_runs_and_a_skipped_one_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let f32_dir = dir.path().join("f32");
        let bf16_dir = dir.path().join("bf16");
        let f32_summary = Summary {
            records: [
                runs("pytorch", Precision::F32, 2.0, 0.80),
                runs("tch", Precision::F32, 1.0, 0.80),
            ]
            .concat(),
            ..Summary::default()
        };
        let bf16_summary = Summary {
            records: runs("pytorch", Precision::Bf16, 3.0, 0.80),
            skipped: vec![Skipped {
                backend: "tch".into(),
                reason: "it cannot run --precision bf16: no autocast".into(),
            }],
            ..Summary::default()
        };
        for (summary, out) in [(&f32_summary, &f32_dir), (&bf16_summary, &bf16_dir)] {
            std::fs::create_dir_all(out).unwrap();
            summary
                .save(&parallax_core::layout::Layout::new(out).summary())
                .unwrap();
        }
        let bf16 = Execution {
            precision: Precision::Bf16,
            compile: Compile::Off,
        };
        let axes = contrasts(
            &[(Execution::DEFAULT, f32_dir), (bf16, bf16_dir)],
            &Margins::default(),
            None,
        )
        .unwrap();
        assert_eq!(axes.contrasts.len(), 1);
        let contrast = &axes.contrasts[0];
        assert_eq!(contrast.title(), "bf16 against f32");
        assert!(contrast.emulated());
        let pytorch = &contrast.backends[0];
        let sentence = pytorch.sentence(contrast);
        assert!(
            sentence
                .starts_with("pytorch: bf16 takes 1.50× f32's s/epoch (meaningfully different)"),
            "{sentence}"
        );
        assert!(sentence.contains("test accuracy +0.00 pp"), "{sentence}");
        let tch = &contrast.backends[1];
        assert_eq!(
            tch.sentence(contrast),
            "tch: no contrast (skipped for bf16: it cannot run --precision bf16: no autocast)"
        );
        let text = terminal("cnn", &axes);
        assert!(
            text.contains("warning: bf16 ran emulated on this CPU"),
            "{text}"
        );
        let report = markdown("cnn", &axes);
        assert!(
            report.contains("> **Warning:** bf16 ran emulated"),
            "{report}"
        );
        assert!(
            report.contains("s/epoch, pytorch bf16 vs pytorch f32"),
            "{report}"
        );
    }
}

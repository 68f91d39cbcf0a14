//! `cargo xtask gradcam --confounders`: what moves a GradCAM map, one factor at a time.
//!
//! The baseline is the experiment just run. Each confounder changes one thing on the first
//! backend (preprocessing, the ResNet form with the same weights, the target layer, a
//! post-processing choice, the weights), keeps each image's class, and is compared with the
//! baseline's map; each other engine is compared the same way. The report says which factor
//! moved the maps and by how much, and whether the engine did.

use std::path::Path;

use parallax_core::gradcam::job::CamResult;
use parallax_core::gradcam::metrics::{agreement, spread};
use parallax_core::gradcam::preprocess::Preprocess;
use parallax_core::gradcam::{CamSettings, MapScaling, ScaledMap, Upsampling, postprocess};
use parallax_core::record::write_json_atomically;
use parallax_core::spec::{ModelSource, Preset, Shape};
use serde::{Deserialize, Serialize};

use super::analysis::{argmax, maps};
use super::{Args, Prepared, Workers, prepare, run_backends, settings};
use crate::error::{Error, Result};
use crate::report::summary::GradCamSummary;

/// How far one factor moved the maps, averaged over the images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfounderRow {
    /// What was changed: `engine`, `preprocessing`, `architecture`, `layer`, `upsampling`,
    /// `normalisation`, `relu`, `weights`.
    pub factor: String,
    /// Baseline → changed setting.
    pub change: String,
    /// Images compared.
    pub images: usize,
    /// Mean Pearson's r between the changed and the baseline map (at the input's size).
    pub pearson: Option<f64>,
    /// Mean top-10% IoU with the baseline map.
    pub top10_iou: f64,
    /// Mean change of the normalised entropy (positive: broader).
    pub entropy_change: Option<f64>,
    /// Mean change of the Gini coefficient (positive: more focused).
    pub gini_change: Option<f64>,
    /// Mean change of the area at or above half the maximum (positive: broader).
    pub area_change: Option<f64>,
    /// Images whose predicted class changed.
    pub prediction_changes: usize,
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Vec<f64> = values.collect::<Option<Vec<f64>>>()?;
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Compares changed maps with the baseline's, image by image.
fn row(
    factor: &str,
    change: String,
    baseline: &[ScaledMap],
    changed: &[ScaledMap],
    prediction_changes: usize,
) -> ConfounderRow {
    let pairs: Vec<(&ScaledMap, &ScaledMap)> = baseline
        .iter()
        .zip(changed)
        .filter(|(a, b)| a.values.dim() == b.values.dim())
        .collect();
    let agreements: Vec<_> = pairs
        .iter()
        .map(|(a, b)| agreement(a.values.view(), b.values.view()))
        .collect();
    let delta =
        |pick: fn(&parallax_core::gradcam::metrics::Spread) -> Option<f64>| {
            mean(pairs.iter().map(|(a, b)| {
                Some(pick(&spread(b.values.view()))? - pick(&spread(a.values.view()))?)
            }))
        };
    ConfounderRow {
        factor: factor.into(),
        change,
        images: pairs.len(),
        pearson: mean(agreements.iter().map(|a| a.pearson)),
        top10_iou: agreements.iter().map(|a| a.top_k_iou[1]).sum::<f64>()
            / agreements.len().max(1) as f64,
        entropy_change: delta(|s| s.entropy),
        gini_change: delta(|s| s.gini),
        area_change: delta(|s| s.area_above_half),
        prediction_changes,
    }
}

fn predictions(result: &CamResult) -> Vec<u32> {
    result.logits.iter().map(|row| argmax(row)).collect()
}

/// How many images `result` predicts differently from `baseline`.
fn prediction_changes(result: &CamResult, baseline: &[u32]) -> usize {
    predictions(result)
        .iter()
        .zip(baseline)
        .filter(|(a, b)| a != b)
        .count()
}

/// The stage before the target layer's, by its group name (`layer4` → `layer3`).
fn previous_layer(prepared: &Prepared) -> Option<String> {
    let model = &prepared.model;
    let index = model.find_layer(&prepared.layer)?;
    let name = &model.layers[index].name;
    let group = name
        .rsplit_once('.')
        .map_or(name.as_str(), |(group, _)| group);
    let first = model
        .layers
        .iter()
        .position(|layer| layer.name == group || layer.name.starts_with(&format!("{group}.")))?;
    let previous = model.layers[..first]
        .iter()
        .rev()
        .find(|layer| matches!(layer.output, Shape::Image { .. }))?;
    Some(match previous.name.rsplit_once('.') {
        Some((group, index)) if index.parse::<usize>().is_ok() => group.to_string(),
        _ => previous.name.clone(),
    })
}

/// Runs the confounders after the baseline experiment and writes `confounders.md` and
/// `confounders.json` under `out`; returns the confounders that failed, each with its line.
pub fn run(
    args: &Args,
    prepared: &Prepared,
    results: &[CamResult],
    summary: &GradCamSummary,
    workers: &Workers,
    out: &Path,
) -> Result<Vec<(String, String)>> {
    let first = results
        .first()
        .ok_or_else(|| Error::Failed("no backend succeeded; no baseline to compare with".into()))?;
    let entry = parallax_registry::find(&first.backend)?;
    let base_settings = settings(args);
    let (_, _, height, width) = prepared.inputs.tensors.dim();
    let size = [height, width];
    let baseline = maps(first, &base_settings, size);
    let base_predictions = predictions(first);
    let targets = Some(first.targets.clone());
    let mut rows = Vec::new();

    // The engines, against the first.
    for other in &results[1..] {
        let changed = maps(other, &base_settings, size);
        let flips = prediction_changes(other, &base_predictions);
        rows.push(row(
            "engine",
            format!("{} → {}", first.backend, other.backend),
            &baseline.upsampled,
            &changed.upsampled,
            flips,
        ));
    }

    // Post-processing, from the baseline's own raw maps.
    let post = |settings: CamSettings| -> Vec<ScaledMap> {
        baseline
            .raw
            .iter()
            .map(|raw| postprocess(raw, size, &settings))
            .collect()
    };
    for upsampling in Upsampling::ALL {
        if upsampling != base_settings.upsampling {
            let changed = post(CamSettings {
                upsampling,
                ..base_settings
            });
            let change = format!(
                "{} → {}",
                base_settings.upsampling.name(),
                upsampling.name()
            );
            rows.push(row("upsampling", change, &baseline.upsampled, &changed, 0));
        }
    }
    for scaling in MapScaling::ALL {
        if scaling != base_settings.scaling {
            let changed = post(CamSettings {
                scaling,
                ..base_settings
            });
            let change = format!("{} → {}", base_settings.scaling.name(), scaling.name());
            rows.push(row(
                "normalisation",
                change,
                &baseline.upsampled,
                &changed,
                0,
            ));
        }
    }
    let changed = post(CamSettings {
        relu: !base_settings.relu,
        ..base_settings
    });
    let change = if base_settings.relu {
        "on → off"
    } else {
        "off → on"
    };
    rows.push(row("relu", change.into(), &baseline.upsampled, &changed, 0));

    // Re-runs on the first backend, one changed flag each.
    let mut variants: Vec<(&str, String, Args)> = Vec::new();
    if args.dataset.is_none() {
        let other = match args.preprocess {
            Preprocess::Torch => Some(Preprocess::Caffe),
            Preprocess::Caffe => Some(Preprocess::Torch),
            Preprocess::Unit => None,
        };
        if let Some(other) = other {
            let mut changed = args.clone();
            changed.preprocess = other;
            variants.push((
                "preprocessing",
                format!("{} → {other}", args.preprocess),
                changed,
            ));
        }
    }
    let other_form = match &args.model {
        ModelSource::Preset(Preset::Resnet50) => Some(Preset::Resnet50Keras),
        ModelSource::Preset(Preset::Resnet50Keras) => Some(Preset::Resnet50),
        _ => None,
    };
    if let Some(other_form) = other_form {
        let mut changed = args.clone();
        changed.model = ModelSource::Preset(other_form);
        variants.push((
            "architecture",
            format!("{} → {other_form} (same weights)", args.model),
            changed,
        ));
    }
    if let Some(layer) = previous_layer(prepared) {
        let mut changed = args.clone();
        changed.layer = Some(layer.clone());
        variants.push(("layer", format!("{} → {layer}", prepared.layer), changed));
    }
    if let Some(other_weights) = &args.other_weights {
        let mut changed = args.clone();
        changed.weights = Some(other_weights.clone());
        variants.push((
            "weights",
            format!("{} → {}", prepared.weights_label, other_weights.display()),
            changed,
        ));
    }
    let mut failures = Vec::new();
    for (index, (factor, change, changed_args)) in variants.into_iter().enumerate() {
        let dir = out.join("confounders").join(format!("{index}-{factor}"));
        let changed = match prepare(&changed_args, &mut failures) {
            Ok(changed) => changed,
            Err(error) => {
                let line = parallax_core::error::one_line(&error);
                eprintln!("error: confounder {factor}: {line}");
                failures.push((format!("confounder {factor}"), line));
                continue;
            }
        };
        let result = run_backends(
            &changed_args,
            &changed,
            &[entry],
            targets.clone(),
            workers,
            &dir,
            &mut failures,
        )?;
        let Some(result) = result.first() else {
            continue;
        };
        let changed_maps = maps(result, &base_settings, size);
        let flips = prediction_changes(result, &base_predictions);
        rows.push(row(
            factor,
            change,
            &baseline.upsampled,
            &changed_maps.upsampled,
            flips,
        ));
    }

    let text = markdown(&rows, summary, &failures);
    let path = out.join("confounders.md");
    std::fs::write(&path, &text).map_err(|source| Error::io("writing", &path, source))?;
    write_json_atomically(&out.join("confounders.json"), &rows)?;
    println!("{text}");
    Ok(failures)
}

fn signed(value: Option<f64>) -> String {
    value.map_or_else(|| "flat".into(), |v| format!("{v:+.4}"))
}

/// The table, then the verdict in words.
fn markdown(
    rows: &[ConfounderRow],
    summary: &GradCamSummary,
    failures: &[(String, String)],
) -> String {
    let mut text = format!(
        "# GradCAM confounders: {} at `{}`, weights {}\n\nEach row changes one thing against the baseline (the first backend, {} preprocessing) and compares the maps at the input's size, averaged over the images; the class explained stays the baseline's. Entropy and area up mean broader, Gini up more focused.\n\n| factor | change | images | Pearson with baseline | top-10% IoU | Δ entropy | Δ Gini | Δ area ≥ ½max | predictions changed |\n|---|---|---|---|---|---|---|---|---|\n",
        summary.model, summary.layer, summary.weights, summary.preprocess
    );
    for row in rows {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} | {} | {} | {} | {} |\n",
            row.factor,
            row.change,
            row.images,
            row.pearson.map_or("flat".into(), |r| format!("{r:.4}")),
            row.top10_iou,
            signed(row.entropy_change),
            signed(row.gini_change),
            signed(row.area_change),
            row.prediction_changes
        ));
    }
    text.push_str("\n## In words\n\n");
    let disagreement = |row: &ConfounderRow| 1.0 - row.pearson.unwrap_or(0.0);
    let engines: Vec<&ConfounderRow> = rows.iter().filter(|row| row.factor == "engine").collect();
    let mut factors: Vec<&ConfounderRow> =
        rows.iter().filter(|row| row.factor != "engine").collect();
    factors.sort_by(|a, b| disagreement(b).total_cmp(&disagreement(a)));
    for row in factors.iter().take(3) {
        text.push_str(&format!(
            "- **{}** ({}) moved the maps: Pearson {} with the baseline, entropy {}, area {}.\n",
            row.factor,
            row.change,
            row.pearson
                .map_or("undefined".into(), |r| format!("{r:.3}")),
            signed(row.entropy_change),
            signed(row.area_change),
        ));
    }
    match engines
        .iter()
        .map(|row| row.pearson)
        .collect::<Option<Vec<f64>>>()
    {
        Some(rs) if !rs.is_empty() => {
            let low = rs.iter().copied().fold(f64::INFINITY, f64::min);
            let largest_entropy = engines
                .iter()
                .filter_map(|row| row.entropy_change)
                .fold(0.0f64, |m, v| m.max(v.abs()));
            let verdict = if low >= 0.999 {
                "the engine did not move the maps"
            } else {
                "the engines' maps differ; check the logits' agreement in gradcam.md first"
            };
            text.push_str(&format!(
                "- **The engine**: Pearson ≥ {low:.6} between engines, |Δ entropy| ≤ {largest_entropy:.2e}: {verdict}.\n"
            ));
        }
        _ => text.push_str(
            "- **The engine**: only one backend ran, or a map was flat; no engine comparison.\n",
        ),
    }
    if !failures.is_empty() {
        text.push_str("\n## Failures\n\n");
        for (what, error) in failures {
            text.push_str(&format!("- {what}: {error}\n"));
        }
    }
    text
}

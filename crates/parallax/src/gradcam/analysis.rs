//! What `cargo xtask gradcam` computes from the backends' results: each map's spread,
//! localisation and faithfulness, and the agreement of every pair of backends.

use std::collections::BTreeMap;

use ndarray::Array2;
use parallax_core::gradcam::job::CamResult;
use parallax_core::gradcam::metrics::{
    agreement, argmax_hit, energy_pointing_game, pearson, softmax_probability, spread,
};
use parallax_core::gradcam::{CamSettings, RawCam, ScaledMap, postprocess, scale};
use parallax_core::weights::relative_difference;

use super::Inputs;
use crate::report::summary::{BackendImage, GradCamSummary, ImageSummary, PairImage};

/// The scaled maps of one result, per image, at layer resolution and at the input's size.
pub(crate) struct Maps {
    pub(crate) raw: Vec<RawCam>,
    pub(crate) upsampled: Vec<ScaledMap>,
}

pub(crate) fn maps(result: &CamResult, settings: &CamSettings, size: [usize; 2]) -> Maps {
    let [h, w] = result.map_size;
    let raw: Vec<RawCam> = result
        .signed
        .iter()
        .zip(&result.weights)
        .map(|(signed, weights)| RawCam {
            weights: weights.clone().into(),
            signed: Array2::from_shape_vec((h, w), signed.clone())
                .unwrap_or_else(|_| Array2::zeros((h, w))),
        })
        .collect();
    let upsampled = raw
        .iter()
        .map(|map| postprocess(map, size, settings))
        .collect();
    Maps { raw, upsampled }
}

pub(crate) fn argmax(row: &[f32]) -> u32 {
    parallax_core::metrics::argmax_rows(
        ndarray::ArrayView2::from_shape((1, row.len()), row).expect("one row"),
    )[0]
}

/// Compares and scores every backend's maps.
pub(crate) fn analyse(
    inputs: &Inputs,
    results: &[CamResult],
    all: &[Maps],
    settings: &CamSettings,
    summary: &mut GradCamSummary,
) {
    let (_, _, height, width) = inputs.tensors.dim();
    let images = inputs.names.len() as f64;
    for result in results {
        summary
            .frameworks
            .insert(result.backend.clone(), result.framework.clone());
        summary
            .seconds_per_image
            .insert(result.backend.clone(), result.cam_seconds / images);
        summary
            .faithfulness_seconds_per_image
            .insert(result.backend.clone(), result.faithfulness_seconds / images);
    }
    for (i, name) in inputs.names.iter().enumerate() {
        let bbox = inputs.boxes.as_ref().map(|boxes| boxes[i]);
        let mut image = ImageSummary {
            name: name.clone(),
            bbox,
            label: inputs.labels.as_ref().map(|labels| labels[i]),
            backends: BTreeMap::new(),
            pairs: Vec::new(),
        };
        for (result, maps) in results.iter().zip(all) {
            let class = result.targets[i];
            let raw = maps.raw[i].map(settings.relu);
            let upsampled = &maps.upsampled[i];
            let faithfulness = result.faithfulness.as_ref().map(|curves| &curves[i]);
            image.backends.insert(
                result.backend.clone(),
                BackendImage {
                    class,
                    class_name: inputs
                        .class_names
                        .get(class as usize)
                        .cloned()
                        .unwrap_or_default(),
                    predicted: argmax(&result.logits[i]),
                    score: softmax_probability(&result.logits[i], class as usize),
                    flat: upsampled.flat,
                    spread_raw: spread(raw.view()),
                    spread_map: spread(upsampled.values.view()),
                    pointing: bbox
                        .and_then(|bbox| energy_pointing_game(upsampled.values.view(), &bbox)),
                    argmax_hit: bbox.and_then(|bbox| argmax_hit(upsampled.values.view(), &bbox)),
                    deletion_auc: faithfulness.map(|f| f.deletion.auc),
                    insertion_auc: faithfulness.map(|f| f.insertion.auc),
                },
            );
        }
        for a in 0..results.len() {
            for b in a + 1..results.len() {
                let (ma, mb) = (&all[a], &all[b]);
                let flat = ma.upsampled[i].flat || mb.upsampled[i].flat;
                // A flat map after the ReLU says nothing; the maps before it still do.
                let (raw_a, raw_b) = if flat {
                    (ma.raw[i].signed.clone(), mb.raw[i].signed.clone())
                } else {
                    (ma.raw[i].map(settings.relu), mb.raw[i].map(settings.relu))
                };
                let scaled = |map: &Array2<f32>| scale(map.view(), settings.scaling).values;
                let (up_a, up_b) = if flat {
                    let size = [height, width];
                    (
                        scaled(&parallax_core::gradcam::upsample(
                            raw_a.view(),
                            size,
                            settings.upsampling,
                        )),
                        scaled(&parallax_core::gradcam::upsample(
                            raw_b.view(),
                            size,
                            settings.upsampling,
                        )),
                    )
                } else {
                    (
                        ma.upsampled[i].values.clone(),
                        mb.upsampled[i].values.clone(),
                    )
                };
                let weights_a: Vec<f64> = ma.raw[i].weights.iter().map(|&v| f64::from(v)).collect();
                let weights_b: Vec<f64> = mb.raw[i].weights.iter().map(|&v| f64::from(v)).collect();
                let logits_a = ndarray::ArrayView1::from(&results[a].logits[i]);
                let logits_b = ndarray::ArrayView1::from(&results[b].logits[i]);
                image.pairs.push(PairImage {
                    a: results[a].backend.clone(),
                    b: results[b].backend.clone(),
                    basis: if flat { "signed" } else { "map" }.into(),
                    raw: agreement(scaled(&raw_a).view(), scaled(&raw_b).view()),
                    map: agreement(up_a.view(), up_b.view()),
                    weights_pearson: pearson(&weights_a, &weights_b),
                    logits_relative_difference: f64::from(relative_difference(logits_a, logits_b)),
                    same_prediction: argmax(&results[a].logits[i]) == argmax(&results[b].logits[i]),
                });
            }
        }
        summary.images.push(image);
    }
}

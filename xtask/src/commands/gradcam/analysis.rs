//! What `cargo xtask gradcam` computes from the backends' results: each map's spread,
//! localisation and faithfulness, and the agreement of every pair of backends.

use std::collections::BTreeMap;

use ndarray::Array2;
use parallax_core::data::BoundingBox;
use parallax_core::gradcam::job::CamResult;
use parallax_core::gradcam::metrics::{
    Agreement, Spread, agreement, argmax_hit, energy_pointing_game, pearson, softmax_probability,
    spread,
};
use parallax_core::gradcam::{CamSettings, RawCam, ScaledMap, postprocess, scale};
use parallax_core::weights::relative_difference;
use serde::{Deserialize, Serialize};

use super::Inputs;

/// Everything one backend gave, by image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendImage {
    /// The class explained.
    pub class: u32,
    /// Its name, when known.
    pub class_name: String,
    /// The backend's own predicted class.
    pub predicted: u32,
    /// The softmax probability of the explained class.
    pub score: f64,
    /// Whether the map had no variation after the ReLU.
    pub flat: bool,
    /// Spread of the layer-resolution map (after the ReLU when on).
    pub spread_raw: Spread,
    /// Spread of the upsampled, scaled map.
    pub spread_map: Spread,
    /// The energy pointing game, when the box is known.
    pub pointing: Option<f64>,
    /// Whether the map's maximum lies in the box, when the box is known.
    pub argmax_hit: Option<bool>,
    /// Deletion AUC (zeros), when measured.
    pub deletion_auc: Option<f64>,
    /// Insertion AUC (blur), when measured.
    pub insertion_auc: Option<f64>,
}

/// How two backends' maps of one image agree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairImage {
    /// The first backend.
    pub a: String,
    /// The second backend.
    pub b: String,
    /// `map` when both maps vary after the ReLU; `signed` when one is flat and the comparison
    /// falls back to the maps before the ReLU.
    pub basis: String,
    /// Agreement of the layer-resolution maps.
    pub raw: Agreement,
    /// Agreement of the upsampled, identically scaled maps.
    pub map: Agreement,
    /// Pearson's r of the channel weights α.
    pub weights_pearson: Option<f64>,
    /// max |Δlogit| / max |logit|.
    pub logits_relative_difference: f64,
    /// Whether the two predict the same class.
    pub same_prediction: bool,
}

/// One image's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageSummary {
    /// The image's name (file stem, or data set and index).
    pub name: String,
    /// Its box, when known.
    pub bbox: Option<BoundingBox>,
    /// Its label, when known.
    pub label: Option<u32>,
    /// Per backend.
    pub backends: BTreeMap<String, BackendImage>,
    /// Every pair of backends.
    pub pairs: Vec<PairImage>,
}

/// What `summary.json` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GradCamSummary {
    /// The model.
    pub model: String,
    /// The target layer's canonical name.
    pub layer: String,
    /// The settings.
    pub settings: Option<CamSettings>,
    /// The preprocessing of photos, or `dataset`.
    pub preprocess: String,
    /// The weights file, or `canonical seed N`.
    pub weights: String,
    /// Per image.
    pub images: Vec<ImageSummary>,
    /// Per backend: engine and version.
    pub frameworks: BTreeMap<String, String>,
    /// Per backend: seconds of GradCAM (forward and backward) per image.
    pub seconds_per_image: BTreeMap<String, f64>,
    /// Per backend: seconds of deletion and insertion per image.
    pub faithfulness_seconds_per_image: BTreeMap<String, f64>,
    /// Images or backends that failed, each with its error line.
    pub failures: Vec<(String, String)>,
    /// The colour map of the overlays (`turbo`, `viridis`, `jet`); empty in older summaries.
    #[serde(default)]
    pub colour_map: String,
}

impl GradCamSummary {
    /// The smallest raw-map Pearson's r over all pairs and images (`None` when undefined).
    pub fn min_raw_pearson(&self) -> Option<f64> {
        self.images
            .iter()
            .flat_map(|image| &image.pairs)
            .map(|pair| pair.raw.pearson)
            .try_fold(f64::INFINITY, |low, r| r.map(|r| low.min(r)))
            .filter(|low| low.is_finite())
    }

    /// Per backend, the mean energy pointing game and argmax hit rate over images with boxes.
    pub fn localisation(&self) -> BTreeMap<String, (f64, f64)> {
        let mut totals: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
        for image in &self.images {
            for (backend, result) in &image.backends {
                if let Some(hit) = result.argmax_hit {
                    let entry = totals.entry(backend.clone()).or_default();
                    entry.0 += result.pointing.unwrap_or(0.0);
                    entry.1 += f64::from(u8::from(hit));
                    entry.2 += 1;
                }
            }
        }
        totals
            .into_iter()
            .map(|(backend, (pointing, hits, n))| (backend, (pointing / n as f64, hits / n as f64)))
            .collect()
    }
}

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

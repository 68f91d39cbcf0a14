//! The schemas of what the commands write for the report to read back: a repeated run's
//! finding (`--repeat`), GradCAM's `summary.json`, and what one comparison's runs share
//! ([`Setup`]). They live beside the views that render them, so that the commands which produce
//! them and the report which reads them both depend on this module, never on each other.

use std::collections::{BTreeMap, BTreeSet};

use parallax_core::data::BoundingBox;
use parallax_core::data::DatasetName;
use parallax_core::gradcam::CamSettings;
use parallax_core::gradcam::metrics::{Agreement, Spread};
use parallax_core::record::{InitMode, RunRecord, RunRequest};
use parallax_core::{Device, Factor, OptimizerConfig};
use serde::{Deserialize, Serialize};

/// What every run of one comparison shares, as its report describes it: taken from a request
/// the comparison wrote, or, where the directory no longer holds one, from its records alone.
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    /// The model, as `--model` named it (a preset, or a spec file).
    pub model: String,
    /// The data set.
    pub dataset: DatasetName,
    /// Epochs per run.
    pub epochs: u32,
    /// Examples per step.
    pub batch_size: usize,
    /// The optimizer and its learning rate.
    pub optimizer: OptimizerConfig,
    /// The initial weights.
    pub init: InitMode,
    /// The factors left at each engine's own default.
    pub native: BTreeSet<Factor>,
    /// Threads per engine.
    pub threads: usize,
    /// The device.
    pub device: Device,
}

impl Setup {
    /// The setup a request asks for.
    pub fn of_request(request: &RunRequest) -> Self {
        Setup {
            model: request.model.to_string(),
            dataset: request.data.dataset,
            epochs: request.epochs,
            batch_size: request.batch_size,
            optimizer: request.optimizer,
            init: request.init.clone(),
            native: request.native.clone(),
            threads: request.threads,
            device: request.device,
        }
    }

    /// The setup the records say their runs had: the first record's, with the most epochs any
    /// of them finished (a record does not say how many were planned); `None` without records.
    pub fn of_records(records: &[RunRecord]) -> Option<Self> {
        let first = records.first()?;
        let epochs = records.iter().map(|record| record.epochs.len()).max()?;
        Some(Setup {
            model: first.run.model.clone(),
            dataset: first.dataset,
            epochs: u32::try_from(epochs).unwrap_or(u32::MAX),
            batch_size: first.batch_size,
            optimizer: first.optimizer,
            init: first.init.clone(),
            native: first.native.clone(),
            threads: first.threads,
            device: first.device,
        })
    }
}

/// One engine's two runs of a seed, compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repeatability {
    /// The backend.
    pub backend: String,
    /// The seed run twice.
    pub seed: u64,
    /// Every epoch's training loss, test loss and test accuracy are the same bits.
    pub losses_identical: bool,
    /// The largest absolute difference of the per-epoch training losses.
    pub max_loss_difference: f64,
    /// Every final weight is the same bits; `None` when a weights file is missing.
    pub weights_identical: Option<bool>,
    /// The largest absolute difference of a final weight.
    pub max_weight_difference: Option<f64>,
    /// The finding as one line.
    pub line: String,
}

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

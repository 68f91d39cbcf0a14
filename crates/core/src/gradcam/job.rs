//! One backend's share of a GradCAM experiment: build the model from the given weights, predict,
//! take GradCAM at the target layer for one class per image, and optionally score faithfulness.
//!
//! `cargo xtask gradcam` writes a [`CamRequest`] per backend, runs each in its own worker, and
//! compares the [`CamResult`]s; tests call [`execute`] in process. The maps are computed by
//! core ([`super::raw_maps`]) from each engine's activations and gradients, so that the engines
//! differ only in what they compute.

use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array4, Axis};
use serde::{Deserialize, Serialize};

use super::metrics::{Faithfulness, faithfulness};
use super::{CamSettings, postprocess, raw_maps};
use crate::backend::{Backend, CpuSettings, Device};
use crate::error::Error;
use crate::metrics::argmax_rows;
use crate::spec::{ModelSource, ResolvedModel};
use crate::weights::Weights;
use crate::{Result, init};

/// Where a GradCAM run's weights come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CamWeights {
    /// A weights file: safetensors with canonical names, or Keras's HDF5 weights.
    File(PathBuf),
    /// Canonical initialisation from this seed (an untrained network).
    Canonical(u64),
}

/// What one backend is asked to compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CamRequest {
    /// The backend, by its registry name.
    pub backend: String,
    /// Where it computes.
    pub device: Device,
    /// Its CPU threads.
    pub threads: usize,
    /// The model.
    pub model: ModelSource,
    /// The model's input, C×H×W.
    pub input: [usize; 3],
    /// The model's class count.
    pub classes: usize,
    /// The weights.
    pub weights: CamWeights,
    /// The preprocessed images, a safetensors file with one tensor `images` `[N, C, H, W]`.
    pub images: PathBuf,
    /// The target layer, by any name [`ResolvedModel::find_layer`] takes.
    pub layer: String,
    /// One class per image; `None` means each image's predicted class on this backend.
    pub targets: Option<Vec<u32>>,
    /// How maps are made (the method, and for faithfulness the saliency's post-processing).
    pub settings: CamSettings,
    /// Deletion and insertion steps, or `None` to skip faithfulness.
    pub faithfulness_steps: Option<usize>,
}

/// What one backend computed, per image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CamResult {
    /// The backend.
    pub backend: String,
    /// The engine and its version, as the backend reports them.
    pub framework: String,
    /// Logits, one row per image.
    pub logits: Vec<Vec<f32>>,
    /// The class each map was taken for.
    pub targets: Vec<u32>,
    /// The target layer's canonical name and its output, C×H×W.
    pub layer: String,
    /// Channel weights per image ([`super::RawCam::weights`]).
    pub weights: Vec<Vec<f32>>,
    /// The map before the ReLU, row-major `[h, w]` per image.
    pub signed: Vec<Vec<f32>>,
    /// The layer's height and width.
    pub map_size: [usize; 2],
    /// Deletion and insertion per image, when asked for.
    pub faithfulness: Option<Vec<Faithfulness>>,
    /// Seconds for the forward and backward pass of GradCAM over all images.
    pub cam_seconds: f64,
    /// Seconds of the faithfulness passes.
    pub faithfulness_seconds: f64,
}

/// Reads a safetensors file's `images` tensor `[N, C, H, W]`.
pub fn read_images(path: &std::path::Path) -> Result<Array4<f32>> {
    let weights = Weights::load(path)?;
    let images = weights.require("images")?.clone();
    images.into_dimensionality().map_err(|error| {
        Error::InvalidArgument(format!(
            "{}: tensor \"images\" is not [N, C, H, W]: {error}",
            path.display()
        ))
    })
}

/// Writes `images` `[N, C, H, W]` as a safetensors file with one tensor `images`.
pub fn write_images(path: &std::path::Path, images: &Array4<f32>) -> Result<()> {
    let mut weights = Weights::new();
    weights.insert("images", images.clone().into_dyn());
    weights.save(path)
}

/// The request's model, resolved.
pub fn resolve(request: &CamRequest) -> Result<ResolvedModel> {
    let spec = request.model.spec(request.input, request.classes)?;
    Ok(spec.resolve()?)
}

/// The request's weights, read and fitted to the model (see [`Weights::fit_to`]).
pub fn load_weights(weights: &CamWeights, model: &ResolvedModel) -> Result<Weights> {
    let weights = match weights {
        CamWeights::Canonical(seed) => return Ok(init::canonical(model, *seed)),
        CamWeights::File(path) => Weights::load_any(path)?,
    };
    let weights = weights.fit_to(model)?;
    weights.check(model)?;
    Ok(weights)
}

/// Runs `request` on `backend`.
pub fn execute(request: &CamRequest, backend: &dyn Backend) -> Result<CamResult> {
    let model = resolve(request)?;
    let layer_index = model.find_layer(&request.layer).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "GradCAM layer {:?}: model {:?} has no such layer",
            request.layer, model.spec.name
        ))
    })?;
    let weights = load_weights(&request.weights, &model)?;
    let images = read_images(&request.images)?;
    let mut net = backend.build(&model, Some(&weights))?;
    let logits = net.predict(images.view())?;
    let targets = match &request.targets {
        Some(targets) => targets.clone(),
        None => argmax_rows(logits.view()),
    };
    let start = Instant::now();
    let cam = net.grad_cam(images.view(), &model.layers[layer_index].name, &targets)?;
    let cam_seconds = start.elapsed().as_secs_f64();
    let raw = raw_maps(&cam, request.settings.method);
    let (_, _, height, width) = cam.activations.dim();

    let start = Instant::now();
    let faithfulness = match request.faithfulness_steps {
        Some(steps) => {
            let [_, input_height, input_width] = model.input();
            let mut curves = Vec::with_capacity(raw.len());
            for ((image, map), &class) in images.axis_iter(Axis(0)).zip(&raw).zip(&targets) {
                let saliency = postprocess(map, [input_height, input_width], &request.settings);
                let mut predict = |batch: ndarray::ArrayView4<f32>| net.predict(batch);
                curves.push(faithfulness(
                    image,
                    saliency.values.view(),
                    class as usize,
                    steps,
                    16,
                    &mut predict,
                )?);
            }
            Some(curves)
        }
        None => None,
    };
    let info = backend.info();
    Ok(CamResult {
        backend: info.backend,
        framework: format!("{} {}", info.framework, info.framework_version),
        logits: logits.outer_iter().map(|row| row.to_vec()).collect(),
        targets,
        layer: model.layers[layer_index].name.clone(),
        weights: raw.iter().map(|map| map.weights.to_vec()).collect(),
        signed: raw
            .iter()
            .map(|map| map.signed.iter().copied().collect())
            .collect(),
        map_size: [height, width],
        faithfulness,
        cam_seconds,
        faithfulness_seconds: if request.faithfulness_steps.is_some() {
            start.elapsed().as_secs_f64()
        } else {
            0.0
        },
    })
}

impl CamRequest {
    /// The CPU settings the worker gives its backend.
    pub fn cpu(&self) -> CpuSettings {
        CpuSettings::new(self.threads)
    }
}

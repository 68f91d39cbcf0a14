//! `cargo xtask gradcam`: GradCAM on every backend from the same weights and the same
//! preprocessed tensors, one worker per backend as `compare` runs them, with the maps compared
//! and scored by core.
//!
//! The first backend listed decides the class when `--class predicted`; every engine then maps
//! that one class. Writes `OUT/gradcam/<image>.png` (input, each backend's overlay, the
//! difference), `maps.safetensors`, `summary.json` and `gradcam.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
use image::{Rgb, RgbImage};
use ndarray::{Array2, Array3, Array4, ArrayView2, Axis};
use parallax_core::data::{BoundingBox, DataRequest, DatasetName};
use parallax_core::gradcam::job::{CamRequest, CamResult, CamWeights, load_weights, write_images};
use parallax_core::gradcam::metrics::{
    Agreement, Spread, agreement, argmax_hit, energy_pointing_game, pearson, spread,
};
use parallax_core::gradcam::preprocess::{Preprocess, read_rgb};
use parallax_core::gradcam::{
    CamMethod, CamSettings, MapScaling, RawCam, ScaledMap, Upsampling, postprocess, scale,
};
use parallax_core::record::write_json_atomically;
use parallax_core::spec::{ModelSource, ResolvedModel, Shape};
use parallax_core::weights::{Weights, relative_difference};
use parallax_core::{Device, Error};
use parallax_registry::BackendEntry;
use serde::{Deserialize, Serialize};

use crate::cargo::repo_root;
use crate::provision;
use crate::workers;

/// Flags of `cargo xtask gradcam`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The model: a preset (resnet50, resnet50-keras, resnet18, cnn) or a spec file.
    #[arg(long, default_value = "resnet50")]
    pub model: ModelSource,
    /// Weights: a safetensors file with canonical (torchvision) names, or Keras's HDF5 weights.
    /// Without it, canonical weights from --seed: an untrained network, whose maps mean nothing.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// PNG or JPEG files, or folders of them.
    #[arg(long, num_args = 1.., conflicts_with = "dataset")]
    pub images: Vec<PathBuf>,
    /// A data set's test images instead of photos (fashion-mnist-subset-placed has boxes).
    #[arg(long)]
    pub dataset: Option<DatasetName>,
    /// How many of the data set's test images.
    #[arg(long, default_value_t = 16)]
    pub count: usize,
    /// The data directory, for data sets that are not found by themselves.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Preprocessing of photos: torch, caffe or unit (data sets are already in [0, 1]).
    #[arg(long, default_value = "torch")]
    pub preprocess: Preprocess,
    /// The target layer (layer4 and conv5_block3_out name the same layer); by default the last
    /// layer whose output is an image.
    #[arg(long)]
    pub layer: Option<String>,
    /// `predicted` (the first backend's prediction, used on every backend) or a class index.
    #[arg(long, default_value = "predicted")]
    pub class: ClassChoice,
    /// gradcam, gradcam++ or hirescam.
    #[arg(long, default_value = "gradcam")]
    pub method: CamMethod,
    /// Upsampling to the input: bilinear (half-pixel), bilinear-corners, nearest or bicubic.
    #[arg(long, default_value = "bilinear")]
    pub upsampling: Upsampling,
    /// Normalisation: min-max or max.
    #[arg(long, default_value = "min-max")]
    pub scaling: MapScaling,
    /// Keep negative evidence (Captum's default) instead of GradCAM's ReLU.
    #[arg(long)]
    pub no_relu: bool,
    /// Deletion and insertion steps per image; 0 skips faithfulness.
    #[arg(long, default_value_t = 32)]
    pub faithfulness_steps: usize,
    /// Backends, comma-separated, the first deciding the class.
    #[arg(long, value_delimiter = ',', default_value = "tch,tf,burn", value_parser = parse_backend)]
    pub backends: Vec<&'static BackendEntry>,
    /// Number of classes of a preset when the images are photos.
    #[arg(long, default_value_t = 1000)]
    pub classes: usize,
    /// The seed of canonical weights when no --weights are given.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// CPU threads per worker.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Where to write the results (under `gradcam/`).
    #[arg(long, default_value = "out/gradcam")]
    pub out: PathBuf,
}

fn parse_backend(name: &str) -> Result<&'static BackendEntry, String> {
    parallax_registry::find(name).map_err(|error| error.to_string())
}

/// The class GradCAM explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassChoice {
    /// The first backend's predicted class, per image.
    Predicted,
    /// One class for every image.
    Index(u32),
}

impl FromStr for ClassChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "predicted" => Ok(ClassChoice::Predicted),
            number => number
                .parse()
                .map(ClassChoice::Index)
                .map_err(|_| format!("--class takes `predicted` or a class index, not {number:?}")),
        }
    }
}

/// The images of one experiment, preprocessed, with what is known about them.
struct Inputs {
    names: Vec<String>,
    tensors: Array4<f32>,
    boxes: Option<Vec<BoundingBox>>,
    labels: Option<Vec<u32>>,
    class_names: Vec<String>,
    /// How tensors map back to colours for display.
    display: Preprocess,
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

/// The default target layer: the last one whose output is an image.
fn default_layer(model: &ResolvedModel) -> Option<String> {
    model
        .layers
        .iter()
        .rev()
        .find(|layer| matches!(layer.output, Shape::Image { .. }))
        .map(|layer| {
            // A ResNet stage's blocks are named by their group (`layer4`), as torchvision's are.
            match layer.name.rsplit_once('.') {
                Some((group, index)) if index.parse::<usize>().is_ok() => group.to_string(),
                _ => layer.name.clone(),
            }
        })
}

/// Reads the photos or the data set's images, preprocessed; an unreadable photo is reported
/// and left out.
fn inputs(
    args: &Args,
    model_input: [usize; 3],
    failures: &mut Vec<(String, String)>,
) -> anyhow::Result<Inputs> {
    let root = repo_root();
    if let Some(dataset) = args.dataset {
        let request = DataRequest {
            dataset,
            data_dir: args.data.clone(),
            limit_train: Some(1),
            ..DataRequest::builtin(
                parallax_core::data::BuiltinDataset::FashionMnistSubset,
                provision::cache_dir(),
                root.join("fixtures"),
            )
        };
        let data = request.load(0)?;
        let count = args.count.min(data.test.len());
        let test = data.test.take(count);
        return Ok(Inputs {
            names: (0..count).map(|i| format!("{dataset}-{i}")).collect(),
            tensors: test.images().to_owned(),
            boxes: data.test_boxes.map(|boxes| boxes[..count].to_vec()),
            labels: Some(test.labels().to_vec()),
            class_names: test.class_names().to_vec(),
            display: Preprocess::Unit,
        });
    }
    let mut files = Vec::new();
    for path in &args.images {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| {
                    path.extension()
                        .and_then(|ext| ext.to_str())
                        .is_some_and(|ext| {
                            matches!(ext.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                        })
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    if files.is_empty() {
        bail!("no images: pass --images FILE|DIR... (PNG or JPEG) or --dataset NAME");
    }
    let shape = args.preprocess.output_shape(model_input);
    let mut names = Vec::new();
    let mut tensors = Vec::new();
    for file in files {
        match read_rgb(&file) {
            Ok(image) => {
                names.push(
                    file.file_stem()
                        .map(|stem| stem.to_string_lossy().into_owned())
                        .unwrap_or_else(|| format!("image-{}", names.len())),
                );
                tensors.push(args.preprocess.apply(&image, model_input));
            }
            Err(error) => {
                eprintln!("error: {error}");
                failures.push((file.display().to_string(), error.to_string()));
            }
        }
    }
    if tensors.is_empty() {
        bail!("none of the images could be read");
    }
    let [c, h, w] = shape;
    let mut batch = Array4::<f32>::zeros((tensors.len(), c, h, w));
    for (mut slot, tensor) in batch.outer_iter_mut().zip(&tensors) {
        slot.assign(tensor);
    }
    let class_names = std::fs::read_to_string(root.join("fixtures/imagenet/classes.txt"))
        .map(|text| text.lines().map(str::to_string).collect::<Vec<_>>())
        .ok()
        .filter(|names| names.len() == args.classes)
        .unwrap_or_default();
    Ok(Inputs {
        names,
        tensors: batch,
        boxes: None,
        labels: None,
        class_names,
        display: args.preprocess,
    })
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let summary = experiment(&args)?;
    if !summary.failures.is_empty() {
        bail!(
            "{} part(s) failed: {}",
            summary.failures.len(),
            summary
                .failures
                .iter()
                .map(|(what, _)| what.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Runs the experiment and writes its files; failures of single images or backends are in
/// the returned summary.
pub fn experiment(args: &Args) -> anyhow::Result<GradCamSummary> {
    if args.backends.is_empty() {
        bail!(
            "--backends is empty; known backends: {}",
            parallax_registry::names()
        );
    }
    let mut summary = GradCamSummary::default();
    // The model's input: a data set's own shape, or the preprocessing's for photos.
    let (input, classes) = match args.dataset {
        Some(dataset) => {
            let shape = if matches!(dataset, DatasetName::Placed(_)) {
                [
                    1,
                    parallax_core::data::placed::CANVAS,
                    parallax_core::data::placed::CANVAS,
                ]
            } else {
                [1, 28, 28]
            };
            (shape, 10)
        }
        None => (args.preprocess.output_shape([3, 224, 224]), args.classes),
    };
    let spec = args.model.spec(input, classes)?;
    let model = spec.resolve()?;
    let layer = match &args.layer {
        Some(layer) => layer.clone(),
        None => default_layer(&model).context("the model has no layer whose output is an image")?,
    };
    // The layer and the class are checked once, here, with one line each.
    let index = model.find_layer(&layer).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "GradCAM layer {layer:?}: model {:?} has no such layer",
            model.spec.name
        ))
    })?;
    if !matches!(model.layers[index].output, Shape::Image { .. }) {
        bail!(
            "GradCAM layer {layer:?} gives a flat vector, not an image; pick a convolutional layer such as layer4"
        );
    }
    if let ClassChoice::Index(class) = args.class
        && class as usize >= model.classes()
    {
        bail!(
            "--class {class} is out of range: model {} has {} classes (0..{})",
            model.spec.name,
            model.classes(),
            model.classes() - 1
        );
    }
    let weights_source = match &args.weights {
        Some(path) => {
            load_weights(&CamWeights::File(path.clone()), &model)?;
            summary.weights = path.display().to_string();
            CamWeights::File(std::fs::canonicalize(path)?)
        }
        None => {
            eprintln!(
                "warning: no --weights; using canonical weights from seed {}: an untrained network's maps mean nothing",
                args.seed
            );
            summary.weights = format!("canonical seed {}", args.seed);
            CamWeights::Canonical(args.seed)
        }
    };
    let inputs = inputs(args, input, &mut summary.failures)?;
    let out = args.out.join("gradcam");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let images_path = out.join("inputs.safetensors");
    write_images(&images_path, &inputs.tensors)?;

    let native = if args.backends.iter().any(|entry| entry.is_native()) {
        Some(provision::ensure(false)?)
    } else {
        None
    };
    let worker_paths = workers::build(&args.backends, false, native.as_ref())?;
    let settings = CamSettings {
        method: args.method,
        relu: !args.no_relu,
        upsampling: args.upsampling,
        scaling: args.scaling,
    };
    summary.model = model.spec.name.clone();
    summary.layer = model.layers[index].name.clone();
    summary.settings = Some(settings);
    summary.preprocess = match args.dataset {
        Some(_) => "dataset".into(),
        None => args.preprocess.to_string(),
    };
    let mut targets = match args.class {
        ClassChoice::Index(class) => Some(vec![class; inputs.names.len()]),
        ClassChoice::Predicted => None,
    };
    let mut results: Vec<CamResult> = Vec::new();
    for entry in &args.backends {
        let request = CamRequest {
            backend: entry.name.to_string(),
            device: Device::Cpu,
            threads: args.threads,
            model: args.model.clone(),
            input,
            classes,
            weights: weights_source.clone(),
            images: std::fs::canonicalize(&images_path)?,
            layer: layer.clone(),
            targets: targets.clone(),
            settings,
            faithfulness_steps: (args.faithfulness_steps > 0).then_some(args.faithfulness_steps),
        };
        let request_path = out.join(format!("request-{}.json", entry.name));
        write_json_atomically(&request_path, &request)?;
        eprintln!("gradcam: {} on {} image(s)", entry.name, inputs.names.len());
        let worker = worker_paths
            .get(entry.name)
            .context("no worker was built for this backend")?;
        let result_path = out.join(format!("result-{}.json", entry.name));
        match workers::run_grad_cam(entry, worker, &request_path, &result_path, native.as_ref()) {
            Ok(result) => {
                // The first backend that succeeds decides the class for the others.
                targets.get_or_insert_with(|| result.targets.clone());
                results.push(result);
            }
            Err(error) => {
                let message = format!("{error:#}");
                eprintln!("error: {}: {message}", entry.name);
                summary.failures.push((entry.name.to_string(), message));
            }
        }
    }
    analyse(&inputs, &results, &settings, &mut summary);
    write_outputs(&out, &inputs, &results, &settings, &summary)?;
    Ok(summary)
}

/// The scaled maps of one result, per image, at layer resolution and at the input's size.
struct Maps {
    raw: Vec<RawCam>,
    upsampled: Vec<ScaledMap>,
}

fn maps(result: &CamResult, settings: &CamSettings, size: [usize; 2]) -> Maps {
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

fn softmax(row: &[f32], class: usize) -> f64 {
    let max = row
        .iter()
        .map(|&v| f64::from(v))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    row.get(class)
        .map_or(f64::NAN, |&v| (f64::from(v) - max).exp() / sum)
}

fn argmax(row: &[f32]) -> u32 {
    parallax_core::metrics::argmax_rows(
        ndarray::ArrayView2::from_shape((1, row.len()), row).expect("one row"),
    )[0]
}

/// Compares and scores every backend's maps.
fn analyse(
    inputs: &Inputs,
    results: &[CamResult],
    settings: &CamSettings,
    summary: &mut GradCamSummary,
) {
    let (_, _, height, width) = inputs.tensors.dim();
    let all: Vec<Maps> = results
        .iter()
        .map(|result| maps(result, settings, [height, width]))
        .collect();
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
        for (result, maps) in results.iter().zip(&all) {
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
                    score: softmax(&result.logits[i], class as usize),
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

/// matplotlib's `jet`, piecewise linear.
fn jet(value: f32) -> [f32; 3] {
    let v = value.clamp(0.0, 1.0);
    let channel = |centre: f32| (1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0);
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// One panel per column: the input, each backend's overlay (jet at 50%), and the absolute
/// difference between the first two backends' maps (jet, 0 to 1).
fn composite(input: &Array3<f32>, maps: &[ArrayView2<f32>], magnify: u32) -> RgbImage {
    let (_, height, width) = input.dim();
    let panels = 1 + maps.len() + usize::from(maps.len() >= 2);
    let gap = 4;
    let (panel_w, panel_h) = (width as u32 * magnify, height as u32 * magnify);
    let mut canvas = RgbImage::from_pixel(
        panels as u32 * (panel_w + gap) - gap,
        panel_h,
        Rgb([255, 255, 255]),
    );
    let pixel = |rgb: [f32; 3]| Rgb(rgb.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8));
    let mut draw = |panel: usize, colour: &dyn Fn(usize, usize) -> [f32; 3]| {
        let x0 = panel as u32 * (panel_w + gap);
        for y in 0..panel_h {
            for x in 0..panel_w {
                let (row, column) = ((y / magnify) as usize, (x / magnify) as usize);
                canvas.put_pixel(x0 + x, y, pixel(colour(row, column)));
            }
        }
    };
    let base = |row: usize, column: usize| [0, 1, 2].map(|c| input[[c, row, column]]);
    draw(0, &base);
    for (index, map) in maps.iter().enumerate() {
        draw(1 + index, &|row, column| {
            let heat = jet(map[[row, column]]);
            let image = base(row, column);
            [0, 1, 2].map(|c| 0.5 * heat[c] + 0.5 * image[c])
        });
    }
    if maps.len() >= 2 {
        draw(1 + maps.len(), &|row, column| {
            jet((maps[0][[row, column]] - maps[1][[row, column]]).abs())
        });
    }
    canvas
}

/// Writes the PNGs, `maps.safetensors`, `summary.json` and `gradcam.md`.
fn write_outputs(
    out: &Path,
    inputs: &Inputs,
    results: &[CamResult],
    settings: &CamSettings,
    summary: &GradCamSummary,
) -> anyhow::Result<()> {
    let (_, _, height, width) = inputs.tensors.dim();
    let all: Vec<Maps> = results
        .iter()
        .map(|result| maps(result, settings, [height, width]))
        .collect();
    let mut tensors = Weights::new();
    let magnify = (224 / height.max(1)).max(1) as u32;
    for (i, name) in inputs.names.iter().enumerate() {
        let input = inputs.tensors.index_axis(Axis(0), i).to_owned();
        tensors.insert(format!("{name}/input"), input.clone().into_dyn());
        for (result, maps) in results.iter().zip(&all) {
            let backend = &result.backend;
            tensors.insert(
                format!("{name}/{backend}/raw"),
                maps.raw[i].map(settings.relu).into_dyn(),
            );
            tensors.insert(
                format!("{name}/{backend}/map"),
                maps.upsampled[i].values.clone().into_dyn(),
            );
            tensors.insert(
                format!("{name}/{backend}/logits"),
                ndarray::Array1::from(result.logits[i].clone()).into_dyn(),
            );
        }
        let display = inputs.display.to_display(&input);
        let panels: Vec<ArrayView2<f32>> = all
            .iter()
            .map(|maps| maps.upsampled[i].values.view())
            .collect();
        let png = out.join(format!("{name}.png"));
        composite(&display, &panels, magnify)
            .save(&png)
            .with_context(|| format!("writing {}", png.display()))?;
    }
    tensors.save(&out.join("maps.safetensors"))?;
    write_json_atomically(&out.join("summary.json"), summary)?;
    let markdown = markdown(summary, results);
    std::fs::write(out.join("gradcam.md"), &markdown)
        .with_context(|| format!("writing {}", out.join("gradcam.md").display()))?;
    println!("{markdown}");
    println!("wrote {}", out.display());
    Ok(())
}

/// A statistic of a map, or `flat` when the map had nothing to measure.
fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "flat".into(), |v| format!("{v:.4}"))
}

/// A figure that was not measured for this run (no box, no faithfulness) shows as a dash.
fn measured(value: Option<f64>, flat: bool) -> String {
    match value {
        Some(v) => format!("{v:.4}"),
        None if flat => "flat".into(),
        None => "–".into(),
    }
}

/// The Markdown report.
fn markdown(summary: &GradCamSummary, results: &[CamResult]) -> String {
    let mut text = format!(
        "# GradCAM: {} at `{}`\n\nWeights: {}. Preprocessing: {}. Settings: {:?}.\n\nEach image's PNG shows the input, then each backend's map over it (matplotlib's `jet` colour map at 50%, in the order {}), then |first − second| on the same colour map.\n\n",
        summary.model,
        summary.layer,
        summary.weights,
        summary.preprocess,
        summary.settings,
        results
            .iter()
            .map(|r| r.backend.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    text.push_str(&format!(
        "Smallest Pearson's r between two backends' layer-resolution maps: {}.\n\n",
        summary
            .min_raw_pearson()
            .map_or("undefined".into(), |r| format!("{r:.6}"))
    ));
    text.push_str(
        "| backend | engine | GradCAM s/image | faithfulness s/image |\n|---|---|---|---|\n",
    );
    for (backend, framework) in &summary.frameworks {
        text.push_str(&format!(
            "| {backend} | {framework} | {:.3} | {:.3} |\n",
            summary.seconds_per_image[backend], summary.faithfulness_seconds_per_image[backend]
        ));
    }
    text.push_str("\n## Agreement between backends\n\n| image | pair | basis | raw Pearson | raw Spearman | map Pearson | top-10% IoU | max |Δ| | α Pearson | logits rel. diff. | same class |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for image in &summary.images {
        for pair in &image.pairs {
            text.push_str(&format!(
                "| {} | {}–{} | {} | {} | {} | {} | {:.3} | {:.2e} | {} | {:.2e} | {} |\n",
                image.name,
                pair.a,
                pair.b,
                pair.basis,
                number(pair.raw.pearson),
                number(pair.raw.spearman),
                number(pair.map.pearson),
                pair.map.top_k_iou[1],
                pair.map.max_abs_difference,
                number(pair.weights_pearson),
                pair.logits_relative_difference,
                pair.same_prediction
            ));
        }
    }
    text.push_str("\n## Each backend's maps\n\n| image | backend | class | score | entropy | Gini | area ≥ ½max | participation | pointing | argmax in box | deletion AUC | insertion AUC |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for image in &summary.images {
        for (backend, result) in &image.backends {
            text.push_str(&format!(
                "| {} | {backend} | {} {} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                image.name,
                result.class,
                result.class_name,
                result.score,
                number(result.spread_map.entropy),
                number(result.spread_map.gini),
                number(result.spread_map.area_above_half),
                number(result.spread_map.participation_ratio),
                measured(result.pointing, result.flat && image.bbox.is_some()),
                result.argmax_hit.map_or("–".into(), |hit| hit.to_string()),
                measured(result.deletion_auc, false),
                measured(result.insertion_auc, false),
            ));
        }
    }
    let localisation = summary.localisation();
    if !localisation.is_empty() {
        text.push_str("\n## Localisation\n\n| backend | energy pointing game | argmax hit rate |\n|---|---|---|\n");
        for (backend, (pointing, hits)) in &localisation {
            text.push_str(&format!("| {backend} | {pointing:.3} | {hits:.3} |\n"));
        }
    }
    if !summary.failures.is_empty() {
        text.push_str("\n## Failures\n\n");
        for (what, error) in &summary.failures {
            text.push_str(&format!("- {what}: {error}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_choices_parse() {
        assert_eq!(
            "predicted".parse::<ClassChoice>(),
            Ok(ClassChoice::Predicted)
        );
        assert_eq!("3".parse::<ClassChoice>(), Ok(ClassChoice::Index(3)));
        assert!("cat".parse::<ClassChoice>().is_err());
    }

    #[test]
    fn the_default_layer_is_the_last_image_layer_by_its_group() {
        let model = parallax_core::spec::presets::resnet50([3, 224, 224], 1000)
            .resolve()
            .unwrap();
        assert_eq!(default_layer(&model).as_deref(), Some("layer4"));
        let cnn = parallax_core::spec::presets::cnn([1, 64, 64], 10)
            .resolve()
            .unwrap();
        assert_eq!(default_layer(&cnn).as_deref(), Some("pool2"));
    }

    #[test]
    fn jet_runs_from_blue_to_red() {
        assert_eq!(jet(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(jet(1.0), [0.5, 0.0, 0.0]);
        assert_eq!(jet(0.5), [0.5, 1.0, 0.5]);
    }
}

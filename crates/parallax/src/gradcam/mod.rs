//! `cargo xtask gradcam`: GradCAM on every backend from the same weights and the same
//! preprocessed tensors, one worker per backend as `compare` runs them, with the maps compared
//! and scored by core.
//!
//! The first backend listed decides the class when `--class predicted`; every engine then maps
//! that one class. Writes `OUT/gradcam/<image>.png` (input, each backend's overlay, the
//! difference), `maps.safetensors`, `summary.json` and `gradcam.md`, and `OUT/report.html`, which
//! also shows a comparison that `OUT` holds.

mod analysis;
mod confounders;
mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ndarray::Array4;
use parallax_core::Device;
use parallax_core::data::{BoundingBox, DataRequest, DatasetName};
use parallax_core::gradcam::job::{CamRequest, CamResult, CamWeights, load_weights, write_images};
use parallax_core::gradcam::preprocess::{Preprocess, read_rgb};
use parallax_core::gradcam::{CamMethod, CamSettings, MapScaling, Upsampling};
use parallax_core::record::write_json_atomically;
use parallax_core::spec::{ModelSource, ResolvedModel, Shape};
use parallax_registry::BackendEntry;

use crate::error::{Error, Result};
use crate::workers;
use crate::workspace::repo_root;
use parallax_provision::{self as provision, NativeEnv};

pub use crate::report::summary::GradCamSummary;

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
    #[arg(long, value_delimiter = ',', default_value = "tch,tf,burn", value_parser = parallax_registry::find)]
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
    /// Also run the confounders, one at a time on the first backend: preprocessing, the
    /// ResNet form, the target layer, the post-processing, and `--other-weights`.
    #[arg(long)]
    pub confounders: bool,
    /// A second weights file for `--confounders` (Keras's against torchvision's, say).
    #[arg(long, requires = "confounders")]
    pub other_weights: Option<PathBuf>,
    /// The overlays' colour map: turbo (the default), viridis, or jet as most published
    /// GradCAM figures use it.
    #[arg(long, value_enum, default_value_t = render::ColourMap::Turbo)]
    pub colour_map: render::ColourMap,
    /// Prebuilt workers, used instead of building one per backend: a `parallax-runner` with
    /// every selected backend's feature (the tests' GradCAM phase reuses their build this way),
    /// or a directory holding `parallax-runner-<backend>` for each.
    #[arg(long)]
    pub worker: Option<PathBuf>,
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
pub(crate) struct Inputs {
    pub(crate) names: Vec<String>,
    pub(crate) tensors: Array4<f32>,
    pub(crate) boxes: Option<Vec<BoundingBox>>,
    pub(crate) labels: Option<Vec<u32>>,
    pub(crate) class_names: Vec<String>,
    /// How tensors map back to colours for display.
    pub(crate) display: Preprocess,
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
) -> Result<Inputs> {
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
                .map_err(|source| Error::io("reading", &path, source))?
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
        return Err(Error::Invalid(format!(
            "no images: pass --images FILE|DIR... (PNG or JPEG) or --dataset NAME"
        )));
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
        return Err(Error::Invalid("none of the images could be read".into()));
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
pub fn run(args: Args) -> Result<()> {
    let _lock = crate::output_lock::OutputLock::acquire(&args.out)?;
    let summary = experiment(&args)?;
    // The page shows the comparison too when the directory holds one.
    let rendered = crate::report::dir::render_dir(&args.out, None)?;
    for path in rendered
        .written
        .iter()
        .filter(|p| p.ends_with("report.html"))
    {
        println!("report: {}", path.display());
    }
    if !summary.failures.is_empty() {
        return Err(Error::Failed(format!(
            "{} part(s) failed: {}",
            summary.failures.len(),
            summary
                .failures
                .iter()
                .map(|(what, _)| what.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// An experiment's configuration, checked: the model, the target layer, the weights and
/// the preprocessed images.
pub(crate) struct Prepared {
    model: ResolvedModel,
    input: [usize; 3],
    classes: usize,
    layer: String,
    weights: CamWeights,
    weights_label: String,
    pub(crate) inputs: Inputs,
}

/// The workers, built once for all of an experiment's runs.
pub(crate) struct Workers {
    paths: BTreeMap<&'static str, PathBuf>,
    native: Option<NativeEnv>,
}

impl Workers {
    fn build(backends: &[&'static BackendEntry], prebuilt: Option<&Path>) -> Result<Self> {
        let mut native = if prebuilt.is_some() || backends.iter().any(|entry| entry.is_native()) {
            Some(provision::ensure(false)?)
        } else {
            None
        };
        // The Python backends run the frameworks from their virtual environment, installed
        // here when missing, as `compare` does; a named backend that cannot have it fails.
        let runs_frameworks = backends.iter().any(|entry| {
            entry
                .native
                .contains(&parallax_registry::NativeLibrary::Frameworks)
        });
        if let Some(native) = native.as_mut()
            && runs_frameworks
            && prebuilt.is_none()
        {
            provision::ensure_frameworks(native)?;
        }
        let paths = workers::build(backends, false, native.as_ref(), prebuilt)?;
        Ok(Workers { paths, native })
    }
}

/// Checks the flags against the model and reads the images: the layer, the class and the
/// weights each fail with one line before any worker is built; an unreadable image is
/// reported in `failures` and left out.
pub(crate) fn prepare(args: &Args, failures: &mut Vec<(String, String)>) -> Result<Prepared> {
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
    let model = args.model.spec(input, classes)?.resolve()?;
    let layer = match &args.layer {
        Some(layer) => layer.clone(),
        None => default_layer(&model).ok_or_else(|| {
            Error::Invalid("the model has no layer whose output is an image".into())
        })?,
    };
    let index = model.find_layer(&layer).ok_or_else(|| {
        Error::Invalid(format!(
            "GradCAM layer {layer:?}: model {:?} has no such layer",
            model.spec.name
        ))
    })?;
    if !matches!(model.layers[index].output, Shape::Image { .. }) {
        return Err(Error::Invalid(format!(
            "GradCAM layer {layer:?} gives a flat vector, not an image; pick a convolutional layer such as layer4"
        )));
    }
    if let ClassChoice::Index(class) = args.class
        && class as usize >= model.classes()
    {
        return Err(Error::Invalid(format!(
            "--class {class} is out of range: model {} has {} classes (0..{})",
            model.spec.name,
            model.classes(),
            model.classes() - 1
        )));
    }
    let (weights, weights_label) = match &args.weights {
        Some(path) => {
            load_weights(&CamWeights::File(path.clone()), &model)?;
            let absolute = std::fs::canonicalize(path)
                .map_err(|source| Error::io("finding", &path, source))?;
            (CamWeights::File(absolute), path.display().to_string())
        }
        None => (
            CamWeights::Canonical(args.seed),
            format!("canonical seed {} (untrained)", args.seed),
        ),
    };
    let inputs = inputs(args, input, failures)?;
    Ok(Prepared {
        model,
        input,
        classes,
        layer,
        weights,
        weights_label,
        inputs,
    })
}

/// The map settings the flags ask for.
fn settings(args: &Args) -> CamSettings {
    CamSettings {
        method: args.method,
        relu: !args.no_relu,
        upsampling: args.upsampling,
        scaling: args.scaling,
    }
}

/// Runs `prepared` on `backends`, writing requests and results under `out`. With `targets`
/// `None`, the first backend that succeeds decides each image's class for the rest.
pub(crate) fn run_backends(
    args: &Args,
    prepared: &Prepared,
    backends: &[&'static BackendEntry],
    mut targets: Option<Vec<u32>>,
    workers: &Workers,
    out: &Path,
    failures: &mut Vec<(String, String)>,
) -> Result<Vec<CamResult>> {
    std::fs::create_dir_all(out).map_err(|source| Error::io("creating", &out, source))?;
    let images_path = out.join("inputs.safetensors");
    write_images(&images_path, &prepared.inputs.tensors)?;
    let mut results = Vec::new();
    for entry in backends {
        let request = CamRequest {
            backend: entry.name.to_string(),
            device: Device::Cpu,
            threads: args.threads,
            model: args.model.clone(),
            input: prepared.input,
            classes: prepared.classes,
            weights: prepared.weights.clone(),
            images: std::fs::canonicalize(&images_path)
                .map_err(|source| Error::io("finding", &images_path, source))?,
            layer: prepared.layer.clone(),
            targets: targets.clone(),
            settings: settings(args),
            faithfulness_steps: (args.faithfulness_steps > 0).then_some(args.faithfulness_steps),
        };
        let request_path = out.join(format!("request-{}.json", entry.name));
        write_json_atomically(&request_path, &request)?;
        eprintln!(
            "gradcam: {} on {} image(s) in {}",
            entry.name,
            prepared.inputs.names.len(),
            out.display()
        );
        let worker = workers
            .paths
            .get(entry.name)
            .ok_or_else(|| Error::Build(format!("no worker was built for {}", entry.name)))?;
        let result_path = out.join(format!("result-{}.json", entry.name));
        match workers::run_grad_cam(
            entry,
            worker,
            &request_path,
            &result_path,
            workers.native.as_ref(),
        ) {
            Ok(result) => {
                targets.get_or_insert_with(|| result.targets.clone());
                results.push(result);
            }
            Err(error) => {
                let message = parallax_core::error::one_line(&error);
                eprintln!("error: {}: {message}", entry.name);
                failures.push((entry.name.to_string(), message));
            }
        }
    }
    Ok(results)
}

/// Runs the experiment and writes its files; failures of single images or backends are in
/// the returned summary.
pub fn experiment(args: &Args) -> Result<GradCamSummary> {
    if args.backends.is_empty() {
        return Err(Error::Invalid(format!(
            "--backends is empty; known backends: {}",
            parallax_registry::names()
        )));
    }
    let mut summary = GradCamSummary::default();
    let prepared = prepare(args, &mut summary.failures)?;
    if args.weights.is_none() {
        eprintln!(
            "warning: no --weights; using canonical weights from seed {}: an untrained network's maps mean nothing",
            args.seed
        );
    }
    let targets = match args.class {
        ClassChoice::Index(class) => Some(vec![class; prepared.inputs.names.len()]),
        ClassChoice::Predicted => None,
    };
    let workers = Workers::build(&args.backends, args.worker.as_deref())?;
    let out = args.out.join("gradcam");
    let settings = settings(args);
    let results = run_backends(
        args,
        &prepared,
        &args.backends,
        targets,
        &workers,
        &out,
        &mut summary.failures,
    )?;
    summary.model = prepared.model.spec.name.clone();
    summary.layer = prepared
        .model
        .find_layer(&prepared.layer)
        .map(|index| prepared.model.layers[index].name.clone())
        .unwrap_or_default();
    summary.settings = Some(settings);
    summary.weights = prepared.weights_label.clone();
    summary.preprocess = match args.dataset {
        Some(_) => "dataset".into(),
        None => args.preprocess.to_string(),
    };
    let (_, _, height, width) = prepared.inputs.tensors.dim();
    let maps: Vec<analysis::Maps> = results
        .iter()
        .map(|result| analysis::maps(result, &settings, [height, width]))
        .collect();
    analysis::analyse(&prepared.inputs, &results, &maps, &settings, &mut summary);
    summary.colour_map = args.colour_map.name().to_string();
    render::write_outputs(
        &out,
        &prepared.inputs,
        &results,
        &maps,
        &settings,
        &summary,
        args.colour_map,
    )?;
    if args.confounders {
        let failures = confounders::run(args, &prepared, &results, &summary, &workers, &out)?;
        summary.failures.extend(failures);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: Args,
    }

    /// An unreadable image is reported with one line and left out; the others are read.
    #[test]
    fn an_unreadable_image_leaves_the_others() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken.png");
        std::fs::write(&broken, b"not an image").unwrap();
        let photo = repo_root().join("fixtures/photos/chelsea.png");
        let wrapper = Wrapper::try_parse_from([
            "gradcam".as_ref(),
            "--images".as_ref(),
            broken.as_os_str(),
            photo.as_os_str(),
        ])
        .unwrap();
        let mut failures = Vec::new();
        let inputs = inputs(&wrapper.args, [3, 224, 224], &mut failures).unwrap();
        assert_eq!(inputs.names, vec!["chelsea".to_string()]);
        assert_eq!(inputs.tensors.dim(), (1, 3, 224, 224));
        assert_eq!(failures.len(), 1);
        assert!(failures[0].1.contains("broken.png"), "{failures:?}");
        assert_eq!(inputs.class_names.len(), 1000);
    }

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

    /// The difference panel has a scale of its own: a difference of 1e-4 reaches its darkest
    /// colour, and identical maps leave it white.
    #[test]
    fn the_difference_panel_scales_to_its_own_largest_value() {
        let input = ndarray::Array3::<f32>::from_elem((3, 4, 4), 0.5);
        let a = ndarray::Array2::<f32>::from_elem((4, 4), 0.5);
        let mut b = a.clone();
        b[[1, 2]] += 1e-4;
        let captions = vec!["in".to_string(), "a".into(), "b".into(), "|a - b|".into()];
        let panel = |image: &image::RgbImage, panel: u32| {
            let x0 = panel * (4 * 8 + 6);
            (0..32)
                .flat_map(|y| (0..32).map(move |x| (x, y)))
                .map(|(x, y)| image.get_pixel(x0 + x, y).0)
                .collect::<Vec<_>>()
        };
        let image = render::composite(
            &input,
            &[a.view(), b.view()],
            8,
            &captions,
            render::ColourMap::Turbo,
        );
        let difference = panel(&image, 3);
        let darkest = difference
            .iter()
            .map(|p| p.iter().map(|&c| u32::from(c)).sum::<u32>())
            .min()
            .unwrap();
        assert!(
            darkest < 60,
            "the largest difference is not dark: {darkest}"
        );
        let image = render::composite(
            &input,
            &[a.view(), a.view()],
            8,
            &captions,
            render::ColourMap::Turbo,
        );
        assert!(
            panel(&image, 3).iter().all(|p| p.iter().all(|&c| c > 245)),
            "identical maps are not white"
        );
    }

    #[test]
    fn jet_runs_from_blue_to_red() {
        assert_eq!(render::jet(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(render::jet(1.0), [0.5, 0.0, 0.0]);
        assert_eq!(render::jet(0.5), [0.5, 1.0, 0.5]);
        // Turbo and viridis grow lighter from their low end to their middle, where jet does not
        // order its colours by lightness.
        let lightness = |[r, g, b]: [f32; 3]| 0.2126 * r + 0.7152 * g + 0.0722 * b;
        for map in [render::ColourMap::Turbo, render::ColourMap::Viridis] {
            assert!(
                lightness(map.colour(0.0)) < lightness(map.colour(0.5)),
                "{map:?}"
            );
        }
    }
}

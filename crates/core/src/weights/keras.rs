//! Keras's legacy HDF5 weights (the format of keras.applications' pretrained ResNet-50), mapped
//! to the canonical layout: kernels HWIO → OIHW, Dense `[in, out]` → `[out, in]`, and
//! keras.applications' ResNet names → torchvision's.
//!
//! The file holds a root attribute `layer_names`, one group per layer whose attribute
//! `weight_names` lists its datasets (`conv1_conv/kernel`, with `:0` in files written by Keras
//! 2), and float32 datasets under those names. Keras 3 still writes this layout through
//! `legacy_h5_format.save_weights_to_hdf5_group`.

use std::path::Path;

use hdf5_reader::{Attribute, Hdf5File};
use ndarray::{ArrayD, IxDyn};

use super::Weights;
use crate::error::WeightsError;

/// The eight bytes that open every HDF5 file (at offset 0 when there is no user block).
pub const HDF5_SIGNATURE: [u8; 8] = [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n'];

/// Reads Keras's legacy HDF5 weights file at `path` into canonical weights.
///
/// Fails with one line naming the file for a file that is not HDF5, an HDF5 file without
/// Keras's `layer_names`, or a dataset that is not float32.
pub fn read_h5(path: &Path) -> Result<Weights, WeightsError> {
    let fail = |message: String| WeightsError::Keras {
        message: format!("{}: {message}", path.display()),
    };
    let file = Hdf5File::open(path)
        .map_err(|error| fail(format!("not a readable HDF5 file ({error})")))?;
    let root = file
        .root_group()
        .map_err(|error| fail(format!("no root group ({error})")))?;
    let layer_names = root.attribute("layer_names").map_err(|_| {
        fail("not Keras weights: the file has no root attribute `layer_names` (Keras 3's `.weights.h5` layout is not read; save with keras.src.legacy.saving.legacy_h5_format.save_weights_to_hdf5_group)".into())
    })?;
    let mut tensors = Vec::new();
    for layer in strings(&layer_names).map_err(|error| fail(format!("layer_names: {error}")))? {
        let group = file
            .group(&layer)
            .map_err(|error| fail(format!("layer {layer:?} is listed but absent ({error})")))?;
        let weight_names = group
            .attribute("weight_names")
            .map_err(|error| fail(format!("layer {layer:?} has no weight_names ({error})")))?;
        for weight in strings(&weight_names).map_err(|error| fail(format!("{layer}: {error}")))? {
            let dataset = file
                .dataset(&format!("{layer}/{weight}"))
                .map_err(|error| fail(format!("dataset {layer}/{weight}: {error}")))?;
            let values = dataset.read_array::<f32>().map_err(|error| {
                fail(format!("dataset {layer}/{weight} is not float32 ({error})"))
            })?;
            tensors.push(KerasTensor {
                layer: layer.clone(),
                weight,
                values: values.into_dyn(),
            });
        }
    }
    from_keras(tensors)
}

/// A string-array attribute; Keras 3 writes an empty float array for a layer without weights.
fn strings(attribute: &Attribute) -> Result<Vec<String>, String> {
    if attribute
        .num_elements()
        .map_err(|error| error.to_string())?
        == 0
    {
        return Ok(Vec::new());
    }
    attribute.read_strings().map_err(|error| error.to_string())
}

/// A tensor as Keras stores it: its layer, its weight name, its shape and values.
#[derive(Clone, Debug, PartialEq)]
pub struct KerasTensor {
    /// The layer's name (`conv2_block1_1_conv`).
    pub layer: String,
    /// The weight's name as listed in `weight_names` (`conv2_block1_1_conv/kernel:0`).
    pub weight: String,
    /// The tensor in Keras's layout.
    pub values: ArrayD<f32>,
}

/// The canonical name of a keras.applications ResNet layer: `conv1_conv` → `conv1`,
/// `conv1_bn` → `bn1`, `conv{s}_block{b}_{i}_conv` → `layer{s−1}.{b−1}.conv{i}` (`_0_` is the
/// shortcut, torchvision's `downsample.0` and `.1`), `predictions` → `fc`. Other names pass
/// through unchanged, so that a model whose spec uses Keras's names imports as it is.
pub fn canonical_layer(layer: &str) -> String {
    match layer {
        "conv1_conv" => return "conv1".into(),
        "conv1_bn" => return "bn1".into(),
        "predictions" => return "fc".into(),
        _ => {}
    }
    let parse = || -> Option<String> {
        let rest = layer.strip_prefix("conv")?;
        let (stage, rest) = rest.split_once("_block")?;
        let (block, rest) = rest.split_once('_')?;
        let (step, kind) = rest.split_once('_')?;
        let stage: usize = stage.parse().ok()?;
        let block: usize = block.parse().ok()?;
        let step: usize = step.parse().ok()?;
        if stage < 2 || block < 1 {
            return None;
        }
        let prefix = format!("layer{}.{}", stage - 1, block - 1);
        Some(match (step, kind) {
            (0, "conv") => format!("{prefix}.downsample.0"),
            (0, "bn") => format!("{prefix}.downsample.1"),
            (step, "conv") => format!("{prefix}.conv{step}"),
            (step, "bn") => format!("{prefix}.bn{step}"),
            _ => return None,
        })
    };
    parse().unwrap_or_else(|| layer.to_string())
}

/// Canonical weights from Keras's tensors.
///
/// Fails on a weight whose kind is unknown or whose kernel is neither 2-D nor 4-D.
pub fn from_keras(tensors: Vec<KerasTensor>) -> Result<Weights, WeightsError> {
    let mut weights = Weights::new();
    for tensor in tensors {
        let leaf = tensor
            .weight
            .rsplit('/')
            .next()
            .unwrap_or(&tensor.weight)
            .trim_end_matches(":0");
        let layer = canonical_layer(&tensor.layer);
        let unknown = |what: &str| WeightsError::Keras {
            message: format!("{}: {what}", tensor.weight),
        };
        let (canonical_leaf, values) = match leaf {
            "kernel" => {
                let values = match tensor.values.ndim() {
                    // HWIO → OIHW.
                    4 => tensor.values.permuted_axes(IxDyn(&[3, 2, 0, 1])),
                    // [in, out] → [out, in].
                    2 => tensor.values.reversed_axes(),
                    n => return Err(unknown(&format!("a kernel of {n} dimensions"))),
                };
                ("weight", values.as_standard_layout().into_owned())
            }
            "bias" | "beta" => ("bias", tensor.values),
            "gamma" => ("weight", tensor.values),
            "moving_mean" => ("running_mean", tensor.values),
            "moving_variance" => ("running_var", tensor.values),
            other => return Err(unknown(&format!("unknown weight kind {other:?}"))),
        };
        weights.insert(format!("{layer}.{canonical_leaf}"), values);
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gradcam/keras-resnet-tiny.h5")
    }

    #[test]
    fn a_file_written_by_keras_reads_into_canonical_names() {
        let weights = Weights::load_any(&fixture()).unwrap();
        assert_eq!(weights.get("conv1.weight").unwrap().shape(), &[64, 3, 7, 7]);
        assert_eq!(
            weights
                .get("layer2.0.downsample.1.running_var")
                .unwrap()
                .shape(),
            &[32]
        );
        assert_eq!(weights.get("fc.weight").unwrap().shape(), &[10, 32]);
    }

    #[test]
    fn a_truncated_or_foreign_file_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixture()).unwrap();
        let truncated = dir.path().join("truncated.h5");
        std::fs::write(&truncated, &bytes[..600]).unwrap();
        let error = crate::error::one_line(&Weights::load_any(&truncated).unwrap_err());
        assert!(
            error.contains("truncated.h5") && error.contains("Keras"),
            "{error}"
        );
        let text = dir.path().join("weights.safetensors");
        std::fs::write(&text, b"hello").unwrap();
        let error = crate::error::one_line(&Weights::load_any(&text).unwrap_err());
        assert!(error.contains("not a weights file"), "{error}");
    }

    #[test]
    fn keras_resnet_names_map_to_torchvision() {
        assert_eq!(canonical_layer("conv1_conv"), "conv1");
        assert_eq!(
            canonical_layer("conv2_block1_0_conv"),
            "layer1.0.downsample.0"
        );
        assert_eq!(canonical_layer("conv3_block4_3_bn"), "layer2.3.bn3");
        assert_eq!(
            canonical_layer("conv5_block3_0_bn"),
            "layer4.2.downsample.1"
        );
        assert_eq!(canonical_layer("predictions"), "fc");
        assert_eq!(canonical_layer("dense_1"), "dense_1");
    }

    #[test]
    fn kernels_are_transposed_to_the_canonical_layout() {
        let hwio = ArrayD::from_shape_fn(IxDyn(&[3, 2, 4, 5]), |i| {
            (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as f32
        });
        let dense = ArrayD::from_shape_fn(IxDyn(&[4, 2]), |i| (i[0] * 10 + i[1]) as f32);
        let weights = from_keras(vec![
            KerasTensor {
                layer: "conv1_conv".into(),
                weight: "conv1_conv/kernel:0".into(),
                values: hwio,
            },
            KerasTensor {
                layer: "predictions".into(),
                weight: "predictions/kernel".into(),
                values: dense,
            },
        ])
        .unwrap();
        let oihw = weights.get("conv1.weight").unwrap();
        assert_eq!(oihw.shape(), &[5, 4, 3, 2]);
        assert_eq!(oihw[[4, 3, 2, 1]], 2134.0);
        let fc = weights.get("fc.weight").unwrap();
        assert_eq!(fc.shape(), &[2, 4]);
        assert_eq!(fc[[1, 3]], 31.0);
    }
}

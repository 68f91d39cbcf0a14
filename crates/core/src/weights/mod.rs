//! Canonical weights: named `f32` tensors in PyTorch's layout, saved as safetensors.
//!
//! Names follow PyTorch state dicts (`fc1.weight`, `layer1.0.bn1.running_var`), shapes follow
//! PyTorch's conventions (Linear `[out, in]`, Conv `[O, I, kH, kW]`), and a flatten feeds dense
//! layers in C,H,W order. Every adapter converts to and from this layout.

pub mod keras;
pub mod pytorch;

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, TensorView};

use crate::error::WeightsError;
use crate::spec::ResolvedModel;
use crate::{Error, Result};

/// Named tensors in the canonical layout, ordered by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, ArrayD<f32>>,
}

impl Weights {
    /// No tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: ArrayD<f32>) {
        self.tensors.insert(name.into(), tensor);
    }

    /// One tensor by name.
    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.tensors.get(name)
    }

    /// One tensor by name, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&ArrayD<f32>, WeightsError> {
        self.get(name).ok_or_else(|| WeightsError::Missing {
            name: name.to_string(),
        })
    }

    /// All tensors, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArrayD<f32>)> {
        self.tensors
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor))
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there is no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Checks that these weights are exactly the model's canonical tensors, with the right shapes.
    ///
    /// Extra tensors that PyTorch keeps and parallax doesn't (`num_batches_tracked`) are allowed.
    pub fn check(&self, model: &ResolvedModel) -> Result<(), WeightsError> {
        let mut expected = std::collections::BTreeSet::new();
        for param in model.params() {
            let tensor = self.require(&param.name)?;
            if tensor.shape() != param.shape.as_slice() {
                return Err(WeightsError::Shape {
                    name: param.name.clone(),
                    expected: param.shape.clone(),
                    actual: tensor.shape().to_vec(),
                });
            }
            expected.insert(param.name.as_str());
        }
        if let Some(extra) = self.tensors.keys().find(|name| {
            !name.ends_with(".num_batches_tracked") && !expected.contains(name.as_str())
        }) {
            return Err(WeightsError::Unexpected {
                name: extra.clone(),
                model: model.spec.name.clone(),
            });
        }
        Ok(())
    }

    /// These weights made to fit `model` when they come from the other form of the same
    /// network: a convolution bias that the model lacks is folded into the batch norm after it
    /// (its running mean becomes μ − b, exact in evaluation mode), and a bias that the model
    /// has but the weights lack is zero. Keras's ResNet-50 weights thus run in torchvision's
    /// form and the other way round. Everything else is left to [`Weights::check`].
    pub fn fit_to(mut self, model: &ResolvedModel) -> Result<Weights, WeightsError> {
        for (conv, norm) in model.conv_norm_pairs() {
            let bias_name = conv.bias_name();
            match (&conv.bias, self.tensors.contains_key(&bias_name)) {
                (None, true) => {
                    let bias = self.tensors.remove(&bias_name).unwrap_or_default();
                    let mean = self
                        .tensors
                        .get_mut(&norm.running_mean.name)
                        .ok_or_else(|| WeightsError::Missing {
                            name: norm.running_mean.name.clone(),
                        })?;
                    if mean.shape() != bias.shape() {
                        return Err(WeightsError::Shape {
                            name: bias_name,
                            expected: mean.shape().to_vec(),
                            actual: bias.shape().to_vec(),
                        });
                    }
                    *mean -= &bias;
                }
                (Some(bias), false) => {
                    self.tensors
                        .insert(bias_name, ArrayD::zeros(IxDyn(&bias.shape)));
                }
                (None, false) | (Some(_), true) => {}
            }
        }
        Ok(self)
    }

    /// The largest relative difference between two sets of weights over their common names:
    /// max |a − b| divided by max |a|, per tensor. Names present in only one side are an error.
    pub fn max_relative_difference(&self, other: &Weights) -> Result<(String, f32)> {
        let mut worst = (String::new(), 0.0f32);
        for (name, a) in &self.tensors {
            let b = other.require(name)?;
            if a.shape() != b.shape() {
                return Err(WeightsError::Shape {
                    name: name.clone(),
                    expected: a.shape().to_vec(),
                    actual: b.shape().to_vec(),
                }
                .into());
            }
            let difference = relative_difference(a.view(), b.view());
            if difference > worst.1 || worst.0.is_empty() {
                worst = (name.clone(), difference);
            }
        }
        Ok(worst)
    }

    /// Writes the tensors as a safetensors file (F32, little-endian, canonical shapes).
    pub fn save(&self, path: &Path) -> Result<()> {
        let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, tensor)| {
                let bytes = tensor
                    .iter()
                    .flat_map(|value| value.to_le_bytes())
                    .collect();
                (name.clone(), tensor.shape().to_vec(), bytes)
            })
            .collect();
        let file_error = |error: safetensors::SafeTensorError| WeightsError::File {
            path: path.to_path_buf(),
            message: error.to_string(),
            source: Some(Box::new(error)),
        };
        let views = buffers
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|view| (name.clone(), view))
                    .map_err(file_error)
            })
            .collect::<Result<Vec<_>, WeightsError>>()?;
        let bytes = safetensors::serialize(views, None).map_err(file_error)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| Error::io(parent, error))?;
        }
        std::fs::write(path, bytes).map_err(|error| Error::io(path, error))
    }

    /// Reads weights in any format parallax knows, by the file's first bytes: Keras's HDF5
    /// weights ([`keras::read_h5`]), a PyTorch state dict saved by `torch.save`
    /// ([`pytorch::read_pth`]), or safetensors.
    pub fn load_any(path: &Path) -> Result<Self> {
        let mut head = [0u8; 8];
        let read = std::fs::File::open(path)
            .and_then(|mut file| std::io::Read::read(&mut file, &mut head))
            .map_err(|error| Error::io(path, error))?;
        if read == 8 && head == keras::HDF5_SIGNATURE {
            return Ok(keras::read_h5(path)?);
        }
        // A zip (torch.save since 1.6) or a bare pickle (older torch.save).
        if head.starts_with(b"PK\x03\x04") || head.starts_with(&[0x80]) {
            return Ok(pytorch::read_pth(path)?);
        }
        Self::load(path)
    }

    /// Reads a safetensors file of F32 tensors.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|error| Error::io(path, error))?;
        let file =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|error| WeightsError::File {
                path: path.to_path_buf(),
                message: error.to_string(),
                source: Some(Box::new(error)),
            })?;
        let mut weights = Weights::new();
        for (name, view) in file.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(WeightsError::File {
                    path: path.to_path_buf(),
                    message: format!("tensor {name:?} is {:?}", view.dtype()),
                    source: None,
                }
                .into());
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
                .collect();
            let tensor = ArrayD::from_shape_vec(IxDyn(view.shape()), values).map_err(|error| {
                WeightsError::File {
                    path: path.to_path_buf(),
                    message: format!("tensor {name:?}: {error}"),
                    source: None,
                }
            })?;
            weights.insert(name, tensor);
        }
        Ok(weights)
    }
}

impl FromIterator<(String, ArrayD<f32>)> for Weights {
    fn from_iter<I: IntoIterator<Item = (String, ArrayD<f32>)>>(iter: I) -> Self {
        Weights {
            tensors: iter.into_iter().collect(),
        }
    }
}

/// max |a − b| / max |a|: the parity measure used between backends (0 when both are all zeros).
pub fn relative_difference<D: ndarray::Dimension>(
    a: ndarray::ArrayView<f32, D>,
    b: ndarray::ArrayView<f32, D>,
) -> f32 {
    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let difference = a
        .iter()
        .zip(b.iter())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    if scale == 0.0 {
        difference
    } else {
        difference / scale
    }
}

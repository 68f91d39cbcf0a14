//! PyTorch state dicts as `torch.save` writes them (`.pth`, `.pt`: a zip of a pickle and raw
//! storages), read without libtorch by `pytorch-reader`, the reader burn uses.
//!
//! Tensor names are the state dict's, which are canonical for torchvision-style models. A
//! checkpoint that nests the state dict under `state_dict` is read from there. Integer
//! buffers (`num_batches_tracked`) are skipped; other tensors must be float32.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use pytorch_reader::{DType, PytorchReader};

use super::Weights;
use crate::error::WeightsError;

/// Reads the state dict at `path`.
pub fn read_pth(path: &Path) -> Result<Weights, WeightsError> {
    let fail = |message: String| WeightsError::File {
        path: path.to_path_buf(),
        message,
        source: None,
    };
    let reader = PytorchReader::new(path)
        .map_err(|error| fail(format!("not a readable PyTorch file ({error})")))?;
    let nested = reader
        .keys()
        .iter()
        .all(|key| key.starts_with("state_dict."));
    let mut weights = Weights::new();
    for (key, tensor) in reader.into_tensors() {
        let name = if nested {
            key.trim_start_matches("state_dict.").to_string()
        } else {
            key
        };
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        if tensor.dtype() != DType::F32 {
            return Err(fail(format!(
                "tensor {name:?} is {:?}; parallax reads float32 weights",
                tensor.dtype()
            )));
        }
        let shape = tensor.shape().to_vec();
        let bytes = tensor
            .read()
            .map_err(|error| fail(format!("tensor {name:?}: {error}")))?;
        // The reader gives contiguous, row-major values in this machine's byte order.
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        let tensor = ArrayD::from_shape_vec(IxDyn(&shape), values)
            .map_err(|error| fail(format!("tensor {name:?}: {error}")))?;
        weights.insert(name, tensor);
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `.pth` that PyTorch wrote holds the same tensors as the safetensors file it wrote
    /// beside it (`fixtures/gradcam/make_torch_resnet.py`).
    #[test]
    fn a_file_saved_by_torch_matches_its_safetensors_twin() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gradcam");
        let pth = Weights::load_any(&dir.join("torch-resnet-tiny.pth")).unwrap();
        let safetensors = Weights::load(&dir.join("torch-resnet-tiny.safetensors")).unwrap();
        assert_eq!(pth, safetensors);
    }
}

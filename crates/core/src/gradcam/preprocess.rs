//! The preprocessing pipelines a photo goes through before GradCAM, chosen per run, so that
//! every engine receives the same tensor and the pipeline itself can be measured as a
//! confounder.
//!
//! - `torch`: torchvision's ResNet-50 transform: the shorter side resized to 256 (bilinear,
//!   antialiased), a centre crop of 224, RGB scaled to [0, 1], then ImageNet's mean and std.
//! - `caffe`: Keras's ResNet-50 `preprocess_input` after `load_img(target_size=(224, 224))`:
//!   the image squashed to 224×224 (nearest), RGB → BGR, ImageNet's BGR means subtracted,
//!   no scaling.
//! - `unit`: the model's own input size (bilinear), [0, 1], grey when the model takes one
//!   channel: for small models such as the cnn.
//!
//! Resizing uses the `image` crate, whose bilinear filter widens with the downscale factor
//! (antialiasing, as PIL and torchvision's `antialias=True` do); its sampling positions differ
//! from PIL's by rounding only.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use image::imageops::{self, FilterType};
use image::{DynamicImage, RgbImage};
use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::data::DataError;

/// ImageNet's per-channel mean in RGB, on the [0, 1] scale (torchvision).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation in RGB, on the [0, 1] scale (torchvision).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// ImageNet's per-channel mean in BGR order on the [0, 255] scale (Keras's "caffe" mode).
pub const CAFFE_BGR_MEAN: [f32; 3] = [103.939, 116.779, 123.68];

/// A preprocessing pipeline; see the [module documentation](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocess {
    /// torchvision's: resize 256, crop 224, mean/std in RGB.
    #[default]
    Torch,
    /// Keras's ResNet-50: squash to 224 (nearest), BGR, mean subtraction.
    Caffe,
    /// The model's input size, [0, 1].
    Unit,
}

impl Preprocess {
    /// Every pipeline, in the order help texts list them.
    pub const ALL: [Preprocess; 3] = [Preprocess::Torch, Preprocess::Caffe, Preprocess::Unit];

    /// The name the command line and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Preprocess::Torch => "torch",
            Preprocess::Caffe => "caffe",
            Preprocess::Unit => "unit",
        }
    }

    /// The input shape `[C, H, W]` this pipeline makes for a model whose input is `model_input`.
    pub fn output_shape(self, model_input: [usize; 3]) -> [usize; 3] {
        match self {
            Preprocess::Torch | Preprocess::Caffe => [3, 224, 224],
            Preprocess::Unit => model_input,
        }
    }

    /// Applies the pipeline to an RGB image, for a model whose input is `model_input`.
    pub fn apply(self, image: &RgbImage, model_input: [usize; 3]) -> Array3<f32> {
        match self {
            Preprocess::Torch => {
                let (width, height) = image.dimensions();
                // torchvision's Resize(256): the shorter side becomes 256, the longer one is
                // scaled and truncated.
                let (new_width, new_height) = if width <= height {
                    (256, (256.0 * height as f64 / width as f64) as u32)
                } else {
                    ((256.0 * width as f64 / height as f64) as u32, 256)
                };
                let resized = imageops::resize(image, new_width, new_height, FilterType::Triangle);
                // CenterCrop rounds the offset as torchvision does.
                let top = ((new_height - 224) as f64 / 2.0).round() as u32;
                let left = ((new_width - 224) as f64 / 2.0).round() as u32;
                let crop = imageops::crop_imm(&resized, left, top, 224, 224).to_image();
                to_tensor(&crop, |channel, value| {
                    (value / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
                })
            }
            Preprocess::Caffe => {
                let squashed = imageops::resize(image, 224, 224, FilterType::Nearest);
                let rgb = to_tensor(&squashed, |_, value| value);
                // RGB → BGR, then the BGR means.
                let mut bgr = Array3::<f32>::zeros(rgb.raw_dim());
                for channel in 0..3 {
                    let mean = CAFFE_BGR_MEAN[channel];
                    bgr.index_axis_mut(ndarray::Axis(0), channel).assign(
                        &rgb.index_axis(ndarray::Axis(0), 2 - channel)
                            .mapv(|v| v - mean),
                    );
                }
                bgr
            }
            Preprocess::Unit => {
                let [channels, height, width] = model_input;
                let resized =
                    imageops::resize(image, width as u32, height as u32, FilterType::Triangle);
                if channels == 1 {
                    let grey = DynamicImage::ImageRgb8(resized).to_luma8();
                    let (w, h) = grey.dimensions();
                    Array3::from_shape_fn((1, h as usize, w as usize), |(_, row, column)| {
                        f32::from(grey.get_pixel(column as u32, row as u32)[0]) / 255.0
                    })
                } else {
                    to_tensor(&resized, |_, value| value / 255.0)
                }
            }
        }
    }

    /// Maps a preprocessed tensor back to displayable RGB in [0, 1], for overlays.
    pub fn to_display(self, tensor: &Array3<f32>) -> Array3<f32> {
        let (channels, height, width) = tensor.dim();
        Array3::from_shape_fn((3, height, width), |(channel, row, column)| {
            let value = match self {
                Preprocess::Torch => {
                    tensor[[channel, row, column]] * IMAGENET_STD[channel] + IMAGENET_MEAN[channel]
                }
                Preprocess::Caffe => {
                    (tensor[[2 - channel, row, column]] + CAFFE_BGR_MEAN[2 - channel]) / 255.0
                }
                Preprocess::Unit => tensor[[channel.min(channels - 1), row, column]],
            };
            value.clamp(0.0, 1.0)
        })
    }
}

impl fmt::Display for Preprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preprocess {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Preprocess::ALL
            .into_iter()
            .find(|pipeline| pipeline.name() == text)
            .ok_or_else(|| format!("unknown preprocessing {text:?}; use torch, caffe or unit"))
    }
}

/// An RGB image as `[3, H, W]`, each value mapped by `f(channel, value in 0..=255)`.
fn to_tensor(image: &RgbImage, f: impl Fn(usize, f32) -> f32) -> Array3<f32> {
    let (width, height) = image.dimensions();
    Array3::from_shape_fn(
        (3, height as usize, width as usize),
        |(channel, row, column)| {
            f(
                channel,
                f32::from(image.get_pixel(column as u32, row as u32)[channel]),
            )
        },
    )
}

/// Reads a PNG or JPEG as RGB; an unreadable file gives one error naming it.
pub fn read_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let image = image::ImageReader::open(path)
        .map_err(|source| DataError::io(path, source))?
        .with_guessed_format()
        .map_err(|source| DataError::io(path, source))?
        .decode()
        .map_err(|error| DataError::InvalidDataset {
            name: path.display().to_string(),
            reason: format!("not a readable PNG or JPEG image ({error})"),
        })?;
    Ok(image.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn solid(width: u32, height: u32, colour: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(width, height, Rgb(colour))
    }

    #[test]
    fn torch_crops_224_and_standardises_rgb() {
        let tensor = Preprocess::Torch.apply(&solid(400, 300, [255, 0, 128]), [3, 224, 224]);
        assert_eq!(tensor.dim(), (3, 224, 224));
        let red = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        assert!((tensor[[0, 100, 100]] - red).abs() < 1e-5);
        let green = -IMAGENET_MEAN[1] / IMAGENET_STD[1];
        assert!((tensor[[1, 0, 0]] - green).abs() < 1e-5);
    }

    #[test]
    fn caffe_swaps_to_bgr_and_subtracts_means() {
        let tensor = Preprocess::Caffe.apply(&solid(50, 80, [255, 0, 128]), [3, 224, 224]);
        assert_eq!(tensor.dim(), (3, 224, 224));
        assert!((tensor[[0, 5, 5]] - (128.0 - 103.939)).abs() < 1e-4);
        assert!((tensor[[2, 5, 5]] - (255.0 - 123.68)).abs() < 1e-4);
        let display = Preprocess::Caffe.to_display(&tensor);
        assert!((display[[0, 5, 5]] - 1.0).abs() < 1e-5);
    }

    #[test]
    fn unit_fits_a_grey_model() {
        let tensor = Preprocess::Unit.apply(&solid(90, 90, [255, 255, 255]), [1, 64, 64]);
        assert_eq!(tensor.dim(), (1, 64, 64));
        assert!((tensor[[0, 10, 10]] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn an_unreadable_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        std::fs::write(&path, b"not a png").unwrap();
        let error = read_rgb(&path).unwrap_err().to_string();
        assert!(
            error.contains("broken.png") && error.contains("PNG or JPEG"),
            "{error}"
        );
    }
}

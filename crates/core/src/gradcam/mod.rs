//! GradCAM post-processing, done once in core for every engine: class-activation maps from a
//! layer's activations and gradients, upsampling, normalisation, and the metrics that compare
//! maps ([`metrics`]).
//!
//! Engines only hand over activations and gradients ([`GradCam`]); everything that turns them
//! into a heatmap happens here, so that two engines' maps differ only if their numbers do. The
//! formulas follow pytorch-grad-cam (`base_cam.py`, `grad_cam.py`, `grad_cam_plusplus.py`,
//! `hirescam.py`); what each library does differently is in `docs/gradcam.md`.

pub mod job;
pub mod metrics;
pub mod preprocess;

use std::fmt;
use std::str::FromStr;

use ndarray::{Array1, Array2, ArrayView2, ArrayView3, Axis, Zip};
use serde::{Deserialize, Serialize};

use crate::backend::GradCam;

/// How the channels of the target layer are weighted into one map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CamMethod {
    /// Selvaraju et al.: each channel weighted by its gradient's spatial mean.
    #[default]
    #[serde(rename = "gradcam")]
    GradCam,
    /// Chattopadhay et al.: positive gradients weighted by second- and third-order terms.
    #[serde(rename = "gradcam++")]
    GradCamPlusPlus,
    /// Draelos and Carin: the element-wise product of gradients and activations, summed over
    /// channels (no spatial averaging).
    #[serde(rename = "hirescam")]
    HiResCam,
}

impl CamMethod {
    /// Every method, in the order reports list them.
    pub const ALL: [CamMethod; 3] = [
        CamMethod::GradCam,
        CamMethod::GradCamPlusPlus,
        CamMethod::HiResCam,
    ];

    /// The name the command line and reports use.
    pub fn name(self) -> &'static str {
        match self {
            CamMethod::GradCam => "gradcam",
            CamMethod::GradCamPlusPlus => "gradcam++",
            CamMethod::HiResCam => "hirescam",
        }
    }
}

impl fmt::Display for CamMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CamMethod {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        CamMethod::ALL
            .into_iter()
            .find(|method| method.name() == text)
            .ok_or_else(|| {
                format!("unknown GradCAM method {text:?}; use gradcam, gradcam++ or hirescam")
            })
    }
}

/// How a layer-resolution map is resized to the input's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upsampling {
    /// Bilinear with half-pixel centres: OpenCV's `INTER_LINEAR`, torch's
    /// `align_corners=False` (pytorch-grad-cam, torch-cam).
    #[default]
    Bilinear,
    /// Bilinear with the corner pixels aligned: torch's `align_corners=True`, SciPy's
    /// `ndimage.zoom(order=1)` (tf-keras-vis).
    BilinearCorners,
    /// Nearest neighbour, torch's `nearest` (Captum's default).
    Nearest,
    /// Bicubic with half-pixel centres and torch's A = −0.75; it overshoots, and the result is
    /// not clipped (the Keras example upsamples bicubically, on colours).
    Bicubic,
}

impl Upsampling {
    /// Every convention, default first.
    pub const ALL: [Upsampling; 4] = [
        Upsampling::Bilinear,
        Upsampling::BilinearCorners,
        Upsampling::Nearest,
        Upsampling::Bicubic,
    ];

    /// The name the command line and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Upsampling::Bilinear => "bilinear",
            Upsampling::BilinearCorners => "bilinear-corners",
            Upsampling::Nearest => "nearest",
            Upsampling::Bicubic => "bicubic",
        }
    }
}

impl FromStr for Upsampling {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Upsampling::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| {
                format!("unknown upsampling {text:?}; use bilinear, bilinear-corners, nearest or bicubic")
            })
    }
}

/// How a map is scaled to [0, 1] before it is compared or shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MapScaling {
    /// `(x − min) / (max − min + ε)`, ε = 1e-7 (pytorch-grad-cam's `scale_cam_image`).
    #[default]
    MinMax,
    /// `x / max`, no minimum subtracted (the Keras example), guarded by the same ε.
    Max,
}

impl MapScaling {
    /// Both conventions, default first.
    pub const ALL: [MapScaling; 2] = [MapScaling::MinMax, MapScaling::Max];

    /// The name the command line and reports use.
    pub fn name(self) -> &'static str {
        match self {
            MapScaling::MinMax => "min-max",
            MapScaling::Max => "max",
        }
    }
}

impl FromStr for MapScaling {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        MapScaling::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| format!("unknown normalisation {text:?}; use min-max or max"))
    }
}

/// The ε that keeps normalisation finite, pytorch-grad-cam's.
pub const SCALING_EPSILON: f32 = 1e-7;

/// Everything that turns activations and gradients into a heatmap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CamSettings {
    /// Channel weighting.
    pub method: CamMethod,
    /// Whether negative evidence is cut (on in GradCAM's paper and pytorch-grad-cam; off in
    /// Captum's default).
    pub relu: bool,
    /// How the map is resized to the input.
    pub upsampling: Upsampling,
    /// How the map is scaled to [0, 1].
    pub scaling: MapScaling,
}

impl CamSettings {
    /// pytorch-grad-cam's defaults with the given method: ReLU on, half-pixel bilinear,
    /// min–max.
    pub fn new(method: CamMethod) -> Self {
        CamSettings {
            method,
            relu: true,
            upsampling: Upsampling::Bilinear,
            scaling: MapScaling::MinMax,
        }
    }
}

/// One image's class-activation map at the target layer's resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct RawCam {
    /// The channel weights: α_k for GradCAM and GradCAM++; the gradient's spatial mean for
    /// HiResCAM, whose map does not use it, but whose agreement it still measures.
    pub weights: Array1<f32>,
    /// The weighted sum over channels before the ReLU, `[h, w]`.
    pub signed: Array2<f32>,
}

impl RawCam {
    /// The map with the ReLU applied when `relu` is set.
    pub fn map(&self, relu: bool) -> Array2<f32> {
        if relu {
            self.signed.mapv(|value| value.max(0.0))
        } else {
            self.signed.clone()
        }
    }
}

/// The raw maps of every image of `cam` with `method`.
pub fn raw_maps(cam: &GradCam, method: CamMethod) -> Vec<RawCam> {
    cam.activations
        .outer_iter()
        .zip(cam.gradients.outer_iter())
        .map(|(activations, gradients)| raw_map(activations, gradients, method))
        .collect()
}

/// One image's raw map from its activations and gradients, both `[C, h, w]`.
pub fn raw_map(
    activations: ArrayView3<f32>,
    gradients: ArrayView3<f32>,
    method: CamMethod,
) -> RawCam {
    let (_, height, width) = activations.dim();
    let positions = (height * width).max(1) as f64;
    let gradient_means: Array1<f32> = gradients
        .outer_iter()
        .map(|channel| (channel.iter().map(|&g| f64::from(g)).sum::<f64>() / positions) as f32)
        .collect();
    let weights = match method {
        CamMethod::GradCam | CamMethod::HiResCam => gradient_means,
        CamMethod::GradCamPlusPlus => plus_plus_weights(activations, gradients),
    };
    let mut signed = Array2::<f64>::zeros((height, width));
    match method {
        CamMethod::GradCam | CamMethod::GradCamPlusPlus => {
            for (channel, &weight) in activations.outer_iter().zip(weights.iter()) {
                signed.scaled_add(f64::from(weight), &channel.mapv(f64::from));
            }
        }
        CamMethod::HiResCam => {
            for (channel, gradient) in activations.outer_iter().zip(gradients.outer_iter()) {
                Zip::from(&mut signed)
                    .and(channel)
                    .and(gradient)
                    .for_each(|sum, &a, &g| *sum += f64::from(a) * f64::from(g));
            }
        }
    }
    RawCam {
        weights,
        signed: signed.mapv(|value| value as f32),
    }
}

/// GradCAM++'s channel weights, as pytorch-grad-cam computes them (the exponential of the
/// score taken as the score itself, so that powers of the gradient stand in for the higher
/// derivatives): `a_ij = g² / (2g² + Σ_ij A · g³ + ε)` with its ε = 1e-6, zero where `g = 0`, and
/// `w_k = Σ_ij max(g, 0) · a_ij`.
fn plus_plus_weights(activations: ArrayView3<f32>, gradients: ArrayView3<f32>) -> Array1<f32> {
    const EPSILON: f64 = 1e-6;
    activations
        .outer_iter()
        .zip(gradients.outer_iter())
        .map(|(channel, gradient)| {
            let activation_sum: f64 = channel.iter().map(|&a| f64::from(a)).sum();
            let weight: f64 = gradient
                .iter()
                .map(|&g| {
                    let g = f64::from(g);
                    if g == 0.0 {
                        return 0.0;
                    }
                    let g2 = g * g;
                    let alpha = g2 / (2.0 * g2 + activation_sum * g2 * g + EPSILON);
                    g.max(0.0) * alpha
                })
                .sum();
            weight as f32
        })
        .collect()
}

/// A map scaled to [0, 1], or a note that it had nothing to scale.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaledMap {
    /// The scaled map; all zeros when the map was flat.
    pub values: Array2<f32>,
    /// Whether the map had no variation at all (max = min), as the ReLU can leave an
    /// untrained network's map. A flat map is reported as flat, never as NaN.
    pub flat: bool,
}

/// Scales `map` to [0, 1] by `scaling`.
pub fn scale(map: ArrayView2<f32>, scaling: MapScaling) -> ScaledMap {
    let (min, max) = map
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if map.is_empty() || !(max > min) {
        return ScaledMap {
            values: Array2::zeros(map.raw_dim()),
            flat: true,
        };
    }
    let values = match scaling {
        MapScaling::MinMax => map.mapv(|v| (v - min) / (max - min + SCALING_EPSILON)),
        MapScaling::Max => map.mapv(|v| v / (max + SCALING_EPSILON)),
    };
    ScaledMap {
        values,
        flat: false,
    }
}

/// Resizes `map` to `[height, width]` by `mode`, separably (rows, then columns).
pub fn upsample(
    map: ArrayView2<f32>,
    [height, width]: [usize; 2],
    mode: Upsampling,
) -> Array2<f32> {
    let (in_height, in_width) = map.dim();
    if in_height == 0 || in_width == 0 {
        return Array2::zeros((height, width));
    }
    let rows = taps(in_height, height, mode);
    let columns = taps(in_width, width, mode);
    // First along the height, then along the width; each tap list is a weighted sum of sources.
    let mut tall = Array2::<f64>::zeros((height, in_width));
    for (out_row, row_taps) in tall.outer_iter_mut().zip(&rows) {
        let mut out_row = out_row;
        for &(source, weight) in row_taps {
            out_row.scaled_add(weight, &map.row(source).mapv(f64::from));
        }
    }
    let mut out = Array2::<f32>::zeros((height, width));
    for (out_column, column_taps) in out.axis_iter_mut(Axis(1)).zip(&columns) {
        let mut out_column = out_column;
        let mut sum = ndarray::Array1::<f64>::zeros(height);
        for &(source, weight) in column_taps {
            sum.scaled_add(weight, &tall.column(source));
        }
        out_column.assign(&sum.mapv(|v| v as f32));
    }
    out
}

/// For each output position along one axis, the source positions and their weights.
fn taps(input: usize, output: usize, mode: Upsampling) -> Vec<Vec<(usize, f64)>> {
    let scale = input as f64 / output as f64;
    let last = input - 1;
    (0..output)
        .map(|out| match mode {
            Upsampling::Nearest => {
                vec![(((out as f64 * scale).floor() as usize).min(last), 1.0)]
            }
            Upsampling::Bilinear | Upsampling::BilinearCorners => {
                let source = if mode == Upsampling::Bilinear {
                    // Half-pixel centres; torch clamps the left border to 0.
                    ((out as f64 + 0.5) * scale - 0.5).max(0.0)
                } else if output > 1 {
                    out as f64 * last as f64 / (output - 1) as f64
                } else {
                    0.0
                };
                let low = (source.floor() as usize).min(last);
                let high = (low + 1).min(last);
                let lambda = source - low as f64;
                vec![(low, 1.0 - lambda), (high, lambda)]
            }
            Upsampling::Bicubic => {
                let source = (out as f64 + 0.5) * scale - 0.5;
                let floor = source.floor();
                let t = source - floor;
                (-1..=2)
                    .map(|offset| {
                        let index = (floor as i64 + offset).clamp(0, last as i64) as usize;
                        (index, cubic_weight(t - offset as f64))
                    })
                    .collect()
            }
        })
        .collect()
}

/// The cubic convolution kernel with torch's A = −0.75, at distance `x`.
fn cubic_weight(x: f64) -> f64 {
    const A: f64 = -0.75;
    let x = x.abs();
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// A raw map taken through the whole post-processing: ReLU (when set), upsampling to `size`,
/// then scaling. The order is torch-cam's and tf-keras-vis's (scale after resizing), which
/// keeps the scaled map in [0, 1] whatever the upsampling overshoots.
pub fn postprocess(raw: &RawCam, size: [usize; 2], settings: &CamSettings) -> ScaledMap {
    let map = raw.map(settings.relu);
    let upsampled = upsample(map.view(), size, settings.upsampling);
    scale(upsampled.view(), settings.scaling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, array};

    fn cam_of(activations: Array3<f32>, gradients: Array3<f32>) -> GradCam {
        GradCam {
            activations: activations.insert_axis(Axis(0)),
            gradients: gradients.insert_axis(Axis(0)),
        }
    }

    #[test]
    fn gradcam_weights_channels_by_mean_gradient() {
        let activations = Array3::from_shape_vec((2, 1, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let gradients = Array3::from_shape_vec((2, 1, 2), vec![1.0, 3.0, -1.0, -1.0]).unwrap();
        let raw = &raw_maps(&cam_of(activations, gradients), CamMethod::GradCam)[0];
        assert_eq!(raw.weights, array![2.0, -1.0]);
        // 2·[1, 2] − 1·[3, 4] = [−1, 0].
        assert_eq!(raw.signed, array![[-1.0, 0.0]]);
        assert_eq!(raw.map(true), array![[0.0, 0.0]]);
    }

    #[test]
    fn hirescam_multiplies_element_wise() {
        let activations = Array3::from_shape_vec((2, 1, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let gradients = Array3::from_shape_vec((2, 1, 2), vec![1.0, 3.0, -1.0, -1.0]).unwrap();
        let raw = &raw_maps(&cam_of(activations, gradients), CamMethod::HiResCam)[0];
        // [1·1 − 3, 2·3 − 4] = [−2, 2].
        assert_eq!(raw.signed, array![[-2.0, 2.0]]);
    }

    #[test]
    fn gradcam_plus_plus_ignores_negative_gradients() {
        let activations = Array3::from_elem((1, 1, 2), 1.0);
        let gradients = Array3::from_shape_vec((1, 1, 2), vec![2.0, -5.0]).unwrap();
        let raw = &raw_maps(&cam_of(activations, gradients), CamMethod::GradCamPlusPlus)[0];
        // g = 2: a = 4 / (8 + 2·8) = 1/6; w = 2/6. g = −5 contributes nothing.
        assert!(
            (raw.weights[0] - 1.0 / 3.0).abs() < 1e-6,
            "{}",
            raw.weights[0]
        );
    }

    #[test]
    fn a_flat_map_is_flat_not_nan() {
        let scaled = scale(Array2::<f32>::zeros((7, 7)).view(), MapScaling::MinMax);
        assert!(scaled.flat);
        assert!(scaled.values.iter().all(|&v| v == 0.0));
        let scaled = scale(array![[0.0, 2.0]].view(), MapScaling::MinMax);
        assert!(!scaled.flat);
        assert!((scaled.values[[0, 1]] - 1.0).abs() < 1e-6);
    }

    /// Values from `torch.nn.functional.interpolate` on `[[0, 1], [2, 3]]` to 4×4.
    #[test]
    fn upsampling_matches_torch() {
        let map = array![[0.0f32, 1.0], [2.0, 3.0]];
        let half_pixel = upsample(map.view(), [4, 4], Upsampling::Bilinear);
        assert_eq!(half_pixel.row(0).to_vec(), vec![0.0, 0.25, 0.75, 1.0]);
        assert_eq!(half_pixel.column(0).to_vec(), vec![0.0, 0.5, 1.5, 2.0]);
        let corners = upsample(map.view(), [4, 4], Upsampling::BilinearCorners);
        let third = 1.0f32 / 3.0;
        for (got, want) in corners.row(0).iter().zip([0.0, third, 2.0 * third, 1.0]) {
            assert!((got - want).abs() < 1e-6);
        }
        let nearest = upsample(map.view(), [4, 4], Upsampling::Nearest);
        assert_eq!(nearest.row(3).to_vec(), vec![2.0, 2.0, 3.0, 3.0]);
        // torch.nn.functional.interpolate(mode="bicubic", align_corners=False), row by row.
        let bicubic = upsample(map.view(), [4, 4], Upsampling::Bicubic);
        let expected = [
            -0.31640625f32,
            0.015625,
            0.5625,
            0.89453125,
            0.34765625,
            0.6796875,
            1.2265625,
            1.55859375,
            1.44140625,
            1.7734375,
            2.3203125,
            2.65234375,
            2.10546875,
            2.4375,
            2.984375,
            3.31640625,
        ];
        for (got, want) in bicubic.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{bicubic:?}");
        }
    }

    #[test]
    fn upsampling_to_the_same_size_is_the_identity() {
        let map = array![[0.0f32, 1.0, 5.0], [2.0, 3.0, -1.0]];
        for mode in Upsampling::ALL {
            assert_eq!(upsample(map.view(), [2, 3], mode), map, "{mode:?}");
        }
    }
}

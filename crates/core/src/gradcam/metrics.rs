//! Numbers that compare heatmaps: agreement between two maps, the spread behind "broad" and
//! "focused", localisation against a known box, and faithfulness by deletion and insertion.
//!
//! Definitions follow Quantus (`similarity_func`, `complexity_func`), RISE's `evaluation.py`
//! and Score-CAM's energy pointing game; `../docs/gradcam.md` gives the formulas. A number that
//! has no meaning for a map (the entropy of an all-zero map, the correlation with a flat one) is
//! `None`, never NaN.

use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayView4, Axis, s};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::data::BoundingBox;

/// The top-k fractions whose intersection over union [`Agreement`] reports: 5, 10 and 20%.
pub const TOP_K_FRACTIONS: [f64; 3] = [0.05, 0.10, 0.20];

/// How alike two maps of the same size are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Pearson's r; `None` when either map is constant.
    pub pearson: Option<f64>,
    /// Spearman's ρ (Pearson's r of the ranks, ties averaged); `None` when either is constant.
    pub spearman: Option<f64>,
    /// Intersection over union of the top 5, 10 and 20% of positions ([`TOP_K_FRACTIONS`]).
    pub top_k_iou: [f64; 3],
    /// The largest absolute difference between the two maps, as given (scale them alike first).
    pub max_abs_difference: f64,
}

/// Compares two maps of the same shape.
///
/// # Panics
/// When the shapes differ: callers compare maps of one model at one layer.
pub fn agreement(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Agreement {
    assert_eq!(a.dim(), b.dim(), "maps of different shapes");
    let a: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    Agreement {
        pearson: pearson(&a, &b),
        spearman: spearman(&a, &b),
        top_k_iou: TOP_K_FRACTIONS.map(|fraction| top_k_iou(&a, &b, fraction)),
        max_abs_difference: a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max),
    }
}

/// Pearson's correlation of two equally long series; `None` when either is constant or empty.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len().min(b.len());
    if n == 0 {
        return None;
    }
    let mean = |x: &[f64]| x[..n].iter().sum::<f64>() / n as f64;
    let (mean_a, mean_b) = (mean(a), mean(b));
    let (mut covariance, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a[..n].iter().zip(&b[..n]) {
        let (dx, dy) = (x - mean_a, y - mean_b);
        covariance += dx * dy;
        var_a += dx * dx;
        var_b += dy * dy;
    }
    (var_a > 0.0 && var_b > 0.0).then(|| (covariance / (var_a * var_b).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's rank correlation: Pearson's r of the ranks, tied values sharing their mean rank.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    pearson(&ranks(a), &ranks(b))
}

/// 1-based ranks, ties averaged (SciPy's `rankdata(method="average")`).
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0;
        for &index in &order[start..end] {
            ranks[index] = rank;
        }
        start = end;
    }
    ranks
}

/// The positions of the `ceil(fraction · N)` largest values, ties to the lower index.
fn top_positions(values: &[f64], fraction: f64) -> Vec<bool> {
    let count = ((fraction * values.len() as f64).ceil() as usize).clamp(1, values.len().max(1));
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[j].total_cmp(&values[i]).then(i.cmp(&j)));
    let mut chosen = vec![false; values.len()];
    for &index in order.iter().take(count) {
        chosen[index] = true;
    }
    chosen
}

fn top_k_iou(a: &[f64], b: &[f64], fraction: f64) -> f64 {
    let (top_a, top_b) = (top_positions(a, fraction), top_positions(b, fraction));
    let both = top_a.iter().zip(&top_b).filter(|(x, y)| **x && **y).count();
    let either = top_a.iter().zip(&top_b).filter(|(x, y)| **x || **y).count();
    if either == 0 {
        1.0
    } else {
        both as f64 / either as f64
    }
}

/// How spread out a non-negative map is: the numbers behind "broad" and "focused".
///
/// Every field is `None` for a map whose values sum to zero (a flat map after the ReLU).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// `−Σ p log p / log N` with `p = a / Σa`: 1 for a uniform map, 0 for a single point.
    pub entropy: Option<f64>,
    /// The Gini coefficient of the values: 0 for a uniform map, near 1 for a single point.
    pub gini: Option<f64>,
    /// The fraction of positions at or above half the maximum.
    pub area_above_half: Option<f64>,
    /// The participation ratio `(Σa)² / (N Σa²)`: the fraction of positions that effectively
    /// carry the map.
    pub participation_ratio: Option<f64>,
}

/// The spread of `map`; negative values count as zero (they are evidence against the class).
pub fn spread(map: ArrayView2<f32>) -> Spread {
    let values: Vec<f64> = map.iter().map(|&v| f64::from(v).max(0.0)).collect();
    let n = values.len();
    let total: f64 = values.iter().sum();
    if n == 0 || !(total > 0.0) {
        return Spread::default();
    }
    let entropy = if n > 1 {
        let h: f64 = values
            .iter()
            .filter(|&&v| v > 0.0)
            .map(|&v| {
                let p = v / total;
                -p * p.ln()
            })
            .sum();
        h / (n as f64).ln()
    } else {
        0.0
    };
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let gini = sorted
        .iter()
        .enumerate()
        .map(|(i, &v)| (2.0 * (i as f64 + 1.0) - n as f64 - 1.0) * v)
        .sum::<f64>()
        / (n as f64 * total);
    let max = sorted[n - 1];
    let area = values.iter().filter(|&&v| v >= 0.5 * max).count() as f64 / n as f64;
    let squares: f64 = values.iter().map(|v| v * v).sum();
    Spread {
        entropy: Some(entropy),
        gini: Some(gini),
        area_above_half: Some(area),
        participation_ratio: Some(total * total / (n as f64 * squares)),
    }
}

/// The share of a non-negative map's energy inside `bbox` (the energy pointing game); `None`
/// for an all-zero map.
pub fn energy_pointing_game(map: ArrayView2<f32>, bbox: &BoundingBox) -> Option<f64> {
    let total: f64 = map.iter().map(|&v| f64::from(v).max(0.0)).sum();
    if !(total > 0.0) {
        return None;
    }
    let inside: f64 = map
        .slice(s![bbox.top..bbox.bottom(), bbox.left..bbox.right()])
        .iter()
        .map(|&v| f64::from(v).max(0.0))
        .sum();
    Some(inside / total)
}

/// Whether the map's largest value (the first, in row-major order) lies inside `bbox`; `None`
/// for a constant map, whose maximum is everywhere.
pub fn argmax_hit(map: ArrayView2<f32>, bbox: &BoundingBox) -> Option<bool> {
    let (_, width) = map.dim();
    let mut best: Option<(usize, f32)> = None;
    let mut constant = true;
    for (index, &value) in map.iter().enumerate() {
        match best {
            Some((_, top)) if value <= top => constant &= value == top,
            Some(_) => {
                constant = false;
                best = Some((index, value));
            }
            None => best = Some((index, value)),
        }
    }
    let (index, _) = best?;
    if constant {
        return None;
    }
    Some(bbox.contains(index / width, index % width))
}

/// What removed pixels become in the deletion test, and where the insertion test starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Substrate {
    /// Zeros (RISE's deletion substrate).
    Zeros,
    /// The image blurred with an 11-tap Gaussian of σ = 5 (RISE's insertion substrate).
    Blur,
}

/// One deletion or insertion curve: the class probability at each step and its area.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// What the removed or not-yet-inserted pixels were.
    pub substrate: Substrate,
    /// The softmax probability of the class after 0, 1, …, `steps` steps.
    pub scores: Vec<f64>,
    /// `(Σ s_i − s_0/2 − s_n/2) / n`, the trapezoidal area over [0, 1].
    pub auc: f64,
}

/// Deletion and insertion (RISE) for one image and its saliency map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Faithfulness {
    /// Pixels replaced by zeros in decreasing saliency: lower is better.
    pub deletion: Curve,
    /// Pixels copied onto a blurred image in decreasing saliency: higher is better.
    pub insertion: Curve,
}

/// Runs deletion and insertion for `image` `[C, H, W]`, ordered by `saliency` `[H, W]`, for
/// `class`, over `steps` steps, with `predict` giving logits for a batch of images.
///
/// Each step moves `ceil(H·W / steps)` pixels (all channels), most salient first, ties to the
/// lower index. The `2·(steps + 1)` images go through `predict` in batches of `batch`.
pub fn faithfulness(
    image: ArrayView3<f32>,
    saliency: ArrayView2<f32>,
    class: usize,
    steps: usize,
    batch: usize,
    predict: &mut dyn FnMut(ArrayView4<f32>) -> Result<Array2<f32>>,
) -> Result<Faithfulness> {
    let (channels, height, width) = image.dim();
    let pixels = height * width;
    let steps = steps.clamp(1, pixels.max(1));
    let per_step = pixels.div_ceil(steps);
    let mut order: Vec<usize> = (0..pixels).collect();
    let flat: Vec<f32> = saliency.iter().copied().collect();
    order.sort_by(|&i, &j| flat[j].total_cmp(&flat[i]).then(i.cmp(&j)));

    let blurred = blur(image);
    let mut deleted = image.to_owned();
    let mut inserted = blurred.clone();
    let mut frames = Array4::<f32>::zeros((2 * (steps + 1), channels, height, width));
    for step in 0..=steps {
        if step > 0 {
            for &pixel in order.iter().skip((step - 1) * per_step).take(per_step) {
                let (row, column) = (pixel / width, pixel % width);
                for channel in 0..channels {
                    deleted[[channel, row, column]] = 0.0;
                    inserted[[channel, row, column]] = image[[channel, row, column]];
                }
            }
        }
        frames.index_axis_mut(Axis(0), step).assign(&deleted);
        frames
            .index_axis_mut(Axis(0), steps + 1 + step)
            .assign(&inserted);
    }
    let mut probabilities = Vec::with_capacity(frames.dim().0);
    for start in (0..frames.dim().0).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(frames.dim().0);
        let logits = predict(frames.slice(s![start..end, .., .., ..]))?;
        probabilities.extend(
            logits
                .outer_iter()
                .map(|row| softmax_probability(&row.to_vec(), class)),
        );
    }
    let curve = |substrate, scores: &[f64]| Curve {
        substrate,
        auc: area(scores),
        scores: scores.to_vec(),
    };
    Ok(Faithfulness {
        deletion: curve(Substrate::Zeros, &probabilities[..=steps]),
        insertion: curve(Substrate::Blur, &probabilities[steps + 1..]),
    })
}

/// The softmax probability of `class` in one row of logits, computed in `f64` with the row's
/// maximum subtracted; NaN when `class` is not in the row.
pub fn softmax_probability(row: &[f32], class: usize) -> f64 {
    let max = row
        .iter()
        .map(|&v| f64::from(v))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    row.get(class)
        .map_or(f64::NAN, |&v| (f64::from(v) - max).exp() / sum)
}

/// RISE's area: the trapezoidal rule over `n` equal steps spanning [0, 1].
fn area(scores: &[f64]) -> f64 {
    let n = scores.len().saturating_sub(1);
    if n == 0 {
        return scores.first().copied().unwrap_or(0.0);
    }
    (scores.iter().sum::<f64>() - scores[0] / 2.0 - scores[n] / 2.0) / n as f64
}

/// The image blurred channel by channel with RISE's kernel: 11 taps, σ = 5, zero padding.
fn blur(image: ArrayView3<f32>) -> Array3<f32> {
    const RADIUS: i64 = 5;
    const SIGMA: f64 = 5.0;
    let kernel: Vec<f64> = (-RADIUS..=RADIUS)
        .map(|x| (-(x * x) as f64 / (2.0 * SIGMA * SIGMA)).exp())
        .collect();
    let norm: f64 = kernel.iter().sum();
    let kernel: Vec<f64> = kernel.iter().map(|k| k / norm).collect();
    let (channels, height, width) = image.dim();
    let mut out = Array3::<f32>::zeros((channels, height, width));
    for channel in 0..channels {
        let plane = image.index_axis(Axis(0), channel);
        let mut rows = Array2::<f64>::zeros((height, width));
        for ((row, column), value) in rows.indexed_iter_mut() {
            *value = (-RADIUS..=RADIUS)
                .zip(&kernel)
                .filter_map(|(offset, weight)| {
                    let source = column as i64 + offset;
                    (0..width as i64)
                        .contains(&source)
                        .then(|| weight * f64::from(plane[[row, source as usize]]))
                })
                .sum();
        }
        for ((row, column), value) in out.index_axis_mut(Axis(0), channel).indexed_iter_mut() {
            *value = (-RADIUS..=RADIUS)
                .zip(&kernel)
                .filter_map(|(offset, weight)| {
                    let source = row as i64 + offset;
                    (0..height as i64)
                        .contains(&source)
                        .then(|| weight * rows[[source as usize, column]])
                })
                .sum::<f64>() as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, array};

    /// Values checked with `scipy.stats.pearsonr` and `spearmanr`.
    #[test]
    fn correlations_match_scipy() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [2.0, 1.0, 4.0, 3.0, 7.0];
        assert!((pearson(&a, &b).unwrap() - 0.824_163_383_692_134).abs() < 1e-9);
        assert!((spearman(&a, &b).unwrap() - 0.8).abs() < 1e-12);
        // Ties share their mean rank: rankdata([1, 1, 2]) = [1.5, 1.5, 3].
        assert_eq!(ranks(&[1.0, 1.0, 2.0]), vec![1.5, 1.5, 3.0]);
        assert_eq!(pearson(&a, &[1.0; 5]), None);
    }

    #[test]
    fn identical_maps_agree_fully() {
        let map = array![[0.0f32, 0.5, 1.0], [0.25, 0.75, 0.1]];
        let same = agreement(map.view(), map.view());
        assert_eq!(same.pearson, Some(1.0));
        assert_eq!(same.top_k_iou, [1.0; 3]);
        assert_eq!(same.max_abs_difference, 0.0);
        let flipped = map.slice(s![.., ..;-1]).to_owned();
        assert!(agreement(map.view(), flipped.view()).pearson.unwrap() < 0.9);
    }

    #[test]
    fn spread_separates_broad_from_focused() {
        let broad = Array2::<f32>::ones((4, 4));
        let mut focused = Array2::<f32>::zeros((4, 4));
        focused[[1, 2]] = 1.0;
        let broad = spread(broad.view());
        let focused = spread(focused.view());
        assert!((broad.entropy.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(focused.entropy, Some(0.0));
        assert!(broad.gini.unwrap().abs() < 1e-12);
        // One of N positions carries everything: G = (N − 1) / N.
        assert!((focused.gini.unwrap() - 15.0 / 16.0).abs() < 1e-12);
        assert_eq!(broad.area_above_half, Some(1.0));
        assert_eq!(focused.participation_ratio, Some(1.0 / 16.0));
        assert_eq!(
            spread(Array2::<f32>::zeros((2, 2)).view()),
            Spread::default()
        );
    }

    #[test]
    fn localisation_reads_rows_as_rows() {
        let mut map = Array2::<f32>::zeros((8, 8));
        map[[1, 6]] = 3.0;
        map[[6, 1]] = 1.0;
        let bbox = BoundingBox {
            top: 0,
            left: 4,
            height: 3,
            width: 4,
        };
        assert_eq!(energy_pointing_game(map.view(), &bbox), Some(0.75));
        assert_eq!(argmax_hit(map.view(), &bbox), Some(true));
        let transposed = map.t().to_owned();
        assert_eq!(argmax_hit(transposed.view(), &bbox), Some(false));
        assert_eq!(argmax_hit(Array2::<f32>::zeros((8, 8)).view(), &bbox), None);
    }

    /// A "model" whose class-0 logit is the sum of the image: deletion in saliency order
    /// drops it fastest, and a saliency that points at the bright pixels beats its reverse.
    #[test]
    fn deletion_prefers_the_pixels_that_matter() {
        let mut image = Array3::<f32>::zeros((1, 4, 4));
        image[[0, 0, 0]] = 4.0;
        image[[0, 3, 3]] = 4.0;
        let mut predict = |batch: ArrayView4<f32>| -> Result<Array2<f32>> {
            let sums: Array1<f32> = batch.outer_iter().map(|image| image.sum()).collect();
            let mut logits = Array2::<f32>::zeros((batch.dim().0, 2));
            logits.column_mut(0).assign(&sums);
            Ok(logits)
        };
        let good = image.index_axis(Axis(0), 0).to_owned();
        let bad = good.mapv(|v| -v);
        let good = faithfulness(image.view(), good.view(), 0, 8, 5, &mut predict).unwrap();
        let bad = faithfulness(image.view(), bad.view(), 0, 8, 5, &mut predict).unwrap();
        assert_eq!(good.deletion.scores.len(), 9);
        assert!(good.deletion.auc < bad.deletion.auc);
        assert!(good.insertion.auc > bad.insertion.auc);
        // Everything deleted: both logits 0, probability 1/2.
        assert!((good.deletion.scores[8] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn blur_keeps_a_constant_interior_and_its_mass_inside() {
        let image = Array3::<f32>::ones((1, 21, 21));
        let blurred = blur(image.view());
        assert!((blurred[[0, 10, 10]] - 1.0).abs() < 1e-6);
        assert!(blurred[[0, 0, 0]] < 0.5);
    }
}

//! Loss, accuracy, precision, recall and F1, computed by core from logits for every backend.
//!
//! Metrics never come from an engine: each backend hands back logits, and the numbers in a run
//! record are computed here from them, identically for all. The definitions follow
//! scikit-learn's `classification_report` with `labels=range(K)` and `zero_division=0`: a ratio
//! whose denominator is zero counts as 0.0, and averages run over all `K` classes, including
//! classes that neither occur nor are predicted.

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

/// Mean softmax cross-entropy of `logits` `[N, K]` against class indices `labels` `[N]`.
///
/// Each row is computed in `f64` as `logsumexp(row) - row[label]`, with the row's maximum
/// subtracted before exponentiating, so large logits neither overflow nor lose precision.
/// Returns NaN when there is nothing to average (no rows, no columns), when the row and label
/// counts differ, or when a label is not below `K`: those are bugs upstream, and NaN makes them
/// visible in a record rather than hiding them in a plausible number.
pub fn cross_entropy(logits: ArrayView2<f32>, labels: ArrayView1<u32>) -> f64 {
    let (rows, classes) = logits.dim();
    if rows == 0 || classes == 0 || rows != labels.len() {
        return f64::NAN;
    }
    let mut total = 0.0f64;
    for (row, &label) in logits.outer_iter().zip(labels.iter()) {
        let Some(&target) = row.get(label as usize) else {
            return f64::NAN;
        };
        let max = row
            .iter()
            .map(|&x| f64::from(x))
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
        total += max + sum.ln() - f64::from(target);
    }
    total / rows as f64
}

/// The index of the largest logit in each row.
///
/// Ties go to the lowest index, and a NaN counts as larger than any number (the first NaN
/// wins), as in NumPy's and PyTorch's `argmax`. A row with no columns gives 0.
pub fn argmax_rows(logits: ArrayView2<f32>) -> Vec<u32> {
    logits
        .outer_iter()
        .map(|row| {
            let mut best = 0usize;
            let mut best_value = f32::NEG_INFINITY;
            for (index, &value) in row.iter().enumerate() {
                if value.is_nan() {
                    best = index;
                    break;
                }
                if index == 0 || value > best_value {
                    best = index;
                    best_value = value;
                }
            }
            u32::try_from(best).unwrap_or(u32::MAX)
        })
        .collect()
}

/// Counts of (true class, predicted class) pairs: rows are true classes, columns predicted ones.
///
/// Serialised as a nested array, `[[50, 2], [3, 45]]`; deserialising checks that it is square.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<Vec<u64>>", try_from = "Vec<Vec<u64>>")]
pub struct ConfusionMatrix {
    counts: Vec<Vec<u64>>,
}

impl From<ConfusionMatrix> for Vec<Vec<u64>> {
    fn from(matrix: ConfusionMatrix) -> Self {
        matrix.counts
    }
}

impl TryFrom<Vec<Vec<u64>>> for ConfusionMatrix {
    type Error = String;

    fn try_from(counts: Vec<Vec<u64>>) -> Result<Self, Self::Error> {
        let k = counts.len();
        match counts.iter().position(|row| row.len() != k) {
            Some(row) => Err(format!(
                "a confusion matrix must be square: row {row} has {} entries, expected {k}",
                counts.get(row).map_or(0, Vec::len)
            )),
            None => Ok(ConfusionMatrix { counts }),
        }
    }
}

impl ConfusionMatrix {
    /// An all-zero matrix for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        ConfusionMatrix {
            counts: vec![vec![0; num_classes]; num_classes],
        }
    }

    /// Counts `labels` against `predictions`, pair by pair.
    ///
    /// The matrix has `num_classes` rows and columns, or more when a label or prediction is
    /// not below `num_classes`: it grows to hold it rather than drop it, so that a model with
    /// the wrong number of outputs shows up as an odd-shaped matrix instead of a silent loss
    /// of counts. Pairs past the end of the shorter input are ignored.
    pub fn from_predictions(
        labels: ArrayView1<u32>,
        predictions: &[u32],
        num_classes: usize,
    ) -> Self {
        let largest = labels
            .iter()
            .chain(predictions)
            .map(|&class| class as usize + 1)
            .max()
            .unwrap_or(0);
        let mut matrix = ConfusionMatrix::new(num_classes.max(largest));
        for (&label, &prediction) in labels.iter().zip(predictions) {
            matrix.add(label, prediction);
        }
        matrix
    }

    /// Adds one (true class, predicted class) pair, growing the matrix if a class is new.
    pub fn add(&mut self, label: u32, prediction: u32) {
        let needed = (label.max(prediction) as usize) + 1;
        if needed > self.counts.len() {
            for row in &mut self.counts {
                row.resize(needed, 0);
            }
            self.counts.resize(needed, vec![0; needed]);
        }
        if let Some(cell) = self
            .counts
            .get_mut(label as usize)
            .and_then(|row| row.get_mut(prediction as usize))
        {
            *cell += 1;
        }
    }

    /// The number of classes (rows, and columns).
    pub fn num_classes(&self) -> usize {
        self.counts.len()
    }

    /// The rows: `rows()[true_class][predicted_class]`.
    pub fn rows(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// The count of examples of `label` predicted as `prediction`; 0 outside the matrix.
    pub fn get(&self, label: usize, prediction: usize) -> u64 {
        self.counts
            .get(label)
            .and_then(|row| row.get(prediction))
            .copied()
            .unwrap_or(0)
    }

    /// The number of examples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// The number of correct predictions (the diagonal).
    pub fn correct(&self) -> u64 {
        (0..self.num_classes()).map(|k| self.get(k, k)).sum()
    }

    /// The number of examples whose true class is `class` (its row sum).
    pub fn support(&self, class: usize) -> u64 {
        self.counts.get(class).map_or(0, |row| row.iter().sum())
    }

    /// The number of examples predicted as `class` (its column sum).
    pub fn predicted(&self, class: usize) -> u64 {
        self.counts
            .iter()
            .map(|row| row.get(class).copied().unwrap_or(0))
            .sum()
    }
}

/// Precision, recall and F1 of one class, and how many examples it has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Of the examples predicted as this class, the fraction that are; 0 if none is predicted.
    #[serde(with = "crate::float")]
    pub precision: f64,
    /// Of the examples of this class, the fraction predicted as it; 0 if there are none.
    #[serde(with = "crate::float")]
    pub recall: f64,
    /// `2·tp / (2·tp + fp + fn)`, the harmonic mean of precision and recall; 0 when that is 0/0.
    #[serde(with = "crate::float")]
    pub f1: f64,
    /// The number of examples of this class.
    pub support: u64,
}

/// Precision, recall and F1 averaged over classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Averages {
    /// Averaged precision.
    #[serde(with = "crate::float")]
    pub precision: f64,
    /// Averaged recall.
    #[serde(with = "crate::float")]
    pub recall: f64,
    /// Averaged F1 (the average of the per-class F1s, not the F1 of the averages).
    #[serde(with = "crate::float")]
    pub f1: f64,
}

/// Accuracy and per-class and averaged precision, recall and F1, as scikit-learn's
/// `classification_report` gives them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Correct predictions over all examples; 0 when there are none.
    #[serde(with = "crate::float")]
    pub accuracy: f64,
    /// One entry per class, in class order.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean over all classes.
    pub macro_avg: Averages,
    /// Mean over classes weighted by support; its recall equals the accuracy.
    pub weighted_avg: Averages,
}

impl ClassificationReport {
    /// The report of a confusion matrix. Every ratio with a zero denominator is 0.0, which is
    /// scikit-learn's `zero_division=0` and its default behaviour apart from the warning.
    pub fn from_confusion(matrix: &ConfusionMatrix) -> Self {
        let k = matrix.num_classes();
        let per_class: Vec<ClassMetrics> = (0..k)
            .map(|class| {
                let tp = matrix.get(class, class);
                let support = matrix.support(class);
                let predicted = matrix.predicted(class);
                let false_positives = predicted - tp;
                let false_negatives = support - tp;
                ClassMetrics {
                    precision: ratio(tp, predicted),
                    recall: ratio(tp, support),
                    f1: ratio(2 * tp, 2 * tp + false_positives + false_negatives),
                    support,
                }
            })
            .collect();
        let total = matrix.total();
        let macro_avg = average(&per_class, |_| 1.0, k as f64);
        let weighted_avg = average(&per_class, |m| m.support as f64, total as f64);
        ClassificationReport {
            accuracy: ratio(matrix.correct(), total),
            per_class,
            macro_avg,
            weighted_avg,
        }
    }
}

/// `numerator / denominator`, or 0.0 when the denominator is 0.
fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// The weighted mean of each metric over classes, or zeros when the weights sum to zero.
fn average(per_class: &[ClassMetrics], weight: fn(&ClassMetrics) -> f64, sum: f64) -> Averages {
    if sum <= 0.0 {
        return Averages {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
        };
    }
    let mean = |metric: fn(&ClassMetrics) -> f64| {
        per_class.iter().map(|m| weight(m) * metric(m)).sum::<f64>() / sum
    };
    Averages {
        precision: mean(|m| m.precision),
        recall: mean(|m| m.recall),
        f1: mean(|m| m.f1),
    }
}

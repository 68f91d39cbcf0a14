//! Tests of `parallax_core::metrics` against hand-worked cases and properties on random data.

use anyhow::Result;
use ndarray::{Array1, Array2, array};
use parallax_core::metrics::{ClassificationReport, ConfusionMatrix, argmax_rows, cross_entropy};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};

/// Reports are ratios of integer counts, averaged over at most 12 classes or 200 examples in
/// f64: each is off by a few roundings of 1.1e-16, a thousandth of 1e-12 even summed over 200
/// terms. A count off by one, a macro average weighted by support, or precision and recall
/// swapped change a value by about 1/200 = 5e-3 or more on these sizes (several hundredths in
/// the hand-worked case of 10 examples), so exactness to 1e-12 costs no power.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {
        assert!(
            close($a, $b),
            "{} = {} but expected {}",
            stringify!($a),
            $a,
            $b
        )
    };
}

// === Hand-worked example ===
//
// labels:      0 0 0 0 1 1 1 2 2 2
// predictions: 0 0 1 2 1 1 0 2 2 1
//
// Confusion matrix (rows true, columns predicted):
//   class 0: [2, 1, 1]   support 4
//   class 1: [1, 2, 0]   support 3
//   class 2: [0, 1, 2]   support 3
// Column sums (predicted): 3, 4, 3. Correct: 6 of 10, so accuracy 0.6.
//
//   class 0: P = 2/3, R = 2/4 = 1/2, F1 = 2·2 / (2·2 + 1 + 2) = 4/7
//   class 1: P = 2/4 = 1/2, R = 2/3, F1 = 4 / (4 + 2 + 1) = 4/7
//   class 2: P = 2/3, R = 2/3, F1 = 4 / (4 + 1 + 1) = 2/3
//
//   macro:    P = (2/3 + 1/2 + 2/3) / 3 = 11/18, R = 11/18, F1 = (4/7 + 4/7 + 2/3) / 3 = 38/63
//   weighted: P = (4·2/3 + 3·1/2 + 3·2/3) / 10 = 37/60, R = (2 + 2 + 2) / 10 = 3/5,
//             F1 = (4·4/7 + 3·4/7 + 3·2/3) / 10 = 3/5

fn worked_example() -> ConfusionMatrix {
    let labels = array![0u32, 0, 0, 0, 1, 1, 1, 2, 2, 2];
    let predictions = [0u32, 0, 1, 2, 1, 1, 0, 2, 2, 1];
    ConfusionMatrix::from_predictions(labels.view(), &predictions, 3)
}

#[test]
fn confusion_matrix_of_the_worked_example() {
    let matrix = worked_example();
    assert_eq!(
        matrix.rows(),
        &[vec![2, 1, 1], vec![1, 2, 0], vec![0, 1, 2]]
    );
    assert_eq!(matrix.total(), 10);
    assert_eq!(matrix.correct(), 6);
    assert_eq!(
        (0..3).map(|k| matrix.support(k)).collect::<Vec<_>>(),
        vec![4, 3, 3]
    );
    assert_eq!(
        (0..3).map(|k| matrix.predicted(k)).collect::<Vec<_>>(),
        vec![3, 4, 3]
    );
}

#[test]
fn report_of_the_worked_example() {
    let report = ClassificationReport::from_confusion(&worked_example());
    assert_close!(report.accuracy, 0.6);
    let expected = [
        (2.0 / 3.0, 0.5, 4.0 / 7.0, 4),
        (0.5, 2.0 / 3.0, 4.0 / 7.0, 3),
        (2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 3),
    ];
    assert_eq!(report.per_class.len(), 3);
    for (metrics, (precision, recall, f1, support)) in report.per_class.iter().zip(expected) {
        assert_close!(metrics.precision, precision);
        assert_close!(metrics.recall, recall);
        assert_close!(metrics.f1, f1);
        assert_eq!(metrics.support, support);
    }
    assert_close!(report.macro_avg.precision, 11.0 / 18.0);
    assert_close!(report.macro_avg.recall, 11.0 / 18.0);
    assert_close!(report.macro_avg.f1, 38.0 / 63.0);
    assert_close!(report.weighted_avg.precision, 37.0 / 60.0);
    assert_close!(report.weighted_avg.recall, 0.6);
    assert_close!(report.weighted_avg.f1, 0.6);
}

/// Classes that are never predicted, or never occur, have zero denominators; scikit-learn's
/// `zero_division=0` makes those ratios 0, and the macro average still counts the class.
#[test]
fn zero_division_gives_zero() {
    // Class 2 never occurs but is predicted once; class 3 neither occurs nor is predicted.
    let labels = array![0u32, 1, 1];
    let matrix = ConfusionMatrix::from_predictions(labels.view(), &[0, 1, 2], 4);
    let report = ClassificationReport::from_confusion(&matrix);
    let class2 = &report.per_class[2];
    assert_eq!(
        (class2.precision, class2.recall, class2.f1, class2.support),
        (0.0, 0.0, 0.0, 0)
    );
    let class3 = &report.per_class[3];
    assert_eq!(
        (class3.precision, class3.recall, class3.f1, class3.support),
        (0.0, 0.0, 0.0, 0)
    );
    // Class 1: P = 1/1, R = 1/2, F1 = 2/3; class 0 is perfect.
    assert_close!(report.macro_avg.f1, (1.0 + 2.0 / 3.0) / 4.0);
    assert_close!(report.macro_avg.recall, (1.0 + 0.5) / 4.0);

    let empty = ClassificationReport::from_confusion(&ConfusionMatrix::new(3));
    assert_eq!(empty.accuracy, 0.0);
    assert_eq!(empty.macro_avg.f1, 0.0);
    assert_eq!(empty.weighted_avg.precision, 0.0);
    let none = ClassificationReport::from_confusion(&ConfusionMatrix::new(0));
    assert!(none.per_class.is_empty());
    assert_eq!(none.macro_avg.f1, 0.0);
}

#[test]
fn confusion_matrix_grows_for_classes_beyond_num_classes() {
    let labels = array![0u32, 1];
    let matrix = ConfusionMatrix::from_predictions(labels.view(), &[5, 1], 3);
    assert_eq!(matrix.num_classes(), 6);
    assert_eq!(matrix.get(0, 5), 1);
    assert_eq!(matrix.total(), 2);
    assert_eq!(matrix.get(9, 9), 0, "outside the matrix");
}

#[test]
fn confusion_matrix_serialises_as_nested_arrays() -> Result<()> {
    let matrix = worked_example();
    let json = serde_json::to_string(&matrix)?;
    assert_eq!(json, "[[2,1,1],[1,2,0],[0,1,2]]");
    assert_eq!(serde_json::from_str::<ConfusionMatrix>(&json)?, matrix);
    assert!(serde_json::from_str::<ConfusionMatrix>("[[1,2],[3]]").is_err());
    let report = ClassificationReport::from_confusion(&matrix);
    let round_trip: ClassificationReport = serde_json::from_str(&serde_json::to_string(&report)?)?;
    assert_eq!(round_trip, report);
    let value = serde_json::to_value(&report)?;
    for key in ["accuracy", "per_class", "macro_avg", "weighted_avg"] {
        assert!(value.get(key).is_some(), "report JSON lacks {key}: {value}");
    }
    Ok(())
}

// === Cross-entropy and argmax ===

#[test]
fn cross_entropy_by_hand() {
    // Row 0: softmax(0, ln 3) = (1/4, 3/4), label 1, loss ln(4/3).
    // Row 1: three equal logits, loss ln 3. The mean is ln(4)/2 = ln 2.
    let logits = array![[0.0f32, 3.0f32.ln(), -1e30], [2.0, 2.0, 2.0]];
    // The third logit of row 0 is so small it contributes nothing.
    let loss = cross_entropy(logits.view(), array![1u32, 0].view());
    // The one inexact input is ln 3 rounded to f32, off by at most 6e-8; the loss moves by a
    // quarter of that (∂/∂z = p − 1 = −1/4) halved by the mean, under 1e-8, and the f64
    // arithmetic adds ~1e-16. 1e-6 leaves a hundredfold margin; a sum instead of a mean
    // (ln 4) misses by 0.69.
    assert!((loss - 2.0f64.ln()).abs() < 1e-6, "loss {loss}");
}

#[test]
fn cross_entropy_is_stable_for_large_logits() {
    let logits = array![[1000.0f32, 0.0], [1000.0, 0.0], [-1000.0, -1000.0]];
    let labels = array![1u32, 0, 0];
    let loss = cross_entropy(logits.view(), labels.view());
    // Row 0 loses 1000, row 1 about e^-1000 ≈ 0, row 2 ln 2. The inputs are exact in f32 and
    // the f64 sums of values near 1000 round at 1.1e-13, so 1e-9 of a mean near 334 is ten
    // thousand times the arithmetic's error; exponentiating 1000 unshifted gives inf or NaN.
    assert!(
        (loss - (1000.0 + 2.0f64.ln()) / 3.0).abs() < 1e-9,
        "loss {loss}"
    );
}

#[test]
fn cross_entropy_of_bad_input_is_nan() {
    let logits = array![[0.0f32, 1.0]];
    assert!(
        cross_entropy(logits.view(), array![2u32].view()).is_nan(),
        "label out of range"
    );
    assert!(
        cross_entropy(logits.view(), array![0u32, 1].view()).is_nan(),
        "count mismatch"
    );
    let empty = Array2::<f32>::zeros((0, 3));
    assert!(cross_entropy(empty.view(), Array1::<u32>::zeros(0).view()).is_nan());
}

#[test]
fn argmax_takes_the_first_maximum_and_nan_wins() {
    let logits = array![
        [1.0f32, 3.0, 3.0],
        [f32::NAN, 5.0, 1.0],
        [1.0, f32::NAN, f32::NAN],
        [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY],
        [-5.0, -4.0, -4.5],
    ];
    assert_eq!(argmax_rows(logits.view()), vec![1, 0, 1, 0, 1]);
    assert_eq!(argmax_rows(Array2::<f32>::zeros((2, 0)).view()), vec![0, 0]);
}

// === Properties on random data ===

/// Random labels and predictions: `n` examples of `k` classes, right about half the time.
fn random_case(rng: &mut ChaCha8Rng) -> (Array1<u32>, Vec<u32>, usize) {
    let k = 1 + (rng.next_u32() % 12) as usize;
    let n = (rng.next_u32() % 200) as usize;
    let labels: Array1<u32> = (0..n).map(|_| rng.next_u32() % k as u32).collect();
    let predictions = labels
        .iter()
        .map(|&label| {
            if rng.next_u32().is_multiple_of(2) {
                label
            } else {
                rng.next_u32() % k as u32
            }
        })
        .collect();
    (labels, predictions, k)
}

#[test]
fn properties_of_reports() {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    for case in 0..500 {
        let (labels, predictions, k) = random_case(&mut rng);
        let matrix = ConfusionMatrix::from_predictions(labels.view(), &predictions, k);
        let report = ClassificationReport::from_confusion(&matrix);
        assert_eq!(matrix.num_classes(), k);
        assert_eq!(matrix.total(), labels.len() as u64, "case {case}");
        for class in 0..k {
            let support = labels.iter().filter(|&&l| l as usize == class).count() as u64;
            assert_eq!(
                matrix.support(class),
                support,
                "row sums are supports (case {case})"
            );
            assert_eq!(report.per_class[class].support, support);
        }
        let correct = labels
            .iter()
            .zip(&predictions)
            .filter(|(l, p)| *l == *p)
            .count();
        let accuracy = if labels.is_empty() {
            0.0
        } else {
            correct as f64 / labels.len() as f64
        };
        assert_close!(report.accuracy, accuracy);
        assert_close!(report.weighted_avg.recall, report.accuracy);
        for m in &report.per_class {
            for value in [m.precision, m.recall, m.f1] {
                assert!((0.0..=1.0).contains(&value), "case {case}: {m:?}");
            }
            if m.precision + m.recall > 0.0 {
                let harmonic = 2.0 * m.precision * m.recall / (m.precision + m.recall);
                // Two formulas for one ratio of small counts, each a few roundings from it.
                assert!((m.f1 - harmonic).abs() < 1e-12, "case {case}: {m:?}");
            }
        }
    }
}

#[test]
fn perfect_predictions_score_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..200 {
        let (labels, _, k) = random_case(&mut rng);
        let predictions = labels.to_vec();
        let report = ClassificationReport::from_confusion(&ConfusionMatrix::from_predictions(
            labels.view(),
            &predictions,
            k,
        ));
        let present = (0..k)
            .filter(|&c| labels.iter().any(|&l| l as usize == c))
            .count();
        // Classes that never occur score 0 and still count in the macro average.
        assert_close!(report.macro_avg.f1, present as f64 / k as f64);
        if !labels.is_empty() {
            assert_close!(report.accuracy, 1.0);
            assert_close!(report.weighted_avg.f1, 1.0);
        }
    }
    // With every class present, the macro F1 of a perfect classifier is exactly 1.
    let labels = array![0u32, 1, 2, 3, 2, 1];
    let predictions = labels.to_vec();
    let matrix = ConfusionMatrix::from_predictions(labels.view(), &predictions, 4);
    assert_eq!(
        ClassificationReport::from_confusion(&matrix).macro_avg.f1,
        1.0
    );
}

#[test]
fn cross_entropy_of_equal_logits_is_ln_k() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for k in 1..=20usize {
        let n = 1 + (rng.next_u32() % 50) as usize;
        let value = (rng.next_u32() % 2000) as f32 / 10.0 - 100.0;
        let logits = Array2::from_elem((n, k), value);
        let labels: Array1<u32> = (0..n).map(|_| rng.next_u32() % k as u32).collect();
        let loss = cross_entropy(logits.view(), labels.view());
        // Each row is max + ln k − max with |max| ≤ 100, rounded at 1.4e-14, and the mean of at
        // most 50 rows adds a few such roundings: 1e-9 is far above it, and a wrong k (ln 2 vs
        // ln 3 already differ by 0.4) or a sum over rows is far outside it.
        assert!((loss - (k as f64).ln()).abs() < 1e-9, "k {k}: {loss}");
    }
}

#[test]
fn cross_entropy_ignores_a_constant_added_to_a_row() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let logits = Array2::from_shape_fn((30, 7), |_| (rng.next_u32() % 1000) as f32 / 100.0 - 5.0);
    let labels: Array1<u32> = (0..30).map(|_| rng.next_u32() % 7).collect();
    let shifted = &logits + 64.0;
    let (a, b) = (
        cross_entropy(logits.view(), labels.view()),
        cross_entropy(shifted.view(), labels.view()),
    );
    // Adding 64 in f32 rounds each logit (now in [59, 69)) by at most half an ulp, 3.8e-6, and
    // a row's loss, whose gradient in the logits sums to at most 2, moves by at most 7.6e-6:
    // under 1e-5 on any host, as this is IEEE f32 and f64 arithmetic with no engine. A loss
    // computed from raw logits instead of their differences moves by 64.
    assert!(a > 0.0 && (a - b).abs() < 1e-5, "{a} vs {b}");
}

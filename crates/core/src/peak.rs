//! The machine's matrix-product peak, in f32 or bf16, measured through an engine in the same run as the
//! figures it is compared with, so that utilisation (achieved GFLOP/s ÷ peak) does not mix a
//! training epoch from one hour with a peak from another on a machine whose speed drifts.
//!
//! A square product of two `size × size` f32 matrices is `2·size³` FLOPs. Each adapter
//! copies the [`operands`] to its device once ([`crate::Backend::matmul_probe`]); [`measure`]
//! runs the product a few times to warm the engine up, then times each repetition, and keeps
//! the best (the least disturbed by whatever else the machine does) and the median. Every
//! repetition ends with the engine's work finished: the probe reads the sum of the product's
//! elements back to the host, a scalar that depends on all of it (and that the conformance
//! suite checks against [`product_sum`]).
//!
//! The machine's peak is the best over engines, because a peak is what the hardware can do
//! and each engine's BLAS reaches a different share of it.

use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};

pub use crate::record::MatmulPeak;
use crate::stats::median;
use crate::{Backend, Error, Precision, Result};

/// The operands' side by default: 2048² products take about a tenth of a second on two cores,
/// long enough to amortise dispatch and short enough to repeat.
pub const DEFAULT_SIZE: usize = 2048;

/// The operands' side of a bf16 peak on a CPU that emulates bf16: libtorch 2.9 multiplies
/// bf16 on an AVX2 CPU with a single-threaded fallback that takes minutes for seven 2048²
/// products, and an emulated peak says nothing about bf16 hardware anyway. 512² products keep
/// it to seconds; the peak records its size.
pub const EMULATED_BF16_SIZE: usize = 512;

/// Products run before timing, for the engine's allocations and threads to settle.
const WARM_UP: usize = 2;

/// The left and right operands of a `size × size` product: fixed values in [0, 1), the same on
/// every engine and run, with no subnormals and no zeros to skip.
pub fn operands(size: usize) -> (Array2<f32>, Array2<f32>) {
    let value = |i: usize, j: usize, salt: usize| {
        let mixed = (i * 7919 + j * 104_729 + salt).wrapping_mul(2_654_435_761) % 1000;
        (mixed as f32 + 0.5) / 1000.0
    };
    (
        Array2::from_shape_fn((size, size), |(i, j)| value(i, j, 1)),
        Array2::from_shape_fn((size, size), |(i, j)| value(i, j, 2)),
    )
}

/// The sum of the elements of `left · right`, computed on the host in f64 without forming the
/// product: Σᵢⱼ Σₖ aᵢₖ bₖⱼ = Σₖ (Σᵢ aᵢₖ)(Σⱼ bₖⱼ).
pub fn product_sum(left: ArrayView2<'_, f32>, right: ArrayView2<'_, f32>) -> f64 {
    let left_columns = left.mapv(f64::from).sum_axis(Axis(0));
    let right_rows = right.mapv(f64::from).sum_axis(Axis(1));
    left_columns.dot(&right_rows)
}

/// FLOPs of one product of two `size × size` matrices: a multiply-add per term.
pub fn product_flops(size: usize) -> f64 {
    2.0 * (size as f64).powi(3)
}

/// Measures `backend`'s f32 matrix-product peak on `size × size` operands over `repeats`
/// timed products (after a warm-up of two).
pub fn measure(backend: &dyn Backend, size: usize, repeats: usize) -> Result<MatmulPeak> {
    measure_in(backend, size, repeats, Precision::F32)
}

/// [`measure`] in `precision`: a bf16 peak multiplies bf16 copies of the operands, as a bf16
/// run's layers do, so that a bf16 run's utilisation divides by a bf16 peak.
pub fn measure_in(
    backend: &dyn Backend,
    size: usize,
    repeats: usize,
    precision: Precision,
) -> Result<MatmulPeak> {
    if size == 0 || repeats == 0 {
        return Err(Error::InvalidArgument(format!(
            "a matrix-product peak needs a size and repetitions above zero, not {size} and {repeats}"
        )));
    }
    let info = backend.info();
    if !info.precisions.contains(&precision) {
        return Err(Error::Unsupported {
            backend: info.backend,
            what: format!("--precision {precision}"),
        });
    }
    let (left, right) = operands(size);
    let mut probe = backend.matmul_probe(left.view(), right.view(), precision)?;
    for _ in 0..WARM_UP {
        probe.multiply()?;
    }
    let mut seconds = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        probe.multiply()?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    let best_seconds = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(MatmulPeak {
        backend: info.backend,
        size,
        repeats,
        best_seconds,
        median_seconds: median(&seconds),
        gflops: product_flops(size) / best_seconds / 1e9,
        precision,
    })
}

/// The best of several engines' peaks: the machine's.
pub fn best<'a>(peaks: impl IntoIterator<Item = &'a MatmulPeak>) -> Option<&'a MatmulPeak> {
    peaks
        .into_iter()
        .max_by(|a, b| a.gflops.total_cmp(&b.gflops))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peak(backend: &str, gflops: f64) -> MatmulPeak {
        MatmulPeak {
            backend: backend.into(),
            size: 2048,
            repeats: 5,
            best_seconds: product_flops(2048) / gflops / 1e9,
            median_seconds: 0.1,
            gflops,
            precision: Precision::F32,
        }
    }

    #[test]
    fn a_product_of_two_square_matrices_is_two_n_cubed() {
        assert_eq!(product_flops(2), 16.0);
        assert_eq!(product_flops(2048), 17_179_869_184.0);
    }

    #[test]
    fn the_product_sum_matches_the_product() {
        let (left, right) = operands(5);
        let product = left.mapv(f64::from).dot(&right.mapv(f64::from));
        assert!((product.sum() - product_sum(left.view(), right.view())).abs() < 1e-9);
        assert!(left.iter().chain(right.iter()).all(|&v| v > 0.0 && v < 1.0));
    }

    #[test]
    fn the_machine_peak_is_the_best_engine() {
        let peaks = [peak("burn", 90.0), peak("tf", 210.0), peak("tch", 180.0)];
        let best = best(&peaks).expect("three peaks");
        assert_eq!(best.backend, "tf");
        assert!((best.utilisation(105.0) - 0.5).abs() < 1e-12);
        assert!(super::best(&[]).is_none());
    }
}

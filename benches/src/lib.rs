//! Shared setup for parallax's benchmarks: the bundled Fashion-MNIST subset and the full data
//! set, loaded through the run protocol's own data request, as `cargo xtask compare` loads them;
//! and the backends this build has (`BUILT`, `construct`), a table `build.rs` writes from the
//! registry.

use std::path::{Path, PathBuf};

use parallax_core::data::builtin::BuiltinDataset;
use parallax_core::data::{DataError, DataRequest, epoch_order};
use parallax_core::{Backend, Batch, CpuSettings, Dataset, Device};

fn request(which: BuiltinDataset, cache_dir: PathBuf) -> DataRequest {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    DataRequest::builtin(which, cache_dir, root.join("fixtures"))
}

/// The bundled subset's training set (2000 real Fashion-MNIST images), normalised to [0, 1].
pub fn subset() -> Dataset {
    request(BuiltinDataset::FashionMnistSubset, std::env::temp_dir())
        .load(42)
        .expect("the bundled subset is committed under fixtures/")
        .train
}

/// The first batch of epoch 0's shuffled order, as a training run would see it.
pub fn first_batch(data: &Dataset, batch_size: usize) -> Batch {
    let order = epoch_order(data.len(), 42, 0);
    data.batch(&order[..batch_size.min(order.len())])
}

/// A fixed batch of `batch` images of `shape` (channels, height, width) with values in [0, 1]
/// and labels cycling through `classes`, for models whose data set is not bundled.
pub fn synthetic_batch(shape: [usize; 3], classes: u32, batch: usize) -> Batch {
    let [channels, height, width] = shape;
    // A cheap deterministic hash of the position: the same batch on every run and engine.
    let images =
        ndarray::Array4::from_shape_fn((batch, channels, height, width), |(n, c, h, w)| {
            let mixed =
                (n * 7919 + c * 104_729 + h * 31 + w * 131).wrapping_mul(2_654_435_761) % 1000;
            mixed as f32 / 999.0
        });
    let labels = ndarray::Array1::from_shape_fn(batch, |n| n as u32 % classes);
    Batch { images, labels }
}

/// Full Fashion-MNIST's training set, found as `cargo xtask compare` finds it (`PARALLAX_DATA_DIR`,
/// Debian's `dataset-fashion-mnist`, then the cache), normalised to [0, 1].
pub fn full_fashion_mnist(cache_dir: PathBuf) -> Result<Dataset, DataError> {
    Ok(request(BuiltinDataset::FashionMnist, cache_dir)
        .load(42)?
        .train)
}

include!(concat!(env!("OUT_DIR"), "/backends.rs"));

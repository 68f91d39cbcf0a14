//! Shared setup for parallax's benchmarks: the bundled Fashion-MNIST subset and the full data
//! set, loaded through the run protocol's own data request, as `cargo xtask compare` loads them.

use std::path::{Path, PathBuf};

use parallax_core::data::builtin::BuiltinDataset;
use parallax_core::data::{DataError, DataRequest, epoch_order};
use parallax_core::{Batch, Dataset};

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

/// Full Fashion-MNIST's training set, found as `cargo xtask compare` finds it (`PARALLAX_DATA_DIR`,
/// Debian's `dataset-fashion-mnist`, then the cache), normalised to [0, 1].
pub fn full_fashion_mnist(cache_dir: PathBuf) -> Result<Dataset, DataError> {
    Ok(request(BuiltinDataset::FashionMnist, cache_dir)
        .load(42)?
        .train)
}

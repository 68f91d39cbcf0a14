//! Shared setup for parallax's criterion benchmarks: the bundled Fashion-MNIST subset and
//! the models, loaded the way `cargo xtask compare` loads them.

use std::path::Path;

use parallax_core::data::builtin::{BuiltinDataset, DataLocator};
use parallax_core::data::{Normalization, epoch_order};
use parallax_core::{Batch, Dataset};

/// The bundled subset's training set (2000 real Fashion-MNIST images), normalised to [0, 1].
pub fn subset() -> Dataset {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let locator = DataLocator {
        explicit_dir: None,
        cache_dir: std::env::temp_dir(),
        fixtures_dir: root.join("fixtures"),
    };
    let (train, _, _) = locator
        .load(
            BuiltinDataset::FashionMnistSubset,
            &Normalization::UnitRange,
        )
        .expect("the bundled subset is committed under fixtures/");
    train
}

/// The first batch of epoch 0's shuffled order, as a training run would see it.
pub fn first_batch(data: &Dataset, batch_size: usize) -> Batch {
    let order = epoch_order(data.len(), 42, 0);
    data.batch(&order[..batch_size.min(order.len())])
}

/// Full Fashion-MNIST's training set, found as `cargo xtask compare` finds it (`PARALLAX_DATA_DIR`,
/// Debian's `dataset-fashion-mnist`, then the cache), normalised to [0, 1].
pub fn full_fashion_mnist(cache_dir: &Path) -> Result<Dataset, parallax_core::data::DataError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let locator = DataLocator {
        explicit_dir: None,
        cache_dir: cache_dir.to_path_buf(),
        fixtures_dir: root.join("fixtures"),
    };
    let (train, _, _) = locator.load(BuiltinDataset::FashionMnist, &Normalization::UnitRange)?;
    Ok(train)
}

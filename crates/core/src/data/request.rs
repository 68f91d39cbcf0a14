//! A run's data as its request names it, and loading it: the one place that turns a data set's
//! name and directories into the training and test sets, for the worker, tests and benches.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_with::{DeserializeFromStr, SerializeDisplay};

use super::builtin::{BuiltinDataset, DataLocator};
use super::folder::{read_image_folder, read_image_folder_skipping};
use super::placed::{BoundingBox, Split, place};
use super::{DataError, Dataset, Normalization};

/// The name `--dataset` takes for a folder of class subfolders.
const IMAGE_FOLDER: &str = "image-folder";

/// A data set as `--dataset` names it: a built-in one, or a folder of images (`--data DIR`).
///
/// Serialised as the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, SerializeDisplay, DeserializeFromStr)]
pub enum DatasetName {
    /// Fashion-MNIST, MNIST or the bundled subset.
    Builtin(BuiltinDataset),
    /// One subfolder per class of PNG or JPEG files, split 80/20 by the run's seed, stratified by class.
    ImageFolder,
    /// A built-in data set's items placed on a larger canvas with known boxes
    /// (`fashion-mnist-placed`, [`super::placed`]).
    Placed(BuiltinDataset),
}

/// The suffix that names a placed data set.
const PLACED_SUFFIX: &str = "-placed";

impl DatasetName {
    /// Every name `--dataset` takes, in the order help texts list them.
    pub fn all() -> Vec<DatasetName> {
        BuiltinDataset::ALL
            .into_iter()
            .map(DatasetName::Builtin)
            .chain(std::iter::once(DatasetName::ImageFolder))
            .chain(BuiltinDataset::ALL.into_iter().map(DatasetName::Placed))
            .collect()
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetName::Builtin(which) => which.fmt(f),
            DatasetName::ImageFolder => f.write_str(IMAGE_FOLDER),
            DatasetName::Placed(which) => write!(f, "{which}{PLACED_SUFFIX}"),
        }
    }
}

impl FromStr for DatasetName {
    type Err = DataError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        DatasetName::all()
            .into_iter()
            .find(|candidate| candidate.to_string() == name)
            .ok_or_else(|| DataError::UnknownDataset {
                name: name.to_string(),
                valid: DatasetName::all()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Where a run's data comes from and how it is shaped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataRequest {
    /// The data set.
    pub dataset: DatasetName,
    /// An explicit data directory (`--data`).
    pub data_dir: Option<PathBuf>,
    /// The cache directory where downloaded data sets live.
    pub cache_dir: PathBuf,
    /// The repository's `fixtures/` directory (the bundled subset).
    pub fixtures_dir: PathBuf,
    /// Image size (height = width) for `image-folder` data sets.
    pub image_size: usize,
    /// Channels (1 or 3) for `image-folder` data sets.
    pub image_channels: usize,
    /// Use only the first N training examples, for quick runs.
    pub limit_train: Option<usize>,
    /// Skip the files of an `image-folder` data set that cannot be read, rather than fail;
    /// the record counts them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_unreadable: bool,
}

impl DataRequest {
    /// A request for a built-in data set, found as `compare` finds it, at full size.
    pub fn builtin(which: BuiltinDataset, cache_dir: PathBuf, fixtures_dir: PathBuf) -> Self {
        DataRequest {
            dataset: DatasetName::Builtin(which),
            data_dir: None,
            cache_dir,
            fixtures_dir,
            image_size: 64,
            image_channels: 3,
            limit_train: None,
            skip_unreadable: false,
        }
    }

    /// The locator of the built-in data sets for this request's directories.
    pub fn locator(&self) -> DataLocator {
        DataLocator {
            explicit_dir: self.data_dir.clone(),
            cache_dir: self.cache_dir.clone(),
            fixtures_dir: self.fixtures_dir.clone(),
        }
    }

    /// Loads the training and test sets, normalised to [0, 1]. An image folder is split 80/20
    /// by `seed`, stratified by class, the same way for every backend; a placed data set is placed the same way
    /// whatever the seed.
    pub fn load(&self, seed: u64) -> Result<LoadedData, DataError> {
        let normalization = Normalization::UnitRange;
        let mut test_boxes = None;
        let mut skipped = Vec::new();
        let (train, test, source) = match self.dataset {
            DatasetName::ImageFolder => {
                let root = self
                    .data_dir
                    .as_deref()
                    .ok_or_else(|| DataError::InvalidArgument {
                        name: "data directory",
                        reason: "--dataset image-folder needs --data DIR (one subfolder per class)"
                            .into(),
                    })?;
                let all = if self.skip_unreadable {
                    let (all, unreadable) = read_image_folder_skipping(
                        root,
                        self.image_channels,
                        self.image_size,
                        self.image_size,
                        &normalization,
                    )?;
                    skipped = unreadable;
                    all
                } else {
                    read_image_folder(
                        root,
                        self.image_channels,
                        self.image_size,
                        self.image_size,
                        &normalization,
                    )?
                };
                let (train, test) = all.split(0.2, seed)?;
                (train, test, root.to_path_buf())
            }
            DatasetName::Builtin(which) => self.locator().load(which, &normalization)?,
            DatasetName::Placed(which) => {
                let (train, test, source) = self.locator().load(which, &normalization)?;
                let (train, _) = place(&train, Split::Train)?;
                let (test, boxes) = place(&test, Split::Test)?;
                test_boxes = Some(boxes);
                (train, test, source)
            }
        };
        let train = match self.limit_train {
            Some(limit) => train.take(limit),
            None => train,
        };
        Ok(LoadedData {
            train,
            test,
            test_boxes,
            name: self.dataset,
            source,
            skipped,
        })
    }
}

/// A run's data, loaded.
#[derive(Clone, Debug)]
pub struct LoadedData {
    /// The training set, shortened to the request's limit.
    pub train: Dataset,
    /// The test set.
    pub test: Dataset,
    /// The box of every test example, for data sets that know where their objects are.
    pub test_boxes: Option<Vec<BoundingBox>>,
    /// The data set's name.
    pub name: DatasetName,
    /// The directory it was read from.
    pub source: PathBuf,
    /// The files skipped because they could not be read (`skip_unreadable`).
    pub skipped: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_alike() {
        for name in DatasetName::all() {
            assert_eq!(name.to_string().parse::<DatasetName>().unwrap(), name);
        }
        let error = "cifar".parse::<DatasetName>().unwrap_err().to_string();
        assert!(error.contains("image-folder"), "{error}");
    }
}

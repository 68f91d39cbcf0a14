//! The built-in data sets: their names and classes, where parallax looks for them, and loading.
//!
//! Lookup order for Fashion-MNIST and MNIST, first match wins:
//!
//! 1. `--data DIR` ([`DataLocator::explicit_dir`]): `DIR` or `DIR/<name>`. When the user names a
//!    directory there is no fallback: a missing directory or missing files is an error.
//! 2. The directory in the `PARALLAX_DATA_DIR` environment variable: `$PARALLAX_DATA_DIR/<name>`,
//!    then `$PARALLAX_DATA_DIR` itself.
//! 3. For Fashion-MNIST only, Debian's `dataset-fashion-mnist` package:
//!    `/usr/share/datasets/fashion-mnist`.
//! 4. The download cache: `<cache_dir>/datasets/<name>`.
//!
//! `fashion-mnist-subset` is always `<fixtures_dir>/fashion-mnist-subset`, the copy bundled with
//! the repository. A directory holds a data set when it has the four standard files,
//! `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
//! `t10k-labels-idx1-ubyte`, each raw or with a `.gz` suffix.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use super::idx::{read_idx_images, read_idx_labels};
use super::{DataError, Dataset, Normalization};

/// The environment variable naming a directory of data sets.
pub const DATA_DIR_ENV: &str = "PARALLAX_DATA_DIR";

/// Where Debian's `dataset-fashion-mnist` package installs the original gzip files.
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The stems of the four standard files: training images and labels, then test images and
/// labels.
pub const STANDARD_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// A file of a built-in data set as a mirror serves it, with pinned digests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinnedFile<'a> {
    /// The file's name on the mirror and on disk, such as `train-images-idx3-ubyte.gz`.
    pub name: &'a str,
    /// SHA-256 of the file as served (the gzip bytes), lowercase hex.
    pub sha256: &'a str,
    /// SHA-256 of the decompressed IDX file, lowercase hex; it stays the same when a
    /// redistributor recompresses the file, as Debian does.
    pub idx_sha256: &'a str,
}

/// Fashion-MNIST as served by Zalando's mirror. The gzip digests are those that TensorFlow
/// Datasets pins (`url_checksums/fashion_mnist.txt`) and several independent projects repeat;
/// the files they describe are the ones whose MD5s Zalando's README lists. The IDX digests
/// were computed here from Debian's package, whose decompressed files match digests published
/// independently for the original archives.
const FASHION_MNIST_FILES: [PinnedFile<'static>; 4] = [
    PinnedFile {
        name: "train-images-idx3-ubyte.gz",
        sha256: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        idx_sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    },
    PinnedFile {
        name: "train-labels-idx1-ubyte.gz",
        sha256: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        idx_sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    },
    PinnedFile {
        name: "t10k-images-idx3-ubyte.gz",
        sha256: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        idx_sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    },
    PinnedFile {
        name: "t10k-labels-idx1-ubyte.gz",
        sha256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        idx_sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
];

/// MNIST as served by PyTorch's mirror, byte-identical to Yann LeCun's original files. The gzip
/// digests are those TensorFlow Datasets pins (`url_checksums/mnist.txt`) and Bazel's and
/// others' build files repeat; the IDX digests are published alongside them by independent
/// projects. Neither could be recomputed here, for lack of the files.
const MNIST_FILES: [PinnedFile<'static>; 4] = [
    PinnedFile {
        name: "train-images-idx3-ubyte.gz",
        sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        idx_sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    PinnedFile {
        name: "train-labels-idx1-ubyte.gz",
        sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        idx_sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    PinnedFile {
        name: "t10k-images-idx3-ubyte.gz",
        sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        idx_sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    PinnedFile {
        name: "t10k-labels-idx1-ubyte.gz",
        sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        idx_sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

/// A data set that parallax knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltinDataset {
    /// Zalando's Fashion-MNIST: 60,000 training and 10,000 test images of clothing, 28×28 grey.
    FashionMnist,
    /// LeCun's MNIST digits: 60,000 training and 10,000 test images, 28×28 grey.
    Mnist,
    /// The first 2,000 training and 500 test images of Fashion-MNIST, bundled with the
    /// repository so that tests and demos run offline.
    FashionMnistSubset,
}

impl BuiltinDataset {
    /// Every built-in data set, in the order help texts list them.
    pub const ALL: [BuiltinDataset; 3] = [
        BuiltinDataset::FashionMnist,
        BuiltinDataset::Mnist,
        BuiltinDataset::FashionMnistSubset,
    ];

    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinDataset::FashionMnist => "fashion-mnist",
            BuiltinDataset::Mnist => "mnist",
            BuiltinDataset::FashionMnistSubset => "fashion-mnist-subset",
        }
    }

    /// The class names, in label order.
    pub fn class_names(self) -> Vec<String> {
        let names: &[&str] = match self {
            BuiltinDataset::FashionMnist | BuiltinDataset::FashionMnistSubset => {
                &FASHION_MNIST_CLASSES
            }
            BuiltinDataset::Mnist => &MNIST_CLASSES,
        };
        names.iter().map(|name| name.to_string()).collect()
    }

    /// The shape of one image: channels, height, width.
    pub fn image_shape(self) -> [usize; 3] {
        [1, 28, 28]
    }

    /// The mirror the files are downloaded from, or `None` for the bundled subset.
    pub fn mirror(self) -> Option<&'static str> {
        match self {
            BuiltinDataset::FashionMnist => {
                Some("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
            }
            BuiltinDataset::Mnist => Some("https://ossci-datasets.s3.amazonaws.com/mnist/"),
            BuiltinDataset::FashionMnistSubset => None,
        }
    }

    /// The four files on the mirror with their pinned digests; empty for the bundled subset,
    /// whose digests are in its own `SHA256SUMS`.
    pub fn pinned_files(self) -> &'static [PinnedFile<'static>] {
        match self {
            BuiltinDataset::FashionMnist => &FASHION_MNIST_FILES,
            BuiltinDataset::Mnist => &MNIST_FILES,
            BuiltinDataset::FashionMnistSubset => &[],
        }
    }

    /// What the user can do when the data set is not found.
    fn not_found_hint(self) -> String {
        match self {
            BuiltinDataset::FashionMnist => "install Debian's dataset-fashion-mnist, pass --data DIR, run `cargo xtask data download fashion-mnist`, or use --dataset fashion-mnist-subset".into(),
            BuiltinDataset::Mnist => format!("pass --data DIR, set {DATA_DIR_ENV}, or run `cargo xtask data download mnist`"),
            BuiltinDataset::FashionMnistSubset => "the subset is bundled with the repository; restore it with `git checkout -- fixtures/fashion-mnist-subset`".into(),
        }
    }
}

impl fmt::Display for BuiltinDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BuiltinDataset {
    type Err = DataError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        BuiltinDataset::ALL
            .into_iter()
            .find(|which| which.name() == name)
            .ok_or_else(|| DataError::UnknownDataset {
                name: name.to_string(),
                valid: BuiltinDataset::ALL.map(BuiltinDataset::name).join(", "),
            })
    }
}

/// Whether this process runs under CI: `CI` is set to anything but empty, `0` or `false`.
///
/// Under CI a missing data set or native library is a failure, never a reason to skip a test
/// or to fall back to the bundled subset.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.trim(), "" | "0" | "false"))
}

/// Where to look for the built-in data sets; see the [module documentation](self) for the
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataLocator {
    /// The directory the user passed with `--data`, if any.
    pub explicit_dir: Option<PathBuf>,
    /// The cache directory; downloads go to `<cache_dir>/datasets/<name>`.
    pub cache_dir: PathBuf,
    /// The repository's `fixtures` directory, which holds `fashion-mnist-subset`.
    pub fixtures_dir: PathBuf,
}

impl DataLocator {
    /// The directory that holds `which`, reading `PARALLAX_DATA_DIR` from the environment and
    /// looking in Debian's directory.
    pub fn locate(&self, which: BuiltinDataset) -> Result<PathBuf, DataError> {
        let env_dir = std::env::var_os(DATA_DIR_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from);
        self.locate_in(
            which,
            env_dir.as_deref(),
            Path::new(DEBIAN_FASHION_MNIST_DIR),
        )
    }

    /// As [`DataLocator::locate`], with the environment's directory and Debian's directory
    /// given explicitly, so that tests and tools can search without touching the process.
    pub fn locate_in(
        &self,
        which: BuiltinDataset,
        env_dir: Option<&Path>,
        debian_dir: &Path,
    ) -> Result<PathBuf, DataError> {
        let name = which.name();
        let mut candidates = Vec::new();
        if which == BuiltinDataset::FashionMnistSubset {
            candidates.push(self.fixtures_dir.join(name));
        } else if let Some(dir) = &self.explicit_dir {
            if !dir.is_dir() {
                return Err(DataError::DirNotFound { path: dir.clone() });
            }
            candidates.push(dir.clone());
            candidates.push(dir.join(name));
            if let Some(found) = candidates.iter().find(|dir| has_dataset(dir)) {
                return Ok(found.clone());
            }
            return Err(DataError::DatasetNotFound {
                name: name.to_string(),
                tried: candidates,
                hint: format!(
                    "the directory must hold {} (each raw or .gz)",
                    STANDARD_FILES.join(", ")
                ),
            });
        } else {
            if let Some(dir) = env_dir {
                candidates.push(dir.join(name));
                candidates.push(dir.to_path_buf());
            }
            if which == BuiltinDataset::FashionMnist {
                candidates.push(debian_dir.to_path_buf());
            }
            candidates.push(self.cache_dir.join("datasets").join(name));
        }
        if let Some(found) = candidates.iter().find(|dir| has_dataset(dir)) {
            return Ok(found.clone());
        }
        Err(DataError::DatasetNotFound {
            name: name.to_string(),
            tried: candidates,
            hint: which.not_found_hint(),
        })
    }

    /// Finds and loads `which`: `(train, test, the directory it was found in)`.
    pub fn load(
        &self,
        which: BuiltinDataset,
        normalization: &Normalization,
    ) -> Result<(Dataset, Dataset, PathBuf), DataError> {
        let dir = self.locate(which)?;
        let (train, test) = load_dir(which, &dir, normalization)?;
        Ok((train, test, dir))
    }
}

/// The file with `stem` in `dir`, raw or with a `.gz` suffix; the raw one wins when both exist.
pub fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// Whether `dir` holds the four standard files.
pub fn has_dataset(dir: &Path) -> bool {
    STANDARD_FILES
        .iter()
        .all(|stem| find_file(dir, stem).is_some())
}

/// Loads the training and test sets of `which` from the four standard files in `dir`.
///
/// The sets are named `<which>/train` and `<which>/test`.
pub fn load_dir(
    which: BuiltinDataset,
    dir: &Path,
    normalization: &Normalization,
) -> Result<(Dataset, Dataset), DataError> {
    let [train_images, train_labels, test_images, test_labels] = STANDARD_FILES;
    let train = load_split(
        which,
        "train",
        dir,
        train_images,
        train_labels,
        normalization,
    )?;
    let test = load_split(which, "test", dir, test_images, test_labels, normalization)?;
    if train.image_shape() != test.image_shape() {
        return Err(DataError::InvalidDataset {
            name: which.to_string(),
            reason: format!(
                "training images are {:?} but test images {:?}; the files come from different data sets",
                train.image_shape(),
                test.image_shape()
            ),
        });
    }
    Ok((train, test))
}

fn load_split(
    which: BuiltinDataset,
    split: &str,
    dir: &Path,
    images_stem: &str,
    labels_stem: &str,
    normalization: &Normalization,
) -> Result<Dataset, DataError> {
    let find = |stem: &str| {
        find_file(dir, stem).ok_or_else(|| DataError::DatasetNotFound {
            name: which.to_string(),
            tried: vec![dir.join(stem), dir.join(format!("{stem}.gz"))],
            hint: which.not_found_hint(),
        })
    };
    let images_path = find(images_stem)?;
    let labels_path = find(labels_stem)?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            context: format!("{} and {}", images_path.display(), labels_path.display()),
            images: images.count,
            labels: labels.len(),
        });
    }
    let classes = which.class_names();
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &label)| usize::from(label) >= classes.len())
    {
        return Err(DataError::LabelOutOfRange {
            context: labels_path.display().to_string(),
            index,
            label: u32::from(label),
            classes: classes.len(),
        });
    }
    let shape = [images.count, 1, images.rows, images.cols];
    let pixels = normalization.apply(&images.pixels, shape)?;
    let labels = Array1::from_iter(labels.iter().map(|&label| u32::from(label)));
    Dataset::new(format!("{which}/{split}"), pixels, labels, classes)
}

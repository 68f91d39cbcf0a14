//! Data sets, batches, normalisation and the portable batch order that every backend shares.
//!
//! # Design
//!
//! A [`Dataset`] holds its images already converted to `f32` and normalised, in the canonical
//! N,C,H,W layout, so that every backend trains on bit-identical inputs. Batches are gathered on
//! the host by copying one contiguous image at a time, which is cheap next to a training step.
//!
//! The order in which examples are visited is decided here, by [`epoch_order`], and not by any
//! engine's data loader: a seeded ChaCha8 stream drives a Fisher–Yates shuffle written in this
//! file, so the order is the same on every platform, for every backend and across `rand`
//! releases.
//!
//! Readers for the sources parallax knows live in submodules: [`idx`] (MNIST-style files),
//! [`folder`] (one subfolder per class, the EuroSAT layout), [`builtin`] (finding and loading
//! the built-in data sets) and [`subset`] (the small bundled Fashion-MNIST subset).

use std::fmt;
use std::path::PathBuf;

use ndarray::{ArcArray, Array1, Array4, ArrayView1, ArrayView4, Axis, Ix4, s};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub mod builtin;
#[cfg(feature = "download")]
pub mod download;
pub mod folder;
pub mod idx;
pub mod placed;
pub mod request;
pub mod subset;

pub use builtin::{BuiltinDataset, DataLocator};
#[cfg(feature = "download")]
pub use download::download;
pub use folder::{check_image_folder, read_image_folder, read_image_folder_skipping};
pub use idx::{IdxImages, read_idx_images, read_idx_labels, write_idx_images, write_idx_labels};
pub use placed::BoundingBox;
pub use request::{DataRequest, DatasetName, LoadedData};
pub use subset::{verify_manifest, write_subset};

/// A data set that is missing, truncated or malformed, or a request that doesn't fit it.
///
/// Every variant renders as one line that says what happened and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    // === Files ===
    /// An I/O failure on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A gzip stream that cannot be decompressed.
    #[error("{}: corrupt or truncated gzip stream ({source}); re-download it", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decompressor's error.
        source: std::io::Error,
    },

    // === IDX files ===
    /// A file whose magic number is not the one of the IDX kind that was asked for.
    #[error(
        "{}: not an IDX {kind} file (magic 0x{found:08x} is not 0x{expected:08x}); check that the path names the {kind} file",
        path.display()
    )]
    NotIdx {
        /// The file.
        path: PathBuf,
        /// `image` or `label`.
        kind: &'static str,
        /// The magic number found in the file.
        found: u32,
        /// The magic number of the kind asked for.
        expected: u32,
    },
    /// An IDX file too short to hold its own header.
    #[error(
        "{}: truncated IDX file: its header needs {needed} bytes, the file holds {actual}; re-download it",
        path.display()
    )]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Bytes the header needs.
        needed: usize,
        /// Bytes found (after decompression, for gzip files).
        actual: usize,
    },
    /// An IDX header with a zero or absurd dimension.
    #[error("{}: bad IDX header: {reason}; the file is damaged, re-download it", path.display())]
    BadIdxHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        reason: String,
    },
    /// An IDX file with less data than its header declares.
    #[error(
        "{}: truncated IDX file: header declares {dims} = {expected} bytes of data, file has {actual}; re-download it",
        path.display()
    )]
    TruncatedIdx {
        /// The file.
        path: PathBuf,
        /// The declared dimensions, written `60000×28×28`.
        dims: String,
        /// Bytes of data the header declares.
        expected: u64,
        /// Bytes of data present (after decompression, for gzip files).
        actual: u64,
    },
    /// An IDX file with bytes after the data its header declares.
    #[error(
        "{}: IDX file is longer than its header declares ({dims} = {expected} bytes of data, then {extra} more); re-download it",
        path.display()
    )]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// The declared dimensions, written `60000×28×28`.
        dims: String,
        /// Bytes of data the header declares.
        expected: u64,
        /// How many bytes follow, written `at least 1` where a gzip stream was not read to its end.
        extra: String,
    },

    // === Data sets ===
    /// Image and label sources that disagree on the number of examples.
    #[error(
        "{context}: {images} images but {labels} labels; the image and label files belong to different sets"
    )]
    CountMismatch {
        /// The data set or files involved.
        context: String,
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A label that is not a valid class index.
    #[error(
        "{context}: label {label} of example {index} is not below the class count {classes}; check the class names or the label file"
    )]
    LabelOutOfRange {
        /// The data set or file involved.
        context: String,
        /// The example, counting from 0.
        index: usize,
        /// Its label.
        label: u32,
        /// The number of classes.
        classes: usize,
    },
    /// A data set that cannot be built as asked (no classes, wrong shape, too many examples).
    #[error("data set {name:?}: {reason}")]
    InvalidDataset {
        /// The data set's name.
        name: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// An example index beyond the end of a data set.
    #[error("example index {index} is out of range for data set {name:?} of {len} examples")]
    IndexOutOfRange {
        /// The data set's name.
        name: String,
        /// The index asked for.
        index: u32,
        /// The data set's size.
        len: usize,
    },
    /// A parameter outside its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// The parameter.
        name: &'static str,
        /// What is wrong, and what is allowed.
        reason: String,
    },

    // === Image folders ===
    /// An image folder without class subfolders.
    #[error(
        "{}: no class subfolders found; an image folder needs one subfolder per class holding PNG or JPEG files",
        path.display()
    )]
    NoClasses {
        /// The folder.
        path: PathBuf,
    },
    /// An image folder whose class subfolders hold no PNG or JPEG files.
    #[error(
        "{}: no PNG or JPEG files in any class subfolder; check that this is the data set's root folder",
        path.display()
    )]
    NoImages {
        /// The folder.
        path: PathBuf,
    },
    /// A class subfolder without a PNG or JPEG file, which would be a class no example has.
    #[error(
        "{}: class folder holds no PNG or JPEG files; remove it or add its images (torchvision's ImageFolder refuses it too)",
        path.display()
    )]
    EmptyClass {
        /// The class's folder.
        path: PathBuf,
    },
    /// An image file that cannot be decoded.
    ///
    /// The decoder's error is kept as its text: the `image` crate's errors repeat their own
    /// source in their message, so a chain of them says the cause two or three times.
    #[error("{}: unreadable image: {reason}; delete or replace the file, or pass --skip-unreadable", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },

    // === Locating and downloading ===
    /// A `--data DIR` that does not exist.
    #[error("data directory {} does not exist; pass an existing --data DIR", path.display())]
    DirNotFound {
        /// The directory the user named.
        path: PathBuf,
    },
    /// A built-in data set found in none of the places searched.
    #[error("{name} not found in: {}; {hint}", display_paths(tried))]
    DatasetNotFound {
        /// The data set's name.
        name: String,
        /// The directories searched, in order.
        tried: Vec<PathBuf>,
        /// What the user can do.
        hint: String,
    },
    /// A data set name that parallax doesn't know.
    #[error("unknown data set {name:?}; choose one of: {valid}")]
    UnknownDataset {
        /// The name as given.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// A file whose SHA-256 is not the pinned one.
    #[error(
        "{file}: SHA-256 {actual} does not match the pinned {expected}; the file is corrupt or its source changed, fetch it again"
    )]
    Checksum {
        /// The file's path or address.
        file: String,
        /// The pinned digest, hex.
        expected: String,
        /// The digest of the file, hex.
        actual: String,
    },
    /// A download that failed before its checksum could be checked.
    #[error(
        "downloading {url} failed: {reason}; check the network, or fetch the files yourself and pass --data DIR"
    )]
    Download {
        /// The address.
        url: String,
        /// The HTTP client's message.
        reason: String,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    shown.join(", ")
}

impl DataError {
    /// A [`DataError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// How `u8` pixels become the `f32` inputs of a model.
///
/// Serialised in snake case: `"unit_range"`, or
/// `{"standardize": {"mean": [0.286], "std": [0.353]}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// `x / 255`, giving values in `[0, 1]`.
    #[default]
    UnitRange,
    /// `(x / 255 - mean[c]) / std[c]` per channel `c`, as torchvision's `Normalize` after
    /// `ToTensor`.
    Standardize {
        /// Per-channel mean of the unit-range values.
        mean: Vec<f32>,
        /// Per-channel standard deviation of the unit-range values.
        std: Vec<f32>,
    },
}

impl Normalization {
    /// Checks that the normalisation fits images of `channels` channels.
    pub fn validate(&self, channels: usize) -> Result<(), DataError> {
        match self {
            Normalization::UnitRange => Ok(()),
            Normalization::Standardize { mean, std } => {
                if mean.len() != channels || std.len() != channels {
                    return Err(DataError::InvalidArgument {
                        name: "normalization",
                        reason: format!(
                            "{} means and {} standard deviations for {channels}-channel images; give one of each per channel",
                            mean.len(),
                            std.len()
                        ),
                    });
                }
                if let Some(bad) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return Err(DataError::InvalidArgument {
                        name: "normalization",
                        reason: format!("standard deviation {bad} must be positive and finite"),
                    });
                }
                if let Some(bad) = mean.iter().find(|m| !m.is_finite()) {
                    return Err(DataError::InvalidArgument {
                        name: "normalization",
                        reason: format!("mean {bad} must be finite"),
                    });
                }
                Ok(())
            }
        }
    }

    /// Converts `u8` pixels in N,C,H,W order to normalised `f32` images of `shape`.
    pub fn apply(&self, pixels: &[u8], shape: [usize; 4]) -> Result<Array4<f32>, DataError> {
        check_pixels(pixels, shape)?;
        let [_, c, h, w] = shape;
        self.validate(c)?;
        let values = match self {
            Normalization::UnitRange => pixels.iter().map(|&x| f32::from(x) / 255.0).collect(),
            Normalization::Standardize { mean, std } => {
                // A lookup table per channel turns the conversion into one load per pixel and
                // makes the result independent of how the compiler fuses the arithmetic.
                let tables: Vec<[f32; 256]> = mean
                    .iter()
                    .zip(std)
                    .map(|(&m, &s)| std::array::from_fn(|x| (x as f32 / 255.0 - m) / s))
                    .collect();
                let mut values = Vec::with_capacity(pixels.len());
                for (plane_index, plane) in pixels.chunks(h * w).enumerate() {
                    if let Some(table) = tables.get(plane_index % c) {
                        values.extend(plane.iter().map(|&x| table[usize::from(x)]));
                    }
                }
                values
            }
        };
        Array4::from_shape_vec(shape, values).map_err(|error| DataError::InvalidArgument {
            name: "pixels",
            reason: error.to_string(),
        })
    }
}

/// Checks that `pixels` is exactly N·C·H·W bytes, with at least one channel and one pixel.
fn check_pixels(pixels: &[u8], shape: [usize; 4]) -> Result<(), DataError> {
    let [n, c, h, w] = shape;
    let expected = n
        .checked_mul(c)
        .and_then(|x| x.checked_mul(h))
        .and_then(|x| x.checked_mul(w));
    if c == 0 || h == 0 || w == 0 || expected != Some(pixels.len()) {
        return Err(DataError::InvalidArgument {
            name: "pixels",
            reason: format!(
                "{} bytes are not {n}×{c}×{h}×{w} images with C, H, W ≥ 1",
                pixels.len()
            ),
        });
    }
    Ok(())
}

/// One batch of examples, gathered from a [`Dataset`].
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Images `[N, C, H, W]`, normalised.
    pub images: Array4<f32>,
    /// Class indices `[N]`.
    pub labels: Array1<u32>,
}

impl Batch {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch has no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One epoch of training input: a data set, the order its examples are visited in, and the
/// batch size.
///
/// This is what [`crate::Model::train_epoch`] receives. Adapters that gather faster inside
/// their engine (a zero-copy view of the whole data set, indexed there) read [`data`],
/// [`order`] and [`batch_size`]; the rest iterate [`batches`]. Every index is checked against
/// the data set once, at construction, so gathering afterwards cannot fail.
///
/// [`data`]: EpochPlan::data
/// [`order`]: EpochPlan::order
/// [`batch_size`]: EpochPlan::batch_size
/// [`batches`]: EpochPlan::batches
#[derive(Clone, Copy, Debug)]
pub struct EpochPlan<'a> {
    data: &'a Dataset,
    order: &'a [u32],
    batch_size: usize,
}

impl<'a> EpochPlan<'a> {
    /// Visits `data` in `order`, `batch_size` examples at a time; the last batch holds the rest
    /// and may be smaller (PyTorch's `drop_last=False`, and Keras' behaviour).
    ///
    /// Fails when `batch_size` is 0 or an index in `order` is beyond the data set's end.
    pub fn new(data: &'a Dataset, order: &'a [u32], batch_size: usize) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::InvalidArgument {
                name: "batch size",
                reason: "0 examples per batch; pass at least 1".into(),
            });
        }
        if let Some(&index) = order.iter().find(|&&index| index as usize >= data.len()) {
            return Err(DataError::IndexOutOfRange {
                name: data.name.clone(),
                index,
                len: data.len(),
            });
        }
        Ok(EpochPlan {
            data,
            order,
            batch_size,
        })
    }

    /// The data set the examples come from.
    pub fn data(&self) -> &'a Dataset {
        self.data
    }

    /// Example indices in the order they are visited.
    pub fn order(&self) -> &'a [u32] {
        self.order
    }

    /// Examples per batch (the last batch may hold fewer).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The number of batches, and so of training steps.
    pub fn steps(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// The number of examples visited.
    pub fn examples(&self) -> usize {
        self.order.len()
    }

    /// Each batch's example indices, in order.
    pub fn chunks(&self) -> std::slice::Chunks<'a, u32> {
        self.order.chunks(self.batch_size)
    }

    /// Each batch gathered from the data set, in order.
    pub fn batches(&self) -> impl Iterator<Item = Batch> + 'a {
        let data = self.data;
        // `new` checked every index, so the gather cannot fail.
        self.chunks().map(move |indices| data.batch(indices))
    }
}

/// Labelled images in the canonical N,C,H,W layout, already normalised.
///
/// Built through [`Dataset::new`], which checks that images and labels agree, so every
/// accessor can trust the invariants: as many labels as images, every label below the class
/// count, images in standard (row-major) layout, and at most `u32::MAX` examples.
///
/// The images are held behind a reference count ([`Dataset::shared_images`]): an adapter can
/// hand them to an engine that keeps its own reference (a numpy array in Python) without a
/// copy, and cloning a data set does not copy them.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    name: String,
    images: ArcArray<f32, Ix4>,
    labels: Array1<u32>,
    class_names: Vec<String>,
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [c, h, w] = self.image_shape();
        write!(
            f,
            "{}: {} examples of {c}×{h}×{w}, {} classes",
            self.name,
            self.len(),
            self.num_classes()
        )
    }
}

impl Dataset {
    /// A data set from normalised images `[N, C, H, W]`, their labels and the class names.
    ///
    /// Fails when the counts differ, a label is not below the number of classes, there are no
    /// classes, or there are more than `u32::MAX` examples.
    pub fn new(
        name: impl Into<String>,
        images: Array4<f32>,
        labels: Array1<u32>,
        class_names: Vec<String>,
    ) -> Result<Self, DataError> {
        let name = name.into();
        if class_names.is_empty() {
            return Err(DataError::InvalidDataset {
                name,
                reason: "no class names; give one name per class".into(),
            });
        }
        if images.len_of(Axis(0)) != labels.len() {
            return Err(DataError::CountMismatch {
                context: name,
                images: images.len_of(Axis(0)),
                labels: labels.len(),
            });
        }
        if u32::try_from(labels.len()).is_err() {
            return Err(DataError::InvalidDataset {
                name,
                reason: format!(
                    "{} examples are more than the {} that u32 indices can address",
                    labels.len(),
                    u32::MAX
                ),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &label)| label as usize >= class_names.len())
        {
            return Err(DataError::LabelOutOfRange {
                context: name,
                index,
                label,
                classes: class_names.len(),
            });
        }
        // Batches are gathered by slicing the flat buffer, which needs the standard layout.
        let images = if images.is_standard_layout() {
            images
        } else {
            images.as_standard_layout().into_owned()
        };
        let images = images.into_shared();
        Ok(Dataset {
            name,
            images,
            labels,
            class_names,
        })
    }

    /// The data set's name, such as `fashion-mnist/train`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The class names, in class-index order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// All images, `[N, C, H, W]`.
    pub fn images(&self) -> ArrayView4<'_, f32> {
        self.images.view()
    }

    /// All images, `[N, C, H, W]`, as a new reference to the data set's own buffer, not a copy:
    /// for an engine that must keep the images beyond a borrow. The buffer is copy-on-write,
    /// so a writer through the returned array gets a copy and never changes the data set.
    pub fn shared_images(&self) -> ArcArray<f32, Ix4> {
        self.images.clone()
    }

    /// All labels, `[N]`.
    pub fn labels(&self) -> ArrayView1<'_, u32> {
        self.labels.view()
    }

    /// The shape of one image: channels, height, width.
    pub fn image_shape(&self) -> [usize; 3] {
        let (_, c, h, w) = self.images.dim();
        [c, h, w]
    }

    /// The examples at `indices`, in that order, or an error for an index beyond the end.
    ///
    /// Each image is one contiguous slice of the data set's buffer, so a batch costs one
    /// `memcpy` per image.
    pub fn try_batch(&self, indices: &[u32]) -> Result<Batch, DataError> {
        let [c, h, w] = self.image_shape();
        let per_image = c * h * w;
        let mut labels = Vec::with_capacity(indices.len());
        let out_of_range = |index: u32| DataError::IndexOutOfRange {
            name: self.name.clone(),
            index,
            len: self.len(),
        };
        let images = if let Some(flat) = self.images.as_slice() {
            let mut data = Vec::with_capacity(indices.len() * per_image);
            for &index in indices {
                // The label lookup bounds the index, and with it the image range, before any
                // arithmetic that could overflow on an absurd index.
                let Some(&label) = self.labels.get(index as usize) else {
                    return Err(out_of_range(index));
                };
                let start = index as usize * per_image;
                let Some(image) = flat.get(start..start + per_image) else {
                    return Err(out_of_range(index));
                };
                data.extend_from_slice(image);
                labels.push(label);
            }
            Array4::from_shape_vec((indices.len(), c, h, w), data).map_err(|error| {
                DataError::InvalidDataset {
                    name: self.name.clone(),
                    reason: error.to_string(),
                }
            })?
        } else {
            // The constructor makes the layout standard, so this branch is a safety net.
            let mut rows = Vec::with_capacity(indices.len());
            for &index in indices {
                let Some(&label) = self.labels.get(index as usize) else {
                    return Err(out_of_range(index));
                };
                rows.push(index as usize);
                labels.push(label);
            }
            self.images.select(Axis(0), &rows)
        };
        Ok(Batch {
            images,
            labels: Array1::from(labels),
        })
    }

    /// The examples at `indices`, in that order.
    ///
    /// # Panics
    ///
    /// When an index is not below [`Dataset::len`]; that is a bug in the caller, since indices
    /// come from [`epoch_order`] over this data set. Use [`Dataset::try_batch`] for indices
    /// from elsewhere.
    pub fn batch(&self, indices: &[u32]) -> Batch {
        self.try_batch(indices)
            .unwrap_or_else(|error| panic!("Dataset::batch: {error}"))
    }

    /// A new data set of the examples at `indices`, in that order, named `name`.
    pub fn select(&self, name: impl Into<String>, indices: &[u32]) -> Result<Dataset, DataError> {
        let batch = self.try_batch(indices)?;
        Dataset::new(name, batch.images, batch.labels, self.class_names.clone())
    }

    /// The first `n` examples (all of them when `n` is larger), for quick runs.
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            name: self.name.clone(),
            images: self
                .images
                .slice(s![..n, .., .., ..])
                .to_owned()
                .into_shared(),
            labels: self.labels.slice(s![..n]).to_owned(),
            class_names: self.class_names.clone(),
        }
    }

    /// A deterministic train/validation split, stratified by class: `(train, validation)`.
    ///
    /// Each class gives `round(n × validation_fraction)` of its `n` examples to the validation
    /// part, so both parts keep the classes' proportions (as scikit-learn's
    /// `train_test_split(stratify=labels)` does); a class of one example stays in training.
    /// Which examples go is decided by one RNG seeded with `seed_from_u64(seed ^ SPLIT_SALT)`
    /// with `SPLIT_SALT = 0x5350_4C49_545F_5631` ("SPLIT_V1"), so the split does not repeat the
    /// first epoch's order: class by class in label order, the class's example indices
    /// (ascending) are shuffled as in [`epoch_order`] and the validation part takes the first of
    /// them. Both parts then keep the original example order. The parts are named
    /// `<name>/train` and `<name>/validation`.
    ///
    /// Fails unless `0 ≤ validation_fraction < 1` and the training part keeps at least one
    /// example.
    pub fn split(
        &self,
        validation_fraction: f32,
        seed: u64,
    ) -> Result<(Dataset, Dataset), DataError> {
        if !(validation_fraction.is_finite() && (0.0..1.0).contains(&validation_fraction)) {
            return Err(DataError::InvalidArgument {
                name: "validation fraction",
                reason: format!("{validation_fraction} is not in [0, 1); pass e.g. 0.1"),
            });
        }
        let len = self.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SPLIT_SALT);
        let mut by_class: Vec<Vec<u32>> = vec![Vec::new(); self.num_classes()];
        for (index, &label) in self.labels.iter().enumerate() {
            if let Some(class) = by_class.get_mut(label as usize) {
                class.push(u32::try_from(index).unwrap_or(u32::MAX));
            }
        }
        let (mut validation, mut train) = (Vec::new(), Vec::new());
        for class in &by_class {
            let count = class.len();
            let n_validation =
                (((count as f64) * f64::from(validation_fraction)).round() as usize).min(count);
            let order = shuffled(count, &mut rng);
            let (to_validation, to_train) = order.split_at(n_validation);
            validation.extend(to_validation.iter().map(|&i| class[i as usize]));
            train.extend(to_train.iter().map(|&i| class[i as usize]));
        }
        if train.is_empty() {
            return Err(DataError::InvalidArgument {
                name: "validation fraction",
                reason: format!(
                    "{validation_fraction} of {len} examples leaves none for training; lower it"
                ),
            });
        }
        validation.sort_unstable();
        train.sort_unstable();
        let train = self.select(format!("{}/train", self.name), &train)?;
        let validation = self.select(format!("{}/validation", self.name), &validation)?;
        Ok((train, validation))
    }
}

/// Salt that separates the split's random stream from the epochs' (ASCII "SPLIT_V1").
const SPLIT_SALT: u64 = 0x5350_4C49_545F_5631;

/// Multiplier that spreads epoch numbers over all 64 bits (2⁶⁴ divided by the golden ratio).
const EPOCH_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The order in which epoch `epoch` visits the examples of a data set of `len`: a permutation
/// of `0..len` that depends only on `(len, seed, epoch)`.
///
/// The algorithm is fixed and portable, so that every backend on every platform sees the same
/// batches:
///
/// 1. The RNG is `rand::rngs::ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15))`
///    (with `epoch` widened to `u64`). `seed_from_u64` expands the 64-bit state into the
///    32-byte ChaCha key with PCG32, as `rand_core` documents.
/// 2. Starting from the identity, a Fisher–Yates shuffle runs `i` from `len - 1` down to 1
///    and swaps positions `i` and `j`, where `j` is uniform in `0..=i`.
/// 3. `j` is drawn with Lemire's multiply-and-reject method on `next_u32`: with `s = i + 1`,
///    `m = next_u32() as u64 * s`; while `(m as u32) < (2³² - s) mod s`, draw again; then
///    `j = m >> 32`.
///
/// `len` larger than `u32::MAX` is capped there, which [`Dataset`] never reaches.
pub fn epoch_order(len: usize, seed: u64, epoch: u32) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ u64::from(epoch).wrapping_mul(EPOCH_MIX));
    shuffled(len, &mut rng)
}

/// A Fisher–Yates shuffle of `0..len` written out here, rather than `rand`'s `shuffle`,
/// because `rand` documents that its shuffles and ranged samples are not value-stable across
/// releases; batch order must never change under a dependency update.
fn shuffled(len: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut order: Vec<u32> = (0..len).collect();
    for i in (1..len).rev() {
        let j = bounded(rng, i + 1);
        order.swap(i as usize, j as usize);
    }
    order
}

/// A uniform integer in `0..bound` by Lemire's nearly-divisionless method (bound ≥ 1).
fn bounded(rng: &mut ChaCha8Rng, bound: u32) -> u32 {
    let bound64 = u64::from(bound);
    let mut m = u64::from(rng.next_u32()) * bound64;
    if (m as u32) < bound {
        // The threshold is 2³² mod bound; values below it would make some results likelier.
        let threshold = bound.wrapping_neg() % bound;
        while (m as u32) < threshold {
            m = u64::from(rng.next_u32()) * bound64;
        }
    }
    (m >> 32) as u32
}

//! Reader of image folders with one subfolder per class, the layout EuroSAT ships in.
//!
//! Everything about the order is fixed so that two runs, on any machine, build the same
//! data set: classes are the subfolders sorted by name, and the files of a class are sorted by
//! name too. The checks are torchvision's `ImageFolder`'s: a class folder without images is
//! refused rather than made a class no example has, and an unreadable image fails the read
//! with one line naming it, unless the caller asks to skip such files.

use std::fs;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageReader};
use ndarray::Array1;

use super::{DataError, Dataset, Normalization};

/// Reads a folder of class subfolders of PNG and JPEG files into a [`Dataset`].
///
/// - Classes are the subfolders of `root` sorted by name (hidden ones, starting with `.`, are
///   skipped); a class's index is its position in that order.
/// - Images are the files whose extension is `png`, `jpg` or `jpeg` in any case, sorted by
///   name; other files are ignored. The decoder is chosen from the file's content.
/// - Each image is converted to 8-bit grey (`channels` 1) or RGB (`channels` 3) and, when its
///   size differs, resized to `height × width` with `image`'s triangle (bilinear) filter.
/// - Pixels become `f32` through `normalization`, in the N,C,H,W layout.
///
/// The data set is named after the folder. A class subfolder without PNG or JPEG files is an
/// error ([`DataError::EmptyClass`]), and so is an image that cannot be read
/// ([`DataError::Image`]); [`read_image_folder_skipping`] skips those instead.
pub fn read_image_folder(
    root: &Path,
    channels: usize,
    height: usize,
    width: usize,
    normalization: &Normalization,
) -> Result<Dataset, DataError> {
    read(root, channels, height, width, normalization, false).map(|(dataset, _)| dataset)
}

/// [`read_image_folder`], skipping the images that cannot be read; returns the data set and
/// the files skipped, in the order they were met. A class whose every image is skipped is
/// still an error.
pub fn read_image_folder_skipping(
    root: &Path,
    channels: usize,
    height: usize,
    width: usize,
    normalization: &Normalization,
) -> Result<(Dataset, Vec<PathBuf>), DataError> {
    read(root, channels, height, width, normalization, true)
}

fn read(
    root: &Path,
    channels: usize,
    height: usize,
    width: usize,
    normalization: &Normalization,
    skip_unreadable: bool,
) -> Result<(Dataset, Vec<PathBuf>), DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::InvalidArgument {
            name: "channels",
            reason: format!(
                "image folders are read as 1 (grey) or 3 (RGB) channels, not {channels}"
            ),
        });
    }
    let (Ok(height32), Ok(width32)) = (u32::try_from(height), u32::try_from(width)) else {
        return Err(DataError::InvalidArgument {
            name: "image size",
            reason: format!("{height}×{width} is too large"),
        });
    };
    if height == 0 || width == 0 {
        return Err(DataError::InvalidArgument {
            name: "image size",
            reason: format!("{height}×{width} has no pixels; give a height and width ≥ 1"),
        });
    }
    normalization.validate(channels)?;
    let (classes, files) = list(root)?;
    let class_names: Vec<String> = classes.iter().map(|class| file_name(class)).collect();

    let per_image = channels * height * width;
    let mut pixels = Vec::with_capacity(files.len().saturating_mul(per_image));
    let mut labels = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    for (path, label) in &files {
        let image = match decode(path) {
            Ok(image) => image,
            Err(DataError::Image { .. }) if skip_unreadable => {
                skipped.push(path.clone());
                continue;
            }
            Err(error) => return Err(error),
        };
        append_chw(&mut pixels, &image, channels, height32, width32);
        labels.push(*label);
    }
    // Skipping may have emptied a class.
    let mut kept = vec![false; classes.len()];
    for &label in &labels {
        if let Some(slot) = kept.get_mut(label as usize) {
            *slot = true;
        }
    }
    if let Some(class) = kept.iter().position(|&kept| !kept) {
        return Err(DataError::EmptyClass {
            path: classes[class].clone(),
        });
    }
    let images = normalization.apply(&pixels, [labels.len(), channels, height, width])?;
    let dataset = Dataset::new(file_name(root), images, Array1::from(labels), class_names)?;
    Ok((dataset, skipped))
}

/// Checks an image folder's layout without decoding an image: the folder exists, has class
/// subfolders, and each holds at least one PNG or JPEG file. `compare` calls it before
/// building anything; the readers check the same.
pub fn check_image_folder(root: &Path) -> Result<(), DataError> {
    list(root).map(|_| ())
}

/// The class folders of `root` in order and the image files with their labels, refusing a
/// folder without classes, without images, or with an empty class.
#[allow(clippy::type_complexity)]
fn list(root: &Path) -> Result<(Vec<PathBuf>, Vec<(PathBuf, u32)>), DataError> {
    if !root.is_dir() {
        return Err(DataError::DirNotFound {
            path: root.to_path_buf(),
        });
    }
    let classes = sorted_entries(root, |path| path.is_dir())?;
    if classes.is_empty() {
        return Err(DataError::NoClasses {
            path: root.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    let mut empty = None;
    for (class_index, class_dir) in classes.iter().enumerate() {
        let label = u32::try_from(class_index).unwrap_or(u32::MAX);
        let images = sorted_entries(class_dir, is_image_file)?;
        if images.is_empty() {
            empty.get_or_insert_with(|| class_dir.clone());
        }
        files.extend(images.into_iter().map(|file| (file, label)));
    }
    if files.is_empty() {
        return Err(DataError::NoImages {
            path: root.to_path_buf(),
        });
    }
    if let Some(path) = empty {
        return Err(DataError::EmptyClass { path });
    }
    Ok((classes, files))
}

/// The non-hidden entries of `dir` that pass `keep`, sorted by name.
fn sorted_entries(dir: &Path, keep: fn(&Path) -> bool) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::io(dir, source);
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if !hidden && keep(&path) {
            entries.push(path);
        }
    }
    // Sorting by the raw file name makes the order independent of the file system's listing.
    entries.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(entries)
}

fn is_image_file(path: &Path) -> bool {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    path.is_file() && matches!(extension.as_deref(), Some("png" | "jpg" | "jpeg"))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Decodes one image; a file that cannot be opened or decoded is [`DataError::Image`], its
/// cause said once.
fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    let unreadable = |reason: String| DataError::Image {
        path: path.to_path_buf(),
        reason,
    };
    ImageReader::open(path)
        .map_err(|error| unreadable(error.to_string()))?
        .with_guessed_format()
        .map_err(|error| unreadable(error.to_string()))?
        .decode()
        .map_err(|error| unreadable(error.to_string()))
}

/// Converts, resizes and appends one image to `out` in C,H,W order.
fn append_chw(out: &mut Vec<u8>, image: &DynamicImage, channels: usize, height: u32, width: u32) {
    if channels == 1 {
        let mut grey = image.to_luma8();
        if grey.dimensions() != (width, height) {
            grey = imageops::resize(&grey, width, height, FilterType::Triangle);
        }
        out.extend_from_slice(grey.as_raw());
    } else {
        let mut rgb = image.to_rgb8();
        if rgb.dimensions() != (width, height) {
            rgb = imageops::resize(&rgb, width, height, FilterType::Triangle);
        }
        // The decoder gives interleaved H,W,C pixels; the canonical layout wants planes.
        let raw = rgb.as_raw();
        for channel in 0..3 {
            out.extend(raw.iter().skip(channel).step_by(3));
        }
    }
}

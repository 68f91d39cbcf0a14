//! Reader of image folders with one subfolder per class, the layout EuroSAT ships in.
//!
//! Everything about the order is fixed so that two runs, on any machine, build the same
//! data set: classes are the subfolders sorted by name, and the files of a class are sorted by
//! name too.

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
/// The data set is named after the folder.
pub fn read_image_folder(
    root: &Path,
    channels: usize,
    height: usize,
    width: usize,
    normalization: &Normalization,
) -> Result<Dataset, DataError> {
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
    let mut class_names = Vec::with_capacity(classes.len());
    let mut files = Vec::new();
    for (class_index, class_dir) in classes.iter().enumerate() {
        class_names.push(file_name(class_dir));
        let label = u32::try_from(class_index).unwrap_or(u32::MAX);
        for file in sorted_entries(class_dir, is_image_file)? {
            files.push((file, label));
        }
    }
    if files.is_empty() {
        return Err(DataError::NoImages {
            path: root.to_path_buf(),
        });
    }

    let per_image = channels * height * width;
    let mut pixels = Vec::with_capacity(files.len().saturating_mul(per_image));
    let mut labels = Vec::with_capacity(files.len());
    for (path, label) in &files {
        let image = decode(path)?;
        append_chw(&mut pixels, &image, channels, height32, width32);
        labels.push(*label);
    }
    let images = normalization.apply(&pixels, [files.len(), channels, height, width])?;
    Dataset::new(file_name(root), images, Array1::from(labels), class_names)
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

fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    let image_error = |source| DataError::Image {
        path: path.to_path_buf(),
        source,
    };
    ImageReader::open(path)
        .map_err(|source| DataError::io(path, source))?
        .with_guessed_format()
        .map_err(|source| DataError::io(path, source))?
        .decode()
        .map_err(image_error)
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

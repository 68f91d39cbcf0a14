//! The small Fashion-MNIST subset bundled in `fixtures/`, and how it is made.
//!
//! The subset is the first `n` examples of each split, not a random sample, so that anyone can
//! rebuild it from the full data with nothing but this function and check it against the
//! committed files.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::DataError;
use super::builtin::{STANDARD_FILES, find_file};
use super::idx::{IdxImages, read_idx_images, read_idx_labels, write_idx_images, write_idx_labels};

/// The name of the manifest written next to the subset's files, in `sha256sum` format.
pub const MANIFEST: &str = "SHA256SUMS";

/// Writes the first `n_train` training and first `n_test` test examples of the IDX data set in
/// `src_dir` to `dst_dir`, as gzip IDX files with the four standard names plus `.gz`, and a
/// `SHA256SUMS` manifest of those files that `sha256sum -c` can check.
///
/// Fails when a split has fewer examples than asked for.
pub fn write_subset(
    src_dir: &Path,
    dst_dir: &Path,
    n_train: usize,
    n_test: usize,
) -> Result<(), DataError> {
    fs::create_dir_all(dst_dir).map_err(|source| DataError::io(dst_dir, source))?;
    let [train_images, train_labels, test_images, test_labels] = STANDARD_FILES;
    let mut manifest = String::new();
    for (images_stem, labels_stem, n) in [
        (train_images, train_labels, n_train),
        (test_images, test_labels, n_test),
    ] {
        let (images, labels) = read_first(src_dir, images_stem, labels_stem, n)?;
        let images_path = dst_dir.join(format!("{images_stem}.gz"));
        let labels_path = dst_dir.join(format!("{labels_stem}.gz"));
        write_idx_images(&images_path, &images)?;
        write_idx_labels(&labels_path, &labels)?;
        for path in [images_path, labels_path] {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            manifest.push_str(&format!("{}  {name}\n", sha256_file(&path)?));
        }
    }
    let manifest_path = dst_dir.join(MANIFEST);
    fs::write(&manifest_path, manifest).map_err(|source| DataError::io(&manifest_path, source))
}

/// Checks every file listed in `dir/SHA256SUMS` against its digest.
pub fn verify_manifest(dir: &Path) -> Result<(), DataError> {
    let manifest_path = dir.join(MANIFEST);
    let manifest = fs::read_to_string(&manifest_path)
        .map_err(|source| DataError::io(&manifest_path, source))?;
    for line in manifest.lines().filter(|line| !line.trim().is_empty()) {
        let Some((expected, name)) = line.split_once("  ") else {
            return Err(DataError::InvalidArgument {
                name: "manifest",
                reason: format!(
                    "{}: line {line:?} is not `<sha256>  <file>`; regenerate the subset",
                    manifest_path.display()
                ),
            });
        };
        let path = dir.join(name);
        let actual = sha256_file(&path)?;
        if actual != expected {
            return Err(DataError::Checksum {
                file: path.display().to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok(())
}

/// The SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let bytes = fs::read(path).map_err(|source| DataError::io(path, source))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The first `n` images and labels of one split.
fn read_first(
    dir: &Path,
    images_stem: &str,
    labels_stem: &str,
    n: usize,
) -> Result<(IdxImages, Vec<u8>), DataError> {
    let find = |stem: &str| {
        find_file(dir, stem).ok_or_else(|| DataError::DatasetNotFound {
            name: dir.display().to_string(),
            tried: vec![dir.join(stem), dir.join(format!("{stem}.gz"))],
            hint: "point at a directory holding the full data set's four IDX files".into(),
        })
    };
    let images_path = find(images_stem)?;
    let labels_path = find(labels_stem)?;
    let mut images = read_idx_images(&images_path)?;
    let mut labels = read_idx_labels(&labels_path)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            context: format!("{} and {}", images_path.display(), labels_path.display()),
            images: images.count,
            labels: labels.len(),
        });
    }
    if n > images.count || n == 0 {
        return Err(DataError::InvalidArgument {
            name: "subset size",
            reason: format!(
                "cannot take the first {n} examples of {}, which has {}; ask for 1 to {}",
                images_path.display(),
                images.count,
                images.count
            ),
        });
    }
    images.pixels.truncate(n * images.rows * images.cols);
    images.count = n;
    labels.truncate(n);
    Ok((images, labels))
}

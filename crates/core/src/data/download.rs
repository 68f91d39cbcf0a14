//! Checksummed downloads of the built-in data sets (feature `download`).
//!
//! Each file is streamed to a `.partial` file next to its destination while it is hashed, and
//! renamed into place only when its SHA-256 matches the pinned one. An interrupted or corrupt
//! download therefore never leaves a file under the final name, and the data-set lookup, which
//! looks only for final names, never picks up half a file.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::DataError;
use super::builtin::{BuiltinDataset, PinnedFile};
use super::subset::sha256_file;

/// The largest file the client accepts; Fashion-MNIST's biggest is about 26 MB.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Downloads the four files of `which` into `<cache_dir>/datasets/<name>` and returns that
/// directory.
///
/// Files already there with the pinned digest are kept. `base_url_override` replaces the
/// canonical mirror (a local copy, a proxy); the files must still match the pinned digests.
/// The bundled subset needs no download and is an error here.
pub fn download(
    which: BuiltinDataset,
    cache_dir: &Path,
    base_url_override: Option<&str>,
) -> Result<PathBuf, DataError> {
    let Some(mirror) = base_url_override.or(which.mirror()) else {
        return Err(DataError::InvalidArgument {
            name: "data set",
            reason: format!("{which} is bundled with the repository and needs no download"),
        });
    };
    let dest = cache_dir.join("datasets").join(which.name());
    fetch_verified(mirror, which.pinned_files(), &dest)?;
    Ok(dest)
}

/// Downloads `files` from `base_url` into `dest`, checking each against its pinned SHA-256
/// (the gzip bytes, [`PinnedFile::sha256`]).
///
/// This is what [`download`] does with the built-in tables; it takes the table as an argument
/// so that other mirrors and tests can use their own.
pub fn fetch_verified(
    base_url: &str,
    files: &[PinnedFile<'_>],
    dest: &Path,
) -> Result<(), DataError> {
    fs::create_dir_all(dest).map_err(|source| DataError::io(dest, source))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .build()
        .into();
    for file in files {
        let target = dest.join(file.name);
        if target.is_file() && sha256_file(&target)? == file.sha256 {
            continue;
        }
        let url = format!("{}/{}", base_url.trim_end_matches('/'), file.name);
        let partial = dest.join(format!("{}.partial", file.name));
        let result = fetch_one(&agent, &url, &partial).and_then(|actual| {
            if actual == file.sha256 {
                fs::rename(&partial, &target).map_err(|source| DataError::io(&target, source))
            } else {
                Err(DataError::Checksum {
                    file: url.clone(),
                    expected: file.sha256.to_string(),
                    actual,
                })
            }
        });
        if result.is_err() {
            // Whatever arrived is worthless without a matching digest; the error that matters
            // is the download's, so a failure to clean up is not reported over it.
            let _ = fs::remove_file(&partial);
        }
        result?;
    }
    Ok(())
}

/// Streams `url` into `partial`, returning the SHA-256 of what arrived.
fn fetch_one(agent: &ureq::Agent, url: &str, partial: &Path) -> Result<String, DataError> {
    let failed = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    let response = agent
        .get(url)
        .call()
        .map_err(|error| failed(error.to_string()))?;
    let mut body = response
        .into_body()
        .into_with_config()
        .limit(MAX_FILE_BYTES)
        .reader();
    let io = |source| DataError::io(partial, source);
    let mut out = BufWriter::new(File::create(partial).map_err(io)?);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(failed(error.to_string())),
        };
        let chunk = buffer.get(..n).unwrap_or_default();
        hasher.update(chunk);
        out.write_all(chunk).map_err(io)?;
    }
    let file = out.into_inner().map_err(|error| io(error.into_error()))?;
    // The data must be on disk before the rename makes it look complete.
    file.sync_all().map_err(io)?;
    Ok(hex::encode(hasher.finalize()))
}

//! Results handed from one test process to another, for engines that cannot share a process
//! (TensorFlow's C library and CPython crash together): `cargo xtask test` runs the first
//! engine's test binary, which [`hand_off`]s what it computed into the directory that
//! [`HANDOFF_VARIABLE`] names, then the second's, which [`take_over`]s it and judges.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// The variable naming the directory of the handoff.
pub const HANDOFF_VARIABLE: &str = "PARALLAX_HANDOFF";

/// The directory that [`HANDOFF_VARIABLE`] names, or an error saying where such checks run.
pub fn handoff_dir() -> Result<PathBuf> {
    std::env::var_os(HANDOFF_VARIABLE)
        .map(PathBuf::from)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{HANDOFF_VARIABLE} is not set: checks across processes run in `cargo xtask test`"
            ))
        })
}

/// Writes `value` as `dir/name.json`, for [`take_over`] in another process.
pub fn hand_off<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|error| Error::io(dir, error))?;
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string(value).map_err(|error| Error::Format {
        path: path.clone(),
        message: error.to_string(),
    })?;
    std::fs::write(&path, text).map_err(|error| Error::io(&path, error))
}

/// Reads `dir/name.json`, which [`hand_off`] wrote.
pub fn take_over<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<T> {
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|error| Error::io(&path, error))?;
    serde_json::from_str(&text).map_err(|error| Error::Format {
        path,
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_off_value_is_taken_over_whole_and_a_missing_one_is_named() {
        let dir = std::env::temp_dir().join(format!("parallax-handoff-{}", std::process::id()));
        let value = (vec![0.5, 0.25], vec![1u32, 2, 3]);
        hand_off(&dir, "mlp", &value).unwrap();
        assert_eq!(
            take_over::<(Vec<f64>, Vec<u32>)>(&dir, "mlp").unwrap(),
            value
        );
        let missing = take_over::<u32>(&dir, "cnn").unwrap_err().to_string();
        assert!(missing.contains("cnn.json"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

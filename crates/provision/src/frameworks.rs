//! The frameworks' virtual environment: PyTorch 2.9.0, TensorFlow 2.21 and Keras 3.15 for the
//! Python backends (crates/python), installed by pip from `crates/provision/frameworks/requirements.lock`,
//! every wheel checked against its pinned SHA-256 (`--require-hashes`).
//!
//! The environment is made from the Python whose shared library the backends embed
//! (`PARALLAX_PYTHON`, else `python3`), so that the interpreter that runs the frameworks is
//! the one they were installed for. It lives under `<cache>/frameworks/`, named after the lock
//! and the interpreter, so that a new lock or another Python gets an environment of its own.
//! The torch wheel that setup already downloaded for libtorch is reused (`--find-links`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{cache_dir, fetch, lock, wheels_dir};
use crate::error::{Error, Result};

/// The pinned requirements, compiled in so that the binary and the hashes it installs never
/// disagree.
const LOCK: &str = include_str!("../frameworks/requirements.lock");

/// The Python minor version the lock's wheels are for.
const PYTHON_VERSION: &str = "3.11";

/// The stamp written last, once pip has installed everything: its absence means "not ready".
const STAMP: &str = ".parallax-complete";

/// Bytes the environment takes once installed (torch with its NVIDIA libraries, TensorFlow,
/// Keras), measured, and what pip downloads for it when nothing is cached; for the messages
/// and the free-space check.
const INSTALLED_BYTES: u64 = 8_700_000_000;
const DOWNLOAD_BYTES: u64 = 3_700_000_000;

/// A provisioned environment, and the interpreter the backends embed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frameworks {
    /// The base interpreter's executable: pyo3 builds against it (`PYO3_PYTHON`).
    pub python: PathBuf,
    /// The virtual environment (`PARALLAX_FRAMEWORKS_VENV`).
    pub venv: PathBuf,
    /// The directory of the interpreter's shared library, which the loader must find first:
    /// the worker links `libpython3.11.so.1.0`, and a system directory may hold another
    /// Python's library of that name (Debian's, beside pyenv's).
    pub lib_dir: PathBuf,
}

/// What the chosen Python says about itself.
#[derive(Debug, Deserialize)]
struct Interpreter {
    version: String,
    executable: PathBuf,
    shared: bool,
    library: Option<PathBuf>,
}

/// Asks `python` for its version, its real executable (not a pyenv shim) and its shared
/// library.
fn interpreter(python: &std::ffi::OsStr) -> Result<Interpreter> {
    let script = r#"
import json, os, sys, sysconfig
lib = sysconfig.get_config_var("LIBDIR") or ""
name = sysconfig.get_config_var("INSTSONAME") or ""
path = os.path.join(lib, name) if lib and name else None
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2],
    "executable": os.path.realpath(sys.executable),
    "shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")),
    "library": path if path and os.path.exists(path) else None,
}))
"#;
    let shown = python.to_string_lossy();
    let output = Command::new(python)
        .args(["-c", script])
        .output()
        .map_err(|source| Error::Run {
            program: format!(
                "{shown}: install Python {PYTHON_VERSION}, or set PARALLAX_PYTHON to one"
            ),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Machine(format!(
            "{shown} failed to describe itself: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|error| Error::Machine(format!("{shown} printed no description: {error}")))
}

/// The interpreter the frameworks run in, checked: Python 3.11 with its shared library.
fn chosen_interpreter() -> Result<Interpreter> {
    let python = fetch::python();
    let found = interpreter(&python)?;
    let shown = python.to_string_lossy();
    if found.version != PYTHON_VERSION {
        return Err(Error::Machine(format!(
            "{shown} is Python {}, but the frameworks' lock is for CPython {PYTHON_VERSION}: set PARALLAX_PYTHON to a Python {PYTHON_VERSION}",
            found.version
        )));
    }
    if !found.shared || found.library.is_none() {
        return Err(Error::Machine(format!(
            "{shown} ({}) has no shared library (libpython{PYTHON_VERSION}.so), which the Python backends embed: install one built with --enable-shared (Debian: apt-get install libpython{PYTHON_VERSION}), and set PARALLAX_PYTHON to it",
            found.executable.display()
        )));
    }
    Ok(found)
}

/// The environment's directory for this lock and interpreter.
fn venv_dir(cache: &Path, executable: &Path) -> PathBuf {
    let mut digest = Sha256::new();
    digest.update(LOCK.as_bytes());
    digest.update(executable.as_os_str().as_encoded_bytes());
    let digest = hex::encode(digest.finalize());
    cache.join("frameworks").join(format!(
        "py{}-{}",
        PYTHON_VERSION.replace('.', ""),
        &digest[..12]
    ))
}

/// The environment when it is complete, without installing anything.
pub fn present() -> Option<Frameworks> {
    let found = chosen_interpreter().ok()?;
    let venv = venv_dir(&cache_dir(), &found.executable);
    let lib_dir = found.library.as_deref()?.parent()?.to_path_buf();
    venv.join(STAMP).is_file().then_some(Frameworks {
        python: found.executable,
        venv,
        lib_dir,
    })
}

/// The frameworks' environment, installed first when it is missing or incomplete, with pip's
/// progress on stderr.
pub fn ensure() -> Result<Frameworks> {
    let found = chosen_interpreter()?;
    let cache = cache_dir();
    let venv = venv_dir(&cache, &found.executable);
    let lib_dir = found
        .library
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            Error::Machine("the interpreter's shared library has no directory".into())
        })?;
    let ready = Frameworks {
        python: found.executable.clone(),
        venv: venv.clone(),
        lib_dir,
    };
    if venv.join(STAMP).is_file() {
        return Ok(ready);
    }
    fs::create_dir_all(&cache)
        .map_err(|source| Error::io("create the cache directory", &cache, source))?;
    let _lock = lock::acquire(&cache)?;
    // Another setup may have installed it while this one waited.
    if venv.join(STAMP).is_file() {
        return Ok(ready);
    }
    install(&found.executable, &venv, &cache)?;
    Ok(ready)
}

/// Makes the environment afresh and installs the lock into it.
fn install(python: &Path, venv: &Path, cache: &Path) -> Result<()> {
    fetch::ensure_space(cache, INSTALLED_BYTES + DOWNLOAD_BYTES)?;
    eprintln!(
        "setup: installing PyTorch 2.9.0, TensorFlow 2.21.0 and Keras 3.15.1 into {} (PyPI's torch wheel brings its NVIDIA libraries: up to {} to download, {} on disk)",
        venv.display(),
        indicatif::DecimalBytes(DOWNLOAD_BYTES),
        indicatif::DecimalBytes(INSTALLED_BYTES)
    );
    let start = Instant::now();
    if venv.exists() {
        fs::remove_dir_all(venv)
            .map_err(|source| Error::io("remove the incomplete", &venv, source))?;
    }
    let status = Command::new(python)
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .map_err(|source| Error::Run {
            program: python.display().to_string(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Machine(format!(
            "`{} -m venv` failed: install the venv module (Debian: apt-get install python{PYTHON_VERSION}-venv)",
            python.display()
        )));
    }
    let requirements = venv.join("requirements.lock");
    fs::write(&requirements, LOCK).map_err(|source| Error::io("write", &requirements, source))?;
    let status = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--require-hashes",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--progress-bar",
            "on",
            "--find-links",
        ])
        .arg(wheels_dir(cache))
        .arg("-r")
        .arg(&requirements)
        .status()
        .map_err(|source| Error::Run {
            program: "pip in the frameworks' environment".into(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Install(format!(
            "pip could not install the frameworks (its messages are above): check the network (pip honours HTTPS_PROXY and PIP_INDEX_URL); `cargo xtask setup` retries"
        )));
    }
    fs::write(venv.join(STAMP), "parallax frameworks, format 1\n")
        .map_err(|source| Error::io("write", venv.join(STAMP), source))?;
    eprintln!(
        "setup: the frameworks are ready in {} ({:.0} s)",
        venv.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_pins_every_requirement_by_hash() {
        let pins: Vec<&str> = LOCK
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .collect();
        // Distribution names compare with `-` and `_` alike, as pip normalises them.
        let normal = |text: &str| text.to_lowercase().replace('_', "-");
        for wanted in [
            "torch==2.9.0",
            "tensorflow-cpu==2.21.0",
            "keras==3.15.1",
            "numpy==",
        ] {
            assert!(
                pins.iter().any(|line| normal(line).starts_with(wanted)),
                "the lock has no {wanted}"
            );
        }
        for line in pins {
            assert!(
                line.contains("==") && line.contains(" --hash=sha256:"),
                "not pinned by version and hash: {line}"
            );
        }
    }

    #[test]
    fn another_lock_or_interpreter_gets_another_environment() {
        let cache = Path::new("/c");
        let one = venv_dir(cache, Path::new("/usr/bin/python3.11"));
        let other = venv_dir(cache, Path::new("/opt/python/bin/python3.11"));
        assert_ne!(one, other);
        assert!(one.starts_with("/c/frameworks"));
    }
}

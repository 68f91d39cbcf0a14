//! Getting the pinned wheels into `<cache>/wheels`: hash checks, free space, and `pip download`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};

use indicatif::{DecimalBytes, ProgressBar};
use sha2::{Digest, Sha256};

use super::pins::{Pins, Wheel};
use super::progress;
use crate::error::{Error, Result};

/// The interpreter that runs pip: `PARALLAX_PYTHON`, else `python3`.
pub fn python() -> OsString {
    std::env::var_os("PARALLAX_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OsString::from("python3"))
}

/// The SHA-256 of a file, lowercase hex, advancing `bar` by the bytes read.
pub fn sha256_file(path: &Path, bar: &ProgressBar) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bar.inc(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What the cache holds for one wheel.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached {
    /// The file is there and its hash matches the pin.
    Valid,
    /// No file, or one of the wrong size, which is an interrupted or foreign download.
    Missing,
    /// The file has the right size but the wrong hash: corrupt or tampered with.
    Corrupt,
}

/// Checks the cached copy of `wheel` in `dir`, hashing it only when its size is right.
pub fn check_cached(wheel: &Wheel, dir: &Path, bar: &ProgressBar) -> Result<Cached> {
    let path = dir.join(&wheel.file);
    match fs::metadata(&path) {
        Ok(meta) if meta.len() == wheel.size => {
            let digest =
                sha256_file(&path, bar).map_err(|source| Error::io("read", &path, source))?;
            Ok(if digest == wheel.sha256 {
                Cached::Valid
            } else {
                Cached::Corrupt
            })
        }
        Ok(_) => Ok(Cached::Missing),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Cached::Missing),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The deepest existing ancestor of `path`, for asking the file system about free space.
fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

/// Fails with one line saying how much space is missing, when `needed` bytes don't fit under `dir`.
pub fn ensure_space(dir: &Path, needed: u64) -> Result<()> {
    let probe = existing_ancestor(dir);
    let available = fs4::available_space(probe)
        .map_err(|source| Error::io("query the free space under", &probe, source))?;
    check_space(dir, needed, available)
}

/// The decision of [`ensure_space`], apart from the system call so that tests can drive it.
fn check_space(dir: &Path, needed: u64, available: u64) -> Result<()> {
    if available < needed {
        return Err(Error::Machine(format!(
            "not enough disk space for setup in {}: it needs {}, {} is free; free some space, or set PARALLAX_CACHE to a directory on a larger disk",
            dir.display(),
            DecimalBytes(needed),
            DecimalBytes(available)
        )));
    }
    Ok(())
}

/// Fails with one line saying what to install, when `python -m pip` cannot run.
pub fn ensure_pip(python: &OsString) -> Result<()> {
    let shown = python.to_string_lossy();
    let hint = "install pip (for example `apt-get install python3-pip`), or set PARALLAX_PYTHON to a Python that has it";
    match Command::new(python)
        .args(["-m", "pip", "--version"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(_) => {
            return Err(Error::Machine(format!(
                "`{shown} -m pip` does not work, and setup downloads the wheels with it: {hint}"
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Machine(format!(
                "{shown} was not found, and setup downloads the wheels with pip: {hint}"
            )));
        }
        Err(source) => Err(Error::Run {
            program: shown.into_owned(),
            source,
        }),
    }
}

/// Splits wheels into pip runs in which no distribution appears twice.
///
/// The CUDA builds of torch and TensorFlow pin different versions of the same NVIDIA
/// libraries, and pip refuses two versions of one name in one requirements file.
pub fn batches<'a>(wheels: &[&'a Wheel]) -> Vec<Vec<&'a Wheel>> {
    let mut batches: Vec<Vec<&Wheel>> = Vec::new();
    for &wheel in wheels {
        match batches
            .iter_mut()
            .find(|b| b.iter().all(|w| w.name() != wheel.name()))
        {
            Some(batch) => batch.push(wheel),
            None => batches.push(vec![wheel]),
        }
    }
    batches
}

/// A requirements file in pip's hash-checking mode.
pub fn requirements(wheels: &[&Wheel]) -> String {
    wheels
        .iter()
        .map(|w| format!("{} --hash=sha256:{}\n", w.requirement, w.sha256))
        .collect()
}

/// Downloads `wheels` with pip (see [`ensure_pip`]) into `wheels_dir`, through a private
/// staging directory, checking each file's hash before it is renamed into place.
pub fn download(pins: &Pins, wheels: &[&Wheel], wheels_dir: &Path) -> Result<()> {
    let python = python();
    let staging = wheels_dir.join(format!(".partial-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|source| Error::io("remove", &staging, source))?;
    }
    let tmp = staging.join("tmp");
    fs::create_dir_all(&tmp).map_err(|source| Error::io("create", &tmp, source))?;
    let result = download_into(pins, wheels, &python, &staging, &tmp, wheels_dir);
    // Whatever happened, the staging directory holds nothing that the cache should keep.
    let _ = fs::remove_dir_all(&staging);
    result
}

fn download_into(
    pins: &Pins,
    wheels: &[&Wheel],
    python: &OsString,
    staging: &Path,
    tmp: &Path,
    wheels_dir: &Path,
) -> Result<()> {
    for (i, batch) in batches(wheels).iter().enumerate() {
        let requirements_file = staging.join(format!("requirements-{i}.txt"));
        fs::write(&requirements_file, requirements(batch))
            .map_err(|source| Error::io("write", &requirements_file, source))?;
        run_pip(pins, python, &requirements_file, staging, tmp)?;
    }
    let total = wheels.iter().map(|w| w.size).sum();
    let bar = progress::bytes_bar(total, "checking");
    for wheel in wheels {
        let staged = staging.join(&wheel.file);
        if !staged.exists() {
            return Err(Error::Install(format!(
                "pip finished but did not save {}; run `cargo xtask setup` again, and report it if it persists",
                wheel.file
            )));
        }
        let digest =
            sha256_file(&staged, &bar).map_err(|source| Error::io("read", &staged, source))?;
        if digest != wheel.sha256 {
            return Err(Error::Install(format!(
                "{} from the package index has SHA-256 {digest}, not the {} pinned in crates/provision/wheels.toml; check your pip index (PIP_INDEX_URL) or proxy",
                wheel.file, wheel.sha256
            )));
        }
        let target = wheels_dir.join(&wheel.file);
        fs::rename(&staged, &target)
            .map_err(|source| Error::io("move the wheel to", &target, source))?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Runs one `pip download`, showing its output on our stderr and turning a failure into one line.
fn run_pip(
    pins: &Pins,
    python: &OsString,
    requirements_file: &Path,
    dest: &Path,
    tmp: &Path,
) -> Result<()> {
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
    ])
    .args([
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-input",
    ])
    .args(["--python-version", &pins.pip.python_version])
    .args(["--implementation", &pins.pip.implementation])
    .args(["--abi", &pins.pip.abi]);
    for platform in &pins.pip.platforms {
        cmd.args(["--platform", platform]);
    }
    cmd.arg("-r").arg(requirements_file).arg("-d").arg(dest);
    // pip stages downloads in TMPDIR before copying them out; keep that on the cache's disk,
    // which the free-space check covered, rather than on a possibly small /tmp.
    cmd.env("TMPDIR", tmp);
    // pip's progress bar goes to its stdout: send it to our stderr, so that our stdout stays
    // clean for `eval "$(cargo xtask env)"`, and the bar still shows on a terminal.
    let stderr_copy = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| Error::Run {
            program: "pip (its output to stderr)".into(),
            source,
        })?;
    cmd.stdout(Stdio::from(stderr_copy))
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().map_err(|source| Error::Run {
        program: python.to_string_lossy().into_owned(),
        source,
    })?;
    let pipe = child
        .stderr
        .take()
        .ok_or_else(|| Error::Install("pip's stderr was not captured".into()))?;
    // Pass pip's messages through while keeping the last ones to explain a failure.
    let tail = std::thread::spawn(move || {
        let mut tail = VecDeque::new();
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if tail.len() == 60 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail.into_iter().collect::<Vec<_>>().join("\n")
    });
    let status = child.wait().map_err(|source| Error::Run {
        program: "pip".into(),
        source,
    })?;
    let tail = tail.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    Err(Error::Install(explain_pip_failure(&tail, dest)))
}

/// One line for a failed `pip download`, from what it printed.
fn explain_pip_failure(output: &str, dest: &Path) -> String {
    const NETWORK: [&str; 10] = [
        "NewConnectionError",
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "Connection refused",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ProxyError",
        "SSLError",
    ];
    let wheels = dest.parent().unwrap_or(dest).display();
    if NETWORK.iter().any(|needle| output.contains(needle)) {
        format!(
            "cannot reach the Python package index (pypi.org, or the index pip is configured with): check the network or proxy (pip honours HTTPS_PROXY and PIP_INDEX_URL), or copy the wheels that `cargo xtask setup --dry-run` lists into {wheels}"
        )
    } else if output.contains("No space left on device") {
        format!(
            "the disk filled up while pip downloaded into {wheels}: free some space, or set PARALLAX_CACHE to a directory on a larger disk"
        )
    } else if output.contains("DO NOT MATCH THE HASHES") {
        "the package index served a wheel whose SHA-256 differs from crates/provision/wheels.toml: check your pip index (PIP_INDEX_URL) or proxy".to_string()
    } else {
        let last_error = output
            .lines()
            .rev()
            .find(|l| l.starts_with("ERROR:"))
            .unwrap_or("pip printed no error line")
            .trim_start_matches("ERROR:")
            .trim();
        format!("pip could not download the pinned wheels ({last_error}); its output is above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wheel(requirement: &str, file: &str, bytes: &[u8]) -> Wheel {
        Wheel {
            requirement: requirement.into(),
            file: file.into(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            components: vec![],
        }
    }

    #[test]
    fn a_flipped_byte_in_a_cached_wheel_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = super::super::unpack::tests::small_zip(&[("torch/lib/libc10.so", b"c10")]);
        let pinned = wheel("torch==2.9.0", "torch-2.9.0-x.whl", &bytes);
        let bar = ProgressBar::hidden();
        assert_eq!(
            check_cached(&pinned, dir.path(), &bar).unwrap(),
            Cached::Missing
        );
        fs::write(dir.path().join(&pinned.file), &bytes).unwrap();
        assert_eq!(
            check_cached(&pinned, dir.path(), &bar).unwrap(),
            Cached::Valid
        );
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x01;
        fs::write(dir.path().join(&pinned.file), &flipped).unwrap();
        assert_eq!(
            check_cached(&pinned, dir.path(), &bar).unwrap(),
            Cached::Corrupt
        );
        // A truncated file is an interrupted download, fetched again without alarm.
        let mut file = File::create(dir.path().join(&pinned.file)).unwrap();
        file.write_all(&bytes[..10]).unwrap();
        assert_eq!(
            check_cached(&pinned, dir.path(), &bar).unwrap(),
            Cached::Missing
        );
    }

    #[test]
    fn the_same_distribution_never_shares_a_pip_run() {
        let a = wheel("nvidia-cudnn-cu12==9.10.2.21", "a.whl", b"a");
        let b = wheel("nvidia-cudnn-cu12==9.28.0.42", "b.whl", b"b");
        let c = wheel("torch==2.9.0", "c.whl", b"c");
        let runs = batches(&[&a, &c, &b]);
        let files: Vec<Vec<&str>> = runs
            .iter()
            .map(|r| r.iter().map(|w| w.file.as_str()).collect())
            .collect();
        assert_eq!(files, [vec!["a.whl", "c.whl"], vec!["b.whl"]]);
        assert_eq!(
            requirements(&runs[1]),
            format!("nvidia-cudnn-cu12==9.28.0.42 --hash=sha256:{}\n", b.sha256)
        );
    }

    #[test]
    fn pip_failures_become_one_actionable_line() {
        let dest = Path::new("/c/wheels/.partial-1");
        let offline = "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(...)'\nERROR: No matching distribution found for torch==2.9.0";
        let line = explain_pip_failure(offline, dest);
        assert!(
            line.starts_with("cannot reach the Python package index"),
            "{line}"
        );
        assert!(line.contains("/c/wheels"), "{line}");
        let full = explain_pip_failure("OSError: [Errno 28] No space left on device", dest);
        assert!(full.contains("PARALLAX_CACHE"), "{full}");
        let other = explain_pip_failure("ERROR: Invalid requirement: 'x'", dest);
        assert!(other.contains("(Invalid requirement: 'x')"), "{other}");
        assert!(!other.contains('\n'));
    }

    #[test]
    fn too_little_space_is_one_line_naming_both_sizes() {
        let err = check_space(Path::new("/c"), 2_500_000_000, 1_000_000_000).unwrap_err();
        let line = err.to_string();
        assert!(line.contains("needs 2.50 GB, 1.00 GB is free"), "{line}");
        assert!(check_space(Path::new("/c"), 10, 11).is_ok());
    }

    #[test]
    fn a_missing_python_is_one_line_saying_what_to_install() {
        let err = ensure_pip(&OsString::from("/nonexistent/python3"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("was not found") && err.contains("PARALLAX_PYTHON"),
            "{err}"
        );
    }
}

//! Provisioning: libtorch 2.9.0 and the TensorFlow 2.21 C library from pinned PyPI wheels into
//! a per-user cache ([`ensure`], which `compare`, `test`, `bench` and `env` call first), and
//! the Python frameworks' virtual environment ([`ensure_frameworks`]).
//!
//! docs/provisioning.md describes the cache layout, the pins (`wheels.toml` and
//! `frameworks/requirements.lock`, both compiled in) and the overrides.

pub mod error;
mod fetch;
pub mod frameworks;
mod lock;
mod native_env;
mod pins;
mod progress;
mod unpack;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use indicatif::DecimalBytes;
use parallax_registry::NativeLibrary;
use sha2::{Digest, Sha256};

pub use error::{Error, Result};
pub use frameworks::Frameworks;
pub use native_env::{Format, NativeEnv, render};
use pins::{Component, Pins, Wheel};

/// Provisions whatever is missing, with progress on stderr, and returns the environment that
/// builds and runs need. When everything is present it only reads a few small stamp files.
pub fn ensure(cuda: bool) -> Result<NativeEnv> {
    provision(cuda, false).map(|(env, _)| env)
}

/// Adds the frameworks' virtual environment to `native`, installing it first when it is
/// missing (`cargo xtask setup` does the same); the Python backends need it to build and run.
pub fn ensure_frameworks(native: &mut NativeEnv) -> Result<()> {
    native.frameworks = Some(frameworks::ensure()?);
    Ok(())
}

/// The cache root: `PARALLAX_CACHE` if set, else `$XDG_CACHE_HOME/parallax`, else
/// `~/.cache/parallax`. Wheels, native libraries and data sets live under it.
pub fn cache_dir() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = var("PARALLAX_CACHE")
        .or_else(|| {
            var("XDG_CACHE_HOME")
                .filter(|p| p.is_absolute())
                .map(|p| p.join("parallax"))
        })
        .or_else(|| var("HOME").map(|home| home.join(".cache/parallax")))
        .unwrap_or_else(|| std::env::temp_dir().join("parallax-cache"));
    // LIBTORCH and the rpaths are used from other directories, so they must be absolute.
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Where the extracted libraries live.
fn native_dir(cache: &Path) -> PathBuf {
    cache.join("native")
}

/// Where the downloaded wheels live.
fn wheels_dir(cache: &Path) -> PathBuf {
    cache.join("wheels")
}

/// Where libtorch comes from.
#[derive(Debug, PartialEq, Eq)]
enum Torch {
    /// Provisioned by setup.
    Managed(Component),
    /// A directory the user named with `LIBTORCH`.
    Own(PathBuf),
    /// Python's torch, through torch-sys's `LIBTORCH_USE_PYTORCH`.
    Python,
}

/// Where the TensorFlow C library comes from.
#[derive(Debug, PartialEq, Eq)]
enum Tensorflow {
    /// Provisioned by setup.
    Managed(Component),
    /// A directory the user named with `PARALLAX_TF_DIR`.
    Own(PathBuf),
}

/// Reads the overrides from the environment. A `LIBTORCH` inside the cache is one that
/// `cargo xtask env` printed, not the user's own, so it doesn't count.
fn sources(cache: &Path, cuda: bool) -> (Torch, Tensorflow) {
    sources_from(cache, cuda, |name| std::env::var_os(name))
}

/// [`sources`], reading variables through `lookup` so that tests need not change the environment.
fn sources_from(
    cache: &Path,
    cuda: bool,
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> (Torch, Tensorflow) {
    let var = |name| lookup(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let torch = match var("LIBTORCH") {
        Some(dir) if !dir.starts_with(native_dir(cache)) => Torch::Own(dir),
        _ if var("LIBTORCH_USE_PYTORCH").is_some() => Torch::Python,
        _ => Torch::Managed(if cuda {
            Component::LibtorchCuda
        } else {
            Component::LibtorchCpu
        }),
    };
    let tf = match var("PARALLAX_TF_DIR") {
        Some(dir) => Tensorflow::Own(dir),
        None => Tensorflow::Managed(if cuda {
            Component::TensorflowCuda
        } else {
            Component::TensorflowCpu
        }),
    };
    (torch, tf)
}

/// The components that setup itself must provide.
fn managed((torch, tf): &(Torch, Tensorflow)) -> Vec<Component> {
    let mut out = Vec::new();
    if let Torch::Managed(c) = torch {
        out.push(*c);
    }
    if let Tensorflow::Managed(c) = tf {
        out.push(*c);
    }
    out
}

/// What a run of [`provision`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was there already.
    Present,
    /// This run fetched or extracted something.
    Provisioned,
    /// Something was missing, but another setup holding the lock provided it.
    ProvisionedByAnother,
}

/// Does the work of [`ensure`] and `cargo xtask setup`: provisions what is missing and says
/// what it did.
pub fn provision(cuda: bool, verify: bool) -> Result<(NativeEnv, Outcome)> {
    let pins = Pins::get()?;
    let cache = cache_dir();
    let sources = sources(&cache, cuda);
    let native = native_dir(&cache);
    let stale = |components: Vec<Component>| -> Vec<Component> {
        components
            .into_iter()
            .filter(|&c| {
                verify || !unpack::is_current(c, pins, &native.join(&pins.component(c).dir))
            })
            .collect()
    };
    let mut outcome = Outcome::Present;
    let components_missing = !stale(managed(&sources)).is_empty();
    if components_missing || needs_tf_shim(&cache, &sources.1) {
        if components_missing {
            check_platform()?;
        }
        fs::create_dir_all(&cache).map_err(|source| Error::Cache {
            path: cache.clone(),
            source,
        })?;
        let lock = lock::acquire(&cache)?;
        outcome = if lock.waited {
            Outcome::ProvisionedByAnother
        } else {
            Outcome::Present
        };
        // Another setup may have done the work while this one waited for the lock.
        let missing = stale(managed(&sources));
        if !missing.is_empty() {
            unpack::remove_leftovers(&native)?;
            unpack::remove_leftovers(&wheels_dir(&cache))?;
            fetch_and_extract(pins, &cache, &missing, verify)?;
            outcome = Outcome::Provisioned;
        }
        if let Tensorflow::Own(dir) = &sources.1
            && write_tf_shim(&cache, dir)?
        {
            outcome = Outcome::Provisioned;
        }
    }
    Ok((environment(pins, &cache, &sources)?, outcome))
}

/// Setup downloads Linux x86-64 wheels; elsewhere the user brings their own libraries.
fn check_platform() -> Result<()> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err(Error::Machine(format!(
            "setup provisions libtorch and TensorFlow only on x86-64 Linux; here, set LIBTORCH (or LIBTORCH_USE_PYTORCH=1) and PARALLAX_TF_DIR to your own installs (docs/provisioning.md)"
        )));
    }
    Ok(())
}

/// Gets the wheels of `missing` into the cache and extracts each component.
fn fetch_and_extract(pins: &Pins, cache: &Path, missing: &[Component], verify: bool) -> Result<()> {
    let wheels_dir = wheels_dir(cache);
    fs::create_dir_all(&wheels_dir).map_err(|source| Error::io("create", &wheels_dir, source))?;
    let mut needed: Vec<&Wheel> = Vec::new();
    for &component in missing {
        for wheel in pins.wheels_for(component) {
            if !needed.iter().any(|w| w.file == wheel.file) {
                needed.push(wheel);
            }
        }
    }
    let names: Vec<String> = missing.iter().map(|c| c.describe(pins)).collect();
    eprintln!(
        "setup: provisioning {} into {}",
        names.join(" and "),
        cache.display()
    );

    // Hash what is already cached: a wheel is used only if it matches its pin.
    let cached: Vec<&Wheel> = needed
        .iter()
        .copied()
        .filter(|w| wheels_dir.join(&w.file).exists())
        .collect();
    let mut to_fetch: Vec<&Wheel> = Vec::new();
    if !cached.is_empty() {
        let bytes: u64 = cached.iter().map(|w| w.size).sum();
        eprintln!(
            "setup: checking {} in the cache ({})",
            count(cached.len(), "wheel"),
            DecimalBytes(bytes)
        );
    }
    let bar = progress::bytes_bar(cached.iter().map(|w| w.size).sum(), "checking");
    for &wheel in &needed {
        match fetch::check_cached(wheel, &wheels_dir, &bar)? {
            fetch::Cached::Valid => {}
            fetch::Cached::Missing => to_fetch.push(wheel),
            fetch::Cached::Corrupt => {
                bar.suspend(|| {
                    eprintln!(
                        "setup: the cached {} does not match its pinned SHA-256 (corrupt or tampered with); fetching it again",
                        wheel.file
                    )
                });
                fs::remove_file(wheels_dir.join(&wheel.file))
                    .map_err(|source| Error::io("remove", wheels_dir.join(&wheel.file), source))?;
                to_fetch.push(wheel);
            }
        }
    }
    bar.finish_and_clear();

    if !to_fetch.is_empty() {
        fetch::ensure_pip(&fetch::python())?;
    }
    let download: u64 = to_fetch.iter().map(|w| w.size).sum();
    let unpacked: u64 = missing
        .iter()
        .map(|&c| pins.component(c).unpacked_bytes)
        .sum();
    if to_fetch.is_empty() {
        eprintln!(
            "setup: nothing to download ({} already cached); extracting {}",
            count(needed.len(), "wheel"),
            DecimalBytes(unpacked)
        );
    } else {
        eprintln!(
            "setup: downloading {} of {} ({}) with pip, then extracting {}",
            to_fetch.len(),
            count(needed.len(), "wheel"),
            DecimalBytes(download),
            DecimalBytes(unpacked)
        );
    }
    // pip keeps a copy of each download in its temporary directory until it exits.
    let margin = 100_000_000;
    fetch::ensure_space(cache, 2 * download + unpacked + margin)?;
    if !to_fetch.is_empty() {
        let start = Instant::now();
        fetch::download(pins, &to_fetch, &wheels_dir)?;
        eprintln!(
            "setup: downloaded and checked {} in {:.1} s",
            DecimalBytes(download),
            start.elapsed().as_secs_f64()
        );
    }
    let native = native_dir(cache);
    fs::create_dir_all(&native).map_err(|source| Error::io("create", &native, source))?;
    for &component in missing {
        let start = Instant::now();
        let dir = unpack::install(component, pins, &wheels_dir, &native)?;
        eprintln!(
            "setup: {} is ready in {} ({:.1} s)",
            component.describe(pins),
            dir.display(),
            start.elapsed().as_secs_f64()
        );
    }
    if verify {
        eprintln!("setup: every cached wheel matched its pin or was fetched again");
    }
    Ok(())
}

/// `n` and `noun`, with an `s` unless `n` is 1.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// The directory where setup keeps the pkg-config file for a user's own TensorFlow in `dir`,
/// one per directory so that switching between installs needs no cleanup.
fn tf_shim_dir(cache: &Path, dir: &Path) -> PathBuf {
    let digest = hex::encode(Sha256::digest(dir.as_os_str().as_encoded_bytes()));
    native_dir(cache).join(format!("tensorflow-own-{}", &digest[..16]))
}

/// The libraries in a user's TensorFlow directory to link as `-ltensorflow` and
/// `-ltensorflow_framework`: the C library's own names, or the pip package's.
fn own_tf_libraries(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let main = ["libtensorflow.so.2", "libtensorflow_cc.so.2"].map(|n| dir.join(n));
    let framework = dir.join("libtensorflow_framework.so.2");
    match main.into_iter().find(|p| p.exists()) {
        Some(main) if framework.exists() => Ok((main, framework)),
        _ => {
            return Err(Error::Override(format!(
                "PARALLAX_TF_DIR={} holds no libtensorflow.so.2 (or libtensorflow_cc.so.2) with libtensorflow_framework.so.2: point it at the lib/ of a libtensorflow archive, or at the tensorflow/ directory of a pip-installed TensorFlow",
                dir.display()
            )));
        }
    }
}

/// The stamp of a TensorFlow shim: the libraries it points at.
fn tf_shim_stamp(dir: &Path) -> Result<String> {
    let (main, framework) = own_tf_libraries(dir)?;
    Ok(format!(
        "parallax own tensorflow, format 1\n{}\n{}\n",
        main.display(),
        framework.display()
    ))
}

fn needs_tf_shim(cache: &Path, tf: &Tensorflow) -> bool {
    let Tensorflow::Own(dir) = tf else {
        return false;
    };
    let stamp = fs::read_to_string(tf_shim_dir(cache, dir).join(unpack::STAMP));
    // An unusable directory also "needs" the shim, so that writing it reports the problem.
    !matches!((stamp, tf_shim_stamp(dir)), (Ok(have), Ok(want)) if have == want)
}

/// Writes the pkg-config file and unversioned links for a user's own TensorFlow, which
/// tensorflow-sys needs to find it; returns whether anything was written.
fn write_tf_shim(cache: &Path, dir: &Path) -> Result<bool> {
    let (main, framework) = own_tf_libraries(dir)?;
    let shim = tf_shim_dir(cache, dir);
    let stamp = tf_shim_stamp(dir)?;
    if fs::read_to_string(shim.join(unpack::STAMP)).is_ok_and(|have| have == stamp) {
        return Ok(false);
    }
    let native = native_dir(cache);
    let staging = native.join(format!(".tmp-tensorflow-own-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(staging.join("lib"))
        .map_err(|source| Error::io("create", staging.join("lib"), source))?;
    fs::create_dir_all(staging.join("pkgconfig"))
        .map_err(|source| Error::io("create", staging.join("pkgconfig"), source))?;
    std::os::unix::fs::symlink(&main, staging.join("lib/libtensorflow.so")).map_err(|source| {
        Error::io(
            "create the link",
            staging.join("lib/libtensorflow.so"),
            source,
        )
    })?;
    std::os::unix::fs::symlink(&framework, staging.join("lib/libtensorflow_framework.so"))
        .map_err(|source| {
            Error::io(
                "create the link",
                staging.join("lib/libtensorflow_framework.so"),
                source,
            )
        })?;
    // The shim's lib/ has the names the linker wants; the user's directory, also searched,
    // is where the loader finds the versioned names recorded in the binaries.
    let pc = unpack::pkg_config_file(
        &[&shim.join("lib"), dir],
        "2",
        &format!(
            "the TensorFlow C library in {}, named by PARALLAX_TF_DIR",
            dir.display()
        ),
    );
    fs::write(staging.join("pkgconfig/tensorflow.pc"), pc)
        .map_err(|source| Error::io("write", staging.join("pkgconfig/tensorflow.pc"), source))?;
    fs::write(staging.join(unpack::STAMP), stamp)
        .map_err(|source| Error::io("write", staging.join(unpack::STAMP), source))?;
    unpack::replace_dir(&staging, &shim)?;
    eprintln!(
        "setup: TensorFlow from PARALLAX_TF_DIR={} (pkg-config file in {})",
        dir.display(),
        shim.display()
    );
    Ok(true)
}

/// The environment for the chosen sources; checks users' own directories as it goes.
fn environment(pins: &Pins, cache: &Path, (torch, tf): &(Torch, Tensorflow)) -> Result<NativeEnv> {
    let native = native_dir(cache);
    let mut env = NativeEnv {
        // Once installed, every build and run sees the frameworks, so that the variables pyo3
        // reads never change between commands (which would rebuild it).
        frameworks: frameworks::present(),
        ..NativeEnv::default()
    };
    match torch {
        Torch::Managed(c) => {
            let libtorch = native.join(&pins.component(*c).dir).join("torch");
            env.lib_dirs.push(libtorch.join("lib"));
            env.libtorch = Some(libtorch);
        }
        Torch::Own(dir) => {
            check_own_libtorch(dir, &pins.component(Component::LibtorchCpu).version)?;
            env.lib_dirs.push(dir.join("lib"));
            env.libtorch = Some(dir.clone());
        }
        Torch::Python => {
            env.use_pytorch = true;
            env.lib_dirs.push(python_torch_dir()?.join("lib"));
        }
    }
    match tf {
        Tensorflow::Managed(c) => {
            let root = native.join(&pins.component(*c).dir);
            env.pkg_config_dirs.push(root.join("pkgconfig"));
            env.lib_dirs.push(root.join("tensorflow"));
        }
        Tensorflow::Own(dir) => {
            env.pkg_config_dirs
                .push(tf_shim_dir(cache, dir).join("pkgconfig"));
            env.lib_dirs.push(dir.clone());
        }
    }
    Ok(env)
}

/// Checks that a user's `LIBTORCH` looks like libtorch `version`, so that a wrong one fails
/// here in one line rather than in torch-sys's build script.
fn check_own_libtorch(dir: &Path, version: &str) -> Result<()> {
    if !dir.join("lib").is_dir() || !dir.join("include").is_dir() {
        return Err(Error::Override(format!(
            "LIBTORCH={} has no lib/ and include/: point it at a libtorch {version} directory, or unset it to let setup provision one",
            dir.display()
        )));
    }
    let header = dir.join(NativeLibrary::LIBTORCH_VERSION_HEADER);
    if let Ok(text) = fs::read_to_string(&header)
        && let Some(found) = parallax_registry::libtorch_header_version(&text)
        && found != version
    {
        return Err(Error::Override(format!(
            "LIBTORCH={} is libtorch {found}, but tch 0.22 needs {version}: point it at libtorch {version}, or unset it to let setup provision one",
            dir.display()
        )));
    }
    Ok(())
}

/// The directory of Python's torch package, found without importing torch (which takes seconds).
fn python_torch_dir() -> Result<PathBuf> {
    // torch-sys runs `python` inside a virtualenv and `python3` elsewhere; ask the same one.
    let python = if std::env::var_os("VIRTUAL_ENV").is_some() {
        "python"
    } else {
        "python3"
    };
    let script = "import importlib.util as u; s = u.find_spec('torch'); print(s.submodule_search_locations[0] if s else '')";
    let out = Command::new(python).args(["-c", script]).output();
    match out {
        Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => Ok(
            PathBuf::from(String::from_utf8_lossy(out.stdout.trim_ascii()).into_owned()),
        ),
        _ => {
            return Err(Error::Override(format!(
                "LIBTORCH_USE_PYTORCH is set, but `{python}` has no torch package: `pip install torch==2.9.0`, or unset LIBTORCH_USE_PYTORCH to let setup provision libtorch"
            )));
        }
    }
}

/// Prints what `setup` would fetch and extract, changing nothing.
pub fn dry_run(cuda: bool) -> Result<()> {
    let pins = Pins::get()?;
    let cache = cache_dir();
    let sources = sources(&cache, cuda);
    match &sources.0 {
        Torch::Own(dir) => println!("libtorch: LIBTORCH={} (nothing to fetch)", dir.display()),
        Torch::Python => {
            println!("libtorch: Python's torch, LIBTORCH_USE_PYTORCH (nothing to fetch)")
        }
        Torch::Managed(_) => {}
    }
    if let Tensorflow::Own(dir) = &sources.1 {
        println!(
            "TensorFlow: PARALLAX_TF_DIR={} (nothing to fetch)",
            dir.display()
        );
    }
    let wheels = wheels_dir(&cache);
    let native = native_dir(&cache);
    let (mut total, mut to_download, mut unpacked) = (0, 0, 0);
    let mut seen: Vec<&str> = Vec::new();
    for component in managed(&sources) {
        let dir = native.join(&pins.component(component).dir);
        let present = unpack::is_current(component, pins, &dir);
        println!(
            "{} -> {}{}",
            component.describe(pins),
            dir.display(),
            if present { " (present)" } else { "" }
        );
        if !present {
            unpacked += pins.component(component).unpacked_bytes;
        }
        for wheel in pins.wheels_for(component) {
            let cached =
                fs::metadata(wheels.join(&wheel.file)).is_ok_and(|m| m.len() == wheel.size);
            let state = if cached { "cached" } else { "to fetch" };
            println!(
                "  {:<40} {:>10}  {state:<8}  {}",
                wheel.requirement,
                DecimalBytes(wheel.size).to_string(),
                wheel.file
            );
            if !seen.contains(&wheel.file.as_str()) {
                seen.push(&wheel.file);
                total += wheel.size;
                if !cached && !present {
                    to_download += wheel.size;
                }
            }
        }
    }
    println!(
        "total: {}, {}; to download now: {}; to extract: {}; cache: {}",
        count(seen.len(), "wheel"),
        DecimalBytes(total),
        DecimalBytes(to_download),
        DecimalBytes(unpacked),
        cache.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_own_libtorch_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_own_libtorch(dir.path(), "2.9.0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no lib/ and include/"), "{err}");
        let api = dir.path().join("include/torch/csrc/api/include/torch");
        fs::create_dir_all(&api).unwrap();
        fs::create_dir(dir.path().join("lib")).unwrap();
        fs::write(
            api.join("version.h"),
            "#define TORCH_VERSION \\\n  \"2.8.0\"\n",
        )
        .unwrap();
        let err = check_own_libtorch(dir.path(), "2.9.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is libtorch 2.8.0, but tch 0.22 needs 2.9.0"),
            "{err}"
        );
        fs::write(
            api.join("version.h"),
            "#define TORCH_VERSION \\\n  \"2.9.0\"\n",
        )
        .unwrap();
        check_own_libtorch(dir.path(), "2.9.0").unwrap();
    }

    #[test]
    fn an_own_tensorflow_gets_a_pkg_config_shim_once() {
        let cache = tempfile::tempdir().unwrap();
        let tf = tempfile::tempdir().unwrap();
        let err = write_tf_shim(cache.path(), tf.path())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("PARALLAX_TF_DIR="), "{err}");
        for name in ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2"] {
            fs::write(tf.path().join(name), "").unwrap();
        }
        let source = Tensorflow::Own(tf.path().to_path_buf());
        assert!(needs_tf_shim(cache.path(), &source));
        assert!(write_tf_shim(cache.path(), tf.path()).unwrap());
        assert!(!needs_tf_shim(cache.path(), &source));
        assert!(!write_tf_shim(cache.path(), tf.path()).unwrap());
        let shim = tf_shim_dir(cache.path(), tf.path());
        let link = fs::read_link(shim.join("lib/libtensorflow.so")).unwrap();
        assert_eq!(link, tf.path().join("libtensorflow_cc.so.2"));
        let pc = fs::read_to_string(shim.join("pkgconfig/tensorflow.pc")).unwrap();
        assert!(pc.contains(&format!("-L{}", tf.path().display())), "{pc}");
    }

    #[test]
    fn overrides_are_read_from_the_environment() {
        let cache = Path::new("/c");
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.into())
            }
        };
        let plain = sources_from(cache, false, vars(&[]));
        assert_eq!(
            plain,
            (
                Torch::Managed(Component::LibtorchCpu),
                Tensorflow::Managed(Component::TensorflowCpu)
            )
        );
        let cuda = sources_from(cache, true, vars(&[("LIBTORCH", "")]));
        assert_eq!(
            cuda,
            (
                Torch::Managed(Component::LibtorchCuda),
                Tensorflow::Managed(Component::TensorflowCuda)
            )
        );
        // A LIBTORCH that `cargo xtask env` exported points into the cache: still managed.
        let exported = sources_from(
            cache,
            true,
            vars(&[("LIBTORCH", "/c/native/libtorch-2.9.0-cpu/torch")]),
        );
        assert_eq!(exported.0, Torch::Managed(Component::LibtorchCuda));
        let own = sources_from(
            cache,
            false,
            vars(&[
                ("LIBTORCH", "/opt/libtorch"),
                ("PARALLAX_TF_DIR", "/opt/tf/lib"),
            ]),
        );
        assert_eq!(
            own,
            (
                Torch::Own("/opt/libtorch".into()),
                Tensorflow::Own("/opt/tf/lib".into())
            )
        );
        let python = sources_from(cache, false, vars(&[("LIBTORCH_USE_PYTORCH", "1")]));
        assert_eq!(python.0, Torch::Python);
    }

    #[test]
    fn the_environment_points_at_the_managed_trees() {
        let pins = Pins::get().unwrap();
        let cache = Path::new("/c");
        let sources = (
            Torch::Managed(Component::LibtorchCpu),
            Tensorflow::Managed(Component::TensorflowCpu),
        );
        let env = environment(pins, cache, &sources).unwrap();
        assert_eq!(
            env.libtorch.as_deref(),
            Some(Path::new("/c/native/libtorch-2.9.0-cpu/torch"))
        );
        assert_eq!(
            env.pkg_config_dirs,
            [PathBuf::from("/c/native/tensorflow-2.21.0-cpu/pkgconfig")]
        );
        assert_eq!(
            env.lib_dirs,
            [
                PathBuf::from("/c/native/libtorch-2.9.0-cpu/torch/lib"),
                PathBuf::from("/c/native/tensorflow-2.21.0-cpu/tensorflow")
            ]
        );
    }
}

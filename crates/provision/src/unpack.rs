//! Extracting a component's files from its wheels into `<cache>/native/<dir>`, all or nothing.
//!
//! Files go to a temporary directory next to the final one; the stamp is written last, and
//! only then is the directory renamed into place. A directory with the right stamp is
//! therefore complete, and checking the stamp is all that a later run has to do.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use zip::ZipArchive;

use super::pins::{Component, Pins};
use crate::error::{Error, Result};

/// The stamp's file name inside a component directory.
pub const STAMP: &str = ".parallax-stamp";

/// First line of every stamp; bump it when the extracted layout changes, so old trees are redone.
const STAMP_FORMAT: &str = "parallax native tree, format 1";

/// The stamp that a complete `dir` for `component` holds: the wheels it came from, by hash,
/// and its own path, since the pkg-config file inside records that path.
pub fn stamp_text(component: Component, pins: &Pins, dir: &Path) -> String {
    let pin = pins.component(component);
    let mut text = format!(
        "{STAMP_FORMAT}\ncomponent {} {}\npath {}\n",
        component.key(),
        pin.version,
        dir.display()
    );
    for wheel in pins.wheels_for(component) {
        text.push_str(&format!("wheel {} sha256:{}\n", wheel.file, wheel.sha256));
    }
    text
}

/// Whether `dir` holds a complete extraction of the currently pinned wheels.
pub fn is_current(component: Component, pins: &Pins, dir: &Path) -> bool {
    fs::read_to_string(dir.join(STAMP)).is_ok_and(|text| text == stamp_text(component, pins, dir))
}

/// The members of one wheel to extract, with their total size.
struct Selection {
    wheel: PathBuf,
    indices: Vec<usize>,
    bytes: u64,
}

/// Lists what `component` takes from the wheel at `path`, from the zip's central directory.
fn select(component: Component, path: &Path) -> Result<Selection> {
    let archive = open(path)?;
    let mut indices = Vec::new();
    let mut bytes = 0;
    for i in 0..archive.len() {
        let entry = archive.by_index_data(i).map_err(wheel_error(path))?;
        let name = entry.name().map_err(wheel_error(path))?;
        if entry.is_dir() || !component.keeps(&name) {
            continue;
        }
        if entry.is_symlink() {
            return Err(Error::Contents(format!(
                "{} holds a symbolic link {name:?}, which no wheel should",
                path.display()
            )));
        }
        indices.push(i);
        bytes += entry.size();
    }
    Ok(Selection {
        wheel: path.to_path_buf(),
        indices,
        bytes,
    })
}

/// zip's error about the wheel at `path`, as an [`Error::Wheel`].
fn wheel_error(path: &Path) -> impl Fn(zip::result::ZipError) -> Error + '_ {
    move |source| Error::Wheel {
        path: path.to_path_buf(),
        source,
    }
}

fn open(path: &Path) -> Result<ZipArchive<BufReader<File>>> {
    let file = File::open(path).map_err(|source| Error::io("open", &path, source))?;
    ZipArchive::new(BufReader::new(file)).map_err(|source| Error::Wheel {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the selected members under `dest`, keeping their paths from the wheel.
fn extract(selection: &Selection, dest: &Path, bar: &ProgressBar) -> Result<()> {
    let mut archive = open(&selection.wheel)?;
    for &i in &selection.indices {
        let mut entry = archive.by_index(i).map_err(wheel_error(&selection.wheel))?;
        // `enclosed_name` refuses absolute paths and `..`, so no member can land outside `dest`.
        let Some(relative) = entry.enclosed_name() else {
            return Err(Error::Contents(format!(
                "{} has a member with an unsafe path",
                selection.wheel.display()
            )));
        };
        let target = dest.join(relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|source| Error::io("create", &parent, source))?;
        }
        let mut out = BufWriter::with_capacity(
            1 << 20,
            File::create(&target).map_err(|source| Error::io("create", &target, source))?,
        );
        // Reading to the end makes the zip crate check the member's CRC-32.
        io::copy(&mut entry, &mut bar.wrap_write(&mut out))
            .map_err(|source| Error::io("extract", &target, source))?;
        out.flush()
            .map_err(|source| Error::io("extract", &target, source))?;
        let mode = entry.unix_mode().map_or(0o644, |m| m & 0o777) | 0o600;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
            .map_err(|source| Error::io("set the permissions of", &target, source))?;
    }
    Ok(())
}

/// Extracts `component` from its cached, already verified wheels into `native_dir`, replacing
/// any previous tree; returns the component's directory.
pub fn install(
    component: Component,
    pins: &Pins,
    wheels_dir: &Path,
    native_dir: &Path,
) -> Result<PathBuf> {
    let pin = pins.component(component);
    let final_dir = native_dir.join(&pin.dir);
    let staging = native_dir.join(format!(".tmp-{}-{}", pin.dir, std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|source| Error::io("remove", &staging, source))?;
    }
    fs::create_dir_all(&staging).map_err(|source| Error::io("create", &staging, source))?;
    let result = fill(component, pins, wheels_dir, &staging, &final_dir)
        .and_then(|()| replace_dir(&staging, &final_dir));
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result.map(|()| final_dir)
}

fn fill(
    component: Component,
    pins: &Pins,
    wheels_dir: &Path,
    staging: &Path,
    final_dir: &Path,
) -> Result<()> {
    let selections = pins
        .wheels_for(component)
        .iter()
        .map(|wheel| select(component, &wheels_dir.join(&wheel.file)))
        .collect::<Result<Vec<_>>>()?;
    let total: u64 = selections.iter().map(|s| s.bytes).sum();
    let files: usize = selections.iter().map(|s| s.indices.len()).sum();
    eprintln!(
        "setup: extracting {} ({files} files, {}) into {}",
        component.describe(pins),
        indicatif::DecimalBytes(total),
        final_dir.display()
    );
    let bar = super::progress::bytes_bar(total, "extracting");
    for selection in &selections {
        extract(selection, staging, &bar)?;
    }
    bar.finish_and_clear();
    if component.is_torch() {
        finish_libtorch(component, pins, wheels_dir, staging)?;
    } else {
        finish_tensorflow(component, pins, staging, final_dir)?;
    }
    // Last: the stamp marks the tree complete.
    fs::write(staging.join(STAMP), stamp_text(component, pins, final_dir))
        .map_err(|source| Error::io("write", staging.join(STAMP), source))?;
    Ok(())
}

/// Adds what torch-sys expects of a LIBTORCH directory that the wheel doesn't have.
fn finish_libtorch(
    component: Component,
    pins: &Pins,
    wheels_dir: &Path,
    root: &Path,
) -> Result<()> {
    let lib = root.join("torch/lib");
    for name in ["libtorch_cpu.so", "libc10.so", "libgomp.so.1"] {
        if !lib.join(name).is_file() {
            return Err(Error::Contents(format!(
                "the torch wheel had no torch/lib/{name}"
            )));
        }
    }
    // torch-sys links `-lgomp`: point it at the wheel's OpenMP rather than whatever the system has.
    symlink("libgomp.so.1", lib.join("libgomp.so"))
        .map_err(|source| Error::io("create the link", lib.join("libgomp.so"), source))?;
    if component == Component::LibtorchCpu {
        // torch-sys always links `-ltorch`. The real libtorch.so only pulls in libtorch_cuda
        // (1 GB, and cuDNN, cuBLAS… behind it); linking libtorch_cpu.so under that name gives
        // a CPU build the same symbols with nothing extra to load.
        symlink("libtorch_cpu.so", lib.join("libtorch.so"))
            .map_err(|source| Error::io("create the link", lib.join("libtorch.so"), source))?;
    }
    // torch-sys checks `build-version` against the libtorch it expects; take it from the wheel.
    let torch = pins
        .wheels_for(component)
        .into_iter()
        .find(|w| w.name() == "torch")
        .ok_or_else(|| Error::Pins("no torch wheel is pinned for libtorch".into()))?;
    let mut version_py = String::new();
    let wheel = wheels_dir.join(&torch.file);
    open(&wheel)?
        .by_name("torch/version.py")
        .map_err(|_| Error::Contents("the torch wheel has no torch/version.py".into()))?
        .read_to_string(&mut version_py)
        .map_err(|source| Error::io("read torch/version.py from", &wheel, source))?;
    let version = parallax_registry::torch_wheel_version(&version_py)
        .ok_or_else(|| Error::Contents("torch/version.py has no __version__".into()))?;
    let expected = &pins.component(component).version;
    if version.split('+').next() != Some(expected.as_str()) {
        return Err(Error::Contents(format!(
            "the torch wheel is version {version}, but crates/provision/wheels.toml says {expected}"
        )));
    }
    fs::write(root.join("torch/build-version"), format!("{version}\n"))
        .map_err(|source| Error::io("write", root.join("torch/build-version"), source))?;
    Ok(())
}

/// Adds the unversioned names that `-ltensorflow` needs, and the pkg-config file that
/// tensorflow-sys looks for before it tries to download.
fn finish_tensorflow(
    component: Component,
    pins: &Pins,
    root: &Path,
    final_dir: &Path,
) -> Result<()> {
    let lib = root.join("tensorflow");
    symlink("libtensorflow_cc.so.2", lib.join("libtensorflow.so"))
        .map_err(|source| Error::io("create the link", lib.join("libtensorflow.so"), source))?;
    symlink(
        "libtensorflow_framework.so.2",
        lib.join("libtensorflow_framework.so"),
    )
    .map_err(|source| {
        Error::io(
            "create the link",
            lib.join("libtensorflow_framework.so"),
            source,
        )
    })?;
    let pkgconfig = root.join("pkgconfig");
    fs::create_dir_all(&pkgconfig).map_err(|source| Error::io("create", &pkgconfig, source))?;
    let description = format!(
        "TensorFlow C library from the {} wheel, provisioned by cargo xtask setup",
        if component.is_cuda() {
            "tensorflow"
        } else {
            "tensorflow-cpu"
        }
    );
    let pc = pkg_config_file(
        &[&final_dir.join("tensorflow")],
        &pins.component(component).version,
        &description,
    );
    fs::write(pkgconfig.join("tensorflow.pc"), pc)
        .map_err(|source| Error::io("write", pkgconfig.join("tensorflow.pc"), source))?;
    Ok(())
}

/// A `tensorflow.pc` linking `-ltensorflow -ltensorflow_framework` from `lib_dirs`.
pub fn pkg_config_file(lib_dirs: &[&Path], version: &str, description: &str) -> String {
    let search: Vec<String> = lib_dirs
        .iter()
        .map(|d| format!("-L{}", d.display()))
        .collect();
    format!(
        "Name: tensorflow\nDescription: {description}\nVersion: {version}\nLibs: {} -ltensorflow -ltensorflow_framework\n",
        search.join(" ")
    )
}

/// Renames `new` to `target`, moving an existing `target` aside first and deleting it after,
/// so that `target` is never a mix of the two.
pub fn replace_dir(new: &Path, target: &Path) -> Result<()> {
    if fs::symlink_metadata(target).is_ok() {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let old = target.with_file_name(format!(".old-{name}-{}", std::process::id()));
        fs::rename(target, &old)
            .map_err(|source| Error::io("move aside the old", &target, source))?;
        fs::rename(new, target).map_err(|source| Error::io("create", &target, source))?;
        fs::remove_dir_all(&old).map_err(|source| Error::io("remove", &old, source))?;
    } else {
        fs::rename(new, target).map_err(|source| Error::io("create", &target, source))?;
    }
    Ok(())
}

/// Removes the temporary directories that an interrupted setup left in `dir`.
///
/// Call it only while holding the cache lock: another setup's live temporaries look the same.
pub fn remove_leftovers(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("read", dir, source))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if [".tmp-", ".old-", ".partial-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            fs::remove_dir_all(entry.path())
                .map_err(|source| Error::io("remove", entry.path(), source))?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    /// A small deflated zip with the given members, standing in for a wheel.
    pub fn small_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o755);
        for (name, bytes) in members {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn only_kept_members_are_extracted_at_their_wheel_paths() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("tf.whl");
        fs::write(
            &wheel,
            small_zip(&[
                ("tensorflow/libtensorflow_cc.so.2", b"cc"),
                ("tensorflow/libtensorflow_framework.so.2", b"framework"),
                ("tensorflow/python/_pywrap.so", b"python"),
            ]),
        )
        .unwrap();
        let selection = select(Component::TensorflowCpu, &wheel).unwrap();
        assert_eq!(selection.bytes, 11);
        let out = dir.path().join("out");
        extract(&selection, &out, &ProgressBar::hidden()).unwrap();
        assert_eq!(
            fs::read(out.join("tensorflow/libtensorflow_cc.so.2")).unwrap(),
            b"cc"
        );
        assert!(!out.join("tensorflow/python").exists());
        let mode = fs::metadata(out.join("tensorflow/libtensorflow_cc.so.2"))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o755);
    }

    #[test]
    fn a_member_escaping_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("evil.whl");
        // `keeps` accepts anything under torch/include/, so only `enclosed_name` stands in the way.
        fs::write(
            &wheel,
            small_zip(&[("torch/include/../../../../escaped.h", b"x")]),
        )
        .unwrap();
        let selection = select(Component::LibtorchCpu, &wheel).unwrap();
        let out = dir.path().join("a/b/out");
        let err = extract(&selection, &out, &ProgressBar::hidden()).unwrap_err();
        assert!(err.to_string().contains("unsafe path"), "{err}");
        assert!(!dir.path().join("escaped.h").exists());
    }

    #[test]
    fn a_stamp_is_current_only_for_the_same_pins_and_path() {
        let pins = Pins::get().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("libtorch");
        fs::create_dir(&tree).unwrap();
        assert!(!is_current(Component::LibtorchCpu, pins, &tree));
        fs::write(
            tree.join(STAMP),
            stamp_text(Component::LibtorchCpu, pins, &tree),
        )
        .unwrap();
        assert!(is_current(Component::LibtorchCpu, pins, &tree));
        assert!(!is_current(Component::LibtorchCuda, pins, &tree));
        // A moved tree has a stale pkg-config path inside, so it no longer counts.
        let moved = dir.path().join("moved");
        fs::rename(&tree, &moved).unwrap();
        assert!(!is_current(Component::LibtorchCpu, pins, &moved));
        let text = stamp_text(Component::LibtorchCpu, pins, &moved);
        assert!(
            text.contains(
                "sha256:51de31219c97c51cf4bf2be94d622e3deb5dcc526c6dc00e97c17eaec0fc1d67"
            )
        );
    }

    #[test]
    fn replacing_a_directory_leaves_only_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (new, target) = (dir.path().join(".tmp-x"), dir.path().join("x"));
        fs::create_dir(&new).unwrap();
        fs::write(new.join("f"), "new").unwrap();
        fs::create_dir(&target).unwrap();
        fs::write(target.join("f"), "old").unwrap();
        replace_dir(&new, &target).unwrap();
        assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x"]);
    }

    #[test]
    fn leftovers_of_an_interrupted_run_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [".tmp-libtorch-1", ".partial-7", "libtorch-2.9.0-cpu"] {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        remove_leftovers(dir.path()).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["libtorch-2.9.0-cpu"]);
    }

    #[test]
    fn the_pkg_config_file_links_both_tensorflow_libraries() {
        let pc = pkg_config_file(&[Path::new("/c/tf/tensorflow")], "2.21.0", "TF");
        assert!(pc.contains("Version: 2.21.0\n"));
        assert!(pc.ends_with("Libs: -L/c/tf/tensorflow -ltensorflow -ltensorflow_framework\n"));
    }
}

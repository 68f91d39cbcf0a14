//! Checks that `cargo xtask setup` works: `tests/link.rs` links libtorch (through tch) and the
//! TensorFlow C library (through tensorflow) into one binary and runs a computation in each.
//!
//! This library only holds helpers that find out, at run time, which libraries were loaded.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use parallax_registry::NativeLibrary;

/// The path of the loaded shared library whose file name is `name`, from `/proc/self/maps`.
pub fn loaded_library(name: &str) -> io::Result<Option<PathBuf>> {
    let maps = fs::read_to_string("/proc/self/maps")?;
    Ok(maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(Path::new)
        .find(|path| path.file_name().is_some_and(|n| n == name))
        .map(Path::to_path_buf))
}

/// The `TORCH_VERSION` of the libtorch whose `lib/` directory is `lib_dir`, read from the
/// `include/torch/csrc/api/include/torch/version.h` beside it.
///
/// libtorch has no function that returns its version (`at::show_config()` doesn't include it),
/// so the header shipped with the very library that was loaded is the closest runtime source.
pub fn libtorch_version(lib_dir: &Path) -> io::Result<String> {
    let header = lib_dir
        .join("..")
        .join(NativeLibrary::LIBTORCH_VERSION_HEADER);
    let text = fs::read_to_string(&header)?;
    parallax_registry::libtorch_header_version(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no TORCH_VERSION in {}", header.display()),
        )
    })
}

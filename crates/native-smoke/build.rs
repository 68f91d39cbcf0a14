//! Records, as an rpath in this crate's test binaries, the directories that libtorch and the
//! TensorFlow C library were linked from, so that the binaries find them at run time without
//! `LD_LIBRARY_PATH`. Crates that link tch or tensorflow copy this file (docs/provisioning.md).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_FAMILY").as_deref() != Ok("unix") {
        return;
    }
    // torch-sys (`links = "tch"`) publishes the directory it linked libtorch from, whichever way
    // it found it (LIBTORCH, LIBTORCH_USE_PYTORCH or a system install). Only crates that depend
    // on torch-sys directly see it, hence the direct dependency in Cargo.toml.
    match env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => {
            rpath(&dir);
            // The test compares this with the library it finds loaded.
            println!("cargo:rustc-env=NATIVE_SMOKE_LIBTORCH_LIB={dir}");
        }
        Err(_) => {
            println!("cargo:warning=torch-sys did not say where libtorch is; no rpath for it")
        }
    }
    // tensorflow-sys finds TensorFlow through pkg-config: the same query gives its directories.
    match pkg_config::Config::new()
        .cargo_metadata(false)
        .env_metadata(true)
        .probe("tensorflow")
    {
        Ok(library) => library
            .link_paths
            .iter()
            .for_each(|dir| rpath(&dir.to_string_lossy())),
        Err(_) => println!("cargo:warning=pkg-config does not know tensorflow; no rpath for it"),
    }
}

/// Adds `dir` to the run path of this package's binaries, tests, examples and benchmarks.
fn rpath(dir: &str) {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
}

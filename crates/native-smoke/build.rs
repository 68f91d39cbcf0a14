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
            // Nothing in a program calls into libtorch_cuda.so directly, so the linker's
            // `--as-needed` would drop it, and with it the CUDA backend, from a CUDA build.
            // Linking libtorch.so (which needs libtorch_cuda.so) unconditionally keeps it, as
            // tch's own build script does for tch's tests; in the CPU tree it is libtorch_cpu.so.
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch");
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

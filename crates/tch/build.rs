//! Records, as an rpath in this crate's binaries, the directory that libtorch was linked from,
//! so that tests find it at run time without `LD_LIBRARY_PATH` (the pattern of
//! `crates/native-smoke/build.rs`, docs/provisioning.md), and compiles `src/capability.cpp`,
//! which reads ATen's CPU capability.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/capability.cpp");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("src/capability.cpp")
        .compile("parallax_tch_capability");
    if env::var("CARGO_CFG_TARGET_FAMILY").as_deref() != Ok("unix") {
        return;
    }
    // torch-sys (`links = "tch"`) publishes the directory it linked libtorch from, whichever way
    // it found it; only crates that depend on torch-sys directly see it.
    match env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}"),
        Err(_) => {
            println!("cargo:warning=torch-sys did not say where libtorch is; no rpath for it")
        }
    }
}

//! Records, as an rpath in this crate's binaries, the directory that the TensorFlow C library was
//! linked from, so that tests find it at run time without `LD_LIBRARY_PATH` (the pattern of
//! `crates/native-smoke/build.rs`, docs/provisioning.md).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if env::var("CARGO_CFG_TARGET_FAMILY").as_deref() != Ok("unix") {
        return;
    }
    // tensorflow-sys finds TensorFlow through pkg-config: the same query gives its directories.
    match pkg_config::Config::new()
        .cargo_metadata(false)
        .env_metadata(true)
        .probe("tensorflow")
    {
        Ok(library) => {
            for dir in &library.link_paths {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            }
        }
        Err(_) => println!("cargo:warning=pkg-config does not know tensorflow; no rpath for it"),
    }
}

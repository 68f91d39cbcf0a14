//! Records the embedded interpreter's library directory as an rpath in this crate's binaries:
//! the Python that `PYO3_PYTHON` names (the one `cargo xtask setup` made the frameworks'
//! environment from) keeps `libpython3.x.so` in its own `lib`, where the loader does not look.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    pyo3_build_config::add_libpython_rpath_link_args();
}

//! Writes the worker's table of backends from the registry (`OUT_DIR/backends.rs`): one
//! constructor arm per backend whose worker feature or CUDA feature this build enables, each
//! calling its adapter's `backend_named`.

fn main() {
    let table =
        parallax_registry::constructor_table(parallax_registry::feature_enabled_in_build_script);
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("backends.rs"), table).expect("writing OUT_DIR/backends.rs");
    println!("cargo::rerun-if-changed=build.rs");
}

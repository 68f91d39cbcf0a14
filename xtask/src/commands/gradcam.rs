//! `cargo xtask gradcam`: the flags, parsed by clap, handed to the library's GradCAM
//! (`parallax::gradcam`), which runs every backend's maps and compares them.

pub use parallax::gradcam::Args;

/// Runs `cargo xtask gradcam`.
pub fn run(args: Args) -> anyhow::Result<()> {
    Ok(parallax::gradcam::run(args)?)
}

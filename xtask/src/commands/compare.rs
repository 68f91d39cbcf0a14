//! `cargo xtask compare`: the flags, parsed by clap, handed to the library's comparison
//! (`parallax::compare`), which plans, builds the workers, runs and reports.

pub use parallax::compare::Args;

/// Runs `cargo xtask compare`.
pub fn run(args: Args) -> anyhow::Result<()> {
    Ok(parallax::compare::run(args)?)
}

//! `cargo xtask report DIR`: re-renders `DIR/report.md` and `DIR/report.html` from the records
//! (and GradCAM output) in `DIR`, with the statistics over seeds recomputed by core
//! (`report::dir`). A record that cannot be read is listed in both reports, which render
//! without it, and makes the command fail after writing them.

use std::path::PathBuf;

use crate::report::dir::render_dir;

/// Flags of `cargo xtask report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The output directory of a comparison (`cargo xtask compare --out DIR`).
    pub dir: PathBuf,
    /// Report, for each run, when its test accuracy first reached this fraction; by default
    /// the target the comparison's summary names, if any.
    #[arg(long)]
    pub target_accuracy: Option<f64>,
}

/// Re-renders the reports.
pub fn run(args: Args) -> anyhow::Result<()> {
    let rendered = render_dir(&args.dir, args.target_accuracy)?;
    for path in &rendered.written {
        println!("wrote {}", path.display());
    }
    match rendered.unreadable_error() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

//! `cargo xtask report DIR`: re-renders `DIR/report.md` and `DIR/report.html` from the records
//! (and GradCAM output) in `DIR`, with the statistics over seeds recomputed by core
//! (`report::dir`). A record that cannot be read is listed in both reports, which render
//! without it, and makes the command fail after writing them. With `--screenshots`, headless
//! Chromium photographs the page at a desktop's and a phone's width.

use std::path::PathBuf;

use parallax::report::dir::render_dir;

/// Flags of `cargo xtask report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The output directory of a comparison (`cargo xtask compare --out DIR`).
    pub dir: PathBuf,
    /// Report, for each run, when its test accuracy first reached this fraction; by default
    /// the target the comparison's summary names, if any.
    #[arg(long)]
    pub target_accuracy: Option<f64>,
    /// Also write screenshots of `report.html` through headless Chromium: PREFIX-desktop.png
    /// (1280 px wide) and PREFIX-phone.png (420 px), the top of the page each, as the README's
    /// are made (`--screenshots docs/screenshots/NAME`).
    #[arg(long, value_name = "PREFIX")]
    pub screenshots: Option<PathBuf>,
}

/// Re-renders the reports.
pub fn run(args: Args) -> anyhow::Result<()> {
    let rendered = render_dir(&args.dir, args.target_accuracy)?;
    for path in &rendered.written {
        println!("wrote {}", path.display());
    }
    if let Some(prefix) = &args.screenshots {
        let chromium = crate::apt::ensure_chromium()?;
        let page = args.dir.join("report.html");
        if let Some(parent) = prefix.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let name = prefix
            .file_name()
            .map_or("report".into(), |n| n.to_string_lossy().into_owned());
        for (view, width, height) in [("desktop", 1280, 1400), ("phone", 420, 1600)] {
            let png = prefix.with_file_name(format!("{name}-{view}.png"));
            crate::chromium::screenshot(&chromium, &page, &png, width, height)?;
            println!("wrote {}", png.display());
        }
    }
    match rendered.unreadable_error() {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

//! What a downstream crate does with the parallax library: plan a comparison of two backends,
//! run it, read back the records it wrote, and render `report.html` from them alone.
//!
//! ```text
//! cargo run --release -p parallax --example downstream -- OUT [WORKER]
//! ```
//!
//! WORKER is a prebuilt `parallax-runner` with both backends' features (the test command passes
//! the one its build made); without it, the library builds one worker per backend in the
//! parallax checkout.

use std::path::PathBuf;

use parallax::compare::Args;
use parallax::report::{Setup, Summary, html};
use parallax_core::stats::comparison;

fn main() {
    // One line, as parallax's own commands print an error, and a non-zero exit.
    if let Err(error) = run() {
        eprintln!("error: {}", parallax_core::error::one_line(error.as_ref()));
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut argv = std::env::args_os().skip(1);
    let out = PathBuf::from(argv.next().ok_or("usage: downstream OUT [WORKER]")?);
    let worker = argv.next().map(PathBuf::from);

    // 1. Plan: the same flags as `cargo xtask compare`, filled in from their defaults. A
    //    quick comparison: burn against tch, one seed, one epoch on the bundled subset.
    let args = Args {
        backends: Some(vec![
            parallax_registry::find("burn")?,
            parallax_registry::find("tch")?,
        ]),
        dataset: "fashion-mnist-subset".parse()?,
        epochs: 1,
        seed: Some(1),
        threads: Some(2),
        limit_train: Some(512),
        worker,
        out: out.clone(),
        ..Args::default()
    };
    let plan = parallax::compare::plan(&args)?;
    for run in plan.runs() {
        println!("planned: {} -> {}", run.label(), run.request.id());
    }

    // 2. Run: the workers train, each record is written as its run ends, and the comparison
    //    writes its own summary and report.
    parallax::compare::run(args)?;

    // 3. Read the directory's records back, as any later tool would.
    let mut unreadable = Vec::new();
    let by_configuration =
        parallax::report::dir::read_records(&out.join("records"), &mut unreadable)?;
    let records: Vec<_> = by_configuration.into_values().flatten().collect();
    for record in &records {
        println!(
            "read: {} seed {}: test accuracy {:.4}, {:.2} s per epoch",
            record.backend, record.seed, record.test_accuracy, record.median_epoch_seconds
        );
    }
    if records.len() != plan.runs().len() || !unreadable.is_empty() {
        return Err(format!(
            "read {} records for {} planned runs ({} unreadable)",
            records.len(),
            plan.runs().len(),
            unreadable.len()
        )
        .into());
    }

    // 4. Render report.html from the records alone: the statistics recomputed by core.
    let setup = Setup::of_records(&records).ok_or("no records")?;
    let summary = Summary {
        comparison: Some(comparison::compare(
            &records,
            &[],
            &Default::default(),
            None,
        )),
        records,
        ..Summary::default()
    };
    let page = html::Page {
        title: html::title(&summary, &setup),
        sections: vec![html::Section {
            heading: None,
            summary: &summary,
            setup: &setup,
        }],
        gradcam: None,
        unreadable,
    };
    let rendered = out.join("downstream");
    std::fs::create_dir_all(&rendered)?;
    println!("wrote {}", html::write(&rendered, &page)?.display());
    Ok(())
}

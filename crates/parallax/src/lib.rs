//! parallax as a library: what `cargo xtask compare`, `gradcam` and `report` run, for downstream
//! crates to reuse.
//!
//! - [`compare`]: a comparison's plan (the matrix of backends, models and seeds, each run's
//!   request), its workers ([`workers`]: built in the parallax workspace, or found in a
//!   directory), and its run, here or as a Slurm job array; the output directory is held by
//!   [`output_lock`], and [`interrupt`] turns Ctrl-C into a summary of what finished.
//! - [`gradcam`]: GradCAM on every backend from the same weights and inputs, compared.
//! - [`report`]: `summary.json`'s schema with its version and migration, and the views: the
//!   answer in words, `report.md`, the terminal, and a self-contained `report.html`.
//!
//! It depends on core, the registry and provisioning, never on an adapter: each engine runs in
//! a worker process of its own, so this crate builds before any native library exists.
//!
//! ```no_run
//! # fn main() -> parallax::Result<()> {
//! use clap::Parser;
//!
//! // The flags a user would give `cargo xtask compare`: two backends, one quick seed.
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     compare: parallax::compare::Args,
//! }
//! let cli = Cli::parse_from([
//!     "compare", "--backends", "burn,tch", "--model", "mlp", "--dataset", "fashion-mnist-subset",
//!     "--epochs", "1", "--seed", "1", "--out", "target/example",
//! ]);
//! let plan = parallax::compare::plan(&cli.compare)?;
//! println!("{} runs", plan.runs().len());
//! parallax::compare::run(cli.compare)?;
//! // The records it wrote, read back, and the page rendered from them alone.
//! let rendered = parallax::report::render_dir("target/example".as_ref(), None)?;
//! println!("{:?}", rendered.written);
//! # Ok(())
//! # }
//! ```

pub mod compare;
pub mod error;
pub mod gradcam;
pub mod interrupt;
pub mod output_lock;
pub mod report;
pub mod workers;
pub mod workspace;

pub use error::{Error, Result};

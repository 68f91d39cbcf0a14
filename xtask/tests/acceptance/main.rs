//! The test command's acceptance scenarios, each run through `cargo xtask compare` as a user
//! types it, with a worker that the test build made: comparisons over seeds (`seeds`), runs
//! that collide, crash or are interrupted (`reliability`), a Slurm job array on a cluster of
//! its own (`slurm`), and the run axes, f32 against bf16 (`precision`).
//!
//! Not a plain `cargo test` target (`test = false`): they need that worker, Slurm and minutes.
//! `cargo xtask test` runs each as a phase of its own:
//! `cargo test --release --test acceptance -- SCENARIO WORKER`.

mod precision;
mod reliability;
mod seeds;
mod slurm;
mod support;

use std::path::PathBuf;

const SCENARIOS: &str = "seeds, reliability, slurm or precision";

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(scenario), Some(worker)) = (args.next(), args.next().map(PathBuf::from)) else {
        eprintln!("error: usage: acceptance SCENARIO WORKER, SCENARIO being {SCENARIOS}");
        std::process::exit(2);
    };
    let result = match scenario.as_str() {
        "seeds" => seeds::acceptance(&worker),
        "reliability" => reliability::acceptance(&worker),
        "slurm" => slurm::acceptance(&worker),
        "precision" => precision::acceptance(&worker),
        other => Err(anyhow::anyhow!(
            "no acceptance scenario {other:?}; the scenarios are {SCENARIOS}"
        )),
    };
    if let Err(error) = result {
        eprintln!(
            "error: {scenario}: {}",
            parallax_core::error::one_line(error.as_ref())
        );
        std::process::exit(1);
    }
}

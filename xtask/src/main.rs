//! `cargo xtask`: parallax's orchestrator. Each subcommand lives in `commands/<name>`; what
//! they share lives beside them: cargo invocations (`cargo`), the Debian packages the tests
//! install (`apt`), Chromium (`chromium`) and the parity checks under capped instruction sets
//! (`parity`). `compare`, `gradcam` and `report` parse their flags and call the `parallax`
//! library; `setup` and `env` call `parallax-provision`.

mod apt;
mod cargo;
mod chromium;
mod commands;
mod parity;

use clap::{Parser, Subcommand};

/// parallax's tasks: provisioning, comparisons, data, fixtures and tests.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train each backend on the same spec, data order and initial weights, and write the report.
    Compare(commands::compare::Args),
    /// GradCAM on every backend from the same weights and inputs, with the maps compared.
    Gradcam(commands::gradcam::Args),
    /// Re-render DIR/report.md from the records in DIR, with the statistics recomputed.
    Report(commands::report::Args),
    /// Run every test, provisioning what they need first (the README's test command, and CI's).
    Test(commands::test::Args),
    /// Run the parity checks (every engine against the f64 referee) under a capped instruction set.
    Parity(commands::parity::Args),
    /// Fetch the built-in data sets into the cache.
    #[command(subcommand)]
    Data(commands::data::Args),
    /// Run the criterion benchmarks (one training step per backend and model, the harness's batching).
    Bench(commands::bench::Args),
    /// Regenerate the committed fixtures.
    Fixtures(commands::fixtures::Args),
    /// Provision libtorch 2.9.0 and the TensorFlow 2.21 C library from pinned PyPI wheels.
    Setup(commands::setup::Args),
    /// Print the environment a plain cargo, or another crate, needs to use them.
    Env(commands::env::Args),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                error.exit();
            }
            // One line, like every other error: clap's first line names the flag and the
            // value parser's message says what to use.
            let text = error.to_string();
            let line = text.lines().next().unwrap_or_default();
            eprintln!("error: {}", line.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Compare(args) => commands::compare::run(args),
        Command::Gradcam(args) => commands::gradcam::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Test(args) => commands::test::run(args),
        Command::Parity(args) => commands::parity::run(args),
        Command::Data(args) => commands::data::run(args),
        Command::Fixtures(args) => commands::fixtures::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Setup(args) => commands::setup::run(args),
        Command::Env(args) => commands::env::run(args),
    };
    if let Err(error) = result {
        if let Some(parallax::Error::Interrupted(interrupted)) = error.downcast_ref() {
            eprintln!("{interrupted}");
            std::process::exit(parallax::interrupt::EXIT_CODE);
        }
        // One line, no backtrace: the chain of contexts reads as a sentence, each cause once.
        eprintln!("error: {}", parallax_core::error::one_line(error.as_ref()));
        std::process::exit(1);
    }
}

//! `parallax-runner`: the worker process that executes one run request and writes its record.
//!
//! `cargo xtask compare` starts one worker per run, so that each engine's peak memory, thread
//! pools and crashes stay apart. The worker is argument parsing, the backend the request names,
//! and [`parallax_core::run::execute`]: it reports progress as JSON lines on stdout
//! ([`ProgressEvent`]), writes the record after every epoch and at the end, and exits 0; on
//! failure it prints one `error:` line on stderr and exits 1.
//!
//! `cargo xtask gradcam` starts it with `--gradcam REQUEST --out RESULT` instead: one
//! [`parallax_core::gradcam::job::execute`], its result written as JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use parallax_core::error::one_line;
use parallax_core::gradcam::job::CamRequest;
use parallax_core::record::{Node, ProgressEvent, RunRequest, write_json_atomically};
use parallax_core::run::{RunFiles, execute};
use parallax_core::{Backend, CpuSettings, Device};

/// Executes one run request as a `cargo xtask compare` worker.
#[derive(Parser)]
#[command(name = "parallax-runner", version, about)]
struct Cli {
    /// The run request, as JSON.
    #[arg(long, required_unless_present = "gradcam", requires = "record")]
    request: Option<PathBuf>,
    /// The SHA-256 of the request's text, as its command wrote it: a request that another
    /// command wrote over since is refused rather than run.
    #[arg(long, requires = "request")]
    request_sha256: Option<String>,
    /// Where to write the run record.
    #[arg(long)]
    record: Option<PathBuf>,
    /// A GradCAM request, as JSON, instead of a run request.
    #[arg(long, conflicts_with = "request", requires = "out")]
    gradcam: Option<PathBuf>,
    /// Where to write the GradCAM result.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where to write the trained weights, when the request asks for them.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The name of the machine this run executes on, recorded in the record with its CPU model
    /// (a Slurm task passes its node's).
    #[arg(long, requires = "request")]
    node: Option<String>,
    /// The run shares its node with other work, so its timings are not comparable.
    #[arg(long, requires = "node")]
    node_shared: bool,
}

fn emit(event: &ProgressEvent) {
    if let Ok(line) = serde_json::to_string(event) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe only means nobody is watching the progress; the record still gets written.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(&cli) {
        eprintln!("error: {}", one_line(error.as_ref()));
        std::process::exit(1);
    }
}

/// Builds the backend a request names, through the constructor table that `build.rs` writes
/// from the registry: one arm per backend this worker was built with.
fn make_backend(name: &str, device: Device, cpu: CpuSettings) -> anyhow::Result<Box<dyn Backend>> {
    let entry = parallax_registry::find(name)?;
    match construct(entry.name, device, cpu) {
        Some(backend) => Ok(backend?),
        None => anyhow::bail!(
            "backend {:?} is not compiled into this worker (it has {}); build it with `cargo build --release -p parallax-runner --features {}` (cargo xtask compare does)",
            entry.name,
            BUILT.join(", "),
            entry.feature
        ),
    }
}

include!(concat!(env!("OUT_DIR"), "/backends.rs"));

fn run(cli: &Cli) -> anyhow::Result<()> {
    if let (Some(path), Some(out)) = (&cli.gradcam, &cli.out) {
        return grad_cam(path, out);
    }
    let (Some(request_path), Some(record)) = (&cli.request, &cli.record) else {
        anyhow::bail!("pass --request and --record, or --gradcam and --out");
    };
    let request = RunRequest::load(request_path, cli.request_sha256.as_deref())?;
    let backend = make_backend(
        &request.backend,
        request.device,
        CpuSettings {
            threads: request.threads,
            flush_denormals: request.flush_denormals,
        },
    )?;
    let files = RunFiles {
        record: record.clone(),
        weights: cli.weights.clone().filter(|_| request.save_weights),
        node: cli
            .node
            .as_ref()
            .map(|name| Node::here(name.as_str(), !cli.node_shared)),
    };
    execute(&request, backend.as_ref(), Some(&files), &mut emit)?;
    Ok(())
}

/// Runs one GradCAM request and writes its result.
fn grad_cam(path: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading GradCAM request {}", path.display()))?;
    let request: CamRequest = serde_json::from_str(&text)
        .with_context(|| format!("parsing GradCAM request {}", path.display()))?;
    let backend = make_backend(&request.backend, request.device, request.cpu())?;
    let result = parallax_core::gradcam::job::execute(&request, backend.as_ref())?;
    write_json_atomically(out, &result)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every backend compiled into this worker reports the name the registry gives it, and the
    /// precisions and compilation its row states.
    #[test]
    fn compiled_backends_report_their_registry_names() {
        for entry in parallax_registry::BACKENDS {
            match make_backend(entry.name, Device::Cpu, CpuSettings::new(1)) {
                Ok(backend) => {
                    let info = backend.info();
                    assert_eq!(info.backend, entry.name);
                    // The registry's columns, which `compare` plans by, say what the adapter
                    // states.
                    assert_eq!(
                        info.precisions.contains(&parallax_core::Precision::Bf16),
                        entry.bf16.is_yes(),
                        "{}: bf16 in the registry and in the adapter",
                        entry.name
                    );
                    assert_eq!(
                        info.compiles,
                        entry.compile.is_yes(),
                        "{}: compilation in the registry and in the adapter",
                        entry.name
                    );
                }
                // A worker with every backend links TensorFlow's C library, beside which the
                // Python frameworks refuse to start (crates/python's interpreter.rs).
                Err(error) => assert!(
                    error.to_string().contains("not compiled into this worker")
                        || error.to_string().contains("TensorFlow's C library"),
                    "{}: {error}",
                    entry.name
                ),
            }
        }
    }
}

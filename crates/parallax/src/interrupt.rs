//! Ctrl-C (and SIGTERM, which is how Slurm and `kill` stop a job) during a command that runs
//! workers: the workers are stopped, what finished is written, and the command exits 130.
//!
//! The handler only raises a flag. [`crate::workers`] watches it while a worker runs and kills
//! the worker (a terminal's Ctrl-C reaches the worker itself too, a `kill` of xtask does not),
//! and the command stops starting runs, writes its summary of what finished, and returns
//! [`Interrupted`], which `main` turns into exit status 130, the shell's code for SIGINT.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

/// The exit status of an interrupted command: 128 + SIGINT, as a shell reports it.
pub const EXIT_CODE: i32 = 130;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Installs the handler, once per process; a second call does nothing.
pub fn install() {
    INSTALL.call_once(|| {
        // Without a handler a signal ends xtask at once, which loses the summary but nothing
        // on disk: each record is written by its worker. So a failure here only warns.
        if let Err(error) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)) {
            eprintln!(
                "warning: cannot catch Ctrl-C ({error}); an interrupt will not write the summary"
            );
        }
    });
}

/// Whether Ctrl-C or SIGTERM has arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error of a command stopped by Ctrl-C or SIGTERM, after it wrote what finished.
#[derive(Debug)]
pub struct Interrupted {
    /// Runs that ended (complete or failed) before the interrupt.
    pub finished: usize,
    /// Runs the command planned.
    pub planned: usize,
    /// Where the summary of what finished was written.
    pub summary: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted: {} of {} runs ended (the one it stopped keeps its finished epochs) and are in {}; the others did not run",
            self.finished, self.planned, self.summary
        )
    }
}

impl std::error::Error for Interrupted {}

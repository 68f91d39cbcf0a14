//! One run owns its output directory: `compare` and `gradcam` lock it for as long as they run.
//!
//! Two commands writing into one directory mixed their runs up: the second overwrote a request
//! that the first's worker had not read yet, and the first reported the second's accuracy as its
//! own. A second command into a locked directory now fails at once, naming the run that holds
//! it, rather than running apart in a subdirectory: a directory is one comparison, which is what
//! `report DIR` and the user expect to find there.
//!
//! The lock is an `flock` on `DIR/.parallax.lock`, so the kernel releases it when its holder
//! exits or is killed: a crashed run never leaves the directory locked. The file's text says
//! who holds it, for the error line of the run that is refused.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// The lock file's name inside the output directory.
pub const LOCK_FILE: &str = ".parallax.lock";

/// An exclusive hold on an output directory, released when dropped or when the process ends.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
}

impl OutputLock {
    /// Creates `dir` if needed and locks it for this process's command
    /// ([`this_command`]), or fails with one line that names the command holding it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        Self::acquire_for(dir, &this_command())
    }

    /// [`OutputLock::acquire`] on behalf of `command`.
    fn acquire_for(dir: &Path, command: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::io("creating", &dir, source))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| Error::io("opening the lock file", &path, source))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // The holder writes its line just after locking: a command started at the same
                // moment can find the file still empty, so it looks again for a little while.
                let mut holder = String::new();
                for _ in 0..50 {
                    holder.clear();
                    let _ = file
                        .rewind()
                        .and_then(|()| file.read_to_string(&mut holder));
                    if !holder.trim().is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another parallax command"
                } else {
                    holder
                };
                return Err(Error::InUse(format!(
                    "{} is in use by {holder}; wait for it to finish, or pass another --out",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(error)) => {
                return Err(error).map_err(|source| Error::io("locking", &path, source));
            }
        }
        let line = format!(
            "process {} (`{command}`, started {})",
            std::process::id(),
            unix_time_text()
        );
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{line}"))
            .map_err(|source| Error::io("writing", &path, source))?;
        Ok(OutputLock { _file: file })
    }
}

/// The command line this process runs, as the user typed it: for the lock and the manifest.
pub fn this_command() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// Now, as seconds since the Unix epoch and UTC's time of day, without a date crate.
fn unix_time_text() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let day = seconds % 86_400;
    format!(
        "at {:02}:{:02}:{:02} UTC, Unix time {seconds}",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_command_into_a_locked_directory_fails_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = OutputLock::acquire_for(&out, "cargo xtask compare --seed 1").unwrap();
        // Each acquisition opens the file anew, so this is the same contention as between
        // processes.
        let error = OutputLock::acquire_for(&out, "cargo xtask compare --seed 2")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is in use by process")
                && error.contains("cargo xtask compare --seed 1")
                && error.contains("pass another --out"),
            "{error}"
        );
        drop(first);
        let _second = OutputLock::acquire_for(&out, "cargo xtask compare --seed 2").unwrap();
        let text = std::fs::read_to_string(out.join(LOCK_FILE)).unwrap();
        assert!(
            text.contains("--seed 2") && !text.contains("--seed 1"),
            "{text}"
        );
    }
}

//! The cache lock: one setup at a time changes the cache, others wait for it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An exclusive lock on `<cache>/setup.lock`, released when dropped (or when the process dies,
/// since it is an `flock`, so a killed setup never leaves the cache locked).
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
    /// Whether another setup held the lock first, so that this one had to wait.
    pub waited: bool,
}

fn lock_path(cache: &Path) -> PathBuf {
    cache.join("setup.lock")
}

fn open(cache: &Path) -> Result<File> {
    let path = lock_path(cache);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::io("open the lock file", &path, source))
}

/// Takes the lock if nobody holds it.
pub fn try_acquire(cache: &Path) -> Result<Option<CacheLock>> {
    let file = open(cache)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(CacheLock {
            _file: file,
            waited: false,
        })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => {
            Err(e).map_err(|source| Error::io("lock", lock_path(cache), source))
        }
    }
}

/// Takes the lock, saying so when it has to wait for another setup.
pub fn acquire(cache: &Path) -> Result<CacheLock> {
    if let Some(lock) = try_acquire(cache)? {
        return Ok(lock);
    }
    eprintln!(
        "setup: waiting for another setup to finish (it holds {})",
        lock_path(cache).display()
    );
    let file = open(cache)?;
    file.lock()
        .map_err(|source| Error::io("lock", lock_path(cache), source))?;
    Ok(CacheLock {
        _file: file,
        waited: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_setup_cannot_take_the_lock_until_the_first_lets_go() {
        let cache = tempfile::tempdir().unwrap();
        let first = try_acquire(cache.path())
            .unwrap()
            .expect("the cache is free");
        // Each acquisition opens the file anew, so this is the same contention as between processes.
        assert!(try_acquire(cache.path()).unwrap().is_none());
        drop(first);
        let second = try_acquire(cache.path()).unwrap();
        assert!(second.is_some());
    }

    #[test]
    fn a_waiting_setup_proceeds_once_the_holder_is_done() {
        let cache = tempfile::tempdir().unwrap();
        let held = try_acquire(cache.path()).unwrap().unwrap();
        let path = cache.path().to_path_buf();
        let waiter = std::thread::spawn(move || acquire(&path).map(|lock| lock.waited));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished());
        drop(held);
        assert!(
            waiter.join().unwrap().unwrap(),
            "the waiter knows it waited"
        );
    }
}

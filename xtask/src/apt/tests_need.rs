//! What the tests need beyond the native libraries: the full Fashion-MNIST (Debian's
//! `dataset-fashion-mnist`), Chromium, and Slurm with munge, installed when missing and this
//! runs as root.

use std::path::Path;

use anyhow::Context;
use parallax_core::data::builtin::DEBIAN_FASHION_MNIST_DIR;

/// Makes sure the full Fashion-MNIST data set is on this machine.
pub fn ensure_fashion_mnist() -> anyhow::Result<()> {
    if Path::new(DEBIAN_FASHION_MNIST_DIR)
        .join("train-images-idx3-ubyte.gz")
        .is_file()
    {
        return Ok(());
    }
    super::install(
        "dataset-fashion-mnist",
        "the full Fashion-MNIST (30 MB) for the tests, which `cargo xtask data download fashion-mnist` also fetches",
    )
}

/// Makes sure Debian's Chromium is installed, for the test that renders the HTML report in a
/// real browser, and returns the command that starts it.
pub fn ensure_chromium() -> anyhow::Result<std::path::PathBuf> {
    let find = || {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("chromium"))
                .find(|candidate| candidate.is_file())
        })
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    super::install(
        "chromium",
        "Chromium (headless), which renders the HTML report in a test",
    )?;
    find().context("apt-get installed chromium, but no `chromium` is on PATH")
}

/// Makes sure Debian's Slurm daemons and clients and munge are installed, for the test that
/// runs `compare --slurm` on a single-node cluster of its own.
pub fn ensure_slurm() -> anyhow::Result<()> {
    let on_path = |program: &str| {
        ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).is_file())
    };
    if ["sbatch", "slurmctld", "slurmd", "munged", "mungekey"]
        .iter()
        .all(|program| on_path(program))
    {
        return Ok(());
    }
    super::install_all(
        &["slurmctld", "slurmd", "slurm-client", "munge"],
        "Slurm and munge (3.5 MB), whose single-node cluster runs `compare --slurm` in a test",
    )
}

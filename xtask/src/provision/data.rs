//! The full Fashion-MNIST for the tests: Debian's `dataset-fashion-mnist`, installed when it is
//! missing and this runs as root.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use parallax_core::data::builtin::DEBIAN_FASHION_MNIST_DIR;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Makes sure the full Fashion-MNIST data set is on this machine.
pub fn ensure_fashion_mnist() -> anyhow::Result<()> {
    if Path::new(DEBIAN_FASHION_MNIST_DIR)
        .join("train-images-idx3-ubyte.gz")
        .is_file()
    {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Fashion-MNIST is missing: install it with `sudo apt-get install dataset-fashion-mnist` (or run `cargo xtask data download fashion-mnist`), then run the tests again"
        );
    }
    eprintln!("installing Debian's dataset-fashion-mnist (30 MB) for the tests");
    let install = |update_first: bool| -> anyhow::Result<bool> {
        if update_first {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        }
        Ok(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "dataset-fashion-mnist",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?
            .success())
    };
    if !install(false)? && !install(true)? {
        bail!(
            "apt-get could not install dataset-fashion-mnist; install it by hand, or run `cargo xtask data download fashion-mnist`"
        );
    }
    Ok(())
}

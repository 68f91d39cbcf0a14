//! Debian packages that the tests need (the full Fashion-MNIST, Chromium, Slurm with munge),
//! installed with apt when they are missing and this runs as root; otherwise one line says what
//! to install. The native libraries and the Python frameworks are `parallax-provision`'s.

mod tests_need;

pub use tests_need::{ensure_chromium, ensure_fashion_mnist, ensure_slurm};

use std::process::Command;

use anyhow::{Context, bail};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Installs Debian's `package`, which `purpose` needs ("Fashion-MNIST (30 MB) for the tests"),
/// updating the package lists once if the first try fails.
pub fn install(package: &str, purpose: &str) -> anyhow::Result<()> {
    install_all(&[package], purpose)
}

/// [`install`] for several packages at once.
pub fn install_all(packages: &[&str], purpose: &str) -> anyhow::Result<()> {
    let package = packages.join(" ");
    if !is_root() {
        bail!(
            "{purpose} is missing: install it with `sudo apt-get install {package}`, then run the tests again"
        );
    }
    eprintln!("installing Debian's {package}: {purpose}");
    let install = |update_first: bool| -> anyhow::Result<bool> {
        if update_first {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        }
        Ok(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?
            .success())
    };
    if !install(false)? && !install(true)? {
        bail!("apt-get could not install {package}; install it by hand, then run the tests again");
    }
    Ok(())
}

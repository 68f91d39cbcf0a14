//! What the acceptance scenarios share: `cargo xtask` as a user types it (the xtask binary of
//! this build), the stand-in workers they write, and the summaries they read back.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The xtask binary that this build made, which every scenario runs as a user would.
pub fn xtask_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xtask"))
}

/// Where the scenarios write: `target/acceptance/`, which the browser phase reads afterwards.
pub fn acceptance_dir() -> PathBuf {
    parallax::workspace::target_dir().join("acceptance")
}

/// Runs `cargo xtask <args>`, failing when the command fails.
pub fn xtask(args: &[&str]) -> anyhow::Result<()> {
    if !xtask_status(args)? {
        bail!("`cargo xtask {}` failed", args.join(" "));
    }
    Ok(())
}

/// [`xtask`], returning whether the command succeeded.
pub fn xtask_status(args: &[&str]) -> anyhow::Result<bool> {
    let status = Command::new(xtask_binary())
        .args(args)
        .status()
        .with_context(|| format!("running cargo xtask {}", args.join(" ")))?;
    Ok(status.success())
}

/// Writes `text` as an executable shell script at `path`: the stand-in workers through which
/// the scenarios make a run fail, crash or stall on purpose.
pub fn write_script(path: &Path, text: impl AsRef<str>) -> anyhow::Result<PathBuf> {
    std::fs::write(path, text.as_ref()).with_context(|| format!("writing {}", path.display()))?;
    let mut permissions = std::fs::metadata(path)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(path, permissions)?;
    Ok(path.to_path_buf())
}

/// The `summary.json` a comparison wrote into `dir`.
pub fn summary(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let path = dir.join("summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

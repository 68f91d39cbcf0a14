//! [`NativeEnv`]: the environment that builds and runs against the provisioned libraries need.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::Command;

/// Where libtorch and the TensorFlow C library are, as environment variables for cargo and
/// for the programs it builds. [`super::ensure`] returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeEnv {
    /// The directory torch-sys reads as `LIBTORCH`; `None` when `LIBTORCH_USE_PYTORCH` is in charge.
    pub libtorch: Option<PathBuf>,
    /// Whether torch-sys should ask Python's torch for its paths (`LIBTORCH_USE_PYTORCH`).
    pub use_pytorch: bool,
    /// Directories holding `tensorflow.pc`, for tensorflow-sys's pkg-config lookup.
    pub pkg_config_dirs: Vec<PathBuf>,
    /// Directories of the shared libraries, searched at run time.
    pub lib_dirs: Vec<PathBuf>,
    /// The frameworks' virtual environment and the Python the backends embed, once provisioned
    /// (`PYO3_PYTHON`, `PARALLAX_FRAMEWORKS_VENV`).
    pub frameworks: Option<super::Frameworks>,
}

/// The variable that the dynamic loader searches first.
const LIBRARY_PATH_VAR: &str = if cfg!(target_os = "macos") {
    "DYLD_LIBRARY_PATH"
} else {
    "LD_LIBRARY_PATH"
};

impl NativeEnv {
    /// The variables with parallax's values only: the path lists (`PKG_CONFIG_PATH`, the loader
    /// path) hold just its own directories, which [`NativeEnv::apply`] and the `sh` rendering put
    /// in front of whatever the variable already holds.
    fn own_vars(&self) -> Vec<(&'static str, OsString)> {
        let mut vars = Vec::new();
        if let Some(libtorch) = &self.libtorch {
            vars.push(("LIBTORCH", libtorch.clone().into_os_string()));
        }
        if self.use_pytorch {
            vars.push(("LIBTORCH_USE_PYTORCH", OsString::from("1")));
        }
        if let Some(frameworks) = &self.frameworks {
            // pyo3 builds against this interpreter; its library directory goes first on the
            // loader path (below), ahead of any other Python 3.11's in the system's.
            vars.push(("PYO3_PYTHON", frameworks.python.clone().into_os_string()));
            vars.push((
                "PARALLAX_FRAMEWORKS_VENV",
                frameworks.venv.clone().into_os_string(),
            ));
        }
        let mut lib_dirs = self.lib_dirs.clone();
        if let Some(frameworks) = &self.frameworks {
            lib_dirs.push(frameworks.lib_dir.clone());
        }
        for (name, dirs) in [
            ("PKG_CONFIG_PATH", &self.pkg_config_dirs),
            (LIBRARY_PATH_VAR, &lib_dirs),
        ] {
            if !dirs.is_empty() {
                vars.push((name, prepend(dirs, None)));
            }
        }
        vars
    }

    /// The variables as text, for `cargo xtask env` and messages; the path lists hold only
    /// parallax's directories (see [`is_path_list`]). Paths that aren't UTF-8 are shown lossily.
    pub fn vars(&self) -> Vec<(String, String)> {
        self.own_vars()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned()))
            .collect()
    }

    /// Sets the variables on a command that will run cargo or a built program, putting the
    /// directories in front of the path lists that the command would otherwise get.
    pub fn apply(&self, cmd: &mut Command) {
        for (name, value) in self.own_vars() {
            if is_path_list(name) {
                // A value already set on the command wins over this process's own.
                let existing = match cmd.get_envs().find(|(k, _)| *k == name) {
                    Some((_, value)) => value.map(OsStr::to_os_string),
                    None => std::env::var_os(name),
                };
                let dirs: Vec<PathBuf> = std::env::split_paths(&value).collect();
                cmd.env(name, prepend(&dirs, existing.as_deref()));
            } else {
                cmd.env(name, value);
            }
        }
    }
}

/// Whether `name` is a `:`-separated list that parallax's directories go in front of.
pub fn is_path_list(name: &str) -> bool {
    name == "PKG_CONFIG_PATH" || name == LIBRARY_PATH_VAR
}

/// `dirs`, then the entries of `existing` that are neither among them nor empty (an empty entry
/// means the current directory to the loader, which nobody wants here).
fn prepend(dirs: &[PathBuf], existing: Option<&OsStr>) -> OsString {
    let mut entries: Vec<PathBuf> = dirs.to_vec();
    if let Some(existing) = existing {
        for entry in std::env::split_paths(existing) {
            if !entry.as_os_str().is_empty() && !entries.contains(&entry) {
                entries.push(entry);
            }
        }
    }
    // Joining fails only on a path containing `:`, which the caller's own entries can't have.
    std::env::join_paths(entries.iter().map(PathBuf::as_path)).unwrap_or_else(|_| {
        let parts: Vec<&OsStr> = entries.iter().map(|p| p.as_os_str()).collect();
        parts.join(OsStr::new(":"))
    })
}

/// How `cargo xtask env` prints the variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// `export NAME='value'` lines for `eval "$(cargo xtask env)"` in sh, bash or zsh.
    Sh,
    /// `NAME=value` lines, for `$GITHUB_ENV`, dotenv files or `env $(…)`.
    Plain,
}

/// Renders variables in `format`, one per line.
pub fn render(vars: &[(String, String)], format: Format) -> String {
    vars.iter()
        .map(|(name, value)| match format {
            // Path lists keep what the shell already has, after parallax's directories.
            Format::Sh if is_path_list(name) => {
                format!(
                    "export {name}={}\"${{{name}:+:${name}}}\"\n",
                    sh_quote(value)
                )
            }
            Format::Sh => format!("export {name}={}\n", sh_quote(value)),
            Format::Plain => format!("{name}={value}\n"),
        })
        .collect()
}

/// Single-quotes `value` for a POSIX shell.
fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> NativeEnv {
        NativeEnv {
            libtorch: Some(PathBuf::from("/c/native/libtorch-2.9.0-cpu/torch")),
            use_pytorch: false,
            pkg_config_dirs: vec![PathBuf::from("/c/native/tensorflow-2.21.0-cpu/pkgconfig")],
            lib_dirs: vec![
                PathBuf::from("/c/native/libtorch-2.9.0-cpu/torch/lib"),
                PathBuf::from("/c/native/tensorflow-2.21.0-cpu/tensorflow"),
            ],
            frameworks: None,
        }
    }

    #[test]
    fn our_directories_come_first_and_are_not_repeated() {
        let ours = env().lib_dirs;
        let existing = OsString::from("/usr/local/lib::/c/native/libtorch-2.9.0-cpu/torch/lib");
        let joined = prepend(&ours, Some(&existing));
        assert_eq!(
            joined,
            "/c/native/libtorch-2.9.0-cpu/torch/lib:/c/native/tensorflow-2.21.0-cpu/tensorflow:/usr/local/lib"
        );
        assert_eq!(
            prepend(&ours[..1], None),
            "/c/native/libtorch-2.9.0-cpu/torch/lib"
        );
    }

    #[test]
    fn vars_name_libtorch_pkg_config_and_the_loader_path_with_only_our_directories() {
        let vars = env().vars();
        let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["LIBTORCH", "PKG_CONFIG_PATH", LIBRARY_PATH_VAR]);
        assert_eq!(
            vars[2].1,
            "/c/native/libtorch-2.9.0-cpu/torch/lib:/c/native/tensorflow-2.21.0-cpu/tensorflow"
        );
        let pytorch = NativeEnv {
            libtorch: None,
            use_pytorch: true,
            ..env()
        };
        assert_eq!(
            pytorch.vars()[0],
            ("LIBTORCH_USE_PYTORCH".to_string(), "1".to_string())
        );
    }

    #[test]
    fn shell_rendering_survives_quotes_and_spaces_and_keeps_existing_paths() {
        let vars = vec![
            (
                "LIBTORCH".to_string(),
                "/home/o'neil/my cache/torch".to_string(),
            ),
            ("PKG_CONFIG_PATH".to_string(), "/c/pc".to_string()),
        ];
        assert_eq!(
            render(&vars, Format::Sh),
            "export LIBTORCH='/home/o'\\''neil/my cache/torch'\nexport PKG_CONFIG_PATH='/c/pc'\"${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}\"\n"
        );
        assert_eq!(
            render(&vars, Format::Plain),
            "LIBTORCH=/home/o'neil/my cache/torch\nPKG_CONFIG_PATH=/c/pc\n"
        );
    }

    #[test]
    fn a_shell_that_evals_the_output_gets_the_values() {
        let vars = vec![
            ("LIBTORCH".to_string(), "/my cache/it's/torch".to_string()),
            ("PKG_CONFIG_PATH".to_string(), "/c/pc".to_string()),
        ];
        let script = format!(
            "PKG_CONFIG_PATH=/usr/pc; {}printf '%s|%s' \"$LIBTORCH\" \"$PKG_CONFIG_PATH\"",
            render(&vars, Format::Sh)
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/my cache/it's/torch|/c/pc:/usr/pc"
        );
    }

    #[test]
    fn apply_puts_our_directories_before_what_the_command_already_has() {
        let mut cmd = Command::new("true");
        cmd.env("PKG_CONFIG_PATH", "/usr/lib/pkgconfig");
        cmd.env_remove(LIBRARY_PATH_VAR);
        env().apply(&mut cmd);
        let get = |name: &str| {
            cmd.get_envs()
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v)
                .map(OsStr::to_os_string)
        };
        assert_eq!(
            get("LIBTORCH").unwrap(),
            "/c/native/libtorch-2.9.0-cpu/torch"
        );
        assert_eq!(
            get("PKG_CONFIG_PATH").unwrap(),
            "/c/native/tensorflow-2.21.0-cpu/pkgconfig:/usr/lib/pkgconfig"
        );
        assert_eq!(
            get(LIBRARY_PATH_VAR).unwrap(),
            "/c/native/libtorch-2.9.0-cpu/torch/lib:/c/native/tensorflow-2.21.0-cpu/tensorflow"
        );
    }
}

//! The one table of parallax's backends: what each is called, which engine and adapter crate
//! it is, which cargo features build it, which native libraries it links, whether its threads
//! are OpenMP's, and which devices it runs on.
//!
//! xtask reads it to check `--backends`, build one worker per backend, provision native
//! libraries and set OpenMP's wait policy; the worker's and the benchmarks' build scripts write
//! their constructor tables from it ([`constructor_table`]); the tests read it for the names.
//! Adding an engine is its own adapter crate, one row here, and the Cargo lines that declare it
//! (workspace dependency, the worker's and the benchmarks' features).
//!
//! **Architecture invariant:** this crate is data only (and the few pure functions that read
//! it, or read a torch version from its text). It depends on nothing, so that xtask
//! can read it without building an engine, and `parallax-core`, which never names a framework,
//! does not depend on it.

use std::fmt;

/// A native library that `cargo xtask setup` provisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NativeLibrary {
    /// libtorch 2.9.0, PyTorch's C++ engine.
    Libtorch,
    /// The TensorFlow 2.21 C library.
    Tensorflow,
    /// PyTorch, TensorFlow and Keras for Python, in a virtual environment, with the Python
    /// whose shared library the worker embeds.
    Frameworks,
}

impl NativeLibrary {
    /// Where, under a libtorch directory, the header that states its version lies.
    pub const LIBTORCH_VERSION_HEADER: &str = "include/torch/csrc/api/include/torch/version.h";
}

/// The version a libtorch states in its `torch/version.h` ([`NativeLibrary::LIBTORCH_VERSION_HEADER`]):
/// the string `#define TORCH_VERSION` expands to, such as `2.9.0`.
///
/// libtorch has no function that returns its version, so provisioning, which checks a
/// `LIBTORCH` it is given, and the native smoke test, which checks the library it loaded, both
/// read the header shipped beside the library.
pub fn libtorch_header_version(header: &str) -> Option<String> {
    let after = header.split("#define TORCH_VERSION ").nth(1)?;
    let start = after.find('"')? + 1;
    let len = after[start..].find('"')?;
    Some(after[start..start + len].to_string())
}

/// The `__version__` a torch wheel's `torch/version.py` states, such as `2.9.0+cu128`.
pub fn torch_wheel_version(version_py: &str) -> Option<String> {
    version_py.lines().find_map(|line| {
        let value = line
            .strip_prefix("__version__")?
            .trim_start()
            .strip_prefix('=')?
            .trim();
        let unquoted = value.trim_matches(|c| c == '\'' || c == '"');
        (unquoted.len() + 2 == value.len()).then(|| unquoted.to_string())
    })
}

/// Whether a backend offers a run axis's other value (`--precision bf16`, `--compile on`), or
/// why not: a comparison skips it for that value with the reason, before any build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// It does.
    Yes,
    /// It does not, for this reason (a sentence that a report quotes).
    No(&'static str),
}

impl Support {
    /// Whether it does.
    pub fn is_yes(self) -> bool {
        self == Support::Yes
    }
}

/// One backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendEntry {
    /// The name in `--backends`, run records and reports.
    pub name: &'static str,
    /// The engine underneath, as a reader would name it.
    pub engine: &'static str,
    /// The short name a report gives its rows: the framework and version a reader knows, and
    /// how parallax drives it ("PyTorch 2.9 (Python, eager)").
    pub label: &'static str,
    /// The adapter crate that implements `parallax_core::Backend` for it.
    pub adapter: &'static str,
    /// The worker's (`parallax-runner`'s) cargo feature that compiles it in, for the CPU.
    pub feature: &'static str,
    /// The worker's feature for CUDA devices, or `None` where the backend has no CUDA path.
    /// Backends that link a native library use its CUDA build (`cargo xtask setup --cuda`).
    pub cuda_feature: Option<&'static str>,
    /// The native libraries it links.
    pub native: &'static [NativeLibrary],
    /// Whether its intra-op threads are OpenMP's, whose wait policy `compare` sets.
    pub openmp: bool,
    /// Features that `cargo xtask test` enables so that the workspace's tests cover it.
    pub test_features: &'static [&'static str],
    /// Whether `cargo xtask compare` without `--backends` compares it: one backend per engine
    /// or framework (burn, tch, tf, and PyTorch's and Keras's own Python code), so burn-tch
    /// (burn's code on tch's engine) is left to those who name it.
    pub compared_by_default: bool,
    /// Whether the benchmarks (`parallax-benches`) build it, behind their feature named as
    /// [`Self::feature`]: the engines driven from Rust.
    pub benched: bool,
    /// Whether it computes in bf16 (`--precision bf16`); its adapter's `BackendInfo` states
    /// the same, which the worker's tests check.
    pub bf16: Support,
    /// Whether it compiles its step (`--compile on`).
    pub compile: Support,
    /// Variables its worker's environment must hold, which the engine reads once, when it
    /// loads, so that the worker cannot set them itself: `compare` sets each one that the
    /// environment lacks (and appends the value to one that holds other flags), locally and
    /// in the Slurm job script.
    pub worker_env: &'static [(&'static str, &'static str)],
}

impl BackendEntry {
    /// Whether it links a native library.
    pub fn is_native(&self) -> bool {
        !self.native.is_empty()
    }

    /// The worker feature for a device: CUDA's, or the CPU's; `None` when the backend cannot
    /// run on CUDA.
    pub fn feature_for(&self, cuda: bool) -> Option<&'static str> {
        if cuda {
            self.cuda_feature
        } else {
            Some(self.feature)
        }
    }
}

/// Every backend, in the order help texts and reports list them.
pub const BACKENDS: &[BackendEntry] = &[
    BackendEntry {
        name: "burn",
        engine: "burn 0.22.1: Flex on the CPU, CubeCL on CUDA",
        label: "burn 0.22 Flex (Rust)",
        adapter: "parallax-burn",
        feature: "burn",
        cuda_feature: Some("burn-cuda"),
        native: &[],
        openmp: false,
        test_features: &[],
        compared_by_default: true,
        benched: true,
        bf16: Support::Yes,
        compile: Support::No("burn has no compiler for its training step on the CPU"),
        worker_env: &[],
    },
    BackendEntry {
        name: "tch",
        engine: "libtorch 2.9.0 through tch",
        label: "libtorch 2.9 via tch (Rust)",
        adapter: "parallax-tch",
        feature: "tch",
        cuda_feature: Some("tch"),
        native: &[NativeLibrary::Libtorch],
        openmp: true,
        test_features: &[],
        compared_by_default: true,
        benched: true,
        bf16: Support::Yes,
        compile: Support::No(
            "libtorch's C++ API has no torch.compile, and tch 0.22 exposes no other compiler",
        ),
        worker_env: &[],
    },
    BackendEntry {
        name: "burn-tch",
        engine: "burn 0.22.1 on libtorch 2.9.0 (burn-tch)",
        label: "burn 0.22 on libtorch 2.9 (Rust)",
        adapter: "parallax-burn",
        feature: "burn-tch",
        cuda_feature: Some("burn-tch"),
        native: &[NativeLibrary::Libtorch],
        openmp: true,
        test_features: &["parallax-burn/tch"],
        compared_by_default: false,
        benched: true,
        bf16: Support::Yes,
        compile: Support::No("burn has no compiler for its training step"),
        worker_env: &[],
    },
    BackendEntry {
        name: "tf",
        engine: "TensorFlow 2.21 in graph mode, the engine under Keras",
        label: "TensorFlow 2.21 graph (C API, Rust)",
        adapter: "parallax-tf",
        feature: "tf",
        cuda_feature: Some("tf"),
        native: &[NativeLibrary::Tensorflow],
        openmp: false,
        test_features: &[],
        compared_by_default: true,
        benched: true,
        bf16: Support::Yes,
        compile: Support::Yes,
        // XLA auto-clusters CPU operations only with this flag (parallax-tf's XLA_CPU_FLAG);
        // without --compile on the session's JIT level is off and the flag changes nothing.
        worker_env: &[("TF_XLA_FLAGS", "--tf_xla_cpu_global_jit")],
    },
    BackendEntry {
        name: "pytorch",
        engine: "PyTorch 2.9.0 from Python: an nn.Module trained in the eager loop with torch.optim",
        label: "PyTorch 2.9 (Python, eager)",
        adapter: "parallax-python",
        feature: "pytorch",
        cuda_feature: None,
        native: &[NativeLibrary::Frameworks],
        openmp: true,
        test_features: &[],
        compared_by_default: true,
        benched: false,
        bf16: Support::Yes,
        compile: Support::Yes,
        worker_env: &[],
    },
    BackendEntry {
        name: "keras",
        engine: "Keras 3.15 on TensorFlow 2.21 from Python: a functional keras.Model trained with model.fit",
        label: "Keras 3.15 fit on TensorFlow 2.21",
        adapter: "parallax-python",
        feature: "keras",
        cuda_feature: None,
        native: &[NativeLibrary::Frameworks],
        openmp: false,
        test_features: &[],
        compared_by_default: true,
        benched: false,
        bf16: Support::Yes,
        compile: Support::Yes,
        worker_env: &[],
    },
    BackendEntry {
        name: "keras-torch",
        engine: "Keras 3.15 on PyTorch 2.9 from Python (KERAS_BACKEND=torch): the same model.fit",
        label: "Keras 3.15 fit on PyTorch 2.9",
        adapter: "parallax-python",
        feature: "keras-torch",
        cuda_feature: None,
        native: &[NativeLibrary::Frameworks],
        openmp: true,
        test_features: &[],
        compared_by_default: true,
        benched: false,
        bf16: Support::Yes,
        compile: Support::Yes,
        worker_env: &[],
    },
];

/// The backend `name`'s [`BackendEntry::label`], if it is one of [`BACKENDS`].
pub fn label_of(name: &str) -> Option<&'static str> {
    BACKENDS
        .iter()
        .find(|entry| entry.name == name)
        .map(|entry| entry.label)
}

/// The backends that `cargo xtask compare` compares when `--backends` is not given.
pub fn compared_by_default() -> Vec<&'static BackendEntry> {
    BACKENDS
        .iter()
        .filter(|entry| entry.compared_by_default)
        .collect()
}

/// The backends' names, comma-separated, for messages.
pub fn names() -> String {
    BACKENDS
        .iter()
        .map(|entry| entry.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Rust source of a build's table of backends, for the build scripts of the crates that
/// construct backends by name (the worker, the benchmarks), so that no crate spells a backend's
/// constructor by hand: `BUILT`, the names of the backends whose worker feature or CUDA feature
/// `enabled` says the build has, and `construct(name, device, cpu)`, which calls the adapter's
/// `backend_named` for each of them and gives `None` for any other name. The including crate
/// has `Backend`, `CpuSettings` and `Device` in scope and the adapters as dependencies.
pub fn constructor_table(enabled: impl Fn(&str) -> bool) -> String {
    let built: Vec<&BackendEntry> = BACKENDS
        .iter()
        .filter(|entry| {
            std::iter::once(entry.feature)
                .chain(entry.cuda_feature)
                .any(&enabled)
        })
        .collect();
    let names: Vec<String> = built
        .iter()
        .map(|entry| format!("{:?}", entry.name))
        .collect();
    let arms: String = built
        .iter()
        .map(|entry| {
            format!(
                "        {name:?} => Some({adapter}::backend_named({name:?}, device, cpu)),\n",
                name = entry.name,
                adapter = entry.adapter.replace('-', "_"),
            )
        })
        .collect();
    format!(
        "/// The backends this build has, by the registry's names, in the registry's order.\n\
         pub const BUILT: &[&str] = &[{}];\n\n\
         /// The backend called `name` on `device` with `cpu`'s threads, or `None` when this build\n\
         /// does not have it.\n\
         #[allow(unused_variables)]\n\
         pub fn construct(\n    name: &str,\n    device: Device,\n    cpu: CpuSettings,\n) -> Option<parallax_core::Result<Box<dyn Backend>>> {{\n    \
         match name {{\n{arms}        _ => None,\n    }}\n}}\n",
        names.join(", ")
    )
}

/// Whether cargo builds the crate whose build script asks with `feature` on: its
/// `CARGO_FEATURE_<FEATURE>` variable, as [`constructor_table`]'s callers read it.
pub fn feature_enabled_in_build_script(feature: &str) -> bool {
    let variable = format!("CARGO_FEATURE_{}", feature.to_uppercase().replace('-', "_"));
    std::env::var_os(variable).is_some()
}

/// The backend called `name`.
pub fn find(name: &str) -> Result<&'static BackendEntry, UnknownBackend> {
    BACKENDS
        .iter()
        .find(|entry| entry.name == name)
        .ok_or_else(|| UnknownBackend(name.to_string()))
}

/// A backend name that is not in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown backend {:?}; known backends: {}",
            self.0,
            names()
        )
    }
}

impl std::error::Error for UnknownBackend {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_libtorch_version_is_read_across_the_header_line_continuation() {
        let header = "/// Indicates the version\n#define TORCH_VERSION_MINOR 9\n#define TORCH_VERSION \\\n  \"2.9.0\"\n\n#define TORCH_ABI_VERSION \\\n";
        assert_eq!(libtorch_header_version(header).as_deref(), Some("2.9.0"));
        assert_eq!(
            libtorch_header_version("#define TORCH_VERSION_MAJOR 2\n"),
            None
        );
    }

    #[test]
    fn the_torch_wheel_version_comes_from_version_py() {
        let py = "from typing import Optional\n__version__ = '2.9.0+cu128'\ndebug = False\n";
        assert_eq!(torch_wheel_version(py).as_deref(), Some("2.9.0+cu128"));
        assert_eq!(torch_wheel_version("__version__ = 2\n"), None);
    }

    #[test]
    fn names_are_unique_and_found() {
        for (index, entry) in BACKENDS.iter().enumerate() {
            assert!(
                BACKENDS[..index]
                    .iter()
                    .all(|other| other.name != entry.name),
                "{} appears twice",
                entry.name
            );
            assert_eq!(find(entry.name), Ok(entry));
        }
        assert_eq!(
            find("jax").unwrap_err().to_string(),
            "unknown backend \"jax\"; known backends: burn, tch, burn-tch, tf, pytorch, keras, keras-torch"
        );
    }

    /// A label's versions are the engine's: each `major.minor` a label names begins a version
    /// that the longer description states, so that the two cannot drift apart.
    #[test]
    fn labels_name_the_engines_versions() {
        for entry in BACKENDS {
            for word in entry.label.split_whitespace() {
                if word.starts_with(|c: char| c.is_ascii_digit()) {
                    assert!(
                        entry.engine.contains(word),
                        "{}: the label's {word} is not in {:?}",
                        entry.name,
                        entry.engine
                    );
                }
            }
        }
    }

    #[test]
    fn openmp_backends_run_libtorch() {
        for entry in BACKENDS.iter().filter(|entry| entry.openmp) {
            assert!(
                entry.native.contains(&NativeLibrary::Libtorch)
                    || entry.native.contains(&NativeLibrary::Frameworks),
                "{}",
                entry.name
            );
        }
    }
}

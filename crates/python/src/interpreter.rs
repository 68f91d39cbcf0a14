//! The embedded interpreter: started once per process, pointed at the frameworks' virtual
//! environment, and Python's exceptions turned into core's errors.

use std::cell::Cell;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use parallax_core::{Error, Result};
use pyo3::prelude::*;
use pyo3::types::PyList;

/// The environment variable that names the frameworks' virtual environment, which
/// `cargo xtask setup` makes and xtask passes to the worker and the tests.
pub const VENV_VARIABLE: &str = "PARALLAX_FRAMEWORKS_VENV";

/// A Python exception as one line: the last line of its traceback (`TypeError: …`).
#[derive(Debug)]
pub(crate) struct PythonError(pub(crate) String);

impl std::fmt::Display for PythonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PythonError {}

/// The exception classes of the framework modules that mean "the framework's public API cannot
/// do this", which become [`Error::Unsupported`] rather than engine failures.
const UNSUPPORTED_EXCEPTIONS: [&str; 2] = ["Unexpressible", "NotSupported"];

/// `error` as core's error for `backend`: what the framework cannot do as
/// [`Error::Unsupported`], anything else as [`Error::Engine`] with the traceback's last line.
pub(crate) fn python_error(backend: &str, py: Python<'_>, error: PyErr) -> Error {
    let kind = error
        .get_type(py)
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let message = error
        .value(py)
        .str()
        .map(|text| text.to_string())
        .unwrap_or_default();
    if UNSUPPORTED_EXCEPTIONS.contains(&kind.as_str()) {
        return Error::Unsupported {
            backend: backend.into(),
            what: message,
        };
    }
    let line = if message.is_empty() {
        kind
    } else {
        format!("{kind}: {message}")
    };
    if error.is_instance_of::<pyo3::exceptions::PyModuleNotFoundError>(py) {
        // A framework that `cargo xtask setup` installed lacks a module it imports (torch
        // removed from the environment by hand): say what to do. Setup trusts an environment
        // it finished, so it must be removed first.
        let module = error
            .value(py)
            .getattr("name")
            .and_then(|name| name.extract::<String>())
            .unwrap_or_else(|_| "a module".into());
        let venv = std::env::var_os(VENV_VARIABLE)
            .map(|venv| format!(" {}", PathBuf::from(venv).display()))
            .unwrap_or_default();
        return Error::engine(
            backend,
            PythonError(format!(
                "the frameworks' environment{venv} lacks the Python module '{module}' ({line}); remove the environment and run `cargo xtask setup`, which installs the frameworks afresh"
            )),
        );
    }
    Error::engine(backend, PythonError(line))
}

/// Maps pyo3's results into core's, naming the backend.
pub(crate) trait OrPython<T> {
    /// The value, or the Python exception as core's error.
    fn or_python(self, backend: &str, py: Python<'_>) -> Result<T>;
}

impl<T> OrPython<T> for PyResult<T> {
    fn or_python(self, backend: &str, py: Python<'_>) -> Result<T> {
        self.map_err(|error| python_error(backend, py, error))
    }
}

/// The virtual environment's `site-packages`, checked against the interpreter this process
/// embeds; the outcome of the first call, kept for the process.
static ENVIRONMENT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// The TensorFlow C library's file names, as the loader lists them in `/proc/self/maps`: the
/// C API's own, and the pip package's, from which `cargo xtask setup` takes it.
const TENSORFLOW_C_LIBRARIES: [&str; 2] = ["/libtensorflow.so", "/libtensorflow_cc.so"];

/// Whether this process has loaded TensorFlow's C library (`crates/tf` links it). That library
/// exports BoringSSL under OpenSSL's names, so once it is loaded, CPython's `_hashlib` (which
/// `import torch` loads) calls into them and crashes the process; the frameworks must then not
/// start. Read from the loader's own map of this process, where there is one (Linux).
fn tensorflow_c_library_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| {
            maps.lines().any(|line| {
                TENSORFLOW_C_LIBRARIES
                    .iter()
                    .any(|library| line.contains(library))
            })
        })
        .unwrap_or(false)
}

/// Starts the interpreter (once per process) with the frameworks' virtual environment first on
/// its search path. Fails with one line ([`Error::Engine`]) saying what to do when the
/// environment is not there, or when the process holds TensorFlow's C library, which would
/// crash it.
pub(crate) fn start(backend: &str) -> Result<()> {
    let outcome = ENVIRONMENT.get_or_init(|| {
        // Checked before the interpreter first starts: later, the TensorFlow that Keras imports
        // is in the map too, loaded by Python itself, where its symbols harm nothing.
        if tensorflow_c_library_loaded() {
            return Err("this process has loaded TensorFlow's C library (libtensorflow.so.2), whose BoringSSL symbols crash CPython's hashlib; run it in a worker of its own, as `cargo xtask compare` does".into());
        }
        Python::initialize();
        Python::attach(|py| add_environment(py).map_err(|error| error.to_string()))
    });
    outcome.as_ref().map(|_| ()).map_err(|reason| {
        Error::engine(
            backend,
            PythonError(format!("cannot start the Python frameworks: {reason}")),
        )
    })
}

/// Puts the environment that `PARALLAX_FRAMEWORKS_VENV` names first on `sys.path`, after
/// checking that it was made by this interpreter's Python version.
fn add_environment(py: Python<'_>) -> std::result::Result<PathBuf, String> {
    let not_provisioned = "run `cargo xtask setup` (or `cargo xtask compare`, which provisions them), and run the worker through xtask";
    let venv = std::env::var_os(VENV_VARIABLE)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{VENV_VARIABLE} is not set: {not_provisioned}"))?;
    let version: (u8, u8) = py
        .import("sys")
        .and_then(|sys| sys.getattr("version_info"))
        .and_then(|info| Ok((info.get_item(0)?.extract()?, info.get_item(1)?.extract()?)))
        .map_err(|error| format!("cannot read the embedded Python's version: {error}"))?;
    let site_packages = venv
        .join("lib")
        .join(format!("python{}.{}", version.0, version.1))
        .join("site-packages");
    if !site_packages.is_dir() {
        return Err(format!(
            "{} has no {} for the embedded Python {}.{}: {not_provisioned}",
            venv.display(),
            site_packages
                .strip_prefix(&venv)
                .unwrap_or(&site_packages)
                .display(),
            version.0,
            version.1
        ));
    }
    let result = (|| -> PyResult<()> {
        let path = site_packages.to_string_lossy().into_owned();
        let sys_path = py.import("sys")?.getattr("path")?;
        sys_path.cast::<PyList>()?.insert(0, &path)?;
        // addsitedir also reads the environment's .pth files, as the venv's own python would.
        py.import("site")?.call_method1("addsitedir", (&path,))?;
        Ok(())
    })();
    result.map_err(|error| format!("cannot add {}: {error}", site_packages.display()))?;
    Ok(site_packages)
}

/// Held by every call into a framework, so that one thread's calls never interleave with
/// another's. The frameworks keep global state (the random generators that seeding resets,
/// Keras's global seed generator) and release the GIL inside their kernels, so without it a
/// thread's draws could land between another's seeding and building (tests run in threads).
static FRAMEWORK_CALLS: Mutex<()> = Mutex::new(());

/// Runs `work` with the GIL, one framework call at a time in this process.
pub(crate) fn attach<R>(work: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    // A panic inside another call leaves nothing half-done on the Rust side to protect.
    let _turn = FRAMEWORK_CALLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    keep_thread_state();
    Python::attach(work)
}

thread_local! {
    /// Whether this thread's Python thread state is kept for the rest of the thread's life.
    static THREAD_STATE_KEPT: Cell<bool> = const { Cell::new(false) };
}

/// Gives this thread a Python thread state that lives as long as the thread, the first time
/// the thread calls into a framework.
///
/// pyo3 deletes a thread's state when the thread's outermost `Python::attach` ends, and makes a
/// new one on the next. pybind11, which PyTorch's bindings are built on, remembers the state
/// of the thread that first imports it and assumes that state lives as long as its thread, as
/// a Python thread's does: once pyo3 has deleted it, the next tensor made by `torch.from_numpy`
/// that is freed on that thread takes the GIL with the freed state and crashes the process
/// (seen as SIGSEGV or "double free or corruption" in the tests, whose threads come and go).
/// Holding one `PyGILState_Ensure` for the thread's life keeps the state; pyo3's own calls
/// then nest inside it. The state is not released when the thread ends: a few hundred bytes
/// per thread that ever called a framework.
fn keep_thread_state() {
    THREAD_STATE_KEPT.with(|kept| {
        if kept.get() {
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: `start` has initialised the interpreter (every backend calls it before its
        // first `attach`). `PyGILState_Check` is callable without the GIL. When this thread
        // does not hold the GIL, `PyGILState_Ensure` makes its thread state (or takes the one it
        // has) and the GIL, and `PyEval_SaveThread` gives the GIL back while the state stays
        // this thread's; when the thread already holds the GIL (a caller inside its own
        // `Python::attach`), nothing is done, and that caller's state outlives this call.
        unsafe {
            if pyo3::ffi::PyGILState_Check() == 0 {
                let _kept_for_the_thread = pyo3::ffi::PyGILState_Ensure();
                pyo3::ffi::PyEval_SaveThread();
                kept.set(true);
            }
        }
    });
}

/// Loads one of this crate's Python modules (`src/python/*.py`) under `name`.
pub(crate) fn load_module<'py>(
    py: Python<'py>,
    source: &str,
    file: &str,
    name: &str,
) -> PyResult<Bound<'py, PyModule>> {
    let text = |value: &str| {
        CString::new(value).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!("{file} holds a NUL byte"))
        })
    };
    PyModule::from_code(py, &text(source)?, &text(file)?, &text(name)?)
}

#[cfg(test)]
mod tests {
    use pyo3::prelude::*;

    use super::{attach, start};

    /// A thread keeps its Python thread state from one framework call to the next: what it put
    /// in a `threading.local` on its first call is there on its second. With pyo3 alone the
    /// second call gets a fresh state, which PyTorch's bindings do not survive
    /// (`keep_thread_state`).
    #[test]
    fn a_thread_keeps_its_python_thread_state_between_calls() {
        start("pytorch").expect("the frameworks' environment (cargo xtask setup)");
        let local = attach(|py| {
            py.import("threading")
                .and_then(|threading| threading.call_method0("local"))
                .map(Bound::unbind)
        })
        .expect("threading.local");
        let kept = std::thread::spawn(move || {
            attach(|py| local.bind(py).setattr("mark", 1)).expect("setattr");
            attach(|py| local.bind(py).hasattr("mark")).expect("hasattr")
        })
        .join()
        .expect("the calling thread");
        assert!(
            kept,
            "the thread's second call saw a new Python thread state"
        );
    }
}

//! What the Python backends' test binaries share: their parity panel's engines, the refusal of a
//! layer that Keras's public layers cannot express, and a framework that raises mid-epoch. A
//! module, not a test binary of its own.

#![allow(dead_code)] // Each binary uses what its backend needs.

use parallax_burn::{BurnBackend, BurnEngine};
use parallax_core::conformance::parity::{Case, Panel};
use parallax_core::data::{BuiltinDataset, DataRequest};
use parallax_core::record::{RunRecord, RunStatus};
use parallax_core::run::{RunFiles, execute};
use parallax_core::{Backend, CpuSettings, Device, Error, OptimizerConfig, spec};
use parallax_python::{Framework, PythonBackend};
use parallax_tch::TchBackend;
use pyo3::prelude::*;

/// `case` with `backend` judged against the f64 referee (libtorch in f64), the noise measured
/// by the batch orders of burn's Flex, tch and burn-tch, which share this process. TensorFlow's
/// C library cannot: it exports BoringSSL under OpenSSL's names, and CPython's `_hashlib`
/// crashes in them (docs/conformance.md).
pub fn panel(case: Case, backend: fn() -> PythonBackend) -> Panel {
    // The evidence `cargo xtask parity --cap` reads that ATen took the cap (Python's torch runs
    // on the same libtorch as tch).
    static CAPABILITY: std::sync::Once = std::sync::Once::new();
    CAPABILITY.call_once(|| {
        eprintln!(
            "parity: ATen CPU capability: {}",
            parallax_tch::aten_cpu_capability()
        );
    });
    let cpu = CpuSettings::new(2);
    let referee = TchBackend::new(Device::Cpu, cpu)
        .expect("libtorch")
        .with_float64();
    let engines: Vec<Box<dyn Backend>> = vec![
        Box::new(BurnBackend::new(BurnEngine::Flex, Device::Cpu, cpu).expect("burn")),
        Box::new(TchBackend::new(Device::Cpu, cpu).expect("libtorch")),
        Box::new(BurnBackend::new(BurnEngine::LibTorch, Device::Cpu, cpu).expect("burn-tch")),
        Box::new(backend()),
    ];
    Panel::compute(case, &referee, &engines)
}

/// Max pooling with explicit padding needs −∞ cells, which Keras's ZeroPadding2D does not give:
/// `backend` refuses it with one error naming the layer and the backend.
pub fn refuses_padded_max_pool(backend: &PythonBackend, name: &str) {
    let layer = |name: &str, layer| spec::NamedLayer {
        name: Some(name.into()),
        layer,
    };
    let model = spec::ModelSpec {
        name: "padded-pool".into(),
        input: [1, 6, 6],
        layers: vec![
            layer(
                "pool",
                spec::Layer::MaxPool2d {
                    kernel: spec::Pair::square(2),
                    stride: None,
                    padding: spec::Padding::Explicit([1, 1, 1, 1]),
                },
            ),
            layer("flatten", spec::Layer::Flatten),
            layer(
                "fc",
                spec::Layer::Dense {
                    units: 2,
                    in_features: None,
                    bias: true,
                },
            ),
        ],
    }
    .resolve()
    .expect("resolve");
    let error = backend
        .build(&model, Some(&parallax_core::init::canonical(&model, 1)))
        .err()
        .expect("refused");
    assert!(matches!(error, Error::Unsupported { .. }), "{error}");
    let line = error.to_string();
    assert!(line.contains(name) && line.contains("'pool'"), "{line}");
}

/// The learning rate of the run that [`a_failing_epoch_keeps_the_finished_ones`] makes fail:
/// the injected failure fires only for an optimizer with this rate, so the other tests of the
/// binary, which share its interpreter and run at the same time, train undisturbed.
const FAILING_LR: f64 = 7.77e-4;

/// The step at which the framework raises: the second of epoch 2 (four steps an epoch).
const FAILING_STEP: usize = 6;

/// Python that makes `framework` itself raise `RuntimeError` at [`FAILING_STEP`] of a run with
/// [`FAILING_LR`], from inside its own loop: PyTorch's `Adam.step`, and the callback list that
/// Keras's `fit` calls after each batch (the step itself is a traced function there).
fn injected_failure(framework: Framework) -> String {
    let (module, class, method, rate) = match framework {
        Framework::Pytorch => (
            "torch",
            "torch.optim.Adam",
            "step",
            "self.param_groups[0]['lr']",
        ),
        Framework::Keras | Framework::KerasTorch => (
            "keras",
            "keras.callbacks.CallbackList",
            "on_train_batch_end",
            "float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))",
        ),
    };
    format!(
        r#"
import {module}
_original = {class}.{method}
_calls = [0]
def _failing(self, *args, **kwargs):
    if abs({rate} - {FAILING_LR:e}) < 1e-9:
        _calls[0] += 1
        if _calls[0] == {FAILING_STEP}:
            raise RuntimeError("injected failure at step {FAILING_STEP}")
    return _original(self, *args, **kwargs)
{class}.{method} = _failing
"#
    )
}

/// A framework that raises in the middle of epoch 2 fails the run with the traceback's last
/// line, and the record keeps epoch 1: the bad-input rule, through core's run protocol as the
/// worker drives it, with the exception raised inside the framework's own loop.
pub fn a_failing_epoch_keeps_the_finished_ones(backend: &PythonBackend) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let data = DataRequest {
        limit_train: Some(256),
        ..DataRequest::builtin(
            BuiltinDataset::FashionMnistSubset,
            std::env::temp_dir().join("parallax-tests"),
            fixtures,
        )
    };
    let mut request =
        parallax_core::conformance::acceptance_request(backend, data, spec::Preset::Mlp, 3);
    request.optimizer = OptimizerConfig::adam(FAILING_LR);
    let code = std::ffi::CString::new(injected_failure(backend.framework())).expect("no NUL");
    // The backend has started the interpreter, and this thread holds its Python thread state.
    Python::attach(|py| py.run(&code, None, None)).expect("the injected failure");

    let dir = tempfile::tempdir().expect("tempdir");
    let files = RunFiles {
        record: dir.path().join("record.json"),
        weights: None,
        node: None,
    };
    let error = execute(&request, backend, Some(&files), &mut |_| {}).expect_err("the run fails");
    let expected = format!("RuntimeError: injected failure at step {FAILING_STEP}");
    assert!(matches!(error, Error::Engine { .. }), "{error}");
    assert!(error.to_string().ends_with(&expected), "{error}");
    let record = RunRecord::load(&files.record).expect("a record of the finished epoch");
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.epochs.len(), 1, "the finished epoch is kept");
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|line| line.ends_with(&expected)),
        "{:?}",
        record.error
    );
}

/// The registry's bf16 and compilation columns, which `compare` plans by, say what the backend
/// states in its info.
pub fn the_registry_states_what_the_backend_runs(backend: &PythonBackend) {
    use parallax_core::Backend;
    let info = backend.info();
    let entry = parallax_registry::find(&info.backend).expect("a registry row");
    assert_eq!(
        info.precisions.contains(&parallax_core::Precision::Bf16),
        entry.bf16.is_yes(),
        "bf16"
    );
    assert_eq!(info.compiles, entry.compile.is_yes(), "compilation");
}

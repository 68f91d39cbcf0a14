//! What the Python backends' test binaries share: their parity panel's engines, and the refusal
//! of a layer that Keras's public layers cannot express. A module, not a test binary of its own.

#![allow(dead_code)] // Each binary uses what its backend needs.

use parallax_burn::{BurnBackend, BurnEngine};
use parallax_core::conformance::parity::{Case, Panel};
use parallax_core::{Backend, CpuSettings, Device, Error, spec};
use parallax_python::PythonBackend;
use parallax_tch::TchBackend;

/// `case` with `backend` judged against the f64 referee (libtorch in f64), the noise measured
/// by the batch orders of burn's Flex, tch and burn-tch, which share this process. TensorFlow's
/// C library cannot: it exports BoringSSL under OpenSSL's names, and CPython's `_hashlib`
/// crashes in them (docs/conformance.md).
pub fn panel(case: Case, backend: fn() -> PythonBackend) -> Panel {
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

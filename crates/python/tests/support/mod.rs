//! What the Python backends' test binaries share: their parity panels, and the refusal of a
//! layer that Keras's public layers cannot express. A module, not a test binary of its own.

#![allow(dead_code)] // Each binary uses what its backend needs.

use std::sync::OnceLock;

use parallax_burn::{BurnBackend, BurnEngine};
use parallax_core::conformance::parity::{Case, Panel};
use parallax_core::{Backend, CpuSettings, Device, Error, spec};
use parallax_python::PythonBackend;
use parallax_tch::TchBackend;

/// The panel of `cases`' case `name` (its name before any " (…)" that says its conventions):
/// `backend` judged against the f64 referee (libtorch in f64), the noise measured by the batch
/// orders of burn's Flex, tch and burn-tch, which share this process. TensorFlow's C library
/// cannot: it exports BoringSSL under OpenSSL's names, and CPython's `_hashlib` crashes in them
/// (docs/conformance.md). Computed once per binary and case.
pub fn panel(
    cases: fn() -> Vec<Case>,
    backend: fn() -> PythonBackend,
    name: &str,
) -> &'static Panel {
    static PANELS: OnceLock<Vec<OnceLock<Panel>>> = OnceLock::new();
    let cases = cases();
    let index = cases
        .iter()
        .position(|case| base_name(&case.name) == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    PANELS.get_or_init(|| cases.iter().map(|_| OnceLock::new()).collect())[index].get_or_init(
        || {
            let cpu = CpuSettings::new(2);
            let referee = TchBackend::new(Device::Cpu, cpu)
                .expect("libtorch")
                .with_float64();
            let engines: Vec<Box<dyn Backend>> = vec![
                Box::new(BurnBackend::new(BurnEngine::Flex, Device::Cpu, cpu).expect("burn")),
                Box::new(TchBackend::new(Device::Cpu, cpu).expect("libtorch")),
                Box::new(
                    BurnBackend::new(BurnEngine::LibTorch, Device::Cpu, cpu).expect("burn-tch"),
                ),
                Box::new(backend()),
            ];
            Panel::compute(cases[index].clone(), &referee, &engines)
        },
    )
}

/// A case's name without the conventions it states in parentheses.
pub fn base_name(name: &str) -> &str {
    name.split(" (").next().unwrap_or(name)
}

/// One parity test per standard case, each `support::panel(cases, backend, name).check()`, and a
/// test that no case of `cases` is left without one.
#[macro_export]
macro_rules! parity_tests {
    ($cases:path, $backend:path) => {
        /// The cases these tests check, by the names of `parity_tests!`'s functions.
        const CHECKED: [&str; 8] = [
            "mlp logits",
            "cnn logits",
            "resnet18 logits",
            "every-layer logits",
            "mlp SGD step",
            "cnn SGD step",
            "resnet18 SGD step",
            "every-layer SGD step",
        ];

        fn check(name: &str) {
            $crate::support::panel($cases, $backend, name).check();
        }

        #[test]
        fn mlp_logits() {
            check("mlp logits");
        }

        #[test]
        fn cnn_logits() {
            check("cnn logits");
        }

        #[test]
        fn resnet18_logits() {
            check("resnet18 logits");
        }

        #[test]
        fn every_layer_logits() {
            check("every-layer logits");
        }

        #[test]
        fn mlp_sgd_step() {
            check("mlp SGD step");
        }

        #[test]
        fn cnn_sgd_step() {
            check("cnn SGD step");
        }

        #[test]
        fn resnet18_sgd_step() {
            check("resnet18 SGD step");
        }

        #[test]
        fn every_layer_sgd_step() {
            check("every-layer SGD step");
        }

        #[test]
        fn the_cases_are_all_checked() {
            for case in $cases() {
                let name = $crate::support::base_name(&case.name);
                assert!(
                    CHECKED.contains(&name),
                    "the case {} has no parity test; add one to parity_tests!",
                    case.name
                );
            }
        }
    };
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

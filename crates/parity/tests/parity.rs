//! Every CPU engine against the f64 referee on the standard parity cases, each tensor within
//! [`REFEREE_MULTIPLE`](parallax_core::conformance::parity::REFEREE_MULTIPLE) noises (`parallax_core::conformance::parity`); the same check shown to
//! catch wrong updates; and the instruction sets the engines run on. This is the binary
//! `cargo xtask parity` reruns under capped instruction sets.
//!
//! `PARALLAX_PARITY_TABLE=1` prints every tensor of every case, not only each engine's line.

use std::collections::BTreeMap;

use ndarray::ArrayD;
use parallax_core::conformance::parity::{Case, Outcome, Panel};

/// The standard case on every engine of this crate, judged against the f64 referee.
fn panel(case: Case) -> Panel {
    Panel::compute(
        case,
        &parallax_parity::referee(),
        &parallax_parity::engines(),
    )
}

parallax_core::parity_tests!(parallax_core::conformance::parity::standard_cases, panel);

/// An engine's outcome with one deliberate defect applied to its step.
fn with_defect(
    computed: &Panel,
    outcome: &Outcome,
    defect: impl Fn(&str, &ArrayD<f32>, &ArrayD<f32>) -> Option<ArrayD<f32>>,
) -> Outcome {
    let initial = computed.case.initial_weights();
    let tensors: BTreeMap<String, ArrayD<f32>> = outcome
        .tensors
        .iter()
        .map(|(name, after)| {
            let changed = initial
                .get(name)
                .and_then(|before| defect(name, before, after));
            (name.clone(), changed.unwrap_or_else(|| after.clone()))
        })
        .collect();
    Outcome { tensors }
}

/// Each step case and each engine: the defect's outcome must fail, naming `tensor_kind`.
fn defect_is_caught(
    what: &str,
    tensor_kind: &str,
    defect: impl Fn(&str, &ArrayD<f32>, &ArrayD<f32>) -> Option<ArrayD<f32>> + Copy,
) {
    for name in [
        "mlp SGD step",
        "cnn SGD step",
        "resnet18 SGD step",
        "every-layer SGD step",
    ] {
        let computed = computed(name);
        for (engine, outcome) in &computed.engines {
            let honest = computed.judge(engine, outcome);
            if !honest.holds() {
                // The honest outcome already fails its own test; nothing to learn here.
                continue;
            }
            let judgement = computed.judge(engine, &with_defect(computed, outcome, defect));
            let caught: Vec<&str> = judgement.failures().map(|t| t.name.as_str()).collect();
            if std::env::var_os("PARALLAX_PARITY_TABLE").is_some() || engine == "burn" {
                eprintln!("parity, {what}: {judgement}");
            }
            assert!(
                caught.iter().any(|tensor| tensor.contains(tensor_kind)),
                "{name}: {engine} with {what} was not caught: {judgement}"
            );
        }
    }
}

/// Every bias update scaled by 1 + 1e-4, as an optimizer that mixes up a learning rate in the
/// fourth digit would do: caught on every step case, for every engine.
#[test]
fn a_bias_update_scaled_by_1_plus_1e_4_is_caught() {
    defect_is_caught(
        "bias updates × (1 + 1e-4)",
        "bias",
        |name, before, after| {
            (name.ends_with(".bias") && !name.contains("running"))
                .then(|| before + &((after - before) * (1.0 + 1e-4)))
        },
    );
}

/// The running variance left where it was, as a batch norm that forgets to update it would:
/// caught on every step case with batch norm.
#[test]
fn a_skipped_running_variance_update_is_caught() {
    for name in ["resnet18 SGD step", "every-layer SGD step"] {
        let computed = computed(name);
        for (engine, outcome) in &computed.engines {
            let skipped = with_defect(computed, outcome, |name, before, _| {
                name.ends_with("running_var").then(|| before.clone())
            });
            let judgement = computed.judge(engine, &skipped);
            eprintln!("parity, running variance skipped: {judgement}");
            assert!(
                judgement
                    .failures()
                    .any(|tensor| tensor.name.ends_with("running_var")),
                "{name}: {engine} with the running variance skipped was not caught"
            );
        }
    }
}

/// The instruction sets the engines computed with in this process: ATen's capability, read from
/// libtorch, equals `ATEN_CPU_CAPABILITY` when that caps it. A convolution and a matrix product
/// on libtorch and on TensorFlow make oneDNN and MKL print their instruction sets when
/// `ONEDNN_VERBOSE` and `MKL_VERBOSE` ask them to (`cargo xtask parity` reads those lines).
#[test]
fn instruction_sets() {
    for name in ["cnn SGD step", "mlp logits"] {
        let _ = computed(name);
    }
    let capability = parallax_tch::aten_cpu_capability();
    eprintln!("parity: ATen CPU capability: {capability}");
    assert!(
        ["DEFAULT", "AVX2", "AVX512"].contains(&capability.as_str()),
        "libtorch reports an unknown capability {capability:?}"
    );
    if let Ok(cap) = std::env::var("ATEN_CPU_CAPABILITY") {
        assert_eq!(
            capability,
            cap.to_uppercase(),
            "ATEN_CPU_CAPABILITY={cap} did not take effect"
        );
    }
}

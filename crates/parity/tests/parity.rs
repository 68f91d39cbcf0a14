//! Every CPU engine against the f64 referee on the standard parity cases, each tensor within
//! [`REFEREE_MULTIPLE`] noises (`parallax_core::conformance::parity`); the same check shown to
//! catch wrong updates; and the instruction sets the engines run on. This is the binary
//! `cargo xtask parity` reruns under capped instruction sets.
//!
//! `PARALLAX_PARITY_TABLE=1` prints every tensor of every case, not only each engine's line.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ndarray::ArrayD;
use parallax_core::conformance::parity::{
    BatchOrder, Case, Judgement, Noise, Outcome, REFEREE_MULTIPLE, standard_cases,
};

/// A case computed by the referee, and by every engine in every batch order, which measures
/// its noise.
struct Computed {
    case: Case,
    referee: Outcome,
    noise: Noise,
    /// Each engine's outcome in the natural order, the one judged.
    engines: Vec<(String, Outcome)>,
}

fn compute(case: Case) -> Computed {
    let referee = parallax_parity::referee();
    let truth = case
        .run(&referee, BatchOrder::Natural)
        .unwrap_or_else(|error| panic!("{}: the referee: {error}", case.name));
    let mut noise = Noise::default();
    let engines = parallax_parity::engines()
        .iter()
        .map(|engine| {
            let name = engine.info().backend;
            let outcomes = noise
                .measure(&case, engine.as_ref())
                .unwrap_or_else(|error| panic!("{}: {name}: {error}", case.name));
            (
                name,
                outcomes.into_iter().next().expect("the natural order"),
            )
        })
        .collect();
    Computed {
        case,
        referee: truth,
        noise,
        engines,
    }
}

/// Each standard case, computed once for every test that reads it.
fn computed(name: &str) -> &'static Computed {
    static COMPUTED: OnceLock<Vec<OnceLock<Computed>>> = OnceLock::new();
    let cases = standard_cases();
    let index = cases
        .iter()
        .position(|case| case.name == name)
        .unwrap_or_else(|| panic!("no standard case {name}"));
    COMPUTED.get_or_init(|| cases.iter().map(|_| OnceLock::new()).collect())[index]
        .get_or_init(|| compute(cases[index].clone()))
}

impl Computed {
    fn judge(&self, engine: &str, outcome: &Outcome) -> Judgement {
        Judgement::new(
            &self.case,
            engine,
            outcome,
            (REFEREE_NAME, &self.referee),
            &self.noise,
            REFEREE_MULTIPLE,
        )
    }

    fn judgements(&self) -> Vec<Judgement> {
        self.engines
            .iter()
            .map(|(engine, outcome)| self.judge(engine, outcome))
            .collect()
    }
}

/// How the referee is named in messages.
const REFEREE_NAME: &str = "the f64 referee";

/// Judges every engine on one case, prints each engine's line (and every tensor with
/// `PARALLAX_PARITY_TABLE=1`), and fails naming each engine and tensor beyond its bound.
fn check(name: &str) {
    let computed = computed(name);
    let judgements = computed.judgements();
    for judgement in &judgements {
        eprintln!("parity: {judgement}");
        if let Some(((tightest, on), (loosest, worst))) = judgement.sensitivity() {
            eprintln!(
                "parity sensitivity: {}: {}: an error of {tightest:.1e} of a tensor's scale is caught on {on}, of {loosest:.1e} on every tensor (the loosest: {worst})",
                judgement.case, judgement.engine
            );
        }
    }
    if std::env::var_os("PARALLAX_PARITY_TABLE").is_some() {
        print_table(computed, &judgements);
    }
    let failures: Vec<String> = judgements
        .iter()
        .filter(|judgement| !judgement.holds())
        .map(ToString::to_string)
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every tensor: its scale, the noise and the floor relative to it, then each engine's distance
/// in multiples of the noise (the bound is at [`REFEREE_MULTIPLE`]).
fn print_table(computed: &Computed, judgements: &[Judgement]) {
    let mut lines = vec![format!(
        "{:<32} {:>9} {:>9} {:>9} | distance / max(noise, floor): {}",
        "tensor",
        "scale",
        "noise/s",
        "floor/s",
        judgements
            .iter()
            .map(|j| format!("{:>9}", j.engine))
            .collect::<String>()
    )];
    for (row, tensor) in judgements[0].tensors.iter().enumerate() {
        let relative = |x: f32| x / tensor.scale;
        let multiples: String = judgements
            .iter()
            .map(|j| {
                let t = &j.tensors[row];
                format!("{:>9.2}", t.distance / t.noise.max(t.floor))
            })
            .collect();
        lines.push(format!(
            "{:<32} {:>9.2e} {:>9.2e} {:>9.2e} | {multiples}",
            tensor.name,
            tensor.scale,
            relative(tensor.noise),
            relative(tensor.floor),
        ));
    }
    eprintln!("parity table: {}\n{}", computed.case.name, lines.join("\n"));
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
fn the_standard_cases_are_all_checked() {
    let names: Vec<String> = standard_cases().into_iter().map(|case| case.name).collect();
    let this_file = include_str!("parity.rs");
    for name in names {
        let test = name.replace([' ', '-'], "_").to_lowercase();
        assert!(
            this_file.contains(&format!("fn {test}()")),
            "the standard case {name} has no test here; add `fn {test}()`"
        );
    }
}

/// An engine's outcome with one deliberate defect applied to its step.
fn with_defect(
    computed: &Computed,
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

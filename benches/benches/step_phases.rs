//! Where a training step's time goes, phase by phase (batch in, forward and loss, backward,
//! optimizer, loss read back), for every engine of this build (the registry's table,
//! `parallax_benches::BUILT`) that can split its step: burn's Flex, burn on libtorch and tch.
//! TensorFlow runs a step as one graph and cannot split it; the benchmark says so and goes on.
//!
//! Each engine trains the cnn (or `PARALLAX_BENCH_MODEL`) on the bundled subset's batches of
//! 64 in epoch order, warms up for 10 steps, then profiles `PARALLAX_BENCH_STEPS` steps (100)
//! and reports each phase's median milliseconds. The `pytorch` backend splits PyTorch's own
//! step the same way, but its embedded CPython cannot share this process with TensorFlow's C
//! library. With `PARALLAX_BENCH_PHASES=FILE`, the medians go to FILE as JSON.
//! Arguments name the engines to profile (`cargo bench --bench step_phases -- tch`); none
//! means all.

use std::collections::BTreeMap;

use parallax_benches::subset;
use parallax_core::data::epoch_order;
use parallax_core::spec::presets;
use parallax_core::stats::median;
use parallax_core::{Backend, CpuSettings, Device, Error, OptimizerConfig, StepPhases, init};

const BATCH: usize = 64;
const WARM_UP: usize = 10;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Each phase's median milliseconds over `steps` profiled steps of `backend`.
fn profile(backend: &dyn Backend, steps: usize) -> anyhow::Result<BTreeMap<String, f64>> {
    let data = subset();
    let spec = match std::env::var("PARALLAX_BENCH_MODEL").as_deref() {
        Ok("mlp") => presets::mlp([1, 28, 28], 10),
        _ => presets::cnn([1, 28, 28], 10),
    };
    let model = spec.resolve()?;
    let mut net = backend.build(&model, Some(&init::canonical(&model, 42)))?;
    let optimizer = OptimizerConfig::adam(1e-3);
    let order = epoch_order(data.len(), 42, 0);
    let batches: Vec<_> = order
        .chunks_exact(BATCH)
        .map(|chunk| data.batch(chunk))
        .collect();
    let mut all: Vec<StepPhases> = Vec::new();
    for step in 0..WARM_UP + steps {
        let phases = net.profile_step(&batches[step % batches.len()], &optimizer)?;
        if step >= WARM_UP {
            all.push(phases);
        }
    }
    let mut medians = BTreeMap::new();
    for (index, (name, _)) in StepPhases::default().named().into_iter().enumerate() {
        let values: Vec<f64> = all.iter().map(|p| p.named()[index].1 * 1e3).collect();
        medians.insert(name.to_string(), median(&values));
    }
    medians.insert(
        "step".into(),
        median(&all.iter().map(|p| p.total() * 1e3).collect::<Vec<_>>()),
    );
    Ok(medians)
}

fn main() -> anyhow::Result<()> {
    let threads = env_or("PARALLAX_BENCH_THREADS", 2);
    let steps = env_or("PARALLAX_BENCH_STEPS", 100);
    let cpu = CpuSettings::new(threads);
    // cargo passes `--bench`; any other argument names an engine.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let mut results: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for &name in parallax_benches::BUILT {
        if !(wanted.is_empty() || wanted.iter().any(|w| w == name)) {
            continue;
        }
        let backend = parallax_benches::construct(name, Device::Cpu, cpu)
            .expect("every name of BUILT is constructed")?;
        let medians = match profile(backend.as_ref(), steps) {
            Ok(medians) => medians,
            // An engine that runs its step as one graph (tf) cannot split it.
            Err(error) if matches!(error.downcast_ref(), Some(Error::Unsupported { .. })) => {
                println!("{name:>9}: {error}");
                continue;
            }
            Err(error) => return Err(error),
        };
        println!(
            "{name:>9}: {}",
            medians
                .iter()
                .map(|(phase, ms)| format!("{phase} {ms:.2} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        results.insert(name.to_string(), medians);
    }
    if let Ok(path) = std::env::var("PARALLAX_BENCH_PHASES") {
        std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

//! Runs `parallax_core::conformance::parity` against every CPU engine in one process: the f64
//! referee (libtorch computing in f64) and each engine in f32, whose batch orders also measure
//! the noise the others are judged against.
//!
//! It is a crate of its own because it links every engine, which no adapter's tests do, and
//! because `cargo xtask test` reruns its one test binary under capped instruction sets
//! (`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`, `MKL_ENABLE_INSTRUCTIONS`), which the engines
//! read once, when they load.

use parallax_burn::{BurnBackend, BurnEngine};
use parallax_core::{Backend, CpuSettings, Device};
use parallax_tch::TchBackend;
use parallax_tf::TfBackend;

/// The threads every backend here computes on.
pub const THREADS: usize = 2;

fn cpu() -> CpuSettings {
    CpuSettings::new(THREADS)
}

/// The referee: libtorch computing in f64.
pub fn referee() -> TchBackend {
    TchBackend::new(Device::Cpu, cpu())
        .expect("libtorch on the CPU")
        .with_float64()
}

/// Every CPU engine judged against the referee, with the names the registry gives them.
pub fn engines() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(BurnBackend::new(BurnEngine::Flex, Device::Cpu, cpu()).expect("burn's Flex")),
        Box::new(TchBackend::new(Device::Cpu, cpu()).expect("libtorch on the CPU")),
        Box::new(
            BurnBackend::new(BurnEngine::LibTorch, Device::Cpu, cpu()).expect("burn on libtorch"),
        ),
        Box::new(TfBackend::new(Device::Cpu, cpu()).expect("TensorFlow on the CPU")),
    ]
}

//! One training step and one prediction for every engine (burn's Flex, and with their features
//! burn on libtorch, tch and TensorFlow), for the mlp and the cnn on Fashion-MNIST's 1×28×28
//! images and ResNet-18 on 3×32×32 ones, at batch 64 and 256; plus the harness's own cost of
//! gathering a shuffled batch. Names read `<backend>/<model>/<what>/<batch>`. Each engine also
//! runs the f32 matrix product behind the machine's peak, as `<backend>/peak/matmul/2048`.
//!
//! With `PARALLAX_BENCH_FLOPS=FILE` set, the run first writes each model's FLOP counts (from its
//! spec, `parallax_core::flops`, with the benchmarks' Adam) to FILE as JSON, for
//! `cargo xtask bench` to turn step times into GFLOP/s and utilisation.
//!
//! Every engine's `train_step` reads the loss back to the host and `predict` returns the logits
//! on the host, so each timed iteration ends with the engine's work done: nothing is left
//! running when the timer stops.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p parallax-benches --features tch,tf,burn-tch`
//! with the native libraries' environment). Threads: 2, or `PARALLAX_BENCH_THREADS`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parallax_benches::{first_batch, subset, synthetic_batch};
use parallax_core::data::epoch_order;
use parallax_core::spec::presets;
use parallax_core::{
    Backend, Batch, CpuSettings, Device, ModelSpec, OptimizerConfig, flops, init, peak,
};

const BATCHES: [usize; 2] = [64, 256];

fn threads() -> usize {
    std::env::var("PARALLAX_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2)
}

fn harness(c: &mut Criterion) {
    let data = subset();
    let order = epoch_order(data.len(), 42, 0);
    let mut group = c.benchmark_group("harness");
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("gather_batch/{batch}"), |b| {
            let mut start = 0;
            b.iter(|| {
                if start + batch > order.len() {
                    start = 0;
                }
                let gathered = data.batch(&order[start..start + batch]);
                start += batch;
                black_box(gathered)
            })
        });
    }
    group.finish();
}

/// The models and, per batch size, the batch each trains on: real images for the
/// Fashion-MNIST models, a fixed synthetic batch for ResNet-18.
fn workloads() -> Vec<(ModelSpec, Vec<Batch>)> {
    let data = subset();
    let fashion = || BATCHES.iter().map(|&b| first_batch(&data, b)).collect();
    vec![
        (presets::mlp([1, 28, 28], 10), fashion()),
        (presets::cnn([1, 28, 28], 10), fashion()),
        (
            presets::resnet18([3, 32, 32], 10),
            BATCHES
                .iter()
                .map(|&b| synthetic_batch([3, 32, 32], 10, b))
                .collect(),
        ),
    ]
}

/// The optimizer of every training step benchmarked.
fn optimizer() -> OptimizerConfig {
    OptimizerConfig::adam(1e-3)
}

/// Writes each workload's FLOP counts, by model name, to `PARALLAX_BENCH_FLOPS` when it is set.
fn write_flops(_: &mut Criterion) {
    let Ok(path) = std::env::var("PARALLAX_BENCH_FLOPS") else {
        return;
    };
    let counts: BTreeMap<String, flops::FlopCount> = workloads()
        .into_iter()
        .map(|(spec, _)| {
            let model = spec.resolve().expect("presets resolve");
            let count = flops::count(&model, &optimizer().kind);
            (spec.name, count)
        })
        .collect();
    let text = serde_json::to_string_pretty(&counts).expect("FLOP counts serialise");
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("cannot write {path}: {error}"));
}

/// The machine's f32 matrix-product peak through `backend`: `<name>/peak/matmul/<size>`.
fn peak_of(c: &mut Criterion, name: &str, backend: &dyn Backend) {
    let size = peak::DEFAULT_SIZE;
    let (left, right) = peak::operands(size);
    let mut probe = backend
        .matmul_probe(left.view(), right.view(), parallax_core::Precision::F32)
        .expect("the matrix-product probe");
    let mut group = c.benchmark_group(format!("{name}/peak"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    group.bench_function(format!("matmul/{size}"), |b| {
        b.iter(|| black_box(probe.multiply().expect("product")))
    });
    group.finish();
}

/// Benchmarks `backend`, named `name`: the matrix-product peak, then every workload.
fn engine(c: &mut Criterion, name: &str, backend: &dyn Backend) {
    peak_of(c, name, backend);
    let optimizer = optimizer();
    for (spec, batches) in workloads() {
        let model = spec.resolve().expect("presets resolve");
        let weights = init::canonical(&model, 42);
        let mut net = backend.build(&model, Some(&weights)).expect("build");
        let mut group = c.benchmark_group(format!("{name}/{}", model.spec.name));
        // Steps of the larger models take a good part of a second on two cores.
        if model.spec.name != "mlp" {
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(8));
        }
        for batch in &batches {
            let size = batch.len();
            group.throughput(Throughput::Elements(size as u64));
            group.bench_function(format!("train_step/{size}"), |b| {
                b.iter(|| black_box(net.train_step(batch, &optimizer).expect("step")))
            });
            group.bench_function(format!("predict/{size}"), |b| {
                b.iter(|| black_box(net.predict(batch.images.view()).expect("predict")))
            });
        }
        group.finish();
    }
}

fn cpu() -> CpuSettings {
    CpuSettings::new(threads())
}

/// Every engine this build has (`burn`, and with their features `tch`, `tf`, `burn-tch`), from
/// the registry's table of backends (`parallax_benches::BUILT`).
fn engines(c: &mut Criterion) {
    for &name in parallax_benches::BUILT {
        let backend = parallax_benches::construct(name, Device::Cpu, cpu())
            .expect("every name of BUILT is constructed")
            .unwrap_or_else(|error| panic!("{name} on the CPU: {error}"));
        engine(c, name, backend.as_ref());
    }
}

criterion_group!(benches, write_flops, harness, engines);
criterion_main!(benches);

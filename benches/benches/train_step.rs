//! One training step and one prediction per backend and model, at batch 64, plus the harness's
//! own cost of gathering a shuffled batch: the part of an epoch that is parallax's, not the
//! engine's. Names read `<backend>/<model>/<what>`.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p parallax-benches`). Threads: 2, or
//! `PARALLAX_BENCH_THREADS`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parallax_benches::{first_batch, subset};
use parallax_burn::{BurnBackend, BurnEngine};
use parallax_core::data::epoch_order;
use parallax_core::spec::presets;
use parallax_core::{Backend, CpuSettings, Device, OptimizerConfig, init};

const BATCH: usize = 64;

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
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("gather_batch_64", |b| {
        let mut start = 0;
        b.iter(|| {
            if start + BATCH > order.len() {
                start = 0;
            }
            let batch = data.batch(&order[start..start + BATCH]);
            start += BATCH;
            black_box(batch)
        })
    });
    group.finish();
}

fn burn(c: &mut Criterion) {
    let backend = BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(threads()))
        .expect("Flex on the CPU");
    let data = subset();
    let batch = first_batch(&data, BATCH);
    let optimizer = OptimizerConfig::adam(1e-3);
    for spec in [presets::mlp([1, 28, 28], 10), presets::cnn([1, 28, 28], 10)] {
        let model = spec.resolve().expect("presets resolve");
        let weights = init::canonical(&model, 42);
        let mut net = backend.build(&model, Some(&weights)).expect("build");
        let mut group = c.benchmark_group(format!("burn-flex/{}", model.spec.name));
        group.throughput(Throughput::Elements(BATCH as u64));
        if model.spec.name == "cnn" {
            group.sample_size(20);
        }
        // Flex computes synchronously and `train_step` reads the loss back, so each
        // iteration ends with the step's work done: no extra sync is needed before the timer.
        group.bench_function("train_step_64", |b| {
            b.iter(|| black_box(net.train_step(&batch, &optimizer).expect("step")))
        });
        group.bench_function("predict_64", |b| {
            b.iter(|| black_box(net.predict(batch.images.view()).expect("predict")))
        });
        group.finish();
    }
}

criterion_group!(benches, harness, burn);
criterion_main!(benches);

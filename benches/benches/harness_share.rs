//! The share of a libtorch training epoch that is the harness's (batching, copying into
//! libtorch, the loop's bookkeeping) rather than the engine's, on full Fashion-MNIST.
//!
//! Each round times three epochs of the same model, in turn:
//! - `engine`: the steps alone, each on one batch built in libtorch before the clock starts
//!   and reused, so no example is gathered or copied: the engine's own time;
//! - `epoch`: `Model::train_epoch`, the loop `cargo xtask compare` runs, over a shuffled order;
//! - `host loop`: core's default loop, which gathers each batch on the host and copies it in
//!   through `Model::train_step`, for comparison.
//!
//! The harness's share is `(epoch − engine) / epoch`, from the medians over the rounds. A step
//! costs the same whichever examples it sees (dense kernels, subnormals flushed), so the
//! difference is what the harness adds.
//!
//! ```sh
//! cargo xtask bench --harness-share            # mlp, 7 rounds, 2 threads
//! PARALLAX_BENCH_MODEL=cnn PARALLAX_BENCH_ROUNDS=3 cargo xtask bench --harness-share
//! ```

use std::path::PathBuf;
use std::time::Instant;

use parallax_benches::full_fashion_mnist;
use parallax_core::data::epoch_order;
use parallax_core::spec::presets;
use parallax_core::{CpuSettings, Device, EpochPlan, Model, OptimizerConfig, init};
use parallax_tch::TchBackend;
use tch::Tensor;

const BATCH: usize = 64;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; this harness takes its settings from the environment.
    let model_name: String = env_or("PARALLAX_BENCH_MODEL", "mlp".to_string());
    let rounds: usize = env_or("PARALLAX_BENCH_ROUNDS", 7).max(1);
    let threads: usize = env_or("PARALLAX_BENCH_THREADS", 2);
    let cache = std::env::var_os("PARALLAX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let train = full_fashion_mnist(&cache)?;
    let spec = match model_name.as_str() {
        "mlp" => presets::mlp([1, 28, 28], 10),
        "cnn" => presets::cnn([1, 28, 28], 10),
        other => anyhow::bail!("PARALLAX_BENCH_MODEL={other}: use mlp or cnn"),
    };
    let model = spec.resolve()?;
    let backend = TchBackend::new(Device::Cpu, CpuSettings::new(threads))?;
    let mut net = backend.build_model(&model, Some(&init::canonical(&model, 42)))?;
    let optimizer = OptimizerConfig::adam(1e-3);
    println!(
        "harness share, libtorch {model_name}: {} examples, batch {BATCH}, {threads} threads, {rounds} rounds",
        train.len()
    );

    let (mut engine, mut epoch, mut host_loop) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = epoch_order(train.len(), 42, round as u32);
        let plan = EpochPlan::new(&train, &order, BATCH)?;

        // The same steps with inputs already in libtorch: one full batch and the last,
        // partial one, gathered before the clock starts.
        let full = train.batch(&order[..BATCH]);
        let last = train.batch(plan.chunks().last().unwrap_or(&order[..BATCH]));
        let to_tensors = |batch: &parallax_core::Batch| -> anyhow::Result<(Tensor, Tensor)> {
            let (n, c, h, w) = batch.images.dim();
            let images = Tensor::f_from_slice(batch.images.as_slice().unwrap_or(&[]))?
                .f_reshape([n as i64, c as i64, h as i64, w as i64])?;
            let labels: Vec<i64> = batch.labels.iter().map(|&l| i64::from(l)).collect();
            Ok((images, Tensor::f_from_slice(&labels)?))
        };
        let (full, last) = (to_tensors(&full)?, to_tensors(&last)?);
        let start = Instant::now();
        for step in 0..plan.steps() {
            let (images, labels) = if step + 1 == plan.steps() {
                &last
            } else {
                &full
            };
            net.train_step_tensors(images, labels, &optimizer)?;
        }
        engine.push(start.elapsed().as_secs_f64());

        epoch.push(net.train_epoch(&plan, &optimizer, &mut |_| {})?.seconds);

        let start = Instant::now();
        for batch in plan.batches() {
            net.train_step(&batch, &optimizer)?;
        }
        host_loop.push(start.elapsed().as_secs_f64());
        println!(
            "  round {round}: engine {:.3} s, epoch {:.3} s, host loop {:.3} s",
            engine[round], epoch[round], host_loop[round]
        );
    }
    let (engine, epoch, host_loop) = (median(engine), median(epoch), median(host_loop));
    println!(
        "median s/epoch: engine {engine:.3}, epoch {epoch:.3}, host loop {host_loop:.3}\n\
         harness share of the epoch: {:.1}% (the host loop's: {:.1}%)",
        100.0 * (epoch - engine) / epoch,
        100.0 * (host_loop - engine) / host_loop
    );
    Ok(())
}

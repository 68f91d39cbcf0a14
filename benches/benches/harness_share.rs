//! The share of a libtorch training epoch that is the harness's (batching, copying into
//! libtorch, the loop's bookkeeping) rather than the engine's, on full Fashion-MNIST.
//!
//! Each round times four epochs of the same model, in an order rotated between rounds:
//! - `engine`: the steps alone, over the epoch's batches already in libtorch (built before the
//!   clock starts, in the epoch's order), so nothing is gathered or copied: the engine's own
//!   time, reading each batch from memory as any epoch must;
//! - `hot batch`: the same steps, each on one batch that stays in the cache, which also
//!   leaves out reading the images from memory: a lower bound on the engine's time;
//! - `epoch`: `Model::train_epoch`, the loop `cargo xtask compare` runs, over a shuffled order;
//! - `host loop`: core's default loop, which gathers each batch on the host and copies it in
//!   through `Model::train_step`, for comparison.
//!
//! The harness's share is `(epoch − engine) / epoch`, taken in each round and printed as the
//! median over the rounds with their range; the share against the hot batch is printed beside
//! it, as an upper bound. A step costs the same whichever examples it sees (dense kernels,
//! subnormals flushed), so the difference is what the harness adds.
//!
//! ```sh
//! cargo xtask bench --harness-share            # mlp, 11 rounds, 2 threads
//! PARALLAX_BENCH_MODEL=cnn PARALLAX_BENCH_ROUNDS=3 cargo xtask bench --harness-share
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use parallax_benches::full_fashion_mnist;
use parallax_core::data::epoch_order;
use parallax_core::spec::Preset;
use parallax_core::{Backend, CpuSettings, Device, EpochPlan, OptimizerConfig, init};
use parallax_tch::{TchBackend, TchModel};
use tch::Tensor;

const BATCH: usize = 64;

/// The four timings of a round, as indices into its table.
const PREBUILT: usize = 0;
const HOT: usize = 1;
const EPOCH: usize = 2;
const HOST_LOOP: usize = 3;

/// A host batch as libtorch tensors: images `[N, C, H, W]` f32 and labels int64.
fn to_tensors(batch: &parallax_core::Batch) -> anyhow::Result<(Tensor, Tensor)> {
    let (n, c, h, w) = batch.images.dim();
    let images = Tensor::f_from_slice(batch.images.as_slice().unwrap_or(&[]))?
        .f_reshape([n as i64, c as i64, h as i64, w as i64])?;
    let labels: Vec<i64> = batch.labels.iter().map(|&l| i64::from(l)).collect();
    Ok((images, Tensor::f_from_slice(&labels)?))
}

/// The libtorch model inside a net built by the tch backend.
fn libtorch_model(net: &mut parallax_core::Net) -> anyhow::Result<&mut TchModel> {
    net.engine_mut::<TchModel>()
        .context("the tch backend built a model of another type")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The median of per-round values and their range.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

impl Summary {
    /// Summarises at least one value.
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Summary {
            median: values[values.len() / 2],
            min: values[0],
            max: values[values.len() - 1],
        }
    }
}

/// A share in percent: the median over the rounds, then their range.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}% [{:.1}% to {:.1}%]",
            self.median, self.min, self.max
        )
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; this harness takes its settings from the environment.
    let model_name: String = env_or("PARALLAX_BENCH_MODEL", "mlp".to_string());
    let rounds: usize = env_or("PARALLAX_BENCH_ROUNDS", 11).max(1);
    let threads: usize = env_or("PARALLAX_BENCH_THREADS", 2);
    let cache = std::env::var_os("PARALLAX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let train = full_fashion_mnist(cache)?;
    let preset: Preset = model_name
        .parse()
        .with_context(|| format!("PARALLAX_BENCH_MODEL={model_name}"))?;
    let model = preset
        .spec(train.image_shape(), train.num_classes())
        .resolve()?;
    let backend = TchBackend::new(Device::Cpu, CpuSettings::new(threads))?;
    let mut net = backend.build(&model, Some(&init::canonical(&model, 42)))?;
    let optimizer = OptimizerConfig::adam(1e-3);
    println!(
        "harness share, libtorch {model_name}: {} examples, batch {BATCH}, {threads} threads, {rounds} rounds",
        train.len()
    );

    let mut times: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        let order = epoch_order(train.len(), 42, round as u32);
        let plan = EpochPlan::new(&train, &order, BATCH)?;

        // The epoch's batches already in libtorch, in its order, built before any clock starts.
        let batches = plan
            .batches()
            .map(|batch| to_tensors(&batch))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // One full batch and the last, partial one, for the same steps on cache-hot inputs.
        let (hot_full, hot_last) = (&batches[0], &batches[batches.len() - 1]);

        // Each round runs the four in a rotated order, so that none always follows another.
        for turn in 0..4 {
            let which = (round + turn) % 4;
            let seconds = match which {
                PREBUILT => {
                    let tch_model = libtorch_model(&mut net)?;
                    let start = Instant::now();
                    for (images, labels) in &batches {
                        tch_model.train_step_tensors(images, labels, &optimizer)?;
                    }
                    start.elapsed().as_secs_f64()
                }
                HOT => {
                    let tch_model = libtorch_model(&mut net)?;
                    let start = Instant::now();
                    for step in 0..plan.steps() {
                        let (images, labels) = if step + 1 == plan.steps() {
                            hot_last
                        } else {
                            hot_full
                        };
                        tch_model.train_step_tensors(images, labels, &optimizer)?;
                    }
                    start.elapsed().as_secs_f64()
                }
                EPOCH => net.train_epoch(&plan, &optimizer, &mut |_| {})?.seconds,
                _ => {
                    let start = Instant::now();
                    for batch in plan.batches() {
                        net.train_step(&batch, &optimizer)?;
                    }
                    start.elapsed().as_secs_f64()
                }
            };
            times[which].push(seconds);
        }
        println!(
            "  round {round}: engine {:.3} s (hot batch {:.3} s), epoch {:.3} s, host loop {:.3} s",
            times[PREBUILT][round], times[HOT][round], times[EPOCH][round], times[HOST_LOOP][round]
        );
    }
    // Shares are paired within each round, where the epochs ran back to back, so that a slow
    // stretch of the machine shifts both sides of a difference rather than one.
    let shares = |loop_index: usize, engine_index: usize| -> Summary {
        Summary::of(
            times[loop_index]
                .iter()
                .zip(&times[engine_index])
                .map(|(looped, engine)| 100.0 * (looped - engine) / looped)
                .collect(),
        )
    };
    let [prebuilt, hot, epoch, host_loop] = times.clone().map(|values| Summary::of(values).median);
    println!(
        "median s/epoch: engine {prebuilt:.3} (hot batch {hot:.3}), epoch {epoch:.3}, host loop {host_loop:.3}\n\
         harness share of the epoch: {} (the host loop's: {})\n\
         against the hot batch, which leaves out reading the epoch's images from memory: {} (host loop {})",
        shares(EPOCH, PREBUILT),
        shares(HOST_LOOP, PREBUILT),
        shares(EPOCH, HOT),
        shares(HOST_LOOP, HOT),
    );
    Ok(())
}

//! The cnn's layers one by one on burn, Flex against burn's own libtorch backend: the minimal
//! reproduction behind `docs/bench.md`'s account of where burn's cnn step goes.
//!
//! The same burn code (`Conv2d`, `max_pool2d`, `relu`, `Linear`, autodiff) runs on both
//! engines, so a gap between them is the engine's kernels, not parallax's adapter. Each layer
//! is timed forward, and forward with backward (the gradient of the output's sum), on the
//! cnn's shapes at batch 64; every iteration ends by reading a scalar that depends on the whole
//! result. Names read `<engine>/cnn.<layer>/<forward|forward_backward>/64`.
//!
//! ```sh
//! cargo bench -p parallax-benches --bench burn_ops                      # Flex only
//! cargo xtask env > native.env && . native.env &&
//!   cargo bench -p parallax-benches --features burn-tch --bench burn_ops  # and burn-tch
//! ```

use std::hint::black_box;
use std::time::Duration;

use burn::nn::conv::Conv2dConfig;
use burn::nn::{LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};

const BATCH: usize = 64;

fn threads() -> usize {
    std::env::var("PARALLAX_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2)
}

/// A `[BATCH, channels, side, side]` input that requires its gradient.
fn input(channels: usize, side: usize, device: &Device) -> Tensor<4> {
    Tensor::random(
        [BATCH, channels, side, side],
        Distribution::Uniform(0.0, 1.0),
        device,
    )
    .require_grad()
}

/// Reads the sum of `tensor` back: the iteration's work is done when this returns.
fn finish<const D: usize>(tensor: Tensor<D>) -> f32 {
    tensor.sum().into_scalar()
}

/// Times `layer` forward, and forward with the backward pass of its output's sum.
fn layer(
    c: &mut Criterion,
    engine: &str,
    name: &str,
    x: &Tensor<4>,
    forward: impl Fn(Tensor<4>) -> Tensor<4>,
) {
    let mut group = c.benchmark_group(format!("{engine}/cnn.{name}"));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.bench_function(format!("forward/{BATCH}"), |b| {
        b.iter(|| black_box(finish(forward(x.clone()))))
    });
    group.bench_function(format!("forward_backward/{BATCH}"), |b| {
        b.iter(|| {
            let gradients = forward(x.clone()).sum().backward();
            let gradient = x.grad(&gradients).expect("the input's gradient");
            black_box(finish(gradient))
        })
    });
    group.finish();
}

/// Every layer of the cnn on `device`, named `engine`.
fn engine(c: &mut Criterion, engine: &str, device: Device) {
    let device = device.autodiff();
    let same = PaddingConfig2d::Explicit(1, 1, 1, 1);
    let conv1 = Conv2dConfig::new([1, 32], [3, 3])
        .with_padding(same.clone())
        .init(&device);
    let conv2 = Conv2dConfig::new([32, 64], [3, 3])
        .with_padding(same)
        .init(&device);
    let fc1 = LinearConfig::new(64 * 7 * 7, 128).init(&device);
    let pool = |x: Tensor<4>| max_pool2d(x, MaxPoolOptions::new([2, 2]));
    layer(c, engine, "conv1", &input(1, 28, &device), |x| {
        conv1.forward(x)
    });
    layer(c, engine, "relu1", &input(32, 28, &device), relu);
    layer(c, engine, "pool1", &input(32, 28, &device), pool);
    layer(c, engine, "conv2", &input(32, 14, &device), |x| {
        conv2.forward(x)
    });
    layer(c, engine, "pool2", &input(64, 14, &device), pool);
    // The dense layer on the flattened image, kept 4-D at the boundary for `layer`.
    layer(c, engine, "fc1", &input(64, 7, &device), |x| {
        fc1.forward(x.reshape([BATCH, 64 * 7 * 7]))
            .reshape([BATCH, 128, 1, 1])
    });
}

fn flex(c: &mut Criterion) {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads())
        .build_global();
    engine(c, "burn", Device::flex());
}

#[cfg(feature = "burn-tch")]
#[allow(deprecated)]
fn libtorch(c: &mut Criterion) {
    tch::set_num_threads(threads() as i32);
    engine(c, "burn-tch", Device::libtorch());
}

#[cfg(not(feature = "burn-tch"))]
fn libtorch(_: &mut Criterion) {}

criterion_group!(benches, flex, libtorch);
criterion_main!(benches);

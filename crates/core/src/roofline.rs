//! The roofline of a training step: each layer's FLOPs and the bytes it moves, against the
//! machine's matrix-product peak and its memory bandwidth, both measured in the run, so that a
//! report can say which layers compute at the peak's pace and which wait on memory, and how
//! far a step sits from the least time the two ceilings allow (Williams, Waterman and
//! Patterson, "Roofline", CACM 2009).
//!
//! FLOPs are [`crate::flops`]'s. Bytes are estimated from tensor sizes, as the roofline
//! literature does when it has no hardware counters: in each pass every tensor a layer reads
//! or writes crosses memory once, f32 values of 4 bytes; a residual block is walked through its
//! own stages (convolution, batch norm, ReLU, the addition); flattening is a view and moves
//! nothing. Caches are ignored, so a layer
//! whose tensors fit in them moves less than this, and its floor is a little too high.
//!
//! - forward: the input read, the output written, the parameters read once per step;
//! - backward, where it runs: the output's gradient read, the saved input read, the input's
//!   gradient written (not by the first layer with parameters, nor before it), the parameters
//!   read and their gradients written;
//! - the optimizer, per step: each trainable value, its gradient and its state read, the value
//!   and the state written.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::optim::OptimizerKind;
use crate::spec::{Op, ParamOp, ResolvedLayer, ResolvedModel, Shape};

/// Bytes of one f32 value.
const F32_BYTES: u64 = 4;

/// One layer's work in one training step at the run's batch size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCost {
    /// The layer's name in the spec (`conv1`, `layer2.0`), or `optimizer` for the update.
    pub name: String,
    /// What it is (`conv2d`, `dense`, `batch_norm`, `relu`, `block`...).
    pub kind: String,
    /// FLOPs of the forward pass over the batch.
    pub forward_flops: u64,
    /// FLOPs of the backward pass over the batch (for the optimizer: its update).
    pub backward_flops: u64,
    /// Bytes the forward pass moves.
    pub forward_bytes: u64,
    /// Bytes the backward pass moves (for the optimizer: its update).
    pub backward_bytes: u64,
}

impl LayerCost {
    /// FLOPs of the whole step.
    pub fn flops(&self) -> u64 {
        self.forward_flops.saturating_add(self.backward_flops)
    }

    /// Bytes of the whole step.
    pub fn bytes(&self) -> u64 {
        self.forward_bytes.saturating_add(self.backward_bytes)
    }

    /// FLOPs per byte moved: above the machine's ridge (peak over bandwidth) a layer is bound
    /// by compute, below it by memory.
    pub fn intensity(&self) -> f64 {
        self.flops() as f64 / (self.bytes().max(1)) as f64
    }
}

/// One layer's passes timed in isolation on the engine ([`crate::Model::layer_times`]): the
/// median seconds of each at the run's batch size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerTime {
    /// Its forward pass, in training mode.
    pub forward: f64,
    /// Its backward pass from its output's gradient: its parameters' gradients, and its
    /// input's where a layer before it has parameters; 0 where neither is needed.
    pub backward: f64,
}

impl LayerTime {
    /// Both passes.
    pub fn total(&self) -> f64 {
        self.forward + self.backward
    }
}

/// Each layer's forward and backward time inside whole training steps, as the engine's own
/// profiler attributes its operations to the spec's layers ([`crate::Model::layer_profile`]):
/// the other side of [`LayerTime`], with the caches, allocations and scheduling of a real
/// step, and the profiler's own cost per operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerProfile {
    /// The profiler that measured it, as its engine names it.
    pub profiler: String,
    /// The profiled steps the medians are over, after one unprofiled warm-up step.
    pub steps: usize,
    /// Each layer's median seconds, in the spec's order: its forward operations, and the
    /// backward operations the engine's autograd derived from them (each parameter's gradient
    /// accumulation, which the profiler ties to no layer, left out).
    pub layers: Vec<LayerTime>,
}

impl LayerProfile {
    /// Every layer's time in the step, forward and backward.
    pub fn total(&self) -> f64 {
        self.layers.iter().map(LayerTime::total).sum()
    }
}

/// Timed repeats of each layer's passes, after one untimed warm-up.
pub const LAYER_REPEATS: usize = 5;

/// One layer's [`LayerTime`]: `passes` runs its forward and backward passes once and returns
/// their seconds; it runs once to warm up (allocations, kernels picked or compiled on first
/// use), then [`LAYER_REPEATS`] times, and each pass keeps its median. Every adapter's
/// [`crate::Model::layer_times`] times its layers through it.
pub fn time_layer<E>(mut passes: impl FnMut() -> Result<(f64, f64), E>) -> Result<LayerTime, E> {
    passes()?;
    let (mut forwards, mut backwards) = (Vec::new(), Vec::new());
    for _ in 0..LAYER_REPEATS {
        let (forward, backward) = passes()?;
        forwards.push(forward);
        backwards.push(backward);
    }
    // An odd count has its median in the middle; `crate::stats` imports the records, which
    // import this module, so it is not used here.
    const _: () = assert!(LAYER_REPEATS % 2 == 1);
    let middle = |mut seconds: Vec<f64>| {
        seconds.sort_by(f64::total_cmp);
        seconds[LAYER_REPEATS / 2]
    };
    Ok(LayerTime {
        forward: middle(forwards),
        backward: middle(backwards),
    })
}

/// What holds a layer back on the roofline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Its FLOPs at the peak take longer than its bytes at the bandwidth.
    Compute,
    /// Its bytes at the bandwidth take longer than its FLOPs at the peak.
    Memory,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bound::Compute => "compute",
            Bound::Memory => "memory",
        })
    }
}

/// The machine's two ceilings, measured in the same run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ceilings {
    /// The matrix-product peak, FLOP/s ([`crate::peak`]).
    pub flops_per_second: f64,
    /// The stream-copy bandwidth, bytes/s ([`measure_bandwidth`]).
    pub bytes_per_second: f64,
}

impl Ceilings {
    /// The fewest seconds `cost` can take under both ceilings, and which one sets it.
    pub fn floor(&self, cost: &LayerCost) -> (f64, Bound) {
        let compute = cost.flops() as f64 / self.flops_per_second;
        let memory = cost.bytes() as f64 / self.bytes_per_second;
        if compute >= memory {
            (compute, Bound::Compute)
        } else {
            (memory, Bound::Memory)
        }
    }

    /// The step's floor: the sum of its layers' floors.
    pub fn step_floor(&self, costs: &[LayerCost]) -> f64 {
        costs.iter().map(|cost| self.floor(cost).0).sum()
    }
}

/// One stage of a layer, as memory sees it: values in, values out (per example), parameters.
struct Stage {
    input: u64,
    output: u64,
    parameters: u64,
}

fn values(shape: Shape) -> u64 {
    shape.len() as u64
}

/// The values among `params` that gradient descent trains.
fn trainable_values(params: Vec<&crate::spec::ParamInfo>) -> u64 {
    params
        .iter()
        .filter(|param| param.role.is_trainable())
        .map(|param| param.shape.iter().product::<usize>() as u64)
        .sum()
}

/// The stages a layer runs: itself, or a residual block's convolutions, batch norms, ReLUs and
/// addition in its own shapes.
fn stages(layer: &ResolvedLayer) -> Vec<Stage> {
    let parameters = trainable_values(layer.op.params());
    let block = match &layer.op {
        Op::Param(ParamOp::Block(block)) => block,
        // A view of its input in every engine: nothing moves.
        Op::Free(crate::spec::FreeOp::Flatten) => return Vec::new(),
        // Every other layer is one stage; a new kind of layer must say how it moves memory.
        Op::Param(ParamOp::Dense(_) | ParamOp::Conv2d(_) | ParamOp::BatchNorm(_)) | Op::Free(_) => {
            return vec![Stage {
                input: values(layer.input),
                output: values(layer.output),
                parameters,
            }];
        }
    };
    let (height, width) = match layer.input {
        Shape::Image { height, width, .. } => (height as u64, width as u64),
        Shape::Flat(_) => (1, 1),
    };
    let mut result = Vec::new();
    let (mut input, mut h, mut w) = (values(layer.input), height, width);
    let last = block.main.len().saturating_sub(1);
    for (index, step) in block.main.iter().enumerate() {
        let (output, out_h, out_w) = crate::memory::conv_output(&step.conv, h, w);
        // The convolution with its parameters and batch norm's, then batch norm's pass.
        result.push(Stage {
            input,
            output,
            parameters: trainable_values(step.params()),
        });
        result.push(Stage {
            input: output,
            output,
            parameters: 0,
        });
        if index != last {
            result.push(Stage {
                input: output,
                output,
                parameters: 0,
            });
        }
        (input, h, w) = (output, out_h, out_w);
    }
    if let Some(shortcut) = &block.shortcut {
        let (output, _, _) = crate::memory::conv_output(&shortcut.conv, height, width);
        result.push(Stage {
            input: values(layer.input),
            output,
            parameters: trainable_values(shortcut.params()),
        });
        result.push(Stage {
            input: output,
            output,
            parameters: 0,
        });
    }
    let output = values(layer.output);
    // The addition reads both paths; the block's ReLU.
    result.push(Stage {
        input: 2 * output,
        output,
        parameters: 0,
    });
    result.push(Stage {
        input: output,
        output,
        parameters: 0,
    });
    result
}

/// The name a report gives a layer's kind.
fn kind(op: &Op) -> &'static str {
    use crate::spec::FreeOp;
    match op {
        Op::Param(ParamOp::Dense(_)) => "dense",
        Op::Param(ParamOp::Conv2d(_)) => "conv2d",
        Op::Param(ParamOp::BatchNorm(_)) => "batch_norm",
        Op::Param(ParamOp::Block(_)) => "residual block",
        Op::Free(FreeOp::MaxPool2d(_)) => "max_pool",
        Op::Free(FreeOp::AvgPool2d(_)) => "avg_pool",
        Op::Free(FreeOp::GlobalAvgPool) => "global_avg_pool",
        Op::Free(FreeOp::Relu) => "relu",
        Op::Free(FreeOp::Dropout(_)) => "dropout",
        Op::Free(FreeOp::Flatten) => "flatten",
    }
}

/// Values each trainable value's update reads and writes: the value and its gradient read,
/// the value written, and each state slot read and written.
fn optimizer_traffic(optimizer: &OptimizerKind) -> u64 {
    match optimizer {
        OptimizerKind::Sgd { momentum } if *momentum == 0.0 => 3,
        OptimizerKind::Sgd { .. } => 5,
        OptimizerKind::Adam { .. } => 7,
    }
}

/// Each layer's FLOPs and bytes in one training step of `batch` examples, then the
/// optimizer's update; see the [module documentation](self).
pub fn layer_costs(
    model: &ResolvedModel,
    batch: usize,
    optimizer: &OptimizerKind,
) -> Vec<LayerCost> {
    let batch = batch as u64;
    let mut upstream_parameters = false;
    let mut costs = Vec::with_capacity(model.layers.len() + 1);
    for layer in &model.layers {
        let flops = crate::flops::layer(&layer.op, layer.input, layer.output);
        let stages = stages(layer);
        let activations = |stage: &Stage, backward: bool| -> u64 {
            if backward {
                // The output's gradient and the saved input read, the input's gradient written
                // where something upstream needs it.
                let gradient_out = if upstream_parameters { stage.input } else { 0 };
                stage.output + stage.input + gradient_out
            } else {
                stage.input + stage.output
            }
        };
        let forward_bytes: u64 = stages
            .iter()
            .map(|stage| batch * activations(stage, false) + stage.parameters)
            .sum::<u64>()
            * F32_BYTES;
        let runs_backward = upstream_parameters || flops.has_parameters;
        let backward_bytes: u64 = if runs_backward {
            stages
                .iter()
                .map(|stage| batch * activations(stage, true) + 2 * stage.parameters)
                .sum::<u64>()
                * F32_BYTES
        } else {
            0
        };
        let backward_flops = if upstream_parameters {
            flops.backward_with_input_gradient
        } else {
            flops.backward_without_input_gradient
        };
        costs.push(LayerCost {
            name: layer.name.clone(),
            kind: kind(&layer.op).into(),
            forward_flops: batch.saturating_mul(flops.forward),
            backward_flops: batch.saturating_mul(backward_flops),
            forward_bytes,
            backward_bytes,
        });
        upstream_parameters |= flops.has_parameters;
    }
    let trainable = model.trainable_count() as u64;
    costs.push(LayerCost {
        name: "optimizer".into(),
        kind: "update".into(),
        forward_flops: 0,
        backward_flops: trainable.saturating_mul(crate::flops::optimizer_per_parameter(optimizer)),
        forward_bytes: 0,
        backward_bytes: trainable
            .saturating_mul(optimizer_traffic(optimizer))
            .saturating_mul(F32_BYTES),
    });
    costs
}

/// The size of each of the stream-copy probe's two buffers: far larger than any CPU's
/// last-level cache today (256 MiB on the largest EPYC parts is shared by all its cores; a
/// copy between two buffers of this size each cannot stay in it).
pub const STREAM_BYTES: usize = 256 << 20;

/// The memory bandwidth a stream copy reaches, measured in the run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryBandwidth {
    /// Bytes per second, counting each copied byte twice (read and written), as STREAM's
    /// copy kernel does.
    pub bytes_per_second: f64,
    /// The size of each buffer, bytes.
    pub buffer_bytes: usize,
    /// The threads that copied, each its own slice.
    pub threads: usize,
    /// The timed copies; the best is kept (STREAM's rule: anything slower was disturbed).
    pub repeats: usize,
}

/// STREAM's copy kernel with `threads` threads, each copying its slice of a buffer of
/// `buffer_bytes` into another, timed `repeats` times after one untimed copy that touches
/// every page.
pub fn measure_bandwidth(threads: usize, buffer_bytes: usize, repeats: usize) -> MemoryBandwidth {
    let threads = threads.max(1);
    let count = (buffer_bytes / 4).max(threads);
    let source: Vec<f32> = (0..count).map(|i| i as f32).collect();
    let mut destination = vec![0.0f32; count];
    let chunk = count.div_ceil(threads);
    let copy = |destination: &mut [f32]| {
        std::thread::scope(|scope| {
            for (to, from) in destination.chunks_mut(chunk).zip(source.chunks(chunk)) {
                scope.spawn(move || to.copy_from_slice(from));
            }
        });
    };
    copy(&mut destination);
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        copy(&mut destination);
        best = best.min(start.elapsed().as_secs_f64());
        std::hint::black_box(&destination);
    }
    MemoryBandwidth {
        bytes_per_second: (2 * count * 4) as f64 / best.max(f64::MIN_POSITIVE),
        buffer_bytes: count * 4,
        threads,
        repeats: repeats.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::presets;

    fn sgd() -> OptimizerKind {
        OptimizerKind::Sgd { momentum: 0.0 }
    }

    #[test]
    fn the_mlp_moves_what_its_tensors_weigh() {
        let model = presets::mlp([1, 28, 28], 10).resolve().unwrap();
        let costs = layer_costs(&model, 64, &sgd());
        let names: Vec<&str> = costs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.last(), Some(&"optimizer"));
        let by_name = |name: &str| costs.iter().find(|c| c.name == name).unwrap();
        let first_dense = costs.iter().find(|c| c.kind == "dense").unwrap();
        // Forward: 64 images of 784 read, 64 × 128 written, 784 × 128 + 128 weights read.
        assert_eq!(
            first_dense.forward_bytes,
            4 * (64 * (784 + 128) + 784 * 128 + 128)
        );
        // Backward of the first layer with parameters: no input gradient written.
        assert_eq!(
            first_dense.backward_bytes,
            4 * (64 * (128 + 784) + 2 * (784 * 128 + 128))
        );
        assert_eq!(first_dense.forward_flops, 64 * (2 * 784 * 128 + 128));
        // Flatten, before any parameter, has no backward pass.
        let flatten = costs.iter().find(|c| c.kind == "flatten").unwrap();
        assert_eq!(flatten.backward_bytes, 0);
        assert_eq!(flatten.flops(), 0);
        // SGD without momentum reads value and gradient and writes the value.
        let trainable = model.trainable_count() as u64;
        assert_eq!(by_name("optimizer").backward_bytes, 4 * 3 * trainable);
        // The FLOPs agree with the model's count.
        let count = crate::flops::count(&model, &sgd());
        let total: u64 = costs.iter().map(LayerCost::flops).sum();
        assert_eq!(total, count.training(64, 1));
    }

    #[test]
    fn a_resnet_block_is_walked_through_its_stages_and_counted_with_its_flops() {
        let model = presets::resnet18([3, 32, 32], 10).resolve().unwrap();
        let costs = layer_costs(&model, 8, &sgd());
        let count = crate::flops::count(&model, &sgd());
        let total: u64 = costs.iter().map(LayerCost::flops).sum();
        assert_eq!(total, count.training(8, 1));
        let block = costs.iter().find(|c| c.kind == "residual block").unwrap();
        let layer = model.layers.iter().find(|l| l.name == block.name).unwrap();
        // At least the block's input and output, read and written by each of its stages.
        assert!(block.forward_bytes > 4 * 8 * 2 * (layer.input.len() + layer.output.len()) as u64);
    }

    #[test]
    fn the_floor_takes_the_slower_ceiling() {
        let cost = LayerCost {
            name: "x".into(),
            kind: "relu".into(),
            forward_flops: 1_000,
            backward_flops: 1_000,
            forward_bytes: 8_000,
            backward_bytes: 12_000,
        };
        let ceilings = Ceilings {
            flops_per_second: 1e3,
            bytes_per_second: 5e3,
        };
        assert_eq!(ceilings.floor(&cost), (4.0, Bound::Memory));
        assert_eq!(cost.intensity(), 0.1);
        let fast_memory = Ceilings {
            flops_per_second: 1e3,
            bytes_per_second: 1e6,
        };
        assert_eq!(fast_memory.floor(&cost), (2.0, Bound::Compute));
        assert_eq!(fast_memory.step_floor(&[cost.clone(), cost]), 4.0);
    }

    #[test]
    fn the_stream_copy_measures_a_positive_bandwidth() {
        let measured = measure_bandwidth(2, 1 << 20, 3);
        assert!(measured.bytes_per_second.is_finite() && measured.bytes_per_second > 1e6);
        assert_eq!(measured.buffer_bytes, 1 << 20);
        assert_eq!((measured.threads, measured.repeats), (2, 3));
    }
}

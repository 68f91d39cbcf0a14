//! The memory a run will need, estimated from the spec before anything is allocated, so that
//! a model that cannot fit in the machine is refused with one line instead of taking the
//! machine down (or being killed by the kernel after minutes of building).
//!
//! The estimate counts f32 values:
//!
//! - **parameters**: every canonical tensor once, plus per trainable value its gradient and
//!   the optimizer's state (Adam's two moments, SGD's momentum buffer when μ ≠ 0);
//! - **training activations**: per example, each layer's output kept for the backward pass (a
//!   residual block's convolutions keep their output and its normalised output, walked through
//!   the block's own shapes), plus the gradients in flight, about the widest two consecutive
//!   layer buffers; times the batch size;
//! - **evaluation activations**: the two largest consecutive layer buffers of a prediction of
//!   [`EVALUATION_BATCH`] examples.
//!
//! The total is the parameters plus the larger of the two activation terms. It is an estimate
//! of the model's own memory, without the engine's workspace, the data set or the engine's
//! libraries, and so a lower bound of what the process will use: a run is refused only when
//! even this does not fit. All arithmetic saturates, so no spec can overflow it.

use serde::{Deserialize, Serialize};

use crate::optim::OptimizerKind;
use crate::spec::{ConvOp, Op, ParamOp, ResolvedLayer, ResolvedModel, Shape};
use crate::{Error, Result};

/// Bytes of one f32 value.
const F32_BYTES: u64 = 4;

/// How many test examples one prediction call takes during evaluation: the run protocol's
/// batch, and the evaluation batch this estimate holds activations for.
pub const EVALUATION_BATCH: usize = 1000;

/// The memory of one run of a model, estimated from its spec; see the
/// [module documentation](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    /// Parameters, their gradients and the optimizer's state, bytes.
    pub parameter_bytes: u64,
    /// Activations a training step keeps, and their gradients, at the run's batch size, bytes.
    pub training_activation_bytes: u64,
    /// Activations of an evaluation batch, bytes.
    pub evaluation_activation_bytes: u64,
    /// The batch size the training term is for.
    pub batch_size: u64,
}

impl MemoryEstimate {
    /// The estimate's total: the parameters and the larger activation term.
    pub fn total_bytes(&self) -> u64 {
        self.parameter_bytes.saturating_add(
            self.training_activation_bytes
                .max(self.evaluation_activation_bytes),
        )
    }

    /// Fails with one line when the total exceeds `available` bytes, saying what to change.
    pub fn check(&self, model: &str, available: u64) -> Result<()> {
        if self.total_bytes() <= available {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "model {model} needs at least {} (parameters, gradients and optimizer state {}, activations at batch size {} {}), more than this machine's {}; make the model smaller or lower --batch-size",
            gib(self.total_bytes()),
            gib(self.parameter_bytes),
            self.batch_size,
            gib(self
                .training_activation_bytes
                .max(self.evaluation_activation_bytes)),
            gib(available)
        )))
    }
}

/// `bytes` as GiB with two decimals, or as an order of magnitude beyond a thousand GiB.
fn gib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let gib = bytes as f64 / f64::from(1u32 << 30);
    if gib < 1000.0 {
        format!("{gib:.2} GiB")
    } else {
        format!("{gib:.1e} GiB")
    }
}

/// f32 values the optimizer keeps per trainable value.
fn optimizer_slots(optimizer: &OptimizerKind) -> u64 {
    match optimizer {
        OptimizerKind::Sgd { momentum } if *momentum == 0.0 => 0,
        OptimizerKind::Sgd { .. } => 1,
        OptimizerKind::Adam { .. } => 2,
    }
}

/// The values of a convolution's output on an input of `height × width`, with its output's
/// height and width.
pub(crate) fn conv_output(conv: &ConvOp, height: u64, width: u64) -> (u64, u64, u64) {
    let [top, bottom, left, right] = conv.padding;
    let out_h = crate::flops::windows(height, conv.kernel[0], conv.stride[0], top, bottom);
    let out_w = crate::flops::windows(width, conv.kernel[1], conv.stride[1], left, right);
    let values = (conv.out_channels as u64)
        .saturating_mul(out_h)
        .saturating_mul(out_w);
    (values, out_h, out_w)
}

/// Values a layer keeps per example for the backward pass: its output, and inside a residual
/// block each convolution's output and its normalised output, walked through the block's own
/// shapes.
fn saved_values(layer: &ResolvedLayer) -> u64 {
    let output = layer.output.len() as u64;
    // Every other layer keeps its output alone; a new kind of layer must say what it keeps.
    let block = match &layer.op {
        Op::Param(ParamOp::Block(block)) => block,
        Op::Param(ParamOp::Dense(_) | ParamOp::Conv2d(_) | ParamOp::BatchNorm(_)) | Op::Free(_) => {
            return output;
        }
    };
    let (height, width) = match layer.input {
        Shape::Image { height, width, .. } => (height as u64, width as u64),
        Shape::Flat(_) => (1, 1),
    };
    let mut saved = output;
    let (mut h, mut w) = (height, width);
    for step in &block.main {
        let (values, out_h, out_w) = conv_output(&step.conv, h, w);
        saved = saved.saturating_add(values.saturating_mul(2));
        (h, w) = (out_h, out_w);
    }
    if let Some(shortcut) = &block.shortcut {
        let (values, _, _) = conv_output(&shortcut.conv, height, width);
        saved = saved.saturating_add(values.saturating_mul(2));
    }
    saved
}

/// The estimate for `model` trained with `optimizer` at `batch_size`.
pub fn estimate(
    model: &ResolvedModel,
    batch_size: usize,
    optimizer: &OptimizerKind,
) -> MemoryEstimate {
    let mut all_values = 0u64;
    let mut trainable = 0u64;
    for layer in &model.layers {
        for param in layer.op.params() {
            let values = param
                .shape
                .iter()
                .fold(1u64, |product, &side| product.saturating_mul(side as u64));
            all_values = all_values.saturating_add(values);
            if param.role.is_trainable() {
                trainable = trainable.saturating_add(values);
            }
        }
    }
    let per_trainable = 1 + optimizer_slots(optimizer);
    let parameter_values = all_values.saturating_add(trainable.saturating_mul(per_trainable));

    let input = model
        .input()
        .iter()
        .fold(1u64, |p, &side| p.saturating_mul(side as u64));
    let mut saved = input;
    let mut widest_pair = input;
    let mut previous = input;
    for layer in &model.layers {
        let output = layer.output.len() as u64;
        saved = saved.saturating_add(saved_values(layer));
        widest_pair = widest_pair.max(previous.saturating_add(output));
        previous = output;
    }
    // The backward pass holds the gradients of about one layer's input and output at a time.
    let per_example = saved.saturating_add(widest_pair);
    let batch = batch_size as u64;
    let evaluation = EVALUATION_BATCH as u64;
    MemoryEstimate {
        parameter_bytes: parameter_values.saturating_mul(F32_BYTES),
        training_activation_bytes: per_example.saturating_mul(batch).saturating_mul(F32_BYTES),
        evaluation_activation_bytes: widest_pair
            .saturating_mul(evaluation)
            .saturating_mul(F32_BYTES),
        batch_size: batch,
    }
}

/// This machine's physical memory in bytes (Linux's `MemTotal`), or `None` where it is not
/// known.
pub fn machine_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

/// Estimates `model`'s memory at `batch_size` and refuses it, with one line, when it does
/// not fit in this machine; returns the estimate for the record.
pub fn check_fits(
    model: &ResolvedModel,
    batch_size: usize,
    optimizer: &OptimizerKind,
) -> Result<MemoryEstimate> {
    let estimate = estimate(model, batch_size, optimizer);
    if let Some(available) = machine_bytes() {
        estimate.check(&model.spec.name, available)?;
    }
    Ok(estimate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OptimizerConfig;
    use crate::spec::{ModelSpec, presets};

    fn adam() -> OptimizerKind {
        OptimizerConfig::adam(1e-3).kind
    }

    #[test]
    fn the_mlp_is_counted_by_hand() {
        let model = presets::mlp([1, 28, 28], 10).resolve().unwrap();
        let estimate = estimate(&model, 64, &adam());
        // 784·128 + 128 + 128·10 + 10 = 101,770 parameters: weights, gradients, two moments.
        assert_eq!(estimate.parameter_bytes, 101_770 * 4 * 4);
        // The input, each layer's output, and the widest pair (the input and flatten's 784).
        let layers: u64 = model.layers.iter().map(|l| l.output.len() as u64).sum();
        assert_eq!(
            estimate.training_activation_bytes,
            (784 + layers + 2 * 784) * 64 * 4
        );
        assert!(estimate.total_bytes() < 1 << 30);
    }

    #[test]
    fn a_dense_layer_of_a_billion_units_is_refused_in_one_line() {
        let spec: ModelSpec = serde_json::from_value(serde_json::json!({
            "name": "huge",
            "input": [1, 28, 28],
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 1_000_000_000u64},
                {"type": "dense", "units": 10}
            ]
        }))
        .unwrap();
        let model = spec.resolve().unwrap();
        let estimate = estimate(&model, 64, &adam());
        let error = estimate.check("huge", 24 << 30).unwrap_err().to_string();
        assert!(
            error.starts_with("model huge needs at least ")
                && error.contains("more than this machine's 24.00 GiB")
                && error.contains("lower --batch-size")
                && !error.contains('\n'),
            "{error}"
        );
        // 784·10⁹ weights alone are 2.9 TiB.
        assert!(estimate.parameter_bytes > 784_000_000_000 * 4);
    }
}

//! Floating-point operations of a resolved model, counted layer by layer from its spec: the
//! forward pass and the backward pass per example, and the optimizer's update per step, so
//! that a run's seconds become achieved GFLOP/s.
//!
//! Conventions (those of the roofline literature and of MLPerf's model FLOP counts):
//!
//! - A multiply-add of a dense layer or a convolution counts **2** FLOPs; a bias adds 1 per
//!   output value. torchvision's model table counts multiply-adds alone ("GFLOPS 1.81" for
//!   ResNet-18 at 224×224 is 1.81 G multiply-adds), half of this count.
//! - Backward through a dense layer or a convolution is the input gradient (the forward's
//!   multiply-adds again) plus the weight gradient (the same again) plus the bias gradient (one
//!   add per output value). The **first layer with parameters computes no input gradient**, and
//!   layers before it have no backward pass at all: nothing upstream needs a gradient.
//! - Element-wise layers count per value: ReLU 1 forward and 1 backward; dropout 1 and 1;
//!   batch norm in training 8 forward (mean, variance, normalisation and the affine map) and
//!   10 backward; a residual addition 1 forward and none backward. Max pooling counts one
//!   comparison per window element forward and one add per output backward; average pooling
//!   one add per window element and a division per output, each way; global average pooling one
//!   add per input value each way.
//! - The optimizer's update counts per trainable parameter and step: SGD with momentum 4
//!   (weight decay aside: scale and add the momentum buffer, scale and add the step), Adam 12
//!   (two moment updates, their bias corrections, the square root, ε, the division and the
//!   step).
//!
//! Counts are `u64` per example; a ResNet-50 at 224×224 is about 8·10⁹ forward.

use serde::{Deserialize, Serialize};

use crate::OptimizerKind;
use crate::spec::{BlockOp, ConvNorm, ConvOp, FreeOp, Op, ParamOp, PoolOp, ResolvedModel, Shape};

/// The FLOPs of one model: per example forward and backward, and per step the optimizer's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlopCount {
    /// Forward pass, per example.
    pub forward_per_example: u64,
    /// Backward pass, per example (no input gradient for the first layer with parameters).
    pub backward_per_example: u64,
    /// The optimizer's update, per step.
    pub optimizer_per_step: u64,
}

impl FlopCount {
    /// The FLOPs of training on `examples` examples in `steps` steps: forward and backward per
    /// example, the update per step.
    pub fn training(&self, examples: u64, steps: u64) -> u64 {
        examples
            .saturating_mul(
                self.forward_per_example
                    .saturating_add(self.backward_per_example),
            )
            .saturating_add(steps.saturating_mul(self.optimizer_per_step))
    }
}

/// One layer's FLOPs per example.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerFlops {
    /// Forward.
    pub forward: u64,
    /// Backward, when the layer needs its input gradient.
    pub backward_with_input_gradient: u64,
    /// Backward, when it does not (the weight and bias gradients only).
    pub backward_without_input_gradient: u64,
    /// Whether the layer has trainable parameters.
    pub has_parameters: bool,
}

impl std::ops::AddAssign for LayerFlops {
    fn add_assign(&mut self, other: Self) {
        self.forward = self.forward.saturating_add(other.forward);
        self.backward_with_input_gradient = self
            .backward_with_input_gradient
            .saturating_add(other.backward_with_input_gradient);
        self.backward_without_input_gradient = self
            .backward_without_input_gradient
            .saturating_add(other.backward_without_input_gradient);
        self.has_parameters |= other.has_parameters;
    }
}

/// `k·multiply_adds + extra`, saturating: counts of absurd specs (which the memory estimate
/// refuses) stay at `u64::MAX` rather than wrap.
fn affine(k: u64, multiply_adds: u64, extra: u64) -> u64 {
    k.saturating_mul(multiply_adds).saturating_add(extra)
}

fn image(shape: Shape) -> (u64, u64, u64) {
    match shape {
        Shape::Image {
            channels,
            height,
            width,
        } => (channels as u64, height as u64, width as u64),
        Shape::Flat(n) => (n as u64, 1, 1),
    }
}

/// The output size of a window of `kernel` moving by `stride` over `size` padded by `before`
/// and `after`.
pub(crate) fn windows(size: u64, kernel: usize, stride: usize, before: usize, after: usize) -> u64 {
    let padded = size
        .saturating_add(before as u64)
        .saturating_add(after as u64);
    if padded < kernel as u64 || stride == 0 {
        return 0;
    }
    (padded - kernel as u64) / stride as u64 + 1
}

/// A convolution's FLOPs on an input of `input`, and its output shape.
fn convolution(op: &ConvOp, input: Shape) -> (LayerFlops, Shape) {
    let (_, height, width) = image(input);
    let [top, bottom, left, right] = op.padding;
    let out_h = windows(height, op.kernel[0], op.stride[0], top, bottom);
    let out_w = windows(width, op.kernel[1], op.stride[1], left, right);
    let outputs = (op.out_channels as u64)
        .saturating_mul(out_h)
        .saturating_mul(out_w);
    let multiply_adds = outputs
        .saturating_mul(op.in_channels as u64)
        .saturating_mul(op.kernel[0] as u64)
        .saturating_mul(op.kernel[1] as u64);
    let bias = if op.bias.is_some() { outputs } else { 0 };
    let flops = LayerFlops {
        forward: affine(2, multiply_adds, bias),
        backward_with_input_gradient: affine(4, multiply_adds, bias),
        backward_without_input_gradient: affine(2, multiply_adds, bias),
        has_parameters: true,
    };
    let output = Shape::Image {
        channels: op.out_channels,
        height: out_h as usize,
        width: out_w as usize,
    };
    (flops, output)
}

/// An element-wise layer of `forward` and `backward` FLOPs per value over `values`.
fn elementwise(values: u64, forward: u64, backward: u64, has_parameters: bool) -> LayerFlops {
    LayerFlops {
        forward: forward.saturating_mul(values),
        backward_with_input_gradient: backward.saturating_mul(values),
        // Batch norm's γ and β gradients need most of its backward pass even when no input
        // gradient is wanted; counting it whole keeps the rule simple and errs by little.
        backward_without_input_gradient: if has_parameters {
            backward.saturating_mul(values)
        } else {
            0
        },
        has_parameters,
    }
}

const BATCH_NORM_FORWARD: u64 = 8;
const BATCH_NORM_BACKWARD: u64 = 10;

fn conv_norm(step: &ConvNorm, input: Shape) -> (LayerFlops, Shape) {
    let (mut flops, output) = convolution(&step.conv, input);
    flops += elementwise(
        output.len() as u64,
        BATCH_NORM_FORWARD,
        BATCH_NORM_BACKWARD,
        true,
    );
    (flops, output)
}

fn block(op: &BlockOp, input: Shape) -> LayerFlops {
    let mut flops = LayerFlops::default();
    let mut shape = input;
    let last = op.main.len().saturating_sub(1);
    for (index, step) in op.main.iter().enumerate() {
        let (step_flops, output) = conv_norm(step, shape);
        flops += step_flops;
        if index != last {
            flops += elementwise(output.len() as u64, 1, 1, false);
        }
        shape = output;
    }
    if let Some(shortcut) = &op.shortcut {
        flops += conv_norm(shortcut, input).0;
    }
    // The addition, then the block's ReLU.
    flops += elementwise(shape.len() as u64, 1, 0, false);
    flops += elementwise(shape.len() as u64, 1, 1, false);
    flops
}

fn pooling(op: &PoolOp, output: Shape, average: bool) -> LayerFlops {
    let outputs = output.len() as u64;
    let window = (op.kernel[0] as u64).saturating_mul(op.kernel[1] as u64);
    if average {
        let per_output = window.saturating_add(1);
        elementwise(outputs, per_output, per_output, false)
    } else {
        elementwise(outputs, window, 1, false)
    }
}

/// One layer's FLOPs per example, from its op and its input and output shapes.
pub fn layer(op: &Op, input: Shape, output: Shape) -> LayerFlops {
    match op {
        Op::Param(ParamOp::Dense(dense)) => {
            let multiply_adds =
                (dense.in_features as u64).saturating_mul(dense.out_features as u64);
            let bias = if dense.bias.is_some() {
                dense.out_features as u64
            } else {
                0
            };
            LayerFlops {
                forward: affine(2, multiply_adds, bias),
                backward_with_input_gradient: affine(4, multiply_adds, bias),
                backward_without_input_gradient: affine(2, multiply_adds, bias),
                has_parameters: true,
            }
        }
        Op::Param(ParamOp::Conv2d(conv)) => convolution(conv, input).0,
        Op::Free(FreeOp::MaxPool2d(pool)) => pooling(pool, output, false),
        Op::Free(FreeOp::AvgPool2d(pool)) => pooling(pool, output, true),
        Op::Free(FreeOp::GlobalAvgPool) => elementwise(input.len() as u64, 1, 1, false),
        Op::Param(ParamOp::BatchNorm(_)) => elementwise(
            input.len() as u64,
            BATCH_NORM_FORWARD,
            BATCH_NORM_BACKWARD,
            true,
        ),
        Op::Free(FreeOp::Relu) => elementwise(input.len() as u64, 1, 1, false),
        Op::Free(FreeOp::Dropout(_)) => elementwise(input.len() as u64, 1, 1, false),
        Op::Free(FreeOp::Flatten) => LayerFlops::default(),
        Op::Param(ParamOp::Block(op)) => block(op, input),
    }
}

/// The optimizer's FLOPs per trainable parameter and step.
pub fn optimizer_per_parameter(kind: &OptimizerKind) -> u64 {
    match kind {
        OptimizerKind::Sgd { .. } => 4,
        OptimizerKind::Adam { .. } => 12,
    }
}

/// The model's FLOPs: forward and backward per example, layer by layer, and the optimizer's
/// update per step.
pub fn count(model: &ResolvedModel, optimizer: &OptimizerKind) -> FlopCount {
    let mut total = FlopCount::default();
    let mut upstream_parameters = false;
    for resolved in &model.layers {
        let flops = layer(&resolved.op, resolved.input, resolved.output);
        total.forward_per_example = total.forward_per_example.saturating_add(flops.forward);
        total.backward_per_example =
            total
                .backward_per_example
                .saturating_add(if upstream_parameters {
                    flops.backward_with_input_gradient
                } else {
                    flops.backward_without_input_gradient
                });
        upstream_parameters |= flops.has_parameters;
    }
    total.optimizer_per_step =
        (model.trainable_count() as u64).saturating_mul(optimizer_per_parameter(optimizer));
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::presets;

    fn adam() -> OptimizerKind {
        crate::OptimizerName::Adam
            .with_lr(1e-3)
            .expect("a valid learning rate")
            .kind
    }

    #[test]
    fn the_mlp_is_counted_by_hand() {
        let model = presets::mlp([1, 28, 28], 10).resolve().unwrap();
        let flops = count(&model, &adam());
        // Dense 784→128 and 128→10 with biases, the ReLU between them.
        let first = 2 * 784 * 128 + 128;
        let second = 2 * 128 * 10 + 10;
        assert_eq!(flops.forward_per_example, first + 128 + second);
        // The first dense layer computes no input gradient; the second does.
        let backward = (2 * 784 * 128 + 128) + 128 + (4 * 128 * 10 + 10);
        assert_eq!(flops.backward_per_example, backward);
        assert_eq!(
            flops.optimizer_per_step,
            12 * (784 * 128 + 128 + 128 * 10 + 10)
        );
        assert_eq!(
            flops.training(64, 1),
            64 * (flops.forward_per_example + flops.backward_per_example)
                + flops.optimizer_per_step
        );
    }

    /// torchvision's model table gives ResNet-18 at 224×224 1.81 G multiply-adds and
    /// ResNet-50 4.09 G; their convolutions and dense layer here must come to the same.
    #[test]
    fn resnets_match_torchvisions_multiply_adds() {
        for (model, expected) in [
            (presets::resnet18([3, 224, 224], 1000), 1.81e9),
            (presets::resnet50([3, 224, 224], 1000), 4.09e9),
        ] {
            let model = model.resolve().unwrap();
            let mut multiply_adds = 0u64;
            let mut shapes = model.layers.iter();
            for resolved in shapes.by_ref() {
                multiply_adds += match &resolved.op {
                    Op::Param(ParamOp::Dense(d)) => (d.in_features * d.out_features) as u64,
                    Op::Param(ParamOp::Conv2d(c)) => {
                        let (_, h, w) = image(resolved.output);
                        (c.out_channels * c.in_channels * c.kernel[0] * c.kernel[1]) as u64 * h * w
                    }
                    Op::Param(ParamOp::Block(block)) => {
                        let mut shape = resolved.input;
                        let mut sum = 0;
                        for step in &block.main {
                            let (flops, output) = convolution(&step.conv, shape);
                            sum += flops.forward / 2;
                            shape = output;
                        }
                        if let Some(shortcut) = &block.shortcut {
                            sum += convolution(&shortcut.conv, resolved.input).0.forward / 2;
                        }
                        sum
                    }
                    _ => 0,
                };
            }
            let ratio = multiply_adds as f64 / expected;
            eprintln!(
                "{}: {multiply_adds} multiply-adds, {:.4} of torchvision's {expected}",
                model.spec.name, ratio
            );
            assert!(
                (ratio - 1.0).abs() < 0.01,
                "{}: {multiply_adds} multiply-adds against torchvision's {expected}",
                model.spec.name
            );
            let flops = count(&model, &adam());
            // The element-wise layers add a few percent to twice the multiply-adds.
            let forward_ratio = flops.forward_per_example as f64 / (2.0 * multiply_adds as f64);
            assert!((1.0..1.05).contains(&forward_ratio), "{forward_ratio}");
            // Backward is about twice forward, less the first convolution's input gradient.
            let backward_ratio =
                flops.backward_per_example as f64 / flops.forward_per_example as f64;
            assert!((1.85..2.0).contains(&backward_ratio), "{backward_ratio}");
        }
    }

    #[test]
    fn a_convolution_counts_its_output_positions() {
        let model = presets::cnn([1, 28, 28], 10).resolve().unwrap();
        let first = &model.layers[0];
        let Op::Param(ParamOp::Conv2d(conv)) = &first.op else {
            panic!("the cnn opens with a convolution");
        };
        let (_, h, w) = image(first.output);
        let flops = layer(&first.op, first.input, first.output);
        let positions = conv.out_channels as u64 * h * w;
        let multiply_adds = positions * (conv.in_channels * conv.kernel[0] * conv.kernel[1]) as u64;
        assert_eq!(flops.forward, 2 * multiply_adds + positions);
        // The shape the counter derives is the one the spec resolved.
        assert_eq!(convolution(conv, first.input).1, first.output);
    }

    #[test]
    fn padding_is_read_top_bottom_left_right_as_the_spec_resolves_it() {
        // A 5×9 input padded 2 rows at the bottom only: the output is 5×7, as resolved.
        let spec: crate::spec::ModelSpec = serde_json::from_value(serde_json::json!({
            "name": "asymmetric",
            "input": [1, 5, 9],
            "layers": [
                {"type": "conv2d", "filters": 1, "kernel": 3, "padding": [0, 2, 0, 0]},
                {"type": "flatten"},
                {"type": "dense", "units": 2}
            ]
        }))
        .unwrap();
        let model = spec.resolve().unwrap();
        let first = &model.layers[0];
        let Op::Param(ParamOp::Conv2d(conv)) = &first.op else {
            panic!("a convolution");
        };
        assert_eq!(first.output.len(), 5 * 7);
        assert_eq!(convolution(conv, first.input).1, first.output);
    }
}

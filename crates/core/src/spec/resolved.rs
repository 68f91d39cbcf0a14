//! Shape inference: a spec resolved layer by layer into [`ResolvedModel`], its layers' [`Op`]s
//! with every size, padding amount and canonical name explicit (the ops are in `ops.rs`), and
//! the walks over a resolved model (its parameters, norms, convolution–norm pairs, layers by
//! name).

use serde::{Deserialize, Serialize};

use super::ops::{
    BlockKind, BlockOp, ConvNorm, ConvOp, DenseOp, FreeOp, NormOp, Op, ParamInfo, ParamOp,
    ParamRole, PoolOp, Shape, join, param,
};
use super::{Layer, ModelSpec, Padding, Pair, SpecError, StrideAt};

/// One resolved layer: its unique name, what it does, and the shapes around it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedLayer {
    /// Unique name; prefix of its canonical parameter names.
    pub name: String,
    /// The operation, with its parameters.
    pub op: Op,
    /// Shape of one example going in.
    pub input: Shape,
    /// Shape of one example coming out.
    pub output: Shape,
}

/// A spec after shape inference: every layer resolved, the output a flat vector of logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedModel {
    /// The spec it came from.
    pub spec: ModelSpec,
    /// Resolved layers, in order.
    pub layers: Vec<ResolvedLayer>,
}

impl ResolvedModel {
    /// Every batch norm, standalone or inside a residual block, in order.
    pub fn norms(&self) -> Vec<&NormOp> {
        let mut norms = Vec::new();
        for layer in &self.layers {
            match &layer.op {
                Op::Param(ParamOp::BatchNorm(norm)) => norms.push(norm),
                Op::Param(ParamOp::Block(block)) => norms.extend(
                    block
                        .main
                        .iter()
                        .chain(&block.shortcut)
                        .map(|step| &step.norm),
                ),
                Op::Param(ParamOp::Dense(_)) | Op::Param(ParamOp::Conv2d(_)) | Op::Free(_) => {}
            }
        }
        norms
    }

    /// [`ResolvedModel::norms`], to change their conventions.
    pub fn norms_mut(&mut self) -> Vec<&mut NormOp> {
        let mut norms = Vec::new();
        for layer in &mut self.layers {
            match &mut layer.op {
                Op::Param(ParamOp::BatchNorm(norm)) => norms.push(norm),
                Op::Param(ParamOp::Block(block)) => norms.extend(
                    block
                        .main
                        .iter_mut()
                        .chain(&mut block.shortcut)
                        .map(|step| &mut step.norm),
                ),
                Op::Param(ParamOp::Dense(_)) | Op::Param(ParamOp::Conv2d(_)) | Op::Free(_) => {}
            }
        }
        norms
    }

    /// Every convolution whose output goes straight into a batch norm, with that norm: the
    /// stem's `conv1`/`bn1` and each step of a residual block.
    pub fn conv_norm_pairs(&self) -> Vec<(&ConvOp, &NormOp)> {
        let mut pairs = Vec::new();
        for (index, layer) in self.layers.iter().enumerate() {
            match &layer.op {
                Op::Param(ParamOp::Conv2d(conv)) => {
                    if let Some(Op::Param(ParamOp::BatchNorm(norm))) =
                        self.layers.get(index + 1).map(|next| &next.op)
                    {
                        pairs.push((conv, norm));
                    }
                }
                Op::Param(ParamOp::Block(block)) => pairs.extend(
                    block
                        .main
                        .iter()
                        .chain(&block.shortcut)
                        .map(|step| (&step.conv, &step.norm)),
                ),
                Op::Param(ParamOp::Dense(_)) | Op::Param(ParamOp::BatchNorm(_)) | Op::Free(_) => {}
            }
        }
        pairs
    }

    /// The number of classes: the size of the last layer's flat output.
    pub fn classes(&self) -> usize {
        self.layers
            .last()
            .map(|layer| layer.output.len())
            .unwrap_or(0)
    }

    /// Input shape, channels × height × width.
    pub fn input(&self) -> [usize; 3] {
        self.spec.input
    }

    /// Every canonical tensor of the model, in layer order: the layers' [`Op::params`] in turn.
    pub fn params(&self) -> impl Iterator<Item = &ParamInfo> {
        self.layers.iter().flat_map(|layer| layer.op.params())
    }

    /// [`ResolvedModel::params`], owned.
    pub fn parameters(&self) -> Vec<ParamInfo> {
        self.params().cloned().collect()
    }

    /// The number of values that gradient descent trains.
    pub fn trainable_count(&self) -> usize {
        self.params()
            .filter(|param| param.role.is_trainable())
            .map(|param| {
                param
                    .shape
                    .iter()
                    .fold(1usize, |n, &side| n.saturating_mul(side))
            })
            .fold(0usize, usize::saturating_add)
    }

    /// The index of the layer a GradCAM target names: an exact layer name, a prefix such as
    /// `layer4` that names a group of layers (`layer4.0`, `layer4.1`...), meaning the group's
    /// last, or Keras's name for a ResNet block's output (`conv5_block3_out` is `layer4.2`).
    pub fn find_layer(&self, name: &str) -> Option<usize> {
        if let Some(canonical) = keras_block_output(name) {
            return self.find_layer(&canonical);
        }
        self.layers
            .iter()
            .position(|layer| layer.name == name)
            .or_else(|| {
                let prefix = format!("{name}.");
                self.layers
                    .iter()
                    .rposition(|layer| layer.name.starts_with(&prefix))
            })
    }
}

/// The canonical name of a layer that keras.applications' ResNets name differently:
/// `conv{s}_block{b}_out` is block `b − 1` of stage `s − 1` (`layer{s−1}.{b−1}`), `conv1_relu`
/// is the stem's output and `pool1_pool` its pooling.
pub fn keras_block_output(name: &str) -> Option<String> {
    match name {
        "conv1_relu" => return Some("relu".into()),
        "pool1_pool" => return Some("maxpool".into()),
        _ => {}
    }
    let rest = name.strip_prefix("conv")?.strip_suffix("_out")?;
    let (stage, block) = rest.split_once("_block")?;
    let stage: usize = stage.parse().ok()?;
    let block: usize = block.parse().ok()?;
    (stage >= 2 && block >= 1).then(|| format!("layer{}.{}", stage - 1, block - 1))
}

/// TensorFlow's "same" padding of a window over an `input` of height × width:
/// `[top, bottom, left, right]`.
///
/// The output has `ceil(input / stride)` positions; when the total padding is odd, the extra row
/// or column goes after (bottom or right). Core resolves [`Padding::Same`] with it, and an
/// adapter that can pass TensorFlow's own `SAME` compares its explicit padding against it.
pub fn same_padding(input: [usize; 2], kernel: [usize; 2], stride: [usize; 2]) -> [usize; 4] {
    let one = |input: usize, kernel: usize, stride: usize| {
        let output = input.div_ceil(stride.max(1));
        let total = (output.saturating_sub(1).saturating_mul(stride))
            .saturating_add(kernel)
            .saturating_sub(input);
        (total / 2, total - total / 2)
    };
    let (top, bottom) = one(input[0], kernel[0], stride[0]);
    let (left, right) = one(input[1], kernel[1], stride[1]);
    [top, bottom, left, right]
}

fn resolve_padding(
    padding: Padding,
    height: usize,
    width: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> [usize; 4] {
    match padding {
        Padding::Valid => [0; 4],
        Padding::Explicit(amounts) => amounts,
        Padding::Same => same_padding([height, width], kernel, stride),
    }
}

/// Output size of a window over one padded dimension, or `None` when the window doesn't fit.
fn window_output(
    input: usize,
    before: usize,
    after: usize,
    kernel: usize,
    stride: usize,
) -> Option<usize> {
    let padded = input.saturating_add(before).saturating_add(after);
    (kernel > 0 && stride > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
}

impl ModelSpec {
    /// Infers every layer's shapes, resolves padding and names, and checks that layers fit.
    ///
    /// The first layer that does not fit gives the error, for example
    /// `layer 3 (dense): expects 3136 inputs, gets 784`.
    pub fn resolve(&self) -> Result<ResolvedModel, SpecError> {
        let model_error = |message: String| SpecError::Model {
            model: self.name.clone(),
            message,
        };
        let [channels, height, width] = self.input;
        if channels == 0 || height == 0 || width == 0 {
            return Err(model_error(format!(
                "input shape {channels}×{height}×{width} has a zero size"
            )));
        }
        let too_large = |values: usize| values > MAX_TENSOR_VALUES;
        if too_large(
            Shape::Image {
                channels,
                height,
                width,
            }
            .len(),
        ) {
            return Err(model_error(format!(
                "input shape {channels}×{height}×{width} has more than 2⁴⁸ values per example"
            )));
        }
        if self.layers.is_empty() {
            return Err(model_error("has no layers".into()));
        }
        let mut shape = Shape::Image {
            channels,
            height,
            width,
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for (index, named) in self.layers.iter().enumerate() {
            let name = named.name.clone().unwrap_or_else(|| index.to_string());
            if name.is_empty()
                || layers
                    .iter()
                    .any(|layer: &ResolvedLayer| layer.name == name)
            {
                return Err(model_error(format!(
                    "layer name {name:?} is empty or used twice"
                )));
            }
            let error = |message: String| SpecError::Layer {
                position: index + 1,
                kind: named.layer.kind(),
                name: named.name.clone(),
                message,
            };
            let (op, output) = resolve_layer(&named.layer, shape, &name).map_err(error)?;
            // Sizes beyond any machine are refused here, so that nothing downstream (FLOPs,
            // the memory estimate, an engine) computes with them.
            if too_large(output.len()) {
                return Err(error(format!(
                    "its output {output} has more than 2⁴⁸ values per example"
                )));
            }
            if let Some(param) = op.params().into_iter().find(|param| {
                too_large(
                    param
                        .shape
                        .iter()
                        .fold(1usize, |n, &side| n.saturating_mul(side)),
                )
            }) {
                return Err(error(format!(
                    "its tensor {} of shape {:?} has more than 2⁴⁸ values",
                    param.name, param.shape
                )));
            }
            layers.push(ResolvedLayer {
                name,
                op,
                input: shape,
                output,
            });
            shape = output;
        }
        if !matches!(shape, Shape::Flat(n) if n > 0) {
            return Err(model_error(format!(
                "the last layer must give a flat vector of class scores, but gives {shape}; end with flatten or global_avg_pool and a dense layer"
            )));
        }
        Ok(ResolvedModel {
            spec: self.clone(),
            layers,
        })
    }
}

/// The most values a tensor of a spec may hold: 2⁴⁸, a petabyte of f32, beyond any machine, so
/// that only the memory estimate decides what fits, and no count can overflow.
const MAX_TENSOR_VALUES: usize = 1 << 48;

fn image_input(shape: Shape) -> Result<(usize, usize, usize), String> {
    match shape {
        Shape::Image {
            channels,
            height,
            width,
        } => Ok((channels, height, width)),
        Shape::Flat(n) => Err(format!(
            "expects an image (channels × height × width), gets a flat vector of {n}"
        )),
    }
}

/// A convolution's sizes as a spec gives them.
struct ConvRequest {
    filters: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
    bias: bool,
}

fn resolve_conv(
    prefix: &str,
    in_shape: Shape,
    request: ConvRequest,
) -> Result<(ConvOp, Shape), String> {
    let ConvRequest {
        filters,
        kernel,
        stride,
        padding,
        bias,
    } = request;
    let (channels, height, width) = image_input(in_shape)?;
    if filters == 0 || kernel.contains(&0) || stride.contains(&0) {
        return Err("filters, kernel and stride must be at least 1".into());
    }
    let padding = resolve_padding(padding, height, width, kernel, stride);
    let out_height = window_output(height, padding[0], padding[1], kernel[0], stride[0]);
    let out_width = window_output(width, padding[2], padding[3], kernel[1], stride[1]);
    let (Some(out_height), Some(out_width)) = (out_height, out_width) else {
        return Err(format!(
            "kernel {}×{} does not fit input {in_shape} with padding {padding:?}",
            kernel[0], kernel[1]
        ));
    };
    let fan_in = channels.saturating_mul(kernel[0]).saturating_mul(kernel[1]);
    let conv = ConvOp {
        in_channels: channels,
        out_channels: filters,
        kernel,
        stride,
        padding,
        weight: param(
            prefix,
            "weight",
            vec![filters, channels, kernel[0], kernel[1]],
            ParamRole::Weight { fan_in },
        ),
        bias: bias.then(|| param(prefix, "bias", vec![filters], ParamRole::Bias { fan_in })),
    };
    Ok((
        conv,
        Shape::Image {
            channels: filters,
            height: out_height,
            width: out_width,
        },
    ))
}

fn resolve_pool(
    in_shape: Shape,
    kernel: Pair,
    stride: Option<Pair>,
    padding: Padding,
) -> Result<(PoolOp, Shape), String> {
    let (channels, height, width) = image_input(in_shape)?;
    let kernel = kernel.0;
    let stride = stride.map(|s| s.0).unwrap_or(kernel);
    if kernel.contains(&0) || stride.contains(&0) {
        return Err("kernel and stride must be at least 1".into());
    }
    let padding = resolve_padding(padding, height, width, kernel, stride);
    if padding[0].max(padding[1]) >= kernel[0] || padding[2].max(padding[3]) >= kernel[1] {
        return Err(format!(
            "padding {padding:?} must be smaller than the window {}×{}",
            kernel[0], kernel[1]
        ));
    }
    let out_height = window_output(height, padding[0], padding[1], kernel[0], stride[0]);
    let out_width = window_output(width, padding[2], padding[3], kernel[1], stride[1]);
    let (Some(out_height), Some(out_width)) = (out_height, out_width) else {
        return Err(format!(
            "window {}×{} does not fit input {in_shape}",
            kernel[0], kernel[1]
        ));
    };
    Ok((
        PoolOp {
            kernel,
            stride,
            padding,
        },
        Shape::Image {
            channels,
            height: out_height,
            width: out_width,
        },
    ))
}

/// One step of a residual block as torchvision names and sizes it: a square convolution, then
/// a batch norm.
struct BlockStep {
    /// The convolution's name under the block.
    conv: &'static str,
    /// The norm's name under the block.
    norm: &'static str,
    filters: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
}

/// How a block's convolutions and norms are configured beyond their sizes.
#[derive(Clone, Copy)]
struct BlockOptions {
    stride_at: StrideAt,
    conv_bias: bool,
    epsilon: f64,
    momentum: f64,
}

/// A block step named under `prefix`, on `in_shape`.
fn conv_norm(
    prefix: &str,
    step: &BlockStep,
    options: &BlockOptions,
    in_shape: Shape,
) -> Result<(ConvNorm, Shape), String> {
    let (conv, shape) = resolve_conv(
        &join(prefix, step.conv),
        in_shape,
        ConvRequest {
            filters: step.filters,
            kernel: [step.kernel; 2],
            stride: [step.stride; 2],
            padding: step.padding,
            bias: options.conv_bias,
        },
    )?;
    let norm = NormOp::new(
        &join(prefix, step.norm),
        step.filters,
        options.epsilon,
        options.momentum,
    );
    Ok((ConvNorm { conv, norm }, shape))
}

fn resolve_block(
    prefix: &str,
    in_shape: Shape,
    kind: BlockKind,
    planes: usize,
    stride: usize,
    options: BlockOptions,
) -> Result<(Op, Shape), String> {
    let (in_channels, _, _) = image_input(in_shape)?;
    if planes == 0 || stride == 0 {
        return Err("planes and stride must be at least 1".into());
    }
    let BlockOptions {
        epsilon, momentum, ..
    } = options;
    if !(epsilon > 0.0 && epsilon.is_finite() && (0.0..=1.0).contains(&momentum)) {
        return Err(format!(
            "epsilon must be positive and momentum in [0, 1], got {epsilon} and {momentum}"
        ));
    }
    let pad1 = Padding::Explicit([1; 4]);
    let step = |conv, norm, filters, kernel, stride, padding| BlockStep {
        conv,
        norm,
        filters,
        kernel,
        stride,
        padding,
    };
    let steps = match kind {
        BlockKind::Basic => vec![
            step("conv1", "bn1", planes, 3, stride, pad1),
            step("conv2", "bn2", planes, 3, 1, pad1),
        ],
        BlockKind::Bottleneck => {
            let (first, middle) = match options.stride_at {
                StrideAt::Conv2 => (1, stride),
                StrideAt::Conv1 => (stride, 1),
            };
            vec![
                step("conv1", "bn1", planes, 1, first, Padding::Valid),
                step("conv2", "bn2", planes, 3, middle, pad1),
                step(
                    "conv3",
                    "bn3",
                    planes.saturating_mul(4),
                    1,
                    1,
                    Padding::Valid,
                ),
            ]
        }
    };
    let mut shape = in_shape;
    let mut main = Vec::with_capacity(steps.len());
    for step in &steps {
        let (resolved, out) = conv_norm(prefix, step, &options, shape)?;
        main.push(resolved);
        shape = out;
    }
    let Shape::Image {
        channels: out_channels,
        ..
    } = shape
    else {
        return Err("internal: a block's convolutions gave a flat shape".into());
    };
    let shortcut = if stride != 1 || in_channels != out_channels {
        // torchvision's `downsample` is a Sequential of the convolution and the norm.
        let downsample = join(prefix, "downsample");
        let (step, projected) = conv_norm(
            &downsample,
            &step("0", "1", out_channels, 1, stride, Padding::Valid),
            &options,
            in_shape,
        )?;
        if projected != shape {
            return Err(format!(
                "shortcut gives {projected} but the main path gives {shape}"
            ));
        }
        Some(step)
    } else {
        None
    };
    Ok((
        Op::Param(ParamOp::Block(BlockOp {
            kind,
            main,
            shortcut,
        })),
        shape,
    ))
}

fn resolve_layer(layer: &Layer, shape: Shape, name: &str) -> Result<(Op, Shape), String> {
    match *layer {
        Layer::Dense {
            units,
            in_features,
            bias,
        } => {
            let Shape::Flat(inputs) = shape else {
                return Err(format!(
                    "expects a flat input, gets {shape}; add a flatten layer before it"
                ));
            };
            if let Some(expected) = in_features
                && expected != inputs
            {
                return Err(format!("expects {expected} inputs, gets {inputs}"));
            }
            if units == 0 {
                return Err("units must be at least 1".into());
            }
            Ok((
                Op::Param(ParamOp::Dense(DenseOp::new(name, inputs, units, bias))),
                Shape::Flat(units),
            ))
        }
        Layer::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            bias,
        } => {
            let request = ConvRequest {
                filters,
                kernel: kernel.0,
                stride: stride.0,
                padding,
                bias,
            };
            let (conv, out) = resolve_conv(name, shape, request)?;
            Ok((Op::Param(ParamOp::Conv2d(conv)), out))
        }
        Layer::MaxPool2d {
            kernel,
            stride,
            padding,
        } => {
            let (pool, out) = resolve_pool(shape, kernel, stride, padding)?;
            Ok((Op::Free(FreeOp::MaxPool2d(pool)), out))
        }
        Layer::AvgPool2d {
            kernel,
            stride,
            padding,
        } => {
            let (pool, out) = resolve_pool(shape, kernel, stride, padding)?;
            Ok((Op::Free(FreeOp::AvgPool2d(pool)), out))
        }
        Layer::GlobalAvgPool => {
            let (channels, _, _) = image_input(shape)?;
            Ok((Op::Free(FreeOp::GlobalAvgPool), Shape::Flat(channels)))
        }
        Layer::BatchNorm { epsilon, momentum } => {
            if !(epsilon > 0.0 && epsilon.is_finite() && (0.0..=1.0).contains(&momentum)) {
                return Err(format!(
                    "epsilon must be positive and momentum in [0, 1], got {epsilon} and {momentum}"
                ));
            }
            let features = match shape {
                Shape::Image { channels, .. } => channels,
                Shape::Flat(n) => n,
            };
            Ok((
                Op::Param(ParamOp::BatchNorm(NormOp::new(
                    name, features, epsilon, momentum,
                ))),
                shape,
            ))
        }
        Layer::Relu => Ok((Op::Free(FreeOp::Relu), shape)),
        Layer::Dropout { rate } => {
            if !(0.0..1.0).contains(&rate) {
                return Err(format!("rate must be in [0, 1), got {rate}"));
            }
            Ok((Op::Free(FreeOp::Dropout(rate)), shape))
        }
        Layer::Flatten => Ok((Op::Free(FreeOp::Flatten), Shape::Flat(shape.len()))),
        Layer::BasicBlock {
            planes,
            stride,
            conv_bias,
            epsilon,
            momentum,
        } => {
            let options = BlockOptions {
                stride_at: StrideAt::Conv1,
                conv_bias,
                epsilon,
                momentum,
            };
            resolve_block(name, shape, BlockKind::Basic, planes, stride, options)
        }
        Layer::Bottleneck {
            planes,
            stride,
            stride_at,
            conv_bias,
            epsilon,
            momentum,
        } => {
            let options = BlockOptions {
                stride_at,
                conv_bias,
                epsilon,
                momentum,
            };
            resolve_block(name, shape, BlockKind::Bottleneck, planes, stride, options)
        }
    }
}

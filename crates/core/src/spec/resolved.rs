//! The resolved form of a spec: every size, padding amount and canonical parameter name explicit.
//!
//! Backends build from this form only. Each layer's [`Op`] carries its parameters as typed groups
//! ([`DenseOp`], [`ConvOp`], [`NormOp`], [`BlockOp`] with its main path and shortcut), each tensor
//! with its canonical name, shape and role. Every name is composed here, once, so adapters never
//! spell `downsample.0` or build a name with `format!`; they match on [`Op`] exhaustively, so a
//! new layer kind fails to compile in each of them until it is handled.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Layer, ModelSpec, Padding, Pair, SpecError, StrideAt};

/// The shape of one example between layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// An image: channels × height × width.
    Image {
        /// Channels.
        channels: usize,
        /// Height.
        height: usize,
        /// Width.
        width: usize,
    },
    /// A vector of features.
    Flat(usize),
}

impl Shape {
    /// The number of values in one example (saturating at `usize::MAX`, which
    /// [`ModelSpec::resolve`] refuses long before).
    pub fn len(&self) -> usize {
        match *self {
            Shape::Image {
                channels,
                height,
                width,
            } => channels.saturating_mul(height).saturating_mul(width),
            Shape::Flat(n) => n,
        }
    }

    /// Whether one example holds no value at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Image {
                channels,
                height,
                width,
            } => write!(f, "{channels}×{height}×{width}"),
            Shape::Flat(n) => write!(f, "{n}"),
        }
    }
}

/// One canonical parameter or buffer: name, shape, and how it is initialised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    /// Canonical name, PyTorch state-dict style (`fc1.weight`, `layer1.0.bn1.running_var`).
    pub name: String,
    /// Canonical shape (Linear `[out, in]`, Conv `[O, I, kH, kW]`).
    pub shape: Vec<usize>,
    /// What kind of tensor it is.
    pub role: ParamRole,
}

/// What a canonical tensor is, which decides its initialisation and whether it is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamRole {
    /// A Dense or Conv weight with this fan-in.
    Weight {
        /// Inputs per output unit (in × kH × kW for convolutions).
        fan_in: usize,
    },
    /// A Dense or Conv bias with this fan-in.
    Bias {
        /// Fan-in of the layer the bias belongs to.
        fan_in: usize,
    },
    /// Batch-norm scale (gamma).
    NormScale,
    /// Batch-norm shift (beta).
    NormShift,
    /// Batch-norm running mean (a buffer, not trained by gradients).
    RunningMean,
    /// Batch-norm running variance (a buffer).
    RunningVar,
}

impl ParamRole {
    /// Whether gradient descent updates this tensor.
    pub fn is_trainable(&self) -> bool {
        !matches!(self, ParamRole::RunningMean | ParamRole::RunningVar)
    }
}

/// The canonical name of tensor `leaf` under `prefix`: the one place where names are joined,
/// as tch-rs's `vs / "layer1"` and candle's `pp` do.
fn join(prefix: &str, leaf: &str) -> String {
    format!("{prefix}.{leaf}")
}

fn param(prefix: &str, leaf: &str, shape: Vec<usize>, role: ParamRole) -> ParamInfo {
    ParamInfo {
        name: join(prefix, leaf),
        shape,
        role,
    }
}

/// A fully connected layer with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseOp {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// `[out, in]`.
    pub weight: ParamInfo,
    /// `[out]`, when the layer adds a bias.
    pub bias: Option<ParamInfo>,
}

impl DenseOp {
    fn new(prefix: &str, in_features: usize, out_features: usize, bias: bool) -> Self {
        let fan_in = in_features;
        DenseOp {
            in_features,
            out_features,
            weight: param(
                prefix,
                "weight",
                vec![out_features, in_features],
                ParamRole::Weight { fan_in },
            ),
            bias: bias.then(|| {
                param(
                    prefix,
                    "bias",
                    vec![out_features],
                    ParamRole::Bias { fan_in },
                )
            }),
        }
    }

    /// Weight, then bias.
    pub fn params(&self) -> Vec<&ParamInfo> {
        std::iter::once(&self.weight)
            .chain(self.bias.as_ref())
            .collect()
    }
}

/// A convolution with every size explicit, and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvOp {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Padding: top, bottom, left, right.
    pub padding: [usize; 4],
    /// `[O, I, kH, kW]`.
    pub weight: ParamInfo,
    /// `[O]`, when a bias is added.
    pub bias: Option<ParamInfo>,
}

impl ConvOp {
    /// The name a bias of this convolution has, whether or not the model gives it one: weights
    /// made for the other ResNet form carry it ([`crate::weights::Weights::fit_to`]).
    pub fn bias_name(&self) -> String {
        match self.weight.name.rsplit_once('.') {
            Some((prefix, _)) => join(prefix, "bias"),
            None => "bias".into(),
        }
    }

    /// Weight, then bias.
    pub fn params(&self) -> Vec<&ParamInfo> {
        std::iter::once(&self.weight)
            .chain(self.bias.as_ref())
            .collect()
    }
}

/// A pooling window with every size explicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolOp {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Padding: top, bottom, left, right.
    pub padding: [usize; 4],
}

/// How batch norm's running variance absorbs a batch's variance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceEstimator {
    /// Bessel-corrected, n / (n − 1) times the batch variance: PyTorch's.
    #[default]
    Unbiased,
    /// The batch variance itself: Keras 3's and burn's.
    Biased,
}

impl fmt::Display for VarianceEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VarianceEstimator::Unbiased => "unbiased",
            VarianceEstimator::Biased => "biased",
        })
    }
}

/// Batch normalisation with its size and its four tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormOp {
    /// Channels (or features) normalised.
    pub features: usize,
    /// Added to the variance.
    pub epsilon: f64,
    /// Weight of the new batch in the running statistics (PyTorch's convention).
    pub momentum: f64,
    /// How the running variance absorbs a batch's variance: PyTorch's unbiased estimate unless
    /// a run switches on an engine's own ([`crate::defaults`]).
    #[serde(default)]
    pub running_variance: VarianceEstimator,
    /// The scale γ, `[features]`.
    pub weight: ParamInfo,
    /// The shift β, `[features]`.
    pub bias: ParamInfo,
    /// The running mean, a buffer.
    pub running_mean: ParamInfo,
    /// The running variance, a buffer.
    pub running_var: ParamInfo,
}

impl NormOp {
    fn new(prefix: &str, features: usize, epsilon: f64, momentum: f64) -> Self {
        let vector = |leaf, role| param(prefix, leaf, vec![features], role);
        NormOp {
            features,
            epsilon,
            momentum,
            running_variance: VarianceEstimator::Unbiased,
            weight: vector("weight", ParamRole::NormScale),
            bias: vector("bias", ParamRole::NormShift),
            running_mean: vector("running_mean", ParamRole::RunningMean),
            running_var: vector("running_var", ParamRole::RunningVar),
        }
    }

    /// Scale, shift, running mean, running variance: PyTorch's state-dict order.
    pub fn params(&self) -> Vec<&ParamInfo> {
        vec![
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
        ]
    }
}

/// A convolution without bias followed by batch norm: one step of a residual block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvNorm {
    /// The convolution.
    pub conv: ConvOp,
    /// The batch norm after it.
    pub norm: NormOp,
}

impl ConvNorm {
    /// The convolution's tensors, then the norm's.
    pub fn params(&self) -> Vec<&ParamInfo> {
        let mut params = self.conv.params();
        params.extend(self.norm.params());
        params
    }
}

/// A residual block with its convolutions resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockOp {
    /// `basic` or `bottleneck`.
    pub kind: BlockKind,
    /// The main path, in order. A ReLU follows every step but the last, whose output is added
    /// to the shortcut first.
    pub main: Vec<ConvNorm>,
    /// The projection shortcut (torchvision's `downsample`), when the block changes the stride
    /// or the channel count.
    pub shortcut: Option<ConvNorm>,
}

impl BlockOp {
    /// The main path's tensors in order, then the shortcut's.
    pub fn params(&self) -> Vec<&ParamInfo> {
        self.main
            .iter()
            .chain(self.shortcut.as_ref())
            .flat_map(ConvNorm::params)
            .collect()
    }
}

/// Which residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Two 3×3 convolutions.
    Basic,
    /// 1×1, 3×3, 1×1 convolutions, four-fold expansion.
    Bottleneck,
}

/// A layer with every size explicit: what backends build from.
///
/// Layers fall in two groups, so that a walk over the canonical tensors handles every layer
/// without any in one arm ([`Op::Free`]), while a forward pass still matches every kind of
/// either group, without a catch-all, and fails to compile until it handles a new one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Op {
    /// A layer with canonical tensors.
    Param(ParamOp),
    /// A layer without any.
    Free(FreeOp),
}

/// A layer with canonical tensors: parameters, and batch norm's running statistics.
///
/// Variants differ in size, but a model holds a few dozen layers at most, so boxing the large
/// ones would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamOp {
    /// Fully connected.
    Dense(DenseOp),
    /// Convolution.
    Conv2d(ConvOp),
    /// Batch normalisation.
    BatchNorm(NormOp),
    /// Residual block.
    Block(BlockOp),
}

/// A layer without canonical tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreeOp {
    /// Max pooling.
    MaxPool2d(PoolOp),
    /// Average pooling, padded cells excluded.
    AvgPool2d(PoolOp),
    /// Spatial mean per channel.
    GlobalAvgPool,
    /// ReLU.
    Relu,
    /// Dropout with the given rate.
    Dropout(f64),
    /// Flatten C,H,W.
    Flatten,
}

impl Op {
    /// The layer's canonical tensors, in state-dict order; none for parameter-free layers.
    pub fn params(&self) -> Vec<&ParamInfo> {
        match self {
            Op::Param(op) => op.params(),
            Op::Free(_) => Vec::new(),
        }
    }
}

impl ParamOp {
    /// The layer's canonical tensors, in state-dict order.
    pub fn params(&self) -> Vec<&ParamInfo> {
        match self {
            ParamOp::Dense(op) => op.params(),
            ParamOp::Conv2d(op) => op.params(),
            ParamOp::BatchNorm(op) => op.params(),
            ParamOp::Block(op) => op.params(),
        }
    }
}

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

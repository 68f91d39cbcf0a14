//! The operations of a resolved spec: every size, padding amount and canonical parameter name
//! explicit.
//!
//! Backends build from these only. Each layer's [`Op`] carries its parameters as typed groups
//! ([`DenseOp`], [`ConvOp`], [`NormOp`], [`BlockOp`] with its main path and shortcut), each tensor
//! with its canonical name, shape and role. Every name is composed here, by `param` and
//! `join`, so adapters never spell `downsample.0` or build a name with `format!`; they match on
//! [`Op`] exhaustively, so a new layer kind fails to compile in each of them until it is handled.

use std::fmt;

use serde::{Deserialize, Serialize};

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
pub(super) fn join(prefix: &str, leaf: &str) -> String {
    format!("{prefix}.{leaf}")
}

pub(super) fn param(prefix: &str, leaf: &str, shape: Vec<usize>, role: ParamRole) -> ParamInfo {
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
    pub(super) fn new(prefix: &str, in_features: usize, out_features: usize, bias: bool) -> Self {
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
    pub(super) fn new(prefix: &str, features: usize, epsilon: f64, momentum: f64) -> Self {
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

//! Framework-agnostic model specs: layers, presets, JSON/TOML loading, and shape inference.
//!
//! A [`ModelSpec`] is what a user writes; [`ModelSpec::resolve`] checks it layer by layer and
//! turns it into a [`ResolvedModel`], where every size and every padding amount is explicit.
//! Backends build from the resolved form only, so that "same" padding, flatten order and
//! parameter names mean one thing on every engine.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A model spec that doesn't parse, or whose layers don't fit together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A layer whose input shape or parameters are wrong; `position` counts from 1.
    #[error("layer {position} ({kind}{}): {message}", name_suffix(.name))]
    Layer {
        /// Position of the layer in the spec, counting from 1.
        position: usize,
        /// The layer's kind, as written in spec files (`dense`, `conv2d`, ...).
        kind: &'static str,
        /// The layer's name, when the spec gave one.
        name: Option<String>,
        /// What does not fit.
        message: String,
    },
    /// A spec that is wrong as a whole (empty, bad input shape, duplicate names).
    #[error("model spec {model:?}: {message}")]
    Model {
        /// The spec's name.
        model: String,
        /// What is wrong.
        message: String,
    },
    /// A spec file that can't be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// The reader's or parser's message.
        message: String,
    },
    /// A preset name that doesn't exist.
    #[error(
        "unknown model {0:?}; presets are mlp, cnn, resnet18, resnet50, or pass a .json/.toml spec file"
    )]
    UnknownPreset(String),
}

fn name_suffix(name: &Option<String>) -> String {
    name.as_ref()
        .map(|name| format!(" {name:?}"))
        .unwrap_or_default()
}

/// Two sizes, height then width; written as one number when both are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair(pub [usize; 2]);

impl Pair {
    /// The same size in both directions.
    pub const fn square(size: usize) -> Self {
        Pair([size, size])
    }
}

impl Serialize for Pair {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            [h, w] if h == w => serializer.serialize_u64(h as u64),
            pair => pair.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            One(usize),
            Two([usize; 2]),
        }
        Ok(match Repr::deserialize(deserializer)? {
            Repr::One(size) => Pair::square(size),
            Repr::Two(pair) => Pair(pair),
        })
    }
}

/// How a convolution or pooling window treats the border.
///
/// `Same` follows TensorFlow's definition, which also covers strides above 1: the output has
/// `ceil(input / stride)` positions, and when the total padding is odd the extra row or column
/// goes at the bottom or right. Core resolves it to explicit amounts, so every backend pads alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding.
    #[default]
    Valid,
    /// TensorFlow's "same" padding (see above).
    Same,
    /// Explicit amounts: top, bottom, left, right.
    Explicit([usize; 4]),
}

impl Serialize for Padding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Padding::Valid => serializer.serialize_str("valid"),
            Padding::Same => serializer.serialize_str("same"),
            Padding::Explicit([t, b, l, r]) if t == b && b == l && l == r => {
                serializer.serialize_u64(*t as u64)
            }
            Padding::Explicit(amounts) => amounts.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Padding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Named(String),
            Uniform(usize),
            HeightWidth([usize; 2]),
            Explicit([usize; 4]),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Named(name) => match name.as_str() {
                "valid" => Ok(Padding::Valid),
                "same" => Ok(Padding::Same),
                other => Err(serde::de::Error::custom(format!(
                    "unknown padding {other:?}: use \"valid\", \"same\", a number, [h, w] or [top, bottom, left, right]"
                ))),
            },
            Repr::Uniform(p) => Ok(Padding::Explicit([p; 4])),
            Repr::HeightWidth([h, w]) => Ok(Padding::Explicit([h, h, w, w])),
            Repr::Explicit(amounts) => Ok(Padding::Explicit(amounts)),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_one() -> Pair {
    Pair::square(1)
}
fn default_bn_epsilon() -> f64 {
    1e-5
}
fn default_bn_momentum() -> f64 {
    0.1
}

/// One layer of a spec. In files, `type` names the variant in snake case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    /// A fully connected layer on a flat input (PyTorch's `Linear`, Keras's `Dense`).
    Dense {
        /// Output features.
        units: usize,
        /// Input features, when the spec wants them checked (as PyTorch's `Linear(in, out)` does).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_features: Option<usize>,
        /// Whether the layer adds a bias.
        #[serde(default = "default_true")]
        bias: bool,
    },
    /// A 2-D convolution.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Kernel size.
        kernel: Pair,
        /// Stride.
        #[serde(default = "default_one")]
        stride: Pair,
        /// Border handling.
        #[serde(default)]
        padding: Padding,
        /// Whether the layer adds a bias.
        #[serde(default = "default_true")]
        bias: bool,
    },
    /// Max pooling; the stride defaults to the kernel size, and padded cells never win.
    MaxPool2d {
        /// Window size.
        kernel: Pair,
        /// Stride; the window size when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<Pair>,
        /// Border handling.
        #[serde(default)]
        padding: Padding,
    },
    /// Average pooling; padded cells are left out of each average (TensorFlow's rule, PyTorch's
    /// `count_include_pad=False`).
    AvgPool2d {
        /// Window size.
        kernel: Pair,
        /// Stride; the window size when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<Pair>,
        /// Border handling.
        #[serde(default)]
        padding: Padding,
    },
    /// Mean over the spatial positions of each channel, giving a flat output.
    GlobalAvgPool,
    /// Batch normalisation over channels (images) or features (flat inputs).
    ///
    /// `momentum` uses PyTorch's convention: the weight of the new batch statistics in the
    /// running averages (Keras's `momentum=0.99` is PyTorch's 0.01). Running variances are
    /// updated with the unbiased batch variance, as PyTorch does.
    BatchNorm {
        /// Added to the variance before the square root.
        #[serde(default = "default_bn_epsilon")]
        epsilon: f64,
        /// Weight of each new batch in the running statistics.
        #[serde(default = "default_bn_momentum")]
        momentum: f64,
    },
    /// Rectified linear unit.
    Relu,
    /// Inverted dropout: zeroes each value with probability `rate` in training, scales the rest.
    Dropout {
        /// Probability of dropping a value, in `[0, 1)`.
        rate: f64,
    },
    /// Flattens channels × height × width into features, in that order (the canonical C,H,W
    /// order; a TensorFlow backend permutes from its H,W,C).
    Flatten,
    /// A ResNet basic block: two 3×3 convolutions with batch norm, and a projection shortcut
    /// when the stride or the channel count changes (torchvision's `BasicBlock`).
    BasicBlock {
        /// Channels of the block's convolutions and output.
        planes: usize,
        /// Stride of the first convolution and of the shortcut.
        #[serde(default = "default_usize_one")]
        stride: usize,
    },
    /// A ResNet bottleneck block: 1×1, 3×3 (strided), 1×1 convolutions with batch norm and
    /// output `4 × planes` channels (torchvision's `Bottleneck`, "ResNet v1.5").
    Bottleneck {
        /// Channels of the inner convolutions; the output has four times as many.
        planes: usize,
        /// Stride of the 3×3 convolution and of the shortcut.
        #[serde(default = "default_usize_one")]
        stride: usize,
    },
}

fn default_usize_one() -> usize {
    1
}

impl Layer {
    /// The layer's kind as spec files spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Dense { .. } => "dense",
            Layer::Conv2d { .. } => "conv2d",
            Layer::MaxPool2d { .. } => "max_pool2d",
            Layer::AvgPool2d { .. } => "avg_pool2d",
            Layer::GlobalAvgPool => "global_avg_pool",
            Layer::BatchNorm { .. } => "batch_norm",
            Layer::Relu => "relu",
            Layer::Dropout { .. } => "dropout",
            Layer::Flatten => "flatten",
            Layer::BasicBlock { .. } => "basic_block",
            Layer::Bottleneck { .. } => "bottleneck",
        }
    }
}

/// A layer with an optional name; unnamed layers are named by their 0-based index, as in
/// PyTorch's `nn.Sequential`, and the name prefixes the layer's canonical weight names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedLayer {
    /// The layer's name; its index in the spec when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The layer itself.
    #[serde(flatten)]
    pub layer: Layer,
}

/// A model, independent of any framework: an input shape and a list of layers.
///
/// The network's output is the last layer's output, taken as logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A short name used in reports (`mlp`, `cnn`, `resnet18`...).
    pub name: String,
    /// Input shape, channels × height × width.
    pub input: [usize; 3],
    /// The layers, in order.
    pub layers: Vec<NamedLayer>,
}

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
    /// The number of values in one example.
    pub fn len(&self) -> usize {
        match *self {
            Shape::Image {
                channels,
                height,
                width,
            } => channels * height * width,
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

/// A convolution with every size explicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Whether a bias is added.
    pub bias: bool,
}

impl ConvOp {
    /// The canonical (PyTorch) weight shape: out, in, kernel height, kernel width.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels,
            self.kernel[0],
            self.kernel[1],
        ]
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

/// Batch normalisation with its size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormOp {
    /// Channels (or features) normalised.
    pub features: usize,
    /// Added to the variance.
    pub epsilon: f64,
    /// Weight of the new batch in the running statistics (PyTorch's convention).
    pub momentum: f64,
}

/// A residual block with its convolutions resolved; names are relative to the block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockOp {
    /// `basic` or `bottleneck`.
    pub kind: BlockKind,
    /// The main path, in order: (relative name, convolution, relative batch-norm name, norm).
    /// A ReLU follows every pair but the last, whose output is added to the shortcut first.
    pub main: Vec<(String, ConvOp, String, NormOp)>,
    /// The projection shortcut (`downsample.0`, `downsample.1`), when there is one.
    pub shortcut: Option<(ConvOp, NormOp)>,
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Fully connected: `in_features` → `out_features`.
    Dense {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// Whether a bias is added.
        bias: bool,
    },
    /// Convolution.
    Conv2d(ConvOp),
    /// Max pooling.
    MaxPool2d(PoolOp),
    /// Average pooling, padded cells excluded.
    AvgPool2d(PoolOp),
    /// Spatial mean per channel.
    GlobalAvgPool,
    /// Batch normalisation.
    BatchNorm(NormOp),
    /// ReLU.
    Relu,
    /// Dropout with the given rate.
    Dropout(f64),
    /// Flatten C,H,W.
    Flatten,
    /// Residual block.
    Block(BlockOp),
}

/// One resolved layer: its unique name, what it does, and the shapes around it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedLayer {
    /// Unique name; prefix of its canonical parameter names.
    pub name: String,
    /// The operation.
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

/// One canonical parameter or buffer: name, shape, and how it is initialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Canonical name, PyTorch state-dict style (`fc1.weight`, `layer1.0.bn1.running_var`).
    pub name: String,
    /// Canonical shape (Linear `[out, in]`, Conv `[O, I, kH, kW]`).
    pub shape: Vec<usize>,
    /// What kind of tensor it is.
    pub role: ParamRole,
}

/// What a canonical tensor is, which decides its initialisation and whether it is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

impl ResolvedModel {
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

    /// Every canonical tensor of the model, in layer order (weight before bias).
    pub fn parameters(&self) -> Vec<ParamInfo> {
        let mut params = Vec::new();
        for layer in &self.layers {
            let prefix = &layer.name;
            match &layer.op {
                Op::Dense {
                    in_features,
                    out_features,
                    bias,
                } => {
                    params.push(ParamInfo {
                        name: format!("{prefix}.weight"),
                        shape: vec![*out_features, *in_features],
                        role: ParamRole::Weight {
                            fan_in: *in_features,
                        },
                    });
                    if *bias {
                        params.push(ParamInfo {
                            name: format!("{prefix}.bias"),
                            shape: vec![*out_features],
                            role: ParamRole::Bias {
                                fan_in: *in_features,
                            },
                        });
                    }
                }
                Op::Conv2d(conv) => conv_params(&mut params, prefix, conv),
                Op::BatchNorm(norm) => norm_params(&mut params, prefix, norm),
                Op::Block(block) => {
                    for (conv_name, conv, norm_name, norm) in &block.main {
                        conv_params(&mut params, &format!("{prefix}.{conv_name}"), conv);
                        norm_params(&mut params, &format!("{prefix}.{norm_name}"), norm);
                    }
                    if let Some((conv, norm)) = &block.shortcut {
                        conv_params(&mut params, &format!("{prefix}.downsample.0"), conv);
                        norm_params(&mut params, &format!("{prefix}.downsample.1"), norm);
                    }
                }
                Op::MaxPool2d(_)
                | Op::AvgPool2d(_)
                | Op::GlobalAvgPool
                | Op::Relu
                | Op::Dropout(_)
                | Op::Flatten => {}
            }
        }
        params
    }

    /// The index of the layer a GradCAM target names: an exact layer name, or a prefix such as
    /// `layer4` that names a group of layers (`layer4.0`, `layer4.1`...), meaning the group's last.
    pub fn find_layer(&self, name: &str) -> Option<usize> {
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

fn conv_params(params: &mut Vec<ParamInfo>, prefix: &str, conv: &ConvOp) {
    let fan_in = conv.in_channels * conv.kernel[0] * conv.kernel[1];
    params.push(ParamInfo {
        name: format!("{prefix}.weight"),
        shape: conv.weight_shape().to_vec(),
        role: ParamRole::Weight { fan_in },
    });
    if conv.bias {
        params.push(ParamInfo {
            name: format!("{prefix}.bias"),
            shape: vec![conv.out_channels],
            role: ParamRole::Bias { fan_in },
        });
    }
}

fn norm_params(params: &mut Vec<ParamInfo>, prefix: &str, norm: &NormOp) {
    for (suffix, role) in [
        ("weight", ParamRole::NormScale),
        ("bias", ParamRole::NormShift),
        ("running_mean", ParamRole::RunningMean),
        ("running_var", ParamRole::RunningVar),
    ] {
        params.push(ParamInfo {
            name: format!("{prefix}.{suffix}"),
            shape: vec![norm.features],
            role,
        });
    }
}

/// Resolves TensorFlow's "same" padding for one dimension: (before, after).
fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let output = input.div_ceil(stride);
    let total = ((output.saturating_sub(1)) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
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
        Padding::Same => {
            let (top, bottom) = same_padding(height, kernel[0], stride[0]);
            let (left, right) = same_padding(width, kernel[1], stride[1]);
            [top, bottom, left, right]
        }
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
    let padded = input + before + after;
    (kernel > 0 && stride > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
}

impl ModelSpec {
    /// A spec from a `.json` or `.toml` file (chosen by extension).
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let file_error = |message: String| SpecError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|error| file_error(error.to_string()))?;
        match path.extension().and_then(|ext| ext.to_str()) {
            Some("json") => {
                serde_json::from_str(&text).map_err(|error| file_error(error.to_string()))
            }
            Some("toml") => {
                toml::from_str(&text).map_err(|error| file_error(error.message().to_string()))
            }
            _ => Err(file_error(
                "a model spec file must end in .json or .toml".into(),
            )),
        }
    }

    /// A preset by name (`mlp`, `cnn`, `resnet18`, `resnet50`) or a spec file's path.
    ///
    /// Presets take their input shape and class count from the data set; spec files carry their own.
    pub fn from_name_or_file(
        name: &str,
        input: [usize; 3],
        classes: usize,
    ) -> Result<Self, SpecError> {
        match name {
            "mlp" => Ok(presets::mlp(input, classes)),
            "cnn" => Ok(presets::cnn(input, classes)),
            "resnet18" => Ok(presets::resnet18(input, classes)),
            "resnet50" => Ok(presets::resnet50(input, classes)),
            other if other.ends_with(".json") || other.ends_with(".toml") => {
                Self::from_file(Path::new(other))
            }
            other => Err(SpecError::UnknownPreset(other.to_string())),
        }
    }

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
            let (op, output) = resolve_layer(&named.layer, shape).map_err(error)?;
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

fn resolve_conv(
    in_shape: Shape,
    filters: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
    bias: bool,
) -> Result<(ConvOp, Shape), String> {
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
    let conv = ConvOp {
        in_channels: channels,
        out_channels: filters,
        kernel,
        stride,
        padding,
        bias,
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

fn norm_op(features: usize) -> NormOp {
    NormOp {
        features,
        epsilon: default_bn_epsilon(),
        momentum: default_bn_momentum(),
    }
}

fn resolve_block(
    in_shape: Shape,
    kind: BlockKind,
    planes: usize,
    stride: usize,
) -> Result<(Op, Shape), String> {
    let (in_channels, _, _) = image_input(in_shape)?;
    if planes == 0 || stride == 0 {
        return Err("planes and stride must be at least 1".into());
    }
    let pad1 = Padding::Explicit([1; 4]);
    // Each step: (relative conv name, out channels, kernel, stride, padding, relative norm name).
    let steps: Vec<(&str, usize, usize, usize, Padding, &str)> = match kind {
        BlockKind::Basic => vec![
            ("conv1", planes, 3, stride, pad1, "bn1"),
            ("conv2", planes, 3, 1, pad1, "bn2"),
        ],
        BlockKind::Bottleneck => vec![
            ("conv1", planes, 1, 1, Padding::Valid, "bn1"),
            ("conv2", planes, 3, stride, pad1, "bn2"),
            ("conv3", planes * 4, 1, 1, Padding::Valid, "bn3"),
        ],
    };
    let mut shape = in_shape;
    let mut main = Vec::with_capacity(steps.len());
    for (conv_name, filters, kernel, step_stride, padding, norm_name) in steps {
        let (conv, out) = resolve_conv(
            shape,
            filters,
            [kernel; 2],
            [step_stride; 2],
            padding,
            false,
        )?;
        main.push((
            conv_name.to_string(),
            conv,
            norm_name.to_string(),
            norm_op(filters),
        ));
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
        let (conv, projected) = resolve_conv(
            in_shape,
            out_channels,
            [1; 2],
            [stride; 2],
            Padding::Valid,
            false,
        )?;
        if projected != shape {
            return Err(format!(
                "shortcut gives {projected} but the main path gives {shape}"
            ));
        }
        Some((conv, norm_op(out_channels)))
    } else {
        None
    };
    Ok((
        Op::Block(BlockOp {
            kind,
            main,
            shortcut,
        }),
        shape,
    ))
}

fn resolve_layer(layer: &Layer, shape: Shape) -> Result<(Op, Shape), String> {
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
                Op::Dense {
                    in_features: inputs,
                    out_features: units,
                    bias,
                },
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
            let (conv, out) = resolve_conv(shape, filters, kernel.0, stride.0, padding, bias)?;
            Ok((Op::Conv2d(conv), out))
        }
        Layer::MaxPool2d {
            kernel,
            stride,
            padding,
        } => {
            let (pool, out) = resolve_pool(shape, kernel, stride, padding)?;
            Ok((Op::MaxPool2d(pool), out))
        }
        Layer::AvgPool2d {
            kernel,
            stride,
            padding,
        } => {
            let (pool, out) = resolve_pool(shape, kernel, stride, padding)?;
            Ok((Op::AvgPool2d(pool), out))
        }
        Layer::GlobalAvgPool => {
            let (channels, _, _) = image_input(shape)?;
            Ok((Op::GlobalAvgPool, Shape::Flat(channels)))
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
                Op::BatchNorm(NormOp {
                    features,
                    epsilon,
                    momentum,
                }),
                shape,
            ))
        }
        Layer::Relu => Ok((Op::Relu, shape)),
        Layer::Dropout { rate } => {
            if !(0.0..1.0).contains(&rate) {
                return Err(format!("rate must be in [0, 1), got {rate}"));
            }
            Ok((Op::Dropout(rate), shape))
        }
        Layer::Flatten => Ok((Op::Flatten, Shape::Flat(shape.len()))),
        Layer::BasicBlock { planes, stride } => {
            resolve_block(shape, BlockKind::Basic, planes, stride)
        }
        Layer::Bottleneck { planes, stride } => {
            resolve_block(shape, BlockKind::Bottleneck, planes, stride)
        }
    }
}

/// The built-in model specs.
pub mod presets {
    use super::{Layer, ModelSpec, NamedLayer, Padding, Pair};

    fn named(name: &str, layer: Layer) -> NamedLayer {
        NamedLayer {
            name: Some(name.to_string()),
            layer,
        }
    }

    fn dense(units: usize) -> Layer {
        Layer::Dense {
            units,
            in_features: None,
            bias: true,
        }
    }

    /// The seeds' MLP: flatten, 128 hidden units with ReLU, one logit per class.
    /// On 28×28 grayscale images this is the classic 784-128-10.
    pub fn mlp(input: [usize; 3], classes: usize) -> ModelSpec {
        ModelSpec {
            name: "mlp".into(),
            input,
            layers: vec![
                named("flatten", Layer::Flatten),
                named("fc1", dense(128)),
                named("relu", Layer::Relu),
                named("fc2", dense(classes)),
            ],
        }
    }

    /// The small CNN: conv3×3(32)-relu-maxpool2-conv3×3(64)-relu-maxpool2-dense128-relu-dense,
    /// with "same" padding, so 28×28 inputs reach the dense layer as 64×7×7 = 3136 features.
    pub fn cnn(input: [usize; 3], classes: usize) -> ModelSpec {
        let conv = |filters| Layer::Conv2d {
            filters,
            kernel: Pair::square(3),
            stride: Pair::square(1),
            padding: Padding::Same,
            bias: true,
        };
        let pool = || Layer::MaxPool2d {
            kernel: Pair::square(2),
            stride: None,
            padding: Padding::Valid,
        };
        ModelSpec {
            name: "cnn".into(),
            input,
            layers: vec![
                named("conv1", conv(32)),
                named("relu1", Layer::Relu),
                named("pool1", pool()),
                named("conv2", conv(64)),
                named("relu2", Layer::Relu),
                named("pool2", pool()),
                named("flatten", Layer::Flatten),
                named("fc1", dense(128)),
                named("relu3", Layer::Relu),
                named("fc2", dense(classes)),
            ],
        }
    }

    fn resnet(
        name: &str,
        input: [usize; 3],
        classes: usize,
        blocks: [usize; 4],
        bottleneck: bool,
    ) -> ModelSpec {
        let mut layers = vec![
            named(
                "conv1",
                Layer::Conv2d {
                    filters: 64,
                    kernel: Pair::square(7),
                    stride: Pair::square(2),
                    padding: Padding::Explicit([3; 4]),
                    bias: false,
                },
            ),
            named(
                "bn1",
                Layer::BatchNorm {
                    epsilon: 1e-5,
                    momentum: 0.1,
                },
            ),
            named("relu", Layer::Relu),
            named(
                "maxpool",
                Layer::MaxPool2d {
                    kernel: Pair::square(3),
                    stride: Some(Pair::square(2)),
                    padding: Padding::Explicit([1; 4]),
                },
            ),
        ];
        for (stage, (&count, planes)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
            for index in 0..count {
                let stride = if stage > 0 && index == 0 { 2 } else { 1 };
                let block = if bottleneck {
                    Layer::Bottleneck { planes, stride }
                } else {
                    Layer::BasicBlock { planes, stride }
                };
                layers.push(named(&format!("layer{}.{index}", stage + 1), block));
            }
        }
        layers.push(named("avgpool", Layer::GlobalAvgPool));
        layers.push(named("fc", dense(classes)));
        ModelSpec {
            name: name.into(),
            input,
            layers,
        }
    }

    /// torchvision's ResNet-18 (basic blocks 2-2-2-2), with its parameter names.
    pub fn resnet18(input: [usize; 3], classes: usize) -> ModelSpec {
        resnet("resnet18", input, classes, [2, 2, 2, 2], false)
    }

    /// torchvision's ResNet-50 (bottleneck blocks 3-4-6-3, v1.5 strides), with its parameter names.
    pub fn resnet50(input: [usize; 3], classes: usize) -> ModelSpec {
        resnet("resnet50", input, classes, [3, 4, 6, 3], true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // TF: out = ceil(in / stride); the odd pixel goes after.
        assert_eq!(same_padding(28, 3, 1), (1, 1));
        assert_eq!(same_padding(224, 7, 2), (2, 3));
        assert_eq!(same_padding(5, 2, 2), (0, 1));
        assert_eq!(same_padding(4, 1, 2), (0, 0));
    }

    #[test]
    fn cnn_reaches_dense_with_3136_features() {
        let model = presets::cnn([1, 28, 28], 10).resolve().unwrap();
        let fc1 = model.layers.iter().find(|l| l.name == "fc1").unwrap();
        assert_eq!(fc1.input, Shape::Flat(3136));
        assert_eq!(model.classes(), 10);
    }

    #[test]
    fn resnet_parameter_names_follow_torchvision() {
        let model = presets::resnet50([3, 224, 224], 1000).resolve().unwrap();
        let params = model.parameters();
        let count: usize = params
            .iter()
            .filter(|p| p.role.is_trainable())
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        // torchvision's resnet50 has 25,557,032 trainable parameters.
        assert_eq!(count, 25_557_032);
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"layer1.0.downsample.0.weight"));
        assert!(names.contains(&"layer4.2.bn3.running_var"));
        assert_eq!(model.layers.last().unwrap().output, Shape::Flat(1000));
        let resnet18 = presets::resnet18([3, 224, 224], 1000).resolve().unwrap();
        let count18: usize = resnet18
            .parameters()
            .iter()
            .filter(|p| p.role.is_trainable())
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        assert_eq!(count18, 11_689_512);
    }

    #[test]
    fn find_layer_accepts_group_prefixes() {
        let model = presets::resnet18([3, 64, 64], 10).resolve().unwrap();
        let index = model.find_layer("layer4").unwrap();
        assert_eq!(model.layers[index].name, "layer4.1");
        assert_eq!(model.find_layer("fc"), Some(model.layers.len() - 1));
        assert_eq!(model.find_layer("nope"), None);
    }

    #[test]
    fn first_misfit_layer_is_named_with_sizes() {
        let spec: ModelSpec = serde_json::from_str(
            r#"{"name": "bad", "input": [1, 28, 28], "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 128, "in_features": 784},
                {"type": "dense", "units": 10, "in_features": 3136}
            ]}"#,
        )
        .unwrap();
        let error = spec.resolve().unwrap_err().to_string();
        assert_eq!(error, "layer 3 (dense): expects 3136 inputs, gets 128");
        let spec: ModelSpec = serde_json::from_str(
            r#"{"name": "bad", "input": [1, 28, 28], "layers": [{"type": "dense", "units": 10, "name": "fc"}]}"#,
        )
        .unwrap();
        assert_eq!(
            spec.resolve().unwrap_err().to_string(),
            "layer 1 (dense \"fc\"): expects a flat input, gets 1×28×28; add a flatten layer before it"
        );
    }

    #[test]
    fn toml_and_json_specs_parse_to_the_presets() {
        let toml_text = r#"
            name = "cnn"
            input = [1, 28, 28]
            [[layers]]
            name = "conv1"
            type = "conv2d"
            filters = 32
            kernel = 3
            padding = "same"
            [[layers]]
            name = "relu1"
            type = "relu"
            [[layers]]
            name = "pool1"
            type = "max_pool2d"
            kernel = 2
            [[layers]]
            name = "conv2"
            type = "conv2d"
            filters = 64
            kernel = [3, 3]
            padding = "same"
            [[layers]]
            name = "relu2"
            type = "relu"
            [[layers]]
            name = "pool2"
            type = "max_pool2d"
            kernel = 2
            [[layers]]
            name = "flatten"
            type = "flatten"
            [[layers]]
            name = "fc1"
            type = "dense"
            units = 128
            [[layers]]
            name = "relu3"
            type = "relu"
            [[layers]]
            name = "fc2"
            type = "dense"
            units = 10
        "#;
        let parsed: ModelSpec = toml::from_str(toml_text).unwrap();
        assert_eq!(parsed, presets::cnn([1, 28, 28], 10));
        let json = serde_json::to_string(&presets::resnet18([3, 32, 32], 10)).unwrap();
        let back: ModelSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, presets::resnet18([3, 32, 32], 10));
    }

    #[test]
    fn unknown_fields_and_kinds_are_rejected() {
        let typo = r#"{"name": "x", "input": [1, 2, 2], "layers": [{"type": "dense", "unit": 3}]}"#;
        assert!(serde_json::from_str::<ModelSpec>(typo).is_err());
        let kind = r#"{"name": "x", "input": [1, 2, 2], "layers": [{"type": "lstm"}]}"#;
        assert!(serde_json::from_str::<ModelSpec>(kind).is_err());
        let padding = r#"{"name": "x", "input": [1, 4, 4], "layers": [{"type": "conv2d", "filters": 1, "kernel": 3, "padding": "full"}]}"#;
        assert!(serde_json::from_str::<ModelSpec>(padding).is_err());
    }

    #[test]
    fn degenerate_specs_are_errors_not_panics() {
        let empty = ModelSpec {
            name: "e".into(),
            input: [1, 4, 4],
            layers: vec![],
        };
        assert!(empty.resolve().is_err());
        let zero = ModelSpec {
            name: "z".into(),
            input: [0, 4, 4],
            layers: presets::mlp([1, 4, 4], 2).layers,
        };
        assert!(zero.resolve().is_err());
        let no_logits = ModelSpec {
            name: "n".into(),
            input: [1, 4, 4],
            layers: vec![NamedLayer {
                name: None,
                layer: Layer::Relu,
            }],
        };
        assert!(
            no_logits
                .resolve()
                .unwrap_err()
                .to_string()
                .contains("flat vector")
        );
        let too_big = ModelSpec {
            name: "k".into(),
            input: [1, 2, 2],
            layers: vec![NamedLayer {
                name: None,
                layer: Layer::Conv2d {
                    filters: 1,
                    kernel: Pair::square(5),
                    stride: Pair::square(1),
                    padding: Padding::Valid,
                    bias: true,
                },
            }],
        };
        assert!(
            too_big
                .resolve()
                .unwrap_err()
                .to_string()
                .starts_with("layer 1 (conv2d)")
        );
        let duplicate = ModelSpec {
            name: "d".into(),
            input: [1, 2, 2],
            layers: vec![
                NamedLayer {
                    name: Some("a".into()),
                    layer: Layer::Flatten,
                },
                NamedLayer {
                    name: Some("a".into()),
                    layer: Layer::Dense {
                        units: 2,
                        in_features: None,
                        bias: true,
                    },
                },
            ],
        };
        assert!(
            duplicate
                .resolve()
                .unwrap_err()
                .to_string()
                .contains("used twice")
        );
    }
}

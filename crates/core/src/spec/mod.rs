//! Framework-agnostic model specs: layers, presets, JSON/TOML loading, and shape inference.
//!
//! A [`ModelSpec`] is what a user writes; [`ModelSpec::resolve`] checks it layer by layer and
//! turns it into a [`ResolvedModel`], where every size, every padding amount and every
//! canonical parameter name is explicit. Backends build from the resolved form only, so that
//! "same" padding, flatten order and parameter names mean one thing on every engine.

mod ops;
/// The built-in model specs.
pub mod presets;
mod resolved;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_with::{DeserializeFromStr, SerializeDisplay};

pub use ops::{
    BlockKind, BlockOp, ConvNorm, ConvOp, DenseOp, FreeOp, NormOp, Op, ParamInfo, ParamOp,
    ParamRole, PoolOp, Shape, VarianceEstimator,
};
pub use resolved::{ResolvedLayer, ResolvedModel, keras_block_output, same_padding};

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
    /// A model name that is neither a preset nor a spec file.
    #[error(
        "unknown model {0:?}; presets are {presets}, or pass a .json/.toml spec file",
        presets = Preset::names()
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
        /// Whether each convolution adds a bias (Keras's convolutions do; torchvision's don't).
        #[serde(default, skip_serializing_if = "is_false")]
        conv_bias: bool,
        /// The batch norms' ε.
        #[serde(
            default = "default_bn_epsilon",
            skip_serializing_if = "is_default_epsilon"
        )]
        epsilon: f64,
        /// The batch norms' momentum, PyTorch's convention.
        #[serde(
            default = "default_bn_momentum",
            skip_serializing_if = "is_default_momentum"
        )]
        momentum: f64,
    },
    /// A ResNet bottleneck block: 1×1, 3×3, 1×1 convolutions with batch norm and output
    /// `4 × planes` channels. The stride sits in the 3×3 convolution by default (torchvision's
    /// `Bottleneck`, "ResNet v1.5"), or in the first 1×1 (Keras's, "ResNet v1").
    Bottleneck {
        /// Channels of the inner convolutions; the output has four times as many.
        planes: usize,
        /// Stride of the main path and of the shortcut.
        #[serde(default = "default_usize_one")]
        stride: usize,
        /// Which convolution of the main path is strided.
        #[serde(default, skip_serializing_if = "is_default_stride_at")]
        stride_at: StrideAt,
        /// Whether each convolution adds a bias (Keras's convolutions do; torchvision's don't).
        #[serde(default, skip_serializing_if = "is_false")]
        conv_bias: bool,
        /// The batch norms' ε.
        #[serde(
            default = "default_bn_epsilon",
            skip_serializing_if = "is_default_epsilon"
        )]
        epsilon: f64,
        /// The batch norms' momentum, PyTorch's convention.
        #[serde(
            default = "default_bn_momentum",
            skip_serializing_if = "is_default_momentum"
        )]
        momentum: f64,
    },
}

/// Where a bottleneck block puts its stride: the one place where ResNet v1 and v1.5 differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrideAt {
    /// In the 3×3 convolution (`conv2`): torchvision's v1.5.
    #[default]
    Conv2,
    /// In the first 1×1 convolution (`conv1`): the original v1, Keras's and Caffe's.
    Conv1,
}

fn is_false(value: &bool) -> bool {
    !*value
}
fn is_default_epsilon(value: &f64) -> bool {
    *value == default_bn_epsilon()
}
fn is_default_momentum(value: &f64) -> bool {
    *value == default_bn_momentum()
}
fn is_default_stride_at(value: &StrideAt) -> bool {
    *value == StrideAt::default()
}

impl Layer {
    /// torchvision's basic block.
    pub fn basic_block(planes: usize, stride: usize) -> Layer {
        Layer::BasicBlock {
            planes,
            stride,
            conv_bias: false,
            epsilon: default_bn_epsilon(),
            momentum: default_bn_momentum(),
        }
    }

    /// torchvision's bottleneck block (v1.5).
    pub fn bottleneck(planes: usize, stride: usize) -> Layer {
        Layer::Bottleneck {
            planes,
            stride,
            stride_at: StrideAt::Conv2,
            conv_bias: false,
            epsilon: default_bn_epsilon(),
            momentum: default_bn_momentum(),
        }
    }
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
}

/// A built-in model spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// [`presets::mlp`].
    Mlp,
    /// [`presets::cnn`].
    Cnn,
    /// [`presets::resnet18`].
    Resnet18,
    /// [`presets::resnet50`].
    Resnet50,
    /// [`presets::resnet50_keras`].
    Resnet50Keras,
}

impl Preset {
    /// Every preset, in the order help texts list them.
    pub const ALL: [Preset; 5] = [
        Preset::Mlp,
        Preset::Cnn,
        Preset::Resnet18,
        Preset::Resnet50,
        Preset::Resnet50Keras,
    ];

    /// The name `--model` takes.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Mlp => "mlp",
            Preset::Cnn => "cnn",
            Preset::Resnet18 => "resnet18",
            Preset::Resnet50 => "resnet50",
            Preset::Resnet50Keras => "resnet50-keras",
        }
    }

    /// The presets' names, comma-separated, for messages.
    pub fn names() -> String {
        Preset::ALL.map(Preset::name).join(", ")
    }

    /// The preset's spec for a data set's input shape and class count.
    pub fn spec(self, input: [usize; 3], classes: usize) -> ModelSpec {
        match self {
            Preset::Mlp => presets::mlp(input, classes),
            Preset::Cnn => presets::cnn(input, classes),
            Preset::Resnet18 => presets::resnet18(input, classes),
            Preset::Resnet50 => presets::resnet50(input, classes),
            Preset::Resnet50Keras => presets::resnet50_keras(input, classes),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = SpecError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|preset| preset.name() == name)
            .ok_or_else(|| SpecError::UnknownPreset(name.to_string()))
    }
}

/// The model a run trains, as `--model` names it: a preset, or a `.json`/`.toml` spec file.
///
/// Serialised as the name or the path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, SerializeDisplay, DeserializeFromStr)]
pub enum ModelSource {
    /// A built-in spec, sized from the data set.
    Preset(Preset),
    /// A spec file, which carries its own input shape.
    File(PathBuf),
}

impl ModelSource {
    /// The spec: a preset takes its input shape and class count from the data set; a file is
    /// read and parsed.
    pub fn spec(&self, input: [usize; 3], classes: usize) -> Result<ModelSpec, SpecError> {
        match self {
            ModelSource::Preset(preset) => Ok(preset.spec(input, classes)),
            ModelSource::File(path) => ModelSpec::from_file(path),
        }
    }

    /// A short name for file paths and tables: the preset's name, or the file's stem.
    pub fn key(&self) -> String {
        match self {
            ModelSource::Preset(preset) => preset.name().to_string(),
            ModelSource::File(path) => path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_else(|| "spec".into()),
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Preset(preset) => preset.fmt(f),
            ModelSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for ModelSource {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.ends_with(".json") || text.ends_with(".toml") {
            return Ok(ModelSource::File(PathBuf::from(text)));
        }
        text.parse().map(ModelSource::Preset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // TF: out = ceil(in / stride); the odd pixel goes after.
        assert_eq!(same_padding([28, 224], [3, 7], [1, 2]), [1, 1, 2, 3]);
        assert_eq!(same_padding([5, 4], [2, 1], [2, 2]), [0, 1, 0, 0]);
        // 28 → 14 with a 3×3 stride-2 kernel: nothing before, one after.
        assert_eq!(same_padding([28, 12], [3, 2], [2, 1]), [0, 1, 0, 1]);
    }

    #[test]
    fn presets_and_spec_files_parse_from_their_names() {
        assert_eq!(
            "cnn".parse::<ModelSource>().unwrap(),
            ModelSource::Preset(Preset::Cnn)
        );
        assert_eq!(
            "nets/my-net.toml".parse::<ModelSource>().unwrap().key(),
            "my-net"
        );
        assert_eq!(
            "vgg".parse::<ModelSource>().unwrap_err().to_string(),
            "unknown model \"vgg\"; presets are mlp, cnn, resnet18, resnet50, resnet50-keras, or pass a .json/.toml spec file"
        );
        for preset in Preset::ALL {
            assert_eq!(preset.spec([1, 28, 28], 10).name, preset.name());
        }
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
        // torchvision's resnet50 has 25,557,032 trainable parameters.
        assert_eq!(model.trainable_count(), 25_557_032);
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"layer1.0.downsample.0.weight"));
        assert!(names.contains(&"layer4.2.bn3.running_var"));
        assert_eq!(model.layers.last().unwrap().output, Shape::Flat(1000));
        let resnet18 = presets::resnet18([3, 224, 224], 1000).resolve().unwrap();
        assert_eq!(resnet18.trainable_count(), 11_689_512);
        // The walk gives each block its main path, then its shortcut.
        let block = &resnet18.layers[resnet18.find_layer("layer2.0").unwrap()];
        let Op::Param(ParamOp::Block(op)) = &block.op else {
            panic!("layer2.0 is a block")
        };
        let names: Vec<&str> = op.params().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"layer2.0.conv1.weight"));
        assert_eq!(names.last(), Some(&"layer2.0.downsample.1.running_var"));
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

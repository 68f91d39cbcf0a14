//! The built-in model specs: the mlp and cnn of the comparisons, ResNet-18 and ResNet-50 in
//! torchvision's form, and ResNet-50 in Keras's v1 form.

use super::{Layer, ModelSpec, NamedLayer, Padding, Pair, StrideAt};

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

/// The two ResNet forms that share one set of weight shapes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResnetForm {
    /// torchvision's v1.5: no convolution biases, ε = 1e-5, stride in the 3×3.
    Torchvision,
    /// Keras's v1: biases on every convolution, ε = 1.001e-5, stride in the first 1×1.
    Keras,
}

fn resnet(
    name: &str,
    input: [usize; 3],
    classes: usize,
    blocks: [usize; 4],
    bottleneck: bool,
    form: ResnetForm,
) -> ModelSpec {
    let keras = form == ResnetForm::Keras;
    // Keras's ε and momentum (0.99 in Keras's convention, 0.01 in PyTorch's).
    let (epsilon, momentum) = if keras { (1.001e-5, 0.01) } else { (1e-5, 0.1) };
    let mut layers = vec![
        named(
            "conv1",
            Layer::Conv2d {
                filters: 64,
                kernel: Pair::square(7),
                stride: Pair::square(2),
                padding: Padding::Explicit([3; 4]),
                bias: keras,
            },
        ),
        named("bn1", Layer::BatchNorm { epsilon, momentum }),
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
                Layer::Bottleneck {
                    planes,
                    stride,
                    stride_at: if keras {
                        StrideAt::Conv1
                    } else {
                        StrideAt::Conv2
                    },
                    conv_bias: keras,
                    epsilon,
                    momentum,
                }
            } else {
                Layer::BasicBlock {
                    planes,
                    stride,
                    conv_bias: keras,
                    epsilon,
                    momentum,
                }
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
    resnet(
        "resnet18",
        input,
        classes,
        [2, 2, 2, 2],
        false,
        ResnetForm::Torchvision,
    )
}

/// torchvision's ResNet-50 (bottleneck blocks 3-4-6-3, v1.5 strides), with its parameter names.
pub fn resnet50(input: [usize; 3], classes: usize) -> ModelSpec {
    resnet(
        "resnet50",
        input,
        classes,
        [3, 4, 6, 3],
        true,
        ResnetForm::Torchvision,
    )
}

/// Keras's ResNet-50 (`keras.applications.ResNet50`): v1 strides (in each stage's first
/// 1×1 convolution), a bias on every convolution, batch-norm ε = 1.001e-5. Its tensors are
/// torchvision's plus the convolution biases, under torchvision's names, so one set of
/// weights runs in either form ([`crate::weights::Weights::fit_to`]).
pub fn resnet50_keras(input: [usize; 3], classes: usize) -> ModelSpec {
    resnet(
        "resnet50-keras",
        input,
        classes,
        [3, 4, 6, 3],
        true,
        ResnetForm::Keras,
    )
}

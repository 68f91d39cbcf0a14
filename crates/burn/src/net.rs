//! The spec's layers as burn modules, and the forward pass that walks them.
//!
//! burn's modules hold the parameters; the resolved spec, kept beside them, says what each
//! layer does. Batch norm is written here rather than taken from `burn::nn` because parallax
//! follows PyTorch's convention of updating the running variance with the unbiased batch
//! variance, where `burn::nn::BatchNorm` uses the biased one; a native run switches to burn's.
//!
//! In bf16 the parameters stay f32 (the master weights): convolutions and dense layers cast
//! their input, weights and bias to bf16 per op, as PyTorch's CPU autocast does, batch norm
//! computes in f32 as Keras's `mixed_bfloat16` policy does, and the other layers compute in
//! what they are given.

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, batch_norm, batch_norm_train, conv2d, linear, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use parallax_core::spec::{
    BlockOp, ConvNorm as ConvNormOp, ConvOp, FreeOp, NormOp, Op, ParamOp, PoolOp, ResolvedModel,
};
use parallax_core::{Result, VarianceEstimator};

use crate::engine_error;

/// Batch normalisation with PyTorch's running-statistics rule.
#[derive(Module, Debug)]
pub(crate) struct Norm {
    pub(crate) gamma: Param<Tensor<1>>,
    pub(crate) beta: Param<Tensor<1>>,
    pub(crate) running_mean: RunningState<Tensor<1>>,
    pub(crate) running_var: RunningState<Tensor<1>>,
    pub(crate) momentum: f64,
    pub(crate) epsilon: f64,
    /// PyTorch's Bessel-corrected running variance, or burn's and Keras's biased one.
    pub(crate) unbiased: bool,
}

impl Norm {
    fn new(op: &NormOp, device: &Device) -> Self {
        Norm {
            gamma: Param::from_tensor(Tensor::ones([op.features], device)),
            beta: Param::from_tensor(Tensor::zeros([op.features], device)),
            running_mean: RunningState::new(Tensor::zeros([op.features], device)),
            running_var: RunningState::new(Tensor::ones([op.features], device)),
            momentum: op.momentum,
            epsilon: op.epsilon,
            unbiased: op.running_variance == VarianceEstimator::Unbiased,
        }
    }

    /// Normalises `input` in the parameters' dtype and hands the result back in the input's:
    /// a bf16 network's batch statistics are summed in f32, as Keras's `mixed_bfloat16` policy
    /// does, because a small variance would drown in bf16's 8 significant bits.
    fn forward<const D: usize>(&self, input: Tensor<D>, train: bool) -> Tensor<D> {
        let given: FloatDType = input.dtype().into();
        let own: FloatDType = self.gamma.val().dtype().into();
        self.forward_in_own_dtype(input.cast(own), train)
            .cast(given)
    }

    fn forward_in_own_dtype<const D: usize>(&self, input: Tensor<D>, train: bool) -> Tensor<D> {
        if !train {
            let device = input.device();
            return batch_norm(
                input,
                self.gamma.val(),
                self.beta.val(),
                self.running_mean.value().to_device(&device),
                self.running_var.value().to_device(&device),
                self.epsilon,
            );
        }
        let dims = input.dims();
        let per_channel = dims.iter().product::<usize>() / dims[1].max(1);
        // PyTorch updates the running variance with the unbiased estimate n / (n − 1); burn and
        // Keras with the batch variance itself.
        let bessel = if self.unbiased {
            per_channel as f64 / (per_channel.max(2) - 1) as f64
        } else {
            1.0
        };
        let result = batch_norm_train(input, self.gamma.val(), self.beta.val(), self.epsilon);
        let momentum = self.momentum;
        let mean = self
            .running_mean
            .value_sync()
            .mul_scalar(1.0 - momentum)
            .add(result.mean.detach().mul_scalar(momentum));
        let var = self
            .running_var
            .value_sync()
            .mul_scalar(1.0 - momentum)
            .add(result.variance.detach().mul_scalar(momentum * bessel));
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
        result.output
    }
}

/// A convolution followed by batch norm, as inside residual blocks.
#[derive(Module, Debug)]
pub(crate) struct ConvNorm {
    pub(crate) conv: Conv2d,
    pub(crate) norm: Norm,
}

/// A residual block: the main path and an optional projection shortcut.
#[derive(Module, Debug)]
pub(crate) struct Block {
    pub(crate) main: Vec<ConvNorm>,
    pub(crate) shortcut: Option<ConvNorm>,
}

/// The parameters of one spec layer; parameter-free layers have none.
///
/// Variants differ in size, but a network holds a few dozen of them at most, so boxing the
/// large ones would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub(crate) enum Params {
    Dense(Linear),
    Conv(Conv2d),
    Norm(Norm),
    Block(Block),
}

/// The whole network's parameters, one entry per resolved layer.
#[derive(Module, Debug)]
pub(crate) struct Net {
    pub(crate) layers: Vec<Option<Params>>,
}

fn conv(op: &ConvOp, device: &Device) -> Conv2d {
    let [top, bottom, left, right] = op.padding;
    Conv2dConfig::new([op.in_channels, op.out_channels], op.kernel)
        .with_stride(op.stride)
        .with_padding(PaddingConfig2d::Explicit(top, left, bottom, right))
        .with_bias(op.bias.is_some())
        .init(device)
}

fn conv_norm(op: &ConvNormOp, device: &Device) -> ConvNorm {
    ConvNorm {
        conv: conv(&op.conv, device),
        norm: Norm::new(&op.norm, device),
    }
}

impl Net {
    /// Allocates every layer's parameters with burn's own initialisation.
    pub(crate) fn new(model: &ResolvedModel, device: &Device) -> Self {
        let layers = model
            .layers
            .iter()
            .map(|layer| match &layer.op {
                Op::Param(ParamOp::Dense(op)) => Some(Params::Dense(
                    LinearConfig::new(op.in_features, op.out_features)
                        .with_bias(op.bias.is_some())
                        .init(device),
                )),
                Op::Param(ParamOp::Conv2d(op)) => Some(Params::Conv(conv(op, device))),
                Op::Param(ParamOp::BatchNorm(op)) => Some(Params::Norm(Norm::new(op, device))),
                Op::Param(ParamOp::Block(block)) => Some(Params::Block(new_block(block, device))),
                Op::Free(_) => None,
            })
            .collect();
        Net { layers }
    }
}

fn new_block(block: &BlockOp, device: &Device) -> Block {
    Block {
        main: block
            .main
            .iter()
            .map(|step| conv_norm(step, device))
            .collect(),
        shortcut: block.shortcut.as_ref().map(|step| conv_norm(step, device)),
    }
}

/// An activation between layers: images until a flatten or global pooling, then vectors.
#[derive(Clone, Debug)]
pub(crate) enum Activation {
    Image(Tensor<4>),
    Flat(Tensor<2>),
}

impl Activation {
    fn image(self) -> Tensor<4> {
        match self {
            Activation::Image(tensor) => tensor,
            // Shape inference guarantees image layers get images; reshape keeps this total.
            Activation::Flat(tensor) => {
                let [n, features] = tensor.dims();
                tensor.reshape([n, features, 1, 1])
            }
        }
    }

    /// A leaf of the autodiff graph: detached from what computed it, and tracked for its own
    /// gradient when `tracked`.
    pub(crate) fn leaf(self, tracked: bool) -> Self {
        fn leaf<const D: usize>(tensor: Tensor<D>, tracked: bool) -> Tensor<D> {
            let tensor = tensor.detach();
            if tracked {
                tensor.require_grad()
            } else {
                tensor
            }
        }
        match self {
            Activation::Image(tensor) => Activation::Image(leaf(tensor, tracked)),
            Activation::Flat(tensor) => Activation::Flat(leaf(tensor, tracked)),
        }
    }

    /// The dtype the layer that made it computed in.
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Activation::Image(tensor) => tensor.dtype(),
            Activation::Flat(tensor) => tensor.dtype(),
        }
    }

    /// The sum of every value, the scalar that burn's backward pass starts from.
    pub(crate) fn sum(self) -> Tensor<1> {
        match self {
            Activation::Image(tensor) => tensor.sum(),
            Activation::Flat(tensor) => tensor.sum(),
        }
    }

    pub(crate) fn flat(self) -> Tensor<2> {
        match self {
            Activation::Flat(tensor) => tensor,
            Activation::Image(tensor) => {
                let [n, c, h, w] = tensor.dims();
                tensor.reshape([n, c * h * w])
            }
        }
    }
}

fn pool_padding(op: &PoolOp) -> [(usize, usize); 2] {
    let [top, bottom, left, right] = op.padding;
    [(top, bottom), (left, right)]
}

/// The precision a network computes its convolutions and dense layers in, beside its f32
/// parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Autocast {
    /// Everything in the parameters' f32.
    Off,
    /// Inputs, weights and biases cast to this dtype per op; the parameters stay f32.
    To(FloatDType),
}

impl Autocast {
    /// A tensor in the autocast dtype, or itself when autocast is off or it is in it already.
    pub(crate) fn cast<const D: usize>(self, tensor: Tensor<D>) -> Tensor<D> {
        match self {
            Autocast::Off => tensor,
            Autocast::To(dtype) => tensor.cast(dtype),
        }
    }
}

/// A convolution as the spec's `op` says, computing in `autocast`'s dtype: what
/// `Conv2d::forward` computes, with the casts.
fn conv_forward(conv: &Conv2d, op: &ConvOp, input: Tensor<4>, autocast: Autocast) -> Tensor<4> {
    let [top, bottom, left, right] = op.padding;
    let options = ConvOptions::new_with_padding(
        op.stride,
        [(top, bottom), (left, right)],
        conv.dilation,
        conv.groups,
    );
    conv2d(
        autocast.cast(input),
        autocast.cast(conv.weight.val()),
        conv.bias.as_ref().map(|bias| autocast.cast(bias.val())),
        options,
    )
}

/// A dense layer, computing in `autocast`'s dtype: `Linear::forward` with the casts.
fn linear_forward(dense: &Linear, input: Tensor<2>, autocast: Autocast) -> Tensor<2> {
    linear(
        autocast.cast(input),
        autocast.cast(dense.weight.val()),
        dense.bias.as_ref().map(|bias| autocast.cast(bias.val())),
    )
}

fn block_forward(
    block: &Block,
    op: &BlockOp,
    input: Tensor<4>,
    train: bool,
    autocast: Autocast,
) -> Tensor<4> {
    let step_forward = |step: &ConvNorm, op: &ConvNormOp, x| {
        step.norm
            .forward(conv_forward(&step.conv, &op.conv, x, autocast), train)
    };
    let last = block.main.len().saturating_sub(1);
    let mut x = input.clone();
    for (index, (step, step_op)) in block.main.iter().zip(&op.main).enumerate() {
        x = step_forward(step, step_op, x);
        if index < last {
            x = relu(x);
        }
    }
    let shortcut = match (&block.shortcut, &op.shortcut) {
        (Some(step), Some(step_op)) => step_forward(step, step_op, input),
        // The block's input may be in another dtype than its main path (a bf16 network's
        // first block on an f32 input): the sum is in the main path's.
        _ => input.cast(FloatDType::from(x.dtype())),
    };
    relu(x + shortcut)
}

/// An internal error: the network's parameters don't match the spec it was built from.
pub(crate) fn mismatch(layer: &str) -> parallax_core::Error {
    engine_error(format!(
        "layer {layer:?} has no parameters of its kind; the network and its spec disagree"
    ))
}

/// Runs layers `range` of the network on `input`.
///
/// `train` selects batch statistics and dropout; `autocast` the dtype of convolutions and
/// dense layers. Splitting the pass at a layer is what GradCAM
/// needs: the activations at the split become a leaf whose gradient is read back.
pub(crate) fn forward(
    net: &Net,
    model: &ResolvedModel,
    mut x: Activation,
    range: std::ops::Range<usize>,
    train: bool,
    autocast: Autocast,
) -> Result<Activation> {
    for index in range {
        let (Some(layer), Some(params)) = (model.layers.get(index), net.layers.get(index)) else {
            return Err(engine_error(format!("the network has no layer {index}")));
        };
        let params = params.as_ref();
        x = match &layer.op {
            Op::Param(ParamOp::Dense(_)) => {
                let Some(Params::Dense(linear)) = params else {
                    return Err(mismatch(&layer.name));
                };
                Activation::Flat(linear_forward(linear, x.flat(), autocast))
            }
            Op::Param(ParamOp::Conv2d(op)) => {
                let Some(Params::Conv(conv)) = params else {
                    return Err(mismatch(&layer.name));
                };
                Activation::Image(conv_forward(conv, op, x.image(), autocast))
            }
            Op::Param(ParamOp::BatchNorm(_)) => {
                let Some(Params::Norm(norm)) = params else {
                    return Err(mismatch(&layer.name));
                };
                match x {
                    Activation::Image(t) => Activation::Image(norm.forward(t, train)),
                    Activation::Flat(t) => Activation::Flat(norm.forward(t, train)),
                }
            }
            Op::Param(ParamOp::Block(op)) => {
                let Some(Params::Block(block)) = params else {
                    return Err(mismatch(&layer.name));
                };
                if block.main.len() != op.main.len()
                    || block.shortcut.is_some() != op.shortcut.is_some()
                {
                    return Err(mismatch(&layer.name));
                }
                Activation::Image(block_forward(block, op, x.image(), train, autocast))
            }
            Op::Free(FreeOp::MaxPool2d(op)) => {
                let options = MaxPoolOptions {
                    padding: pool_padding(op),
                    stride: op.stride,
                    ..MaxPoolOptions::new(op.kernel)
                };
                Activation::Image(max_pool2d(x.image(), options))
            }
            Op::Free(FreeOp::AvgPool2d(op)) => {
                let options = AvgPoolOptions {
                    padding: pool_padding(op),
                    stride: op.stride,
                    count_include_pad: false,
                    ..AvgPoolOptions::new(op.kernel)
                };
                Activation::Image(avg_pool2d(x.image(), options))
            }
            Op::Free(FreeOp::GlobalAvgPool) => {
                let [n, c, h, w] = x.clone().image().dims();
                Activation::Flat(x.image().reshape([n, c, h * w]).mean_dim(2).reshape([n, c]))
            }
            Op::Free(FreeOp::Relu) => match x {
                Activation::Image(t) => Activation::Image(relu(t)),
                Activation::Flat(t) => Activation::Flat(relu(t)),
            },
            Op::Free(FreeOp::Dropout(rate)) if train && *rate > 0.0 => {
                let keep = 1.0 - rate;
                match x {
                    Activation::Image(t) => Activation::Image(dropout(t, keep)),
                    Activation::Flat(t) => Activation::Flat(dropout(t, keep)),
                }
            }
            Op::Free(FreeOp::Dropout(_)) => x,
            Op::Free(FreeOp::Flatten) => Activation::Flat(x.flat()),
        };
    }
    Ok(x)
}

fn dropout<const D: usize>(input: Tensor<D>, keep: f64) -> Tensor<D> {
    // The mask comes in the device's default f32; a bf16 activation is masked in bf16.
    let mask = Tensor::<D>::random(
        input.shape(),
        Distribution::Bernoulli(keep),
        &input.device(),
    )
    .cast(FloatDType::from(input.dtype()));
    input.mul(mask).div_scalar(keep)
}

//! The spec's layers as plain libtorch tensors, and the forward pass that walks them.
//!
//! Parameters are ordinary tensors with `requires_grad`, not a `tch::nn::VarStore`: the
//! resolved spec already names every tensor canonically ([`ResolvedModel::parameters`]), so the
//! network keeps that list as its single source of truth, and each layer holds shallow clones
//! (the same storage) of the tensors it computes with. Every operation is one of libtorch's
//! functional ops, so batch norm updates its running variance with the unbiased batch variance,
//! exactly as PyTorch does.

use parallax_core::VarianceEstimator;
use parallax_core::spec::{
    BlockOp, ConvNorm as ConvNormOp, ConvOp, DenseOp, FreeOp, NormOp, Op, ParamInfo, ParamOp,
    ParamRole, ResolvedModel,
};
use tch::{Kind, TchError, Tensor};

/// libtorch's own result: the adapter maps its errors to core's once, at the trait boundary.
pub(crate) type Result<T> = std::result::Result<T, TchError>;

/// A tensor of the network, under its canonical name.
pub(crate) struct Named {
    /// Name, shape and role, from the resolved spec.
    pub(crate) info: ParamInfo,
    /// The tensor itself; trainable ones require gradients.
    pub(crate) tensor: Tensor,
}

/// A dense layer: `y = x Wᵀ + b` with `W` in the canonical `[out, in]` layout.
pub(crate) struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

/// A convolution with its stride and explicit padding.
pub(crate) struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: [usize; 2],
    padding: [usize; 4],
}

/// Batch normalisation: scale, shift and running statistics.
pub(crate) struct Norm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    momentum: f64,
    epsilon: f64,
    running_variance: VarianceEstimator,
}

/// A residual block: the main path's (conv, norm) pairs and an optional projection shortcut.
pub(crate) struct Block {
    main: Vec<(Conv, Norm)>,
    shortcut: Option<(Conv, Norm)>,
}

/// The parameters of one spec layer; parameter-free layers have none.
pub(crate) enum Params {
    Dense(Dense),
    Conv(Conv),
    Norm(Norm),
    Block(Block),
}

/// The whole network: every canonical tensor, and per layer the tensors it computes with.
pub(crate) struct Net {
    /// Every parameter and buffer, in [`ResolvedModel::parameters`] order.
    pub(crate) named: Vec<Named>,
    /// One entry per resolved layer.
    layers: Vec<Option<Params>>,
    /// The kind of every parameter and buffer (the master weights).
    kind: Kind,
    /// The kind convolutions and dense layers compute in when it is not `kind`: bf16, cast
    /// per op as PyTorch's CPU autocast does (tch 0.22 exposes only CUDA's autocast).
    autocast: Option<Kind>,
}

/// Hands out the network's tensors in canonical order as the layers are built.
struct Cursor<'a> {
    named: &'a [Named],
    next: usize,
}

impl Cursor<'_> {
    /// The next tensor, which must be `info`'s.
    fn take(&mut self, info: &ParamInfo) -> Result<Tensor> {
        let named = self
            .named
            .get(self.next)
            .filter(|named| named.info.name == info.name)
            .ok_or_else(|| {
                TchError::Shape(format!("tensor {:?} out of canonical order", info.name))
            })?;
        self.next += 1;
        Ok(named.tensor.shallow_clone())
    }

    fn optional(&mut self, info: Option<&ParamInfo>) -> Result<Option<Tensor>> {
        info.map(|info| self.take(info)).transpose()
    }

    fn dense(&mut self, op: &DenseOp) -> Result<Dense> {
        Ok(Dense {
            weight: self.take(&op.weight)?,
            bias: self.optional(op.bias.as_ref())?,
        })
    }

    fn conv(&mut self, op: &ConvOp) -> Result<Conv> {
        Ok(Conv {
            weight: self.take(&op.weight)?,
            bias: self.optional(op.bias.as_ref())?,
            stride: op.stride,
            padding: op.padding,
        })
    }

    fn norm(&mut self, op: &NormOp) -> Result<Norm> {
        Ok(Norm {
            weight: self.take(&op.weight)?,
            bias: self.take(&op.bias)?,
            running_mean: self.take(&op.running_mean)?,
            running_var: self.take(&op.running_var)?,
            momentum: op.momentum,
            epsilon: op.epsilon,
            running_variance: op.running_variance,
        })
    }

    fn conv_norm(&mut self, op: &ConvNormOp) -> Result<(Conv, Norm)> {
        Ok((self.conv(&op.conv)?, self.norm(&op.norm)?))
    }

    fn block(&mut self, op: &BlockOp) -> Result<Block> {
        let main = op
            .main
            .iter()
            .map(|step| self.conv_norm(step))
            .collect::<Result<Vec<_>>>()?;
        let shortcut = op
            .shortcut
            .as_ref()
            .map(|step| self.conv_norm(step))
            .transpose()?;
        Ok(Block { main, shortcut })
    }
}

/// A fresh tensor for `info` with libtorch's default initialisation: PyTorch's ±1/√fan_in
/// uniform bound for Linear and Conv2d weights and biases, ones and zeros for batch norm.
fn initial(info: &ParamInfo, kind: Kind, device: tch::Device) -> Result<Tensor> {
    let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
    let options = (kind, device);
    let tensor = tch::no_grad(|| -> Result<Tensor> {
        Ok(match info.role {
            ParamRole::Weight { fan_in } | ParamRole::Bias { fan_in } => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                let mut tensor = Tensor::f_empty(shape.as_slice(), options)?;
                let _ = tensor.f_uniform_(-bound, bound)?;
                tensor
            }
            ParamRole::NormScale | ParamRole::RunningVar => {
                Tensor::f_ones(shape.as_slice(), options)?
            }
            ParamRole::NormShift | ParamRole::RunningMean => {
                Tensor::f_zeros(shape.as_slice(), options)?
            }
        })
    })?;
    // Convolution kernels live channels-last on the CPU, which makes oneDNN's convolutions
    // produce channels-last activations, and pooling, ReLU and the backward passes follow.
    let tensor = if info.shape.len() == 4 && device == tch::Device::Cpu {
        channels_last(&tensor)?
    } else {
        tensor
    };
    if info.role.is_trainable() {
        tensor.f_set_requires_grad(true)
    } else {
        Ok(tensor)
    }
}

/// The same `[N, C, H, W]` values stored channels-last: the strides of PyTorch's
/// `memory_format=torch.channels_last` (`[HWC, 1, WC, C]`), which tch does not expose. They are
/// set explicitly on a fresh NHWC buffer, because permuting and copying leaves the NCHW strides
/// in place whenever a dimension is 1 (a single input channel), and libtorch picks its layout
/// from the exact strides. libtorch's CPU convolutions (oneDNN) and max pooling run much faster
/// on this layout than on NCHW (`docs/bench.md`).
fn channels_last(tensor: &Tensor) -> Result<Tensor> {
    let size = tensor.size();
    let &[n, c, h, w] = size.as_slice() else {
        return Err(TchError::Shape(format!(
            "channels-last needs [N, C, H, W], not {size:?}"
        )));
    };
    tch::no_grad(|| {
        let mut buffer = Tensor::f_empty([n, h, w, c], (tensor.kind(), tensor.device()))?;
        buffer.f_copy_(&tensor.f_permute([0, 2, 3, 1])?)?;
        buffer.f_as_strided([n, c, h, w], [h * w * c, 1, w * c, c], None::<i64>)
    })
}

impl Net {
    /// Allocates every canonical tensor as `kind` on `device` with libtorch's default
    /// initialisation.
    pub(crate) fn new(model: &ResolvedModel, kind: Kind, device: tch::Device) -> Result<Self> {
        let named = model
            .parameters()
            .into_iter()
            .map(|info| {
                let tensor = initial(&info, kind, device)?;
                Ok(Named { info, tensor })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut cursor = Cursor {
            named: &named,
            next: 0,
        };
        let mut layers = Vec::with_capacity(model.layers.len());
        for layer in &model.layers {
            layers.push(match &layer.op {
                Op::Param(ParamOp::Dense(op)) => Some(Params::Dense(cursor.dense(op)?)),
                Op::Param(ParamOp::Conv2d(op)) => Some(Params::Conv(cursor.conv(op)?)),
                Op::Param(ParamOp::BatchNorm(op)) => Some(Params::Norm(cursor.norm(op)?)),
                Op::Param(ParamOp::Block(op)) => Some(Params::Block(cursor.block(op)?)),
                Op::Free(_) => None,
            });
        }
        Ok(Net {
            named,
            layers,
            kind,
            autocast: None,
        })
    }

    /// Computes convolutions and dense layers in `kind` from copies of their inputs, weights
    /// and biases cast to it, the parameters staying in theirs: autocast's rule, under which
    /// the other layers (batch norm, pooling, ReLU) take what they are given.
    pub(crate) fn autocast(&mut self, kind: Kind) {
        self.autocast = Some(kind);
    }

    /// The tensors that gradient descent updates, in canonical order.
    pub(crate) fn trainable(&self) -> Vec<&Tensor> {
        self.named
            .iter()
            .filter(|named| named.info.role.is_trainable())
            .map(|named| &named.tensor)
            .collect()
    }
}

/// `x` as `[N, features]`, flattening C,H,W when it is an image.
fn flat(x: Tensor) -> Result<Tensor> {
    if x.dim() == 2 {
        return Ok(x);
    }
    let n = x.size().first().copied().unwrap_or(0);
    x.f_reshape([n, -1])
}

/// `x` as `[N, C, H, W]`; a flat `[N, F]` becomes `[N, F, 1, 1]`, as in burn's adapter.
fn image(x: Tensor) -> Result<Tensor> {
    if x.dim() == 4 {
        return Ok(x);
    }
    let size = x.size();
    let (n, f) = (
        size.first().copied().unwrap_or(0),
        size.get(1).copied().unwrap_or(1),
    );
    x.f_reshape([n, f, 1, 1])
}

/// Whether `[top, bottom, left, right]` padding is symmetric, so that libtorch's own padding
/// argument (the same on both sides) expresses it.
fn symmetric(padding: [usize; 4]) -> bool {
    let [top, bottom, left, right] = padding;
    top == bottom && left == right
}

/// Pads `x` explicitly with `value`; `constant_pad_nd` takes the last dimension first.
fn pad(x: &Tensor, padding: [usize; 4], value: f64) -> Result<Tensor> {
    let [top, bottom, left, right] = padding.map(|p| p as i64);
    x.f_pad([left, right, top, bottom], "constant", value)
}

fn i64_pair(pair: [usize; 2]) -> [i64; 2] {
    pair.map(|v| v as i64)
}

/// `tensor` in `autocast`'s kind, or itself without one.
fn cast(tensor: &Tensor, autocast: Option<Kind>) -> Result<Tensor> {
    match autocast {
        Some(kind) if tensor.kind() != kind => tensor.f_to_kind(kind),
        _ => Ok(tensor.shallow_clone()),
    }
}

impl Dense {
    fn forward(&self, x: Tensor, autocast: Option<Kind>) -> Result<Tensor> {
        let bias = self.bias.as_ref().map(|b| cast(b, autocast)).transpose()?;
        cast(&flat(x)?, autocast)?.f_linear(&cast(&self.weight, autocast)?, bias.as_ref())
    }
}

impl Conv {
    fn forward(&self, x: &Tensor, autocast: Option<Kind>) -> Result<Tensor> {
        let [top, _, left, _] = self.padding;
        let stride = i64_pair(self.stride);
        let (x, weight) = (cast(x, autocast)?, cast(&self.weight, autocast)?);
        let bias = self.bias.as_ref().map(|b| cast(b, autocast)).transpose()?;
        if symmetric(self.padding) {
            x.f_conv2d(
                &weight,
                bias.as_ref(),
                stride,
                [top as i64, left as i64],
                [1, 1],
                1,
            )
        } else {
            // libtorch pads symmetrically only; asymmetric ("same" with an even kernel or a
            // stride) padding is applied as explicit zeros first.
            pad(&x, self.padding, 0.0)?.f_conv2d(&weight, bias.as_ref(), stride, [0, 0], [1, 1], 1)
        }
    }
}

impl Norm {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let biased = train && self.running_variance == VarianceEstimator::Biased;
        // libtorch's batch norm keeps the running variance it was given for its backward pass,
        // so the biased update must not change that tensor in place: it gets a scratch copy.
        let scratch = if biased {
            Some(self.running_var.f_detach_copy()?)
        } else {
            None
        };
        // In training, libtorch's batch_norm normalises with the batch statistics and updates the
        // running ones in place: mean with the batch mean, variance with the unbiased batch
        // variance, both weighted by PyTorch's momentum.
        let y = x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(scratch.as_ref().unwrap_or(&self.running_var)),
            train,
            self.momentum,
            self.epsilon,
            false,
        )?;
        if let Some(updated) = scratch {
            // libtorch left r' = (1 − m)·r + m·s²·n/(n − 1); the biased update
            // (1 − m)·r + m·s² is (1 − m)·r/n + r'·(n − 1)/n, so it is recovered exactly from
            // r and r' without recomputing the batch variance.
            let n = (x.numel() / usize::try_from(x.size()[1]).unwrap_or(1).max(1)).max(2) as f64;
            let _guard = tch::no_grad_guard();
            let biased_update = (self.running_var.shallow_clone() * ((1.0 - self.momentum) / n))
                .f_add(&(updated * ((n - 1.0) / n)))?;
            let mut running_var = self.running_var.shallow_clone();
            running_var.f_copy_(&biased_update)?;
        }
        Ok(y)
    }
}

impl Block {
    fn forward(&self, input: &Tensor, train: bool, autocast: Option<Kind>) -> Result<Tensor> {
        let last = self.main.len().saturating_sub(1);
        let mut x = input.shallow_clone();
        for (index, (conv, norm)) in self.main.iter().enumerate() {
            x = norm.forward(&conv.forward(&x, autocast)?, train)?;
            if index < last {
                x = x.f_relu()?;
            }
        }
        let shortcut = match &self.shortcut {
            Some((conv, norm)) => norm.forward(&conv.forward(input, autocast)?, train)?,
            None => input.shallow_clone(),
        };
        x.f_add(&shortcut)?.f_relu()
    }
}

fn max_pool(
    x: &Tensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
) -> Result<Tensor> {
    let (kernel, stride) = (i64_pair(kernel), i64_pair(stride));
    let [top, _, left, _] = padding;
    if symmetric(padding) && 2 * top as i64 <= kernel[0] && 2 * left as i64 <= kernel[1] {
        return x.f_max_pool2d(kernel, stride, [top as i64, left as i64], [1, 1], false);
    }
    // Padded cells never win a maximum: pad with −∞, which also covers asymmetric padding and
    // padding wider than libtorch's half-kernel limit.
    pad(x, padding, f64::NEG_INFINITY)?.f_max_pool2d(kernel, stride, [0, 0], [1, 1], false)
}

fn avg_pool(
    x: &Tensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
) -> Result<Tensor> {
    let (k, s) = (i64_pair(kernel), i64_pair(stride));
    let [top, _, left, _] = padding;
    let native = symmetric(padding) && 2 * top <= kernel[0] && 2 * left <= kernel[1];
    if native {
        return x.f_avg_pool2d(k, s, [top as i64, left as i64], false, false, None::<i64>);
    }
    // Asymmetric padding: average the zero-padded input, then rescale each cell by the share
    // of its window that lies inside the image, which excludes padded cells from the mean.
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let sums = pad(x, padding, 0.0)?.f_avg_pool2d(k, s, [0, 0], false, true, None::<i64>)?;
    let ones = Tensor::f_ones([1, 1, h, w], (x.kind(), x.device()))?;
    let share = pad(&ones, padding, 0.0)?.f_avg_pool2d(k, s, [0, 0], false, true, None::<i64>)?;
    sums.f_div(&share)
}

/// Runs layers `range` of the network on `x`, and returns their output in the parameters'
/// kind (a bf16 network's logits in f32, for the loss).
///
/// `train` selects batch statistics and dropout. Splitting the pass at a layer is what GradCAM
/// needs: the activations at the split become a leaf whose gradient is read back.
pub(crate) fn forward(
    net: &Net,
    model: &ResolvedModel,
    x: Tensor,
    range: std::ops::Range<usize>,
    train: bool,
) -> Result<Tensor> {
    let y = forward_in_own_kind(net, model, x, range, train)?;
    if y.kind() == net.kind {
        Ok(y)
    } else {
        y.f_to_kind(net.kind)
    }
}

/// The kind the first layer with parameters computes its output in, on `x`, in evaluation
/// mode: the parameters' kind, or the autocast kind.
pub(crate) fn first_computed_kind(net: &Net, model: &ResolvedModel, x: Tensor) -> Result<Kind> {
    let first = model
        .layers
        .iter()
        .position(|layer| matches!(layer.op, Op::Param(_)))
        .ok_or_else(|| TchError::Shape("the network has no layer with parameters".into()))?;
    let y = tch::no_grad(|| forward_in_own_kind(net, model, x, 0..first + 1, false))?;
    Ok(y.kind())
}

/// [`forward`], its output in the kind its last layer computed in.
pub(crate) fn forward_in_own_kind(
    net: &Net,
    model: &ResolvedModel,
    mut x: Tensor,
    range: std::ops::Range<usize>,
    train: bool,
) -> Result<Tensor> {
    for index in range {
        let (Some(layer), Some(params)) = (model.layers.get(index), net.layers.get(index)) else {
            return Err(TchError::Shape(format!("the network has no layer {index}")));
        };
        let params = params.as_ref();
        let mismatch = || {
            TchError::Shape(format!(
                "layer {:?} has no parameters of its kind; the network and its spec disagree",
                layer.name
            ))
        };
        x = match &layer.op {
            Op::Param(ParamOp::Dense(_)) => {
                let Some(Params::Dense(dense)) = params else {
                    return Err(mismatch());
                };
                dense.forward(x, net.autocast)?
            }
            Op::Param(ParamOp::Conv2d(_)) => {
                let Some(Params::Conv(conv)) = params else {
                    return Err(mismatch());
                };
                conv.forward(&image(x)?, net.autocast)?
            }
            Op::Param(ParamOp::BatchNorm(_)) => {
                let Some(Params::Norm(norm)) = params else {
                    return Err(mismatch());
                };
                norm.forward(&x, train)?
            }
            Op::Param(ParamOp::Block(_)) => {
                let Some(Params::Block(block)) = params else {
                    return Err(mismatch());
                };
                block.forward(&image(x)?, train, net.autocast)?
            }
            Op::Free(FreeOp::MaxPool2d(op)) => {
                max_pool(&image(x)?, op.kernel, op.stride, op.padding)?
            }
            Op::Free(FreeOp::AvgPool2d(op)) => {
                avg_pool(&image(x)?, op.kernel, op.stride, op.padding)?
            }
            Op::Free(FreeOp::GlobalAvgPool) => {
                image(x)?.f_mean_dim([2i64, 3].as_slice(), false, None::<Kind>)?
            }
            Op::Free(FreeOp::Relu) => x.f_relu()?,
            Op::Free(FreeOp::Dropout(rate)) if train && *rate > 0.0 => x.f_dropout(*rate, true)?,
            Op::Free(FreeOp::Dropout(_)) => x,
            Op::Free(FreeOp::Flatten) => flat(x)?,
        };
    }
    Ok(x)
}

//! The spec as one TensorFlow graph: variables, an evaluation pass, and, built on first use, the
//! training pass with its gradients, one update subgraph per optimizer configuration, and the
//! GradCAM gradients of each layer asked for.
//!
//! Everything is built from the resolved spec once; running a step only feeds a batch and
//! fetches what it needs, so the graph does not grow from step to step. Activations are NHWC.
//! Flat activations remember whether their features are in NHWC's H,W,C order
//! ([`FlatOrder`]): the layers that read them store their parameters permuted
//! ([`Layout`]) instead of the graph transposing activations back to the canonical order.

use std::collections::HashMap;

use parallax_core::backend::AdamFormulation;
use parallax_core::spec::{
    BlockOp, ConvOp, NormOp, Op, ParamInfo, ParamRole, PoolOp, ResolvedModel, Shape as SpecShape,
};
use parallax_core::{OptimizerConfig, OptimizerKind};
use tensorflow::{
    Code, DataType, Operation, Output, Scope, Session, SessionOptions, Shape, Status, Tensor, ops,
};

use crate::convert::{FlatOrder, Layout, flat_order};

/// TensorFlow's own result: the adapter maps its errors to core's once, at the trait boundary.
pub(crate) type TfResult<T> = std::result::Result<T, Status>;

/// A graph-building error of the adapter's own making.
fn invalid(message: impl AsRef<str>) -> Status {
    Status::new_set_lossy(Code::InvalidArgument, message.as_ref())
}

/// How a layer's activations are held in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repr {
    /// `[N, H, W, C]`.
    Image {
        channels: usize,
        height: usize,
        width: usize,
    },
    /// `[N, features]`, in the canonical order or in an image's H,W,C order.
    Flat { features: usize, order: FlatOrder },
}

/// One canonical tensor as a graph variable, with the operations that set it.
pub(crate) struct Param {
    /// Name, canonical shape and role.
    pub(crate) info: ParamInfo,
    /// How the variable stores it.
    pub(crate) layout: Layout,
    /// The variable.
    pub(crate) variable: Output,
    /// The placeholder that [`Self::assign`] copies from.
    pub(crate) feed: Operation,
    /// `variable = feed`: weight import.
    pub(crate) assign: Operation,
    /// TensorFlow's (Keras's) default initialisation of this tensor.
    pub(crate) init: Operation,
}

/// A forward pass: every layer's output, the logits, and (in training) the batch-norm updates.
pub(crate) struct Pass {
    /// Each layer's output and how it is held.
    pub(crate) outputs: Vec<(Output, Repr)>,
    /// `[N, classes]` in the canonical order.
    pub(crate) logits: Output,
    /// Running-statistics assignments (training passes only).
    pub(crate) updates: Vec<Operation>,
}

/// The training pass: loss, gradients and the operations a step must run.
pub(crate) struct Training {
    /// The batch's mean cross-entropy.
    pub(crate) loss: Output,
    /// The gradient of the loss for each trainable parameter, in canonical order.
    gradients: Vec<Output>,
    /// Running-statistics assignments of the pass.
    updates: Vec<Operation>,
}

/// One optimizer configuration's update subgraph.
pub(crate) struct OptimizerOps {
    /// The configuration it implements.
    pub(crate) config: OptimizerConfig,
    /// Applies one update (and the batch-norm updates of the training pass).
    pub(crate) step: Operation,
    /// Zeroes the optimizer's state: momenta and step count.
    pub(crate) reset: Operation,
}

/// The model's graph and the session that runs it.
pub(crate) struct Net {
    scope: Scope,
    /// The session; it picks up operations added to the graph after its creation.
    pub(crate) session: Session,
    /// The spec the graph was built from.
    pub(crate) model: ResolvedModel,
    /// Every canonical tensor, in [`ResolvedModel::parameters`] order.
    pub(crate) params: Vec<Param>,
    /// Each parameter's variable by canonical name, which every forward pass reads.
    variables: HashMap<String, Output>,
    /// `[N, H, W, C]` float images.
    pub(crate) images: Operation,
    /// `[N]` int32 class labels (training) or target classes (GradCAM).
    pub(crate) labels: Operation,
    /// The evaluation pass.
    pub(crate) eval: Pass,
    training: Option<Training>,
    optimizers: Vec<OptimizerOps>,
    grad_cams: HashMap<usize, Output>,
    /// Op-level seeds for dropout masks, so that runs are reproducible.
    next_seed: i64,
}

/// Where each canonical tensor's layout comes from: the representation reaching its layer.
fn layouts(model: &ResolvedModel) -> TfResult<HashMap<String, Layout>> {
    let mut layouts = HashMap::new();
    let mut repr = input_repr(model);
    for layer in &model.layers {
        let name = &layer.name;
        match &layer.op {
            Op::Dense { .. } => {
                let order = match repr {
                    Repr::Image {
                        channels,
                        height,
                        width,
                    } => flat_order(channels, height, width),
                    Repr::Flat { order, .. } => order,
                };
                layouts.insert(format!("{name}.weight"), Layout::DenseKernel(order));
            }
            Op::Conv2d(_) => {
                layouts.insert(format!("{name}.weight"), Layout::ConvKernel);
            }
            Op::Block(block) => {
                for (conv, ..) in &block.main {
                    layouts.insert(format!("{name}.{conv}.weight"), Layout::ConvKernel);
                }
                layouts.insert(format!("{name}.downsample.0.weight"), Layout::ConvKernel);
            }
            Op::BatchNorm(_) => {
                if let Repr::Flat {
                    order: Some(order), ..
                } = repr
                {
                    for tensor in ["weight", "bias", "running_mean", "running_var"] {
                        layouts.insert(format!("{name}.{tensor}"), Layout::Features(order));
                    }
                }
            }
            _ => {}
        }
        repr = next_repr(layer.op.clone(), repr, &layer.output)?;
    }
    Ok(layouts)
}

/// The representation of the model's input.
fn input_repr(model: &ResolvedModel) -> Repr {
    let [channels, height, width] = model.input();
    Repr::Image {
        channels,
        height,
        width,
    }
}

/// The representation after a layer, from the one before it and the layer's output shape.
fn next_repr(op: Op, input: Repr, output: &SpecShape) -> TfResult<Repr> {
    let image = |shape: &SpecShape| match *shape {
        SpecShape::Image {
            channels,
            height,
            width,
        } => Ok(Repr::Image {
            channels,
            height,
            width,
        }),
        SpecShape::Flat(_) => Err(invalid(format!("{op:?} should give an image"))),
    };
    Ok(match op {
        Op::Dense { out_features, .. } => Repr::Flat {
            features: out_features,
            order: None,
        },
        Op::Conv2d(_) | Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::Block(_) => image(output)?,
        Op::GlobalAvgPool => Repr::Flat {
            features: output.len(),
            order: None,
        },
        Op::BatchNorm(_) | Op::Relu | Op::Dropout(_) => input,
        Op::Flatten => match input {
            Repr::Image {
                channels,
                height,
                width,
            } => Repr::Flat {
                features: channels * height * width,
                order: flat_order(channels, height, width),
            },
            flat => flat,
        },
    })
}

/// TensorFlow's `SAME` padding of one dimension: the output is ⌈in/stride⌉, and the extra cell,
/// when the total is odd, goes after.
fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride.max(1));
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// How a `[top, bottom, left, right]` padding is expressed in TensorFlow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TfPadding {
    /// No padding.
    Valid,
    /// Exactly TensorFlow's `SAME` for this geometry.
    Same,
    /// Anything else: an explicit `Pad` before a `VALID` op.
    Explicit([usize; 4]),
}

fn tf_padding(
    padding: [usize; 4],
    kernel: [usize; 2],
    stride: [usize; 2],
    size: [usize; 2],
) -> TfPadding {
    if padding == [0; 4] {
        return TfPadding::Valid;
    }
    let (top, bottom) = same_padding(size[0], kernel[0], stride[0]);
    let (left, right) = same_padding(size[1], kernel[1], stride[1]);
    if padding == [top, bottom, left, right] {
        TfPadding::Same
    } else {
        TfPadding::Explicit(padding)
    }
}

/// Builds one forward pass into the graph.
struct Forward<'a> {
    scope: Scope,
    variables: &'a HashMap<String, Output>,
    train: bool,
    updates: Vec<Operation>,
    next_seed: &'a mut i64,
}

impl Forward<'_> {
    fn variable(&self, name: &str) -> TfResult<Output> {
        self.variables
            .get(name)
            .cloned()
            .ok_or_else(|| invalid(format!("no variable for tensor {name:?}")))
    }

    fn ints(&mut self, values: &[i32]) -> TfResult<Output> {
        Ok(ops::constant(values, &mut self.scope)?.into())
    }

    fn scalar(&mut self, value: f32) -> TfResult<Output> {
        Ok(ops::constant(value, &mut self.scope)?.into())
    }

    fn reshape(&mut self, x: Output, shape: &[i32]) -> TfResult<Output> {
        let shape = self.ints(shape)?;
        Ok(ops::reshape(x, shape, &mut self.scope)?.into())
    }

    /// `x` as `[N, features]` in the canonical C,H,W order.
    fn canonical_flat(&mut self, x: Output, repr: Repr) -> TfResult<(Output, usize)> {
        match repr {
            Repr::Flat {
                features,
                order: Some([c, h, w]),
            } => {
                let image = self.reshape(x, &[-1, h as i32, w as i32, c as i32])?;
                let perm = self.ints(&[0, 3, 1, 2])?;
                let nchw = ops::transpose(image, perm, &mut self.scope)?;
                Ok((self.reshape(nchw.into(), &[-1, features as i32])?, features))
            }
            Repr::Flat { features, .. } => Ok((x, features)),
            Repr::Image { .. } => {
                let (flat, features, order) = self.flat(x, repr)?;
                self.canonical_flat(flat, Repr::Flat { features, order })
            }
        }
    }

    /// `x` as `[N, features]`, flattening an image in its own H,W,C order.
    fn flat(&mut self, x: Output, repr: Repr) -> TfResult<(Output, usize, FlatOrder)> {
        match repr {
            Repr::Image {
                channels,
                height,
                width,
            } => {
                let features = channels * height * width;
                let flat = self.reshape(x, &[-1, features as i32])?;
                Ok((flat, features, flat_order(channels, height, width)))
            }
            Repr::Flat { features, order } => Ok((x, features, order)),
        }
    }

    /// `x` as an NHWC image: a flat `[N, F]` becomes `[N, 1, 1, F]`, as in the other adapters.
    fn image(&mut self, x: Output, repr: Repr) -> TfResult<(Output, [usize; 3])> {
        match repr {
            Repr::Image {
                channels,
                height,
                width,
            } => Ok((x, [channels, height, width])),
            flat => {
                let (x, features) = self.canonical_flat(x, flat)?;
                Ok((
                    self.reshape(x, &[-1, 1, 1, features as i32])?,
                    [features, 1, 1],
                ))
            }
        }
    }

    /// Zero (or `value`) padding of an NHWC image's spatial dimensions.
    fn pad(&mut self, x: Output, padding: [usize; 4], value: f32) -> TfResult<Output> {
        let [top, bottom, left, right] = padding.map(|p| p as i32);
        let paddings = Tensor::new(&[4, 2]).with_values(&[0, 0, top, bottom, left, right, 0, 0])?;
        let paddings = ops::constant(paddings, &mut self.scope)?;
        if value == 0.0 {
            Ok(ops::pad(x, paddings, &mut self.scope)?.into())
        } else {
            let value = self.scalar(value)?;
            Ok(ops::pad_v2(x, paddings, value, &mut self.scope)?.into())
        }
    }

    fn conv(
        &mut self,
        x: Output,
        size: [usize; 3],
        prefix: &str,
        op: &ConvOp,
    ) -> TfResult<(Output, [usize; 3])> {
        let [_, height, width] = size;
        let weight = self.variable(&format!("{prefix}.weight"))?;
        let strides = vec![1, op.stride[0] as i64, op.stride[1] as i64, 1];
        let (x, padding) = match tf_padding(op.padding, op.kernel, op.stride, [height, width]) {
            TfPadding::Valid => (x, "VALID"),
            TfPadding::Same => (x, "SAME"),
            TfPadding::Explicit(padding) => (self.pad(x, padding, 0.0)?, "VALID"),
        };
        let mut y: Output = ops::Conv2D::new()
            .strides(strides)
            .padding(padding)
            .data_format("NHWC")
            .build(x, weight, &mut self.scope)?
            .into();
        if op.bias {
            let bias = self.variable(&format!("{prefix}.bias"))?;
            y = ops::BiasAdd::new()
                .data_format("NHWC")
                .build(y, bias, &mut self.scope)?
                .into();
        }
        let [top, bottom, left, right] = op.padding;
        let out_h = (height + top + bottom - op.kernel[0]) / op.stride[0] + 1;
        let out_w = (width + left + right - op.kernel[1]) / op.stride[1] + 1;
        Ok((y, [op.out_channels, out_h, out_w]))
    }

    /// Fused batch norm of an NHWC image. In training it normalises with the batch statistics
    /// and folds them into the running ones with PyTorch's momentum (TensorFlow's
    /// `exponential_avg_factor`), the variance with Bessel's correction, as PyTorch does.
    fn norm(&mut self, x: Output, prefix: &str, op: &NormOp) -> TfResult<Output> {
        let scale = self.variable(&format!("{prefix}.weight"))?;
        let offset = self.variable(&format!("{prefix}.bias"))?;
        let mean = self.variable(&format!("{prefix}.running_mean"))?;
        let variance = self.variable(&format!("{prefix}.running_var"))?;
        let norm = ops::FusedBatchNormV3::new()
            .T(DataType::Float)
            .U(DataType::Float)
            .epsilon(op.epsilon as f32)
            .exponential_avg_factor(if self.train { op.momentum as f32 } else { 1.0 })
            .data_format("NHWC")
            .is_training(self.train)
            .build_instance(
                x,
                scale,
                offset,
                mean.clone(),
                variance.clone(),
                &mut self.scope,
            )?;
        if self.train {
            let update_mean = ops::assign(mean, norm.batch_mean(), &mut self.scope)?;
            let update_variance = ops::assign(variance, norm.batch_variance(), &mut self.scope)?;
            self.updates.extend([update_mean, update_variance]);
        }
        Ok(norm.y())
    }

    fn block(
        &mut self,
        x: Output,
        size: [usize; 3],
        prefix: &str,
        op: &BlockOp,
    ) -> TfResult<(Output, [usize; 3])> {
        let last = op.main.len().saturating_sub(1);
        let (mut y, mut y_size) = (x.clone(), size);
        for (index, (conv_name, conv, norm_name, norm)) in op.main.iter().enumerate() {
            let (conv_out, conv_size) =
                self.conv(y, y_size, &format!("{prefix}.{conv_name}"), conv)?;
            y = self.norm(conv_out, &format!("{prefix}.{norm_name}"), norm)?;
            y_size = conv_size;
            if index < last {
                y = ops::relu(y, &mut self.scope)?.into();
            }
        }
        let shortcut = match &op.shortcut {
            Some((conv, norm)) => {
                let (conv_out, _) = self.conv(x, size, &format!("{prefix}.downsample.0"), conv)?;
                self.norm(conv_out, &format!("{prefix}.downsample.1"), norm)?
            }
            None => x,
        };
        let sum = ops::add(y, shortcut, &mut self.scope)?;
        Ok((ops::relu(sum, &mut self.scope)?.into(), y_size))
    }

    fn max_pool(&mut self, x: Output, size: [usize; 3], op: &PoolOp) -> TfResult<Output> {
        let [_, height, width] = size;
        let (x, padding) = match tf_padding(op.padding, op.kernel, op.stride, [height, width]) {
            TfPadding::Valid => (x, "VALID"),
            // TensorFlow's SAME max pooling ignores padded cells, as padding with −∞ does.
            TfPadding::Same => (x, "SAME"),
            TfPadding::Explicit(padding) => (self.pad(x, padding, f32::NEG_INFINITY)?, "VALID"),
        };
        Ok(ops::MaxPool::new()
            .ksize(vec![1, op.kernel[0] as i64, op.kernel[1] as i64, 1])
            .strides(vec![1, op.stride[0] as i64, op.stride[1] as i64, 1])
            .padding(padding)
            .data_format("NHWC")
            .build(x, &mut self.scope)?
            .into())
    }

    fn avg_pool(&mut self, x: Output, size: [usize; 3], op: &PoolOp) -> TfResult<Output> {
        let [_, height, width] = size;
        let pool = |scope: &mut Scope, x: Output, padding: &str| -> TfResult<Output> {
            Ok(ops::AvgPool::new()
                .ksize(vec![1, op.kernel[0] as i64, op.kernel[1] as i64, 1])
                .strides(vec![1, op.stride[0] as i64, op.stride[1] as i64, 1])
                .padding(padding)
                .data_format("NHWC")
                .build(x, scope)?
                .into())
        };
        match tf_padding(op.padding, op.kernel, op.stride, [height, width]) {
            TfPadding::Valid => pool(&mut self.scope, x, "VALID"),
            // TensorFlow's SAME average pooling leaves padded cells out of each mean.
            TfPadding::Same => pool(&mut self.scope, x, "SAME"),
            TfPadding::Explicit(padding) => {
                // Average the zero-padded image, then rescale each cell by its window's share
                // inside the image, which leaves padded cells out of the mean.
                let padded = self.pad(x, padding, 0.0)?;
                let sums = pool(&mut self.scope, padded, "VALID")?;
                let scale = window_scale(op, padding, [height, width]);
                let scale = ops::constant(scale, &mut self.scope)?;
                Ok(ops::mul(sums, scale, &mut self.scope)?.into())
            }
        }
    }

    fn dropout(&mut self, x: Output, rate: f64) -> TfResult<Output> {
        let shape = ops::shape(x.clone(), &mut self.scope)?;
        *self.next_seed += 1;
        let uniform = ops::RandomUniform::new()
            .dtype(DataType::Float)
            .seed(*self.next_seed)
            .seed2(*self.next_seed)
            .build(shape, &mut self.scope)?;
        let rate_value = self.scalar(rate as f32)?;
        let keep = ops::greater_equal(uniform, rate_value, &mut self.scope)?;
        let mask = ops::Cast::new()
            .DstT(DataType::Float)
            .build(keep, &mut self.scope)?;
        let scale = self.scalar((1.0 / (1.0 - rate)) as f32)?;
        let scaled = ops::mul(mask, scale, &mut self.scope)?;
        Ok(ops::mul(x, scaled, &mut self.scope)?.into())
    }

    /// One layer on `x`; returns its output and how it is held.
    fn layer(
        &mut self,
        layer: &parallax_core::spec::ResolvedLayer,
        x: Output,
        repr: Repr,
    ) -> TfResult<(Output, Repr)> {
        let name = layer.name.as_str();
        let output = match &layer.op {
            Op::Dense { bias, .. } => {
                let (x, _, _) = self.flat(x, repr)?;
                let weight = self.variable(&format!("{name}.weight"))?;
                let mut y: Output = ops::mat_mul(x, weight, &mut self.scope)?.into();
                if *bias {
                    let bias = self.variable(&format!("{name}.bias"))?;
                    y = ops::bias_add(y, bias, &mut self.scope)?.into();
                }
                y
            }
            Op::Conv2d(op) => {
                let (x, size) = self.image(x, repr)?;
                self.conv(x, size, name, op)?.0
            }
            Op::Block(op) => {
                let (x, size) = self.image(x, repr)?;
                self.block(x, size, name, op)?.0
            }
            Op::MaxPool2d(op) => {
                let (x, size) = self.image(x, repr)?;
                self.max_pool(x, size, op)?
            }
            Op::AvgPool2d(op) => {
                let (x, size) = self.image(x, repr)?;
                self.avg_pool(x, size, op)?
            }
            Op::GlobalAvgPool => match repr {
                Repr::Image { .. } => {
                    let axes = self.ints(&[1, 2])?;
                    ops::mean(x, axes, &mut self.scope)?.into()
                }
                flat => self.canonical_flat(x, flat)?.0,
            },
            Op::BatchNorm(op) => match repr {
                Repr::Image { .. } => self.norm(x, name, op)?,
                Repr::Flat { features, .. } => {
                    // A batch norm over features is one over a 1×1 image of them.
                    let image = self.reshape(x, &[-1, 1, 1, features as i32])?;
                    let y = self.norm(image, name, op)?;
                    self.reshape(y, &[-1, features as i32])?
                }
            },
            Op::Relu => ops::relu(x, &mut self.scope)?.into(),
            Op::Dropout(rate) if self.train && *rate > 0.0 => self.dropout(x, *rate)?,
            Op::Dropout(_) => x,
            Op::Flatten => self.flat(x, repr)?.0,
        };
        Ok((output, next_repr(layer.op.clone(), repr, &layer.output)?))
    }
}

/// Per output cell of an explicitly padded average pool, the window's cell count over the
/// count of its cells inside the image, as an `[1, H, W, 1]` constant.
fn window_scale(op: &PoolOp, padding: [usize; 4], size: [usize; 2]) -> Tensor<f32> {
    let [top, bottom, left, right] = padding;
    let [height, width] = size;
    let out_h = (height + top + bottom - op.kernel[0]) / op.stride[0] + 1;
    let out_w = (width + left + right - op.kernel[1]) / op.stride[1] + 1;
    let inside = |start: usize, kernel: usize, before: usize, extent: usize| {
        // Window cells [start, start + kernel) in padded coordinates; the image spans
        // [before, before + extent).
        let low = start.max(before);
        let high = (start + kernel).min(before + extent);
        high.saturating_sub(low)
    };
    let mut values = Vec::with_capacity(out_h * out_w);
    for row in 0..out_h {
        for column in 0..out_w {
            let cells = inside(row * op.stride[0], op.kernel[0], top, height)
                * inside(column * op.stride[1], op.kernel[1], left, width);
            let window = op.kernel[0] * op.kernel[1];
            values.push(window as f32 / cells.max(1) as f32);
        }
    }
    Tensor::new(&[1, out_h as u64, out_w as u64, 1])
        .with_values(&values)
        .expect("one value per output cell")
}

impl Net {
    /// Builds the variables and the evaluation pass of `model` on `device` (a TensorFlow device
    /// name) and opens a session on the graph with `options`.
    pub(crate) fn new(
        model: &ResolvedModel,
        device: &str,
        options: &SessionOptions,
    ) -> TfResult<Self> {
        let root = Scope::new_root_scope();
        let scope = root.with_device(device);
        let layouts = layouts(model)?;
        let mut params = Vec::new();
        {
            let mut scope = scope.new_sub_scope("variables");
            for info in model.parameters() {
                let layout = layouts.get(&info.name).copied().unwrap_or(Layout::Same);
                params.push(new_param(&mut scope, info, layout)?);
            }
        }
        let variables: HashMap<String, Output> = params
            .iter()
            .map(|param| (param.info.name.clone(), param.variable.clone()))
            .collect();
        let [channels, height, width] = model.input();
        let images = ops::Placeholder::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![
                None,
                Some(height as i64),
                Some(width as i64),
                Some(channels as i64),
            ])))
            .build(&mut scope.with_op_name("images"))?;
        let labels = ops::Placeholder::new()
            .dtype(DataType::Int32)
            .shape(Shape::from(Some(vec![None])))
            .build(&mut scope.with_op_name("labels"))?;
        let mut next_seed = 0;
        let eval = pass(
            &scope.new_sub_scope("eval"),
            model,
            &variables,
            images.clone().into(),
            false,
            &mut next_seed,
        )?;
        let session = Session::new(options, &scope.graph())?;
        Ok(Net {
            scope,
            session,
            model: model.clone(),
            params,
            variables,
            images,
            labels,
            eval,
            training: None,
            optimizers: Vec::new(),
            grad_cams: HashMap::new(),
            next_seed,
        })
    }

    /// The `labels` placeholder as `[N, classes]` one-hot rows.
    fn one_hot_labels(&self, scope: &mut Scope) -> TfResult<Operation> {
        let depth = ops::constant(self.model.classes() as i32, scope)?;
        let on = ops::constant(1.0f32, scope)?;
        let off = ops::constant(0.0f32, scope)?;
        ops::OneHot::new().build(self.labels.clone(), depth, on, off, scope)
    }

    /// The number of operations in the graph.
    pub(crate) fn operation_count(&self) -> usize {
        self.scope.graph().operation_iter().count()
    }

    /// The training pass, built on first use.
    pub(crate) fn training(&mut self) -> TfResult<&Training> {
        if self.training.is_none() {
            let mut scope = self.scope.new_sub_scope("train");
            let forward = pass(
                &scope,
                &self.model,
                &self.variables,
                self.images.clone().into(),
                true,
                &mut self.next_seed,
            )?;
            let one_hot = self.one_hot_labels(&mut scope)?;
            // SoftmaxCrossEntropyWithLogits has a C++ gradient; the sparse variant has none.
            let cross_entropy = ops::SoftmaxCrossEntropyWithLogits::new().build_instance(
                forward.logits.clone(),
                one_hot.into(),
                &mut scope,
            )?;
            let batch_axis = ops::constant(&[0i32][..], &mut scope)?;
            let loss: Output = ops::mean(cross_entropy.loss(), batch_axis, &mut scope)?.into();
            let trainable: Vec<Output> = self
                .params
                .iter()
                .filter(|param| param.info.role.is_trainable())
                .map(|param| param.variable.clone())
                .collect();
            let gradients = scope.graph_mut().add_gradients(
                Some("train_gradients"),
                std::slice::from_ref(&loss),
                &trainable,
                None,
            )?;
            let gradients = gradients
                .into_iter()
                .zip(&trainable)
                .map(|(gradient, variable)| match gradient {
                    Some(gradient) => Ok(gradient),
                    // A parameter the loss does not depend on gets a zero gradient.
                    None => Ok(ops::zeros_like(variable.clone(), &mut scope)?.into()),
                })
                .collect::<TfResult<Vec<Output>>>()?;
            self.training = Some(Training {
                loss,
                gradients,
                updates: forward.updates,
            });
        }
        self.training
            .as_ref()
            .ok_or_else(|| invalid("training pass missing after building it"))
    }

    /// The update subgraph of `config`, built on first use and kept for the model's life.
    pub(crate) fn optimizer(&mut self, config: &OptimizerConfig) -> TfResult<&OptimizerOps> {
        if let Some(index) = self.optimizers.iter().position(|ops| &ops.config == config) {
            return Ok(&self.optimizers[index]);
        }
        self.training()?;
        let training = self
            .training
            .as_ref()
            .ok_or_else(|| invalid("no training pass"))?;
        let scope = self.scope.new_sub_scope("optimizer");
        let trainable: Vec<&Param> = self
            .params
            .iter()
            .filter(|param| param.info.role.is_trainable())
            .collect();
        let ops = build_optimizer(scope, config, &trainable, training)?;
        self.optimizers.push(ops);
        self.optimizers
            .last()
            .ok_or_else(|| invalid("optimizer missing after building it"))
    }

    /// The gradient of the target classes' logits with respect to layer `index`'s output, built
    /// on first use for each layer.
    pub(crate) fn grad_cam_gradient(&mut self, index: usize) -> TfResult<(Output, Output)> {
        let (activations, _) = self
            .eval
            .outputs
            .get(index)
            .cloned()
            .ok_or_else(|| invalid(format!("no layer {index}")))?;
        if let Some(gradient) = self.grad_cams.get(&index) {
            return Ok((activations, gradient.clone()));
        }
        let mut scope = self.scope.new_sub_scope("grad_cam");
        let one_hot = self.one_hot_labels(&mut scope)?;
        let chosen = ops::mul(self.eval.logits.clone(), one_hot, &mut scope)?;
        let axes = ops::constant(&[0i32, 1][..], &mut scope)?;
        let score: Output = ops::sum(chosen, axes, &mut scope)?.into();
        let prefix = format!("grad_cam_gradients_{index}");
        let gradient = scope
            .graph_mut()
            .add_gradients(
                Some(&prefix),
                &[score],
                std::slice::from_ref(&activations),
                None,
            )?
            .pop()
            .flatten()
            .ok_or_else(|| invalid("no gradient reaches the layer"))?;
        self.grad_cams.insert(index, gradient.clone());
        Ok((activations, gradient))
    }
}

/// A variable for one canonical tensor, with its import assignment and default initialiser.
fn new_param(scope: &mut Scope, info: ParamInfo, layout: Layout) -> TfResult<Param> {
    let shape: Vec<u64> = layout
        .tf_shape(&info.shape)
        .iter()
        .map(|&d| d as u64)
        .collect();
    let tf_shape = Shape::from(Some(
        shape.iter().map(|&d| Some(d as i64)).collect::<Vec<_>>(),
    ));
    let variable: Output = ops::VariableV2::new()
        .dtype(DataType::Float)
        .shape(tf_shape.clone())
        .build(&mut scope.with_op_name(&info.name))?
        .into();
    let feed = ops::Placeholder::new()
        .dtype(DataType::Float)
        .shape(tf_shape)
        .build(&mut scope.with_op_name(&format!("{}/feed", info.name)))?;
    let assign =
        ops::Assign::new()
            .validate_shape(true)
            .build(variable.clone(), feed.clone(), scope)?;
    let initial = keras_initial_value(scope, &info, &shape)?;
    let init = ops::assign(variable.clone(), initial, scope)?;
    Ok(Param {
        info,
        layout,
        variable,
        feed,
        assign,
        init,
    })
}

/// Keras's default initial value: Glorot-uniform kernels, zero biases, and batch norm's ones and
/// zeros. This is TensorFlow's "native" initialisation, used when a run does not share weights.
fn keras_initial_value(scope: &mut Scope, info: &ParamInfo, shape: &[u64]) -> TfResult<Output> {
    let dims: Vec<i32> = shape.iter().map(|&d| d as i32).collect();
    let dims = ops::constant(&dims[..], scope)?;
    let fill = |scope: &mut Scope, value: f32| -> TfResult<Output> {
        let value = ops::constant(value, scope)?;
        Ok(ops::fill(dims.clone(), value, scope)?.into())
    };
    match info.role {
        ParamRole::Weight { .. } => {
            // Glorot: limit √(6 / (fan_in + fan_out)), with the receptive field in both fans.
            let receptive: usize = info.shape.iter().skip(2).product();
            let fan_out = info.shape.first().copied().unwrap_or(1) * receptive;
            let fan_in = info.shape.get(1).copied().unwrap_or(1) * receptive;
            let limit = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt() as f32;
            let uniform = ops::RandomUniform::new()
                .dtype(DataType::Float)
                .build(dims.clone(), scope)?;
            let width = ops::constant(2.0 * limit, scope)?;
            let low = ops::constant(limit, scope)?;
            let scaled = ops::mul(uniform, width, scope)?;
            Ok(ops::sub(scaled, low, scope)?.into())
        }
        ParamRole::Bias { .. } | ParamRole::NormShift | ParamRole::RunningMean => fill(scope, 0.0),
        ParamRole::NormScale | ParamRole::RunningVar => fill(scope, 1.0),
    }
}

/// A forward pass of every layer from `images`.
fn pass(
    scope: &Scope,
    model: &ResolvedModel,
    variables: &HashMap<String, Output>,
    images: Output,
    train: bool,
    next_seed: &mut i64,
) -> TfResult<Pass> {
    let mut forward = Forward {
        scope: scope.new_sub_scope(""),
        variables,
        train,
        updates: Vec::new(),
        next_seed,
    };
    let mut x = images;
    let mut repr = input_repr(model);
    let mut outputs = Vec::with_capacity(model.layers.len());
    for layer in &model.layers {
        (x, repr) = forward.layer(layer, x, repr)?;
        outputs.push((x.clone(), repr));
    }
    let (logits, _) = forward.canonical_flat(x, repr)?;
    Ok(Pass {
        outputs,
        logits,
        updates: forward.updates,
    })
}

/// A zero-initialised optimizer slot of `shape`; its initialiser joins `resets`.
fn slot(
    scope: &mut Scope,
    name: &str,
    shape: &[u64],
    resets: &mut Vec<Operation>,
) -> TfResult<Output> {
    let tf_shape = Shape::from(Some(
        shape.iter().map(|&d| Some(d as i64)).collect::<Vec<_>>(),
    ));
    let variable: Output = ops::VariableV2::new()
        .dtype(DataType::Float)
        .shape(tf_shape)
        .build(&mut scope.with_op_name(name))?
        .into();
    let dims: Vec<i32> = shape.iter().map(|&d| d as i32).collect();
    let dims = ops::constant(&dims[..], scope)?;
    let zero = ops::constant(0.0f32, scope)?;
    let zeros = ops::fill(dims, zero, scope)?;
    resets.push(ops::assign(variable.clone(), zeros, scope)?);
    Ok(variable)
}

/// The update subgraph of one optimizer configuration, following `torch.optim` (and Keras's Adam
/// for [`AdamFormulation::Keras`](AdamFormulation::Keras)).
///
/// Every assignment to a parameter waits for all gradients (TensorFlow 1's `GATE_GRAPH`), so no
/// gradient ever reads a parameter that this step has already changed.
fn build_optimizer(
    mut scope: Scope,
    config: &OptimizerConfig,
    trainable: &[&Param],
    training: &Training,
) -> TfResult<OptimizerOps> {
    let gradient_ops: Vec<Operation> = training
        .gradients
        .iter()
        .map(|gradient| gradient.operation.clone())
        .collect();
    let mut gated = scope.with_control_dependencies(&gradient_ops);
    let mut resets = Vec::new();
    let mut assigns = Vec::new();
    let lr = config.lr as f32;
    match config.kind {
        OptimizerKind::Sgd { momentum } => {
            let lr = ops::constant(lr, &mut scope)?;
            let momentum_value = ops::constant(momentum as f32, &mut scope)?;
            for (param, gradient) in trainable.iter().zip(&training.gradients) {
                let direction: Output = if momentum == 0.0 {
                    gradient.clone()
                } else {
                    // PyTorch's buffer starts as the first gradient, which b = μ·0 + g gives.
                    let shape = shape_of(param);
                    let buffer = slot(
                        &mut scope,
                        &format!("{}/momentum", param.info.name),
                        &shape,
                        &mut resets,
                    )?;
                    let decayed = ops::mul(buffer.clone(), momentum_value.clone(), &mut gated)?;
                    let new_buffer: Output =
                        ops::add(decayed, gradient.clone(), &mut gated)?.into();
                    assigns.push(ops::assign(buffer, new_buffer.clone(), &mut gated)?);
                    new_buffer
                };
                let step = ops::mul(direction, lr.clone(), &mut gated)?;
                let updated = ops::sub(param.variable.clone(), step, &mut gated)?;
                assigns.push(ops::assign(param.variable.clone(), updated, &mut gated)?);
            }
        }
        OptimizerKind::Adam {
            beta1,
            beta2,
            epsilon,
            formulation,
        } => {
            let steps = slot(&mut scope, "adam/steps", &[], &mut resets)?;
            let one = ops::constant(1.0f32, &mut scope)?;
            let t: Output = ops::add(steps.clone(), one.clone(), &mut gated)?.into();
            assigns.push(ops::assign(steps, t.clone(), &mut gated)?);
            let b1 = ops::constant(beta1 as f32, &mut scope)?;
            let b2 = ops::constant(beta2 as f32, &mut scope)?;
            let one_minus_b1 = ops::constant((1.0 - beta1) as f32, &mut scope)?;
            let one_minus_b2 = ops::constant((1.0 - beta2) as f32, &mut scope)?;
            let eps = ops::constant(epsilon as f32, &mut scope)?;
            let lr = ops::constant(lr, &mut scope)?;
            let b1_t = ops::pow(b1.clone(), t.clone(), &mut gated)?;
            let b2_t = ops::pow(b2.clone(), t, &mut gated)?;
            let correction1 = ops::sub(one.clone(), b1_t, &mut gated)?;
            let correction2 = ops::sub(one, b2_t, &mut gated)?;
            let root_correction2: Output = ops::sqrt(correction2, &mut gated)?.into();
            let step_size: Output = match formulation {
                AdamFormulation::Pytorch => ops::div(lr, correction1, &mut gated)?.into(),
                AdamFormulation::Keras => {
                    let scaled = ops::mul(lr, root_correction2.clone(), &mut gated)?;
                    ops::div(scaled, correction1, &mut gated)?.into()
                }
            };
            for (param, gradient) in trainable.iter().zip(&training.gradients) {
                let shape = shape_of(param);
                let m = slot(
                    &mut scope,
                    &format!("{}/adam_m", param.info.name),
                    &shape,
                    &mut resets,
                )?;
                let v = slot(
                    &mut scope,
                    &format!("{}/adam_v", param.info.name),
                    &shape,
                    &mut resets,
                )?;
                let m_decayed = ops::mul(m.clone(), b1.clone(), &mut gated)?;
                let m_gradient = ops::mul(gradient.clone(), one_minus_b1.clone(), &mut gated)?;
                let m_new: Output = ops::add(m_decayed, m_gradient, &mut gated)?.into();
                let v_decayed = ops::mul(v.clone(), b2.clone(), &mut gated)?;
                let squared = ops::square(gradient.clone(), &mut gated)?;
                let v_gradient = ops::mul(squared, one_minus_b2.clone(), &mut gated)?;
                let v_new: Output = ops::add(v_decayed, v_gradient, &mut gated)?.into();
                assigns.push(ops::assign(m, m_new.clone(), &mut gated)?);
                assigns.push(ops::assign(v, v_new.clone(), &mut gated)?);
                let root = ops::sqrt(v_new, &mut gated)?;
                let denominator = match formulation {
                    // PyTorch: √v̂ + ε, with v̂ = v / (1 − β₂ᵗ).
                    AdamFormulation::Pytorch => {
                        let corrected = ops::div(root, root_correction2.clone(), &mut gated)?;
                        ops::add(corrected, eps.clone(), &mut gated)?
                    }
                    // Keras: ε̂ added to the uncorrected root.
                    AdamFormulation::Keras => ops::add(root, eps.clone(), &mut gated)?,
                };
                let ratio = ops::div(m_new, denominator, &mut gated)?;
                let step = ops::mul(ratio, step_size.clone(), &mut gated)?;
                let updated = ops::sub(param.variable.clone(), step, &mut gated)?;
                assigns.push(ops::assign(param.variable.clone(), updated, &mut gated)?);
            }
        }
    }
    let mut step_scope = scope
        .with_control_dependencies(&assigns)
        .with_control_dependencies(&training.updates);
    let step = ops::no_op(&mut step_scope)?;
    let mut reset_scope = scope.with_control_dependencies(&resets);
    let reset = ops::no_op(&mut reset_scope)?;
    Ok(OptimizerOps {
        config: *config,
        step,
        reset,
    })
}

fn shape_of(param: &Param) -> Vec<u64> {
    param
        .layout
        .tf_shape(&param.info.shape)
        .iter()
        .map(|&d| d as u64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 28 → 14 with a 3×3 stride-2 kernel: TensorFlow pads 0 before and 1 after.
        assert_eq!(same_padding(28, 3, 2), (0, 1));
        assert_eq!(same_padding(12, 3, 1), (1, 1));
        assert_eq!(same_padding(12, 2, 1), (0, 1));
        assert_eq!(same_padding(5, 1, 2), (0, 0));
    }

    #[test]
    fn paddings_map_to_valid_same_or_explicit() {
        assert_eq!(
            tf_padding([0; 4], [3, 3], [1, 1], [12, 12]),
            TfPadding::Valid
        );
        assert_eq!(
            tf_padding([1, 1, 1, 1], [3, 3], [1, 1], [12, 12]),
            TfPadding::Same
        );
        assert_eq!(
            tf_padding([1, 0, 1, 0], [3, 3], [1, 1], [12, 12]),
            TfPadding::Explicit([1, 0, 1, 0])
        );
        // PyTorch's symmetric padding of a stride-2 conv is not TensorFlow's SAME.
        assert_eq!(
            tf_padding([1, 1, 1, 1], [3, 3], [2, 2], [28, 28]),
            TfPadding::Explicit([1, 1, 1, 1])
        );
    }
}

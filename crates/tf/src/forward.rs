//! Each layer as TensorFlow graph operations, in NHWC: what one forward pass
//! ([`crate::net::pass`]) adds to the graph.
//!
//! Flat activations remember whether their features are in NHWC's H,W,C order
//! ([`FlatOrder`]): the layers that read them store their parameters permuted
//! ([`Layout`](crate::convert::Layout)) instead of the graph transposing activations back to the
//! canonical order. Padding that equals TensorFlow's `SAME` is passed as `SAME`; any other
//! becomes an explicit `Pad` before a `VALID` op.

use std::collections::HashMap;

use parallax_core::VarianceEstimator;
use parallax_core::spec::{
    BlockOp, ConvNorm, ConvOp, FreeOp, NormOp, Op, ParamInfo, ParamOp, PoolOp, ResolvedLayer,
    ResolvedModel, Shape as SpecShape, same_padding,
};
use tensorflow::{Code, DataType, Operation, Output, Scope, Status, Tensor, ops};

/// The C,H,W shape of an image whose NHWC flattening gives a flat vector's features, when that
/// order differs from the canonical one (one channel, or one pixel, flattens the same both ways).
pub(crate) type FlatOrder = Option<[usize; 3]>;

/// The permuted order of an image's flattened features, or `None` where it is the canonical one.
pub(crate) fn flat_order(channels: usize, height: usize, width: usize) -> FlatOrder {
    (channels > 1 && height * width > 1).then_some([channels, height, width])
}

/// TensorFlow's own result: the adapter maps its errors to core's once, at the trait boundary.
pub(crate) type TfResult<T> = std::result::Result<T, Status>;

/// A graph-building error of the adapter's own making.
pub(crate) fn invalid(message: impl AsRef<str>) -> Status {
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

/// The representation of the model's input.
pub(crate) fn input_repr(model: &ResolvedModel) -> Repr {
    let [channels, height, width] = model.input();
    Repr::Image {
        channels,
        height,
        width,
    }
}

/// The representation after a layer, from the one before it and the layer's output shape.
pub(crate) fn next_repr(op: &Op, input: Repr, output: &SpecShape) -> TfResult<Repr> {
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
        Op::Param(ParamOp::Dense(dense)) => Repr::Flat {
            features: dense.out_features,
            order: None,
        },
        Op::Param(ParamOp::Conv2d(_))
        | Op::Param(ParamOp::Block(_))
        | Op::Free(FreeOp::MaxPool2d(_))
        | Op::Free(FreeOp::AvgPool2d(_)) => image(output)?,
        Op::Free(FreeOp::GlobalAvgPool) => Repr::Flat {
            features: output.len(),
            order: None,
        },
        Op::Param(ParamOp::BatchNorm(_))
        | Op::Free(FreeOp::Relu)
        | Op::Free(FreeOp::Dropout(_)) => input,
        Op::Free(FreeOp::Flatten) => match input {
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
    if padding == same_padding(size, kernel, stride) {
        TfPadding::Same
    } else {
        TfPadding::Explicit(padding)
    }
}

/// Builds one forward pass into the graph.
pub(crate) struct Forward<'a> {
    pub(crate) scope: Scope,
    pub(crate) variables: &'a HashMap<String, Output>,
    pub(crate) train: bool,
    pub(crate) updates: Vec<Operation>,
    pub(crate) next_seed: &'a mut i64,
    /// The type convolutions and dense layers compute in when it is not f32 (bf16): their
    /// inputs, weights and biases are cast to it, and their outputs back to f32, so that the
    /// variables (the master weights) and every other layer stay f32.
    pub(crate) compute: Option<DataType>,
    /// The output type of the first convolution or dense product the pass built, as the graph
    /// states it.
    pub(crate) computed: Option<DataType>,
}

impl Forward<'_> {
    fn variable(&self, param: &ParamInfo) -> TfResult<Output> {
        self.variables
            .get(&param.name)
            .cloned()
            .ok_or_else(|| invalid(format!("no variable for tensor {:?}", param.name)))
    }

    /// `x` in the compute type, when the pass has one.
    fn to_compute(&mut self, x: Output) -> TfResult<Output> {
        match self.compute {
            Some(compute) => Ok(ops::Cast::new()
                .DstT(compute)
                .build(x, &mut self.scope)?
                .into()),
            None => Ok(x),
        }
    }

    /// `y`, the output of a convolution or dense layer, back in f32; the first one's type is
    /// recorded as what the pass computed in.
    fn from_compute(&mut self, y: Output) -> TfResult<Output> {
        if self.computed.is_none() {
            self.computed = Some(y.operation.output_type(y.index as usize));
        }
        match self.compute {
            Some(_) => Ok(ops::Cast::new()
                .DstT(DataType::Float)
                .build(y, &mut self.scope)?
                .into()),
            None => Ok(y),
        }
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
    pub(crate) fn canonical_flat(&mut self, x: Output, repr: Repr) -> TfResult<(Output, usize)> {
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

    fn conv(&mut self, x: Output, size: [usize; 3], op: &ConvOp) -> TfResult<(Output, [usize; 3])> {
        let [_, height, width] = size;
        let weight = self.variable(&op.weight)?;
        let weight = self.to_compute(weight)?;
        let x = self.to_compute(x)?;
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
        if let Some(bias) = &op.bias {
            let bias = self.variable(bias)?;
            let bias = self.to_compute(bias)?;
            y = ops::BiasAdd::new()
                .data_format("NHWC")
                .build(y, bias, &mut self.scope)?
                .into();
        }
        let y = self.from_compute(y)?;
        let [top, bottom, left, right] = op.padding;
        let out_h = (height + top + bottom - op.kernel[0]) / op.stride[0] + 1;
        let out_w = (width + left + right - op.kernel[1]) / op.stride[1] + 1;
        Ok((y, [op.out_channels, out_h, out_w]))
    }

    /// Fused batch norm of an NHWC image. In training it normalises with the batch statistics
    /// and folds them into the running ones with PyTorch's momentum (TensorFlow's
    /// `exponential_avg_factor`), the variance with Bessel's correction, as PyTorch does, or
    /// without it, as Keras does, when the op asks for the biased estimator.
    fn norm(&mut self, x: Output, op: &NormOp) -> TfResult<Output> {
        let input = x.clone();
        let scale = self.variable(&op.weight)?;
        let offset = self.variable(&op.bias)?;
        let mean = self.variable(&op.running_mean)?;
        let variance = self.variable(&op.running_var)?;
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
            let running_variance = match op.running_variance {
                VarianceEstimator::Unbiased => norm.batch_variance(),
                VarianceEstimator::Biased => {
                    // TensorFlow left r' = (1 − m)·r + m·s²·n/(n − 1); Keras's biased update
                    // (1 − m)·r + m·s² is (1 − m)·r/n + r'·(n − 1)/n, with n the values per
                    // channel of this batch.
                    let size = ops::size(input, &mut self.scope)?;
                    let count = ops::Cast::new()
                        .DstT(DataType::Float)
                        .build(size, &mut self.scope)?;
                    let features = self.scalar(op.features as f32)?;
                    let n = ops::div(count, features, &mut self.scope)?;
                    let keep_weight = self.scalar((1.0 - op.momentum) as f32)?;
                    let keep = ops::div(keep_weight, n.clone(), &mut self.scope)?;
                    let one = self.scalar(1.0)?;
                    let less_one = ops::sub(n.clone(), one, &mut self.scope)?;
                    let fresh = ops::div(less_one, n, &mut self.scope)?;
                    let kept = ops::mul(variance.clone(), keep, &mut self.scope)?;
                    let updated = ops::mul(norm.batch_variance(), fresh, &mut self.scope)?;
                    ops::add(kept, updated, &mut self.scope)?.into()
                }
            };
            let update_variance = ops::assign(variance, running_variance, &mut self.scope)?;
            self.updates.extend([update_mean, update_variance]);
        }
        Ok(norm.y())
    }

    /// A convolution and the batch norm after it.
    fn conv_norm(
        &mut self,
        x: Output,
        size: [usize; 3],
        op: &ConvNorm,
    ) -> TfResult<(Output, [usize; 3])> {
        let (y, size) = self.conv(x, size, &op.conv)?;
        Ok((self.norm(y, &op.norm)?, size))
    }

    fn block(
        &mut self,
        x: Output,
        size: [usize; 3],
        op: &BlockOp,
    ) -> TfResult<(Output, [usize; 3])> {
        let last = op.main.len().saturating_sub(1);
        let (mut y, mut y_size) = (x.clone(), size);
        for (index, step) in op.main.iter().enumerate() {
            (y, y_size) = self.conv_norm(y, y_size, step)?;
            if index < last {
                y = ops::relu(y, &mut self.scope)?.into();
            }
        }
        let shortcut = match &op.shortcut {
            Some(step) => self.conv_norm(x, size, step)?.0,
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
    pub(crate) fn layer(
        &mut self,
        layer: &ResolvedLayer,
        x: Output,
        repr: Repr,
    ) -> TfResult<(Output, Repr)> {
        let output = match &layer.op {
            Op::Param(ParamOp::Dense(op)) => {
                let (x, _, _) = self.flat(x, repr)?;
                let x = self.to_compute(x)?;
                let weight = self.variable(&op.weight)?;
                let weight = self.to_compute(weight)?;
                let mut y: Output = ops::mat_mul(x, weight, &mut self.scope)?.into();
                if let Some(bias) = &op.bias {
                    let bias = self.variable(bias)?;
                    let bias = self.to_compute(bias)?;
                    y = ops::bias_add(y, bias, &mut self.scope)?.into();
                }
                self.from_compute(y)?
            }
            Op::Param(ParamOp::Conv2d(op)) => {
                let (x, size) = self.image(x, repr)?;
                self.conv(x, size, op)?.0
            }
            Op::Param(ParamOp::Block(op)) => {
                let (x, size) = self.image(x, repr)?;
                self.block(x, size, op)?.0
            }
            Op::Free(FreeOp::MaxPool2d(op)) => {
                let (x, size) = self.image(x, repr)?;
                self.max_pool(x, size, op)?
            }
            Op::Free(FreeOp::AvgPool2d(op)) => {
                let (x, size) = self.image(x, repr)?;
                self.avg_pool(x, size, op)?
            }
            Op::Free(FreeOp::GlobalAvgPool) => match repr {
                Repr::Image { .. } => {
                    let axes = self.ints(&[1, 2])?;
                    ops::mean(x, axes, &mut self.scope)?.into()
                }
                flat => self.canonical_flat(x, flat)?.0,
            },
            Op::Param(ParamOp::BatchNorm(op)) => match repr {
                Repr::Image { .. } => self.norm(x, op)?,
                Repr::Flat { features, .. } => {
                    // A batch norm over features is one over a 1×1 image of them.
                    let image = self.reshape(x, &[-1, 1, 1, features as i32])?;
                    let y = self.norm(image, op)?;
                    self.reshape(y, &[-1, features as i32])?
                }
            },
            Op::Free(FreeOp::Relu) => ops::relu(x, &mut self.scope)?.into(),
            Op::Free(FreeOp::Dropout(rate)) if self.train && *rate > 0.0 => {
                self.dropout(x, *rate)?
            }
            Op::Free(FreeOp::Dropout(_)) => x,
            Op::Free(FreeOp::Flatten) => self.flat(x, repr)?.0,
        };
        Ok((output, next_repr(&layer.op, repr, &layer.output)?))
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

#[cfg(test)]
mod tests {
    use super::*;

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

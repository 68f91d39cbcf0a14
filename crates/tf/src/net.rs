//! The spec as one TensorFlow graph: a variable per canonical tensor, the evaluation pass, and,
//! built on first use, the training pass with its gradients, one update subgraph per optimizer
//! configuration ([`crate::optim`]), and the GradCAM gradients of each layer asked for.
//!
//! Everything is built from the resolved spec once; running a step only feeds a batch and
//! fetches what it needs, so the graph does not grow from step to step.

use std::collections::HashMap;

use parallax_core::OptimizerConfig;
use parallax_core::spec::{ParamInfo, ParamRole, ResolvedModel};
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionOptions, Shape, ops};

use crate::convert::{Layout, Param, layouts};
use crate::forward::{Forward, Repr, TfResult, input_repr, invalid};
use crate::optim::{OptimizerOps, Training, build_optimizer};

/// A forward pass: every layer's output, the logits, and (in training) the batch-norm updates.
pub(crate) struct Pass {
    /// Each layer's output and how it is held.
    pub(crate) outputs: Vec<(Output, Repr)>,
    /// `[N, classes]` in the canonical order.
    pub(crate) logits: Output,
    /// Running-statistics assignments (training passes only).
    pub(crate) updates: Vec<Operation>,
    /// The type the first convolution or dense layer computed in, as the graph states it.
    pub(crate) computed: Option<DataType>,
}

/// One layer on its own, for timing it: a placeholder for its input, its output in training
/// mode, and the gradients of its output's sum (an upstream gradient of ones) to its trainable
/// variables and, when asked, its input.
#[derive(Clone)]
pub(crate) struct LayerProbe {
    /// `f32` input, held as the layer before it holds its output.
    pub(crate) input: Operation,
    pub(crate) output: Output,
    /// Whether the output is the input itself (a flatten of what is already flat).
    pub(crate) output_is_input: bool,
    /// Empty where no gradient is asked: a layer without parameters that nothing before it
    /// trains through.
    pub(crate) gradients: Vec<Output>,
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
    /// Each layer's probe, built on first use.
    layer_probes: HashMap<(usize, bool), LayerProbe>,
    /// Op-level seeds for dropout masks, so that runs are reproducible.
    next_seed: i64,
    /// The type convolutions and dense layers compute in when it is not f32 (bf16).
    compute: Option<DataType>,
}

impl Net {
    /// Builds the variables and the evaluation pass of `model` on `device` (a TensorFlow device
    /// name) and opens a session on the graph with `options`.
    pub(crate) fn new(
        model: &ResolvedModel,
        device: &str,
        options: &SessionOptions,
        seed: i64,
        compute: Option<DataType>,
    ) -> TfResult<Self> {
        let root = Scope::new_root_scope();
        let scope = root.with_device(device);
        let layouts = layouts(model)?;
        let mut params = Vec::new();
        {
            let mut scope = scope.new_sub_scope("variables");
            for (index, info) in model.parameters().into_iter().enumerate() {
                let layout = layouts.get(&info.name).copied().unwrap_or(Layout::Same);
                // An op-level seed pair per variable: the run's seed and the variable's index.
                let seeds = (seed, index as i64 + 1);
                params.push(new_param(&mut scope, info, layout, seeds)?);
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
            compute,
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
            layer_probes: HashMap::new(),
            next_seed,
            compute,
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
                self.compute,
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

impl Net {
    /// Layer `index` on its own ([`LayerProbe`]), built on first use; `upstream` asks for its
    /// input's gradient as well (a layer with parameters comes before it).
    pub(crate) fn layer_probe(&mut self, index: usize, upstream: bool) -> TfResult<&LayerProbe> {
        if !self.layer_probes.contains_key(&(index, upstream)) {
            let layer = self
                .model
                .layers
                .get(index)
                .ok_or_else(|| invalid(format!("no layer {index}")))?;
            let repr = match index {
                0 => input_repr(&self.model),
                _ => self.eval.outputs[index - 1].1,
            };
            let mut scope = self.scope.new_sub_scope(&format!("layer_probe_{index}"));
            let input = ops::Placeholder::new()
                .dtype(DataType::Float)
                .build(&mut scope)?;
            let mut forward = Forward {
                scope: scope.new_sub_scope(""),
                variables: &self.variables,
                train: true,
                updates: Vec::new(),
                next_seed: &mut self.next_seed,
                compute: self.compute,
                computed: None,
            };
            let (output, _) = forward.layer(layer, input.clone().into(), repr)?;
            let mut targets: Vec<Output> = layer
                .op
                .params()
                .into_iter()
                .filter(|param| param.role.is_trainable())
                .filter_map(|param| self.variables.get(&param.name).cloned())
                .collect();
            if upstream {
                targets.push(input.clone().into());
            }
            let gradients = if targets.is_empty() {
                Vec::new()
            } else {
                // The gradient of the output's sum, whose upstream gradient is ones: the crate's
                // `add_gradients` frees the `dx` array it is given before TensorFlow reads it
                // (tensorflow 0.21), so ones cannot be passed as `dx`.
                let all = ops::constant(&[-1i32][..], &mut scope)?;
                let values = ops::reshape(output.clone(), all, &mut scope)?;
                let first = ops::constant(&[0i32][..], &mut scope)?;
                let sum: Output = ops::sum(values, first, &mut scope)?.into();
                scope
                    .graph_mut()
                    .add_gradients(
                        Some(&format!("layer_probe_gradients_{index}_{upstream}")),
                        &[sum],
                        &targets,
                        None,
                    )?
                    .into_iter()
                    .flatten()
                    .collect()
            };
            let output_is_input = output.operation.name()? == input.name()?;
            self.layer_probes.insert(
                (index, upstream),
                LayerProbe {
                    input,
                    output,
                    output_is_input,
                    gradients,
                },
            );
        }
        self.layer_probes
            .get(&(index, upstream))
            .ok_or_else(|| invalid("layer probe missing after building it"))
    }
}

/// A variable for one canonical tensor, with its import assignment and default initialiser.
fn new_param(
    scope: &mut Scope,
    info: ParamInfo,
    layout: Layout,
    seeds: (i64, i64),
) -> TfResult<Param> {
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
    let initial = keras_initial_value(scope, &info, &shape, seeds)?;
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
///
/// `seeds` are the draw's op-level seed pair, so that the same run seed draws the same weights.
fn keras_initial_value(
    scope: &mut Scope,
    info: &ParamInfo,
    shape: &[u64],
    seeds: (i64, i64),
) -> TfResult<Output> {
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
                .seed(seeds.0)
                .seed2(seeds.1)
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
    compute: Option<DataType>,
) -> TfResult<Pass> {
    let mut forward = Forward {
        scope: scope.new_sub_scope(""),
        variables,
        train,
        updates: Vec::new(),
        next_seed,
        compute,
        computed: None,
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
        computed: forward.computed,
    })
}

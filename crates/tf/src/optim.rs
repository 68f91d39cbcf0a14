//! The optimizers as TensorFlow graph operations: one update subgraph per configuration,
//! following `torch.optim` (and Keras's Adam for its formulation), with slots for their state
//! and an operation that resets it.

use parallax_core::optim::AdamFormulation;
use parallax_core::{OptimizerConfig, OptimizerKind};
use tensorflow::{DataType, Operation, Output, Scope, Shape, ops};

use crate::convert::Param;
use crate::forward::TfResult;

/// The training pass: loss, gradients and the operations a step must run.
pub(crate) struct Training {
    /// The batch's mean cross-entropy.
    pub(crate) loss: Output,
    /// The gradient of the loss for each trainable parameter, in canonical order.
    pub(crate) gradients: Vec<Output>,
    /// Running-statistics assignments of the pass.
    pub(crate) updates: Vec<Operation>,
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
pub(crate) fn build_optimizer(
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

//! The conformance suite: one set of checks that every backend must pass, written once.
//!
//! Each adapter runs it from its tests with [`conformance_tests!`](crate::conformance_tests),
//! which expands to one `#[test]` per check. The checks assert through panics, as tests do;
//! they need nothing but the backend, and they finish in seconds on a CPU. The parity checks
//! ([`parity`]) hold every engine to an f64 referee within a multiple of f32's own noise, and
//! the acceptance checks ([`acceptance_tests!`](crate::acceptance_tests)) train on the full Fashion-MNIST
//! through the run protocol.
//!
//! The checks are in `checks.rs`, the acceptance runs in `acceptance.rs`, parity between
//! engines in `parity.rs`, and training trajectories in `trajectory.rs`.

use std::path::{Path, PathBuf};

/// Expands to one `#[test]` per conformance check, each calling `$make()` for a fresh backend.
///
/// ```text
/// parallax_core::conformance_tests!(|| BurnBackend::new(BurnEngine::Flex, Device::Cpu, CpuSettings::new(2)).unwrap());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            reports_itself,
            predicts_logits_of_the_right_shape,
            weights_round_trip_for_every_layer_kind,
            rejects_weights_that_do_not_fit,
            one_set_of_weights_runs_in_both_resnet_forms,
            rejects_inputs_of_the_wrong_shape,
            rejects_labels_out_of_range,
            evaluation_is_deterministic_and_leaves_weights_alone,
            sgd_step_matches_the_analytic_gradient,
            batch_norm_updates_running_statistics_in_training_only,
            the_engines_own_initialisation_follows_the_seed,
            dropout_is_active_in_training_only,
            training_fits_a_separable_problem,
            an_epoch_equals_its_steps,
            the_first_adam_step_moves_each_parameter_by_the_learning_rate,
            both_adam_formulations_train,
            the_adam_formulations_put_epsilon_where_their_frameworks_do,
            grad_cam_returns_activations_and_exact_gradients,
            grad_cam_refuses_bad_arguments,
            imported_weights_give_their_producers_logits,
            grad_cam_matches_pytorch_grad_cam,
            the_matmul_probe_multiplies,
            a_profiled_step_is_the_same_step,
            bf16_computes_in_bf16_within_its_bound,
            bf16_runs_every_layer_kind,
            compiling_keeps_the_step,
            layer_times_cover_every_layer_and_change_nothing,
            a_layer_profile_covers_every_layer_and_changes_nothing,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let backend = ($make)();
                $crate::conformance::$check(&backend);
            }
        )*
    };
}

mod acceptance;
mod checks;
pub mod handoff;
pub mod parity;
pub mod trajectory;

pub use acceptance::*;
pub use checks::*;

/// The repository's root, where `fixtures/` lives.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

//! One module per `cargo xtask` subcommand, each exposing `run(args) -> anyhow::Result<()>`.
//!
//! Commands do not import each other: what two of them share lives beside this module
//! (`cargo`, `provision`, `report`, `workers`).

pub mod bench;
pub mod compare;
pub mod data;
pub mod env;
pub mod fixtures;
pub mod gradcam;
pub mod parity;
pub mod report;
pub mod setup;
pub mod test;

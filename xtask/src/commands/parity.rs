//! `cargo xtask parity`: the parity checks (every CPU engine and Python framework against the
//! f64 referee, within a multiple of f32's own noise) under one instruction-set cap, with the
//! evidence that the cap took effect (the work is `crate::parity`'s).

use crate::parity::{AVX2, Cap};
use parallax_provision as provision;

/// Flags of `cargo xtask parity`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The instruction sets the engines may use: `none` (what this CPU has), `avx2` (as on a
    /// Haswell-class host), `avx512-core` (AVX-512 without its newer extensions, as on a
    /// Skylake-class server) or `aten-default` (ATen's scalar kernels).
    #[arg(long, value_enum, default_value_t = CapName::None)]
    pub cap: CapName,
}

/// The caps `cargo xtask parity --cap` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CapName {
    /// No cap: what this CPU has.
    None,
    /// AVX2, as on a Haswell-class host.
    Avx2,
    /// AVX-512 without its newer extensions, as on a Skylake-class server.
    Avx512Core,
    /// ATen's scalar kernels.
    AtenDefault,
}

impl CapName {
    /// The cap's configuration.
    pub fn cap(self) -> Cap {
        match self {
            CapName::None => Cap {
                name: "none",
                imitates: "this host",
                env: &[],
                aten: None,
                onednn_isa: None,
                mkl: None,
            },
            CapName::Avx2 => AVX2,
            CapName::Avx512Core => Cap {
                name: "avx512-core",
                imitates: "a Skylake-class server",
                env: &[
                    ("ATEN_CPU_CAPABILITY", "avx512"),
                    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE"),
                    ("MKL_ENABLE_INSTRUCTIONS", "AVX512"),
                    ("TF_ENABLE_ONEDNN_OPTS", "0"),
                ],
                aten: Some("AVX512"),
                onednn_isa: Some("Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions"),
                mkl: Some("(Intel(R) AVX-512) enabled processors"),
            },
            CapName::AtenDefault => Cap {
                name: "aten-default",
                imitates: "ATen's scalar kernels, which no current host runs",
                env: &[("ATEN_CPU_CAPABILITY", "default")],
                aten: Some("DEFAULT"),
                onednn_isa: None,
                mkl: None,
            },
        }
    }
}

/// Runs the parity checks under `args.cap`, provisioning the native libraries and the Python
/// frameworks first.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut native = provision::ensure(false)?;
    provision::ensure_frameworks(&mut native)?;
    crate::parity::under_cap(
        &args.cap.cap(),
        &native,
        &crate::cargo::test_features(),
        &crate::parity::out_dir(),
    )
}

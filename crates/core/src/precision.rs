//! What a run computes in: its precision (f32, or bf16 compute with f32 master weights) and
//! whether its framework compiles the training step. These are the two run axes of a
//! comparison beside the model ([`Execution`]), not framework defaults: `--defaults native`
//! leaves them alone, and no attribution switches them.
//!
//! Also here: which bf16 units this CPU has ([`Bf16Units`]). Without AVX-512 BF16 or AMX an
//! engine emulates bf16 arithmetic in f32 and rounds, so a bf16 run's speed there says nothing
//! about bf16 hardware; its record says so and the report warns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_with::{DeserializeFromStr, SerializeDisplay};

use crate::{Error, Result};

/// The floating-point format a run computes its layers in. Loss and metrics stay f32 in both.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    SerializeDisplay,
    DeserializeFromStr,
)]
pub enum Precision {
    /// Everything in f32: what every engine does by default.
    #[default]
    F32,
    /// Layers compute in bfloat16 (8 bits of significand, f32's exponent range) from bf16
    /// copies of f32 master weights, as PyTorch's CPU autocast and Keras's `mixed_bfloat16`
    /// policy do.
    Bf16,
}

impl Precision {
    /// Every precision, in the order reports list them.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// The unit roundoff of the format the layers compute in: half its machine ε, 2⁻²⁴ for
    /// f32 and 2⁻⁸ for bf16 (7 stored significand bits, round to nearest).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            Precision::F32 => (2.0f64).powi(-24),
            Precision::Bf16 => (2.0f64).powi(-8),
        }
    }

    /// Whether this is f32, the default (for `skip_serializing_if`, so that an f32 request's
    /// configuration digest is the one it had before precision was an axis).
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision {other:?}: use f32 or bf16")),
        }
    }
}

/// Whether the framework compiles the training step (XLA, `torch.compile`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    SerializeDisplay,
    DeserializeFromStr,
)]
pub enum Compile {
    /// What each framework does by default on the CPU: no compiler (Keras's
    /// `jit_compile="auto"` resolves to False there).
    #[default]
    Off,
    /// The framework's compiler: XLA for TensorFlow and Keras, `torch.compile` for PyTorch and
    /// Keras on torch.
    On,
}

impl Compile {
    /// Both values, in the order reports list them.
    pub const ALL: [Compile; 2] = [Compile::Off, Compile::On];

    /// Whether this is off, the default (for `skip_serializing_if`).
    pub fn is_off(&self) -> bool {
        *self == Compile::Off
    }
}

impl fmt::Display for Compile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compile::Off => "off",
            Compile::On => "on",
        })
    }
}

impl FromStr for Compile {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "no" => Ok(Compile::Off),
            "on" | "true" | "yes" => Ok(Compile::On),
            other => Err(format!("unknown --compile value {other:?}: use off or on")),
        }
    }
}

/// How a run executes its model: the values of the two run axes. The default is f32,
/// uncompiled: every run before these axes existed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Execution {
    /// The precision the layers compute in.
    pub precision: Precision,
    /// Whether the framework compiles the step.
    pub compile: Compile,
}

impl Execution {
    /// f32, uncompiled.
    pub const DEFAULT: Execution = Execution {
        precision: Precision::F32,
        compile: Compile::Off,
    };

    /// A short name for reports and directories: `f32`, `bf16`, `f32 compiled`,
    /// `bf16 compiled`.
    pub fn label(&self) -> String {
        match self.compile {
            Compile::Off => self.precision.to_string(),
            Compile::On => format!("{} compiled", self.precision),
        }
    }

    /// The adapters' check: `Ok` when the backend can run this execution, by the precisions and
    /// compilation it states, and otherwise [`Error::Unsupported`] naming what it lacks.
    pub fn check(&self, backend: &str, precisions: &[Precision], compiles: bool) -> Result<()> {
        if !precisions.contains(&self.precision) {
            return Err(Error::Unsupported {
                backend: backend.to_string(),
                what: format!("--precision {}", self.precision),
            });
        }
        if self.compile == Compile::On && !compiles {
            return Err(Error::Unsupported {
                backend: backend.to_string(),
                what: "--compile on".to_string(),
            });
        }
        Ok(())
    }
}

/// The environment variable that overrides which bf16 units [`Bf16Units::of_this_cpu`]
/// reports: `none`, `avx512-bf16` or `amx`. The tests set it to simulate a CPU without bf16
/// units (or with them) on any host.
pub const BF16_UNITS_OVERRIDE: &str = "PARALLAX_BF16_UNITS";

/// The CPU's units for bf16 arithmetic, which decide whether a bf16 run's speed means
/// anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, SerializeDisplay, DeserializeFromStr)]
pub enum Bf16Units {
    /// Intel's AMX tiles with bf16 (Sapphire Rapids and later): bf16 matrix products several
    /// times faster than f32.
    Amx,
    /// AVX-512 BF16 (`vdpbf16ps`; AMD Zen 4 and later, Intel Cooper Lake and later): up to
    /// about twice f32's matrix-product rate.
    Avx512Bf16,
    /// Neither: engines emulate bf16 (convert to f32, compute, round), usually slower than f32.
    Emulated,
}

impl Bf16Units {
    /// This CPU's units, or those [`BF16_UNITS_OVERRIDE`] names. An override that names none
    /// of its values is an error that says which it takes.
    pub fn of_this_cpu() -> Result<Bf16Units> {
        Self::unless_overridden(std::env::var(BF16_UNITS_OVERRIDE).ok().as_deref())
    }

    /// The units `overridden` names (the override's value, when set), or else the detected
    /// ones.
    pub fn unless_overridden(overridden: Option<&str>) -> Result<Bf16Units> {
        match overridden {
            Some(text) => text.parse().map_err(|message: String| {
                Error::InvalidArgument(format!("{BF16_UNITS_OVERRIDE}: {message}"))
            }),
            None => Ok(Self::detected()),
        }
    }

    /// What CPUID says, without the override.
    pub fn detected() -> Bf16Units {
        // Rust's detection macro for AMX is unstable, and CPUID alone does not say whether
        // the kernel enables the tile state; Linux lists `amx_bf16` among the CPU's flags only
        // when it does.
        let amx = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|text| {
            text.lines()
                .find(|line| line.starts_with("flags"))
                .is_some_and(|flags| flags.split_whitespace().any(|flag| flag == "amx_bf16"))
        });
        if amx {
            return Bf16Units::Amx;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            return Bf16Units::Avx512Bf16;
        }
        Bf16Units::Emulated
    }

    /// Whether bf16 is emulated here.
    pub fn is_emulated(self) -> bool {
        self == Bf16Units::Emulated
    }
}

impl fmt::Display for Bf16Units {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bf16Units::Amx => "amx",
            Bf16Units::Avx512Bf16 => "avx512-bf16",
            Bf16Units::Emulated => "emulated",
        })
    }
}

impl FromStr for Bf16Units {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "amx" => Ok(Bf16Units::Amx),
            "avx512-bf16" | "avx512bf16" | "avx512_bf16" => Ok(Bf16Units::Avx512Bf16),
            "emulated" | "none" => Ok(Bf16Units::Emulated),
            other => Err(format!(
                "unknown bf16 units {other:?}: use none, avx512-bf16 or amx"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axes_read_and_write_their_flag_values() {
        for precision in Precision::ALL {
            assert_eq!(precision.to_string().parse::<Precision>(), Ok(precision));
        }
        for compile in Compile::ALL {
            assert_eq!(compile.to_string().parse::<Compile>(), Ok(compile));
        }
        assert_eq!("bfloat16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!(
            "f16"
                .parse::<Precision>()
                .unwrap_err()
                .contains("f32 or bf16")
        );
        assert!(
            "maybe"
                .parse::<Compile>()
                .unwrap_err()
                .contains("off or on")
        );
        assert_eq!(Execution::default(), Execution::DEFAULT);
        assert_eq!(
            Execution {
                precision: Precision::Bf16,
                compile: Compile::On
            }
            .label(),
            "bf16 compiled"
        );
    }

    #[test]
    fn a_backend_refuses_what_it_does_not_state() {
        let bf16 = Execution {
            precision: Precision::Bf16,
            ..Execution::DEFAULT
        };
        assert!(bf16.check("x", &Precision::ALL, false).is_ok());
        let refused = bf16.check("x", &[Precision::F32], true).unwrap_err();
        assert_eq!(refused.to_string(), "x does not support --precision bf16");
        let compiled = Execution {
            compile: Compile::On,
            ..Execution::DEFAULT
        };
        assert_eq!(
            compiled
                .check("x", &[Precision::F32], false)
                .unwrap_err()
                .to_string(),
            "x does not support --compile on"
        );
    }

    #[test]
    fn the_unit_roundoffs_are_half_of_each_formats_epsilon() {
        assert_eq!(
            Precision::F32.unit_roundoff(),
            f64::from(f32::EPSILON) / 2.0
        );
        assert_eq!(Precision::Bf16.unit_roundoff(), 1.0 / 256.0);
    }

    #[test]
    fn bf16_units_are_named_as_the_override_takes_them() {
        for units in [Bf16Units::Amx, Bf16Units::Avx512Bf16, Bf16Units::Emulated] {
            assert_eq!(units.to_string().parse::<Bf16Units>(), Ok(units));
        }
        assert_eq!("none".parse::<Bf16Units>(), Ok(Bf16Units::Emulated));
        assert!(
            "sse"
                .parse::<Bf16Units>()
                .unwrap_err()
                .contains("avx512-bf16")
        );
        assert_eq!(
            Bf16Units::unless_overridden(Some("none")).unwrap(),
            Bf16Units::Emulated
        );
        assert_eq!(
            Bf16Units::unless_overridden(None).unwrap(),
            Bf16Units::detected()
        );
        let wrong = Bf16Units::unless_overridden(Some("sse"))
            .unwrap_err()
            .to_string();
        assert!(
            wrong.starts_with("PARALLAX_BF16_UNITS: unknown bf16 units"),
            "{wrong}"
        );
    }
}

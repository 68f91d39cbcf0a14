//! The parity checks under one instruction-set cap, with the evidence that the cap took effect:
//! shared by `cargo xtask parity` and `cargo xtask test`, which reruns the checks under
//! [`AVX2`]. The checks are `crates/parity`'s and the Python backends' panels ([`PANELS`]).
//!
//! The engines pick their kernels once, when they load, so each cap runs each panel's test
//! binary in a process of its own, with the cap's variables and with oneDNN's and MKL's verbose
//! output on:
//!
//! - ATen (libtorch's own kernels) reads `ATEN_CPU_CAPABILITY`; each binary prints the
//!   capability libtorch reports (`parallax_tch::aten_cpu_capability`; Python's torch runs on
//!   the same library);
//! - oneDNN, one copy inside libtorch and one inside TensorFlow (the C library, or Python's
//!   TensorFlow under Keras), reads `ONEDNN_MAX_CPU_ISA`
//!   (and ignores a value it does not know, silently); with `ONEDNN_VERBOSE=1` each copy prints
//!   its `isa:` line and names the kernel of every primitive it runs;
//! - MKL, inside libtorch, runs its matrix products and reads `MKL_ENABLE_INSTRUCTIONS`; with
//!   `MKL_VERBOSE=1` it prints the instructions it enabled;
//! - TensorFlow routes convolutions and batch norm to oneDNN only on CPUs with AVX-512 VNNI,
//!   AVX-512 BF16 or AMX; a capped configuration that imitates an older host sets
//!   `TF_ENABLE_ONEDNN_OPTS=0`, as TensorFlow's own default does there. Its other kernels
//!   (Eigen) are compiled for AVX and have no switch;
//! - burn's Flex has no switch at run time (see docs/conformance.md).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};

use crate::cargo::cargo;
use parallax_provision::NativeEnv;

/// One configuration of instruction sets, and what shows that it took effect.
#[derive(Clone, Copy, Debug)]
pub struct Cap {
    /// Its name in `--cap`.
    pub name: &'static str,
    /// The host it imitates.
    pub imitates: &'static str,
    /// The variables that cap the engines.
    pub env: &'static [(&'static str, &'static str)],
    /// The capability libtorch must report, where the cap sets it.
    pub aten: Option<&'static str>,
    /// What each oneDNN `isa:` line must start with, where the cap sets it.
    pub onednn_isa: Option<&'static str>,
    /// What MKL's verbose header must contain, where the cap sets it.
    pub mkl: Option<&'static str>,
}

/// The AVX2 cap, which `cargo xtask test` runs the parity checks under once more.
pub const AVX2: Cap = Cap {
    name: "avx2",
    imitates: "a Haswell-class host",
    env: &[
        ("ATEN_CPU_CAPABILITY", "avx2"),
        ("ONEDNN_MAX_CPU_ISA", "AVX2"),
        ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
        ("TF_ENABLE_ONEDNN_OPTS", "0"),
    ],
    aten: Some("AVX2"),
    onednn_isa: Some("Intel AVX2"),
    mkl: Some("(Intel(R) AVX2) enabled processors"),
};

/// One process of parity checks: a test binary, the tests it runs, and how many copies of
/// oneDNN print their `isa:` line there.
#[derive(Clone, Copy, Debug)]
pub struct ParityPanel {
    /// The integration-test binary (`cargo test --test NAME`).
    pub binary: &'static str,
    /// libtest's filter: the binary's parity tests.
    pub filter: &'static str,
    /// The oneDNN copies that must report the cap: libtorch's and TensorFlow's where both
    /// run, libtorch's alone beside PyTorch.
    pub onednn_copies: usize,
}

/// Every parity panel: `crates/parity` (burn, tch, burn-tch and tf), and each Python backend's
/// (its framework beside burn, tch and burn-tch: TensorFlow's C library cannot share a process
/// with CPython). Keras on TensorFlow brings Python's TensorFlow, and its oneDNN.
pub const PANELS: [ParityPanel; 4] = [
    ParityPanel {
        binary: "parity",
        filter: "",
        onednn_copies: 2,
    },
    ParityPanel {
        binary: "pytorch",
        filter: "parity::",
        onednn_copies: 1,
    },
    ParityPanel {
        binary: "keras",
        filter: "parity::",
        onednn_copies: 2,
    },
    ParityPanel {
        binary: "keras-torch",
        filter: "parity::",
        onednn_copies: 1,
    },
];

/// Runs every panel under `cap` ([`panel_under_cap`]), and fails naming each that failed.
pub fn under_cap(cap: &Cap, native: &NativeEnv, features: &str, out: &Path) -> anyhow::Result<()> {
    let variables = cap
        .env
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "parity under {} (imitating {}): {}",
        cap.name,
        cap.imitates,
        if variables.is_empty() {
            "no cap"
        } else {
            &variables
        }
    );
    let mut failed = Vec::new();
    for panel in &PANELS {
        if let Err(error) = panel_under_cap(panel, cap, native, features, out) {
            eprintln!("    {error:#}");
            failed.push(panel.binary);
        }
    }
    if !failed.is_empty() {
        bail!(
            "parity under {}: the {} panel(s) failed (each named above, with its whole output)",
            cap.name,
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs one panel's test binary under `cap` with the verbose evidence on, writes its whole
/// output to `out/<cap>-<binary>.log`, prints the evidence and the check nearest its bound, and
/// fails when a check fails or the cap did not take effect.
fn panel_under_cap(
    panel: &ParityPanel,
    cap: &Cap,
    native: &NativeEnv,
    features: &str,
    out: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let log_path = out.join(format!("{}-{}.log", cap.name, panel.binary));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    eprintln!("  {}:", panel.binary);
    let mut command = cargo(
        &[
            "test",
            "--workspace",
            "--release",
            "--features",
            features,
            "--test",
            panel.binary,
        ],
        Some(native),
    );
    command
        .args(["--", panel.filter, "--nocapture"])
        .envs(cap.env.iter().copied())
        .env("ONEDNN_VERBOSE", "1")
        .env("MKL_VERBOSE", "1")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    let passed = command
        .status()
        .context("running the parity tests")?
        .success();
    let text = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    let evidence = Evidence::read(&text);
    for line in evidence.lines() {
        eprintln!("    {line}");
    }
    let mut problems = evidence.check(cap, panel.onednn_copies, &Host::this_machine());
    if !passed {
        problems.push(format!(
            "the parity checks failed:\n{}",
            evidence.failures.join("\n")
        ));
    }
    if !problems.is_empty() {
        bail!(
            "{}: {} (the whole output: {})",
            panel.binary,
            problems.join("; "),
            log_path.display()
        );
    }
    Ok(())
}

/// What one run's output shows.
#[derive(Debug, Default, PartialEq)]
pub struct Evidence {
    /// The capability libtorch reported.
    pub aten: Option<String>,
    /// Each oneDNN copy: its version line, its runtime and its `isa:` line.
    pub onednn: Vec<OneDnn>,
    /// The kernels oneDNN ran (`kind,implementation`), most used first, with their counts.
    pub kernels: Vec<(String, usize)>,
    /// MKL's verbose header.
    pub mkl: Option<String>,
    /// The check line nearest its bound, and how near (distance over bound).
    pub nearest: Option<(f64, String)>,
    /// The lines of failing checks.
    pub failures: Vec<String>,
    /// libtest's summary line.
    pub result: Option<String>,
}

/// One copy of oneDNN, as its verbose header describes it.
#[derive(Debug, Default, PartialEq)]
pub struct OneDnn {
    /// `oneDNN v3.7.1 (commit …)`.
    pub version: String,
    /// `OpenMP` (libtorch's copy) or `threadpool` (TensorFlow's).
    pub runtime: String,
    /// What follows `isa:`.
    pub isa: String,
}

impl OneDnn {
    /// Which engine carries this copy, by its threading runtime.
    pub fn engine(&self) -> &'static str {
        match self.runtime.as_str() {
            runtime if runtime.starts_with("OpenMP") => "libtorch",
            runtime if runtime.starts_with("threadpool") => "TensorFlow",
            _ => "unknown engine",
        }
    }
}

const ONEDNN_INFO: &str = "onednn_verbose,v1,info,";
const ONEDNN_EXEC: &str = "onednn_verbose,v1,primitive,exec,cpu,";

impl Evidence {
    /// Reads a run's whole output.
    pub fn read(text: &str) -> Evidence {
        let mut evidence = Evidence::default();
        let mut kernels = std::collections::BTreeMap::<String, usize>::new();
        for line in text.lines() {
            if let Some(info) = line.strip_prefix(ONEDNN_INFO) {
                if let Some(version) = info.strip_prefix("oneDNN ") {
                    evidence.onednn.push(OneDnn {
                        version: version.to_string(),
                        ..OneDnn::default()
                    });
                } else if let Some(last) = evidence.onednn.last_mut() {
                    if let Some(runtime) = info.strip_prefix("cpu,runtime:") {
                        last.runtime = runtime.to_string();
                    } else if let Some(isa) = info.strip_prefix("cpu,isa:") {
                        last.isa = isa.trim().to_string();
                    }
                }
            } else if let Some(exec) = line.strip_prefix(ONEDNN_EXEC) {
                let mut fields = exec.split(',');
                if let (Some(kind), Some(implementation)) = (fields.next(), fields.next()) {
                    // The GEMM API (TensorFlow's matrix products) names no implementation.
                    let kernel = if implementation.is_empty() {
                        kind.to_string()
                    } else {
                        format!("{kind},{implementation}")
                    };
                    *kernels.entry(kernel).or_default() += 1;
                }
            } else if line.starts_with("MKL_VERBOSE oneMKL")
                || line.starts_with("MKL_VERBOSE Intel")
            {
                evidence.mkl.get_or_insert_with(|| line.to_string());
            } else if let Some(capability) = line.strip_prefix("parity: ATen CPU capability: ") {
                evidence.aten = Some(capability.trim().to_string());
            } else if let Some(check) = line.strip_prefix("parity: ") {
                if let Some(ratio) = bound_ratio(check) {
                    if evidence
                        .nearest
                        .as_ref()
                        .is_none_or(|(worst, _)| ratio > *worst)
                    {
                        evidence.nearest = Some((ratio, check.to_string()));
                    }
                }
                if check.contains(" DISAGREES ") {
                    evidence.failures.push(check.to_string());
                }
            } else if line.contains(" is beyond its bound: ") {
                evidence.failures.push(line.to_string());
            } else if line.starts_with("test result: ") {
                evidence.result = Some(line.to_string());
            }
        }
        let mut kernels: Vec<(String, usize)> = kernels.into_iter().collect();
        kernels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        evidence.kernels = kernels;
        evidence
    }

    /// The evidence as lines to print.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "ATen (libtorch's kernels): {}",
            self.aten.as_deref().unwrap_or("not reported")
        )];
        for copy in &self.onednn {
            lines.push(format!(
                "oneDNN in {} ({}): isa {}",
                copy.engine(),
                copy.version,
                copy.isa
            ));
        }
        if !self.kernels.is_empty() {
            let top: Vec<String> = self
                .kernels
                .iter()
                .take(6)
                .map(|(kernel, count)| format!("{kernel} ×{count}"))
                .collect();
            lines.push(format!("oneDNN kernels run: {}", top.join(", ")));
        }
        lines.push(format!(
            "MKL (libtorch's matrix products): {}",
            self.mkl.as_deref().unwrap_or("no verbose line")
        ));
        if let Some((ratio, line)) = &self.nearest {
            lines.push(format!("nearest its bound ({ratio:.2} of it): {line}"));
        }
        if let Some(result) = &self.result {
            lines.push(result.clone());
        }
        lines
    }

    /// What shows that `cap` did not take effect in a process where `onednn_copies` copies of
    /// oneDNN run, one sentence each, on `host`.
    pub fn check(&self, cap: &Cap, onednn_copies: usize, host: &Host) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(expected) = cap.aten
            && self.aten.as_deref() != Some(expected)
        {
            problems.push(format!(
                "libtorch reports the capability {}, not {expected}",
                self.aten.as_deref().unwrap_or("(nothing)")
            ));
        }
        if let Some(expected) = cap.onednn_isa {
            if self.onednn.len() < onednn_copies {
                problems.push(format!(
                    "{} oneDNN header(s) printed, where {onednn_copies} copies run",
                    self.onednn.len()
                ));
            }
            for copy in &self.onednn {
                if !copy.isa.starts_with(expected) {
                    problems.push(format!(
                        "oneDNN in {} runs isa {:?}, not {expected:?}",
                        copy.engine(),
                        copy.isa
                    ));
                }
            }
        }
        if let Some(expected) = cap.mkl
            && !self
                .mkl
                .as_deref()
                .is_some_and(|line| line.contains(expected) || generic_where_unnamed(line, host))
        {
            problems.push(format!(
                "MKL's header {:?} does not say {expected:?}",
                self.mkl.as_deref().unwrap_or("(none)")
            ));
        }
        problems
    }
}

/// The host a cap runs on: its CPU and vector extensions, which decide what MKL's header can
/// show.
#[derive(Clone, Debug)]
pub struct Host {
    /// The CPU's model name ([`parallax::report::cpu_model`]).
    pub cpu_model: String,
    /// Its vector extensions ([`parallax::report::Environment::vector_extensions`]).
    pub extensions: Vec<String>,
}

impl Host {
    /// The machine this runs on.
    pub fn this_machine() -> Self {
        let environment = parallax::report::Environment::of_this_machine();
        Host {
            cpu_model: environment.cpu_model,
            extensions: environment.vector_extensions,
        }
    }
}

/// Whether MKL's header names no instruction set ("for Intel(R) 64 architecture Intel(R)
/// Architecture processors") on a host where that is all it can say. MKL names the code path it
/// dispatches to on Intel's processors alone: an AMD EPYC prints this header under the AVX2 cap
/// with AVX2 only and with AVX-512 (2026-12-07, oneMKL 2024.0), so there ATen's capability and
/// oneDNN's `isa:` lines are the cap's evidence, and `MKL_ENABLE_INSTRUCTIONS` is set all the
/// same. On an Intel host without AVX-512 nothing above AVX2 can run whatever MKL picks. An
/// Intel host with AVX-512 names its path, so the generic header there fails the check.
fn generic_where_unnamed(line: &str, host: &Host) -> bool {
    line.contains("Intel(R) Architecture processors")
        && (!host.cpu_model.contains("Intel") || !host.extensions.iter().any(|e| e == "AVX-512"))
}

/// The "(X of the bound)" figure that ends a check line.
fn bound_ratio(line: &str) -> Option<f64> {
    let end = line.rfind(" of the bound)")?;
    let start = line[..end].rfind('(')? + 1;
    line[start..end].parse().ok()
}

/// Where `cargo xtask test` and `cargo xtask parity` keep each cap's whole output.
pub fn out_dir() -> PathBuf {
    crate::cargo::target_dir().join("parity")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the engines print them under the AVX2 cap (abridged from a real run).
    const AVX2_RUN: &str = "\
onednn_verbose,v1,info,oneDNN v3.7.1 (commit 8d263e693366ef8db40acc569cc7d8edf644556d)
onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2
onednn_verbose,v1,info,cpu,isa:Intel AVX2
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32,0.1
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32,0.1
onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)
onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2
onednn_verbose,v1,info,cpu,isa:Intel AVX2
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,0.2
onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_f32::blocked:ab:f0,lda:784 ,,8x392:392x128,24.9
MKL_VERBOSE oneMKL 2024.0 Update 2 Product build 20240605 for Intel(R) 64 architecture Intel(R) Advanced Vector Extensions 2 (Intel(R) AVX2) enabled processors, Lnx 2.30GHz lp64 gnu_thread
parity: ATen CPU capability: AVX2
parity: mlp logits: tf agrees with the f64 referee (closest to its bound: logits differs by 4.13e-7 of its scale 3.97e-1; noise 6.00e-7 (burn's batch orders), floor 1.19e-7, bound 16× = 9.61e-6 (0.04 of the bound))
parity: cnn SGD step: tch agrees with the f64 referee (closest to its bound: fc1.bias differs by 8.92e-7 of its scale 2.09e-3; noise 4.46e-7 (burn's batch orders), floor 1.04e-6, bound 16× = 1.67e-5 (0.05 of the bound))
test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 16.73s
";

    fn host(cpu_model: &str, extensions: &[&str]) -> Host {
        Host {
            cpu_model: cpu_model.into(),
            extensions: extensions.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// An Intel host with AVX-512.
    fn intel_avx512() -> Host {
        host(
            "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
            &["AVX2", "FMA", "AVX-512"],
        )
    }

    /// MKL on an AMD EPYC names no instruction set, with AVX-512 or without: accepted there and
    /// on an Intel host without AVX-512, not on an Intel host with it, where MKL names its path.
    #[test]
    fn mkls_generic_header_is_accepted_only_where_mkl_names_no_path() {
        let generic = AVX2_RUN.replace(
            "Intel(R) Advanced Vector Extensions 2 (Intel(R) AVX2) enabled processors",
            "Intel(R) Architecture processors",
        );
        let evidence = Evidence::read(&generic);
        for quiet in [
            host("AMD EPYC", &["AVX2", "FMA"]),
            host("AMD EPYC", &["AVX2", "FMA", "AVX-512", "AVX-512 BF16"]),
            host("Intel(R) Core(TM) i7-4770", &["AVX2", "FMA"]),
        ] {
            assert_eq!(
                evidence.check(&AVX2, 2, &quiet),
                Vec::<String>::new(),
                "{quiet:?}"
            );
        }
        let problems = evidence.check(&AVX2, 2, &intel_avx512());
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("MKL"), "{}", problems[0]);
    }

    #[test]
    fn the_avx2_evidence_is_read_and_accepted() {
        let evidence = Evidence::read(AVX2_RUN);
        assert_eq!(evidence.aten.as_deref(), Some("AVX2"));
        assert_eq!(
            evidence
                .onednn
                .iter()
                .map(|copy| (copy.engine(), copy.isa.as_str()))
                .collect::<Vec<_>>(),
            [("libtorch", "Intel AVX2"), ("TensorFlow", "Intel AVX2")]
        );
        assert_eq!(evidence.kernels[0], ("convolution,jit:avx2".to_string(), 2));
        assert!(evidence.kernels.contains(&("gemm_api".to_string(), 1)));
        assert_eq!(
            evidence.nearest.as_ref().map(|(ratio, _)| *ratio),
            Some(0.05)
        );
        assert!(evidence.failures.is_empty());
        assert_eq!(
            evidence.check(&AVX2, 2, &intel_avx512()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_cap_that_did_not_take_effect_is_named() {
        let uncapped = AVX2_RUN
            .replace("isa:Intel AVX2", "isa:Intel AVX-512 with float16, Intel DL Boost and bfloat16 support")
            .replace("capability: AVX2", "capability: AVX512")
            .replace("(Intel(R) AVX2) enabled", "(Intel(R) AVX-512) with support for INT8, BF16, and FP16 (limited) instructions enabled");
        let problems = Evidence::read(&uncapped).check(&AVX2, 2, &intel_avx512());
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].contains("capability AVX512, not AVX2"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains("oneDNN in libtorch"),
            "{}",
            problems[1]
        );
        assert!(
            problems[2].contains("oneDNN in TensorFlow"),
            "{}",
            problems[2]
        );
        assert!(problems[3].contains("MKL"), "{}", problems[3]);
        let silent = Evidence::read("test result: ok.\n").check(&AVX2, 2, &intel_avx512());
        assert_eq!(silent.len(), 3, "{silent:#?}");
    }

    #[test]
    fn failing_checks_are_collected() {
        let failing = "parity: resnet18 SGD step: tch DISAGREES with the f64 referee (closest to its bound: layer4.0.bn1.bias differs by 3.91e-1 of its scale 1.94e-3; noise 6.0e-6 (tf's batch orders), floor 1.19e-7, bound 16× = 9.6e-5 (4000.00 of the bound))\n  layer4.0.bn1.bias is beyond its bound: layer4.0.bn1.bias differs by 3.91e-1\n";
        let evidence = Evidence::read(failing);
        assert_eq!(evidence.failures.len(), 2);
        assert_eq!(evidence.nearest.map(|(ratio, _)| ratio), Some(4000.0));
    }
}

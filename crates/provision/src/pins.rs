//! The pinned wheels (`crates/provision/wheels.toml`, compiled in) and what each component extracts from them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use serde::Deserialize;

/// The pins file, compiled in so that the binary and the hashes it checks never disagree.
const PINS_TOML: &str = include_str!("../wheels.toml");

/// Everything `wheels.toml` says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    /// The target that pip downloads for.
    pub pip: PipTarget,
    /// Component key (`libtorch-cpu`, …) to its version and directory.
    pub components: BTreeMap<String, ComponentPin>,
    /// Every wheel, with the components that use it.
    pub wheel: Vec<Wheel>,
}

/// The interpreter and platform tags passed to `pip download`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipTarget {
    /// `--python-version`.
    pub python_version: String,
    /// `--implementation`.
    pub implementation: String,
    /// `--abi`.
    pub abi: String,
    /// One `--platform` each.
    pub platforms: Vec<String>,
}

/// One extracted directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentPin {
    /// The framework's version, which its wheel must carry.
    pub version: String,
    /// Directory name under `<cache>/native/`.
    pub dir: String,
    /// Bytes that the extracted files take, for the free-space check.
    pub unpacked_bytes: u64,
}

/// One pinned wheel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wheel {
    /// `name==version`, as pip reads it.
    pub requirement: String,
    /// The exact file name on the index.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// Keys of the components extracted from it.
    pub components: Vec<String>,
}

impl Wheel {
    /// The distribution name, the part of the requirement before `==`.
    pub fn name(&self) -> &str {
        self.requirement
            .split_once("==")
            .map_or(&self.requirement, |(name, _)| name)
    }
}

/// One directory that setup extracts, named after its key in `[components]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// libtorch for the CPU: `libtorch_cpu.so` with the two small CUDA libraries it links.
    LibtorchCpu,
    /// The TensorFlow C library from `tensorflow-cpu`.
    TensorflowCpu,
    /// libtorch with CUDA and every NVIDIA library torch depends on.
    LibtorchCuda,
    /// The TensorFlow C library from the GPU build `tensorflow`, with its `and-cuda` libraries.
    TensorflowCuda,
}

/// The two TensorFlow libraries that export the C API.
const TF_LIBRARIES: [&str; 2] = [
    "tensorflow/libtensorflow_cc.so.2",
    "tensorflow/libtensorflow_framework.so.2",
];

impl Component {
    /// Every component, in the order setup works through them.
    pub const ALL: [Component; 4] = [
        Self::LibtorchCpu,
        Self::TensorflowCpu,
        Self::LibtorchCuda,
        Self::TensorflowCuda,
    ];

    /// The key used in `wheels.toml`.
    pub fn key(self) -> &'static str {
        match self {
            Self::LibtorchCpu => "libtorch-cpu",
            Self::TensorflowCpu => "tensorflow-cpu",
            Self::LibtorchCuda => "libtorch-cuda",
            Self::TensorflowCuda => "tensorflow-cuda",
        }
    }

    /// Whether this is a libtorch (rather than TensorFlow) component.
    pub fn is_torch(self) -> bool {
        matches!(self, Self::LibtorchCpu | Self::LibtorchCuda)
    }

    /// Whether this is a CUDA build.
    pub fn is_cuda(self) -> bool {
        matches!(self, Self::LibtorchCuda | Self::TensorflowCuda)
    }

    /// A short human name, such as `libtorch 2.9.0 (cpu)`.
    pub fn describe(self, pins: &Pins) -> String {
        let framework = if self.is_torch() {
            "libtorch"
        } else {
            "TensorFlow"
        };
        let build = if self.is_cuda() { "cuda" } else { "cpu" };
        format!("{framework} {} ({build})", pins.component(self).version)
    }

    /// Whether the wheel member at `path` belongs in this component's directory.
    ///
    /// Members keep their path from the wheel, so that the `$ORIGIN/../../nvidia/…` run paths
    /// baked into the wheels' libraries find their neighbours exactly as they do in a Python install.
    pub fn keeps(self, path: &str) -> bool {
        match self {
            Self::LibtorchCpu => {
                path.starts_with("torch/include/")
                    || matches!(
                        path,
                        "torch/lib/libtorch_cpu.so"
                            | "torch/lib/libc10.so"
                            | "torch/lib/libgomp.so.1"
                            | "nvidia/cuda_runtime/lib/libcudart.so.12"
                            | "nvidia/cuda_cupti/lib/libcupti.so.12"
                    )
            }
            Self::TensorflowCpu => TF_LIBRARIES.contains(&path),
            Self::LibtorchCuda => {
                path.starts_with("torch/include/")
                    || is_torch_cuda_library(path)
                    || is_nvidia_runtime_file(path)
            }
            Self::TensorflowCuda => TF_LIBRARIES.contains(&path) || is_nvidia_runtime_file(path),
        }
    }
}

/// A shared library directly in `torch/lib`, except the two that only Python loads.
fn is_torch_cuda_library(path: &str) -> bool {
    path.strip_prefix("torch/lib/").is_some_and(|name| {
        !name.contains('/')
            && name.contains(".so")
            && !matches!(name, "libtorch_python.so" | "libshm.so")
    })
}

/// A file of an NVIDIA wheel that a program needs at run time: libraries, and the tools and
/// device libraries (`ptxas`, `libdevice`) that TensorFlow's XLA looks for; not headers, static
/// libraries or Python files.
fn is_nvidia_runtime_file(path: &str) -> bool {
    path.starts_with("nvidia/")
        && !path.ends_with('/')
        && !path.contains("/include/")
        && !path.contains("__pycache__")
        && ![".py", ".pyc", ".a", ".h"]
            .iter()
            .any(|suffix| path.ends_with(suffix))
}

impl Pins {
    /// The compiled-in pins, parsed and checked once.
    pub fn get() -> Result<&'static Pins> {
        static PINS: OnceLock<Result<Pins, String>> = OnceLock::new();
        PINS.get_or_init(|| {
            Pins::parse(PINS_TOML).map_err(|error| match error {
                Error::Pins(detail) => detail,
                other => other.to_string(),
            })
        })
        .as_ref()
        .map_err(|detail| Error::Pins(detail.clone()))
    }

    /// Parses and checks a pins file.
    pub fn parse(text: &str) -> Result<Pins> {
        let pins: Pins = toml::from_str(text)
            .map_err(|error| Error::Pins(format!("cannot parse it: {error}")))?;
        pins.check()?;
        Ok(pins)
    }

    /// The pin of one component; [`Pins::check`] guarantees it exists.
    pub fn component(&self, component: Component) -> &ComponentPin {
        &self.components[component.key()]
    }

    /// The wheels that one component is extracted from.
    pub fn wheels_for(&self, component: Component) -> Vec<&Wheel> {
        self.wheel
            .iter()
            .filter(|w| w.components.iter().any(|c| c == component.key()))
            .collect()
    }

    /// Rejects pins that would make setup misbehave later, so that a bad edit fails at once.
    fn check(&self) -> Result<()> {
        for component in Component::ALL {
            let Some(pin) = self.components.get(component.key()) else {
                return Err(Error::Pins(format!(
                    "[components.{}] is missing",
                    component.key()
                )));
            };
            if pin.dir.is_empty() || pin.dir.contains('/') || pin.dir.starts_with('.') {
                return Err(Error::Pins(format!(
                    "[components.{}] dir {:?} must be a plain directory name",
                    component.key(),
                    pin.dir
                )));
            }
            if self.wheels_for(component).is_empty() {
                return Err(Error::Pins(format!(
                    "no wheel is used by component {}",
                    component.key()
                )));
            }
        }
        let mut files = std::collections::BTreeSet::new();
        for wheel in &self.wheel {
            let Some((name, version)) = wheel.requirement.split_once("==") else {
                return Err(Error::Pins(format!(
                    "requirement {:?} must pin an exact version with ==",
                    wheel.requirement
                )));
            };
            // Wheel file names normalise `-` to `_` in the distribution name.
            let prefix = format!("{}-{version}-", name.replace('-', "_"));
            if !wheel.file.ends_with(".whl") || !wheel.file.starts_with(&prefix) {
                return Err(Error::Pins(format!(
                    "{} is not a wheel of {}",
                    wheel.file, wheel.requirement
                )));
            }
            if !files.insert(wheel.file.as_str()) {
                return Err(Error::Pins(format!("{} is listed twice", wheel.file)));
            }
            if wheel.sha256.len() != 64
                || !wheel
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(Error::Pins(format!(
                    "{}: sha256 must be 64 lowercase hex digits",
                    wheel.file
                )));
            }
            if !self.wheel_matches_platforms(wheel) {
                return Err(Error::Pins(format!(
                    "{}: no platform tag of it is in [pip] platforms",
                    wheel.file
                )));
            }
            for key in &wheel.components {
                if !self.components.contains_key(key) {
                    return Err(Error::Pins(format!(
                        "{}: unknown component {key:?}",
                        wheel.file
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether pip, asked for `[pip] platforms`, would accept this wheel's platform tag.
    fn wheel_matches_platforms(&self, wheel: &Wheel) -> bool {
        // The platform tag is the last dash-separated field, and may join several with dots.
        let Some(tags) = wheel
            .file
            .strip_suffix(".whl")
            .and_then(|stem| stem.rsplit('-').next())
        else {
            return false;
        };
        tags.split('.')
            .any(|tag| tag == "any" || self.pip.platforms.iter().any(|p| p == tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_pins_parse_and_pin_the_expected_versions() {
        let pins = Pins::get().unwrap();
        assert_eq!(pins.component(Component::LibtorchCpu).version, "2.9.0");
        assert_eq!(pins.component(Component::TensorflowCpu).version, "2.21.0");
        let cpu_torch: Vec<_> = pins
            .wheels_for(Component::LibtorchCpu)
            .iter()
            .map(|w| w.name())
            .collect();
        assert_eq!(
            cpu_torch,
            [
                "torch",
                "nvidia-cuda-cupti-cu12",
                "nvidia-cuda-runtime-cu12"
            ]
        );
        let cpu_tf: Vec<_> = pins
            .wheels_for(Component::TensorflowCpu)
            .iter()
            .map(|w| &w.requirement)
            .collect();
        assert_eq!(cpu_tf, ["tensorflow-cpu==2.21.0"]);
        let gpu_tf = pins.wheels_for(Component::TensorflowCuda);
        assert!(gpu_tf.iter().any(|w| w.requirement == "tensorflow==2.21.0"));
        assert!(gpu_tf.iter().any(|w| w.name() == "nvidia-cudnn-cu12"));
    }

    #[test]
    fn pins_with_a_bad_hash_or_a_loose_requirement_are_rejected() {
        let good = PINS_TOML;
        let bad_hash = good.replacen(
            "51de31219c97c51cf4bf2be94d622e3deb5dcc526c6dc00e97c17eaec0fc1d67",
            "51DE",
            1,
        );
        assert!(
            Pins::parse(&bad_hash)
                .unwrap_err()
                .to_string()
                .contains("sha256")
        );
        let loose = good.replacen("torch==2.9.0", "torch>=2.9.0", 1);
        assert!(
            Pins::parse(&loose)
                .unwrap_err()
                .to_string()
                .contains("exact version")
        );
        let wrong_platform = good.replace("\"manylinux_2_28_x86_64\",", "");
        assert!(
            Pins::parse(&wrong_platform)
                .unwrap_err()
                .to_string()
                .contains("platform tag")
        );
    }

    #[test]
    fn cpu_libtorch_keeps_only_what_libtorch_cpu_needs() {
        let c = Component::LibtorchCpu;
        assert!(c.keeps("torch/include/ATen/ATen.h"));
        assert!(c.keeps("torch/lib/libtorch_cpu.so"));
        assert!(c.keeps("nvidia/cuda_runtime/lib/libcudart.so.12"));
        assert!(!c.keeps("torch/lib/libtorch_cuda.so"));
        assert!(!c.keeps("torch/lib/libtorch.so"));
        assert!(!c.keeps("torch/__init__.py"));
        assert!(!c.keeps("nvidia/cuda_cupti/lib/libnvperf_host.so"));
    }

    #[test]
    fn cuda_components_keep_libraries_and_tools_but_not_python_or_headers() {
        let torch = Component::LibtorchCuda;
        assert!(torch.keeps("torch/lib/libtorch_cuda.so"));
        assert!(torch.keeps("torch/lib/libtorch.so"));
        assert!(!torch.keeps("torch/lib/libtorch_python.so"));
        assert!(torch.keeps("nvidia/cudnn/lib/libcudnn.so.9"));
        assert!(!torch.keeps("nvidia/cudnn/include/cudnn.h"));
        assert!(!torch.keeps("nvidia/cudnn/__init__.py"));
        let tf = Component::TensorflowCuda;
        assert!(tf.keeps("tensorflow/libtensorflow_cc.so.2"));
        assert!(tf.keeps("nvidia/cuda_nvcc/bin/ptxas"));
        assert!(!tf.keeps("tensorflow/python/_pywrap_tensorflow_internal.so"));
    }
}

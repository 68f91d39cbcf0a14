//! The machine a comparison ran on, read once when it starts and kept in `summary.json`, so
//! that a report re-rendered elsewhere still names the machine that made the numbers.

use serde::{Deserialize, Serialize};

/// The CPU, memory and operating system of one machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// The CPU's model name, from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical CPUs this process may use.
    pub logical_cpus: usize,
    /// Physical memory, bytes, from `/proc/meminfo`; `None` where it cannot be read.
    pub memory_bytes: Option<u64>,
    /// The distribution's name, from `/etc/os-release`.
    pub os: String,
    /// The kernel release.
    pub kernel: String,
    /// The vector extensions that decide which kernels the engines pick (AVX2, AVX-512 and its
    /// extensions, AMX), from `/proc/cpuinfo`'s flags; empty in summaries of older versions.
    #[serde(default)]
    pub vector_extensions: Vec<String>,
}

impl Environment {
    /// This machine, now.
    pub fn of_this_machine() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        // The same figure the memory estimate checks a model against.
        let memory_bytes = parallax_core::memory::machine_bytes();
        let os = read("/etc/os-release")
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map(|name| name.trim_matches('"').to_string())
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        Self {
            cpu_model: cpu_model(),
            logical_cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_bytes,
            os,
            kernel,
            vector_extensions: vector_extensions(&read("/proc/cpuinfo"))
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }
}

/// The vector extensions that change which kernels oneDNN, MKL, ATen and burn's SIMD pick,
/// each with the `/proc/cpuinfo` flag that shows it, in the order they were introduced.
const VECTOR_EXTENSIONS: [(&str, &str); 8] = [
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx512_bf16", "AVX-512 BF16"),
    ("avx512_fp16", "AVX-512 FP16"),
    ("amx_bf16", "AMX BF16"),
    ("amx_int8", "AMX INT8"),
];

/// The vector extensions of the first CPU in a `/proc/cpuinfo` text, by their common names.
pub fn vector_extensions(cpuinfo: &str) -> Vec<&'static str> {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("flags"))
        .map(|rest| {
            rest.trim_start_matches([' ', '\t', ':'])
                .split_whitespace()
                .collect()
        })
        .unwrap_or_default();
    VECTOR_EXTENSIONS
        .iter()
        .filter(|(flag, _)| flags.contains(flag))
        .map(|&(_, name)| name)
        .collect()
}

/// One line naming the CPU and saying, for each extension that splits the hosts CI runs on
/// (AVX2, AVX-512, AVX-512 BF16, AMX), whether it has it, then every extension it has.
pub fn host_line(model: &str, extensions: &[impl AsRef<str>]) -> String {
    let has = |name: &str| {
        if extensions.iter().any(|e| e.as_ref().starts_with(name)) {
            "yes"
        } else {
            "no"
        }
    };
    format!(
        "{model}: AVX2 {}, AVX-512 {}, AVX-512 BF16 {}, AMX {} ({})",
        has("AVX2"),
        has("AVX-512"),
        has("AVX-512 BF16"),
        has("AMX"),
        if extensions.is_empty() {
            "no vector extension in /proc/cpuinfo".to_string()
        } else {
            extensions
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", ")
        }
    )
}

/// The CPU's model name, from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_cpu_memory_and_an_os() {
        let here = Environment::of_this_machine();
        assert!(here.logical_cpus >= 1);
        assert!(here.memory_bytes.is_some_and(|bytes| bytes > 1 << 20));
        assert!(!here.os.is_empty() && !here.cpu_model.is_empty());
    }

    /// The two kinds of host CI draws: flags abridged from an AMD EPYC (Genoa) and an Intel
    /// Xeon (Sapphire Rapids) as Linux prints them.
    #[test]
    fn the_host_line_tells_epyc_from_xeon() {
        let epyc = "model name\t: AMD EPYC 9R14\nflags\t\t: fpu sse4_2 avx fma avx2 avx512f avx512bw avx512vl avx512_bf16 avx512_vnni avx512_bitalg\n";
        let xeon = "flags\t\t: avx fma avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8\n";
        assert_eq!(
            host_line("AMD EPYC 9R14", &vector_extensions(epyc)),
            "AMD EPYC 9R14: AVX2 yes, AVX-512 yes, AVX-512 BF16 yes, AMX no (AVX2, FMA, AVX-512, AVX-512 VNNI, AVX-512 BF16)"
        );
        assert_eq!(
            host_line("Xeon", &vector_extensions(xeon)),
            "Xeon: AVX2 yes, AVX-512 yes, AVX-512 BF16 yes, AMX yes (AVX2, FMA, AVX-512, AVX-512 VNNI, AVX-512 BF16, AVX-512 FP16, AMX BF16, AMX INT8)"
        );
        assert_eq!(
            host_line("old", &vector_extensions("flags : sse2 avx\n")),
            "old: AVX2 no, AVX-512 no, AVX-512 BF16 no, AMX no (no vector extension in /proc/cpuinfo)"
        );
    }
}

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
        }
    }
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
}

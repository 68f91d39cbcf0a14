//! ATen's CPU capability: the instruction set libtorch's vectorised kernels run on, which
//! `ATEN_CPU_CAPABILITY` caps, read from libtorch itself (a few lines of C++ in
//! `capability.cpp`, since tch does not bind it).

// The one function of capability.cpp; calling it is safe as `aten_cpu_capability` does.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn parallax_aten_cpu_capability(out: *mut u8, capacity: usize) -> usize;
}

/// The instruction set ATen dispatches its CPU kernels to: `"DEFAULT"` (scalar code), `"AVX2"`
/// or `"AVX512"`, as `torch.backends.cpu.get_cpu_capability()` reports it. It is the CPU's
/// best unless `ATEN_CPU_CAPABILITY` (`default`, `avx2`, `avx512`) capped it when libtorch
/// dispatched its first kernel.
#[allow(unsafe_code)]
pub fn aten_cpu_capability() -> String {
    let mut name = [0u8; 32];
    // SAFETY: the C++ side writes at most `name.len()` bytes into `name` and returns the full
    // length, which may exceed what was written only if a future libtorch names a capability
    // longer than 32 bytes; the slice below is clamped to what was written.
    let length = unsafe { parallax_aten_cpu_capability(name.as_mut_ptr(), name.len()) };
    String::from_utf8_lossy(&name[..length.min(name.len())]).into_owned()
}

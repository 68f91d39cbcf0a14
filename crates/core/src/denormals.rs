//! Flushing subnormal floats to zero on the calling thread: one of the CPU settings that every
//! backend of a comparison shares.
//!
//! Subnormal (denormal) floats are up to a hundred times slower on x86 CPUs. Training produces
//! them routinely: Adam's first moment decays by β₁ = 0.9 per step for weights whose input is
//! almost always zero (the border pixels of MNIST-like images) and crosses into the subnormal
//! range after some 800 steps. Measured here, an MLP epoch on burn's Flex backend took 2.3 s with
//! subnormals and 0.7 s without. TensorFlow flushes them in its thread pools by default; PyTorch
//! and burn don't. parallax applies one policy to every backend and records it.

/// Sets or clears flush-to-zero and denormals-are-zero for the calling thread.
///
/// Returns whether the CPU supports the setting (x86-64 does; elsewhere this does nothing and
/// returns `false`). Engines' worker threads each need the call, from their start hooks.
pub fn flush_denormals_on_this_thread(enable: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::set_flush(enable);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = enable;
        false
    }
}

/// Whether flush-to-zero is on for the calling thread.
pub fn flushing_denormals_on_this_thread() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::is_flushing()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, deprecated)]
mod x86 {
    use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};

    /// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) flags.
    const FTZ_DAZ: u32 = 0x8040;

    pub(super) fn set_flush(enable: bool) {
        // SAFETY: SSE is part of the x86-64 baseline, so MXCSR exists; changing only the FTZ and
        // DAZ bits alters how subnormal results are rounded, never memory safety.
        unsafe {
            let csr = _mm_getcsr();
            _mm_setcsr(if enable {
                csr | FTZ_DAZ
            } else {
                csr & !FTZ_DAZ
            });
        }
    }

    pub(super) fn is_flushing() -> bool {
        // SAFETY: reading MXCSR has no side effect.
        unsafe { _mm_getcsr() & FTZ_DAZ == FTZ_DAZ }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushing_turns_subnormal_results_into_zero() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        if !flush_denormals_on_this_thread(true) {
            return;
        }
        assert!(flushing_denormals_on_this_thread());
        assert_eq!(
            std::hint::black_box(tiny) / std::hint::black_box(4.0f32),
            0.0
        );
        flush_denormals_on_this_thread(false);
        assert!(!flushing_denormals_on_this_thread());
        assert!(std::hint::black_box(tiny) / std::hint::black_box(4.0f32) > 0.0);
    }
}

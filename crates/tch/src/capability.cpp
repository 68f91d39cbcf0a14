// ATen's CPU capability, the instruction set its vectorised kernels were dispatched to, behind a
// C signature that Rust can call (crates/tch/src/capability.rs). at::get_cpu_capability is
// declared here rather than through <ATen/Version.h> so that this file compiles without
// libtorch's headers; libtorch_cpu exports it (TORCH_API).
#include <cstddef>
#include <cstring>
#include <string>

namespace at {
std::string get_cpu_capability();
}

// Copies the capability's name ("DEFAULT", "AVX2", "AVX512") into `out`, at most `capacity`
// bytes, and returns its full length.
extern "C" std::size_t parallax_aten_cpu_capability(char* out, std::size_t capacity) {
  const std::string name = at::get_cpu_capability();
  std::memcpy(out, name.data(), name.size() < capacity ? name.size() : capacity);
  return name.size();
}

// What the CPU can run, and which kernel level loom uses on it.
//
// loom compiles every hot kernel once per level (kernels/target.hpp): `scalar` (portable C++, the
// reference, compiled with the includer's own flags), and on x86-64 `avx2` (AVX2 + FMA + F16C)
// and `avx512` (AVX-512 F/BW/CD/DQ/VL with VNNI and VBMI). The level is chosen once, the first time
// a kernel runs or cpu_features() is called: the best one the CPU reports through CPUID and whose
// registers the operating system saves (XGETBV), or the one the environment variable
// LOOM_CPU=scalar|avx2|avx512 asks for. Asking for a level the CPU lacks, or for an unknown one,
// is an Error naming what the CPU has.
#pragma once

#include <array>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "loom/error.hpp"
#include "loom/kernels/target.hpp"

#if LOOM_X86
#include <cpuid.h>
#endif

namespace loom {

/// A set of kernels, from the portable one up.
enum class KernelLevel : std::uint8_t { scalar, avx2, avx512 };

inline constexpr std::array<KernelLevel, 3> kernel_levels = {KernelLevel::scalar, KernelLevel::avx2, KernelLevel::avx512};

constexpr std::string_view to_string(KernelLevel l) noexcept {
  switch (l) {
    case KernelLevel::scalar: return "scalar";
    case KernelLevel::avx2: return "avx2";
    case KernelLevel::avx512: return "avx512";
  }
  return "unknown";
}

/// The instruction-set extensions loom looks for (each one also enabled by the OS where it has
/// register state), the best level they allow, and the level in use.
struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512cd = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512vbmi = false, avx512bf16 = false;
  KernelLevel best = KernelLevel::scalar;   ///< the widest level this CPU runs
  KernelLevel level = KernelLevel::scalar;  ///< the level in use (best, or LOOM_CPU's)
  bool forced = false;                      ///< whether LOOM_CPU chose the level
  /// Whether prompts multiply bf16 weights with bf16 dot products, rounding the activations to
  /// bf16 as llama.cpp does for such weights (the AVX-512 level on a CPU with AVX512_BF16, unless
  /// LOOM_BF16=0 asks for the exact f32 path)...
  bool bf16_prompts = false;
  /// ... and f16 weights too, rounded to bf16 (LOOM_BF16=1): twice the speed of the exact path at
  /// about 8 times its logit error (llama.cpp rounds activations for f16 weights to f16).
  bool bf16_for_f16 = false;

  /// Whether this CPU can run level l.
  constexpr bool supports(KernelLevel l) const noexcept { return int(l) <= int(best); }

  /// The extensions found, space-separated (e.g. "avx2 fma f16c bmi2 avx512f ... avx512bf16").
  std::string extensions() const {
    std::string s;
    auto add = [&](bool on, const char* name) {
      if (!on) return;
      if (!s.empty()) s += ' ';
      s += name;
    };
    add(avx2, "avx2"), add(fma, "fma"), add(f16c, "f16c"), add(bmi2, "bmi2"), add(avx512f, "avx512f");
    add(avx512bw, "avx512bw"), add(avx512cd, "avx512cd"), add(avx512dq, "avx512dq"), add(avx512vl, "avx512vl");
    add(avx512vnni, "avx512vnni"), add(avx512vbmi, "avx512vbmi"), add(avx512bf16, "avx512bf16");
    return s.empty() ? "none" : s;
  }

  /// One line for timing blocks and logs: "avx512 (best avx512)" or "avx2 (forced by LOOM_CPU;
  /// best avx512)".
  std::string summary() const {
    std::string s(to_string(level));
    s += forced ? " (forced by LOOM_CPU; best " : " (best ";
    s += to_string(best);
    s += ')';
    return s;
  }
};

namespace detail {

/// The extensions of the CPU this runs on, and the best level they allow (no LOOM_CPU).
inline CpuFeatures detect_cpu() {
  CpuFeatures f;
#if LOOM_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(1, 0, &a, &b, &c, &d) == 0) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  // Which register state the OS saves on a context switch (XCR0): SSE + AVX (bits 1, 2), and the
  // AVX-512 opmask and upper ZMM registers (bits 5, 6, 7). Without it the instructions fault.
  std::uint64_t xcr0 = 0;
  if (osxsave) {
    std::uint32_t lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (std::uint64_t(hi) << 32) | lo;
  }
  const bool os_avx = avx && (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  if (!os_avx) f.fma = f.f16c = false;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) != 0) {
    f.avx2 = os_avx && (b & (1u << 5));
    f.bmi2 = b & (1u << 8);
    if (os_avx512) {
      f.avx512f = b & (1u << 16);
      f.avx512dq = b & (1u << 17);
      f.avx512cd = b & (1u << 28);
      f.avx512bw = b & (1u << 30);
      f.avx512vl = b & (1u << 31);
      f.avx512vbmi = c & (1u << 1);
      f.avx512vnni = c & (1u << 11);
      unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
      if (a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) != 0) f.avx512bf16 = a1 & (1u << 5);
    }
  }
  if (f.avx2 && f.fma && f.f16c && f.bmi2) f.best = KernelLevel::avx2;
  if (f.best == KernelLevel::avx2 && f.avx512f && f.avx512bw && f.avx512cd && f.avx512dq && f.avx512vl &&
      f.avx512vnni && f.avx512vbmi)
    f.best = KernelLevel::avx512;
#endif
  f.level = f.best;
  return f;
}

/// Applies a LOOM_CPU value (nullptr or empty: none) to detected features: the level it names,
/// if the CPU runs it.
inline CpuFeatures with_requested_level(CpuFeatures f, const char* requested) {
  if (requested == nullptr || *requested == '\0') return f;
  const std::string_view want(requested);
  for (KernelLevel l : kernel_levels)
    if (want == to_string(l)) {
      if (!f.supports(l))
        fail(ErrorKind::unsupported, "LOOM_CPU", "kernel level '", want, "' needs instructions this CPU lacks (it has: ",
             f.extensions(), "; best level ", to_string(f.best), ")");
      f.level = l;
      f.forced = true;
      return f;
    }
  fail(ErrorKind::invalid_argument, "LOOM_CPU", "unknown kernel level '", want, "' (expected scalar, avx2 or avx512)");
}

/// Applies a LOOM_BF16 value where the level and CPU have bf16 products: nullptr or empty (the
/// default) uses them for bf16 weights, "0" for none, "1" for f16 weights too.
inline CpuFeatures with_bf16_choice(CpuFeatures f, const char* requested) {
  f.bf16_prompts = f.level == KernelLevel::avx512 && f.avx512bf16;
  f.bf16_for_f16 = false;
  if (requested == nullptr || *requested == '\0') return f;
  const std::string_view want(requested);
  if (want == "0") {
    f.bf16_prompts = false;
    return f;
  }
  if (want == "1") {
    f.bf16_for_f16 = f.bf16_prompts;
    return f;
  }
  fail(ErrorKind::invalid_argument, "LOOM_BF16", "unknown value '", want, "' (expected 0 or 1)");
}

}  // namespace detail

/// The CPU's features and the kernel level in use, determined once per process (LOOM_CPU and
/// LOOM_BF16 are read then). Throws Error when LOOM_CPU names an unknown level or one the CPU
/// cannot run, or LOOM_BF16 is neither 0 nor 1 (and again on every later call).
inline const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detail::with_bf16_choice(
      detail::with_requested_level(detail::detect_cpu(), std::getenv("LOOM_CPU")), std::getenv("LOOM_BF16"));
  return features;
}

}  // namespace loom

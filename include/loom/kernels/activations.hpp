// Scalar activation functions and the exp they are built on, in plain arithmetic (kernels/
// level/ops.inl applies them at each kernel level, the AVX2 and AVX-512 levels with the same
// steps written on 8 lanes, since GCC does not vectorize these loops; kernels/ops.hpp is the
// public entry).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace loom::kernels {

namespace detail {

/// e^x for x <= 0 (NaN stays NaN), within 2 ulp of the exact value, in plain arithmetic that compilers
/// vectorize (std::exp is a library call they do not, and the softmax of attention spends most
/// of its time there): e^x = 2^k · e^r with k = round(x / ln 2) and |r| <= ln 2 / 2, e^r by its
/// Taylor series to r^7 (truncation error below 6e-9), 2^k written into the exponent bits.
/// exp_nonpositive's constants, read by its 8-lane version too (kernels/level/ops.inl).
struct ExpConstants {
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693145751953125f;  // ln 2 split so that k · ln2_hi is exact
  static constexpr float ln2_lo = 1.42860682030941723e-6f;
  static constexpr float round_magic = 12582912.0f;    // 1.5 · 2^23: adding it rounds to an integer
  static constexpr float lowest = -87.3365f;           // ≈ ln(FLT_MIN): below it e^x is subnormal
  /// e^r's Taylor coefficients from r^7 down to r^0, in Horner's order.
  static constexpr float taylor[8] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
};

inline float exp_nonpositive(float x) {
  using C = ExpConstants;
  const float xc = x < C::lowest ? C::lowest : x;  // keeps 2^k a normal number (and NaN a NaN)
  const float shifted = xc * C::log2e + C::round_magic;
  const float k = shifted - C::round_magic;
  const float r = (xc - k * C::ln2_hi) - k * C::ln2_lo;
  float p = C::taylor[0];
  for (int i = 1; i < 8; ++i) p = p * r + C::taylor[i];
  // The low bits of `shifted` hold k + 2^22 as an integer; 2^k has exponent field k + 127.
  const std::uint32_t k_bits = std::bit_cast<std::uint32_t>(shifted) - std::bit_cast<std::uint32_t>(C::round_magic);
  const float two_k = std::bit_cast<float>((k_bits + 127u) << 23);
  return x < C::lowest ? 0.0f : p * two_k;  // subnormal results flush to 0 (e^-inf must be 0)
}

}  // namespace detail

/// GELU, tanh approximation (GPT-2's "gelu_new"): 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))).
/// tanh(u) = sign(u)·(1 − e)/(1 + e) with e = e^(−2|u|) from exp_nonpositive, so that `apply`
/// vectorizes (std::tanh is a library call per element: 0.46 ms per GPT-2-small token on this
/// project's machine, ~2 % of decoding). Error in 1 + tanh below 2e-7 absolute.
inline float gelu_tanh(float x) {
  constexpr float k = 0.7978845608028654f;  // sqrt(2/pi)
  const float u = k * (x + 0.044715f * x * x * x);
  const float e = detail::exp_nonpositive(-2.0f * std::fabs(u));
  const float t = std::copysign((1.0f - e) / (1.0f + e), u);
  return 0.5f * x * (1.0f + t);
}
/// GELU, exact: 0.5x(1 + erf(x/√2)).
inline float gelu_erf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f)); }
/// SiLU (swish): x·σ(x), with σ from e = e^(−|x|) (exp_nonpositive, so that `apply` vectorizes):
/// σ(x) = 1/(1 + e) for x ≥ 0 and e/(1 + e) below.
inline float silu(float x) {
  const float e = detail::exp_nonpositive(-std::fabs(x));
  const float s = 1.0f / (1.0f + e);
  return x * (x >= 0.0f ? s : e * s);
}
inline float relu(float x) { return x > 0.0f ? x : 0.0f; }

}  // namespace loom::kernels

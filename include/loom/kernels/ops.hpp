// Element-wise and row-wise math on f32 activations: softmax, activations, residual add, and the
// conversion of stored rows (f32 / f16 / bf16 / quantized blocks) to f32. Model-agnostic.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/quant.hpp"
#include "loom/tensor.hpp"

#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
#endif

namespace loom::kernels {

namespace detail {

/// e^x for x <= 0 (NaN stays NaN), within 2 ulp of the exact value, in plain arithmetic that compilers
/// vectorize (std::exp is a library call they do not, and the softmax of attention spends most
/// of its time there): e^x = 2^k · e^r with k = round(x / ln 2) and |r| <= ln 2 / 2, e^r by its
/// Taylor series to r^7 (truncation error below 6e-9), 2^k written into the exponent bits.
inline float exp_nonpositive(float x) {
  constexpr float log2e = 1.44269504088896341f;
  constexpr float ln2_hi = 0.693145751953125f;  // ln 2 split so that k · ln2_hi is exact
  constexpr float ln2_lo = 1.42860682030941723e-6f;
  constexpr float round_magic = 12582912.0f;    // 1.5 · 2^23: adding it rounds to an integer
  constexpr float lowest = -87.3365f;           // ≈ ln(FLT_MIN): below it e^x is subnormal
  const float xc = x < lowest ? lowest : x;     // keeps 2^k a normal number (and NaN a NaN)
  const float shifted = xc * log2e + round_magic;
  const float k = shifted - round_magic;
  const float r = (xc - k * ln2_hi) - k * ln2_lo;
  const float p =
      ((((((1.0f / 5040 * r + 1.0f / 720) * r + 1.0f / 120) * r + 1.0f / 24) * r + 1.0f / 6) * r + 0.5f) * r + 1) * r + 1;
  // The low bits of `shifted` hold k + 2^22 as an integer; 2^k has exponent field k + 127.
  const std::uint32_t k_bits = std::bit_cast<std::uint32_t>(shifted) - std::bit_cast<std::uint32_t>(round_magic);
  const float two_k = std::bit_cast<float>((k_bits + 127u) << 23);
  return x < lowest ? 0.0f : p * two_k;  // subnormal results flush to 0 (e^-inf must be 0)
}

}  // namespace detail

/// In-place numerically stable softmax: subtracts the maximum before exponentiating. Written as
/// separate flat passes so that compilers vectorize each one; the max and the sum run over 16
/// lanes combined in a fixed order (the result depends on the length alone), the sum in double.
inline void softmax(std::span<float> x) {
  if (x.empty()) return;
  constexpr std::size_t lanes = 16;
  const std::size_t n = x.size(), whole = n - n % lanes;
  float* v = x.data();
  float lane_max[lanes];
  std::fill_n(lane_max, lanes, v[0]);
  for (std::size_t i = 0; i < whole; i += lanes)
    for (std::size_t l = 0; l < lanes; ++l) lane_max[l] = v[i + l] > lane_max[l] ? v[i + l] : lane_max[l];
  for (std::size_t i = whole; i < n; ++i) lane_max[i - whole] = std::max(lane_max[i - whole], v[i]);
  const float mx = *std::max_element(lane_max, lane_max + lanes);
  for (std::size_t i = 0; i < n; ++i) v[i] = detail::exp_nonpositive(v[i] - mx);
  double lane_sum[lanes] = {};
  for (std::size_t i = 0; i < whole; i += lanes)
    for (std::size_t l = 0; l < lanes; ++l) lane_sum[l] += v[i + l];
  for (std::size_t i = whole; i < n; ++i) lane_sum[i - whole] += v[i];
  double sum = 0.0;
  for (double s : lane_sum) sum += s;
  const float inv = float(1.0 / sum);
  for (std::size_t i = 0; i < n; ++i) v[i] *= inv;
}

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

template <typename F>
inline void apply(std::span<float> x, F f) {
  for (float& v : x) v = f(v);
}

/// y += x (residual connection).
inline void add(std::span<float> y, std::span<const float> x) {
  for (std::size_t i = 0; i < y.size(); ++i) y[i] += x[i];
}

/// Converts n elements of a stored row (f32, f16, bf16, f64, or quantized blocks with n a
/// multiple of the block size) to f32.
inline void to_f32(DType t, const std::byte* src, float* dst, std::int64_t n) {
  switch (t) {
    case DType::f32:
      std::memcpy(dst, src, std::size_t(n) * 4);
      return;
    case DType::f16: {
      const auto* h = reinterpret_cast<const std::uint16_t*>(src);
      std::int64_t i = 0;
#if defined(__AVX2__) && defined(__F16C__)
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
#endif
      for (; i < n; ++i) dst[i] = to_float(f16{h[i]});
      return;
    }
    case DType::bf16: {
      const auto* h = reinterpret_cast<const std::uint16_t*>(src);
      for (std::int64_t i = 0; i < n; ++i) dst[i] = to_float(bf16{h[i]});
      return;
    }
    case DType::f64: {
      const auto* d = reinterpret_cast<const double*>(src);
      for (std::int64_t i = 0; i < n; ++i) dst[i] = float(d[i]);
      return;
    }
    case DType::q8_0:
    case DType::q4_0:
    case DType::q4_1:
    case DType::q5_0:
    case DType::q5_1:
    case DType::iq4_nl:
    case DType::iq4_xs:
    case DType::q2_k:
    case DType::q3_k:
    case DType::q4_k:
    case DType::q5_k:
    case DType::q6_k:
      dequantize_row(t, src, dst, n);
      return;
    default:
      fail(ErrorKind::unsupported, "kernels", "conversion of ", to_string(t), " rows to f32 is not implemented");
  }
}

/// Converts n f32 values to f16, rounding to nearest even (the inverse of to_f32 for f16 rows).
inline void f32_to_f16(const float* src, f16* dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(__AVX2__) && defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) dst[i] = to_f16(src[i]);
}

/// Copies row `i` of a stored [rows, cols] tensor into dst as f32 (an embedding lookup).
inline void row_to_f32(const TensorRef& t, std::int64_t i, float* dst) { to_f32(t.dtype, t.row(i), dst, t.cols()); }

}  // namespace loom::kernels

// Element-wise and row-wise math on f32 activations: softmax, activations, residual add, and the
// conversion of stored rows (f32 / f16 / bf16 / quantized blocks) to f32. Model-agnostic.
#pragma once

#include <algorithm>
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

/// In-place numerically stable softmax: subtracts the maximum before exponentiating.
inline void softmax(std::span<float> x) {
  if (x.empty()) return;
  const float mx = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (float& v : x) {
    v = std::exp(v - mx);
    sum += v;
  }
  const float inv = float(1.0 / sum);
  for (float& v : x) v *= inv;
}

/// GELU, tanh approximation (GPT-2's "gelu_new"): 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))).
inline float gelu_tanh(float x) {
  constexpr float k = 0.7978845608028654f;  // sqrt(2/pi)
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}
/// GELU, exact: 0.5x(1 + erf(x/√2)).
inline float gelu_erf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f)); }
/// SiLU (swish): x·σ(x).
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
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
    case DType::q4_k:
    case DType::q6_k:
      dequantize_row(t, src, dst, n);
      return;
    default:
      fail(ErrorKind::unsupported, "kernels", "conversion of ", to_string(t), " rows to f32 is not implemented");
  }
}

/// Copies row `i` of a stored [rows, cols] tensor into dst as f32 (an embedding lookup).
inline void row_to_f32(const TensorRef& t, std::int64_t i, float* dst) { to_f32(t.dtype, t.row(i), dst, t.cols()); }

}  // namespace loom::kernels

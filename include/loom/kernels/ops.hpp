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
#include "loom/kernels/activations.hpp"
#include "loom/kernels/type_traits.hpp"
#include "loom/tensor.hpp"

namespace loom::kernels {

template <typename F>
inline void apply(std::span<float> x, F f) {
  for (float& v : x) v = f(v);
}

/// In-place numerically stable softmax: subtracts the maximum before exponentiating. Written as
/// separate flat passes so that compilers vectorize each one; the max and the sum run over 16
/// lanes combined in a fixed order (the result depends on the length alone), the sum in double.
inline void softmax(std::span<float> x) { level_kernels().softmax(x.data(), std::int64_t(x.size())); }

/// The activations over a row, at the kernel level in use.
inline void apply_silu(std::span<float> x) { level_kernels().silu(x.data(), std::int64_t(x.size())); }
inline void apply_gelu_tanh(std::span<float> x) { level_kernels().gelu_tanh(x.data(), std::int64_t(x.size())); }
inline void apply_gelu_erf(std::span<float> x) { level_kernels().gelu_erf(x.data(), std::int64_t(x.size())); }
inline void apply_relu(std::span<float> x) { level_kernels().relu(x.data(), std::int64_t(x.size())); }

/// y += x (residual connection).
inline void add(std::span<float> y, std::span<const float> x) {
  level_kernels().add(y.data(), x.data(), std::int64_t(std::min(y.size(), x.size())));
}

/// Converts n elements of a stored row (f32, f16, bf16, f64, or quantized blocks with n a
/// multiple of the block size) to f32.
inline void to_f32(DType t, const std::byte* src, float* dst, std::int64_t n) {
  const LevelTypeKernels& k = kernels_for(t);
  if (is_quantized(t)) detail::check_multiple(n, block_elems(t), "to_f32");
  k.to_f32(src, dst, n);
}

/// Converts n f32 values to f16, rounding to nearest even (the inverse of to_f32 for f16 rows).
inline void f32_to_f16(const float* src, f16* dst, std::int64_t n) { level_kernels().f32_to_f16(src, dst, n); }

/// Copies row `i` of a stored [rows, cols] tensor into dst as f32 (an embedding lookup).
inline void row_to_f32(const TensorRef& t, std::int64_t i, float* dst) { to_f32(t.dtype, t.row(i), dst, t.cols()); }

}  // namespace loom::kernels

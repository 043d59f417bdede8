// Quantized weights: the public entry points, each chosen from the weight type's row of
// kernels/type_traits.hpp at the kernel level in use (kernels/cpu.hpp).
//
// The parts, in kernels/quant/:
//   blocks.hpp          the block layouts, the 8-bit activation blocks, shared helpers
//   dequantize.hpp      scalar reference dequantization (as ggml's dequantize_row_*)
//   quantize.hpp        reference quantization of f32 weights (llama.cpp's quantizers)
//   activation.inl      quantization of f32 activations, compiled per level (kernels/levels.hpp)
//   dots_scalar.hpp     dot products, portable: the reference
//   dots_avx2.hpp       dot products, AVX2
//   dots_avx512.hpp     dot products of the 32-weight types and IQ4_XS, AVX-512 (VNNI, VBMI)
//   kquants_avx512.hpp  dot products of the k-quants and dequantization, AVX-512
// Every SIMD dot product computes the same integer sums per block as the scalar one; only the
// order of the final float accumulation differs.
#pragma once

#include <cstddef>
#include <cstdint>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/cpu.hpp"
#include "loom/kernels/quant/blocks.hpp"
#include "loom/kernels/quant/dequantize.hpp"
#include "loom/kernels/quant/quantize.hpp"
#include "loom/kernels/type_traits.hpp"

namespace loom::kernels {

/// The kernel level the quantized kernels run at: "avx512", "avx2" or "scalar".
inline std::string_view quant_simd_name() { return to_string(cpu_features().level); }

namespace detail {
inline const LevelTypeKernels& quantized_kernels(DType t, const char* what) {
  if (!is_quantized(t)) fail(ErrorKind::invalid_argument, "kernels", what, ": ", to_string(t), " is not quantized");
  return kernels_for(t);
}
}  // namespace detail

/// Dequantizes n weights of a quantized row (n a multiple of the block size) to f32.
inline void dequantize_row(DType t, const std::byte* src, float* dst, std::int64_t n) {
  const LevelTypeKernels& k = detail::quantized_kernels(t, "dequantize_row");
  detail::check_multiple(n, block_elems(t), "dequantize_row");
  k.to_f32(src, dst, n);
}

/// Quantizes an f32 activation row of n values (a multiple of w's block size) into `dst`
/// (activation_bytes(w, n) bytes, aligned for float) in the format w's dot product reads.
inline void quantize_activation(DType w, const float* x, std::byte* dst, std::int64_t n) {
  const LevelTypeKernels& k = detail::quantized_kernels(w, "quantize_activation");
  detail::check_multiple(n, block_elems(w), "quantize_activation");
  k.quantize_activation(x, dst, n);
}

/// Σ w·x of a quantized weight row of type t (n values) and activations made by
/// quantize_activation(t, ...).
inline float dot_quantized(DType t, std::int64_t n, const std::byte* w, const std::byte* act) {
  return detail::quantized_kernels(t, "dot_quantized").dot(n, w, act);
}

/// Quantizes n f32 values to type t (n a multiple of its block size) with the reference
/// quantizer: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q4_K, Q5_K or Q6_K.
inline void quantize_row(DType t, const float* x, std::byte* dst, std::int64_t n) {
  const TypeKernels& k = type_kernels(t);
  if (!is_quantized(t) || k.from_f32 == nullptr)
    fail(ErrorKind::unsupported, "kernels", "quantization to ", to_string(t), " is not implemented");
  detail::check_multiple(n, block_elems(t), "quantize_row");
  k.from_f32(x, dst, n);
}

/// f32 → block_q8_grouped / block_q8_k activations (the portable level's; every level writes the same
/// bytes).
inline void quantize_row_q8_grouped(const float* x, block_q8_grouped* y, std::int64_t n, bool halves) {
  scalar::quantize_row_q8_grouped(x, y, n, halves);
}
inline void quantize_row_q8_k(const float* x, block_q8_k* y, std::int64_t n, bool q4_k) {
  scalar::quantize_row_q8_k(x, y, n, q4_k);
}

}  // namespace loom::kernels

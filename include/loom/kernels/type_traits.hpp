// The kernels of each weight type, one row per DType (the CPU half of ggml's type traits; the
// layout half is dtype_table in dtype.hpp): conversion from f32 (the reference quantizers), and
// per kernel level the decode rows, the dot product and the activation blocks it reads, the
// conversion of stored rows to f32, and how many input rows the decode kernels take before the
// GEMM path is faster. Adding a weight type is adding a row here and one in dtype_table.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/levels.hpp"
#include "loom/kernels/quant/quantize.hpp"

namespace loom::kernels {

/// A weight type's kernels.
struct TypeKernels {
  DType type;
  /// n f32 values → this type (n a whole number of blocks): the reference quantizer or
  /// conversion; null where loom writes no such type.
  void (*from_f32)(const float* x, std::byte* dst, std::int64_t n);
  /// The kernels at each level, indexed by KernelLevel.
  std::array<LevelTypeKernels, kernel_levels.size()> level;
};

namespace detail {

template <auto Quantize, typename Block>
void typed_from_f32(const float* x, std::byte* dst, std::int64_t n) {
  Quantize(x, reinterpret_cast<Block*>(dst), n);
}
inline void f32_from_f32(const float* x, std::byte* dst, std::int64_t n) { std::memcpy(dst, x, std::size_t(n) * 4); }
template <typename Half>
void half_from_f32(const float* x, std::byte* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const Half h = [&] {
      if constexpr (std::is_same_v<Half, f16>)
        return to_f16(x[i]);
      else
        return to_bf16(x[i]);
    }();
    std::memcpy(dst + 2 * i, &h, 2);
  }
}
inline void f64_to_f32(const std::byte* src, float* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    double d;
    std::memcpy(&d, src + 8 * i, 8);
    dst[i] = float(d);
  }
}

}  // namespace detail

// A quantized type's row: its reference quantizer (or nullptr), the dot product of each level,
// its dequantization (reference; AVX-512 where written), and its decode row limits (reference
// level, AVX2, AVX-512): up to them the integer dots beat the GEMM path, which at the reference
// level dequantizes 128-row blocks for the f32 GEMM and at AVX2 and AVX-512 is the integer GEMM
// (kernels/level/gemm_int8.inl), whose packing costs a few rows of dots. How they were measured:
// docs/performance-notes.md, "Decode row limits".
#if LOOM_X86
#define LOOM_QUANT_ROW(T, quantize, dot_scalar, dot_avx2, dot_avx512, dequant, dequant_avx512, rows, rows_avx2,    \
                       rows_avx512)                                                                             \
  TypeKernels {                                                                                                 \
    T, quantize, {                                                                                              \
      scalar::quant_kernels<T, dot_scalar, dequant>(rows), avx2::quant_kernels<T, dot_avx2, dequant>(rows_avx2), \
          avx512::quant_kernels<T, dot_avx512, dequant_avx512>(rows_avx512)                                     \
    }                                                                                                           \
  }
#define LOOM_FLOAT_ROW(T, from)                                                                            \
  TypeKernels {                                                                                            \
    T, from, { scalar::float_kernels<T>(), avx2::float_kernels<T>(), avx512::float_kernels<T>() }         \
  }
#else
#define LOOM_QUANT_ROW(T, quantize, dot_scalar, dot_avx2, dot_avx512, dequant, dequant_avx512, rows, rows_avx2,    \
                       rows_avx512)                                                                             \
  TypeKernels {                                                                                                 \
    T, quantize, {                                                                                              \
      scalar::quant_kernels<T, dot_scalar, dequant>(rows), scalar::quant_kernels<T, dot_scalar, dequant>(rows), \
          scalar::quant_kernels<T, dot_scalar, dequant>(rows)                                                   \
    }                                                                                                           \
  }
#define LOOM_FLOAT_ROW(T, from) \
  TypeKernels { T, from, { scalar::float_kernels<T>(), scalar::float_kernels<T>(), scalar::float_kernels<T>() } }
#endif
#define LOOM_QUANTIZER(fn, T) &detail::typed_from_f32<fn, block_of_t<T>>

/// One row per DType, in the enum's order.
inline constexpr TypeKernels type_kernel_table[] = {
    LOOM_FLOAT_ROW(DType::f32, &detail::f32_from_f32),
    TypeKernels{DType::f64, nullptr, {{{.to_f32 = &detail::f64_to_f32}, {.to_f32 = &detail::f64_to_f32},
                                       {.to_f32 = &detail::f64_to_f32}}}},
    LOOM_FLOAT_ROW(DType::f16, &detail::half_from_f32<f16>),
    LOOM_FLOAT_ROW(DType::bf16, &detail::half_from_f32<bf16>),
    LOOM_QUANT_ROW(DType::q8_0, LOOM_QUANTIZER(quantize_row_q8_0, DType::q8_0), detail::dot_q8_0_scalar,
                   detail::dot_q8_0_avx2, detail::dot_q8_0_avx512, dequantize_row_q8_0, dequantize_row_q8_0, 32, 12, 12),
    LOOM_QUANT_ROW(DType::q4_0, LOOM_QUANTIZER(quantize_row_q4_0, DType::q4_0), detail::dot_q4_0_scalar,
                   detail::dot_q4_0_avx2, detail::dot_q4_0_avx512, dequantize_row_q4_0,
                   detail::dequantize_row_q4_0_avx512, 32, 16, 12),
    LOOM_QUANT_ROW(DType::q4_1, LOOM_QUANTIZER(quantize_row_block32_min<block_q4_1>, DType::q4_1),
                   detail::dot_block32_scalar<block_q4_1>, detail::dot_block32_avx2<block_q4_1>,
                   detail::dot_block32_avx512<block_q4_1>, dequantize_row_block32<block_q4_1>, dequantize_row_block32<block_q4_1>,
                   32, 2, 12),
    LOOM_QUANT_ROW(DType::q5_0, LOOM_QUANTIZER(quantize_row_block32_symmetric<block_q5_0>, DType::q5_0),
                   detail::dot_block32_scalar<block_q5_0>, detail::dot_block32_avx2<block_q5_0>,
                   detail::dot_block32_avx512<block_q5_0>, dequantize_row_block32<block_q5_0>, dequantize_row_block32<block_q5_0>,
                   32, 8, 12),
    LOOM_QUANT_ROW(DType::q5_1, LOOM_QUANTIZER(quantize_row_block32_min<block_q5_1>, DType::q5_1),
                   detail::dot_block32_scalar<block_q5_1>, detail::dot_block32_avx2<block_q5_1>,
                   detail::dot_block32_avx512<block_q5_1>, dequantize_row_block32<block_q5_1>, dequantize_row_block32<block_q5_1>,
                   32, 8, 12),
    LOOM_QUANT_ROW(DType::iq4_nl, LOOM_QUANTIZER(quantize_row_iq4_nl, DType::iq4_nl), detail::dot_block32_scalar<block_iq4_nl>,
                   detail::dot_block32_avx2<block_iq4_nl>, detail::dot_block32_avx512<block_iq4_nl>, dequantize_row_iq4_nl,
                   detail::dequantize_row_iq4_nl_avx512, 32, 2, 12),
    LOOM_QUANT_ROW(DType::iq4_xs, LOOM_QUANTIZER(quantize_row_iq4_xs, DType::iq4_xs), detail::dot_iq4_xs_scalar,
                   detail::dot_iq4_xs_avx2, detail::dot_iq4_xs_avx512, dequantize_row_iq4_xs,
                   detail::dequantize_row_iq4_xs_avx512, 32, 8, 12),
    LOOM_QUANT_ROW(DType::q2_k, nullptr, detail::dot_q2_k_scalar, detail::dot_q2_k_avx2, detail::dot_q2_k_avx512,
                   dequantize_row_q2_k, detail::dequantize_row_q2_k_avx512, 6, 16, 24),
    LOOM_QUANT_ROW(DType::q3_k, nullptr, detail::dot_q3_k_scalar, detail::dot_q3_k_avx2, detail::dot_q3_k_avx512,
                   dequantize_row_q3_k, detail::dequantize_row_q3_k_avx512, 6, 24, 24),
    LOOM_QUANT_ROW(DType::q4_k, LOOM_QUANTIZER(quantize_row_q4_k, DType::q4_k), detail::dot_q4_k_scalar,
                   detail::dot_q4_k_avx2, detail::dot_q4_k_avx512, dequantize_row_q4_k, dequantize_row_q4_k, 6, 4, 8),
    LOOM_QUANT_ROW(DType::q5_k, LOOM_QUANTIZER(quantize_row_k_min<block_q5_k>, DType::q5_k),
                   detail::dot_k_min_scalar<block_q5_k>, detail::dot_k_min_avx2<block_q5_k>,
                   detail::dot_k_min_avx512<block_q5_k>, dequantize_row_k_min<block_q5_k>,
                   dequantize_row_k_min<block_q5_k>, 6, 4, 6),
    LOOM_QUANT_ROW(DType::q6_k, LOOM_QUANTIZER(quantize_row_q6_k, DType::q6_k), detail::dot_q6_k_scalar,
                   detail::dot_q6_k_avx2, detail::dot_q6_k_avx512, dequantize_row_q6_k,
                   detail::dequantize_row_q6_k_avx512, 128, 4, 12),
};

#undef LOOM_QUANT_ROW
#undef LOOM_FLOAT_ROW
#undef LOOM_QUANTIZER

static_assert(std::size(type_kernel_table) == dtype_count);
static_assert([] {
  for (std::size_t i = 0; i < dtype_count; ++i)
    if (std::size_t(type_kernel_table[i].type) != i) return false;
  return true;
}(), "type_kernel_table rows are in the enum's order");

/// The row of t; Error(invalid_argument) for a value outside the enum.
inline const TypeKernels& type_kernels(DType t) {
  if (std::size_t(t) >= dtype_count)
    fail(ErrorKind::invalid_argument, "kernels", "storage type ", int(t), " is not a DType");
  return type_kernel_table[std::size_t(t)];
}

/// t's kernels at level l.
inline const LevelTypeKernels& kernels_for(DType t, KernelLevel l) { return type_kernels(t).level[std::size_t(l)]; }

/// t's kernels at the level in use.
inline const LevelTypeKernels& kernels_for(DType t) { return kernels_for(t, cpu_features().level); }

}  // namespace loom::kernels

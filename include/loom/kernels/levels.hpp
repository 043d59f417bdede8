// The kernel levels: every kernel whose speed depends on the instruction set, compiled once per
// level in its own namespace — loom::kernels::scalar (portable, the includer's flags), and on
// x86-64 loom::kernels::avx2 and loom::kernels::avx512 (kernels/target.hpp regions) — and the
// table of the level-wide kernels. The per-type kernels of each level are the rows of
// kernels/type_traits.hpp. Which level runs is chosen once (kernels/cpu.hpp); `level_kernels()`
// returns its table.
//
// The per-level bodies are the files under kernels/level/ and kernels/quant/activation.inl:
// written once, with `#if LOOM_LEVEL >= 1` (AVX2) / `== 2` (AVX-512) around their SIMD parts,
// and included here three times. The quantized dot products, whose SIMD versions are written
// per instruction set, live in kernels/quant/dots_*.hpp and are named by the type traits rows.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/activations.hpp"
#include "loom/kernels/cpu.hpp"
#include "loom/kernels/quant/blocks.hpp"
#include "loom/kernels/quant/dequantize.hpp"
#include "loom/kernels/quant/dots_avx2.hpp"
#include "loom/kernels/quant/dots_avx512.hpp"
#include "loom/kernels/quant/dots_scalar.hpp"
#include "loom/kernels/quant/kquants_avx512.hpp"
#include "loom/kernels/target.hpp"
#include "loom/tensor.hpp"

#if LOOM_X86
#include <immintrin.h>
#else
#include "loom/eigen.hpp"  // the portable GEMM where it is the only level (kernels/level/gemm.inl)
#endif

// The SIMD kernels keep their accumulators in arrays of vectors. These stay in registers only if
// every loop over them is unrolled before the compiler decides where arrays live, and if the
// helpers that take them by reference are inlined; otherwise they go through the stack on every
// iteration (2-3 times slower).
// LOOM_NO_UNROLL keeps a loop rolled where unrolling it would spill (the AVX2 integer tile).
#if defined(__GNUC__) && !defined(__clang__)
#define LOOM_UNROLL _Pragma("GCC unroll 16")
#define LOOM_NO_UNROLL _Pragma("GCC unroll 1")
#elif defined(__clang__)
#define LOOM_UNROLL _Pragma("unroll")
#define LOOM_NO_UNROLL _Pragma("nounroll")
#else
#define LOOM_UNROLL
#define LOOM_NO_UNROLL
#endif

namespace loom::kernels {

/// Keys per tile of dot_tiles (kernels/attention_products.hpp): 16 positions, stored transposed.
inline constexpr int key_tile = 16;

/// Tiles that hold `positions` keys (the last one possibly partly used).
constexpr std::int64_t key_tiles_for(std::int64_t positions) { return (positions + key_tile - 1) / key_tile; }

/// Up to this many rows of x, f32/f16/bf16 weights stored [out, in] are read once by fused
/// (convert-and-) dot products, each weight vector serving several rows of x (fused.inl); above
/// it, blocks are (converted to f32 and) multiplied by the GEMM. A batch of decoding sequences is
/// one row each. f16 TinyLlama shape, 2 threads, total t/s of B sequences: AMD EPYC Zen 4
/// (AVX-512) B = 8 17.4 (GEMM) -> 48-54, B = 16 50; Zen 3 (AVX2, 2 × 2 rows at the time) B = 8
/// 34.5, B = 16 35.3, about the GEMM's prompt rate.
inline constexpr std::int64_t fused_dot_max_rows = 16;

/// The same for weights stored [in, out] (GPT-2's Conv1D), read by row-by-row accumulation, which
/// passes over each slab of weights once per row of x.
inline constexpr std::int64_t fused_in_out_max_rows = 2;

/// The input of the decode kernels: n rows of x (row stride ldx), and for quantized weights the
/// same rows quantized for their dot product, act_bytes each.
struct DecodeInput {
  const float* x = nullptr;
  std::int64_t ldx = 0;
  std::int64_t n = 0;
  const std::byte* act = nullptr;
  std::size_t act_bytes = 0;
};

/// The kinds of arithmetic whose peak rate machine.hpp measures: f32 FMA, int8 dot products (the
/// integer GEMM's vpdpbusd) and bf16 dot products (the bf16 GEMM's vdpbf16ps).
enum class Arithmetic : std::uint8_t { f32, int8, bf16 };

/// Rows of activations per tile of the integer GEMM's register tile (kernels/level/gemm_int8.inl).
inline constexpr int int8_row_tile = 8;

/// Rows of activations quantized for the integer GEMM (kernels/level/gemm_int8.inl): n rows of k
/// values in tiles of int8_row_tile rows (the last one padded with zero rows), each tile's values
/// interleaved so that a register tile reads them from one pointer: q [tile][k / 4][row][4] the
/// int8 quants, d [tile][k / 32][row] the scale of each block of 32, and per sub-block of S
/// values of the weight type (16 or 32) corr [tile][k / S][row] = −bias · Σ quants (bias: that of
/// the level's weight panel, int8_panel_bias) and
/// sums [tile][k / S][row] = scale · Σ quants.
struct Int8Rows {
  const std::int8_t* q = nullptr;
  const float* d = nullptr;
  const std::int32_t* corr = nullptr;
  const float* sums = nullptr;
  std::int64_t n = 0, k = 0;
};

/// Bytes of one sub-block of s columns of a 16-row group of the integer GEMM's weight panel
/// (kernels/level/gemm_int8.inl).
constexpr std::size_t int8_panel_subblock_bytes(int s, bool offsets) {
  return std::size_t(s) * 16 + 64 * (offsets ? 2 : 1);
}

/// Bytes of a 16-row group of the panel for rows of k values.
constexpr std::size_t int8_panel_group_bytes(std::int64_t k, int s, bool offsets) {
  return std::size_t(k / s) * int8_panel_subblock_bytes(s, offsets);
}

/// Bytes of scratch pack_int8_group needs for rows of k values: 16 rows' int8 values, scales and
/// offsets.
constexpr std::size_t int8_pack_scratch_bytes(std::int64_t k) { return std::size_t(16 * k + 2 * 16 * 4 * (k / 16)); }

/// The int8 form of a quantized type's rows (kernels/quant/to_int8.inl): per sub-block of
/// `subblock` values (16 or 32) a scale and, with `offsets`, an offset; every value q lies in
/// [−bias, 2^bits − 1 − bias], so q + bias is an unsigned number of `bits` bits (bits 8, bias 128:
/// any int8). The AVX2 integer GEMM sums the products of narrow values in 16 bits before widening.
struct Int8Form {
  int subblock = 32;
  bool offsets = false;
  int bias = 128;
  int bits = 8;
};

/// A quantized row of n weights → its int8 values q[n], a scale (and an offset) per sub-block
/// (kernels/quant/to_int8.inl).
using ToInt8Row = void (*)(const std::byte* src, std::int64_t n, std::int8_t* q, float* scale, float* offset);

/// One weight type's kernels at one level (a cell of the type traits table); null where the type
/// has no such kernel.
struct LevelTypeKernels {
  /// Outputs [r0, r1) of y[n, out] = x · Wᵀ, W stored [out, in]: one pass over the weights.
  void (*decode_rows)(const DecodeInput& in, const TensorRef& w, float* y, std::int64_t ldy, std::int64_t r0,
                      std::int64_t r1) = nullptr;
  /// y[n, out] = Σ_{i0 <= i < i1} x[:, i] · W[i, :] for W stored [in, out] (f32 / f16 / bf16).
  void (*in_out_rows)(const TensorRef& w, const float* x, std::int64_t n, std::int64_t ldx, float* y,
                      std::int64_t ldy, std::int64_t i0, std::int64_t i1) = nullptr;
  /// Σ w·x of a quantized row of n values and activations made by quantize_activation.
  float (*dot)(std::int64_t n, const std::byte* w, const std::byte* act) = nullptr;
  /// An f32 activation row of n values → the 8-bit blocks `dot` reads.
  void (*quantize_activation)(const float* x, std::byte* dst, std::int64_t n) = nullptr;
  /// n stored values (a whole number of blocks) → f32.
  void (*to_f32)(const std::byte* src, float* dst, std::int64_t n) = nullptr;
  /// Up to this many rows of x the decode kernels run; above it, the GEMM path.
  std::int64_t decode_max_rows = 0;
  /// The row's int8 values for the integer GEMM and their form (null for f32, f16, bf16).
  ToInt8Row to_int8 = nullptr;
  Int8Form int8{};
};

/// The kernels of one level that do not depend on a weight type.
struct LevelKernels {
  KernelLevel level = KernelLevel::scalar;
  // attention's two products (kernels/attention_products.hpp), keys and values f32 or f16
  void (*dot_tiles_f32)(const float*, std::int64_t, int, const float*, int, int, float*, std::int64_t) = nullptr;
  void (*dot_tiles_f16)(const float*, std::int64_t, int, const f16*, int, int, float*, std::int64_t) = nullptr;
  void (*weighted_rows_add_f32)(const float*, std::int64_t, int, const float*, std::int64_t, int, int, float*,
                                std::int64_t) = nullptr;
  void (*weighted_rows_add_f16)(const float*, std::int64_t, int, const f16*, std::int64_t, int, int, float*,
                                std::int64_t) = nullptr;
  /// n f32 values → f16, rounding to nearest even.
  void (*f32_to_f16)(const float* src, f16* dst, std::int64_t n) = nullptr;
  // element-wise (kernels/ops.hpp): softmax of a row, the activations over a row, y += x
  void (*softmax)(float* x, std::int64_t n) = nullptr;
  void (*silu)(float* x, std::int64_t n) = nullptr;
  void (*gelu_tanh)(float* x, std::int64_t n) = nullptr;
  void (*gelu_erf)(float* x, std::int64_t n) = nullptr;
  void (*relu)(float* x, std::int64_t n) = nullptr;
  void (*add)(float* y, const float* x, std::int64_t n) = nullptr;
  /// The prompt path's f32 product C[n, m] (row stride ldc) = A[n, k] (lda) · Bᵀ, B's row j at
  /// b + j·ldb, or with `b_k_major` B's element (j, p) at b[p·ldb + j] (kernels/level/gemm.inl).
  void (*gemm_f32)(const float* a, std::int64_t lda, std::int64_t n, std::int64_t k, const float* b, std::int64_t ldb,
                   bool b_k_major, std::int64_t m, float* c, std::int64_t ldc) = nullptr;
  /// The same product for f16 / bf16 weights read in place, C[n, m] = A · (m weights of w from
  /// j0)ᵀ, each converted to f32 as it is packed; null where the level multiplies with Eigen.
  void (*gemm_half)(const float* a, std::int64_t lda, std::int64_t n, std::int64_t k, const TensorRef& w, bool in_out,
                    std::int64_t j0, std::int64_t m, float* c, std::int64_t ldc) = nullptr;
  /// The integer GEMM (kernels/level/gemm_int8.inl), null where the level has none: rows of x →
  /// Int8Rows; 16-row groups of weights → the panel; y[n, rows] = x · panelᵀ.
  void (*quantize_int8_rows)(const float* x, std::int64_t n, std::int64_t ldx, std::int64_t k, const Int8Form& form,
                             std::int8_t* q, float* d, std::int32_t* corr, float* sums) = nullptr;
  void (*pack_int8_group)(const TensorRef& w, std::int64_t r0, int rows, ToInt8Row to_int8, const Int8Form& form,
                          std::byte* dst, std::int8_t* row) = nullptr;
  void (*gemm_int8)(const Int8Rows& x, const std::byte* panel, std::int64_t rows, const Int8Form& form, float* y,
                    std::int64_t ldy) = nullptr;
  /// The bf16 GEMM (kernels/level/gemm_bf16.inl), null where the level has none; callable only
  /// where cpu_features().bf16_prompts: rows of x → bf16 pairs; C[n, m] = A · (m weights of w
  /// from j0)ᵀ for f16 / bf16 w.
  void (*rows_to_bf16)(const float* x, std::int64_t n, std::int64_t ldx, std::int64_t k, std::uint32_t* dst) = nullptr;
  void (*gemm_bf16)(const std::uint32_t* a, std::int64_t lda, std::int64_t n, std::int64_t k, const TensorRef& w,
                    bool in_out, std::int64_t j0, std::int64_t m, float* c, std::int64_t ldc) = nullptr;
  /// The read-bandwidth probe (machine.hpp): Σ of the 64-bit words of n bytes read as `streams`
  /// parts side by side.
  std::uint64_t (*sum_words)(const std::byte* p, std::size_t n, int streams) = nullptr;
  /// The peak probe (machine.hpp): multiply-adds done by `steps` steps of register-only chains of
  /// the kind of arithmetic given, 0 where the level has none.
  double (*peak_multiply_adds)(Arithmetic a, std::int64_t steps) = nullptr;
};

}  // namespace loom::kernels

// ---- the levels ----------------------------------------------------------------------------------

#define LOOM_LEVEL 0
namespace loom::kernels::scalar {
using namespace loom::kernels::detail;
#include "loom/kernels/level/all.inl"
}  // namespace loom::kernels::scalar
#undef LOOM_LEVEL

#if LOOM_X86
#define LOOM_LEVEL 1
LOOM_TARGET_AVX2_BEGIN
namespace loom::kernels::avx2 {
using namespace loom::kernels::detail;
#include "loom/kernels/level/all.inl"
}  // namespace loom::kernels::avx2
LOOM_TARGET_END
#undef LOOM_LEVEL

#define LOOM_LEVEL 2
LOOM_TARGET_AVX512_BEGIN
namespace loom::kernels::avx512 {
using namespace loom::kernels::detail;
#include "loom/kernels/level/all.inl"
}  // namespace loom::kernels::avx512
LOOM_TARGET_END
#undef LOOM_LEVEL
#endif  // LOOM_X86

#undef LOOM_UNROLL

namespace loom::kernels {

/// The level-wide kernels of level l (the portable ones where loom has no such level here).
inline const LevelKernels& level_kernels(KernelLevel l) noexcept {
#if LOOM_X86
  if (l == KernelLevel::avx512) return avx512::level_table;
  if (l == KernelLevel::avx2) return avx2::level_table;
#endif
  (void)l;
  return scalar::level_table;
}

/// The level-wide kernels of the level in use (cpu_features().level).
inline const LevelKernels& level_kernels() { return level_kernels(cpu_features().level); }

}  // namespace loom::kernels

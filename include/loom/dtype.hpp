// Element and block types of stored tensors: f32, f64, f16, bf16 and the ggml quantized blocks.
//
// A weight keeps the type it was stored in; kernels convert on the fly. Quantized types are
// arrays of fixed-size blocks; `block_elems(t)` weights are packed into `block_bytes(t)` bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "loom/error.hpp"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace loom {

/// IEEE 754 binary16, stored as its bits.
struct f16 {
  std::uint16_t bits;
};
/// bfloat16 (the upper half of an f32), stored as its bits.
struct bf16 {
  std::uint16_t bits;
};

namespace detail {

inline float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// Portable f16 → f32 (handles subnormals, infinities and NaN). The scalar reference.
inline float f16_to_f32_scalar(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // Subnormal: value = mant * 2^-24. Exact in f32.
    float v = float(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  return bits_to_float(sign | ((exp + 112) << 23) | (mant << 13));
}

/// Portable f32 → f16 with round-to-nearest-even. The scalar reference.
inline std::uint16_t f32_to_f16_scalar(float f) {
  const std::uint32_t x = float_to_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t exp = (x >> 23) & 0xffu;
  std::uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return std::uint16_t(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0));
  const int e = int(exp) - 127 + 15;
  if (e >= 0x1f) return std::uint16_t(sign | 0x7c00u);  // overflow → inf
  if (e <= 0) {
    if (e < -10) return std::uint16_t(sign);  // underflows to ±0
    mant |= 0x800000u;
    const int shift = 14 - e;
    std::uint32_t half = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1);
    const std::uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return std::uint16_t(sign | half);
  }
  std::uint32_t half = (std::uint32_t(e) << 10) | (mant >> 13);
  const std::uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // may carry into exponent: ok
  return std::uint16_t(sign | half);
}

}  // namespace detail

inline float to_float(f16 h) {
#if defined(__F16C__)
  return _cvtsh_ss(h.bits);
#else
  return detail::f16_to_f32_scalar(h.bits);
#endif
}
inline f16 to_f16(float f) {
#if defined(__F16C__)
  return f16{static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT))};
#else
  return f16{detail::f32_to_f16_scalar(f)};
#endif
}
inline float to_float(bf16 b) { return detail::bits_to_float(std::uint32_t(b.bits) << 16); }
/// f32 → bf16 with round-to-nearest-even (NaN stays NaN).
inline bf16 to_bf16(float f) {
  std::uint32_t x = detail::float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return bf16{std::uint16_t((x >> 16) | 0x40u)};
  x += 0x7fffu + ((x >> 16) & 1u);
  return bf16{std::uint16_t(x >> 16)};
}

// ggml quantized blocks (layouts as in the GGUF specification).
inline constexpr int qk8_0 = 32;
inline constexpr int qk4_0 = 32;
inline constexpr int qk_k = 256;

/// Q8_0: 32 weights = d · q, q int8.
struct block_q8_0 {
  f16 d;
  std::int8_t qs[qk8_0];
};
/// Q4_0: 32 weights = d · (q − 8), q 4-bit; byte j holds weight j (low nibble) and j+16 (high).
struct block_q4_0 {
  f16 d;
  std::uint8_t qs[qk4_0 / 2];
};
/// Q4_1: 32 weights = d · q + m, q 4-bit; nibbles as Q4_0.
struct block_q4_1 {
  f16 d;
  f16 m;
  std::uint8_t qs[qk4_0 / 2];
};
/// Q5_0: 32 weights = d · (q − 16), q 5-bit: the low 4 bits as Q4_0's nibbles, bit 4 of weight j
/// in bit j of the little-endian 32-bit qh.
struct block_q5_0 {
  f16 d;
  std::uint8_t qh[4];
  std::uint8_t qs[qk4_0 / 2];
};
/// Q5_1: 32 weights = d · q + m, q 5-bit as Q5_0's.
struct block_q5_1 {
  f16 d;
  f16 m;
  std::uint8_t qh[4];
  std::uint8_t qs[qk4_0 / 2];
};
/// IQ4_NL: 32 weights = d · v[q], q 4-bit with Q4_0's nibble order, v a fixed table of 16 int8
/// values (kernels/quant.hpp).
struct block_iq4_nl {
  f16 d;
  std::uint8_t qs[qk4_0 / 2];
};
/// IQ4_XS: 256 weights in 8 sub-blocks of 32, each with IQ4_NL's table and nibble order (qs
/// bytes 16j .. 16j+15 are sub-block j) and a 6-bit scale ls_j (low 4 bits: nibble j % 2 of
/// scales_l[j / 2]; high 2: bits 2j, 2j+1 of scales_h): weight = d · (ls_j − 32) · v[q].
struct block_iq4_xs {
  f16 d;
  std::uint16_t scales_h;
  std::uint8_t scales_l[qk_k / 64];
  std::uint8_t qs[qk_k / 2];
};
/// Q2_K: 256 weights in 16 sub-blocks of 16; scales[j] holds sub-block j's 4-bit scale (low) and
/// min (high); the 2-bit quant of weight 128n + 32k + l (l < 32) is bits 2k, 2k+1 of qs[32n + l].
struct block_q2_k {
  std::uint8_t scales[qk_k / 16];
  std::uint8_t qs[qk_k / 4];
  f16 d;
  f16 dmin;
};
/// Q3_K: Q2_K's 2-bit quants plus a high bit per weight (bit 4n + k of hmask[l] for weight
/// 128n + 32k + l), 16 6-bit scales packed in 12 bytes, one f16 scale.
struct block_q3_k {
  std::uint8_t hmask[qk_k / 8];
  std::uint8_t qs[qk_k / 4];
  std::uint8_t scales[12];
  f16 d;
};
/// Q4_K: 256 weights in 8 sub-blocks of 32; 6-bit scales and mins packed in 12 bytes.
struct block_q4_k {
  f16 d;
  f16 dmin;
  std::uint8_t scales[12];
  std::uint8_t qs[qk_k / 2];
};
/// Q5_K: Q4_K's layout plus a fifth bit per weight: bit 2k of qh[l] belongs to weight 64k + l,
/// bit 2k+1 to weight 64k + 32 + l.
struct block_q5_k {
  f16 d;
  f16 dmin;
  std::uint8_t scales[12];
  std::uint8_t qh[qk_k / 8];
  std::uint8_t qs[qk_k / 2];
};
/// Q6_K: 256 weights in 16 sub-blocks of 16; 4 low bits in ql, 2 high bits in qh, int8 scales.
struct block_q6_k {
  std::uint8_t ql[qk_k / 2];
  std::uint8_t qh[qk_k / 4];
  std::int8_t scales[qk_k / 16];
  f16 d;
};
static_assert(sizeof(block_q8_0) == 34);
static_assert(sizeof(block_q4_0) == 18);
static_assert(sizeof(block_q4_1) == 20);
static_assert(sizeof(block_q5_0) == 22);
static_assert(sizeof(block_q5_1) == 24);
static_assert(sizeof(block_iq4_nl) == 18);
static_assert(sizeof(block_iq4_xs) == 136);
static_assert(sizeof(block_q2_k) == 84);
static_assert(sizeof(block_q3_k) == 110);
static_assert(sizeof(block_q4_k) == 144);
static_assert(sizeof(block_q5_k) == 176);
static_assert(sizeof(block_q6_k) == 210);

/// The storage type of a tensor.
enum class DType : std::uint8_t { f32, f64, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q2_k, q3_k, q4_k, q5_k, q6_k };

/// The C++ type of each DType's elements or blocks, in the enum's order.
using dtype_storage = std::tuple<float, double, f16, bf16, block_q8_0, block_q4_0, block_q4_1, block_q5_0, block_q5_1,
                                 block_iq4_nl, block_iq4_xs, block_q2_k, block_q3_k, block_q4_k, block_q5_k, block_q6_k>;

/// The layout of a storage type: one row per DType (the kernels of each type are the rows of
/// kernels/type_traits.hpp). ggml's type_traits are the model: a new type is a new row here and
/// one there.
struct DTypeInfo {
  DType type;
  std::string_view name;
  std::int64_t block_elems;  ///< elements per block (1 for plain floating-point types)
  std::size_t block_bytes;   ///< bytes per block (the element size for plain floating-point types)
  std::uint32_t ggml_type;   ///< the type's number in GGUF files (ggml_type)
  std::uint32_t ggml_ftype;  ///< llama.cpp's llama_ftype of a file whose weights are all of this type
};

inline constexpr DTypeInfo dtype_table[] = {
    {DType::f32, "f32", 1, 4, 0, 0},
    {DType::f64, "f64", 1, 8, 28, 0},
    {DType::f16, "f16", 1, 2, 1, 1},
    {DType::bf16, "bf16", 1, 2, 30, 32},
    {DType::q8_0, "q8_0", qk8_0, sizeof(block_q8_0), 8, 7},
    {DType::q4_0, "q4_0", qk4_0, sizeof(block_q4_0), 2, 2},
    {DType::q4_1, "q4_1", qk4_0, sizeof(block_q4_1), 3, 3},
    {DType::q5_0, "q5_0", qk4_0, sizeof(block_q5_0), 6, 8},
    {DType::q5_1, "q5_1", qk4_0, sizeof(block_q5_1), 7, 9},
    {DType::iq4_nl, "iq4_nl", qk4_0, sizeof(block_iq4_nl), 20, 25},
    {DType::iq4_xs, "iq4_xs", qk_k, sizeof(block_iq4_xs), 23, 30},
    {DType::q2_k, "q2_k", qk_k, sizeof(block_q2_k), 10, 10},
    {DType::q3_k, "q3_k", qk_k, sizeof(block_q3_k), 11, 12},
    {DType::q4_k, "q4_k", qk_k, sizeof(block_q4_k), 12, 14},  // (llama.cpp's Q4_K_S is mostly Q4_K)
    {DType::q5_k, "q5_k", qk_k, sizeof(block_q5_k), 13, 16},
    {DType::q6_k, "q6_k", qk_k, sizeof(block_q6_k), 14, 18},
};
inline constexpr std::size_t dtype_count = std::size(dtype_table);
static_assert(dtype_count == std::tuple_size_v<dtype_storage>);
static_assert([] {
  for (std::size_t i = 0; i < dtype_count; ++i)
    if (std::size_t(dtype_table[i].type) != i) return false;
  return true;
}(), "dtype_table rows are in the enum's order");

/// Whether t is one of the enum's values (a DType read from outside may not be).
constexpr bool is_dtype(DType t) noexcept { return std::size_t(t) < dtype_count; }

/// The type's name as loom's tools spell it ("q4_k"); "unknown" outside the enum.
constexpr std::string_view to_string(DType t) noexcept {
  return is_dtype(t) ? dtype_table[std::size_t(t)].name : "unknown";
}

/// Elements per block (1 for plain floating-point types).
constexpr std::int64_t block_elems(DType t) noexcept { return is_dtype(t) ? dtype_table[std::size_t(t)].block_elems : 1; }

/// Bytes per block (the element size for plain floating-point types).
constexpr std::size_t block_bytes(DType t) noexcept { return is_dtype(t) ? dtype_table[std::size_t(t)].block_bytes : 0; }

constexpr bool is_quantized(DType t) noexcept { return block_elems(t) > 1; }

/// Bytes needed by a row of `n` elements of type t, or nullopt when n is not a whole number of
/// blocks or the size overflows.
constexpr std::optional<std::uint64_t> row_bytes(DType t, std::int64_t n) noexcept {
  if (n < 0 || n % block_elems(t) != 0 || block_bytes(t) == 0) return std::nullopt;
  const std::uint64_t blocks = std::uint64_t(n / block_elems(t));
  if (blocks > std::numeric_limits<std::uint64_t>::max() / block_bytes(t)) return std::nullopt;
  return blocks * block_bytes(t);
}

/// The C++ element or block type of a DType.
template <DType T>
using block_of_t = std::tuple_element_t<std::size_t(T), dtype_storage>;

namespace detail {
template <typename T, std::size_t... I>
constexpr DType dtype_index(std::index_sequence<I...>) {
  DType found = DType::f32;
  int matches = 0;
  ((std::is_same_v<T, std::tuple_element_t<I, dtype_storage>> ? (found = DType(I), ++matches) : 0), ...);
  if (matches != 1) throw "not a storage type";  // a compile error where it is used in a constant expression
  return found;
}
}  // namespace detail

/// The DType of a C++ element or block type.
template <typename T>
inline constexpr DType dtype_of_v = detail::dtype_index<T>(std::make_index_sequence<dtype_count>{});

}  // namespace loom

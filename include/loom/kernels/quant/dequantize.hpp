// Scalar reference dequantization of every quantized weight type (as ggml's dequantize_row_*):
// the definition the SIMD versions and the dot products are tested against.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <type_traits>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/quant/blocks.hpp"

namespace loom::kernels {

/// Q8_0 row of n weights (n a multiple of 32) → f32.
inline void dequantize_row_q8_0(const block_q8_0* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk8_0; ++b) {
    const float d = detail::f16f(x[b].d);
    for (int j = 0; j < qk8_0; ++j) y[b * qk8_0 + j] = d * float(x[b].qs[j]);
  }
}

// The 32-weight nibble blocks (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) share one reference: a block with
// a min `m` is d·q + m, IQ4_NL d·v[q], the others d·(q − zero); a block with `qh` has 5-bit quants.
template <typename Block>
concept block_with_min = requires(const Block& b) { b.m; };
template <typename Block>
concept block_with_high_bits = requires(const Block& b) { b.qh; };

/// IQ4_NL's 16 weight values (ggml's kvalues_iq4nl, a non-uniform 4-bit grid).
alignas(16) inline constexpr std::int8_t iq4_nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                              1,    13,   25,  38,  53,  69,  89,  113};
/// The same plus 128, as unsigned bytes (1..241), for the SIMD kernels that multiply unsigned bytes.
alignas(16) inline constexpr auto iq4_nl_values_biased = [] {
  std::array<std::uint8_t, 16> t{};
  for (std::size_t i = 0; i < 16; ++i) t[i] = std::uint8_t(iq4_nl_values[i] + 128);
  return t;
}();
template <typename Block>
concept block_with_table = std::is_same_v<Block, block_iq4_nl> || std::is_same_v<Block, block_iq4_xs>;
/// 32-weight sub-blocks per block: 8 for IQ4_XS, 1 for the others.
template <typename Block>
inline constexpr int block32s_per_block = std::is_same_v<Block, block_iq4_xs> ? qk_k / qk4_0 : 1;

/// What a block without a min subtracts from its quants: 8 (4-bit) or 16 (5-bit); 0 with a min
/// or a table.
template <typename Block>
inline constexpr int block32_zero = block_with_min<Block> || block_with_table<Block> ? 0
                                : block_with_high_bits<Block>                  ? 16
                                                                               : 8;

/// The 32 fifth bits of a Q5_0 / Q5_1 block (bit j: weight j), stored little-endian.
template <typename Block>
inline std::uint32_t q5_high_bits(const Block& b) {
  return std::uint32_t(b.qh[0]) | std::uint32_t(b.qh[1]) << 8 | std::uint32_t(b.qh[2]) << 16 |
         std::uint32_t(b.qh[3]) << 24;
}

/// The quant (0..15, or 0..31 with a fifth bit) of weight j (0..31) of a nibble block.
template <typename Block>
inline int block32_quant(const Block& b, int j) {
  int q = j < 16 ? (b.qs[j] & 0x0f) : (b.qs[j - 16] >> 4);
  if constexpr (block_with_high_bits<Block>) q |= int(q5_high_bits(b) >> j & 1u) << 4;
  return q;
}

/// The integer weight of element j of a nibble block before its scale (and min): q − zero, or
/// IQ4_NL's table value.
template <typename Block>
inline int block32_value(const Block& b, int j) {
  if constexpr (block_with_table<Block>)
    return iq4_nl_values[block32_quant(b, j)];
  else
    return block32_quant(b, j) - block32_zero<Block>;
}

/// Q4_0 / Q4_1 / Q5_0 / Q5_1 / IQ4_NL row of n weights (n a multiple of 32) → f32.
template <typename Block>
inline void dequantize_row_block32(const Block* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    const float d = detail::f16f(x[b].d);
    float* o = y + b * qk4_0;
    if constexpr (block_with_min<Block>) {
      const float m = detail::f16f(x[b].m);
      for (int j = 0; j < qk4_0; ++j) o[j] = d * float(block32_quant(x[b], j)) + m;
    } else {
      for (int j = 0; j < qk4_0; ++j) o[j] = d * float(block32_value(x[b], j));
    }
  }
}

/// Q4_0 row of n weights (n a multiple of 32) → f32.
inline void dequantize_row_q4_0(const block_q4_0* x, float* y, std::int64_t n) { dequantize_row_block32(x, y, n); }
/// IQ4_NL row of n weights (n a multiple of 32) → f32.
inline void dequantize_row_iq4_nl(const block_iq4_nl* x, float* y, std::int64_t n) { dequantize_row_block32(x, y, n); }

/// The signed scale ls − 32 of sub-block j (0..7) of an IQ4_XS super-block: ls's low 4 bits are
/// nibble j % 2 of scales_l[j / 2], its high 2 bits are bits 2j, 2j + 1 of scales_h.
inline int iq4_xs_scale(const block_iq4_xs& b, int j) {
  return (((b.scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | (((b.scales_h >> (2 * j)) & 3) << 4)) - 32;
}

/// IQ4_XS row of n weights (n a multiple of 256) → f32: sub-block j is an IQ4_NL block of scale
/// d·(ls_j − 32).
inline void dequantize_row_iq4_xs(const block_iq4_xs* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk_k; ++b)
    for (int j = 0; j < block32s_per_block<block_iq4_xs>; ++j) {
      const float dl = detail::f16f(x[b].d) * float(iq4_xs_scale(x[b], j));
      const std::uint8_t* q = x[b].qs + 16 * j;
      float* o = y + b * qk_k + qk4_0 * j;
      for (int i = 0; i < 16; ++i) {
        o[i] = dl * float(iq4_nl_values[q[i] & 0x0f]);
        o[i + 16] = dl * float(iq4_nl_values[q[i] >> 4]);
      }
    }
}

/// The quants of weights 64k + l (`low`) and 64k + 32 + l (`high`) of a Q4_K (0..15) or Q5_K
/// (0..31) super-block.
template <typename Block>
inline void q4_k_quant_pair(const Block& b, int k, int l, int& low, int& high) {
  low = b.qs[32 * k + l] & 0x0f;
  high = b.qs[32 * k + l] >> 4;
  if constexpr (block_with_high_bits<Block>) {
    low |= (b.qh[l] >> (2 * k) & 1) << 4;
    high |= (b.qh[l] >> (2 * k + 1) & 1) << 4;
  }
}

/// Q4_K / Q5_K row of n weights (n a multiple of 256) → f32.
template <typename Block>
inline void dequantize_row_k_min(const Block* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float d = detail::f16f(x[b].d), dmin = detail::f16f(x[b].dmin);
    float* o = y + b * qk_k;
    for (int k = 0; k < 4; ++k) {  // 64 weights: sub-blocks 2k (low nibbles) and 2k+1 (high)
      std::uint8_t sc0, m0, sc1, m1;
      q4_k_scale_min(2 * k, x[b].scales, sc0, m0);
      q4_k_scale_min(2 * k + 1, x[b].scales, sc1, m1);
      for (int l = 0; l < 32; ++l) {
        int q0, q1;
        q4_k_quant_pair(x[b], k, l, q0, q1);
        o[64 * k + l] = d * float(sc0) * float(q0) - dmin * float(m0);
        o[64 * k + 32 + l] = d * float(sc1) * float(q1) - dmin * float(m1);
      }
    }
  }
}

/// Q4_K row of n weights (n a multiple of 256) → f32.
inline void dequantize_row_q4_k(const block_q4_k* x, float* y, std::int64_t n) { dequantize_row_k_min(x, y, n); }

/// The 2-bit quant (0..3) of weight e (0..255) of a Q2_K or Q3_K super-block.
template <typename Block>
inline int q2_k_quant(const Block& b, int e) {
  const int n = e / 128, k = e % 128 / 32, l = e % 32;
  return b.qs[32 * n + l] >> (2 * k) & 3;
}

/// The 6-bit scale (0..63, used as sc − 32) of sub-block j (0..15) of a Q3_K super-block: the low
/// 4 bits are the low (j < 8) or high nibble of byte j % 8, the top 2 bits are bits 2·(j / 4),
/// 2·(j / 4) + 1 of byte 8 + j % 4.
inline int q3_k_scale(const std::uint8_t* s, int j) {
  const int low = j < 8 ? s[j] & 0x0f : s[j - 8] >> 4;
  return low | (s[8 + j % 4] >> (2 * (j / 4)) & 3) << 4;
}

/// The quant of weight e (0..255) of a Q3_K super-block: q − 4 where its hmask bit is clear (−4..3).
inline int q3_k_value(const block_q3_k& b, int e) {
  const int n = e / 128, k = e % 128 / 32, l = e % 32;
  return q2_k_quant(b, e) - (b.hmask[l] >> (4 * n + k) & 1 ? 0 : 4);
}

/// Q2_K row of n weights (n a multiple of 256) → f32, a sub-block of 16 per step.
inline void dequantize_row_q2_k(const block_q2_k* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float d = detail::f16f(x[b].d), dmin = detail::f16f(x[b].dmin);
    for (int j = 0; j < qk_k / 16; ++j) {
      const int sc = x[b].scales[j];
      const float dl = d * float(sc & 0x0f), ml = dmin * float(sc >> 4);
      const std::uint8_t* q = x[b].qs + 32 * (j / 8) + 16 * (j % 2);  // weights 16j .. 16j+15
      const int shift = 2 * (j % 8 / 2);
      // one rounding (std::fma), so that the SIMD dequantization equals it in every build
      for (int l = 0; l < 16; ++l) y[b * qk_k + 16 * j + l] = std::fma(dl, float(q[l] >> shift & 3), -ml);
    }
  }
}

/// Q3_K row of n weights (n a multiple of 256) → f32, a sub-block of 16 per step.
inline void dequantize_row_q3_k(const block_q3_k* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float d = detail::f16f(x[b].d);
    for (int j = 0; j < qk_k / 16; ++j) {
      const float dl = d * float(q3_k_scale(x[b].scales, j) - 32);
      const std::uint8_t* q = x[b].qs + 32 * (j / 8) + 16 * (j % 2);  // weights 16j .. 16j+15
      const std::uint8_t* hm = x[b].hmask + 16 * (j % 2);
      const int shift = 2 * (j % 8 / 2), bit = j / 8 * 4 + j % 8 / 2;
      for (int l = 0; l < 16; ++l)
        y[b * qk_k + 16 * j + l] = dl * float(int(q[l] >> shift & 3) - (hm[l] >> bit & 1 ? 0 : 4));
    }
  }
}

/// The 6-bit quant (0..63) of weight e (0..255) of a Q6_K super-block.
inline int q6_k_quant(const block_q6_k& b, int e) {
  const int h = e / 128, r = e % 128, g = r / 32, l = r % 32;  // half, group of 32, index
  const std::uint8_t lo = b.ql[64 * h + 32 * (g & 1) + l];
  const int low4 = (g < 2) ? (lo & 0x0f) : (lo >> 4);
  const int high2 = (b.qh[32 * h + l] >> (2 * g)) & 3;
  return low4 | (high2 << 4);
}

/// Q6_K row of n weights (n a multiple of 256) → f32.
inline void dequantize_row_q6_k(const block_q6_k* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float d = detail::f16f(x[b].d);
    for (int e = 0; e < qk_k; ++e)
      y[b * qk_k + e] = d * float(x[b].scales[e / 16]) * float(q6_k_quant(x[b], e) - 32);
  }
}

}  // namespace loom::kernels

// Quantized weight blocks (ggml Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_K,
// Q5_K, Q6_K): scalar reference dequantization, reference quantization to Q8_0 / Q4_0 / Q4_1 /
// Q5_0 / Q5_1 / IQ4_NL / IQ4_XS / Q4_K / Q5_K / Q6_K (llama.cpp's quantizers, without an
// importance matrix), quantization of f32 activations to 8-bit blocks, and dot products of a
// weight row with quantized activations in integer arithmetic.
//
// Every dot product has a portable scalar version (the reference) and, when the compiler targets
// them, AVX2 and AVX-512 versions (VNNI `vpdpbusd` where available); `dot_*` picks the widest one
// compiled in. The SIMD versions compute the same integer sums per block as the scalar ones; only
// the order of the final float accumulation differs.
//
// Block layouts (see dtype.hpp for the structs):
//   Q8_0  32 weights: w = d·q,            q int8
//   Q4_0  32 weights: w = d·(q − 8),      q 4-bit; byte j holds weight j (low nibble), j+16 (high)
//   Q4_1  32 weights: w = d·q + m,        q 4-bit as Q4_0
//   Q5_0  32 weights: w = d·(q − 16),     q 5-bit: low 4 bits as Q4_0, bit 4 of weight j = bit j of qh
//   Q5_1  32 weights: w = d·q + m,        q 5-bit as Q5_0
//   IQ4_NL 32 weights: w = d·v[q],        q 4-bit as Q4_0, v = iq4_nl_values
//   IQ4_XS 256 weights: 8 sub-blocks of 32 laid out as IQ4_NL's: w = d·(ls_j − 32)·v[q], ls_j 6-bit
//   Q2_K 256 weights: 16 sub-blocks of 16: w = d·sc_j·q − dmin·m_j, q 2-bit, sc_j / m_j 4-bit;
//         bits 2k, 2k+1 of qs[32n+l] are weight 128n+32k+l
//   Q3_K 256 weights: 16 sub-blocks of 16: w = d·(sc_j − 32)·(q − 4·(1 − h)), q as Q2_K, h = bit
//         4n+k of hmask[l] for the same weight, sc_j 6-bit packed in 12 bytes
//   Q4_K 256 weights: 8 sub-blocks of 32: w = d·sc_j·q − dmin·m_j, q 4-bit, sc_j / m_j 6-bit
//         packed in 12 bytes; qs byte 32k+l holds weight 64k+l (low) and 64k+32+l (high)
//   Q5_K 256 weights: Q4_K plus bit 4 of the quants in qh: bits 2k / 2k+1 of qh[l] are those of
//         weights 64k+l / 64k+32+l
//   Q6_K 256 weights: 16 sub-blocks of 16: w = d·sc_j·(q − 32), q 6-bit = 4 low bits in ql,
//         2 high bits in qh; sc_j int8
//
// Activations are quantized per weight type: the 32-weight blocks and IQ4_XS (whose sub-blocks
// are 32-weight blocks) use `block_q8_a` (groups of 16 blocks of 32 values, an f32 scale and the
// sum of the quants per block), the k-quants use `block_q8_k` (256 values, one f32 scale, sums of
// every 16) so that a whole super-block is one integer sum.
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

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace loom::kernels {

/// Activations quantized to int8 for the 32-weight blocks, 16 blocks of 32 values (512 values)
/// per group, laid out for the SIMD dot products: the 512 quants (in the order q8_a_offset
/// gives), then the 16 scales, then the 16 sums of quants (for the Q4_0 / Q5_0 and signed-byte
/// offsets and the mins of Q4_1 / Q5_1). Value i of block j: x ≈ d[j]·qs[q8_a_offset(halves, j,
/// i)]. A row's last group may be partial; its unused blocks are all zero.
struct block_q8_a {
  std::int8_t qs[16 * qk8_0];
  float d[16];
  std::int32_t sum[16];
};
/// 256 activations quantized to int8 with one scale: value i ≈ d·qs[q8_k_offset(q4_k, i)];
/// bsums[j] = the sum of the quants of values 16j .. 16j+15.
struct block_q8_k {
  float d;
  std::int8_t qs[qk_k];
  std::int16_t bsums[qk_k / 16];
};
static_assert(sizeof(block_q8_a) == 640);
inline constexpr std::int64_t q8_a_group = 16;  ///< blocks per block_q8_a

/// Where value i (0..31) of block j (0..15) sits among a block_q8_a's 512 quants. For Q8_0
/// weights (`halves` false) each block's 32 values are in order, so one 64-byte load meets two
/// weight blocks. Q4_0 byte i holds weights i (low nibble) and i + 16 (high nibble), so for Q4_0
/// (`halves` true) every four blocks store their first 16 values, then their last 16: one
/// 64-byte load meets the low nibbles of four weight blocks, the next one their high nibbles.
constexpr int q8_a_offset(bool halves, int j, int i) noexcept {
  return halves ? 128 * (j / 4) + 64 * (i / 16) + 16 * (j % 4) + i % 16 : qk8_0 * j + i;
}
static_assert(sizeof(block_q8_k) == 292);

/// Whether activations for weight type w are stored in q8_a_offset's `halves` order: the types
/// whose 32-weight blocks hold two weights per byte (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS).
constexpr bool nibble_halves(DType w) noexcept {
  return w == DType::q4_0 || w == DType::q4_1 || w == DType::q5_0 || w == DType::q5_1 || w == DType::iq4_nl ||
         w == DType::iq4_xs;
}

/// Whether the dot products of weight type w read block_q8_a activations (Q8_0 and the nibble
/// types above); the other k-quants read block_q8_k.
constexpr bool q8_a_activations(DType w) noexcept { return w == DType::q8_0 || nibble_halves(w); }

/// Where value i (0..255) sits among a block_q8_k's quants. Q2_K, Q3_K and Q6_K (`q4_k` false)
/// read them in order. A Q4_K (and Q5_K) super-block stores sub-blocks 4h, 4h+1, 4h+2, 4h+3 of 32
/// weights (h = 0, 1) in 64 bytes whose low nibbles are sub-blocks 4h and 4h+2 and high nibbles
/// 4h+1 and 4h+3, so for Q4_K / Q5_K (`q4_k` true) each 128 values store their sub-blocks in the
/// order 0, 2, 1, 3: one 64-byte load meets the low nibbles, the next the high nibbles.
constexpr int q8_k_offset(bool q4_k, int i) noexcept {
  if (!q4_k) return i;
  const int s = i % 128 / 32;  // sub-block within the 128; 0, 2, 1, 3 → positions 0, 1, 2, 3
  return i - i % 128 + 32 * (s == 1 ? 2 : s == 2 ? 1 : s) + i % 32;
}

namespace detail {

inline float f16f(f16 h) { return to_float(h); }

inline void check_multiple(std::int64_t n, std::int64_t block, const char* what) {
  if (n < 0 || n % block != 0)
    fail(ErrorKind::invalid_argument, "kernels", what, ": row length ", n, " is not a multiple of ", block);
}

/// How far ahead of the block being multiplied the dot products ask for their row's bytes.
/// Hardware prefetchers alone leave a core short of misses in flight on some machines: one core
/// of an Intel Xeon (Emerald Rapids) of this project's read 2048-wide rows from DRAM at 10.4-12.4
/// GB/s with none, 14.5-15.3 with 1024 bytes ahead and 14.8-15.3 with 2048-4096 (the probe reads
/// 17): Q8_0 12.4 -> 15.3, Q4_0 11.1 -> 15.0, Q4_K 10.4 -> 14.8, Q6_K 10.7 -> 15.0.
inline constexpr std::size_t quant_prefetch_distance = 2048;

/// Prefetches the cache lines of [p + distance, p + distance + bytes) into L1 (one request per
/// 64 bytes); every kernel that streams rows ahead of the hardware prefetcher uses it. A
/// prefetch never faults, so the lines may lie past the row's end; the address is formed as an
/// integer, not by pointer arithmetic beyond the object.
inline void prefetch_ahead(const void* p, std::size_t bytes, std::size_t distance = quant_prefetch_distance) {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p) + distance;
#if defined(__GNUC__) || defined(__clang__)
  for (std::size_t o = 0; o < bytes; o += 64) __builtin_prefetch(reinterpret_cast<const void*>(a + o), 0, 3);
#else
  (void)a, (void)bytes;
#endif
}

}  // namespace detail

// ---- Q4_K scale unpacking ------------------------------------------------------------------

/// The 6-bit scale and min of sub-block j (0..7) of a Q4_K super-block. Bytes 0-3 hold the low 6
/// bits of scales 0-3, bytes 4-7 the low 6 bits of mins 0-3; bytes 8-11 hold the low 4 bits of
/// scale / min 4-7 (low / high nibble), whose top 2 bits are the top bits of bytes 0-3 / 4-7.
inline void q4_k_scale_min(int j, const std::uint8_t* s, std::uint8_t& sc, std::uint8_t& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = std::uint8_t((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
    m = std::uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

/// All eight scales (low 8 bytes) and mins (high 8 bytes) of a Q4_K super-block at once, with
/// 32-bit word operations equivalent to q4_k_scale_min (bytes j of the results are sub-block j's).
inline void q4_k_scales_mins(const std::uint8_t* s, std::uint64_t& scales, std::uint64_t& mins) {
  std::uint32_t u[3];
  std::memcpy(u, s, 12);
  scales = std::uint64_t(u[0] & 0x3f3f3f3fu) |
           std::uint64_t((u[2] & 0x0f0f0f0fu) | ((u[0] >> 2) & 0x30303030u)) << 32;
  mins = std::uint64_t(u[1] & 0x3f3f3f3fu) |
         std::uint64_t(((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 2) & 0x30303030u)) << 32;
}

// ---- scalar reference dequantization --------------------------------------------------------

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
inline constexpr int q32_per_block = std::is_same_v<Block, block_iq4_xs> ? qk_k / qk4_0 : 1;

/// What a block without a min subtracts from its quants: 8 (4-bit) or 16 (5-bit); 0 with a min
/// or a table.
template <typename Block>
inline constexpr int q32_zero = block_with_min<Block> || block_with_table<Block> ? 0
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
inline int q32_quant(const Block& b, int j) {
  int q = j < 16 ? (b.qs[j] & 0x0f) : (b.qs[j - 16] >> 4);
  if constexpr (block_with_high_bits<Block>) q |= int(q5_high_bits(b) >> j & 1u) << 4;
  return q;
}

/// The integer weight of element j of a nibble block before its scale (and min): q − zero, or
/// IQ4_NL's table value.
template <typename Block>
inline int q32_value(const Block& b, int j) {
  if constexpr (block_with_table<Block>)
    return iq4_nl_values[q32_quant(b, j)];
  else
    return q32_quant(b, j) - q32_zero<Block>;
}

/// Q4_0 / Q4_1 / Q5_0 / Q5_1 / IQ4_NL row of n weights (n a multiple of 32) → f32.
template <typename Block>
inline void dequantize_row_q32(const Block* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    const float d = detail::f16f(x[b].d);
    float* o = y + b * qk4_0;
    if constexpr (block_with_min<Block>) {
      const float m = detail::f16f(x[b].m);
      for (int j = 0; j < qk4_0; ++j) o[j] = d * float(q32_quant(x[b], j)) + m;
    } else {
      for (int j = 0; j < qk4_0; ++j) o[j] = d * float(q32_value(x[b], j));
    }
  }
}

/// Q4_0 row of n weights (n a multiple of 32) → f32.
inline void dequantize_row_q4_0(const block_q4_0* x, float* y, std::int64_t n) { dequantize_row_q32(x, y, n); }
/// IQ4_NL row of n weights (n a multiple of 32) → f32.
inline void dequantize_row_iq4_nl(const block_iq4_nl* x, float* y, std::int64_t n) { dequantize_row_q32(x, y, n); }

/// The signed scale ls − 32 of sub-block j (0..7) of an IQ4_XS super-block: ls's low 4 bits are
/// nibble j % 2 of scales_l[j / 2], its high 2 bits are bits 2j, 2j + 1 of scales_h.
inline int iq4_xs_scale(const block_iq4_xs& b, int j) {
  return (((b.scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | (((b.scales_h >> (2 * j)) & 3) << 4)) - 32;
}

/// IQ4_XS row of n weights (n a multiple of 256) → f32: sub-block j is an IQ4_NL block of scale
/// d·(ls_j − 32).
inline void dequantize_row_iq4_xs(const block_iq4_xs* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk_k; ++b)
    for (int j = 0; j < q32_per_block<block_iq4_xs>; ++j) {
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

// ---- reference quantization of weights -------------------------------------------------------

/// f32 → Q8_0 (n a multiple of 32), as ggml's reference: d = max|x| / 127, q = round(x / d)
/// (half away from zero), d stored as f16.
inline void quantize_row_q8_0(const float* x, block_q8_0* y, std::int64_t n) {
  detail::check_multiple(n, qk8_0, "quantize_row_q8_0");
  for (std::int64_t b = 0; b < n / qk8_0; ++b) {
    const float* v = x + b * qk8_0;
    float amax = 0.0f;
    for (int j = 0; j < qk8_0; ++j) amax = std::max(amax, std::fabs(v[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = to_f16(d);
    for (int j = 0; j < qk8_0; ++j) y[b].qs[j] = std::int8_t(std::round(v[j] * id));
  }
}

namespace detail {
/// The value of largest magnitude among x[0..n), with its sign (the first of equals; NaNs are
/// skipped); 0 when there is none.
inline float largest_magnitude(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  return max;
}

/// min(top, trunc(v)) for v >= 0 as an int; a NaN gives 0 (never a float → int conversion out of
/// range).
inline int truncate_quant(float v, int top) { return int(std::min(float(top), std::max(0.0f, v))); }

/// Stores the 32 quants q of a nibble block: the low 4 bits of q[j] and q[j + 16] in byte j (low,
/// high nibble), bit 4 of q[j] in bit j of qh for the 5-bit blocks.
template <typename Block>
inline void pack_q32(Block& b, const int* q) {
  std::uint32_t qh = 0;
  for (int j = 0; j < qk4_0 / 2; ++j) {
    b.qs[j] = std::uint8_t((q[j] & 0x0f) | (q[j + qk4_0 / 2] & 0x0f) << 4);
    qh |= std::uint32_t(q[j] >> 4) << j | std::uint32_t(q[j + qk4_0 / 2] >> 4) << (j + qk4_0 / 2);
  }
  if constexpr (block_with_high_bits<Block>)
    for (int i = 0; i < 4; ++i) b.qh[i] = std::uint8_t(qh >> (8 * i));
}
}  // namespace detail

/// f32 → Q4_0 / Q5_0 (n a multiple of 32), as ggml's reference: m = the value of largest
/// magnitude (with its sign), d = m / −zero (zero = 8 or 16), q = min(2·zero − 1, trunc(x / d +
/// zero + 0.5)), d stored as f16.
template <typename Block>
inline void quantize_row_q32_symmetric(const float* x, Block* y, std::int64_t n) {
  detail::check_multiple(n, qk4_0, "quantize_row_q4_0 / q5_0");
  constexpr int zero = q32_zero<Block>;
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    const float* v = x + b * qk4_0;
    const float d = detail::largest_magnitude(v, qk4_0) / -float(zero);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = to_f16(d);
    int q[qk4_0];
    for (int j = 0; j < qk4_0; ++j) q[j] = detail::truncate_quant(v[j] * id + (float(zero) + 0.5f), 2 * zero - 1);
    detail::pack_q32(y[b], q);
  }
}

/// f32 → Q4_0 (n a multiple of 32).
inline void quantize_row_q4_0(const float* x, block_q4_0* y, std::int64_t n) { quantize_row_q32_symmetric(x, y, n); }

/// f32 → Q4_1 / Q5_1 (n a multiple of 32), as ggml's reference: m = min x, d = (max x − m) / 15
/// (or / 31), q = min(15 (31), trunc((x − m) / d + 0.5)); d and m stored as f16.
template <typename Block>
inline void quantize_row_q32_min(const float* x, Block* y, std::int64_t n) {
  detail::check_multiple(n, qk4_0, "quantize_row_q4_1 / q5_1");
  constexpr int top = block_with_high_bits<Block> ? 31 : 15;
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    const float* v = x + b * qk4_0;
    float lo = std::numeric_limits<float>::max(), hi = -lo;  // NaNs are skipped, as in ggml
    for (int j = 0; j < qk4_0; ++j) {
      if (v[j] < lo) lo = v[j];
      if (v[j] > hi) hi = v[j];
    }
    const float d = (hi - lo) / float(top);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = to_f16(d);
    y[b].m = to_f16(lo);
    int q[qk4_0];
    for (int j = 0; j < qk4_0; ++j) q[j] = detail::truncate_quant((v[j] - lo) * id + 0.5f, top);
    detail::pack_q32(y[b], q);
  }
}

namespace detail {

/// The midpoints between neighbouring values of IQ4_NL's table (exact in float: halves).
inline constexpr auto iq4_midpoints = [] {
  std::array<float, 15> m{};
  for (std::size_t k = 0; k < m.size(); ++k) m[k] = (float(iq4_nl_values[k]) + float(iq4_nl_values[k + 1])) / 2.0f;
  return m;
}();

/// The index of IQ4_NL's table value nearest v: the number of midpoints at or below v, so a tie
/// goes to the larger value, as in ggml's best_index_int8 (which bisects the table and compares
/// rounded distances, so the two can differ within a rounding error of a midpoint); a NaN gives 0.
inline int iq4_nearest(float v) {
  int i = 0;
  for (const float m : iq4_midpoints) i += v >= m;
  return i;
}

/// How well 32 values x fit IQ4_NL's table at inverse scale id: Σ w·q·x and Σ w·q² over q = the
/// table value nearest id·x, w = x² (llama.cpp's weights without an importance matrix). The
/// least-squares scale of that fit is Σ w·q·x / Σ w·q², and a larger (Σ w·q·x)² / Σ w·q² is a
/// smaller weighted error.
inline void iq4_fit(const float* x, float id, float& sum_qx, float& sum_q2) {
  // q = the nearest table value, as iq4_nearest picks it: the first value plus the steps between
  // neighbours whose midpoint is at or below id·x (small integers, exact in float). Midpoint by
  // midpoint over the whole block, so that the compiler vectorizes it: the search calls this 16
  // times per weight (one core quantized 2.4 M weights/s to IQ4_XS with a bisection per weight,
  // 7.5 with iq4_nearest per weight, 18 this way).
  float y[qk4_0], q[qk4_0];
  for (int j = 0; j < qk4_0; ++j) {
    y[j] = id * x[j];
    q[j] = float(iq4_nl_values[0]);
  }
  for (std::size_t k = 0; k < iq4_midpoints.size(); ++k) {
    const float step = float(iq4_nl_values[k + 1] - iq4_nl_values[k]);
    for (int j = 0; j < qk4_0; ++j) q[j] += y[j] >= iq4_midpoints[k] ? step : 0.0f;
  }
  sum_qx = sum_q2 = 0.0f;
  for (int j = 0; j < qk4_0; ++j) {
    const float w = x[j] * x[j];
    sum_qx += w * q[j] * x[j];
    sum_q2 += w * q[j] * q[j];
  }
}

/// The scale of 32 values for IQ4_NL's table, searched as llama.cpp's quantizer does: the
/// least-squares scale of the fit that maps the value of largest magnitude (max) to 127, and of
/// the 15 fits that map it to the table's negative end −127 + t (t = −7..7); the best fit wins.
/// 0 for a block of (near) zeros.
inline float iq4_scale(const float* x) {
  const float max = largest_magnitude(x, qk4_0);
  if (std::fabs(max) < 1e-15f) return 0.0f;
  float sum_qx, sum_q2;
  iq4_fit(x, 1.0f / (max / -float(iq4_nl_values[0])), sum_qx, sum_q2);
  float d = sum_q2 > 0.0f ? sum_qx / sum_q2 : 0.0f, best = d * sum_qx;
  for (int t = -7; t <= 7; ++t) {
    iq4_fit(x, float(t + iq4_nl_values[0]) / max, sum_qx, sum_q2);
    if (sum_q2 > 0.0f && sum_qx * sum_qx > best * sum_q2) {
      d = sum_qx / sum_q2;
      best = d * sum_qx;
    }
  }
  return d;
}

}  // namespace detail

/// f32 → IQ4_NL (n a multiple of 32), as llama.cpp's quantizer without an importance matrix:
/// d = iq4_scale of the block (stored as f16), each weight the table value nearest x / d.
inline void quantize_row_iq4_nl(const float* x, block_iq4_nl* y, std::int64_t n) {
  detail::check_multiple(n, qk4_0, "quantize_row_iq4_nl");
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    const float* v = x + b * qk4_0;
    const float d = detail::iq4_scale(v);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = to_f16(d);
    int q[qk4_0];
    for (int j = 0; j < qk4_0; ++j) q[j] = detail::iq4_nearest(id * v[j]);
    detail::pack_q32(y[b], q);
  }
}

/// f32 → IQ4_XS (n a multiple of 256), as llama.cpp's quantizer without an importance matrix:
/// s_j = iq4_scale of sub-block j; d = −s / 32 for the s_j of largest magnitude (stored as f16);
/// ls_j − 32 = s_j / d rounded to nearest (even) within [−32, 31]; each weight the table value
/// nearest x / (d·(ls_j − 32)).
inline void quantize_row_iq4_xs(const float* x, block_iq4_xs* y, std::int64_t n) {
  detail::check_multiple(n, qk_k, "quantize_row_iq4_xs");
  constexpr int subs = q32_per_block<block_iq4_xs>;
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float* v = x + b * qk_k;
    float s[subs];
    for (int j = 0; j < subs; ++j) s[j] = detail::iq4_scale(v + qk4_0 * j);
    const float d = -detail::largest_magnitude(s, subs) / 32.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    block_iq4_xs& o = y[b];
    o.d = to_f16(d);
    o.scales_h = 0;
    std::fill(std::begin(o.scales_l), std::end(o.scales_l), std::uint8_t(0));
    for (int j = 0; j < subs; ++j) {
      const float r = id * s[j];  // within ±32 when finite; NaN and inf (from non-finite input) give 0
      const int l = std::isfinite(r) ? int(std::clamp(std::nearbyint(r), -32.0f, 31.0f)) : 0;
      const float dl = d * float(l);
      const float idl = dl != 0.0f ? 1.0f / dl : 0.0f;
      o.scales_l[j / 2] = std::uint8_t(o.scales_l[j / 2] | ((l + 32) & 0x0f) << (4 * (j % 2)));
      o.scales_h = std::uint16_t(o.scales_h | ((l + 32) >> 4) << (2 * j));
      const float* u = v + qk4_0 * j;
      for (int i = 0; i < 16; ++i)
        o.qs[16 * j + i] = std::uint8_t(detail::iq4_nearest(idl * u[i]) | detail::iq4_nearest(idl * u[i + 16]) << 4);
    }
  }
}

namespace detail {

/// v rounded to the nearest integer (ties to even, as ggml's nearest_int); 0 for NaN, and values
/// beyond ±2^22 (which ggml's asserts exclude) saturate there, so the conversion is always defined.
inline int nearest_int(float v) {
  if (!(std::fabs(v) <= 4194303.0f)) return std::isnan(v) ? 0 : v > 0 ? 4194303 : -4194303;
  return int(std::nearbyint(v));
}

/// llama.cpp's scale-and-min search for `n` values x with weights w and quants 0..nmax: the
/// range fit (min = min(x, 0), scale = (max − min) / nmax), then for inverse scales (nmax + rmin +
/// rdelta·k) / (max − min), k = 0..steps, the weighted least-squares scale and min of the quants
/// they give (min clamped to ≤ 0); the fit of least weighted squared error wins. Returns the
/// scale, sets `neg_min` = −min and q to the quants.
inline float fit_scale_min(int n, int nmax, const float* x, const float* w, std::uint8_t* q, float& neg_min,
                           float rmin, float rdelta, int steps) {
  float lo = x[0], hi = x[0], sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  lo = std::min(lo, 0.0f);
  if (!(hi > lo)) {  // constant (or NaN) input
    std::fill_n(q, n, std::uint8_t(0));
    neg_min = -lo;
    return 0.0f;
  }
  auto quant = [&](float iscale, float m, int i) { return std::clamp(nearest_int(iscale * (x[i] - m)), 0, nmax); };
  const float iscale0 = float(nmax) / (hi - lo);
  float scale = 1.0f / iscale0, min = lo, best = 0.0f;
  for (int i = 0; i < n; ++i) {
    q[i] = std::uint8_t(quant(iscale0, lo, i));
    const float diff = scale * float(q[i]) + min - x[i];
    best += w[i] * diff * diff;
  }
  std::uint8_t trial[qk_k];
  for (int k = 0; k <= steps; ++k) {
    const float iscale = (rmin + rdelta * float(k) + float(nmax)) / (hi - lo);
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = quant(iscale, lo, i);
      trial[i] = std::uint8_t(l);
      sum_l += w[i] * float(l);
      sum_l2 += w[i] * float(l) * float(l);
      sum_xl += w[i] * float(l) * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0.0f)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det, this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0.0f) {
      this_min = 0.0f;
      this_scale = sum_xl / sum_l2;
    }
    float error = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float diff = this_scale * float(trial[i]) + this_min - x[i];
      error += w[i] * diff * diff;
    }
    if (error < best) {
      std::copy_n(trial, n, q);
      best = error;
      scale = this_scale;
      min = this_min;
    }
  }
  neg_min = -min;
  return scale;
}

/// llama.cpp's symmetric scale search for `n` values x and quants −nmax..nmax−1 (weights x²):
/// the scale mapping the value of largest magnitude to −nmax, then 18 nearby ones, −(nmax +
/// 0.1·k) / max for k = ±1..±9, each with its least-squares scale; the best fit wins. Returns the
/// scale and sets q to the quants + nmax.
inline float fit_scale_symmetric(int n, int nmax, const float* x, std::uint8_t* q) {
  const float max = largest_magnitude(x, n);
  if (std::fabs(max) < 1e-15f) {
    std::fill_n(q, n, std::uint8_t(nmax));
    return 0.0f;
  }
  auto fit = [&](float iscale, float& sum_lx, float& sum_l2) {
    sum_lx = sum_l2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float l = float(std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1)), w = x[i] * x[i];
      sum_lx += w * x[i] * l;
      sum_l2 += w * l * l;
    }
  };
  auto store = [&](float iscale) {
    for (int i = 0; i < n; ++i) q[i] = std::uint8_t(nmax + std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
  };
  float sum_lx, sum_l2;
  fit(-float(nmax) / max, sum_lx, sum_l2);
  store(-float(nmax) / max);
  float scale = sum_l2 > 0.0f ? sum_lx / sum_l2 : 0.0f, best = scale * sum_lx;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    const float iscale = -(float(nmax) + 0.1f * float(k)) / max;
    fit(iscale, sum_lx, sum_l2);
    if (sum_l2 > 0.0f && sum_lx * sum_lx > best * sum_l2) {
      store(iscale);
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

}  // namespace detail

/// f32 → Q4_K / Q5_K (n a multiple of 256), as llama.cpp's quantizers without an importance
/// matrix: per sub-block of 32 fit_scale_min with weights rms(x) + |x| (quants 0..15 with 21
/// inverse scales from nmax − 1, or 0..31 with 16 from nmax − 0.5); the 8 scales and mins as 6-bit
/// multiples of d = max scale / 63 and dmin = max min / 63 (both f16); each weight then the
/// nearest quant for x = d·sc·q − dmin·m.
template <typename Block>
inline void quantize_row_k_min(const float* x, Block* y, std::int64_t n) {
  detail::check_multiple(n, qk_k, "quantize_row_q4_k / q5_k");
  constexpr bool five = block_with_high_bits<Block>;
  constexpr int top = five ? 31 : 15;
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float* v = x + b * qk_k;
    std::uint8_t q[qk_k];
    float scales[8], mins[8], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
      const float* u = v + 32 * j;
      float sum_x2 = 0.0f, w[32];
      for (int i = 0; i < 32; ++i) sum_x2 += u[i] * u[i];
      const float rms = std::sqrt(sum_x2 / 32.0f);
      for (int i = 0; i < 32; ++i) w[i] = rms + std::fabs(u[i]);
      scales[j] = five ? detail::fit_scale_min(32, top, u, w, q + 32 * j, mins[j], -0.5f, 0.1f, 15)
                       : detail::fit_scale_min(32, top, u, w, q + 32 * j, mins[j], -1.0f, 0.1f, 20);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f, inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    Block& o = y[b];
    std::fill(std::begin(o.scales), std::end(o.scales), std::uint8_t(0));
    for (int j = 0; j < 8; ++j) {  // the packing q4_k_scale_min reads
      const int ls = std::clamp(detail::nearest_int(inv_scale * scales[j]), 0, 63);
      const int lm = std::clamp(detail::nearest_int(inv_min * mins[j]), 0, 63);
      if (j < 4) {
        o.scales[j] = std::uint8_t(ls);
        o.scales[j + 4] = std::uint8_t(lm);
      } else {
        o.scales[j + 4] = std::uint8_t((ls & 0x0f) | (lm & 0x0f) << 4);
        o.scales[j - 4] = std::uint8_t(o.scales[j - 4] | (ls >> 4) << 6);
        o.scales[j] = std::uint8_t(o.scales[j] | (lm >> 4) << 6);
      }
    }
    o.d = to_f16(max_scale / 63.0f);
    o.dmin = to_f16(max_min / 63.0f);
    for (int j = 0; j < 8; ++j) {
      std::uint8_t sc, m;
      q4_k_scale_min(j, o.scales, sc, m);
      const float d = detail::f16f(o.d) * float(sc), dm = detail::f16f(o.dmin) * float(m);
      if (d == 0.0f) continue;
      for (int i = 0; i < 32; ++i) q[32 * j + i] = std::uint8_t(std::clamp(detail::nearest_int((v[32 * j + i] + dm) / d), 0, top));
    }
    // byte 32k + l: weights 64k + l (low nibble), 64k + 32 + l (high); their fifth bits in bits
    // 2k, 2k + 1 of qh[l]
    if constexpr (five) std::fill(std::begin(o.qh), std::end(o.qh), std::uint8_t(0));
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * k + l], hi = q[64 * k + 32 + l];
        o.qs[32 * k + l] = std::uint8_t((lo & 0x0f) | (hi & 0x0f) << 4);
        if constexpr (five) o.qh[l] = std::uint8_t(o.qh[l] | (lo >> 4) << (2 * k) | (hi >> 4) << (2 * k + 1));
      }
  }
}
/// f32 → Q4_K (n a multiple of 256).
inline void quantize_row_q4_k(const float* x, block_q4_k* y, std::int64_t n) { quantize_row_k_min(x, y, n); }

/// f32 → Q6_K (n a multiple of 256), as llama.cpp's quantizer without an importance matrix: per
/// sub-block of 16 fit_scale_symmetric with quants −32..31; the 16 scales as int8 multiples of d =
/// −s / 128 for the scale s of largest magnitude (f16); each weight then the nearest of −32..31
/// for x = d·sc·q, stored + 32 in 4 + 2 bits.
inline void quantize_row_q6_k(const float* x, block_q6_k* y, std::int64_t n) {
  detail::check_multiple(n, qk_k, "quantize_row_q6_k");
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float* v = x + b * qk_k;
    block_q6_k& o = y[b];
    std::uint8_t q[qk_k];
    float scales[16];
    for (int j = 0; j < 16; ++j) scales[j] = detail::fit_scale_symmetric(16, 32, v + 16 * j, q + 16 * j);
    const float max = detail::largest_magnitude(scales, 16);
    if (std::fabs(max) < 1e-15f) {  // all (near) zero
      std::memset(&o, 0, sizeof o);
      continue;
    }
    const float iscale = -128.0f / max;
    o.d = to_f16(1.0f / iscale);
    for (int j = 0; j < 16; ++j) o.scales[j] = std::int8_t(std::clamp(detail::nearest_int(iscale * scales[j]), -128, 127));
    for (int j = 0; j < 16; ++j) {
      const float d = detail::f16f(o.d) * float(o.scales[j]);
      if (d == 0.0f) continue;
      for (int i = 0; i < 16; ++i) q[16 * j + i] = std::uint8_t(32 + std::clamp(detail::nearest_int(v[16 * j + i] / d), -32, 31));
    }
    for (int h = 0; h < 2; ++h)  // the layout q6_k_quant reads
      for (int l = 0; l < 32; ++l) {
        const std::uint8_t* g = q + 128 * h + l;  // weights 128h + l, + 32, + 64, + 96
        o.ql[64 * h + l] = std::uint8_t((g[0] & 0x0f) | (g[64] & 0x0f) << 4);
        o.ql[64 * h + 32 + l] = std::uint8_t((g[32] & 0x0f) | (g[96] & 0x0f) << 4);
        o.qh[32 * h + l] = std::uint8_t(g[0] >> 4 | (g[32] >> 4) << 2 | (g[64] >> 4) << 4 | (g[96] >> 4) << 6);
      }
  }
}

/// Quantizes n f32 values to Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL (n a multiple of 32), IQ4_XS,
/// Q4_K, Q5_K or Q6_K (a multiple of 256).
inline void quantize_row(DType t, const float* x, std::byte* dst, std::int64_t n) {
  switch (t) {
    case DType::q8_0: return quantize_row_q8_0(x, reinterpret_cast<block_q8_0*>(dst), n);
    case DType::q4_0: return quantize_row_q4_0(x, reinterpret_cast<block_q4_0*>(dst), n);
    case DType::q4_1: return quantize_row_q32_min(x, reinterpret_cast<block_q4_1*>(dst), n);
    case DType::q5_0: return quantize_row_q32_symmetric(x, reinterpret_cast<block_q5_0*>(dst), n);
    case DType::q5_1: return quantize_row_q32_min(x, reinterpret_cast<block_q5_1*>(dst), n);
    case DType::iq4_nl: return quantize_row_iq4_nl(x, reinterpret_cast<block_iq4_nl*>(dst), n);
    case DType::iq4_xs: return quantize_row_iq4_xs(x, reinterpret_cast<block_iq4_xs*>(dst), n);
    case DType::q4_k: return quantize_row_q4_k(x, reinterpret_cast<block_q4_k*>(dst), n);
    case DType::q5_k: return quantize_row_k_min(x, reinterpret_cast<block_q5_k*>(dst), n);
    case DType::q6_k: return quantize_row_q6_k(x, reinterpret_cast<block_q6_k*>(dst), n);
    default: fail(ErrorKind::unsupported, "kernels", "quantization to ", to_string(t), " is not implemented");
  }
}

// ---- activation quantization -----------------------------------------------------------------

namespace detail {

/// max |v[i]| over n values (a multiple of 16); a NaN is skipped, as std::max(m, NaN) skips it.
inline float abs_max(const float* v, int n) {
  float m = 0.0f;
#if defined(__AVX512F__)
  __m512 mv = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) mv = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(v + i)), mv);  // NaN lane: keeps mv
  alignas(64) float t[16];
  _mm512_store_ps(t, mv);
  for (float x : t) m = std::max(m, x);
#else
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(v[i]));
#endif
  return m;
}

/// q[i] = v[i] · id rounded to nearest, ties to even, for 16 values; returns Σ q. |v[i] · id| <= 127
/// for finite activations; anything else (a NaN or infinite activation, or a scale that
/// overflowed) ends as the AVX-512 conversion leaves it, INT32_MIN, then clamped to [−128, 127]:
/// both paths give the same bytes for every input, and none is undefined behaviour.
inline int quantize16(const float* v, float id, std::int8_t* q) {
  int sum = 0;
#if defined(__AVX512F__)
  __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v), _mm512_set1_ps(id)));
  r = _mm512_min_epi32(_mm512_max_epi32(r, _mm512_set1_epi32(-128)), _mm512_set1_epi32(127));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(r));
  alignas(64) std::int32_t t[16];
  _mm512_store_si512(t, r);
  for (std::int32_t x : t) sum += x;
#else
  for (int i = 0; i < 16; ++i) {
    const float r = std::nearbyint(v[i] * id);
    const std::int32_t x = r >= -2147483648.0f && r < 2147483648.0f ? std::int32_t(r) : INT32_MIN;
    q[i] = std::int8_t(std::clamp(x, -128, 127));
    sum += q[i];
  }
#endif
  return sum;
}

}  // namespace detail

/// f32 → block_q8_a groups (n a multiple of 32) in the order q8_a_offset(halves, ...) gives: per
/// block of 32, d = max|x| / 127 and q = round-to-nearest-even(x / d). Writes ⌈n / 512⌉ groups,
/// zero-filling the last one's unused blocks. (Both halves of a block are 16 consecutive quants
/// in either order.)
inline void quantize_row_q8_a(const float* x, block_q8_a* y, std::int64_t n, bool halves) {
  const std::int64_t nb = n / qk8_0;
  if (nb % q8_a_group != 0) std::memset(static_cast<void*>(y + nb / q8_a_group), 0, sizeof(block_q8_a));
  for (std::int64_t b = 0; b < nb; ++b) {
    block_q8_a& g = y[b / q8_a_group];
    const int j = int(b % q8_a_group);
    const float* v = x + b * qk8_0;
    const float d = detail::abs_max(v, qk8_0) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    g.sum[j] = detail::quantize16(v, id, g.qs + q8_a_offset(halves, j, 0)) +
               detail::quantize16(v + 16, id, g.qs + q8_a_offset(halves, j, 16));
    g.d[j] = d;
  }
}

/// f32 → block_q8_k (n a multiple of 256) in the order q8_k_offset(q4_k, ...) gives:
/// d = max|x| / 127 per 256 values, q = round(x / d), with the sums of every 16 quants (16
/// consecutive values stay consecutive in either order).
inline void quantize_row_q8_k(const float* x, block_q8_k* y, std::int64_t n, bool q4_k) {
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float* v = x + b * qk_k;
    const float d = detail::abs_max(v, qk_k) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int g = 0; g < qk_k / 16; ++g)
      y[b].bsums[g] = std::int16_t(detail::quantize16(v + 16 * g, id, y[b].qs + q8_k_offset(q4_k, 16 * g)));
    y[b].d = d;
  }
}

/// Bytes of quantized activations a row of n values needs for a weight of type w.
constexpr std::size_t activation_bytes(DType w, std::int64_t n) noexcept {
  switch (w) {
    case DType::q8_0:
    case DType::q4_0:
    case DType::q4_1:
    case DType::q5_0:
    case DType::q5_1:
    case DType::iq4_nl:
    case DType::iq4_xs: return std::size_t((n / qk8_0 + q8_a_group - 1) / q8_a_group) * sizeof(block_q8_a);
    case DType::q2_k:
    case DType::q3_k:
    case DType::q4_k:
    case DType::q5_k:
    case DType::q6_k: return std::size_t(n / qk_k) * sizeof(block_q8_k);
    default: return 0;
  }
}

/// Quantizes an f32 activation row of n values (a multiple of w's block size) into `dst`
/// (activation_bytes(w, n) bytes, aligned for float) in the format w's dot product reads.
inline void quantize_activation(DType w, const float* x, std::byte* dst, std::int64_t n) {
  detail::check_multiple(n, block_elems(w), "quantize_activation");
  switch (w) {
    case DType::q8_0:
    case DType::q4_0:
    case DType::q4_1:
    case DType::q5_0:
    case DType::q5_1:
    case DType::iq4_nl:
    case DType::iq4_xs: return quantize_row_q8_a(x, reinterpret_cast<block_q8_a*>(dst), n, nibble_halves(w));
    case DType::q4_k:
    case DType::q5_k: return quantize_row_q8_k(x, reinterpret_cast<block_q8_k*>(dst), n, true);
    case DType::q2_k:
    case DType::q3_k:
    case DType::q6_k: return quantize_row_q8_k(x, reinterpret_cast<block_q8_k*>(dst), n, false);
    default: fail(ErrorKind::invalid_argument, "kernels", "quantize_activation: ", to_string(w), " is not quantized");
  }
}

// ---- dot products: scalar reference ------------------------------------------------------------

namespace detail {

/// Σ w·x over n values, Q8_0 weights.
inline float dot_q8_0_scalar(std::int64_t n, const block_q8_0* w, const block_q8_a* a) {
  float sum = 0.0f;
  for (std::int64_t b = 0; b < n / qk8_0; ++b) {
    std::int32_t isum = 0;
    const block_q8_a& g = a[b / q8_a_group];
    const std::int64_t k = b % q8_a_group;
    for (int j = 0; j < qk8_0; ++j) isum += std::int32_t(w[b].qs[j]) * g.qs[q8_a_offset(false, int(k), j)];
    sum += f16f(w[b].d) * g.d[k] * float(isum);
  }
  return sum;
}

/// Σ w·x over n values of a Q4_0 / Q4_1 / Q5_0 / Q5_1 / IQ4_NL row: per block d·d_x·Σ v·x with
/// v = q − zero (or IQ4_NL's table value), plus m·d_x·Σ x for the blocks with a min.
template <typename Block>
inline float dot_q32_scalar(std::int64_t n, const Block* w, const block_q8_a* a) {
  float sum = 0.0f;
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    std::int32_t isum = 0;
    const block_q8_a& g = a[b / q8_a_group];
    const int k = int(b % q8_a_group);
    for (int j = 0; j < qk4_0; ++j) isum += q32_value(w[b], j) * g.qs[q8_a_offset(true, k, j)];
    sum += f16f(w[b].d) * g.d[k] * float(isum);
    if constexpr (block_with_min<Block>) sum += f16f(w[b].m) * g.d[k] * float(g.sum[k]);
  }
  return sum;
}
inline float dot_q4_0_scalar(std::int64_t n, const block_q4_0* w, const block_q8_a* a) { return dot_q32_scalar(n, w, a); }

/// IQ4_XS: per sub-block s of 32 (block s / 8, activation block s % 16 of group s / 16)
/// d·(ls − 32)·d_x·Σ v·x, as for IQ4_NL.
inline float dot_iq4_xs_scalar(std::int64_t n, const block_iq4_xs* w, const block_q8_a* a) {
  float sum = 0.0f;
  for (std::int64_t s = 0; s < n / qk4_0; ++s) {
    const block_iq4_xs& b = w[s / q32_per_block<block_iq4_xs>];
    const int j = int(s % q32_per_block<block_iq4_xs>), k = int(s % q8_a_group);
    const block_q8_a& g = a[s / q8_a_group];
    std::int32_t isum = 0;
    for (int i = 0; i < qk4_0; ++i) {
      const std::uint8_t byte = b.qs[16 * j + i % 16];
      isum += iq4_nl_values[i < 16 ? byte & 0x0f : byte >> 4] * g.qs[q8_a_offset(true, k, i)];
    }
    sum += f16f(b.d) * float(iq4_xs_scale(b, j)) * g.d[k] * float(isum);
  }
  return sum;
}

/// Q4_K / Q5_K: Σ_j (d·sc_j·Σ q·a − dmin·m_j·Σ a) · d_a, with Σ a of a sub-block from the 16-sums.
template <typename Block>
inline float dot_k_min_scalar(std::int64_t n, const Block* w, const block_q8_k* a) {
  float sum = 0.0f;
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    std::int32_t isum = 0, msum = 0;
    for (int k = 0; k < 4; ++k) {
      std::uint8_t sc0, m0, sc1, m1;
      q4_k_scale_min(2 * k, w[b].scales, sc0, m0);
      q4_k_scale_min(2 * k + 1, w[b].scales, sc1, m1);
      std::int32_t s0 = 0, s1 = 0;
      const std::int8_t* x0 = a[b].qs + q8_k_offset(true, 64 * k);  // sub-block 2k
      const std::int8_t* x1 = a[b].qs + q8_k_offset(true, 64 * k + 32);
      for (int l = 0; l < 32; ++l) {
        int q0, q1;
        q4_k_quant_pair(w[b], k, l, q0, q1);
        s0 += q0 * x0[l];
        s1 += q1 * x1[l];
      }
      isum += sc0 * s0 + sc1 * s1;
      msum += m0 * (a[b].bsums[4 * k] + a[b].bsums[4 * k + 1]) + m1 * (a[b].bsums[4 * k + 2] + a[b].bsums[4 * k + 3]);
    }
    sum += a[b].d * (f16f(w[b].d) * float(isum) - f16f(w[b].dmin) * float(msum));
  }
  return sum;
}
inline float dot_q4_k_scalar(std::int64_t n, const block_q4_k* w, const block_q8_k* a) { return dot_k_min_scalar(n, w, a); }

/// Q2_K: d_a·(d·Σ_j sc_j·Σ q·a − dmin·Σ_j m_j·Σ a), sub-block j of 16 = the 16-sum j.
inline float dot_q2_k_scalar(std::int64_t n, const block_q2_k* w, const block_q8_k* a) {
  float sum = 0.0f;
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    std::int32_t isum = 0, msum = 0;
    for (int j = 0; j < qk_k / 16; ++j) {
      std::int32_t s = 0;
      for (int l = 0; l < 16; ++l) s += q2_k_quant(w[b], 16 * j + l) * a[b].qs[16 * j + l];
      isum += (w[b].scales[j] & 0x0f) * s;
      msum += (w[b].scales[j] >> 4) * a[b].bsums[j];
    }
    sum += a[b].d * (f16f(w[b].d) * float(isum) - f16f(w[b].dmin) * float(msum));
  }
  return sum;
}

/// Q3_K and Q6_K: d·d_a·Σ_j sc_j·Σ v·a over 16 sub-blocks of 16, with v = value(block, e) the
/// signed quant of weight e and sc_j = scale(block, j) the signed scale of sub-block j.
template <typename Block, typename Value, typename Scale>
inline float dot_k16_scalar(std::int64_t n, const Block* w, const block_q8_k* a, Value value, Scale scale) {
  float sum = 0.0f;
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    std::int32_t isum = 0;
    for (int j = 0; j < qk_k / 16; ++j) {
      std::int32_t s = 0;
      for (int l = 0; l < 16; ++l) s += value(w[b], 16 * j + l) * a[b].qs[16 * j + l];
      isum += scale(w[b], j) * s;
    }
    sum += f16f(w[b].d) * a[b].d * float(isum);
  }
  return sum;
}

/// Q3_K: v the 3-bit value (−4..3), sc_j − 32.
inline float dot_q3_k_scalar(std::int64_t n, const block_q3_k* w, const block_q8_k* a) {
  return dot_k16_scalar(n, w, a, q3_k_value, [](const block_q3_k& b, int j) { return q3_k_scale(b.scales, j) - 32; });
}

/// Q6_K: v = q − 32, int8 scales.
inline float dot_q6_k_scalar(std::int64_t n, const block_q6_k* w, const block_q8_k* a) {
  return dot_k16_scalar(
      n, w, a, [](const block_q6_k& b, int e) { return q6_k_quant(b, e) - 32; },
      [](const block_q6_k& b, int j) { return int(b.scales[j]); });
}

// ---- dot products: AVX2 --------------------------------------------------------------------------

#if defined(__AVX2__) && defined(__FMA__)
#define LOOM_QUANT_AVX2 1

inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline std::int32_t hsum_epi32_avx2(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}
/// 8 int32 lanes, each the sum of 4 products of signed bytes w·x.
inline __m256i dot_s8s8_avx2(__m256i w, __m256i x) {
  const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));  // |w|·(±x)
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}
/// 32 nibbles of 16 bytes: low nibbles in bytes 0-15, high nibbles in bytes 16-31.
inline __m256i unpack_nibbles_avx2(const std::uint8_t* p) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

inline float dot_q8_0_avx2(std::int64_t n, const block_q8_0* w, const block_q8_a* a) {
  __m256 acc = _mm256_setzero_ps();
  for (std::int64_t b = 0; b < n / qk8_0; ++b) {
    if (b % 4 == 0) prefetch_ahead(w + b, 4 * sizeof(block_q8_0));
    const block_q8_a& g = a[b / q8_a_group];
    const std::int64_t k = b % q8_a_group;
    const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.qs + q8_a_offset(false, int(k), 0)));
    const __m256 p = _mm256_cvtepi32_ps(dot_s8s8_avx2(wq, xq));
    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(f16f(w[b].d) * g.d[k]), acc);
  }
  return hsum_avx2(acc);
}

inline float dot_q4_0_avx2(std::int64_t n, const block_q4_0* w, const block_q8_a* a) {
  __m256 acc = _mm256_setzero_ps();
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    if (b % 4 == 0) prefetch_ahead(w + b, 4 * sizeof(block_q4_0));
    const block_q8_a& g = a[b / q8_a_group];
    const std::int64_t k = b % q8_a_group;
    const __m256i wq = _mm256_sub_epi8(unpack_nibbles_avx2(w[b].qs), _mm256_set1_epi8(8));
    const __m256i xq = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.qs + q8_a_offset(true, int(k), 16))),
                                        _mm_loadu_si128(reinterpret_cast<const __m128i*>(g.qs + q8_a_offset(true, int(k), 0))));
    const __m256 p = _mm256_cvtepi32_ps(dot_s8s8_avx2(wq, xq));
    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(f16f(w[b].d) * g.d[k]), acc);
  }
  return hsum_avx2(acc);
}

/// The fifth bits of a Q5_0 / Q5_1 block as bytes in weight order: 0x10 where bit j of qh is set.
inline __m256i high_bits_avx2(std::uint32_t qh) {
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int(qh)),  // byte j = byte j / 8 of qh
                                            _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                              0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(std::int64_t(0x8040201008040201));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit), _mm256_set1_epi8(0x10));
}

/// Block k of an activation group in q8_a_offset's `halves` order: values 0-15 in the low lane,
/// 16-31 in the high one (unpack_nibbles_avx2's order).
inline __m256i q8_a_halves_avx2(const block_q8_a& g, int k) {
  return _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.qs + q8_a_offset(true, k, 16))),
                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(g.qs + q8_a_offset(true, k, 0))));
}
/// 8 int32 lanes of Σ v·x: IQ4_NL's table values v of 32 unpacked nibbles times the activations.
inline __m256i table_dot_avx2(__m256i nibbles, __m256i x) {
  const __m256i values = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(iq4_nl_values)));
  return dot_s8s8_avx2(_mm256_shuffle_epi8(values, nibbles), x);
}

/// Q4_1 / Q5_0 / Q5_1: the unsigned quants times the activations (vpmaddubsw: 31·127·2 < 2^15),
/// then per block the offset (m, or −zero·d) times the activations' sum. IQ4_NL: the table's
/// signed values (one byte shuffle) times the activations, as Q8_0's.
template <typename Block>
inline float dot_q32_avx2(std::int64_t n, const Block* w, const block_q8_a* a) {
  __m256 acc = _mm256_setzero_ps();
  float off = 0.0f;
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    if (b % 4 == 0) prefetch_ahead(w + b, 4 * sizeof(Block));
    const block_q8_a& g = a[b / q8_a_group];
    const int k = int(b % q8_a_group);
    __m256i q = unpack_nibbles_avx2(w[b].qs);
    if constexpr (block_with_high_bits<Block>) q = _mm256_or_si256(q, high_bits_avx2(q5_high_bits(w[b])));
    const __m256i xq = q8_a_halves_avx2(g, k);
    const float d = f16f(w[b].d);
    if constexpr (block_with_table<Block>) {
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(table_dot_avx2(q, xq)), _mm256_set1_ps(d * g.d[k]), acc);
      continue;
    }
    const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(q, xq), _mm256_set1_epi16(1)));
    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(d * g.d[k]), acc);
    if constexpr (block_with_min<Block>)
      off += f16f(w[b].m) * g.d[k] * float(g.sum[k]);
    else
      off -= float(q32_zero<Block>) * d * g.d[k] * float(g.sum[k]);
  }
  return hsum_avx2(acc) + off;
}

/// IQ4_XS: IQ4_NL's product per sub-block of 32, scaled by d·(ls − 32)·d_x.
inline float dot_iq4_xs_avx2(std::int64_t n, const block_iq4_xs* w, const block_q8_a* a) {
  __m256 acc = _mm256_setzero_ps();
  for (std::int64_t s = 0; s < n / qk4_0; ++s) {
    const block_iq4_xs& b = w[s / q32_per_block<block_iq4_xs>];
    const int j = int(s % q32_per_block<block_iq4_xs>), k = int(s % q8_a_group);
    if (j == 0) prefetch_ahead(&b, sizeof(block_iq4_xs));
    const block_q8_a& g = a[s / q8_a_group];
    const __m256 p = _mm256_cvtepi32_ps(table_dot_avx2(unpack_nibbles_avx2(b.qs + 16 * j), q8_a_halves_avx2(g, k)));
    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(f16f(b.d) * float(iq4_xs_scale(b, j)) * g.d[k]), acc);
  }
  return hsum_avx2(acc);
}

/// Q4_K and Q5_K (whose fifth bits are ORed into the nibbles).
template <typename Block>
inline float dot_k_min_avx2(std::int64_t n, const Block* w, const block_q8_k* a) {
  float sum = 0.0f;
  const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    prefetch_ahead(w + b, sizeof(Block));
    std::uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) q4_k_scale_min(j, w[b].scales, sc[j], mn[j]);
    __m256i isum = _mm256_setzero_si256();
    for (int k = 0; k < 4; ++k) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs + 32 * k));
      __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (block_with_high_bits<Block>) {  // bits 2k, 2k+1 of qh[l] → bit 4 of lo / hi byte l
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qh));
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k + 1), one), 4));
      }
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + q8_k_offset(true, 64 * k)));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + q8_k_offset(true, 64 * k + 32)));
      // maddubs: pairs of q·x in int16 (|31·127·2| fits); madd by the sub-block scale → int32.
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_set1_epi16(sc[2 * k])));
      isum = _mm256_add_epi32(isum,
                              _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), _mm256_set1_epi16(sc[2 * k + 1])));
    }
    std::int32_t msum = 0;
    for (int j = 0; j < 8; ++j) msum += mn[j] * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
    sum += a[b].d * (f16f(w[b].d) * float(hsum_epi32_avx2(isum)) - f16f(w[b].dmin) * float(msum));
  }
  return sum;
}
inline float dot_q4_k_avx2(std::int64_t n, const block_q4_k* w, const block_q8_k* a) { return dot_k_min_avx2(n, w, a); }

/// The 16 sub-block scales of a Q2_K / Q3_K super-block as words (Q3_K's as sc − 32), and in 8
/// int32 lanes the terms of the offset Σ_j o_j·Σ a over sub-block j's activations, o_j = Q2_K's
/// min m_j or Q3_K's sc_j − 32.
template <typename Block>
inline __m256i k_2bit_scales(const Block& w, const block_q8_k& a, __m256i& off) {
  const __m128i m4 = _mm_set1_epi8(0x0f);
  __m256i sc16, off16;
  if constexpr (std::is_same_v<Block, block_q3_k>) {  // as q3_k_scale: low nibbles from bytes 0-7, top bits 8-11
    const __m128i b8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.scales));
    const __m128i low = _mm_and_si128(_mm_unpacklo_epi64(b8, _mm_srli_epi16(b8, 4)), m4);
    std::int32_t top;
    std::memcpy(&top, w.scales + 8, 4);
    const __m128i high = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(top), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
    sc16 = off16 = _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(high, 4)), _mm_set1_epi8(32)));
  } else {  // scale in the low nibble, min in the high one
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales));
    sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
    off16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
  }
  off = _mm256_madd_epi16(off16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums)));
  return sc16;
}

/// A Q2_K / Q3_K super-block's sum is f·isum − g·off, isum = Σ_j sc_j·Σ u·a (Q3_K: u = q + 4).
template <typename Block>
inline void k_2bit_factors(const Block& w, const block_q8_k& a, float& f, float& g) {
  f = f16f(w.d) * a.d;
  if constexpr (std::is_same_v<Block, block_q3_k>)
    g = 4.0f * f;
  else
    g = f16f(w.dmin) * a.d;
}

/// Q2_K / Q3_K: 32 bytes of quants give 32 weights per 2-bit shift (two sub-blocks of 16, whose
/// scales multiply the pairs of products); Q3_K's quants are taken as q + 4 (0..7, the hmask bit
/// as 4) and 4·Σ_j sc_j·Σ a is subtracted at the end.
template <typename Block>
inline float dot_k_2bit_avx2(std::int64_t n, const Block* w, const block_q8_k* a) {
  constexpr bool q3 = std::is_same_v<Block, block_q3_k>;
  float sum = 0.0f;
  const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    prefetch_ahead(w + b, sizeof(Block));
    __m256i off;
    const __m256i sc16 = k_2bit_scales(w[b], a[b], off);
    alignas(32) std::int16_t sc[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(sc), sc16);
    __m256i hm = _mm256_setzero_si256();
    if constexpr (q3) hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].hmask));
    __m256i isum = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs + 32 * h));
      for (int k = 0; k < 4; ++k) {
        __m256i v = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3);  // weights 128h + 32k + 0..31
        if constexpr (q3)
          v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), one), 2));
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 128 * h + 32 * k));
        const int j = 8 * h + 2 * k;  // sub-blocks j (bytes 0-15) and j+1 (16-31)
        const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[j + 1]), _mm_set1_epi16(sc[j]));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(v, x), scv));
      }
    }
    float f, g;
    k_2bit_factors(w[b], a[b], f, g);
    sum += f * float(hsum_epi32_avx2(isum)) - g * float(hsum_epi32_avx2(off));
  }
  return sum;
}
inline float dot_q2_k_avx2(std::int64_t n, const block_q2_k* w, const block_q8_k* a) { return dot_k_2bit_avx2(n, w, a); }
inline float dot_q3_k_avx2(std::int64_t n, const block_q3_k* w, const block_q8_k* a) { return dot_k_2bit_avx2(n, w, a); }

inline float dot_q6_k_avx2(std::int64_t n, const block_q6_k* w, const block_q8_k* a) {
  float sum = 0.0f;
  const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    prefetch_ahead(w + b, sizeof(block_q6_k));
    __m256i isum = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].ql + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qh + 32 * h));
      for (int g = 0; g < 4; ++g) {
        const __m256i l = (g & 1) ? ql1 : ql0;
        const __m256i low = g < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), m2);
        const __m256i q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));  // 0..63, unsigned
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 128 * h + 32 * g));
        const int s = 8 * h + 2 * g;  // sub-blocks s (bytes 0-15) and s+1 (bytes 16-31)
        const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(w[b].scales[s + 1]), _mm_set1_epi16(w[b].scales[s]));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), scv));
      }
    }
    std::int32_t corr = 0;  // Σ sc_j · 32 · Σ a over sub-block j
    for (int j = 0; j < 16; ++j) corr += w[b].scales[j] * a[b].bsums[j];
    sum += f16f(w[b].d) * a[b].d * float(hsum_epi32_avx2(isum) - 32 * corr);
  }
  return sum;
}
#endif  // AVX2

// ---- dot products: AVX-512 -------------------------------------------------------------------------

#if defined(LOOM_QUANT_AVX2) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LOOM_QUANT_AVX512 1

/// acc + 16 int32 lanes, each the sum of 4 products of unsigned bytes u and signed bytes s
/// (vpdpbusd where available).
inline __m512i add_dot_u8s8_512(__m512i acc, __m512i u, __m512i s) {
#if defined(__AVX512VNNI__)
  return _mm512_dpbusd_epi32(acc, u, s);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}
inline __m512i dot_u8s8_512(__m512i u, __m512i s) { return add_dot_u8s8_512(_mm512_setzero_si512(), u, s); }
/// Signed × signed bytes: |w| · (x with w's sign).
inline __m512i dot_s8s8_512(__m512i w, __m512i x) {
  const __mmask64 neg = _mm512_movepi8_mask(w);
  const __m512i sx = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
  return dot_u8s8_512(_mm512_abs_epi8(w), sx);
}
// Horizontal sums through memory: GCC 12's 512→256-bit casts and _mm512_reduce_add_* warn about
// an undefined operand (-Wuninitialized) inside its own headers.
inline float hsum_512(__m512 v) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  return hsum_avx2(_mm256_add_ps(_mm256_load_ps(t), _mm256_load_ps(t + 8)));
}
inline std::int32_t hsum_epi32_512(__m512i v) {
  alignas(64) std::int32_t t[16];
  _mm512_store_si512(t, v);
  return hsum_epi32_avx2(_mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(t)),
                                          _mm256_load_si256(reinterpret_cast<const __m256i*>(t + 8))));
}
inline __m512i join256(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}
inline __m512 join_scales(float lo, float hi) {
  return _mm512_insertf32x8(_mm512_zextps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi), 1);
}

/// The f16 scale bits `d` of up to 4 consecutive blocks packed into one 64-bit word (zero past
/// `count`). Scalar loads: they run on the integer units beside the vector work, where a
/// vpgatherdd costs ~30 cycles on AMD Zen 4.
template <typename Block>
inline std::uint64_t packed_scales(const Block* b, int count, f16 Block::*field = &Block::d) {
  std::uint64_t packed = 0;
  for (int i = 0; i < count; ++i) {
    std::uint16_t h;
    std::memcpy(&h, &(b[i].*field), sizeof h);
    packed |= std::uint64_t(h) << (16 * i);
  }
  return packed;
}

/// The f16 scales of up to 4 consecutive blocks as floats (zero past `count`).
template <typename Block>
inline __m128 block_scales_128(const Block* b, int count) {
  return _mm_cvtph_ps(_mm_cvtsi64_si128(std::int64_t(packed_scales(b, count))));
}

/// The f16 scales (or another f16 field) of up to 16 consecutive blocks as floats (zero past
/// `count`).
template <typename Block>
inline __m512 block_scales_512(const Block* b, int count, f16 Block::*field = &Block::d) {
  std::int64_t packed[4];
  for (int q = 0; q < 4; ++q)
    packed[q] = count > 4 * q ? std::int64_t(packed_scales(b + 4 * q, std::min(count - 4 * q, 4), field)) : 0;
  return _mm512_cvtph_ps(_mm256_set_epi64x(packed[3], packed[2], packed[1], packed[0]));
}

/// Σ_j d_w[j]·d_x[j]·Σ_i q[j][i]·x[j][i] over the blocks of a Q8_0 row. vpdpbusd multiplies
/// unsigned by signed bytes: u = q + 128 (q xor 0x80), then Σ q·x = Σ u·x − 128·Σ x. Without
/// VNNI that would saturate vpmaddubsw's 16-bit pair sums (255·127·2 > 2^15), so the products are
/// signed × signed there (|q| · ±x). Per pair of blocks the work is the products and one FMA
/// with the pair's scales spread over their lanes.
///
/// The scales are built per 4 blocks (136 bytes), not per 16: a block's FMA waits for its
/// scale, and with scales of 16 blocks every FMA of those 544 bytes waits for the last of their
/// 9 cache lines, so from DRAM the core holds fewer lines in flight. One core, 2048-wide rows
/// from 1 GB of huge-page memory: 27.7-29.1 GB/s with scales per 16 blocks, 33.0-33.6 (the read
/// probe's rate) per 4; in L2 45.4 → 48.4 GB/s.
inline float dot_q8_0_avx512(std::int64_t n, const block_q8_0* w, const block_q8_a* a) {
  const std::int64_t nb = n / qk8_0;
#if defined(__AVX512VNNI__)
  const __m512i bias = _mm512_set1_epi8(char(0x80));
  constexpr float offset = 128.0f;
  auto products = [&](__m512i q, __m512i x) { return dot_u8s8_512(_mm512_xor_si512(q, bias), x); };
#else
  constexpr float offset = 0.0f;
  auto products = [](__m512i q, __m512i x) { return dot_s8s8_512(q, x); };
#endif
  // lanes 0-7 take scale 2k, lanes 8-15 scale 2k+1 of the 4 built (pair k = 0, 1)
  const __m512i pair_lanes[2] = {_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                                 _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2)};
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};  // one per pair: hides the FMA latency
  __m128 acc_off = _mm_setzero_ps();
  for (std::int64_t g0 = 0; g0 < nb; g0 += q8_a_group) {
    const block_q8_a& g = a[g0 / q8_a_group];
    prefetch_ahead(w + g0, q8_a_group * sizeof(block_q8_0));
    // Blocks j .. j+3 of the group (`blocks` of them left in the row).
    auto quad = [&](int j, int blocks) {
      const block_q8_0* wb = w + g0 + j;
      // The 4 blocks' scales (unused ones are zero in g.d), and the offset term Σ_j scale_j·sum_j.
      const __m128 scale = _mm_mul_ps(blocks >= 4 ? block_scales_128(wb, 4) : block_scales_128(wb, blocks),
                                      _mm_loadu_ps(g.d + j));
      if constexpr (offset != 0.0f)
        acc_off = _mm_fmadd_ps(scale, _mm_cvtepi32_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.sum + j))),
                               acc_off);
      // Pair k = blocks 2k, 2k+1: lanes 0-7 hold block 2k's partial sums, lanes 8-15 block 2k+1's.
      // An odd last block pairs with zeros.
      auto pair = [&](int k, bool two) {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[2 * k].qs));
        const __m512i q = two ? join256(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[2 * k + 1].qs)))
                              : _mm512_zextsi256_si512(lo);
        const __m512i p = products(q, _mm512_loadu_si512(g.qs + q8_a_offset(false, j + 2 * k, 0)));
        const __m512 s = _mm512_permutexvar_ps(pair_lanes[k], _mm512_zextps128_ps512(scale));
        acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[k]);
      };
      if (blocks >= 4) {
        pair(0, true);
        pair(1, true);
      } else {
        pair(0, blocks > 1);
        if (blocks == 3) pair(1, false);
      }
    };
    const int blocks = int(std::min<std::int64_t>(q8_a_group, nb - g0));
    if (blocks == q8_a_group) {
      for (int j = 0; j < q8_a_group; j += 4) quad(j, 4);
    } else {
      for (int j = 0; j < blocks; j += 4) quad(j, blocks - j);
    }
  }
  return hsum_512(_mm512_add_ps(acc[0], acc[1])) - offset * hsum_avx2(_mm256_zextps128_ps256(acc_off));
}

/// A group of 16 nibble blocks unpacked for the dot product: q[k] holds the quant bytes of blocks
/// 4k .. 4k+3 (16 each), d (and m) their scales (mins) as floats, and for 5-bit blocks lo[k] /
/// hi[k] the fifth bits of those bytes' low / high nibbles (bit 16i + j: weight j / 16 + j of
/// block 4k+i). Everything past the row's `blocks` is zero.
struct Q32Group {
  __m512i q[4];
  __m512 d, m;
  std::uint64_t lo[4], hi[4];
};

template <typename Block>
inline void q32_group(const Block* wb, int blocks, Q32Group& g) {
  auto quants = [&](int b) {
    return b < blocks ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[b].qs)) : _mm_setzero_si128();
  };
  for (int k = 0; k < 4; ++k) {
    const __m512i q01 = _mm512_inserti32x4(_mm512_zextsi128_si512(quants(4 * k)), quants(4 * k + 1), 1);
    g.q[k] = _mm512_inserti32x4(_mm512_inserti32x4(q01, quants(4 * k + 2), 2), quants(4 * k + 3), 3);
  }
  g.d = blocks == q8_a_group ? block_scales_512(wb, q8_a_group) : block_scales_512(wb, blocks);
  if constexpr (block_with_min<Block>)
    g.m = blocks == q8_a_group ? block_scales_512(wb, q8_a_group, &Block::m) : block_scales_512(wb, blocks, &Block::m);
  if constexpr (block_with_high_bits<Block>)
    for (int k = 0; k < 4; ++k) {
      g.lo[k] = g.hi[k] = 0;
      for (int i = 0; i < 4 && 4 * k + i < blocks; ++i) {
        const std::uint32_t h = q5_high_bits(wb[4 * k + i]);
        g.lo[k] |= std::uint64_t(h & 0xffffu) << (16 * i);
        g.hi[k] |= std::uint64_t(h >> 16) << (16 * i);
      }
    }
}

#if defined(__AVX512VBMI__)
/// The n bytes at p (n = 8, 16, 32 or 64) in the low bytes of a vector, the others zero: one plain
/// load. (On the Intel Xeon a masked load costs a vector uop beside the load: Q4_0 decode on one
/// core, loom-bench tg32, runs alternated, 82.1-82.6 -> 83.6-84.2 % of bandwidth with the 8-byte
/// tails of its quads loaded plain instead of masked.)
template <int n>
inline __m512i load_bytes(const std::uint8_t* p) {
  static_assert(n == 8 || n == 16 || n == 32 || n == 64);
  if constexpr (n == 8)
    return _mm512_zextsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  else if constexpr (n == 16)
    return _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  else if constexpr (n == 32)
    return _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  else
    return _mm512_loadu_si512(p);
}

/// Where byte b of four blocks is in the two vectors (head: their first 64 bytes; tail: bytes from
/// tail_at) that q32_group's permutes index.
constexpr int head_tail_index(int b, int tail_at) { return b < 64 ? b : 64 + b - tail_at; }

/// The same with AVX-512 VBMI: each four blocks are one 64-byte load (the head) and one of 8, 16,
/// 32 or 64 bytes ending where they end (the tail; masked loads in a row's last group, so that
/// nothing past its last block is read); a byte permute gathers their quant bytes and word
/// permutes their scales, mins and fifth bits.
template <typename Block>
  requires(4 * sizeof(Block) <= 128)
inline void q32_group(const Block* wb, int blocks, Q32Group& g) {
  constexpr int size = int(sizeof(Block));
  constexpr int m_at = [] {
    if constexpr (block_with_min<Block>) return int(offsetof(Block, m));
    return 0;
  }();
  constexpr int qh_at = [] {
    if constexpr (block_with_high_bits<Block>) return int(offsetof(Block, qh));
    return 0;
  }();
  // Q4_0 and Q4_1 have every scale and min of four blocks in the first 64 bytes: two word
  // permutes of two quads' first loads give them all. Q5_0 / Q5_1 first gather each quad's fields.
  constexpr bool fields_in_head = 3 * size + std::max(m_at, 0) + 2 <= 64 && !block_with_high_bits<Block>;
  // The tail: the quad's last tail_load bytes, from byte tail_at (64 unless the rest past the
  // head is not 8, 16 or 32 bytes: Q5_0's 24 are read as 32 from byte 56).
  constexpr int tail_load = std::max(8, int(std::bit_ceil(unsigned(4 * size - 64))));
  constexpr int tail_at = 4 * size - tail_load;
  static_assert(tail_at >= 0 && tail_at <= 64 && tail_at % 2 == 0);
  alignas(64) static constexpr auto quant_bytes = [] {  // byte 16k + i = quant i of block k
    std::array<std::uint8_t, 64> idx{};
    for (int k = 0; k < 4; ++k)
      for (int i = 0; i < 16; ++i)
        idx[std::size_t(16 * k + i)] = std::uint8_t(head_tail_index(size * k + int(offsetof(Block, qs)) + i, tail_at));
    return idx;
  }();
  // Words of one quad (64 bytes + the rest): 0-3 the scales, 4-7 the mins, 8-11 the fifth bits of
  // the low nibbles (qh's low words), 12-15 of the high nibbles.
  alignas(64) static constexpr auto quad_fields = [] {
    std::array<std::uint16_t, 32> idx{};
    for (int i = 0; i < 4; ++i) {
      idx[std::size_t(i)] = std::uint16_t(head_tail_index(size * i, tail_at) / 2);
      idx[std::size_t(4 + i)] = std::uint16_t(head_tail_index(size * i + m_at, tail_at) / 2);
      idx[std::size_t(8 + i)] = std::uint16_t(head_tail_index(size * i + qh_at, tail_at) / 2);
      idx[std::size_t(12 + i)] = std::uint16_t(head_tail_index(size * i + qh_at + 2, tail_at) / 2);
    }
    return idx;
  }();
  // Two quads A, B → words 0-3 scales of A, 4-7 of B, 8-11 mins of A, 12-15 of B: from their
  // first loads directly, or from their gathered fields.
  alignas(64) static constexpr auto pair_fields = [] {
    std::array<std::uint16_t, 32> idx{};
    for (int i = 0; i < 4; ++i)
      for (int quad = 0; quad < 2; ++quad) {
        idx[std::size_t(4 * quad + i)] = std::uint16_t(32 * quad + (fields_in_head ? size * i / 2 : i));
        idx[std::size_t(8 + 4 * quad + i)] = std::uint16_t(32 * quad + (fields_in_head ? (size * i + m_at) / 2 : 4 + i));
      }
    return idx;
  }();
  __m512i head[4], tail[4];
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(wb);
  if (blocks == q8_a_group) {
    for (int k = 0; k < 4; ++k) {
      head[k] = _mm512_loadu_si512(bytes + 4 * size * k);
      tail[k] = load_bytes<tail_load>(bytes + 4 * size * k + tail_at);
    }
  } else {
    auto first = [](int n) { return n >= 64 ? ~__mmask64(0) : n <= 0 ? __mmask64(0) : (__mmask64(1) << n) - 1; };
    for (int k = 0; k < 4; ++k) {
      const int valid = size * std::clamp(blocks - 4 * k, 0, 4);
      head[k] = _mm512_maskz_loadu_epi8(first(valid), bytes + 4 * size * k);
      tail[k] = _mm512_maskz_loadu_epi8(first(valid - tail_at), bytes + 4 * size * k + tail_at);
    }
  }
  const __m512i gather_quants = _mm512_load_si512(quant_bytes.data());
  for (int k = 0; k < 4; ++k) g.q[k] = _mm512_permutex2var_epi8(head[k], gather_quants, tail[k]);
  const __m512i pair = _mm512_load_si512(pair_fields.data());
  __m512i dm01, dm23;
  if constexpr (fields_in_head) {
    dm01 = _mm512_permutex2var_epi16(head[0], pair, head[1]);
    dm23 = _mm512_permutex2var_epi16(head[2], pair, head[3]);
  } else {
    const __m512i fields = _mm512_load_si512(quad_fields.data());
    __m512i f[4];
    for (int k = 0; k < 4; ++k) f[k] = _mm512_permutex2var_epi16(head[k], fields, tail[k]);
    dm01 = _mm512_permutex2var_epi16(f[0], pair, f[1]);
    dm23 = _mm512_permutex2var_epi16(f[2], pair, f[3]);
    if constexpr (block_with_high_bits<Block>)
      for (int k = 0; k < 4; ++k) {
        const __m128i bits = _mm512_extracti32x4_epi32(f[k], 1);  // words 8-15
        g.lo[k] = std::uint64_t(_mm_cvtsi128_si64(bits));
        g.hi[k] = std::uint64_t(_mm_extract_epi64(bits, 1));
      }
  }
  g.d = _mm512_cvtph_ps(_mm256_set_m128i(_mm512_castsi512_si128(dm23), _mm512_castsi512_si128(dm01)));
  if constexpr (block_with_min<Block>)
    g.m = _mm512_cvtph_ps(_mm256_set_m128i(_mm512_extracti32x4_epi32(dm23, 1), _mm512_extracti32x4_epi32(dm01, 1)));
}
#endif

/// IQ4_XS: a group of 16 sub-blocks is two super-blocks (one at the end of a row of an odd
/// number), whose two 64-byte halves of quant bytes each hold four sub-blocks in the order the
/// nibble blocks' gather gives; lanes 0-7 / 8-15 of the scales d·(ls_j − 32) come from the first
/// / second super-block's scale bits by per-lane shifts.
inline void q32_group(const block_iq4_xs* wb, int blocks, Q32Group& g) {
  const bool two = blocks > q32_per_block<block_iq4_xs>;
  for (int k = 0; k < 4; ++k)
    g.q[k] = k < 2 || two ? _mm512_loadu_si512(wb[k / 2].qs + 64 * (k % 2)) : _mm512_setzero_si512();
  std::uint32_t low[2] = {}, high[2] = {};
  float d[2] = {};
  for (int i = 0; i < (two ? 2 : 1); ++i) {
    std::memcpy(&low[i], wb[i].scales_l, sizeof low[i]);  // nibble j: bits 4j .. 4j+3
    high[i] = wb[i].scales_h;
    d[i] = f16f(wb[i].d);
  }
  const __m512i j = _mm512_set_epi32(7, 6, 5, 4, 3, 2, 1, 0, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i lo = _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(int(low[0])), _mm512_set1_epi32(int(low[1])));
  const __m512i hi = _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(int(high[0])), _mm512_set1_epi32(int(high[1])));
  const __m512i ls = _mm512_or_si512(
      _mm512_and_si512(_mm512_srlv_epi32(lo, _mm512_slli_epi32(j, 2)), _mm512_set1_epi32(0x0f)),
      _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(hi, _mm512_slli_epi32(j, 1)), _mm512_set1_epi32(3)), 4));
  g.d = _mm512_mul_ps(_mm512_mask_blend_ps(0xff00, _mm512_set1_ps(d[0]), _mm512_set1_ps(d[1])),
                      _mm512_cvtepi32_ps(_mm512_sub_epi32(ls, _mm512_set1_epi32(32))));
}

/// Σ_j d_w[j]·d_x[j]·Σ_i (q[j][i] − zero)·x[j][i] over the blocks of a Q4_0 / Q5_0 row, plus
/// Σ_j m[j]·d_x[j]·Σ_i x[j][i] for Q4_1 / Q5_1 (whose zero is 0): the nibbles (with their fifth
/// bits) are the unsigned q, and Σ (q − zero)·x = Σ q·x − zero·Σ x. IQ4_NL maps its nibbles to
/// the table's signed values instead, and IQ4_XS likewise per sub-block of 32 (`blocks` below count
/// sub-blocks). Four blocks per step: their 4×16 quant bytes in one vector,
/// whose low nibbles meet one 64-byte load of activations (q8_a_offset's `halves` order) and whose
/// high nibbles the next; both products accumulate into one int32 vector whose lanes 4k .. 4k+3
/// belong to block k of the four.
template <typename Block>
inline float dot_q32_avx512(std::int64_t n, const Block* w, const block_q8_a* a) {
  // IQ4_NL with VNNI: the table's values + 128 as unsigned bytes, with zero 128 (vpdpbusd sums in
  // 32 bits; without VNNI vpmaddubsw would saturate at 241·127·2, so the values stay signed).
#if defined(__AVX512VNNI__)
  constexpr bool biased_table = block_with_table<Block>;
#else
  constexpr bool biased_table = false;
#endif
  constexpr int zero = biased_table ? 128 : q32_zero<Block>;
  const std::int64_t nb = n / qk4_0;
  const __m512i m4 = _mm512_set1_epi8(0x0f), bit4 = _mm512_set1_epi8(0x10);
  const __m512i quad_lanes = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc_off = _mm512_setzero_ps();
  for (std::int64_t g0 = 0; g0 < nb; g0 += q8_a_group) {
    const Block* wb = w + g0 / q32_per_block<Block>;
    const block_q8_a& g = a[g0 / q8_a_group];
    prefetch_ahead(wb, q8_a_group / q32_per_block<Block> * sizeof(Block));
    const int blocks = int(std::min<std::int64_t>(q8_a_group, nb - g0));
    Q32Group u;
    q32_group(wb, blocks, u);
    // Scales of the group's blocks (unused ones are zero in g.d), and the offset term: Σ_j
    // scale_j·sum_j (times −zero at the end), or with mins Σ_j m_j·d_x[j]·sum_j.
    const __m512 scale = _mm512_mul_ps(u.d, _mm512_loadu_ps(g.d));
    if constexpr (!block_with_table<Block> || biased_table) {
      const __m512 off = block_with_min<Block> ? _mm512_mul_ps(u.m, _mm512_loadu_ps(g.d)) : scale;
      acc_off = _mm512_fmadd_ps(off, _mm512_cvtepi32_ps(_mm512_loadu_si512(g.sum)), acc_off);
    }
    for (int k = 0; k < 4 && 4 * k < blocks; ++k) {
      __m512i lo = _mm512_and_si512(u.q[k], m4), hi = _mm512_and_si512(_mm512_srli_epi16(u.q[k], 4), m4);
      if constexpr (block_with_high_bits<Block>) {  // + 16 where the fifth bit is set
        lo = _mm512_mask_add_epi8(lo, __mmask64(u.lo[k]), lo, bit4);
        hi = _mm512_mask_add_epi8(hi, __mmask64(u.hi[k]), hi, bit4);
      }
      const std::int8_t* x = g.qs + q8_a_offset(true, 4 * k, 0);  // 64 low halves, then 64 high halves
      __m512i p;
      if constexpr (block_with_table<Block> && !biased_table) {  // IQ4_NL: the table's signed values
        const __m512i values = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(iq4_nl_values)));
        p = _mm512_add_epi32(dot_s8s8_512(_mm512_shuffle_epi8(values, lo), _mm512_loadu_si512(x)),
                             dot_s8s8_512(_mm512_shuffle_epi8(values, hi), _mm512_loadu_si512(x + 64)));
      } else {
        if constexpr (biased_table) {  // one byte shuffle each
          const __m512i values =
              _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(iq4_nl_values_biased.data())));
          lo = _mm512_shuffle_epi8(values, lo);
          hi = _mm512_shuffle_epi8(values, hi);
        }
        p = add_dot_u8s8_512(dot_u8s8_512(lo, _mm512_loadu_si512(x)), hi, _mm512_loadu_si512(x + 64));
      }
      const __m512 s = _mm512_permutexvar_ps(_mm512_add_epi32(quad_lanes, _mm512_set1_epi32(4 * k)), scale);
      if (k % 2)  // two accumulators hide the FMA latency
        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc1);
      else
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc0);
    }
  }
  const float off = hsum_512(acc_off);
  return hsum_512(_mm512_add_ps(acc0, acc1)) + (block_with_min<Block> ? off : -float(zero) * off);
}
inline float dot_q4_0_avx512(std::int64_t n, const block_q4_0* w, const block_q8_a* a) { return dot_q32_avx512(n, w, a); }
inline float dot_iq4_xs_avx512(std::int64_t n, const block_iq4_xs* w, const block_q8_a* a) { return dot_q32_avx512(n, w, a); }

/// acc + Σ of pairs of 16-bit products a·b, per int32 lane (vpdpwssd where available).
inline __m512i add_dot_s16_512(__m512i acc, __m512i a, __m512i b) {
#if defined(__AVX512VNNI__)
  return _mm512_dpwssd_epi32(acc, a, b);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}

/// Bytes 0-31 = 1 << `low`, bytes 32-63 = 1 << `high`: which bit of a 32-byte mask (loaded into
/// both halves) each half of a 64-byte step tests.
inline __m512i bit_per_half_512(int low, int high) {
  return _mm512_mask_blend_epi8(~__mmask64(0) << 32, _mm512_set1_epi8(char(1 << low)), _mm512_set1_epi8(char(1 << high)));
}

/// A word permutation spreading a super-block's scales over 64 weights: word lane i (weights
/// 2i, 2i+1 of the 64) reads scale `first + i / per_scale * step`.
inline __m512i scale_spread_512(int first, int per_scale, int step = 1) {
  alignas(64) std::int16_t idx[32];
  for (int i = 0; i < 32; ++i) idx[i] = std::int16_t(first + i / per_scale * step);
  return _mm512_load_si512(idx);
}

// The k-quant dots multiply 4- or 6-bit weights by activation bytes with vpmaddubsw (pairs of
// products as int16; no overflow: 63·127·2 < 2^15) and apply the sub-block scales with vpdpwssd,
// which also accumulates: two instructions per 64 weights, no 32-bit multiplies.

/// Q4_K and Q5_K (whose fifth bits are ORed into the nibbles).
template <typename Block>
inline float dot_k_min_avx512(std::int64_t n, const Block* w, const block_q8_k* a) {
  __m512 acc = _mm512_setzero_ps();
  __m256 acc_min = _mm256_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0f), bit4 = _mm512_set1_epi8(0x10);
  // The low nibbles of bytes 64h .. 64h+63 are sub-blocks 4h and 4h+2 (32 weights = 16 words
  // each), the high nibbles 4h+1 and 4h+3; the activations are in the same order (q8_k_offset).
  const __m512i spread[4] = {scale_spread_512(0, 16, 2), scale_spread_512(1, 16, 2), scale_spread_512(4, 16, 2),
                             scale_spread_512(5, 16, 2)};
  // Q5_K: byte l of those 64 takes its fifth bit from qh[l % 32], bit 4h (low nibbles, l < 32),
  // 4h+2 (low, l >= 32), 4h+1 (high, l < 32), 4h+3 (high, l >= 32); a masked add of 16 sets it.
  const __m512i fifth[4] = {bit_per_half_512(0, 2), bit_per_half_512(1, 3), bit_per_half_512(4, 6),
                            bit_per_half_512(5, 7)};
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    prefetch_ahead(w + b, sizeof(Block));
    std::uint64_t scales, mins;
    q4_k_scales_mins(w[b].scales, scales, mins);
    const __m512i sc = _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(_mm_cvtsi64_si128(std::int64_t(scales))));
    __m512i isum = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i z = _mm512_loadu_si512(w[b].qs + 64 * h);
      __m512i lo = _mm512_and_si512(z, m4), hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
      if constexpr (block_with_high_bits<Block>) {
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qh));
        const __m512i qq = join256(qh, qh);
        lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(qq, fifth[2 * h]), lo, bit4);
        hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(qq, fifth[2 * h + 1]), hi, bit4);
      }
      const __m512i p0 = _mm512_maddubs_epi16(lo, _mm512_loadu_si512(a[b].qs + 128 * h));
      const __m512i p1 = _mm512_maddubs_epi16(hi, _mm512_loadu_si512(a[b].qs + 128 * h + 64));
      isum = add_dot_s16_512(isum, p0, _mm512_permutexvar_epi16(spread[2 * h], sc));
      isum = add_dot_s16_512(isum, p1, _mm512_permutexvar_epi16(spread[2 * h + 1], sc));
    }
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(a[b].d * f16f(w[b].d)), acc);
    // Σ_j min_j · (sum of the activations of sub-block j), sub-block j = bsums 2j and 2j+1.
    const __m128i m8 = _mm_cvtsi64_si128(std::int64_t(mins));
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));  // m0 m0 m1 m1 ... m7 m7
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].bsums));
    acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, m16)),
                              _mm256_set1_ps(a[b].d * f16f(w[b].dmin)), acc_min);
  }
  return hsum_512(acc) - hsum_avx2(acc_min);
}
inline float dot_q4_k_avx512(std::int64_t n, const block_q4_k* w, const block_q8_k* a) { return dot_k_min_avx512(n, w, a); }

/// Q2_K / Q3_K with 512-bit vectors: per half n of the super-block and pair of 2-bit planes
/// (k, k+1), the half's 32 quant bytes in both 256-bit lanes shifted by 2k and 2k + 2 give weights
/// 128n + 32k + 0..63, which meet one 64-byte load of activations and the scales of sub-blocks
/// 8n + 2k .. 8n + 2k + 3 spread over their words by one permute.
template <typename Block>
inline float dot_k_2bit_avx512(std::int64_t n, const Block* w, const block_q8_k* a) {
  constexpr bool q3 = std::is_same_v<Block, block_q3_k>;
  __m512 acc = _mm512_setzero_ps();
  __m256 acc_off = _mm256_setzero_ps();
  const __m512i m3 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
  // word shifts: lanes 0-15 by 2k, 16-31 by 2k + 2 (k = 0, 2)
  const __m512i shifts[2] = {_mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16(0), _mm512_set1_epi16(2)),
                             _mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16(4), _mm512_set1_epi16(6))};
  const __m512i spreads[4] = {scale_spread_512(0, 8), scale_spread_512(4, 8), scale_spread_512(8, 8),
                              scale_spread_512(12, 8)};
  // Q3_K, half n, planes k, k+1: bytes 0-31 test bit 4n + k of hmask, bytes 32-63 bit 4n + k + 1
  const __m512i hm_sel[4] = {bit_per_half_512(0, 1), bit_per_half_512(2, 3), bit_per_half_512(4, 5),
                             bit_per_half_512(6, 7)};
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    prefetch_ahead(w + b, sizeof(Block));
    __m256i off;
    const __m512i sc = _mm512_zextsi256_si512(k_2bit_scales(w[b], a[b], off));
    __m512i hm = _mm512_setzero_si512();
    if constexpr (q3) hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].hmask)));
    __m512i isum = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs + 32 * h)));
      for (int p = 0; p < 2; ++p) {  // planes 2p, 2p + 1
        __m512i v = _mm512_and_si512(_mm512_srlv_epi16(q, shifts[p]), m3);
        if constexpr (q3) v = _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(hm, hm_sel[2 * h + p]), v, four);  // q + 4
        const __m512i x = _mm512_loadu_si512(a[b].qs + 128 * h + 64 * p);
        isum = add_dot_s16_512(isum, _mm512_maddubs_epi16(v, x), _mm512_permutexvar_epi16(spreads[2 * h + p], sc));
      }
    }
    float f, g;
    k_2bit_factors(w[b], a[b], f, g);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(f), acc);
    acc_off = _mm256_fmadd_ps(_mm256_cvtepi32_ps(off), _mm256_set1_ps(g), acc_off);
  }
  return hsum_512(acc) - hsum_avx2(acc_off);
}
inline float dot_q2_k_avx512(std::int64_t n, const block_q2_k* w, const block_q8_k* a) { return dot_k_2bit_avx512(n, w, a); }
inline float dot_q3_k_avx512(std::int64_t n, const block_q3_k* w, const block_q8_k* a) { return dot_k_2bit_avx512(n, w, a); }

/// The 6-bit quants of weights 128h + 0..63 (q01) and 128h + 64..127 (q23) of a Q6_K block,
/// each 0..63 as unsigned bytes: the low 4 bits from ql, the high 2 from qh.
inline void q6_k_quants_512(const block_q6_k& x, int h, __m512i& q01, __m512i& q23) {
  const __m512i m4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(3);
  const __m512i ql = _mm512_loadu_si512(x.ql + 64 * h);  // [ql0 | ql1], 32 bytes each
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qh + 32 * h));
  const __m512i h01 = join256(qh, _mm256_srli_epi16(qh, 2));
  const __m512i h23 = join256(_mm256_srli_epi16(qh, 4), _mm256_srli_epi16(qh, 6));
  q01 = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16(_mm512_and_si512(h01, m2), 4));
  q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), _mm512_slli_epi16(_mm512_and_si512(h23, m2), 4));
}

inline float dot_q6_k_avx512(std::int64_t n, const block_q6_k* w, const block_q8_k* a) {
  __m512 acc = _mm512_setzero_ps();  // scaled per-block sums; one horizontal sum per row
  // Chunk c (weights 64c .. 64c+63) is sub-blocks 4c .. 4c+3, 16 weights = 8 words each.
  const __m512i spread[4] = {scale_spread_512(0, 8), scale_spread_512(4, 8), scale_spread_512(8, 8),
                             scale_spread_512(12, 8)};
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    prefetch_ahead(w + b, sizeof(block_q6_k));
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].scales));
    const __m512i sc = _mm512_cvtepi8_epi16(_mm256_zextsi128_si256(sc8));  // 16 scales as words
    __m512i isum = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      __m512i q01, q23;  // weights 128h + 0..63 and 128h + 64..127 (each 0..63, unsigned)
      q6_k_quants_512(w[b], h, q01, q23);
      const __m512i p01 = _mm512_maddubs_epi16(q01, _mm512_loadu_si512(a[b].qs + 128 * h));
      const __m512i p23 = _mm512_maddubs_epi16(q23, _mm512_loadu_si512(a[b].qs + 128 * h + 64));
      isum = add_dot_s16_512(isum, p01, _mm512_permutexvar_epi16(spread[2 * h], sc));
      isum = add_dot_s16_512(isum, p23, _mm512_permutexvar_epi16(spread[2 * h + 1], sc));
    }
    // −32 · Σ_j sc_j · Σ a over sub-block j (pairs of sub-blocks per int32 lane)
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].bsums));
    const __m256i off = _mm256_madd_epi16(_mm512_castsi512_si256(sc), bs);
    isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(_mm256_slli_epi32(off, 5)));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(f16f(w[b].d) * a[b].d), acc);
  }
  return hsum_512(acc);
}

/// Q4_0 row → f32 as dequantize_row_q4_0 computes it (d times q − 8), a block per step: the low
/// nibbles are weights 0-15, the high ones 16-31. The scalar loop took ~18 % of a Q4_0 prompt
/// pass (tinyllama-1.1b shape, pp128); with this one, 2 / 1 threads: 95.5 / 49.0 -> 106.4 / 54.4
/// t/s. (Q8_0's scalar loop is vectorized by the compiler: the same intrinsics gained ~1 %.)
/// IQ4_NL the same way, its nibbles mapped through the table by one byte shuffle (pp128, 2 / 1
/// threads: 62 / 62 -> 81 / 81 % of GEMM).
/// The 32 weights of 16 quant bytes with scale d: (byte − zero)·d for the nibble − 8, or for the
/// table types the table's value + 128 (one byte shuffle) − 128; low nibbles to o, high to o + 16.
template <typename Block>
inline void dequantize_q32_bytes_avx512(const std::uint8_t* qs, __m512 d, float* o) {
  const __m128i m4 = _mm_set1_epi8(0x0f);
  const __m512i zero = _mm512_set1_epi32(block_with_table<Block> ? 128 : 8);
  auto weights = [&](__m128i nibbles) {
    if constexpr (block_with_table<Block>)
      nibbles = _mm_shuffle_epi8(_mm_load_si128(reinterpret_cast<const __m128i*>(iq4_nl_values_biased.data())), nibbles);
    return _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(nibbles), zero)));
  };
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  _mm512_storeu_ps(o, weights(_mm_and_si128(q, m4)));
  _mm512_storeu_ps(o + 16, weights(_mm_and_si128(_mm_srli_epi16(q, 4), m4)));
}
template <typename Block>
inline void dequantize_row_q32_avx512(const Block* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk4_0; ++b)
    dequantize_q32_bytes_avx512<Block>(x[b].qs, _mm512_set1_ps(f16f(x[b].d)), y + b * qk4_0);
}
inline void dequantize_row_q4_0_avx512(const block_q4_0* x, float* y, std::int64_t n) { dequantize_row_q32_avx512(x, y, n); }
inline void dequantize_row_iq4_nl_avx512(const block_iq4_nl* x, float* y, std::int64_t n) {
  dequantize_row_q32_avx512(x, y, n);
}
/// IQ4_XS the same way per sub-block, with scale d·(ls_j − 32) as dequantize_row_iq4_xs computes it.
inline void dequantize_row_iq4_xs_avx512(const block_iq4_xs* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk_k; ++b)
    for (int j = 0; j < q32_per_block<block_iq4_xs>; ++j)
      dequantize_q32_bytes_avx512<block_iq4_xs>(x[b].qs + 16 * j, _mm512_set1_ps(f16f(x[b].d) * float(iq4_xs_scale(x[b], j))),
                                                y + b * qk_k + qk4_0 * j);
}

/// Q6_K row → f32 as dequantize_row_q6_k computes it (d·sc_j, then times q − 32), 128 weights
/// per step with the bit operations of dot_q6_k_avx512. The batched path dequantizes whole
/// blocks of rows before its GEMM; the scalar loop took ~60 % of a Q6_K prompt pass.
inline void dequantize_row_q6_k_avx512(const block_q6_k* x, float* y, std::int64_t n) {
  const __m512i bias = _mm512_set1_epi8(32);
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float d = f16f(x[b].d);
    float* o = y + b * qk_k;
    for (int h = 0; h < 2; ++h) {
      __m512i q[2];  // weights 128h + 64c + 0..63 as q − 32 (signed bytes)
      q6_k_quants_512(x[b], h, q[0], q[1]);
      q[0] = _mm512_sub_epi8(q[0], bias);
      q[1] = _mm512_sub_epi8(q[1], bias);
      for (int c = 0; c < 2; ++c) {
        alignas(64) std::int8_t bytes[64];
        _mm512_store_si512(bytes, q[c]);
        for (int u = 0; u < 4; ++u) {  // sub-block 8h + 4c + u: 16 weights, one scale
          const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(bytes + 16 * u))));
          const __m512 scale = _mm512_set1_ps(d * float(x[b].scales[8 * h + 4 * c + u]));
          _mm512_storeu_ps(o + 128 * h + 64 * c + 16 * u, _mm512_mul_ps(scale, v));
        }
      }
    }
  }
}

/// Q2_K / Q3_K row → f32 as dequantize_row_q2_k / _q3_k compute it, 64 weights per step with the
/// bit operations of dot_k_2bit_avx512. (The scalar loops left Q2_K / Q3_K prompt passes at 68 /
/// 71 % of the GEMM rate.)
template <typename Block>
inline void dequantize_row_k_2bit_avx512(const Block* x, float* y, std::int64_t n) {
  constexpr bool q3 = std::is_same_v<Block, block_q3_k>;
  const __m512i m3 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
  const __m512i shifts[2] = {_mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16(0), _mm512_set1_epi16(2)),
                             _mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16(4), _mm512_set1_epi16(6))};
  const __m512i hm_sel[4] = {bit_per_half_512(0, 1), bit_per_half_512(2, 3), bit_per_half_512(4, 5),
                             bit_per_half_512(6, 7)};
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float d = f16f(x[b].d);
    __m512i hm = _mm512_setzero_si512();
    if constexpr (q3) hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].hmask)));
    for (int h = 0; h < 2; ++h) {
      const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs + 32 * h)));
      for (int p = 0; p < 2; ++p) {  // weights 128h + 64p + 0..63: sub-blocks 8h + 4p + u
        __m512i v = _mm512_and_si512(_mm512_srlv_epi16(q, shifts[p]), m3);
        if constexpr (q3) v = _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(hm, hm_sel[2 * h + p]), v, four);  // q + 4
        alignas(64) std::uint8_t bytes[64];
        _mm512_store_si512(bytes, v);
        for (int u = 0; u < 4; ++u) {
          const int j = 8 * h + 4 * p + u;
          const __m512i w = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(bytes + 16 * u)));
          float* o = y + b * qk_k + 16 * j;
          if constexpr (q3) {
            const __m512 dl = _mm512_set1_ps(d * float(q3_k_scale(x[b].scales, j) - 32));
            _mm512_storeu_ps(o, _mm512_mul_ps(dl, _mm512_cvtepi32_ps(_mm512_sub_epi32(w, _mm512_set1_epi32(4)))));
          } else {
            const int sc = x[b].scales[j];
            const __m512 dl = _mm512_set1_ps(d * float(sc & 0x0f)), ml = _mm512_set1_ps(f16f(x[b].dmin) * float(sc >> 4));
            _mm512_storeu_ps(o, _mm512_fmsub_ps(dl, _mm512_cvtepi32_ps(w), ml));
          }
        }
      }
    }
  }
}
inline void dequantize_row_q2_k_avx512(const block_q2_k* x, float* y, std::int64_t n) { dequantize_row_k_2bit_avx512(x, y, n); }
inline void dequantize_row_q3_k_avx512(const block_q3_k* x, float* y, std::int64_t n) { dequantize_row_k_2bit_avx512(x, y, n); }
#endif  // AVX-512

}  // namespace detail

// ---- dot products: dispatch ----------------------------------------------------------------------

/// The instruction set the dot products below use: "avx512-vnni", "avx512", "avx2" or "scalar".
constexpr const char* quant_simd_name() noexcept {
#if defined(LOOM_QUANT_AVX512) && defined(__AVX512VNNI__)
  return "avx512-vnni";
#elif defined(LOOM_QUANT_AVX512)
  return "avx512";
#elif defined(LOOM_QUANT_AVX2)
  return "avx2";
#else
  return "scalar";
#endif
}

#if defined(LOOM_QUANT_AVX512)
#define LOOM_QUANT_DOT(name) detail::name##_avx512
#elif defined(LOOM_QUANT_AVX2)
#define LOOM_QUANT_DOT(name) detail::name##_avx2
#else
#define LOOM_QUANT_DOT(name) detail::name##_scalar
#endif

/// Σ w·x over n values (a multiple of 32) of a Q8_0 row and quantized activations.
inline float dot_q8_0(std::int64_t n, const block_q8_0* w, const block_q8_a* a) { return LOOM_QUANT_DOT(dot_q8_0)(n, w, a); }
/// Σ w·x over n values (a multiple of 32) of a Q4_0 row and quantized activations.
inline float dot_q4_0(std::int64_t n, const block_q4_0* w, const block_q8_a* a) { return LOOM_QUANT_DOT(dot_q4_0)(n, w, a); }
/// Σ w·x over n values (a multiple of 32) of a Q4_1, Q5_0, Q5_1 or IQ4_NL row and quantized activations.
template <typename Block>
inline float dot_q32(std::int64_t n, const Block* w, const block_q8_a* a) { return LOOM_QUANT_DOT(dot_q32)(n, w, a); }
/// Σ w·x over n values (a multiple of 256) of an IQ4_XS row and quantized activations.
inline float dot_iq4_xs(std::int64_t n, const block_iq4_xs* w, const block_q8_a* a) { return LOOM_QUANT_DOT(dot_iq4_xs)(n, w, a); }
/// Σ w·x over n values (a multiple of 256) of a Q4_K row and quantized activations.
inline float dot_q4_k(std::int64_t n, const block_q4_k* w, const block_q8_k* a) { return LOOM_QUANT_DOT(dot_q4_k)(n, w, a); }
/// Σ w·x over n values (a multiple of 256) of a Q2_K row and quantized activations.
inline float dot_q2_k(std::int64_t n, const block_q2_k* w, const block_q8_k* a) { return LOOM_QUANT_DOT(dot_q2_k)(n, w, a); }
/// Σ w·x over n values (a multiple of 256) of a Q3_K row and quantized activations.
inline float dot_q3_k(std::int64_t n, const block_q3_k* w, const block_q8_k* a) { return LOOM_QUANT_DOT(dot_q3_k)(n, w, a); }
/// Σ w·x over n values (a multiple of 256) of a Q5_K row and quantized activations.
inline float dot_q5_k(std::int64_t n, const block_q5_k* w, const block_q8_k* a) { return LOOM_QUANT_DOT(dot_k_min)(n, w, a); }
/// Σ w·x over n values (a multiple of 256) of a Q6_K row and quantized activations.
inline float dot_q6_k(std::int64_t n, const block_q6_k* w, const block_q8_k* a) { return LOOM_QUANT_DOT(dot_q6_k)(n, w, a); }

#undef LOOM_QUANT_DOT

#if defined(LOOM_QUANT_AVX512)
#define LOOM_QUANT_DEQUANT(name) detail::name##_avx512
#else
#define LOOM_QUANT_DEQUANT(name) name
#endif

/// Dequantizes n weights of a quantized row (n a multiple of the block size) to f32.
inline void dequantize_row(DType t, const std::byte* src, float* dst, std::int64_t n) {
  detail::check_multiple(n, block_elems(t), "dequantize_row");
  switch (t) {
    case DType::q8_0: return dequantize_row_q8_0(reinterpret_cast<const block_q8_0*>(src), dst, n);
    case DType::q4_0: return LOOM_QUANT_DEQUANT(dequantize_row_q4_0)(reinterpret_cast<const block_q4_0*>(src), dst, n);
    case DType::q4_1: return dequantize_row_q32(reinterpret_cast<const block_q4_1*>(src), dst, n);
    case DType::q5_0: return dequantize_row_q32(reinterpret_cast<const block_q5_0*>(src), dst, n);
    case DType::q5_1: return dequantize_row_q32(reinterpret_cast<const block_q5_1*>(src), dst, n);
    case DType::iq4_nl: return LOOM_QUANT_DEQUANT(dequantize_row_iq4_nl)(reinterpret_cast<const block_iq4_nl*>(src), dst, n);
    case DType::iq4_xs: return LOOM_QUANT_DEQUANT(dequantize_row_iq4_xs)(reinterpret_cast<const block_iq4_xs*>(src), dst, n);
    case DType::q2_k: return LOOM_QUANT_DEQUANT(dequantize_row_q2_k)(reinterpret_cast<const block_q2_k*>(src), dst, n);
    case DType::q3_k: return LOOM_QUANT_DEQUANT(dequantize_row_q3_k)(reinterpret_cast<const block_q3_k*>(src), dst, n);
    case DType::q4_k: return dequantize_row_q4_k(reinterpret_cast<const block_q4_k*>(src), dst, n);
    case DType::q5_k: return dequantize_row_k_min(reinterpret_cast<const block_q5_k*>(src), dst, n);
    case DType::q6_k: return LOOM_QUANT_DEQUANT(dequantize_row_q6_k)(reinterpret_cast<const block_q6_k*>(src), dst, n);
    default: fail(ErrorKind::invalid_argument, "kernels", "dequantize_row: ", to_string(t), " is not quantized");
  }
}

#undef LOOM_QUANT_DEQUANT

/// Σ w·x of a quantized weight row of type t (n values) and activations made by
/// quantize_activation(t, ...).
inline float dot_quantized(DType t, std::int64_t n, const std::byte* w, const std::byte* act) {
  switch (t) {
    case DType::q8_0:
      return dot_q8_0(n, reinterpret_cast<const block_q8_0*>(w), reinterpret_cast<const block_q8_a*>(act));
    case DType::q4_0:
      return dot_q4_0(n, reinterpret_cast<const block_q4_0*>(w), reinterpret_cast<const block_q8_a*>(act));
    case DType::q4_1:
      return dot_q32(n, reinterpret_cast<const block_q4_1*>(w), reinterpret_cast<const block_q8_a*>(act));
    case DType::q5_0:
      return dot_q32(n, reinterpret_cast<const block_q5_0*>(w), reinterpret_cast<const block_q8_a*>(act));
    case DType::q5_1:
      return dot_q32(n, reinterpret_cast<const block_q5_1*>(w), reinterpret_cast<const block_q8_a*>(act));
    case DType::iq4_nl:
      return dot_q32(n, reinterpret_cast<const block_iq4_nl*>(w), reinterpret_cast<const block_q8_a*>(act));
    case DType::iq4_xs:
      return dot_iq4_xs(n, reinterpret_cast<const block_iq4_xs*>(w), reinterpret_cast<const block_q8_a*>(act));
    case DType::q2_k:
      return dot_q2_k(n, reinterpret_cast<const block_q2_k*>(w), reinterpret_cast<const block_q8_k*>(act));
    case DType::q3_k:
      return dot_q3_k(n, reinterpret_cast<const block_q3_k*>(w), reinterpret_cast<const block_q8_k*>(act));
    case DType::q4_k:
      return dot_q4_k(n, reinterpret_cast<const block_q4_k*>(w), reinterpret_cast<const block_q8_k*>(act));
    case DType::q5_k:
      return dot_q5_k(n, reinterpret_cast<const block_q5_k*>(w), reinterpret_cast<const block_q8_k*>(act));
    case DType::q6_k:
      return dot_q6_k(n, reinterpret_cast<const block_q6_k*>(w), reinterpret_cast<const block_q8_k*>(act));
    default: fail(ErrorKind::invalid_argument, "kernels", "dot_quantized: ", to_string(t), " is not quantized");
  }
}

}  // namespace loom::kernels

// Dot products of quantized weight rows with quantized activations, AVX-512 versions for the
// 32-weight blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) and IQ4_XS, with VNNI and VBMI
// (compiled for the avx512 level whatever the includer's flags; run only where the CPU has it).
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
#include "loom/kernels/quant/dots_avx2.hpp"
#include "loom/kernels/target.hpp"

#if LOOM_X86
#include <immintrin.h>

LOOM_TARGET_AVX512_BEGIN
namespace loom::kernels::detail {


/// acc + 16 int32 lanes, each the sum of 4 products of unsigned bytes u and signed bytes s
/// (vpdpbusd where available).
inline __m512i add_dot_u8s8_512(__m512i acc, __m512i u, __m512i s) {
  return _mm512_dpbusd_epi32(acc, u, s);
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
/// 9 cache lines, so from DRAM the core holds fewer lines in flight (docs/performance-notes.md,
/// "Q8_0 scales per 4 blocks").
inline float dot_q8_0_avx512(std::int64_t n, const block_q8_0* w, const block_q8_grouped* a) {
  const std::int64_t nb = n / qk8_0;
  const __m512i bias = _mm512_set1_epi8(char(0x80));
  constexpr float offset = 128.0f;
  auto products = [&](__m512i q, __m512i x) { return dot_u8s8_512(_mm512_xor_si512(q, bias), x); };
  // lanes 0-7 take scale 2k, lanes 8-15 scale 2k+1 of the 4 built (pair k = 0, 1)
  const __m512i pair_lanes[2] = {_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                                 _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2)};
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};  // one per pair: hides the FMA latency
  __m128 acc_off = _mm_setzero_ps();
  for (std::int64_t g0 = 0; g0 < nb; g0 += q8_grouped_blocks) {
    const block_q8_grouped& g = a[g0 / q8_grouped_blocks];
    prefetch_ahead(w + g0, q8_grouped_blocks * sizeof(block_q8_0));
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
        const __m512i p = products(q, _mm512_loadu_si512(g.qs + q8_grouped_offset(false, j + 2 * k, 0)));
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
    const int blocks = int(std::min<std::int64_t>(q8_grouped_blocks, nb - g0));
    if (blocks == q8_grouped_blocks) {
      for (int j = 0; j < q8_grouped_blocks; j += 4) quad(j, 4);
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
struct Block32Group {
  __m512i q[4];
  __m512 d, m;
  std::uint64_t lo[4], hi[4];
};

template <typename Block>
inline void block32_group(const Block* wb, int blocks, Block32Group& g) {
  auto quants = [&](int b) {
    return b < blocks ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[b].qs)) : _mm_setzero_si128();
  };
  for (int k = 0; k < 4; ++k) {
    const __m512i q01 = _mm512_inserti32x4(_mm512_zextsi128_si512(quants(4 * k)), quants(4 * k + 1), 1);
    g.q[k] = _mm512_inserti32x4(_mm512_inserti32x4(q01, quants(4 * k + 2), 2), quants(4 * k + 3), 3);
  }
  g.d = blocks == q8_grouped_blocks ? block_scales_512(wb, q8_grouped_blocks) : block_scales_512(wb, blocks);
  if constexpr (block_with_min<Block>)
    g.m = blocks == q8_grouped_blocks ? block_scales_512(wb, q8_grouped_blocks, &Block::m) : block_scales_512(wb, blocks, &Block::m);
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

/// The n bytes at p (n = 8, 16, 32 or 64) in the low bytes of a vector, the others zero: one plain
/// load. (On the Intel Xeon a masked load costs a vector uop beside the load;
/// docs/performance-notes.md, "Plain loads for short tails".)
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
/// tail_at) that block32_group's permutes index.
constexpr int head_tail_index(int b, int tail_at) { return b < 64 ? b : 64 + b - tail_at; }

/// The same with AVX-512 VBMI: each four blocks are one 64-byte load (the head) and one of 8, 16,
/// 32 or 64 bytes ending where they end (the tail; masked loads in a row's last group, so that
/// nothing past its last block is read); a byte permute gathers their quant bytes and word
/// permutes their scales, mins and fifth bits.
template <typename Block>
  requires(4 * sizeof(Block) <= 128)
inline void block32_group(const Block* wb, int blocks, Block32Group& g) {
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
  if (blocks == q8_grouped_blocks) {
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

/// IQ4_XS: a group of 16 sub-blocks is two super-blocks (one at the end of a row of an odd
/// number), whose two 64-byte halves of quant bytes each hold four sub-blocks in the order the
/// nibble blocks' gather gives; lanes 0-7 / 8-15 of the scales d·(ls_j − 32) come from the first
/// / second super-block's scale bits by per-lane shifts.
inline void block32_group(const block_iq4_xs* wb, int blocks, Block32Group& g) {
  const bool two = blocks > block32s_per_block<block_iq4_xs>;
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
/// whose low nibbles meet one 64-byte load of activations (q8_grouped_offset's `halves` order) and whose
/// high nibbles the next; both products accumulate into one int32 vector whose lanes 4k .. 4k+3
/// belong to block k of the four.
template <typename Block>
inline float dot_block32_avx512(std::int64_t n, const Block* w, const block_q8_grouped* a) {
  // IQ4_NL with VNNI: the table's values + 128 as unsigned bytes, with zero 128 (vpdpbusd sums in
  // 32 bits; without VNNI vpmaddubsw would saturate at 241·127·2, so the values stay signed).
  constexpr bool biased_table = block_with_table<Block>;
  constexpr int zero = biased_table ? 128 : block32_zero<Block>;
  const std::int64_t nb = n / qk4_0;
  const __m512i m4 = _mm512_set1_epi8(0x0f), bit4 = _mm512_set1_epi8(0x10);
  const __m512i quad_lanes = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc_off = _mm512_setzero_ps();
  for (std::int64_t g0 = 0; g0 < nb; g0 += q8_grouped_blocks) {
    const Block* wb = w + g0 / block32s_per_block<Block>;
    const block_q8_grouped& g = a[g0 / q8_grouped_blocks];
    prefetch_ahead(wb, q8_grouped_blocks / block32s_per_block<Block> * sizeof(Block));
    const int blocks = int(std::min<std::int64_t>(q8_grouped_blocks, nb - g0));
    Block32Group u;
    block32_group(wb, blocks, u);
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
      const std::int8_t* x = g.qs + q8_grouped_offset(true, 4 * k, 0);  // 64 low halves, then 64 high halves
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
inline float dot_q4_0_avx512(std::int64_t n, const block_q4_0* w, const block_q8_grouped* a) { return dot_block32_avx512(n, w, a); }
inline float dot_iq4_xs_avx512(std::int64_t n, const block_iq4_xs* w, const block_q8_grouped* a) { return dot_block32_avx512(n, w, a); }

}  // namespace loom::kernels::detail

LOOM_TARGET_END
#endif  // LOOM_X86

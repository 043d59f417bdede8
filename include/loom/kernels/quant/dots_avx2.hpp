// Dot products of quantized weight rows with quantized activations, AVX2 versions (compiled for
// AVX2 + FMA + F16C whatever the includer's flags; run only where the CPU has them).
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
#include "loom/kernels/quant/dequantize.hpp"
#include "loom/kernels/target.hpp"

#if LOOM_X86
#include <immintrin.h>

LOOM_TARGET_AVX2_BEGIN
namespace loom::kernels::detail {

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

/// The f16 scales of blocks w[0..3] as four floats.
template <typename Block>
inline __m128 scales4_avx2(const Block* w) {
  __m128i d = _mm_cvtsi32_si128(w[0].d.bits);
  d = _mm_insert_epi16(d, w[1].d.bits, 1);
  d = _mm_insert_epi16(d, w[2].d.bits, 2);
  d = _mm_insert_epi16(d, w[3].d.bits, 3);
  return _mm_cvtph_ps(d);
}
/// Block k of an activation group in q8_grouped_offset's `halves` order: values 0-15 in the low lane,
/// 16-31 in the high one (unpack_nibbles_avx2's order).
inline __m256i q8_grouped_halves_avx2(const block_q8_grouped& g, int k) {
  return _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.qs + q8_grouped_offset(true, k, 16))),
                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(g.qs + q8_grouped_offset(true, k, 0))));
}
/// One Q8_0 / Q4_0 block times block k of an activation group: the last blocks of rows that are
/// not a whole number of four.
inline float block_dot_avx2(const block_q8_0& w, const block_q8_grouped& g, int k) {
  const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs));
  const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.qs + q8_grouped_offset(false, k, 0)));
  return float(hsum_epi32_avx2(dot_s8s8_avx2(wq, xq))) * (f16f(w.d) * g.d[k]);
}
inline float block_dot_avx2(const block_q4_0& w, const block_q8_grouped& g, int k) {
  const __m256i wq = _mm256_sub_epi8(unpack_nibbles_avx2(w.qs), _mm256_set1_epi8(8));
  return float(hsum_epi32_avx2(dot_s8s8_avx2(wq, q8_grouped_halves_avx2(g, k)))) * (f16f(w.d) * g.d[k]);
}

/// Q8_0 · activations for N rows of activations (out[t] = w · a[t]), four blocks per step with
/// their four scales formed in one vector, blocks alternating between two accumulators. With
/// N > 1 (a batch of decoding sequences) each loaded weight block and scale serves N rows; every
/// row's sum is formed in the same order whatever N.
template <int N>
inline void dot_q8_0_avx2_rows(std::int64_t n, const block_q8_0* w, const block_q8_grouped* const* a, float* out) {
  const std::int64_t blocks = n / qk8_0;
  __m256 acc[N][2];
  for (int t = 0; t < N; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  std::int64_t b = 0;
  for (; b + 4 <= blocks; b += 4) {
    prefetch_ahead(w + b, 4 * sizeof(block_q8_0));
    const std::int64_t group = b / q8_grouped_blocks;
    const int k = int(b % q8_grouped_blocks);  // a multiple of 4
    const __m128 dwf = scales4_avx2(w + b);
    __m256i wq[4];
    for (int i = 0; i < 4; ++i) wq[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b + i].qs));
    for (int t = 0; t < N; ++t) {
      const block_q8_grouped& g = a[t][group];
      alignas(16) float d[4];
      _mm_store_ps(d, _mm_mul_ps(dwf, _mm_loadu_ps(g.d + k)));
      for (int i = 0; i < 4; ++i) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.qs + q8_grouped_offset(false, k + i, 0)));
        acc[t][i % 2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_s8s8_avx2(wq[i], xq)), _mm256_broadcast_ss(d + i), acc[t][i % 2]);
      }
    }
  }
  for (int t = 0; t < N; ++t) {
    float sum = hsum_avx2(_mm256_add_ps(acc[t][0], acc[t][1]));
    for (std::int64_t r = b; r < blocks; ++r) sum += block_dot_avx2(w[r], a[t][r / q8_grouped_blocks], int(r % q8_grouped_blocks));
    out[t] = sum;
  }
}

inline float dot_q8_0_avx2(std::int64_t n, const block_q8_0* w, const block_q8_grouped* a) {
  float out;
  dot_q8_0_avx2_rows<1>(n, w, &a, &out);
  return out;
}

/// Q4_0 · activations for N rows of activations (out[t] = w · a[t]), four blocks per step:
/// Σ_b d_b·d_x,b·(Σ q·x − 8·Σ x), the zero point 8 taken out once per block through the
/// activations' block sums. The four blocks' low halves are 64 contiguous activation bytes
/// (q8_grouped_offset), so two blocks are one 32-byte load; the four scales are formed in one
/// vector. About 8 instructions per block against about 40 for one block at a time with sign
/// fix-ups and scalar index arithmetic, which held AMD EPYC Zen 3 at 27 % of its bandwidth on
/// TinyLlama's shape (loom-bench tg). With N > 1 (a batch of decoding sequences) each unpacked
/// weight vector and scale serves N rows; every row's sum is formed in the same order whatever N.
template <int N>
inline void dot_q4_0_avx2_rows(std::int64_t n, const block_q4_0* w, const block_q8_grouped* const* a, float* out) {
  const std::int64_t blocks = n / qk4_0;
  const __m256i m = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256 acc0[N], acc1[N];
  __m128 zero_point[N];  // Σ d_b·d_x,b·Σx over the blocks
  for (int t = 0; t < N; ++t) {
    acc0[t] = acc1[t] = _mm256_setzero_ps();
    zero_point[t] = _mm_setzero_ps();
  }
  const __m256i first_two = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), last_two = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
  // Weights of blocks (j, j+1) side by side: the low nibbles, then the high nibbles, each
  // matching 32 contiguous activation bytes in the `halves` order.
  auto nibbles = [&](const block_q4_0& j0, const block_q4_0& j1, __m256i& lo, __m256i& hi) {
    const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(j0.qs))),
                                              _mm_loadu_si128(reinterpret_cast<const __m128i*>(j1.qs)), 1);
    lo = _mm256_and_si256(q, m);
    hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m);
  };
  // 8 int32 lanes, 0-3 summing to Σ q·x over the first block, 4-7 over the second. vpmaddubsw's
  // unsigned × signed products need no sign fix-up, and a pair of them stays below
  // 2·2·15·128 < 2^15, so the halves are added as int16 before widening.
  auto pair_sums = [&](__m256i lo, __m256i hi, const std::int8_t* x) {
    const __m256i l = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
    const __m256i h = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 64)));
    return _mm256_madd_epi16(_mm256_add_epi16(l, h), ones);
  };
  std::int64_t b = 0;
  for (; b + 4 <= blocks; b += 4) {
    prefetch_ahead(w + b, 4 * sizeof(block_q4_0));
    const std::int64_t group = b / q8_grouped_blocks;
    const int k = int(b % q8_grouped_blocks);  // a multiple of 4: the blocks are one quarter of a group
    const __m128 dwf = scales4_avx2(w + b);
    __m256i lo01, hi01, lo23, hi23;
    nibbles(w[b], w[b + 1], lo01, hi01);
    nibbles(w[b + 2], w[b + 3], lo23, hi23);
    for (int t = 0; t < N; ++t) {
      const block_q8_grouped& g = a[t][group];
      const __m128 d = _mm_mul_ps(dwf, _mm_loadu_ps(g.d + k));
      zero_point[t] =
          _mm_fmadd_ps(d, _mm_cvtepi32_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.sum + k))), zero_point[t]);
      const __m256 d8 = _mm256_castps128_ps256(d);
      const std::int8_t* x = g.qs + q8_grouped_offset(true, k, 0);
      acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pair_sums(lo01, hi01, x)), _mm256_permutevar8x32_ps(d8, first_two), acc0[t]);
      acc1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pair_sums(lo23, hi23, x + 32)), _mm256_permutevar8x32_ps(d8, last_two), acc1[t]);
    }
  }
  for (int t = 0; t < N; ++t) {
    __m128 zp = _mm_add_ps(zero_point[t], _mm_movehl_ps(zero_point[t], zero_point[t]));
    zp = _mm_add_ss(zp, _mm_movehdup_ps(zp));
    float sum = hsum_avx2(_mm256_add_ps(acc0[t], acc1[t])) - 8.0f * _mm_cvtss_f32(zp);
    for (std::int64_t r = b; r < blocks; ++r) sum += block_dot_avx2(w[r], a[t][r / q8_grouped_blocks], int(r % q8_grouped_blocks));
    out[t] = sum;
  }
}

inline float dot_q4_0_avx2(std::int64_t n, const block_q4_0* w, const block_q8_grouped* a) {
  float out;
  dot_q4_0_avx2_rows<1>(n, w, &a, &out);
  return out;
}

template <>
struct MultiRowDot<&dot_q4_0_avx2> {
  static constexpr int rows = 4;
  template <int N>
  static void run(std::int64_t n, const block_q4_0* w, const block_q8_grouped* const* a, float* out) {
    dot_q4_0_avx2_rows<N>(n, w, a, out);
  }
};

template <>
struct MultiRowDot<&dot_q8_0_avx2> {
  static constexpr int rows = 4;
  template <int N>
  static void run(std::int64_t n, const block_q8_0* w, const block_q8_grouped* const* a, float* out) {
    dot_q8_0_avx2_rows<N>(n, w, a, out);
  }
};

/// The fifth bits of a Q5_0 / Q5_1 block as bytes in weight order: 0x10 where bit j of qh is set.
inline __m256i high_bits_avx2(std::uint32_t qh) {
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int(qh)),  // byte j = byte j / 8 of qh
                                            _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                              0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(std::int64_t(0x8040201008040201));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit), _mm256_set1_epi8(0x10));
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
inline float dot_block32_avx2(std::int64_t n, const Block* w, const block_q8_grouped* a) {
  __m256 acc = _mm256_setzero_ps();
  float off = 0.0f;
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    if (b % 4 == 0) prefetch_ahead(w + b, 4 * sizeof(Block));
    const block_q8_grouped& g = a[b / q8_grouped_blocks];
    const int k = int(b % q8_grouped_blocks);
    __m256i q = unpack_nibbles_avx2(w[b].qs);
    if constexpr (block_with_high_bits<Block>) q = _mm256_or_si256(q, high_bits_avx2(q5_high_bits(w[b])));
    const __m256i xq = q8_grouped_halves_avx2(g, k);
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
      off -= float(block32_zero<Block>) * d * g.d[k] * float(g.sum[k]);
  }
  return hsum_avx2(acc) + off;
}

/// IQ4_XS: IQ4_NL's product per sub-block of 32, scaled by d·(ls − 32)·d_x.
inline float dot_iq4_xs_avx2(std::int64_t n, const block_iq4_xs* w, const block_q8_grouped* a) {
  __m256 acc = _mm256_setzero_ps();
  for (std::int64_t s = 0; s < n / qk4_0; ++s) {
    const block_iq4_xs& b = w[s / block32s_per_block<block_iq4_xs>];
    const int j = int(s % block32s_per_block<block_iq4_xs>), k = int(s % q8_grouped_blocks);
    if (j == 0) prefetch_ahead(&b, sizeof(block_iq4_xs));
    const block_q8_grouped& g = a[s / q8_grouped_blocks];
    const __m256 p = _mm256_cvtepi32_ps(table_dot_avx2(unpack_nibbles_avx2(b.qs + 16 * j), q8_grouped_halves_avx2(g, k)));
    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(f16f(b.d) * float(iq4_xs_scale(b, j)) * g.d[k]), acc);
  }
  return hsum_avx2(acc);
}

/// Q4_K and Q5_K (whose fifth bits are ORed into the nibbles). Per super-block everything is
/// vector work: the 8 scales and mins unpacked by word operations (q4_k_scales_mins), each
/// sub-block's scale broadcast to 16-bit lanes by a byte shuffle, the mins' term Σ_j m_j·Σ x
/// by one vpmaddwd against the activations' sums of 32, and both terms accumulated as floats
/// across super-blocks (one horizontal sum per row, not one per super-block).
template <typename Block>
inline float dot_k_min_avx2(std::int64_t n, const Block* w, const block_q8_k* a) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  __m128 acc_min = _mm_setzero_ps();
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    prefetch_ahead(w + b, sizeof(Block));
    std::uint64_t sc8, mn8;
    q4_k_scales_mins(w[b].scales, sc8, mn8);
    const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtsi64_si128(std::int64_t(sc8)));
    // the mins' term: 8 mins (int16) · the activations' sums per 32 values (pairs of bsums)
    const __m128i sums = _mm_hadd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a[b].bsums)),
                                        _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[b].bsums + 8)));
    const __m128i min_terms = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(std::int64_t(mn8))), sums);
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
      // sub-block j's scale in every 16-bit lane: byte j, then a zero byte (shuffle index 0x80)
      const __m256i sc0 = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(std::int16_t(0x8000 | (2 * k))));
      const __m256i sc1 = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(std::int16_t(0x8000 | (2 * k + 1))));
      // maddubs: pairs of q·x in int16 (|31·127·2| fits); madd by the sub-block scale → int32.
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), sc0));
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), sc1));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16f(w[b].d) * a[b].d), _mm256_cvtepi32_ps(isum), acc);
    acc_min = _mm_fmadd_ps(_mm_set1_ps(f16f(w[b].dmin) * a[b].d), _mm_cvtepi32_ps(min_terms), acc_min);
  }
  const __m128 m2 = _mm_add_ps(acc_min, _mm_movehl_ps(acc_min, acc_min));
  return hsum_avx2(acc) - _mm_cvtss_f32(_mm_add_ss(m2, _mm_movehdup_ps(m2)));
}
inline float dot_q4_k_avx2(std::int64_t n, const block_q4_k* w, const block_q8_k* a) { return dot_k_min_avx2(n, w, a); }

/// The K-quants' 16 sub-block scales as words (sc16), per half of a super-block: words 8h..8h+7
/// in both 128-bit halves, then sub-block 2i's scale in the words of bytes 0-15 and 2i + 1's in
/// those of bytes 16-31 (one byte shuffle, the steps' vpmaddwd factors).
inline __m256i half_scale_words(__m256i sc16, int h) {
  return h == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00) : _mm256_permute2x128_si256(sc16, sc16, 0x11);
}
inline __m256i scale_pair_words(__m256i half_scales, int i) {
  const auto word = [](int j) { return std::int16_t((2 * j) | ((2 * j + 1) << 8)); };
  return _mm256_shuffle_epi8(half_scales, _mm256_set_m128i(_mm_set1_epi16(word(2 * i + 1)), _mm_set1_epi16(word(2 * i))));
}

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
  const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps(), acc_off = _mm256_setzero_ps();
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    prefetch_ahead(w + b, sizeof(Block));
    __m256i off;
    const __m256i sc16 = k_2bit_scales(w[b], a[b], off);
    __m256i hm = _mm256_setzero_si256();
    if constexpr (q3) hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].hmask));
    __m256i isum = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs + 32 * h));
      const __m256i half_scales = half_scale_words(sc16, h);
      for (int k = 0; k < 4; ++k) {
        __m256i v = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3);  // weights 128h + 32k + 0..31
        if constexpr (q3)
          v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), one), 2));
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 128 * h + 32 * k));
        // sub-blocks 8h + 2k (bytes 0-15) and 8h + 2k + 1 (16-31)
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(v, x), scale_pair_words(half_scales, k)));
      }
    }
    float f, g;
    k_2bit_factors(w[b], a[b], f, g);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f), _mm256_cvtepi32_ps(isum), acc);
    acc_off = _mm256_fmadd_ps(_mm256_set1_ps(g), _mm256_cvtepi32_ps(off), acc_off);
  }
  return hsum_avx2(acc) - hsum_avx2(acc_off);
}
inline float dot_q2_k_avx2(std::int64_t n, const block_q2_k* w, const block_q8_k* a) { return dot_k_2bit_avx2(n, w, a); }
inline float dot_q3_k_avx2(std::int64_t n, const block_q3_k* w, const block_q8_k* a) { return dot_k_2bit_avx2(n, w, a); }

inline float dot_q6_k_avx2(std::int64_t n, const block_q6_k* w, const block_q8_k* a) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    prefetch_ahead(w + b, sizeof(block_q6_k));
    // the 16 signed scales as words; Σ_j sc_j · Σ a over sub-block j (the −32 of every q) in
    // int32 lanes, subtracted from the products' sum below
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].scales)));
    const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].bsums)));
    __m256i isum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].ql + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qh + 32 * h));
      const __m256i half_scales = half_scale_words(sc16, h);
      for (int g = 0; g < 4; ++g) {
        const __m256i l = (g & 1) ? ql1 : ql0;
        const __m256i low = g < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), m2);
        const __m256i q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));  // 0..63, unsigned
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 128 * h + 32 * g));
        // sub-blocks 8h + 2g (bytes 0-15) and 8h + 2g + 1 (16-31)
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), scale_pair_words(half_scales, g)));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16f(w[b].d) * a[b].d), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum_avx2(acc);
}

}  // namespace loom::kernels::detail

LOOM_TARGET_END
#endif  // LOOM_X86

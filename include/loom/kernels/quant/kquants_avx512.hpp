// AVX-512 dot products for the k-quants (Q2_K .. Q6_K) and AVX-512 dequantization of the types
// whose prompts it speeds up (compiled for the avx512 level; run only where the CPU has it).
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
#include "loom/kernels/quant/dots_avx512.hpp"
#include "loom/kernels/target.hpp"

#if LOOM_X86
#include <immintrin.h>

LOOM_TARGET_AVX512_BEGIN
namespace loom::kernels::detail {


/// acc + Σ of pairs of 16-bit products a·b, per int32 lane (vpdpwssd where available).
inline __m512i add_dot_s16_512(__m512i acc, __m512i a, __m512i b) {
  return _mm512_dpwssd_epi32(acc, a, b);
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
/// nibbles are weights 0-15, the high ones 16-31 (the scalar loop took ~18 % of a Q4_0 prompt
/// pass; docs/performance-notes.md, "SIMD dequantization"). IQ4_NL the same way, its nibbles
/// mapped through the table by one byte shuffle.
/// The 32 weights of 16 quant bytes with scale d: (byte − zero)·d for the nibble − 8, or for the
/// table types the table's value + 128 (one byte shuffle) − 128; low nibbles to o, high to o + 16.
template <typename Block>
inline void dequantize_block32_bytes_avx512(const std::uint8_t* qs, __m512 d, float* o) {
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
inline void dequantize_row_block32_avx512(const Block* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk4_0; ++b)
    dequantize_block32_bytes_avx512<Block>(x[b].qs, _mm512_set1_ps(f16f(x[b].d)), y + b * qk4_0);
}
inline void dequantize_row_q4_0_avx512(const block_q4_0* x, float* y, std::int64_t n) { dequantize_row_block32_avx512(x, y, n); }
inline void dequantize_row_iq4_nl_avx512(const block_iq4_nl* x, float* y, std::int64_t n) {
  dequantize_row_block32_avx512(x, y, n);
}
/// IQ4_XS the same way per sub-block, with scale d·(ls_j − 32) as dequantize_row_iq4_xs computes it.
inline void dequantize_row_iq4_xs_avx512(const block_iq4_xs* x, float* y, std::int64_t n) {
  for (std::int64_t b = 0; b < n / qk_k; ++b)
    for (int j = 0; j < block32s_per_block<block_iq4_xs>; ++j)
      dequantize_block32_bytes_avx512<block_iq4_xs>(x[b].qs + 16 * j, _mm512_set1_ps(f16f(x[b].d) * float(iq4_xs_scale(x[b], j))),
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

}  // namespace loom::kernels::detail

LOOM_TARGET_END
#endif  // LOOM_X86

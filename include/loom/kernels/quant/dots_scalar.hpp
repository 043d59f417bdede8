// Dot products of quantized weight rows with quantized activations, portable scalar versions:
// the reference every SIMD version computes the same integer block sums as.
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

namespace loom::kernels {

namespace detail {

/// Σ w·x over n values, Q8_0 weights.
inline float dot_q8_0_scalar(std::int64_t n, const block_q8_0* w, const block_q8_grouped* a) {
  float sum = 0.0f;
  for (std::int64_t b = 0; b < n / qk8_0; ++b) {
    std::int32_t isum = 0;
    const block_q8_grouped& g = a[b / q8_grouped_blocks];
    const std::int64_t k = b % q8_grouped_blocks;
    for (int j = 0; j < qk8_0; ++j) isum += std::int32_t(w[b].qs[j]) * g.qs[q8_grouped_offset(false, int(k), j)];
    sum += f16f(w[b].d) * g.d[k] * float(isum);
  }
  return sum;
}

/// Σ w·x over n values of a Q4_0 / Q4_1 / Q5_0 / Q5_1 / IQ4_NL row: per block d·d_x·Σ v·x with
/// v = q − zero (or IQ4_NL's table value), plus m·d_x·Σ x for the blocks with a min.
template <typename Block>
inline float dot_block32_scalar(std::int64_t n, const Block* w, const block_q8_grouped* a) {
  float sum = 0.0f;
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    std::int32_t isum = 0;
    const block_q8_grouped& g = a[b / q8_grouped_blocks];
    const int k = int(b % q8_grouped_blocks);
    for (int j = 0; j < qk4_0; ++j) isum += block32_value(w[b], j) * g.qs[q8_grouped_offset(true, k, j)];
    sum += f16f(w[b].d) * g.d[k] * float(isum);
    if constexpr (block_with_min<Block>) sum += f16f(w[b].m) * g.d[k] * float(g.sum[k]);
  }
  return sum;
}
inline float dot_q4_0_scalar(std::int64_t n, const block_q4_0* w, const block_q8_grouped* a) { return dot_block32_scalar(n, w, a); }

/// IQ4_XS: per sub-block s of 32 (block s / 8, activation block s % 16 of group s / 16)
/// d·(ls − 32)·d_x·Σ v·x, as for IQ4_NL.
inline float dot_iq4_xs_scalar(std::int64_t n, const block_iq4_xs* w, const block_q8_grouped* a) {
  float sum = 0.0f;
  for (std::int64_t s = 0; s < n / qk4_0; ++s) {
    const block_iq4_xs& b = w[s / block32s_per_block<block_iq4_xs>];
    const int j = int(s % block32s_per_block<block_iq4_xs>), k = int(s % q8_grouped_blocks);
    const block_q8_grouped& g = a[s / q8_grouped_blocks];
    std::int32_t isum = 0;
    for (int i = 0; i < qk4_0; ++i) {
      const std::uint8_t byte = b.qs[16 * j + i % 16];
      isum += iq4_nl_values[i < 16 ? byte & 0x0f : byte >> 4] * g.qs[q8_grouped_offset(true, k, i)];
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


}  // namespace detail

}  // namespace loom::kernels

// Reference quantization of f32 weights to Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q4_K,
// Q5_K and Q6_K: llama.cpp's quantizers without an importance matrix (used by convert and
// generate --quantize).
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
inline void pack_block32(Block& b, const int* q) {
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
inline void quantize_row_block32_symmetric(const float* x, Block* y, std::int64_t n) {
  detail::check_multiple(n, qk4_0, "quantize_row_q4_0 / q5_0");
  constexpr int zero = block32_zero<Block>;
  for (std::int64_t b = 0; b < n / qk4_0; ++b) {
    const float* v = x + b * qk4_0;
    const float d = detail::largest_magnitude(v, qk4_0) / -float(zero);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = to_f16(d);
    int q[qk4_0];
    for (int j = 0; j < qk4_0; ++j) q[j] = detail::truncate_quant(v[j] * id + (float(zero) + 0.5f), 2 * zero - 1);
    detail::pack_block32(y[b], q);
  }
}

/// f32 → Q4_0 (n a multiple of 32).
inline void quantize_row_q4_0(const float* x, block_q4_0* y, std::int64_t n) { quantize_row_block32_symmetric(x, y, n); }

/// f32 → Q4_1 / Q5_1 (n a multiple of 32), as ggml's reference: m = min x, d = (max x − m) / 15
/// (or / 31), q = min(15 (31), trunc((x − m) / d + 0.5)); d and m stored as f16.
template <typename Block>
inline void quantize_row_block32_min(const float* x, Block* y, std::int64_t n) {
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
    detail::pack_block32(y[b], q);
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
    // (one read of the midpoint per pass: in an -O0 build std::array's operator[] is a call)
    const float step = float(iq4_nl_values[k + 1] - iq4_nl_values[k]), mid = iq4_midpoints[k];
    for (int j = 0; j < qk4_0; ++j) q[j] += y[j] >= mid ? step : 0.0f;
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
    detail::pack_block32(y[b], q);
  }
}

/// f32 → IQ4_XS (n a multiple of 256), as llama.cpp's quantizer without an importance matrix:
/// s_j = iq4_scale of sub-block j; d = −s / 32 for the s_j of largest magnitude (stored as f16);
/// ls_j − 32 = s_j / d rounded to nearest (even) within [−32, 31]; each weight the table value
/// nearest x / (d·(ls_j − 32)).
inline void quantize_row_iq4_xs(const float* x, block_iq4_xs* y, std::int64_t n) {
  detail::check_multiple(n, qk_k, "quantize_row_iq4_xs");
  constexpr int subs = block32s_per_block<block_iq4_xs>;
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


}  // namespace loom::kernels

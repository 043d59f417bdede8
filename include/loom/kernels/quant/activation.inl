// Quantization of f32 activations to the 8-bit blocks the dot products read (block_q8_grouped for the
// 32-weight types and IQ4_XS, block_q8_k for the k-quants), compiled once per kernel level:
// kernels/levels.hpp includes this file in namespace loom::kernels::<level> with LOOM_LEVEL 0
// (portable), 1 (AVX2) or 2 (AVX-512), inside that level's target region. No include guard.
// Every level writes the same bytes for every input.

/// max |v[i]| over n values (a multiple of 16); a NaN is skipped, as std::max(m, NaN) skips it.
inline float abs_max(const float* v, int n) {
  float m = 0.0f;
#if LOOM_LEVEL == 2
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
#if LOOM_LEVEL == 2
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

/// f32 → block_q8_grouped groups (n a multiple of 32) in the order q8_grouped_offset(halves, ...) gives: per
/// block of 32, d = max|x| / 127 and q = round-to-nearest-even(x / d). Writes ⌈n / 512⌉ groups,
/// zero-filling the last one's unused blocks. (Both halves of a block are 16 consecutive quants
/// in either order.)
inline void quantize_row_q8_grouped(const float* x, block_q8_grouped* y, std::int64_t n, bool halves) {
  const std::int64_t nb = n / qk8_0;
  if (nb % q8_grouped_blocks != 0) std::memset(static_cast<void*>(y + nb / q8_grouped_blocks), 0, sizeof(block_q8_grouped));
  for (std::int64_t b = 0; b < nb; ++b) {
    block_q8_grouped& g = y[b / q8_grouped_blocks];
    const int j = int(b % q8_grouped_blocks);
    const float* v = x + b * qk8_0;
    const float d = abs_max(v, qk8_0) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    g.sum[j] = quantize16(v, id, g.qs + q8_grouped_offset(halves, j, 0)) +
               quantize16(v + 16, id, g.qs + q8_grouped_offset(halves, j, 16));
    g.d[j] = d;
  }
}

/// f32 → block_q8_k (n a multiple of 256) in the order q8_k_offset(q4_k, ...) gives:
/// d = max|x| / 127 per 256 values, q = round(x / d), with the sums of every 16 quants (16
/// consecutive values stay consecutive in either order).
inline void quantize_row_q8_k(const float* x, block_q8_k* y, std::int64_t n, bool q4_k) {
  for (std::int64_t b = 0; b < n / qk_k; ++b) {
    const float* v = x + b * qk_k;
    const float d = abs_max(v, qk_k) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int g = 0; g < qk_k / 16; ++g)
      y[b].bsums[g] = std::int16_t(quantize16(v + 16 * g, id, y[b].qs + q8_k_offset(q4_k, 16 * g)));
    y[b].d = d;
  }
}

// Element-wise kernels (softmax, activations, residual add), compiled once per kernel level:
// kernels/levels.hpp includes this file in namespace loom::kernels::<level> with LOOM_LEVEL 0
// (portable), 1 (AVX2) or 2 (AVX-512), inside that level's target region, so that the loops the
// compiler vectorizes use the level's vectors whatever the includer's flags. No include guard.

#if LOOM_LEVEL >= 1

// exp_nonpositive, silu and gelu_tanh of kernels/activations.hpp on 8 lanes, the same steps
// written with AVX2 intrinsics: GCC 12 leaves the scalar functions' selects as branches and does
// not vectorize their loops (silu was 3.7 % of a TinyLlama prompt, one element at a time).

/// detail::exp_nonpositive on 8 lanes (NaN stays NaN; below ln(FLT_MIN), 0).
inline __m256 exp_nonpositive8(__m256 x) {
  using C = detail::ExpConstants;
  const __m256 lowest = _mm256_set1_ps(C::lowest), round_magic = _mm256_set1_ps(C::round_magic);
  const __m256 xc = _mm256_max_ps(lowest, x);  // NaN: the second operand, x
  const __m256 shifted = _mm256_fmadd_ps(xc, _mm256_set1_ps(C::log2e), round_magic);
  const __m256 k = _mm256_sub_ps(shifted, round_magic);
  const __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(C::ln2_lo), _mm256_fnmadd_ps(k, _mm256_set1_ps(C::ln2_hi), xc));
  __m256 p = _mm256_set1_ps(C::taylor[0]);
  LOOM_UNROLL
  for (int i = 1; i < 8; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C::taylor[i]));
  const __m256i k_bits = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_castps_si256(round_magic));
  const __m256 two_k = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k_bits, _mm256_set1_epi32(127)), 23));
  return _mm256_andnot_ps(_mm256_cmp_ps(x, lowest, _CMP_LT_OQ), _mm256_mul_ps(p, two_k));
}

struct ExpShifted8 {  ///< e^(x − max) for softmax
  __m256 max;
  __m256 operator()(__m256 x) const { return exp_nonpositive8(_mm256_sub_ps(x, max)); }
};
struct Silu8 {  ///< x·σ(x), σ from e = e^(−|x|)
  __m256 operator()(__m256 x) const {
    const __m256 e = exp_nonpositive8(_mm256_or_ps(x, _mm256_set1_ps(-0.0f)));  // e^(−|x|)
    const __m256 s = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    return _mm256_mul_ps(x, _mm256_blendv_ps(_mm256_mul_ps(e, s), s, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ)));
  }
};
struct GeluTanh8 {  ///< 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))
  __m256 operator()(__m256 x) const {
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    const __m256 cube = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), x), x), x);
    const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_add_ps(x, cube));
    const __m256 e = exp_nonpositive8(_mm256_mul_ps(_mm256_set1_ps(-2.0f), _mm256_andnot_ps(sign, u)));
    const __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
    const __m256 signed_t = _mm256_or_ps(_mm256_andnot_ps(sign, t), _mm256_and_ps(sign, u));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, signed_t));
  }
};

/// v[i] = op(v[i]) 8 at a time; the last n mod 8 values go through op too, in a padded vector,
/// so that a value does not depend on its position.
template <typename Op>
void map8(float* v, std::int64_t n, Op op) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, op(_mm256_loadu_ps(v + i)));
  if (i == n) return;
  alignas(32) float tail[8] = {};
  std::memcpy(tail, v + i, std::size_t(n - i) * sizeof(float));
  _mm256_store_ps(tail, op(_mm256_load_ps(tail)));
  std::memcpy(v + i, tail, std::size_t(n - i) * sizeof(float));
}

#endif

/// In-place numerically stable softmax: subtracts the maximum before exponentiating. Written as
/// separate flat passes so that compilers vectorize each one; the max and the sum run over 16
/// lanes combined in a fixed order (the result depends on the length alone), the sum in double.
inline void softmax_level(float* x_data, std::int64_t x_size) {
  const std::span<float> x(x_data, std::size_t(x_size));
  if (x.empty()) return;
  constexpr std::size_t lanes = 16;
  const std::size_t n = x.size(), whole = n - n % lanes;
  float* v = x.data();
  float lane_max[lanes];
  std::fill_n(lane_max, lanes, v[0]);
  for (std::size_t i = 0; i < whole; i += lanes)
    for (std::size_t l = 0; l < lanes; ++l) lane_max[l] = v[i + l] > lane_max[l] ? v[i + l] : lane_max[l];
  for (std::size_t i = whole; i < n; ++i) lane_max[i - whole] = std::max(lane_max[i - whole], v[i]);
  const float mx = *std::max_element(lane_max, lane_max + lanes);
#if LOOM_LEVEL >= 1
  map8(v, x_size, ExpShifted8{_mm256_set1_ps(mx)});
#else
  for (std::size_t i = 0; i < n; ++i) v[i] = detail::exp_nonpositive(v[i] - mx);
#endif
  double lane_sum[lanes] = {};
  for (std::size_t i = 0; i < whole; i += lanes)
    for (std::size_t l = 0; l < lanes; ++l) lane_sum[l] += v[i + l];
  for (std::size_t i = whole; i < n; ++i) lane_sum[i - whole] += v[i];
  double sum = 0.0;
  for (double s : lane_sum) sum += s;
  const float inv = float(1.0 / sum);
  for (std::size_t i = 0; i < n; ++i) v[i] *= inv;
}


/// v[i] = F(v[i]) for an activation F of kernels/ops.hpp.
template <float (*F)(float)>
void apply_level(float* v, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) v[i] = F(v[i]);
}

/// v[i] = silu(v[i]), and gelu_tanh: on 8 lanes from the AVX2 level up.
inline void silu_level(float* v, std::int64_t n) {
#if LOOM_LEVEL >= 1
  map8(v, n, Silu8{});
#else
  apply_level<silu>(v, n);
#endif
}
inline void gelu_tanh_level(float* v, std::int64_t n) {
#if LOOM_LEVEL >= 1
  map8(v, n, GeluTanh8{});
#else
  apply_level<gelu_tanh>(v, n);
#endif
}

/// y += x.
inline void add_level(float* y, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += x[i];
}

// Element-wise kernels (softmax, activations, residual add), compiled once per kernel level:
// kernels/levels.hpp includes this file in namespace loom::kernels::<level> with LOOM_LEVEL 0
// (portable), 1 (AVX2) or 2 (AVX-512), inside that level's target region, so that the loops the
// compiler vectorizes use the level's vectors whatever the includer's flags. No include guard.

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
  for (std::size_t i = 0; i < n; ++i) v[i] = detail::exp_nonpositive(v[i] - mx);
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

/// y += x.
inline void add_level(float* y, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += x[i];
}

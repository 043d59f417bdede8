// Normalization layers over the feature dimension of each row: LayerNorm and RMSNorm.
#pragma once

#include <cmath>
#include <cstdint>

#include "loom/error.hpp"
#include "loom/tensor.hpp"

namespace loom {

/// A norm's scale (and, for LayerNorm, shift) vectors.
struct NormWeights {
  TensorRef weight;
  TensorRef bias;  ///< LayerNorm only
};

namespace nn {

/// RMSNorm: out = x / sqrt(mean(x²) + eps) · w. `out` may alias `x`.
inline void rms_norm(const float* x, const float* w, float eps, float* out, std::int64_t dim) {
  double ss = 0.0;
  for (std::int64_t i = 0; i < dim; ++i) ss += double(x[i]) * x[i];
  const float scale = float(1.0 / std::sqrt(ss / double(dim) + double(eps)));
  for (std::int64_t i = 0; i < dim; ++i) out[i] = x[i] * scale * w[i];
}

/// LayerNorm: out = (x − mean) / sqrt(var + eps) · w + b (biased variance). `out` may alias `x`.
inline void layer_norm(const float* x, const float* w, const float* b, float eps, float* out, std::int64_t dim) {
  double mean = 0.0;
  for (std::int64_t i = 0; i < dim; ++i) mean += x[i];
  mean /= double(dim);
  double var = 0.0;
  for (std::int64_t i = 0; i < dim; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= double(dim);
  const double inv = 1.0 / std::sqrt(var + double(eps));
  for (std::int64_t i = 0; i < dim; ++i) out[i] = float((x[i] - mean) * inv) * w[i] + (b ? b[i] : 0.0f);
}

}  // namespace nn
}  // namespace loom

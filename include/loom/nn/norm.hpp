// Normalization layers over the feature dimension of each row: LayerNorm and RMSNorm, one row at
// a time (rms_norm, layer_norm) or as a block over rows of a view (norm).
#pragma once

#include <cmath>
#include <cstdint>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/nn/shapes.hpp"
#include "loom/tensor.hpp"

namespace loom::nn {

/// A norm's scale (and, for LayerNorm, shift) vectors.
struct NormWeights {
  TensorRef weight;
  TensorRef bias;  ///< LayerNorm only
};

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

/// The norm `s` of every row of x [n, dim] into out [n, dim] (`out` may be `x`). The weights
/// must be f32 of `dim` elements (Model converts them once at construction).
inline void norm(const NormShape& s, const NormWeights& w, TensorView<const float> x, TensorView<float> out) {
  const std::int64_t dim = x.n_cols();
  for (const TensorRef* t : {&w.weight, &w.bias})
    if (!t->empty() && (t->dtype != DType::f32 || t->numel() != dim))
      fail(ErrorKind::invalid_argument, "nn", "norm weights of type ", to_string(t->dtype), " and shape ",
           t->shape.str(), " do not fit f32 rows of ", dim);
  if (w.weight.empty() || out.n_cols() != dim || out.n_rows() != x.n_rows())
    fail(ErrorKind::invalid_argument, "nn", "norm of ", x.shape().str(), " into ", out.shape().str());
  const auto* scale = reinterpret_cast<const float*>(w.weight.data);
  const auto* shift = w.bias.empty() ? nullptr : reinterpret_cast<const float*>(w.bias.data);
  for (std::int64_t t = 0; t < x.n_rows(); ++t) {
    if (s.kind == NormKind::rms_norm)
      rms_norm(x.row(t), scale, s.eps, out.row(t), dim);
    else
      layer_norm(x.row(t), scale, shift, s.eps, out.row(t), dim);
  }
}

}  // namespace loom::nn

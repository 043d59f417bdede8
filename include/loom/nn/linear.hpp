// Linear layers: y = x·Wᵀ + b with the weight in its stored type and layout.
#pragma once

#include <cstdint>

#include "loom/error.hpp"
#include "loom/kernels/matmul.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/tensor.hpp"

namespace loom {

/// A linear layer y = x·Wᵀ (+ b). The weight is stored [out, in] (nn.Linear, GGUF), or [in, out]
/// when `in_out` is set (GPT-2's Conv1D as saved by Hugging Face), in any supported dtype.
struct Linear {
  TensorRef weight;
  TensorRef bias;  ///< empty when the layer has none; else f32-convertible [out]
  bool in_out = false;

  bool empty() const { return weight.empty(); }
  std::int64_t out_features() const { return in_out ? weight.cols() : weight.rows(); }
  std::int64_t in_features() const { return in_out ? weight.rows() : weight.cols(); }
};

namespace nn {

/// A linear layer: y = x·Wᵀ + b, over n rows.
inline void linear(const float* x, std::int64_t n, std::int64_t ldx, const Linear& l, float* y, std::int64_t ldy,
                   ThreadPool* pool = nullptr) {
  kernels::matmul(x, n, ldx, l.weight, l.in_out, y, ldy, pool);
  if (!l.bias.empty()) {
    const std::int64_t out = l.out_features();
    if (l.bias.dtype != DType::f32)
      fail(ErrorKind::unsupported, "nn", "bias of type ", to_string(l.bias.dtype), " (expected f32)");
    const auto* b = reinterpret_cast<const float*>(l.bias.data);
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t o = 0; o < out; ++o) y[t * ldy + o] += b[o];
  }
}

}  // namespace nn
}  // namespace loom

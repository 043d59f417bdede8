// Linear layers: y = x·Wᵀ + b with the weight in its stored type and layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

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

/// y[t] += b for the n rows of y (row stride ldy); nothing when the layer has no bias.
inline void add_bias(const Linear& l, float* y, std::int64_t n, std::int64_t ldy) {
  if (l.bias.empty()) return;
  const std::int64_t out = l.out_features();
  if (l.bias.dtype != DType::f32)
    fail(ErrorKind::unsupported, "nn", "bias of type ", to_string(l.bias.dtype), " (expected f32)");
  const auto* b = reinterpret_cast<const float*>(l.bias.data);
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t o = 0; o < out; ++o) y[t * ldy + o] += b[o];
}

/// A linear layer: y = x·Wᵀ + b, over n rows.
inline void linear(const float* x, std::int64_t n, std::int64_t ldx, const Linear& l, float* y, std::int64_t ldy,
                   ThreadPool* pool = nullptr) {
  kernels::matmul(x, n, ldx, l.weight, l.in_out, y, ldy, pool);
  add_bias(l, y, n, ldy);
}

/// One layer of `linear_same_input` and where its output goes (row stride ldy).
struct LinearOutput {
  const Linear* layer;
  float* y;
  std::int64_t ldy;
};

/// Several linear layers applied to the same n rows (a block's q, k and v; gate and up): one
/// parallel call for all of them where the kernels allow (kernels::matmul_same_input), else
/// one `linear` each. Every output equals what `linear` computes.
inline void linear_same_input(const float* x, std::int64_t n, std::int64_t ldx, std::span<const LinearOutput> outputs,
                              ThreadPool* pool = nullptr) {
  constexpr std::size_t max_outputs = 4;
  bool together = outputs.size() <= max_outputs;
  for (const LinearOutput& o : outputs) together = together && !o.layer->in_out;
  if (!together) {
    for (const LinearOutput& o : outputs) linear(x, n, ldx, *o.layer, o.y, o.ldy, pool);
    return;
  }
  kernels::MatmulOutput products[max_outputs];
  for (std::size_t i = 0; i < outputs.size(); ++i) products[i] = {outputs[i].layer->weight, outputs[i].y, outputs[i].ldy};
  kernels::matmul_same_input(x, n, ldx, {products, outputs.size()}, pool);
  for (const LinearOutput& o : outputs) add_bias(*o.layer, o.y, n, o.ldy);
}

}  // namespace nn
}  // namespace loom

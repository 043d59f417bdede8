// Linear layers: y = x·Wᵀ + b with the weight in its stored type and layout, over rows of views.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "loom/error.hpp"
#include "loom/kernels/matmul.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/tensor.hpp"

namespace loom::nn {

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

namespace detail {

/// Throws unless v is `rows` rows of `cols` adjacent floats (any row stride).
inline void expect_rows(const TensorView<const float>& v, std::int64_t rows, std::int64_t cols, const char* what) {
  if (v.rank() < 1 || v.rank() > 2 || v.n_rows() != rows || v.n_cols() != cols ||
      (v.rank() == 2 && (v.stride(1) != 1 || v.ld() < cols)) || (v.rank() == 1 && v.stride(0) != 1))
    fail(ErrorKind::invalid_argument, "nn", what, " ", v.shape().str(), " (row stride ", v.ld(),
         ") is not ", rows, " rows of ", cols);
}

}  // namespace detail

/// y[t] += b for every row of y; nothing when the layer has no bias.
inline void add_bias(const Linear& l, TensorView<float> y) {
  if (l.bias.empty()) return;
  const std::int64_t out = l.out_features();
  if (l.bias.dtype != DType::f32)
    fail(ErrorKind::unsupported, "nn", "bias of type ", to_string(l.bias.dtype), " (expected f32)");
  const auto* b = reinterpret_cast<const float*>(l.bias.data);
  for (std::int64_t t = 0; t < y.n_rows(); ++t)
    for (std::int64_t o = 0; o < out; ++o) y.row(t)[o] += b[o];
}

/// A linear layer: y [n, out] = x [n, in] · Wᵀ + b. Rows of x and y may be strided.
inline void linear(TensorView<const float> x, const Linear& l, TensorView<float> y, kernels::ThreadPool* pool = nullptr) {
  detail::expect_rows(x, x.n_rows(), l.in_features(), "linear input");
  detail::expect_rows(y, x.n_rows(), l.out_features(), "linear output");
  kernels::matmul(x.data(), x.n_rows(), x.ld(), l.weight, l.in_out, y.data(), y.ld(), pool);
  add_bias(l, y);
}

/// One layer of `linear_same_input` and where its output goes.
struct LinearOutput {
  const Linear* layer;
  TensorView<float> y;
};

/// Several linear layers applied to the same rows x (a block's q, k and v; gate and up): one
/// parallel call for all of them where the kernels allow (kernels::matmul_same_input), else
/// one `linear` each. Every output equals what `linear` computes.
inline void linear_same_input(TensorView<const float> x, std::span<const LinearOutput> outputs,
                              kernels::ThreadPool* pool = nullptr) {
  constexpr std::size_t max_outputs = 4;
  bool together = outputs.size() <= max_outputs;
  for (const LinearOutput& o : outputs) together = together && !o.layer->in_out;
  if (!together) {
    for (const LinearOutput& o : outputs) linear(x, *o.layer, o.y, pool);
    return;
  }
  kernels::MatmulOutput products[max_outputs];
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const LinearOutput& o = outputs[i];
    detail::expect_rows(x, x.n_rows(), o.layer->in_features(), "linear input");
    detail::expect_rows(o.y, x.n_rows(), o.layer->out_features(), "linear output");
    products[i] = {o.layer->weight, o.y.data(), o.y.ld()};
  }
  kernels::matmul_same_input(x.data(), x.n_rows(), x.ld(), {products, outputs.size()}, pool);
  for (const LinearOutput& o : outputs) add_bias(*o.layer, o.y);
}

}  // namespace loom::nn

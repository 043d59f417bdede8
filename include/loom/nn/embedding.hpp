// The input end of a transformer: token embeddings (rows of a stored table, any type), learned
// and sinusoidal absolute positions added to them, and the residual add that joins each block's
// output to the stream.
#pragma once

#include <cstdint>
#include <span>

#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/nn/position.hpp"
#include "loom/nn/workspace.hpp"
#include "loom/tensor.hpp"

namespace loom::nn {

/// x[t] = table[ids[t]] for every id (x [n, dim], table [vocab, dim] in its stored type).
inline void embed(const TensorRef& table, std::span<const std::int32_t> ids, TensorView<float> x) {
  if (x.n_rows() != std::int64_t(ids.size()) || x.n_cols() != table.cols())
    fail(ErrorKind::invalid_argument, "nn", "embedding ", ids.size(), " ids of a ", table.shape.str(), " table into ",
         x.shape().str());
  for (std::size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= table.rows())
      fail(ErrorKind::invalid_argument, "nn", "token id ", ids[t], " is outside the table of ", table.rows());
    kernels::row_to_f32(table, ids[t], x.row(std::int64_t(t)));
  }
}

/// x[t] += table[pos + t]: learned absolute positions (GPT-2's wpe). Scratch: one row (dim floats).
inline void add_learned_positions(const TensorRef& table, std::int64_t pos, TensorView<float> x, const Workspace& ws) {
  if (pos < 0 || pos + x.n_rows() > table.rows() || x.n_cols() != table.cols())
    fail(ErrorKind::invalid_argument, "nn", "positions [", pos, ", ", pos + x.n_rows(), ") of ", x.shape().str(),
         " are outside the position table ", table.shape.str());
  const std::span<float> pe = ws.take(x.n_cols(), "learned positions");
  for (std::int64_t t = 0; t < x.n_rows(); ++t) {
    kernels::row_to_f32(table, pos + t, pe.data());
    kernels::add({x.row(t), pe.size()}, pe);
  }
}

/// x[t] += the sinusoidal embedding of position pos + t (nn::sinusoidal_embedding). Scratch: one
/// row (dim floats).
inline void add_sinusoidal_positions(std::int64_t pos, TensorView<float> x, const Workspace& ws) {
  const std::span<float> pe = ws.take(x.n_cols(), "sinusoidal positions");
  for (std::int64_t t = 0; t < x.n_rows(); ++t) {
    sinusoidal_embedding(pos + t, pe.data(), x.n_cols());
    kernels::add({x.row(t), pe.size()}, pe);
  }
}

/// The residual connection: x += y (both [n, dim], contiguous).
inline void add(TensorView<float> x, TensorView<const float> y) {
  if (!(x.shape() == y.shape()))
    fail(ErrorKind::invalid_argument, "nn", "adding ", y.shape().str(), " to ", x.shape().str());
  kernels::add(x.span(), y.span());
}

}  // namespace loom::nn

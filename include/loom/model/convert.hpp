// Converting a model's matrices to another storage type in memory: quantize at load
// (f32/f16/bf16 → q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q4_k, q5_k or q6_k, or one of
// llama.cpp's k-quant mixes Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M) or change precision (→ f16, bf16,
// f32). Norm scales and biases stay as they are. Matrices stored [in, out] (GPT-2 Conv1D) come out
// [out, in], the layout the quantized kernels read. Rows are converted on the threads of a pool
// when one is given; the bytes do not depend on it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/quant.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/model/config.hpp"
#include "loom/model/weights.hpp"

namespace loom {

namespace detail {

/// Writes n f32 values as `type` at dst (n a multiple of the type's block size), with the type's
/// reference conversion (kernels/type_traits.hpp).
inline void store_row(DType type, const float* x, std::byte* dst, std::int64_t n) {
  const auto from_f32 = kernels::type_kernels(type).from_f32;
  if (from_f32 == nullptr)
    fail(ErrorKind::unsupported, "kernels", "conversion to ", to_string(type), " is not implemented");
  from_f32(x, dst, n);
}

/// Whether convert_weights can store matrices as `type`: f32, f16, bf16 and the types with a
/// quantizer.
inline bool convertible_to(DType type) {
  return std::size_t(type) < dtype_count && kernels::type_kernels(type).from_f32 != nullptr;
}

/// The types llama.cpp's k-quant mixes (WeightFormat::Mix small / medium) are built on.
inline constexpr DType mix_bases[] = {DType::q4_k, DType::q5_k};

}  // namespace detail

/// The type a matrix with rows of `cols` elements gets when `type` is asked for: quantized types
/// need whole blocks per row. Rows that are not whole 256-weight super-blocks take llama.cpp's
/// quantizer's fallback when they are whole 32-weight blocks (IQ4_XS → IQ4_NL, Q4_K → Q5_0, Q5_K
/// → Q5_1, Q6_K → Q8_0); anything else is stored as f16 (as llama.cpp's converter does).
inline DType storage_type_for(DType type, std::int64_t cols) {
  if (cols % block_elems(type) == 0) return type;
  if (cols % qk4_0 == 0) {
    if (type == DType::iq4_xs) return DType::iq4_nl;
    if (type == DType::q4_k) return DType::q5_0;
    if (type == DType::q5_k) return DType::q5_1;
    if (type == DType::q6_k) return DType::q8_0;
  }
  return DType::f16;
}

/// What convert_weights makes of a model's matrices: every matrix as `type` (llama-quantize's
/// --pure), or, with `type` q4_k or q5_k, llama.cpp's k-quant mix of the same name, which keeps
/// the matrices that cost most accuracy in more bits (see matrix_type):
///   small  (Q4_K_S, Q5_K_S): the output matrix in Q6_K; for Q4_K_S also the value projections
///                            of the first 4 layers and the FFN down projections of the first
///                            eighth of the layers in Q5_K;
///   medium (Q4_K_M, Q5_K_M): the output matrix, and the value and FFN down projections of the
///                            first and last eighth of the layers and of every third layer
///                            between, in Q6_K; a fused QKV projection (GPT-2) in Q5_K / Q6_K.
struct WeightFormat {
  enum class Mix : std::uint8_t { pure, small, medium };
  DType type = DType::f16;
  Mix mix = Mix::pure;
};

/// Where a matrix sits in the model, for the mixes' rules.
enum class MatrixRole : std::uint8_t {
  output,           ///< the output projection, or the token embedding when the two are tied
  token_embedding,  ///< a token embedding of its own
  attn_v,
  attn_qkv,  ///< a fused q | k | v projection
  ffn_down,
  other,
};

/// The names convert_weights' formats go by: the types' own, and q4_k_s, q4_k_m, q5_k_s, q5_k_m.
inline constexpr std::string_view weight_format_names =
    "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q4_k, q5_k, q6_k, q4_k_s, q4_k_m, q5_k_s or q5_k_m";

/// The format named `name` (one of weight_format_names), or nothing.
inline std::optional<WeightFormat> parse_weight_format(std::string_view name) {
  using Mix = WeightFormat::Mix;
  for (DType t : detail::mix_bases)
    for (auto [suffix, mix] : {std::pair{"_s", Mix::small}, std::pair{"_m", Mix::medium}})
      if (name == std::string(to_string(t)) + suffix) return WeightFormat{t, mix};
  for (const DTypeInfo& row : dtype_table)
    if (row.name == name && detail::convertible_to(row.type)) return WeightFormat{row.type, Mix::pure};
  return std::nullopt;
}

inline std::string to_string(const WeightFormat& f) {
  std::string s(to_string(f.type));
  if (f.mix == WeightFormat::Mix::small) s += "_s";
  if (f.mix == WeightFormat::Mix::medium) s += "_m";
  return s;
}

/// The type convert_weights stores a matrix of `role` with rows of `cols` elements as, in layer
/// `layer` of `n_layers` (llama.cpp's llama_tensor_get_type for these formats), after
/// storage_type_for's fallback for rows that are not whole blocks.
inline DType matrix_type(const WeightFormat& f, MatrixRole role, int layer, int n_layers, std::int64_t cols) {
  using Mix = WeightFormat::Mix;
  DType t = f.type;
  if (f.mix != Mix::pure) {
    // llama.cpp's use_more_bits: the first and last eighth of the layers, and every third between.
    const bool more_bits = layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
    const bool q4 = f.type == DType::q4_k;
    switch (role) {
      case MatrixRole::output: t = cols % block_elems(f.type) == 0 ? DType::q6_k : DType::q8_0; break;
      case MatrixRole::attn_v:
        if (f.mix == Mix::medium && more_bits) t = DType::q6_k;
        if (f.mix == Mix::small && q4 && layer < 4) t = DType::q5_k;
        break;
      case MatrixRole::ffn_down:
        if (f.mix == Mix::medium && more_bits) t = DType::q6_k;
        if (f.mix == Mix::small && q4 && layer < n_layers / 8) t = DType::q5_k;
        break;
      case MatrixRole::attn_qkv:
        if (f.mix == Mix::medium) t = q4 ? DType::q5_k : DType::q6_k;
        break;
      case MatrixRole::token_embedding:
      case MatrixRole::other: break;
    }
  }
  return storage_type_for(t, cols);
}

/// A new [out, in] matrix of `type` holding the values of `w`; its buffer is added to `storage`.
/// Rows are converted on the pool's threads when there is one (the same bytes either way).
inline TensorRef convert_matrix(const TensorRef& w, bool in_out, DType type,
                                std::vector<std::shared_ptr<const void>>& storage, kernels::ThreadPool* pool = nullptr) {
  const std::int64_t out = in_out ? w.cols() : w.rows(), in = in_out ? w.rows() : w.cols();
  const DType t = storage_type_for(type, in);
  const std::uint64_t rb = *row_bytes(t, in);
  auto buf = std::make_shared<std::vector<std::byte>>(std::size_t(rb * std::uint64_t(out)));
  // Transpose [in, out] once through f32 instead of gathering every column separately.
  std::vector<float> all;
  if (in_out) {
    all.resize(static_cast<std::size_t>(in * out));
    for (std::int64_t i = 0; i < in; ++i) kernels::row_to_f32(w, i, all.data() + i * out);
  }
  auto rows = [&](std::int64_t o0, std::int64_t o1, int) {
    std::vector<float> row(static_cast<std::size_t>(in));
    for (std::int64_t o = o0; o < o1; ++o) {
      if (in_out)
        for (std::int64_t i = 0; i < in; ++i) row[std::size_t(i)] = all[std::size_t(i * out + o)];
      else
        kernels::row_to_f32(w, o, row.data());
      detail::store_row(t, row.data(), buf->data() + std::size_t(o) * rb, in);
    }
  };
  if (pool)
    pool->parallel_for(out, rows, 16);
  else
    rows(0, out, 0);
  storage.push_back(buf);
  return TensorRef{t, Shape{out, in}, buf->data(), buf->size()};
}

/// Weights with every matrix (linear layers, token embedding, output) converted as `format`
/// says and stored [out, in], on the pool's threads when one is given. The result shares the
/// small vectors with `w` and keeps `w`'s memory alive.
inline Weights convert_weights(const Weights& w, const WeightFormat& format, kernels::ThreadPool* pool = nullptr) {
  const bool mix_base = std::find(std::begin(detail::mix_bases), std::end(detail::mix_bases), format.type) !=
                        std::end(detail::mix_bases);
  if (!detail::convertible_to(format.type) || (format.mix != WeightFormat::Mix::pure && !mix_base))
    fail(ErrorKind::unsupported, "convert", "cannot convert weights to ", to_string(format), " (supported: ",
         weight_format_names, ")");
  Weights out = w;
  const int n_layers = int(w.layers.size());
  auto convert = [&](const TensorRef& m, bool in_out, MatrixRole role, int layer) {
    const std::int64_t cols = in_out ? m.rows() : m.cols();
    return convert_matrix(m, in_out, matrix_type(format, role, layer, n_layers, cols), out.storage, pool);
  };
  auto linear = [&](nn::Linear& l, MatrixRole role, int layer) {
    if (l.empty()) return;
    l.weight = convert(l.weight, l.in_out, role, layer);
    l.in_out = false;
  };
  for (int i = 0; i < n_layers; ++i) {
    LayerWeights& l = out.layers[std::size_t(i)];
    linear(l.wqkv, MatrixRole::attn_qkv, i);
    linear(l.wv, MatrixRole::attn_v, i);
    linear(l.w_down, MatrixRole::ffn_down, i);
    for (nn::Linear* x : {&l.wq, &l.wk, &l.wo, &l.w_gate, &l.w_up}) linear(*x, MatrixRole::other, i);
  }
  // As llama.cpp: a token embedding shared with the output takes the output's type.
  const bool tied = w.output.weight.data == w.token_embedding.data;
  out.token_embedding = convert(w.token_embedding, false, tied ? MatrixRole::output : MatrixRole::token_embedding, 0);
  if (tied)
    out.output.weight = out.token_embedding;
  else
    linear(out.output, MatrixRole::output, 0);
  return out;
}

/// convert_weights with every matrix as `type` (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1,
/// iq4_nl, iq4_xs, q4_k, q5_k, q6_k).
inline Weights convert_weights(const Weights& w, DType type, kernels::ThreadPool* pool = nullptr) {
  return convert_weights(w, WeightFormat{type, WeightFormat::Mix::pure}, pool);
}

}  // namespace loom

// Name tables binding a checkpoint's tensors to Weights: the vocabulary the loaders of every
// format share (io/hf_model.hpp for Hugging Face names, io/gguf_model.hpp for llama.cpp's).
// An entry says where a tensor goes (a slot in Weights or in a layer), its expected shape in
// symbolic dimensions resolved against the Config, and when the model has it at all.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "loom/model/config.hpp"
#include "loom/model/weights.hpp"
#include "loom/tensor.hpp"

namespace loom::tensor_table {

/// Symbolic dimensions of an expected shape.
enum class Dim : std::uint8_t { d, q, kv, qkv, ffn, vocab, ctx };

/// An expected shape of rank 1 or 2 in symbolic dimensions, PyTorch order ([out, in] for an
/// nn.Linear weight).
struct ShapeSpec {
  Dim a, b;
  int rank;
  Shape resolve(const Config& c) const {
    auto v = [&](Dim x) -> std::int64_t {
      switch (x) {
        case Dim::d: return c.dim;
        case Dim::q: return c.q_dim();
        case Dim::kv: return c.kv_dim();
        case Dim::qkv: return std::int64_t(c.q_dim()) + 2 * std::int64_t(c.kv_dim());
        case Dim::ffn: return c.ffn_dim;
        case Dim::vocab: return c.vocab_size;
        case Dim::ctx: return c.max_seq_len;
      }
      return 0;
    };
    return rank == 1 ? Shape{v(a)} : Shape{v(a), v(b)};
  }
};
constexpr ShapeSpec vec(Dim a) { return {a, a, 1}; }
constexpr ShapeSpec mat(Dim rows, Dim cols) { return {rows, cols, 2}; }

/// Where a tensor goes: a function returning the TensorRef to fill, given the model's Weights
/// and the current layer's LayerWeights (ignored by model-level entries).
using Slot = TensorRef& (*)(Weights&, LayerWeights&);
template <auto Member>
TensorRef& model_tensor(Weights& w, LayerWeights&) { return w.*Member; }
template <auto Member, auto Field>
TensorRef& model_part(Weights& w, LayerWeights&) { return (w.*Member).*Field; }
template <auto Member, auto Field>
TensorRef& layer_part(Weights&, LayerWeights& l) { return (l.*Member).*Field; }

/// When an entry applies.
enum class When : std::uint8_t {
  always,
  qkv_bias,  ///< Config::qkv_bias
  out_bias,  ///< Config::out_bias
  ffn_bias,  ///< Config::ffn_bias
  output,    ///< the output projection, optional: absent ⇒ tied to the token embedding
};

/// Whether a model with config `c` has the tensors of entries marked `when` (the optional output
/// projection counts as applying: the loader decides what its absence means).
constexpr bool applies(When when, const Config& c) {
  switch (when) {
    case When::qkv_bias: return c.qkv_bias;
    case When::out_bias: return c.out_bias;
    case When::ffn_bias: return c.ffn_bias;
    case When::always:
    case When::output: return true;
  }
  return true;
}

/// One tensor name; `{i}` stands for the layer (block) number.
struct Entry {
  std::string_view name;
  Slot slot;
  ShapeSpec shape;
  When when = When::always;

  bool per_layer() const { return name.find("{i}") != std::string_view::npos; }
};

/// `pattern` with "{i}" replaced by `layer`.
inline std::string layer_name(std::string_view pattern, int layer) {
  std::string s(pattern);
  if (const auto at = s.find("{i}"); at != std::string::npos) s.replace(at, 3, std::to_string(layer));
  return s;
}

}  // namespace loom::tensor_table

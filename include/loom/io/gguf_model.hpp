// GGUF models → loom::Config + loom::Weights, for the architectures `llama` (also Mistral-style
// with a sliding window), `qwen2` and `gpt2`.
//
// Hyperparameters come from the `{arch}.*` metadata keys; tensors are bound through ONE name
// table per architecture (llama.cpp's names: token_embd, blk.N.attn_q, ..., output), each name
// written once with its expected shape in PyTorch order ([out, in]). Weights stay in their stored
// type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) as
// views into the mapped file, which the returned Weights keeps alive through `storage`.
//
// RoPE layout follows the architecture: llama.cpp's converter permutes the Q/K rows of `llama`
// models so that adjacent pairs (2i, 2i+1) rotate together (interleaved), while `qwen2` keeps the
// Hugging Face half-split ("rotate_half") layout.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/error.hpp"
#include "loom/io/gguf.hpp"
#include "loom/model/config.hpp"
#include "loom/model/tensor_table.hpp"
#include "loom/model/weights.hpp"
#include "loom/tensor.hpp"

namespace loom::io {

/// A loaded GGUF model.
struct GgufModel {
  Config config;    ///< the architecture, from the `{arch}.*` keys
  Weights weights;  ///< views into `file`; `weights.storage` keeps it mapped
  std::optional<std::int32_t> bos_id;  ///< tokenizer.ggml.bos_token_id, when present
  std::optional<std::int32_t> eos_id;  ///< tokenizer.ggml.eos_token_id, when present
  std::shared_ptr<const GgufFile> file;  ///< the parsed file (metadata incl. tokenizer.ggml.*)
};

namespace gguf_detail {

using tensor_table::Dim;
using tensor_table::Entry;
using tensor_table::layer_part;
using tensor_table::mat;
using tensor_table::model_part;
using tensor_table::model_tensor;
using tensor_table::vec;
using tensor_table::When;

using L = LayerWeights;
using W = Weights;
using N = nn::NormWeights;
using Lin = nn::Linear;

// Shared by llama and qwen2 (and Mistral, which llama.cpp converts to `llama`).
inline constexpr Entry llama_tensors[] = {
    {"token_embd.weight", model_tensor<&W::token_embedding>, mat(Dim::vocab, Dim::d)},
    {"blk.{i}.attn_norm.weight", layer_part<&L::attn_norm, &N::weight>, vec(Dim::d)},
    {"blk.{i}.attn_q.weight", layer_part<&L::wq, &Lin::weight>, mat(Dim::q, Dim::d)},
    {"blk.{i}.attn_q.bias", layer_part<&L::wq, &Lin::bias>, vec(Dim::q), When::qkv_bias},
    {"blk.{i}.attn_k.weight", layer_part<&L::wk, &Lin::weight>, mat(Dim::kv, Dim::d)},
    {"blk.{i}.attn_k.bias", layer_part<&L::wk, &Lin::bias>, vec(Dim::kv), When::qkv_bias},
    {"blk.{i}.attn_v.weight", layer_part<&L::wv, &Lin::weight>, mat(Dim::kv, Dim::d)},
    {"blk.{i}.attn_v.bias", layer_part<&L::wv, &Lin::bias>, vec(Dim::kv), When::qkv_bias},
    {"blk.{i}.attn_output.weight", layer_part<&L::wo, &Lin::weight>, mat(Dim::d, Dim::q)},
    {"blk.{i}.attn_output.bias", layer_part<&L::wo, &Lin::bias>, vec(Dim::d), When::out_bias},
    {"blk.{i}.ffn_norm.weight", layer_part<&L::ffn_norm, &N::weight>, vec(Dim::d)},
    {"blk.{i}.ffn_gate.weight", layer_part<&L::w_gate, &Lin::weight>, mat(Dim::ffn, Dim::d)},
    {"blk.{i}.ffn_gate.bias", layer_part<&L::w_gate, &Lin::bias>, vec(Dim::ffn), When::ffn_bias},
    {"blk.{i}.ffn_up.weight", layer_part<&L::w_up, &Lin::weight>, mat(Dim::ffn, Dim::d)},
    {"blk.{i}.ffn_up.bias", layer_part<&L::w_up, &Lin::bias>, vec(Dim::ffn), When::ffn_bias},
    {"blk.{i}.ffn_down.weight", layer_part<&L::w_down, &Lin::weight>, mat(Dim::d, Dim::ffn)},
    {"blk.{i}.ffn_down.bias", layer_part<&L::w_down, &Lin::bias>, vec(Dim::d), When::ffn_bias},
    {"output_norm.weight", model_part<&W::final_norm, &N::weight>, vec(Dim::d)},
    {"output.weight", model_part<&W::output, &Lin::weight>, mat(Dim::vocab, Dim::d), When::output},
};

// gpt2: LayerNorm with biases, learned positions, fused [q | k | v] projection stored [out, in].
inline constexpr Entry gpt2_tensors[] = {
    {"token_embd.weight", model_tensor<&W::token_embedding>, mat(Dim::vocab, Dim::d)},
    {"position_embd.weight", model_tensor<&W::position_embedding>, mat(Dim::ctx, Dim::d)},
    {"blk.{i}.attn_norm.weight", layer_part<&L::attn_norm, &N::weight>, vec(Dim::d)},
    {"blk.{i}.attn_norm.bias", layer_part<&L::attn_norm, &N::bias>, vec(Dim::d)},
    {"blk.{i}.attn_qkv.weight", layer_part<&L::wqkv, &Lin::weight>, mat(Dim::qkv, Dim::d)},
    {"blk.{i}.attn_qkv.bias", layer_part<&L::wqkv, &Lin::bias>, vec(Dim::qkv)},
    {"blk.{i}.attn_output.weight", layer_part<&L::wo, &Lin::weight>, mat(Dim::d, Dim::q)},
    {"blk.{i}.attn_output.bias", layer_part<&L::wo, &Lin::bias>, vec(Dim::d)},
    {"blk.{i}.ffn_norm.weight", layer_part<&L::ffn_norm, &N::weight>, vec(Dim::d)},
    {"blk.{i}.ffn_norm.bias", layer_part<&L::ffn_norm, &N::bias>, vec(Dim::d)},
    {"blk.{i}.ffn_up.weight", layer_part<&L::w_up, &Lin::weight>, mat(Dim::ffn, Dim::d)},
    {"blk.{i}.ffn_up.bias", layer_part<&L::w_up, &Lin::bias>, vec(Dim::ffn)},
    {"blk.{i}.ffn_down.weight", layer_part<&L::w_down, &Lin::weight>, mat(Dim::d, Dim::ffn)},
    {"blk.{i}.ffn_down.bias", layer_part<&L::w_down, &Lin::bias>, vec(Dim::d)},
    {"output_norm.weight", model_part<&W::final_norm, &N::weight>, vec(Dim::d)},
    {"output_norm.bias", model_part<&W::final_norm, &N::bias>, vec(Dim::d)},
    {"output.weight", model_part<&W::output, &Lin::weight>, mat(Dim::vocab, Dim::d), When::output},
};

/// Tensors some converters write that the forward pass does not need.
inline constexpr std::string_view skipped_tensors[] = {"blk.{i}.attn_rot_embd"};

inline std::span<const Entry> tensor_table(std::string_view arch) {
  if (arch == "gpt2") return gpt2_tensors;
  return llama_tensors;
}

/// A positive int32 from an integer key.
inline std::int32_t positive_i32(const GgufFile& f, const std::string& key, std::optional<std::int64_t> fallback = {}) {
  std::optional<std::int64_t> v = f.get_optional<std::int64_t>(key);
  if (!v) v = fallback;
  if (!v) fail(ErrorKind::format, "gguf", "'", f.path(), "': missing key '", key, "'");
  if (*v <= 0 || *v > std::numeric_limits<std::int32_t>::max())
    fail(ErrorKind::format, "gguf", "'", f.path(), "': key '", key, "' = ", *v, " is out of range");
  return std::int32_t(*v);
}

}  // namespace gguf_detail

/// The architecture of a GGUF file from its metadata (`general.architecture` and `{arch}.*`),
/// with `vocab_size` from `tokenizer.ggml.tokens`, `{arch}.vocab_size` or the token_embd rows
/// (every source present must agree). Works for vocabulary-only files (no tensors) too, as long
/// as the metadata names a vocabulary size. Throws Error(unsupported) for other architectures.
inline Config gguf_config(const GgufFile& f) {
  using gguf_detail::positive_i32;
  const std::string& path = f.path();
  const std::string arch = f.get<std::string>("general.architecture");
  if (arch != "llama" && arch != "qwen2" && arch != "gpt2")
    fail(ErrorKind::unsupported, "gguf", "'", path, "': key 'general.architecture': architecture '", arch,
         "' is not supported (llama, qwen2, gpt2)");
  const std::string p = arch + ".";
  const bool gpt2 = arch == "gpt2";

  Config c;
  c.architecture = arch;
  c.dim = positive_i32(f, p + "embedding_length");
  c.n_layers = positive_i32(f, p + "block_count");
  c.ffn_dim = positive_i32(f, p + "feed_forward_length");
  c.max_seq_len = positive_i32(f, p + "context_length");
  c.n_heads = positive_i32(f, p + "attention.head_count");
  c.n_kv_heads = positive_i32(f, p + "attention.head_count_kv", c.n_heads);
  if (!f.contains(p + "attention.key_length") && c.dim % c.n_heads != 0)
    fail(ErrorKind::format, "gguf", "'", path, "': ", p, "embedding_length ", c.dim,
         " is not a multiple of attention.head_count ", c.n_heads, " and there is no attention.key_length");
  c.head_dim = positive_i32(f, p + "attention.key_length", c.dim / c.n_heads);
  if (const auto vl = f.get_optional<std::int64_t>(p + "attention.value_length"); vl && *vl != c.head_dim)
    fail(ErrorKind::unsupported, "gguf", "'", path, "': key '", p, "attention.value_length' = ", *vl,
         " differs from the key length ", c.head_dim);

  // Vocabulary size: every source present must agree.
  std::optional<std::int64_t> vocab;
  std::string vocab_source;
  auto vocab_from = [&](std::int64_t v, const std::string& source) {
    if (vocab && *vocab != v)
      fail(ErrorKind::format, "gguf", "'", path, "': vocabulary sizes disagree: ", vocab_source, " gives ", *vocab,
           ", ", source, " gives ", v);
    if (!vocab) vocab = v, vocab_source = source;
  };
  if (const GgufValue* t = f.find("tokenizer.ggml.tokens"))
    vocab_from(std::int64_t(t->size("tokenizer.ggml.tokens")), "tokenizer.ggml.tokens");
  if (const auto v = f.get_optional<std::int64_t>(p + "vocab_size")) vocab_from(*v, "key '" + p + "vocab_size'");
  if (const GgufTensorInfo* t = f.find_tensor("token_embd.weight"); t && t->ref.shape.rank == 2)
    vocab_from(t->ref.shape[0], "tensor 'token_embd.weight'");
  if (!vocab)
    fail(ErrorKind::format, "gguf", "'", path, "': no vocabulary size (no tokenizer.ggml.tokens, ", p,
         "vocab_size or token_embd.weight)");
  if (*vocab <= 0 || *vocab > std::numeric_limits<std::int32_t>::max())
    fail(ErrorKind::format, "gguf", "'", path, "': vocabulary size ", *vocab, " is out of range");
  c.vocab_size = std::int32_t(*vocab);

  if (gpt2) {
    c.norm = NormKind::layer_norm;
    c.norm_eps = f.get_optional<float>(p + "attention.layer_norm_epsilon").value_or(1e-5f);
    c.position = PositionKind::learned;
    c.activation = Activation::gelu_tanh;  // llama.cpp's GELU is the tanh approximation
    c.gated_ffn = false;
    c.qkv_bias = c.out_bias = c.ffn_bias = true;
  } else {
    c.norm = NormKind::rms_norm;
    c.norm_eps = f.get_optional<float>(p + "attention.layer_norm_rms_epsilon").value_or(1e-5f);
    c.position = PositionKind::rope;
    // llama.cpp permutes llama Q/K rows for adjacent-pair RoPE; qwen2 keeps the split halves.
    c.rope_layout = arch == "qwen2" ? RopeLayout::half_split : RopeLayout::interleaved;
    c.rope_theta = f.get_optional<float>(p + "rope.freq_base").value_or(10000.0f);
    c.rope_dim = positive_i32(f, p + "rope.dimension_count", c.head_dim);
    c.activation = Activation::silu;
    c.gated_ffn = true;
    // Biases are optional in these architectures (qwen2 has Q/K/V biases): follow block 0.
    c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
    c.out_bias = f.find_tensor("blk.0.attn_output.bias") != nullptr;
    c.ffn_bias = f.find_tensor("blk.0.ffn_up.bias") != nullptr;
    if (const auto window = f.get_optional<std::int64_t>(p + "attention.sliding_window"); window && *window > 0)
      c.sliding_window = positive_i32(f, p + "attention.sliding_window");

    const std::string scaling = f.get_optional<std::string>(p + "rope.scaling.type").value_or("none");
    const std::optional<float> factor = f.get_optional<float>(p + "rope.scaling.factor");
    if (scaling == "linear") {
      c.rope_scaling.kind = RopeScalingKind::linear;
      c.rope_scaling.factor = factor.value_or(1.0f);
    } else if (scaling != "none") {
      fail(ErrorKind::unsupported, "gguf", "'", path, "': key '", p, "rope.scaling.type': RoPE scaling '", scaling,
           "' is not supported (none, linear)");
    }
    if (const auto legacy = f.get_optional<float>(p + "rope.scale_linear"); legacy && *legacy != 1.0f) {
      c.rope_scaling.kind = RopeScalingKind::linear;
      c.rope_scaling.factor = *legacy;
    }
    if (f.find_tensor("rope_freqs.weight"))
      fail(ErrorKind::unsupported, "gguf", "'", path,
           "': tensor 'rope_freqs.weight' (per-frequency RoPE factors, e.g. Llama 3.1 scaling) is not supported");
  }
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  c.validate("gguf");
  return c;
}

/// Binds the tensors of `f` to Weights through the architecture's name table. Every tensor the
/// config needs must be present with its expected shape (Error(format) naming the tensor with the
/// expected and actual shapes); tensors the table does not know are an error too. When
/// `output.weight` is absent, the output projection is the token embedding.
inline Weights gguf_weights(const Config& c, const GgufFile& f) {
  using tensor_table::When;
  const std::string& path = f.path();
  Weights w;
  w.layers.resize(std::size_t(c.n_layers));
  LayerWeights none;
  std::set<std::string, std::less<>> used;
  for (const tensor_table::Entry& e : gguf_detail::tensor_table(c.architecture)) {
    if (!tensor_table::applies(e.when, c)) continue;
    const bool per_layer = e.per_layer();
    const Shape expected = e.shape.resolve(c);
    for (int i = 0; i < (per_layer ? c.n_layers : 1); ++i) {
      const std::string name = tensor_table::layer_name(e.name, i);
      const GgufTensorInfo* t = f.find_tensor(name);
      if (!t && e.when == When::output) continue;  // tied to the token embedding
      if (!t)
        fail(ErrorKind::format, "gguf", "'", path, "': missing tensor '", name, "' (expected shape ", expected.str(),
             ")");
      if (!(t->ref.shape == expected))
        fail(ErrorKind::format, "gguf", "'", path, "': tensor '", name, "': expected shape ", expected.str(), ", got ",
             t->ref.shape.str());
      if (e.shape.rank == 1 && is_quantized(t->ref.dtype))
        fail(ErrorKind::unsupported, "gguf", "'", path, "': tensor '", name, "' has type ", to_string(t->ref.dtype),
             "; vectors must be F32, F16 or BF16");
      e.slot(w, per_layer ? w.layers[std::size_t(i)] : none) = t->ref;
      used.insert(name);
    }
  }
  if (w.output.weight.empty()) w.output.weight = w.token_embedding;

  std::set<std::string, std::less<>> skip;
  for (std::string_view pattern : gguf_detail::skipped_tensors)
    for (int i = 0; i < c.n_layers; ++i) skip.insert(tensor_table::layer_name(pattern, i));
  for (const GgufTensorInfo& t : f.tensors())
    if (!used.contains(t.name) && !skip.contains(t.name))
      fail(ErrorKind::format, "gguf", "'", path, "': unexpected tensor '", t.name, "' for architecture '",
           c.architecture, "' with ", c.n_layers, " blocks");
  validate_weights(c, w, "gguf");
  return w;
}

/// Maps a GGUF model file and returns its config, weight views (zero copy), bos/eos ids and the
/// parsed file. Throws Error(io) when the file cannot be opened, Error(format, "gguf") for
/// malformed files or missing / wrongly shaped tensors (naming them), Error(unsupported) for
/// architectures, tensor types or options loom does not implement.
inline GgufModel load_gguf_model(const std::filesystem::path& path) {
  auto file = std::make_shared<const GgufFile>(path);
  // No tensors: a vocabulary file (llama.cpp's ggml-vocab-*.gguf), unless the architecture itself
  // is one loom does not read, which gguf_config reports.
  const std::string arch = file->get_optional<std::string>("general.architecture").value_or("llama");
  if (file->tensor_count() == 0 && (arch == "llama" || arch == "qwen2" || arch == "gpt2"))
    fail(ErrorKind::format, "gguf", "'", file->path(),
         "' holds no tensors: it is a GGUF vocabulary, not a model (pass it as the tokenizer)");
  GgufModel m;
  m.config = gguf_config(*file);
  m.weights = gguf_weights(m.config, *file);
  auto token_id = [&](const char* key) -> std::optional<std::int32_t> {
    const auto v = file->get_optional<std::int64_t>(key);
    if (!v) return std::nullopt;
    if (*v < 0 || *v >= m.config.vocab_size)
      fail(ErrorKind::format, "gguf", "'", file->path(), "': key '", key, "' = ", *v, " is outside the vocabulary [0, ",
           m.config.vocab_size, ")");
    return std::int32_t(*v);
  };
  m.bos_id = token_id("tokenizer.ggml.bos_token_id");
  m.eos_id = token_id("tokenizer.ggml.eos_token_id");
  m.weights.storage.push_back(file);
  m.file = std::move(file);
  return m;
}

}  // namespace loom::io

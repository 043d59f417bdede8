// Writing a loaded model as a GGUF file llama.cpp can read: the `llama`, `qwen2` and `gpt2`
// architectures with llama.cpp's tensor names and conventions (llama Q/K rows permuted for
// interleaved RoPE pairs, GPT-2 Conv1D matrices transposed to [out, in]), matrices in any format
// convert_weights makes (f32 / f16 / bf16, the quantized types, llama.cpp's k-quant mixes), and
// the tokenizer as `tokenizer.ggml.*` metadata.
#pragma once

#include <cstdint>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "loom/error.hpp"
#include "loom/io/gguf_writer.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/model/config.hpp"
#include "loom/model/convert.hpp"
#include "loom/model/weights.hpp"
#include "loom/tokenizer/bpe_pre_types.hpp"
#include "loom/tokenizer/tokenizer.hpp"

namespace loom::io {

struct GgufExportOptions {
  WeightFormat format{DType::f16};  ///< the matrices' types (convert_weights); norms and biases stay f32
  std::string name = "model";       ///< general.name
  std::string chat_template;        ///< tokenizer.chat_template, when not empty
  /// tokenizer.ggml.pre of a byte-level tokenizer (e.g. "smollm"); empty: the first name whose
  /// split rule is the tokenizer's. A name with another split rule is refused.
  std::string pre{};
  kernels::ThreadPool* pool = nullptr;       ///< threads that convert the matrices, when given
};

namespace detail {

inline std::vector<std::byte> bytes_of(const TensorRef& t) {
  const auto* p = t.data;
  return std::vector<std::byte>(p, p + t.nbytes);
}

inline std::vector<std::byte> f32_bytes(const TensorRef& t) {
  std::vector<std::byte> out(std::size_t(t.numel()) * 4);
  kernels::to_f32(t.dtype, t.data, reinterpret_cast<float*>(out.data()), t.numel());
  return out;
}

/// Reorders the rows of each head of a [heads·head_dim, ...] matrix (or bias) between the two
/// RoPE layouts. to_interleaved: row 2i ← row i, row 2i+1 ← row i + d/2 (what llama.cpp's
/// converter does to HF LLaMA Q/K); otherwise the inverse.
inline std::vector<std::byte> permute_heads(const TensorRef& t, int heads, bool to_interleaved) {
  const std::int64_t rows = t.shape[0];
  const std::size_t rb = t.nbytes / std::size_t(rows);
  const std::int64_t d = rows / heads, half = d / 2;
  std::vector<std::byte> out(t.nbytes);
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < half; ++i)
      for (int k = 0; k < 2; ++k) {
        const std::int64_t inter = h * d + 2 * i + k, split = h * d + i + k * half;
        const std::int64_t dst = to_interleaved ? inter : split, src = to_interleaved ? split : inter;
        std::memcpy(out.data() + std::size_t(dst) * rb, t.data + std::size_t(src) * rb, rb);
      }
  return out;
}

/// general.file_type: llama.cpp's llama_ftype for the format.
inline std::uint32_t gguf_file_type(const WeightFormat& f) {
  if (f.mix == WeightFormat::Mix::small) return f.type == DType::q4_k ? 14 : 16;   // Q4_K_S, Q5_K_S
  if (f.mix == WeightFormat::Mix::medium) return f.type == DType::q4_k ? 15 : 17;  // Q4_K_M, Q5_K_M
  return is_dtype(f.type) ? dtype_table[std::size_t(f.type)].ggml_ftype : 1;
}

inline std::int32_t gguf_token_type(TokenType t) {
  switch (t) {
    case TokenType::normal: return 1;
    case TokenType::unknown: return 2;
    case TokenType::control: return 3;
    case TokenType::user_defined: return 4;
    case TokenType::unused: return 5;
    case TokenType::byte: return 6;
  }
  return 1;
}

/// The tokenizer.ggml.pre name of a byte-level tokenizer: `wanted`, or (when empty) the first
/// pre-tokenizer type (bpe_pre_types.hpp) whose regex list is the tokenizer's chain of isolating
/// splits. Throws Error(unsupported) when no type has that split rule (a reader would tokenize
/// differently), Error(invalid_argument) when `wanted` names a type with another rule.
inline std::string gguf_pre_name(const TokenizerSpec& s, std::string_view wanted = {}) {
  std::vector<std::string> regexes;
  bool plain = true;
  for (const PreTokenizerStep& p : s.pre_tokenizers) {
    const bool split = p.kind == PreTokenizerStep::Kind::split && p.behavior == SplitBehavior::isolated && !p.invert;
    const bool bytes = p.kind == PreTokenizerStep::Kind::byte_level && !p.add_prefix_space;
    if (split || (bytes && p.use_regex)) regexes.push_back(p.regex);
    else if (!bytes) plain = false;
  }
  const BpePreType* row = plain ? find_bpe_pre_type(std::span<const std::string>(regexes)) : nullptr;
  if (!row)
    fail(ErrorKind::unsupported, "gguf", "'", s.source, "': its pre-tokenizer matches none of the ",
         "tokenizer.ggml.pre types (", bpe_pre_type_names(), "), so a GGUF reader would split text differently");
  if (wanted.empty()) return std::string(row->names.front());
  const BpePreType* named = find_bpe_pre_type(wanted);
  if (!named || !std::equal(named->regexes.begin(), named->regexes.end(), row->regexes.begin(), row->regexes.end())) {
    std::string alike;
    for (const BpePreType& r : kBpePreTypes)
      if (std::equal(r.regexes.begin(), r.regexes.end(), row->regexes.begin(), row->regexes.end()))
        for (const std::string_view n : r.names) alike += (alike.empty() ? "" : ", ") + std::string(n);
    fail(ErrorKind::invalid_argument, "gguf", "tokenizer.ggml.pre '", wanted, "' does not split text as '", s.source,
         "' does (names that do: ", alike, ")");
  }
  return std::string(wanted);
}

inline void write_tokenizer(GgufWriter& g, const Tokenizer& tok, std::string_view pre) {
  const TokenizerSpec& s = tok.spec();
  const bool spm = s.merge_mode == MergeMode::scores || s.decoder.space_marker == "\xE2\x96\x81";
  g.add_string("tokenizer.ggml.model", spm ? "llama" : "gpt2");
  g.add_string("tokenizer.ggml.pre", spm ? std::string("default") : gguf_pre_name(s, pre));
  g.add_strings("tokenizer.ggml.tokens", s.pieces);
  const std::size_t n = s.pieces.size();
  std::vector<float> scores(n, 0.0f);
  if (!s.scores.empty()) {
    scores = s.scores;
  } else if (spm) {
    // SentencePiece merges by the score of the merged piece; a ranked merge list becomes scores
    // that order merges the same way (earlier merge → higher score).
    for (std::size_t i = 0; i < n; ++i) scores[i] = -1e9f;
    for (std::size_t r = 0; r < s.merges.size(); ++r) {
      const std::string merged = s.pieces[std::size_t(s.merges[r].first)] + s.pieces[std::size_t(s.merges[r].second)];
      const std::int32_t id = tok.piece_to_id(merged);
      if (id >= 0 && scores[std::size_t(id)] == -1e9f) scores[std::size_t(id)] = -float(r);
    }
    for (std::size_t i = 0; i < n; ++i)
      if (scores[i] == -1e9f) scores[i] = 0.0f;  // single characters, bytes, specials
  }
  if (spm) g.add_f32s("tokenizer.ggml.scores", scores);
  std::vector<std::int32_t> types(n, 1);
  for (std::size_t i = 0; i < n && i < s.types.size(); ++i) types[i] = gguf_token_type(s.types[i]);
  g.add_i32s("tokenizer.ggml.token_type", types);
  if (!spm) {
    std::vector<std::string> merges;
    merges.reserve(s.merges.size());
    for (const auto& [l, r] : s.merges) merges.push_back(s.pieces[std::size_t(l)] + " " + s.pieces[std::size_t(r)]);
    g.add_strings("tokenizer.ggml.merges", merges);
  }
  if (tok.bos_id() >= 0) g.add_u32("tokenizer.ggml.bos_token_id", std::uint32_t(tok.bos_id()));
  if (tok.eos_id() >= 0) g.add_u32("tokenizer.ggml.eos_token_id", std::uint32_t(tok.eos_id()));
  if (s.unk_id >= 0) g.add_u32("tokenizer.ggml.unknown_token_id", std::uint32_t(s.unk_id));
  g.add_bool("tokenizer.ggml.add_bos_token", tok.add_bos());
  g.add_bool("tokenizer.ggml.add_eos_token", tok.add_eos());
}

}  // namespace detail

/// Writes `weights` (described by `c`) and optionally its tokenizer as a GGUF file.
inline void write_gguf_model(const std::filesystem::path& path, const Config& c, const Weights& weights,
                             const Tokenizer* tok, const GgufExportOptions& opt = {}) {
  const std::string& a = c.architecture;
  const std::string arch = (a == "llama" || a == "mistral" || a == "llama2c") ? "llama" : a;
  if (arch != "llama" && arch != "qwen2" && arch != "gpt2")
    fail(ErrorKind::unsupported, "gguf", "cannot write architecture '", a, "' as GGUF (llama, mistral, qwen2, gpt2)");
  const bool gpt2 = arch == "gpt2";
  if (c.rope_scaling.kind == RopeScalingKind::llama3)
    fail(ErrorKind::unsupported, "gguf", "writing llama3 RoPE scaling (rope_freqs) is not implemented");
  if (!gpt2 && c.position != PositionKind::rope)
    fail(ErrorKind::unsupported, "gguf", "architecture '", arch, "' needs RoPE positions");
  const bool want_interleaved = arch == "llama";
  const bool permute = !gpt2 && (c.rope_layout == RopeLayout::interleaved) != want_interleaved;
  if (permute && c.rotary_dim() != c.head_dim)
    fail(ErrorKind::unsupported, "gguf", "partial rotary embeddings cannot be re-laid out for '", arch, "'");

  const Weights w = convert_weights(weights, opt.format, opt.pool);
  GgufWriter g;
  const std::string p = arch + ".";
  g.add_string("general.architecture", arch);
  g.add_string("general.name", opt.name);
  g.add_u32(p + "context_length", std::uint32_t(c.max_seq_len));
  g.add_u32(p + "embedding_length", std::uint32_t(c.dim));
  g.add_u32(p + "block_count", std::uint32_t(c.n_layers));
  g.add_u32(p + "feed_forward_length", std::uint32_t(c.ffn_dim));
  g.add_u32(p + "attention.head_count", std::uint32_t(c.n_heads));
  if (gpt2) {
    g.add_f32(p + "attention.layer_norm_epsilon", c.norm_eps);
  } else {
    g.add_u32(p + "attention.head_count_kv", std::uint32_t(c.n_kv_heads));
    g.add_f32(p + "attention.layer_norm_rms_epsilon", c.norm_eps);
    g.add_f32(p + "rope.freq_base", c.rope_theta);
    g.add_u32(p + "rope.dimension_count", std::uint32_t(c.rotary_dim()));
    if (c.head_dim * c.n_heads != c.dim) {
      g.add_u32(p + "attention.key_length", std::uint32_t(c.head_dim));
      g.add_u32(p + "attention.value_length", std::uint32_t(c.head_dim));
    }
    if (c.sliding_window > 0) g.add_u32(p + "attention.sliding_window", std::uint32_t(c.sliding_window));
    if (c.rope_scaling.kind == RopeScalingKind::linear) {
      g.add_string(p + "rope.scaling.type", "linear");
      g.add_f32(p + "rope.scaling.factor", c.rope_scaling.factor);
    }
  }
  g.add_u32(p + "vocab_size", std::uint32_t(c.vocab_size));
  g.add_u32("general.file_type", detail::gguf_file_type(opt.format));
  g.add_u32("general.quantization_version", 2);
  if (tok) detail::write_tokenizer(g, *tok, opt.pre);
  if (!opt.chat_template.empty()) g.add_string("tokenizer.chat_template", opt.chat_template);

  auto matrix = [&](const std::string& name, const TensorRef& t) {
    g.add_tensor(name, t.dtype, t.shape, detail::bytes_of(t));
  };
  auto vec = [&](const std::string& name, const TensorRef& t) {
    if (!t.empty()) g.add_tensor(name, DType::f32, t.shape, detail::f32_bytes(t));
  };
  auto qk = [&](const std::string& name, const nn::Linear& l, int heads) {
    if (permute) {
      g.add_tensor(name + ".weight", l.weight.dtype, l.weight.shape, detail::permute_heads(l.weight, heads, want_interleaved));
      if (!l.bias.empty()) {
        const std::vector<std::byte> b = detail::f32_bytes(l.bias);
        const TensorRef bf{DType::f32, l.bias.shape, b.data(), b.size()};
        g.add_tensor(name + ".bias", DType::f32, l.bias.shape, detail::permute_heads(bf, heads, want_interleaved));
      }
    } else {
      matrix(name + ".weight", l.weight);
      vec(name + ".bias", l.bias);
    }
  };

  matrix("token_embd.weight", w.token_embedding);
  if (gpt2) vec("position_embd.weight", w.position_embedding);
  vec("output_norm.weight", w.final_norm.weight);
  vec("output_norm.bias", w.final_norm.bias);
  // llama.cpp requires `output` for gpt2 even when tied; elsewhere absence means tied.
  if (gpt2 || w.output.weight.data != w.token_embedding.data) matrix("output.weight", w.output.weight);
  for (std::size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string b = "blk." + std::to_string(i) + ".";
    vec(b + "attn_norm.weight", l.attn_norm.weight);
    vec(b + "attn_norm.bias", l.attn_norm.bias);
    if (!l.wqkv.empty()) {
      if (!gpt2) fail(ErrorKind::unsupported, "gguf", "a fused QKV projection can only be written for gpt2");
      matrix(b + "attn_qkv.weight", l.wqkv.weight);
      vec(b + "attn_qkv.bias", l.wqkv.bias);
    } else {
      if (gpt2) fail(ErrorKind::unsupported, "gguf", "gpt2 needs a fused QKV projection");
      qk(b + "attn_q", l.wq, c.n_heads);
      qk(b + "attn_k", l.wk, c.n_kv_heads);
      matrix(b + "attn_v.weight", l.wv.weight);
      vec(b + "attn_v.bias", l.wv.bias);
    }
    matrix(b + "attn_output.weight", l.wo.weight);
    vec(b + "attn_output.bias", l.wo.bias);
    vec(b + "ffn_norm.weight", l.ffn_norm.weight);
    vec(b + "ffn_norm.bias", l.ffn_norm.bias);
    if (!l.w_gate.empty()) matrix(b + "ffn_gate.weight", l.w_gate.weight);
    matrix(b + "ffn_up.weight", l.w_up.weight);
    vec(b + "ffn_up.bias", l.w_up.bias);
    matrix(b + "ffn_down.weight", l.w_down.weight);
    vec(b + "ffn_down.bias", l.w_down.bias);
  }
  g.write(path);
}

}  // namespace loom::io

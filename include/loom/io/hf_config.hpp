// Hugging Face `config.json` and `generation_config.json` readers.
//
// As in candle: HfConfig mirrors the config.json fields by their own names (optional fields are
// optional, both spellings of a field are kept as written), every field is type-checked while
// parsing, and ONE function, `to_config`, turns it into loom's Config for the supported
// architectures: GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM. What
// differs between them (defaults, norm, positions, biases, window rule) is one row each in
// `detail::hf_arch_rows`.
//
// Errors: Error(format, "hf_config") for malformed JSON, wrong JSON types, missing or
// inconsistent fields (the message names the file and the key); Error(unsupported, "hf_config")
// for valid configurations loom does not implement (architecture, RoPE scaling type, activation).
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/error.hpp"
#include "loom/io/mapped_file.hpp"
#include "loom/limits.hpp"
#include "loom/io/json_text.hpp"
#include "loom/model/config.hpp"

namespace loom::io {

/// RoPE settings as written in config.json: the `rope_scaling` object, or the newer
/// `rope_parameters` object (which also carries `rope_theta`). Both spellings of the type key
/// (`rope_type`, legacy `type`) are read into `rope_type`.
struct HfRopeParameters {
  std::optional<std::string> rope_type;
  std::optional<double> rope_theta;             ///< rope_parameters only
  std::optional<double> partial_rotary_factor;  ///< rope_parameters only
  std::optional<double> factor;
  std::optional<double> low_freq_factor;   ///< llama3
  std::optional<double> high_freq_factor;  ///< llama3
  std::optional<std::int64_t> original_max_position_embeddings;  ///< llama3
};

/// Token ids a model was trained with (from config.json). `bos_token_id`/`eos_token_id` may be an
/// integer or a list of integers in config.json; both become lists here.
struct SpecialTokens {
  std::vector<std::int32_t> bos;  ///< usually one id
  std::vector<std::int32_t> eos;  ///< generation stops at any of them

  /// The first BOS id, if any.
  std::optional<std::int32_t> bos_id() const { return bos.empty() ? std::nullopt : std::optional(bos.front()); }
};

/// config.json, field for field (the subset loom reads). JSON `null` reads as absent.
struct HfConfig {
  std::string source;  ///< the file it was read from (for messages)

  std::vector<std::string> architectures;
  std::optional<std::string> model_type;
  std::optional<std::int64_t> vocab_size;
  std::optional<std::int64_t> hidden_size, n_embd;
  std::optional<std::int64_t> num_hidden_layers, n_layer;
  std::optional<std::int64_t> num_attention_heads, n_head;
  std::optional<std::int64_t> num_key_value_heads;
  std::optional<std::int64_t> head_dim;
  std::optional<std::int64_t> intermediate_size, n_inner;
  std::optional<std::int64_t> max_position_embeddings, n_positions;
  std::optional<double> rms_norm_eps, layer_norm_epsilon;
  std::optional<std::string> hidden_act, activation_function;
  std::optional<double> rope_theta;
  std::optional<HfRopeParameters> rope_parameters;
  std::optional<HfRopeParameters> rope_scaling;
  std::optional<double> partial_rotary_factor;
  std::optional<bool> tie_word_embeddings;
  std::optional<bool> attention_bias, mlp_bias;
  std::optional<std::int64_t> sliding_window;
  std::optional<bool> use_sliding_window;      ///< qwen2
  std::optional<std::int64_t> max_window_layers;  ///< qwen2
  std::vector<std::int64_t> bos_token_id, eos_token_id;
  std::optional<bool> scale_attn_weights, scale_attn_by_inverse_layer_idx;  ///< gpt2

  /// The special token ids, checked against vocab_size when it is known.
  SpecialTokens special_tokens() const;
};

/// generation_config.json (the subset loom's sampler can use). JSON `null` reads as absent.
struct HfGenerationConfig {
  std::optional<bool> do_sample;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<std::int64_t> top_k;
  std::optional<std::int64_t> max_new_tokens, max_length;
  std::optional<std::int64_t> bos_token_id;
  std::vector<std::int64_t> eos_token_id;  ///< an integer or a list in the file

  /// True when the file asks for greedy decoding (`"do_sample": false`). Note that Hugging Face
  /// itself also decodes greedily when `do_sample` is absent; callers choose how to treat that.
  bool greedy() const { return do_sample.has_value() && !*do_sample; }
};

namespace detail {

/// Typed access to the keys of one JSON object, with messages naming the file and the key path.
class HfReader {
 public:
  HfReader(const nlohmann::json& obj, std::string_view source, std::string prefix)
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  [[noreturn]] void wrong(std::string_view key, std::string_view expected, const nlohmann::json& got) const {
    fail(ErrorKind::format, "hf_config", "'", source_, "': key '", prefix_, key, "': expected ", expected, ", got ",
         json_type(got), " ", json_brief(got));
  }

  /// The value of `key`, or nullptr when absent or null.
  const nlohmann::json* get(std::string_view key) const {
    auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }

  void read(std::string_view key, std::optional<std::int64_t>& out) const {
    if (const auto* v = get(key)) out = integer(key, *v);
  }
  void read(std::string_view key, std::optional<double>& out) const {
    if (const auto* v = get(key)) {
      if (!v->is_number()) wrong(key, "a number", *v);
      out = v->get<double>();
      if (!std::isfinite(*out)) wrong(key, "a finite number", *v);
    }
  }
  void read(std::string_view key, std::optional<bool>& out) const {
    if (const auto* v = get(key)) {
      if (!v->is_boolean()) wrong(key, "a boolean", *v);
      out = v->get<bool>();
    }
  }
  void read(std::string_view key, std::optional<std::string>& out) const {
    if (const auto* v = get(key)) {
      if (!v->is_string()) wrong(key, "a string", *v);
      out = v->get<std::string>();
    }
  }
  void read(std::string_view key, std::vector<std::string>& out) const {
    if (const auto* v = get(key)) {
      if (!v->is_array()) wrong(key, "a list of strings", *v);
      for (const auto& e : *v) {
        if (!e.is_string()) wrong(key, "a list of strings", *v);
        out.push_back(e.get<std::string>());
      }
    }
  }
  /// An integer or a list of integers.
  void read(std::string_view key, std::vector<std::int64_t>& out) const {
    if (const auto* v = get(key)) {
      if (v->is_array()) {
        for (const auto& e : *v) {
          if (!e.is_number_integer()) wrong(key, "an integer or a list of integers", *v);
          out.push_back(integer(key, e));
        }
      } else if (v->is_number_integer()) {
        out.push_back(integer(key, *v));
      } else {
        wrong(key, "an integer or a list of integers", *v);
      }
    }
  }
  void read(std::string_view key, std::optional<HfRopeParameters>& out) const {
    const auto* v = get(key);
    if (!v) return;
    if (!v->is_object()) wrong(key, "an object", *v);
    for (const auto& [k, e] : v->items())
      if (e.is_object())
        fail(ErrorKind::unsupported, "hf_config", "'", source_, "': key '", prefix_, key, ".", k,
             "': per-layer-type RoPE parameters are not supported");
    const HfReader r(*v, source_, prefix_ + std::string(key) + ".");
    HfRopeParameters p;
    r.read("rope_type", p.rope_type);
    if (!p.rope_type) r.read("type", p.rope_type);
    r.read("rope_theta", p.rope_theta);
    r.read("partial_rotary_factor", p.partial_rotary_factor);
    r.read("factor", p.factor);
    r.read("low_freq_factor", p.low_freq_factor);
    r.read("high_freq_factor", p.high_freq_factor);
    r.read("original_max_position_embeddings", p.original_max_position_embeddings);
    out = std::move(p);
  }

 private:
  std::int64_t integer(std::string_view key, const nlohmann::json& v) const {
    if (v.is_number_unsigned()) {
      if (v.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
        wrong(key, "an integer in range", v);
      return std::int64_t(v.get<std::uint64_t>());
    }
    if (v.is_number_integer()) return v.get<std::int64_t>();
    wrong(key, "an integer", v);
  }

  const nlohmann::json& obj_;
  std::string_view source_;
  std::string prefix_;
};

inline nlohmann::json read_json_file(const std::filesystem::path& path, std::string_view what) {
  const MappedFile file(path);
  if (file.size() > limits::json_file_bytes)
    fail(ErrorKind::capacity, "hf_config", "'", file.path(), "': ", what, " of ", file.size(),
         " bytes exceeds the limit of ", limits::json_file_bytes, " bytes");
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  nlohmann::json j = parse_json_unique_keys(text, "hf_config", file.path(), what);
  if (!j.is_object())
    fail(ErrorKind::format, "hf_config", "'", file.path(), "': ", what, " is a JSON ", json_type(j),
         ", expected an object");
  return j;
}

/// The supported architectures.
enum class HfArch { gpt2, llama, mistral, qwen2 };

}  // namespace detail

/// Parses a config.json object. Throws Error(format, "hf_config") naming `source` and the key when
/// a field has the wrong JSON type.
inline HfConfig parse_hf_config(const nlohmann::json& j, std::string source = "config.json") {
  if (!j.is_object())
    fail(ErrorKind::format, "hf_config", "'", source, "': config is a JSON ", detail::json_type(j),
         ", expected an object");
  HfConfig c;
  c.source = std::move(source);
  const detail::HfReader r(j, c.source, "");
  r.read("architectures", c.architectures);
  r.read("model_type", c.model_type);
  r.read("vocab_size", c.vocab_size);
  r.read("hidden_size", c.hidden_size);
  r.read("n_embd", c.n_embd);
  r.read("num_hidden_layers", c.num_hidden_layers);
  r.read("n_layer", c.n_layer);
  r.read("num_attention_heads", c.num_attention_heads);
  r.read("n_head", c.n_head);
  r.read("num_key_value_heads", c.num_key_value_heads);
  r.read("head_dim", c.head_dim);
  r.read("intermediate_size", c.intermediate_size);
  r.read("n_inner", c.n_inner);
  r.read("max_position_embeddings", c.max_position_embeddings);
  r.read("n_positions", c.n_positions);
  r.read("rms_norm_eps", c.rms_norm_eps);
  r.read("layer_norm_epsilon", c.layer_norm_epsilon);
  r.read("hidden_act", c.hidden_act);
  r.read("activation_function", c.activation_function);
  r.read("rope_theta", c.rope_theta);
  r.read("rope_parameters", c.rope_parameters);
  r.read("rope_scaling", c.rope_scaling);
  r.read("partial_rotary_factor", c.partial_rotary_factor);
  r.read("tie_word_embeddings", c.tie_word_embeddings);
  r.read("attention_bias", c.attention_bias);
  r.read("mlp_bias", c.mlp_bias);
  r.read("sliding_window", c.sliding_window);
  r.read("use_sliding_window", c.use_sliding_window);
  r.read("max_window_layers", c.max_window_layers);
  r.read("bos_token_id", c.bos_token_id);
  r.read("eos_token_id", c.eos_token_id);
  r.read("scale_attn_weights", c.scale_attn_weights);
  r.read("scale_attn_by_inverse_layer_idx", c.scale_attn_by_inverse_layer_idx);
  return c;
}

/// Reads and parses a config.json file.
inline HfConfig read_hf_config(const std::filesystem::path& path) {
  return parse_hf_config(detail::read_json_file(path, "config"), path.string());
}

/// Parses a generation_config.json object; checks the ranges of the sampling fields.
inline HfGenerationConfig parse_hf_generation_config(const nlohmann::json& j,
                                                     std::string_view source = "generation_config.json") {
  if (!j.is_object())
    fail(ErrorKind::format, "hf_config", "'", source, "': generation config is a JSON ", detail::json_type(j),
         ", expected an object");
  HfGenerationConfig g;
  const detail::HfReader r(j, source, "");
  r.read("do_sample", g.do_sample);
  r.read("temperature", g.temperature);
  r.read("top_k", g.top_k);
  r.read("top_p", g.top_p);
  r.read("min_p", g.min_p);
  r.read("repetition_penalty", g.repetition_penalty);
  r.read("max_new_tokens", g.max_new_tokens);
  r.read("max_length", g.max_length);
  r.read("bos_token_id", g.bos_token_id);
  r.read("eos_token_id", g.eos_token_id);
  auto range = [&](const char* key, bool ok, const auto& value, const char* expected) {
    if (!ok) fail(ErrorKind::format, "hf_config", "'", source, "': key '", key, "' = ", value, ": expected ", expected);
  };
  if (g.temperature) range("temperature", *g.temperature >= 0, *g.temperature, ">= 0");
  if (g.top_k) range("top_k", *g.top_k >= 0, *g.top_k, ">= 0");
  if (g.top_p) range("top_p", *g.top_p >= 0 && *g.top_p <= 1, *g.top_p, "a value in [0, 1]");
  if (g.min_p) range("min_p", *g.min_p >= 0 && *g.min_p <= 1, *g.min_p, "a value in [0, 1]");
  if (g.repetition_penalty) range("repetition_penalty", *g.repetition_penalty > 0, *g.repetition_penalty, "> 0");
  if (g.bos_token_id) range("bos_token_id", *g.bos_token_id >= 0, *g.bos_token_id, ">= 0");
  for (std::int64_t id : g.eos_token_id) range("eos_token_id", id >= 0, id, "ids >= 0");
  return g;
}

/// Reads and parses a generation_config.json file.
inline HfGenerationConfig read_hf_generation_config(const std::filesystem::path& path) {
  return parse_hf_generation_config(detail::read_json_file(path, "generation config"), path.string());
}

namespace detail {

/// How each supported architecture reads config.json: the transformers config class's defaults
/// and the knobs that are fixed per architecture rather than written in the file (candle's
/// per-model config structs, as rows). to_config reads everything else the same way for all.
enum class HfBiases {
  all,        ///< every projection has a bias (GPT-2)
  from_keys,  ///< `attention_bias` (q, k, v, o) and `mlp_bias` (LLaMA)
  qkv,        ///< q, k and v only (Qwen2)
  none,       ///< no biases (Mistral)
};
enum class HfWindow {
  none,            ///< no sliding window
  sliding_window,  ///< `sliding_window` on every layer when given (Mistral)
  qwen2_layers,    ///< `use_sliding_window` on layers >= `max_window_layers` (Qwen2)
};
struct HfArchRow {
  std::string_view architecture, model_type;  ///< `architectures[0]`, `model_type`
  HfArch arch;
  const char* name;           ///< Config::architecture
  std::int64_t default_ctx;   ///< max_position_embeddings when absent
  double default_eps;         ///< rms_norm_eps / layer_norm_epsilon when absent
  const char* default_act;    ///< hidden_act / activation_function when absent
  NormKind norm;
  PositionKind position;      ///< learned absolute positions, or half-split RoPE read from the rope keys
  bool gated_ffn;
  bool reads_kv_heads;        ///< num_key_value_heads and head_dim are read (else n_heads and dim / n_heads)
  bool default_ffn_4x;        ///< a missing intermediate size means 4 × dim
  bool default_tied;          ///< tie_word_embeddings when absent
  HfBiases biases;
  HfWindow window;
};

inline constexpr HfArchRow hf_arch_rows[] = {
    // architecture, model_type, arch, name, ctx, eps, act, norm, position, gated, kv heads, 4x, tied, biases, window
    {"GPT2LMHeadModel", "gpt2", HfArch::gpt2, "gpt2", 1024, 1e-5, "gelu_new", NormKind::layer_norm,
     PositionKind::learned, false, false, true, true, HfBiases::all, HfWindow::none},
    {"LlamaForCausalLM", "llama", HfArch::llama, "llama", 2048, 1e-6, "silu", NormKind::rms_norm, PositionKind::rope,
     true, true, false, false, HfBiases::from_keys, HfWindow::none},
    {"MistralForCausalLM", "mistral", HfArch::mistral, "mistral", 131072, 1e-6, "silu", NormKind::rms_norm,
     PositionKind::rope, true, true, false, false, HfBiases::none, HfWindow::sliding_window},
    {"Qwen2ForCausalLM", "qwen2", HfArch::qwen2, "qwen2", 32768, 1e-6, "silu", NormKind::rms_norm, PositionKind::rope,
     true, true, false, false, HfBiases::qkv, HfWindow::qwen2_layers},
};

/// The row of the architecture a config describes (`architectures[0]`, else `model_type`).
inline const HfArchRow& hf_arch_row(const HfConfig& c) {
  if (!c.architectures.empty()) {
    for (const HfArchRow& k : hf_arch_rows)
      if (c.architectures.front() == k.architecture) return k;
    fail(ErrorKind::unsupported, "hf_config", "'", c.source, "': architecture '", c.architectures.front(),
         "' is not supported (loom reads GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
  }
  if (c.model_type) {
    for (const HfArchRow& k : hf_arch_rows)
      if (*c.model_type == k.model_type) return k;
    fail(ErrorKind::unsupported, "hf_config", "'", c.source, "': model_type '", *c.model_type, "' is not supported");
  }
  fail(ErrorKind::format, "hf_config", "'", c.source, "': missing required key 'architectures' (or 'model_type')");
}

/// Which supported architecture a config describes.
inline HfArch hf_arch(const HfConfig& c) { return hf_arch_row(c).arch; }

}  // namespace detail

namespace detail {

/// Error(format, "hf_config") naming the file.
template <typename... Parts>
[[noreturn]] void hf_bad(const HfConfig& hf, const Parts&... parts) {
  fail(ErrorKind::format, "hf_config", "'", hf.source, "': ", parts...);
}
/// Error(unsupported, "hf_config") naming the file.
template <typename... Parts>
[[noreturn]] void hf_unsupported(const HfConfig& hf, const Parts&... parts) {
  fail(ErrorKind::unsupported, "hf_config", "'", hf.source, "': ", parts...);
}
/// `v` as a positive 32-bit integer; Error(format) naming `key` otherwise.
inline std::int32_t hf_positive32(const HfConfig& hf, std::int64_t v, const std::string& key) {
  if (v <= 0 || v > std::numeric_limits<std::int32_t>::max())
    hf_bad(hf, "key '", key, "' = ", v, ": expected a positive 32-bit integer");
  return std::int32_t(v);
}

/// Positions: GPT-2's learned table (and its attention-scaling keys), or half-split RoPE with
/// its theta, scaling and partial rotary factor.
inline void read_positions(const HfConfig& hf, Config& c) {
  auto bad = [&](const auto&... parts) { hf_bad(hf, parts...); };
  auto unsupported = [&](const auto&... parts) { hf_unsupported(hf, parts...); };
  auto positive32 = [&](std::int64_t v, const std::string& key) { return hf_positive32(hf, v, key); };
  if (c.position == PositionKind::learned) {
    if (hf.scale_attn_weights && !*hf.scale_attn_weights)
      unsupported("key 'scale_attn_weights': unscaled attention (false) is not supported");
    if (hf.scale_attn_by_inverse_layer_idx && *hf.scale_attn_by_inverse_layer_idx)
      unsupported("key 'scale_attn_by_inverse_layer_idx': true is not supported");
  } else {
    c.rope_layout = RopeLayout::half_split;
    const HfRopeParameters* params = hf.rope_parameters ? &*hf.rope_parameters : nullptr;
    if (params && params->rope_theta && hf.rope_theta && *params->rope_theta != *hf.rope_theta)
      bad("keys 'rope_theta' (", *hf.rope_theta, ") and 'rope_parameters.rope_theta' (", *params->rope_theta,
          ") disagree");
    const double theta = params && params->rope_theta ? *params->rope_theta : hf.rope_theta.value_or(10000.0);
    if (!(theta > 0)) bad("key '", params && params->rope_theta ? "rope_parameters.rope_theta" : "rope_theta",
                          "' = ", theta, ": expected > 0");
    c.rope_theta = float(theta);

    // Scaling: rope_parameters when it names a type, else rope_scaling.
    const HfRopeParameters* scaling = nullptr;
    std::string skey;
    if (params && params->rope_type) {
      scaling = params;
      skey = "rope_parameters";
    } else if (hf.rope_scaling) {
      scaling = &*hf.rope_scaling;
      skey = "rope_scaling";
      if (!scaling->rope_type) bad("key 'rope_scaling': missing 'rope_type' (or 'type')");
    }
    if (scaling && *scaling->rope_type != "default") {
      const std::string& type = *scaling->rope_type;
      auto need = [&](const std::optional<double>& v, const char* key) {
        if (!v) bad("key '", skey, "': rope type '", type, "' needs '", key, "'");
        if (!(*v > 0)) bad("key '", skey, ".", key, "' = ", *v, ": expected > 0");
        return float(*v);
      };
      if (type == "linear") {
        c.rope_scaling.kind = RopeScalingKind::linear;
        c.rope_scaling.factor = need(scaling->factor, "factor");
      } else if (type == "llama3") {
        c.rope_scaling.kind = RopeScalingKind::llama3;
        c.rope_scaling.factor = need(scaling->factor, "factor");
        c.rope_scaling.low_freq_factor = need(scaling->low_freq_factor, "low_freq_factor");
        c.rope_scaling.high_freq_factor = need(scaling->high_freq_factor, "high_freq_factor");
        if (!scaling->original_max_position_embeddings)
          bad("key '", skey, "': rope type 'llama3' needs 'original_max_position_embeddings'");
        c.rope_scaling.original_max_position =
            positive32(*scaling->original_max_position_embeddings, skey + ".original_max_position_embeddings");
        if (!(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor))
          bad("key '", skey, "': high_freq_factor (", c.rope_scaling.high_freq_factor,
              ") must exceed low_freq_factor (", c.rope_scaling.low_freq_factor, ")");
      } else {
        unsupported("key '", skey, "': RoPE scaling type '", type, "' is not supported (linear, llama3)");
      }
    }

    const std::optional<double> partial =
        params && params->partial_rotary_factor ? params->partial_rotary_factor : hf.partial_rotary_factor;
    if (partial) {
      if (!(*partial > 0 && *partial <= 1))
        bad("key 'partial_rotary_factor' = ", *partial, ": expected a value in (0, 1]");
      const auto rd = std::int32_t(std::lround(*partial * c.head_dim));
      if (rd <= 0 || rd % 2 != 0)
        bad("key 'partial_rotary_factor' = ", *partial, " gives ", rd, " rotary dimensions of head_dim ", c.head_dim,
            "; expected a positive even number");
      c.rope_dim = rd == c.head_dim ? 0 : rd;
    }
  }
}

/// The sliding window, by the architecture's rule.
inline void read_sliding_window(const HfConfig& hf, const HfArchRow& arch, Config& c) {
  if (arch.window == HfWindow::sliding_window && hf.sliding_window) {
    c.sliding_window = hf_positive32(hf, *hf.sliding_window, "sliding_window");
  } else if (arch.window == HfWindow::qwen2_layers && hf.use_sliding_window.value_or(false) && hf.sliding_window) {
    // transformers' Qwen2: layers i >= max_window_layers use the window (default 28).
    const std::int64_t first = hf.max_window_layers.value_or(28);
    if (first <= 0)
      c.sliding_window = hf_positive32(hf, *hf.sliding_window, "sliding_window");
    else if (first < c.n_layers)
      hf_unsupported(hf, "keys 'use_sliding_window'/'max_window_layers': a sliding window on layers ", first, "..",
                     c.n_layers - 1, " only is not supported");
  }
}

}  // namespace detail

/// Converts a parsed config.json to loom's Config: picks the field among its spellings (two
/// spellings that disagree are an error), applies the architecture's defaults, and checks every
/// value. Throws Error(format) naming the key for missing/inconsistent values and
/// Error(unsupported) naming the architecture, activation or RoPE type loom does not implement.
inline Config to_config(const HfConfig& hf) {
  const detail::HfArchRow& arch = detail::hf_arch_row(hf);
  auto bad = [&](const auto&... parts) { detail::hf_bad(hf, parts...); };
  auto unsupported = [&](const auto&... parts) { detail::hf_unsupported(hf, parts...); };

  // A field under either of its spellings: {value, the key it came from}.
  struct Field {
    std::optional<std::int64_t> value;
    std::string key;
    std::string alt = {};  ///< the other spelling, for "missing" messages
  };
  auto either = [&](const std::optional<std::int64_t>& a, const char* ka, const std::optional<std::int64_t>& b,
                    const char* kb) -> Field {
    if (a && b && *a != *b) bad("keys '", ka, "' (", *a, ") and '", kb, "' (", *b, ") disagree");
    if (a) return {a, ka};
    if (b) return {b, kb};
    return {std::nullopt, ka, kb};
  };
  auto required = [&](const Field& f) -> std::int64_t {
    if (!f.value) bad("missing required key '", f.key, "'", f.alt.empty() ? std::string() : " (or '" + f.alt + "')");
    return *f.value;
  };
  auto positive32 = [&](std::int64_t v, const std::string& key) { return detail::hf_positive32(hf, v, key); };

  Config c;
  c.architecture = arch.name;

  const Field vocab{hf.vocab_size, "vocab_size"};
  c.vocab_size = positive32(required(vocab), vocab.key);
  const Field dim = either(hf.hidden_size, "hidden_size", hf.n_embd, "n_embd");
  c.dim = positive32(required(dim), dim.key);
  const Field layers = either(hf.num_hidden_layers, "num_hidden_layers", hf.n_layer, "n_layer");
  c.n_layers = positive32(required(layers), layers.key);
  const Field heads = either(hf.num_attention_heads, "num_attention_heads", hf.n_head, "n_head");
  c.n_heads = positive32(required(heads), heads.key);

  if (!arch.reads_kv_heads || !hf.num_key_value_heads) {
    c.n_kv_heads = c.n_heads;
  } else {
    c.n_kv_heads = positive32(*hf.num_key_value_heads, "num_key_value_heads");
    if (c.n_heads % c.n_kv_heads != 0)
      bad("key '", heads.key, "' (", c.n_heads, ") is not a multiple of 'num_key_value_heads' (", c.n_kv_heads, ")");
  }
  if (hf.head_dim && arch.reads_kv_heads) {
    c.head_dim = positive32(*hf.head_dim, "head_dim");
  } else {
    if (c.dim % c.n_heads != 0)
      bad("key '", dim.key, "' (", c.dim, ") is not divisible by '", heads.key, "' (", c.n_heads, ")");
    c.head_dim = c.dim / c.n_heads;
  }

  const Field ffn = either(hf.intermediate_size, "intermediate_size", hf.n_inner, "n_inner");
  c.ffn_dim = positive32(arch.default_ffn_4x && !ffn.value ? std::int64_t(4) * c.dim : required(ffn),
                         ffn.value ? ffn.key : "n_inner");

  const Field ctx = either(hf.max_position_embeddings, "max_position_embeddings", hf.n_positions, "n_positions");
  c.max_seq_len = positive32(ctx.value.value_or(arch.default_ctx), ctx.value ? ctx.key : "max_position_embeddings");

  // Norm.
  if (hf.rms_norm_eps && hf.layer_norm_epsilon && *hf.rms_norm_eps != *hf.layer_norm_epsilon)
    bad("keys 'rms_norm_eps' (", *hf.rms_norm_eps, ") and 'layer_norm_epsilon' (", *hf.layer_norm_epsilon,
        ") disagree");
  const double eps = hf.rms_norm_eps.value_or(hf.layer_norm_epsilon.value_or(arch.default_eps));
  if (!(eps >= 0)) bad("key '", hf.rms_norm_eps ? "rms_norm_eps" : "layer_norm_epsilon", "' = ", eps, ": expected >= 0");
  c.norm = arch.norm;
  c.norm_eps = float(eps);

  // Activation and feed-forward.
  if (hf.hidden_act && hf.activation_function && *hf.hidden_act != *hf.activation_function)
    bad("keys 'hidden_act' ('", *hf.hidden_act, "') and 'activation_function' ('", *hf.activation_function,
        "') disagree");
  const std::string act = hf.hidden_act.value_or(hf.activation_function.value_or(arch.default_act));
  const char* act_key = hf.hidden_act ? "hidden_act" : "activation_function";
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast")
    c.activation = Activation::gelu_tanh;
  else if (act == "gelu")
    c.activation = Activation::gelu_erf;
  else if (act == "silu" || act == "swish")
    c.activation = Activation::silu;
  else if (act == "relu")
    c.activation = Activation::relu;
  else
    unsupported("key '", act_key, "': activation '", act, "' is not supported (gelu_new, gelu, silu, relu)");
  c.gated_ffn = arch.gated_ffn;

  // Biases.
  switch (arch.biases) {
    case detail::HfBiases::all: c.qkv_bias = c.out_bias = c.ffn_bias = true; break;
    case detail::HfBiases::from_keys:
      c.qkv_bias = c.out_bias = hf.attention_bias.value_or(false);
      c.ffn_bias = hf.mlp_bias.value_or(false);
      break;
    case detail::HfBiases::qkv: c.qkv_bias = true; break;
    case detail::HfBiases::none: break;
  }
  c.tied_embeddings = hf.tie_word_embeddings.value_or(arch.default_tied);

  c.position = arch.position;
  detail::read_positions(hf, c);
  detail::read_sliding_window(hf, arch, c);

  c.validate("hf_config");
  (void)hf.special_tokens();  // range-checks the ids
  return c;
}

inline SpecialTokens HfConfig::special_tokens() const {
  SpecialTokens t;
  auto convert = [&](const std::vector<std::int64_t>& ids, const char* key, std::vector<std::int32_t>& out) {
    for (std::int64_t id : ids) {
      if (id < 0 || id > std::numeric_limits<std::int32_t>::max() || (vocab_size && id >= *vocab_size))
        fail(ErrorKind::format, "hf_config", "'", source, "': key '", key, "': token id ", id,
             " is outside the vocabulary (", vocab_size ? std::to_string(*vocab_size) : std::string("?"), " ids)");
      out.push_back(std::int32_t(id));
    }
  };
  convert(bos_token_id, "bos_token_id", t.bos);
  convert(eos_token_id, "eos_token_id", t.eos);
  return t;
}

}  // namespace loom::io

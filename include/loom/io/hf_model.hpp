// Hugging Face checkpoints → loom::Config + loom::Weights.
//
// `load_hf_model(path)` reads a model folder (config.json, model.safetensors or
// model.safetensors.index.json with its shards, optional generation_config.json) or a
// `.safetensors` file with config.json beside it. Tensors are matched by ONE name table per
// architecture, each Hugging Face name written once in module order with its expected shape;
// weights stay in their stored dtype (F32/F16/BF16) as views into the mapped files, which the
// returned Weights keeps alive through `storage`.
//
// Errors: Error(io) when a file cannot be opened; Error(format, "hf_model") naming the tensor for
// missing, unexpected or wrongly shaped tensors (with expected and actual shapes);
// Error(unsupported) for dtypes the kernels do not read; config and safetensors errors as in
// hf_config.hpp and safetensors.hpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/error.hpp"
#include "loom/io/hf_config.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/model/config.hpp"
#include "loom/model/tensor_table.hpp"
#include "loom/model/weights.hpp"
#include "loom/tensor.hpp"

namespace loom::io {

/// A loaded Hugging Face checkpoint.
struct HfModel {
  Config config;                   ///< the architecture, converted from config.json
  Weights weights;                 ///< views into `files`; `weights.storage` keeps them mapped
  HfConfig hf_config;              ///< config.json as read
  SpecialTokens special_tokens;    ///< bos/eos ids from config.json
  HfGenerationConfig generation;   ///< generation_config.json (all fields absent when there is none)
  bool has_generation_config = false;
  std::vector<std::shared_ptr<const SafetensorsFile>> files;  ///< the mapped safetensors files
};

namespace detail {

/// The Hugging Face name tables and their building blocks (short aliases kept local to them).
namespace hf_tables {

using tensor_table::Entry;
using tensor_table::layer_part;
using tensor_table::mat;
using tensor_table::model_part;
using tensor_table::model_tensor;
using tensor_table::vec;
using tensor_table::When;

/// The tensor names of one architecture family.
struct HfNameTable {
  std::span<const Entry> names;
  std::span<const std::string_view> skip;  ///< buffers saved with some checkpoints, not weights
  std::string_view optional_prefix;        ///< accepted before every name except lm_head ("transformer.")
  bool conv1d = false;                     ///< the layers' linear weights are stored [in, out]
};

using L = LayerWeights;
using W = Weights;
using D = tensor_table::Dim;

// GPT2LMHeadModel. Conv1D weights are [in, out].
inline constexpr Entry gpt2_names[] = {
    {"wte.weight", model_tensor<&W::token_embedding>, mat(D::vocab, D::d)},
    {"wpe.weight", model_tensor<&W::position_embedding>, mat(D::ctx, D::d)},
    {"h.{i}.ln_1.weight", layer_part<&L::attn_norm, &nn::NormWeights::weight>, vec(D::d)},
    {"h.{i}.ln_1.bias", layer_part<&L::attn_norm, &nn::NormWeights::bias>, vec(D::d)},
    {"h.{i}.attn.c_attn.weight", layer_part<&L::wqkv, &nn::Linear::weight>, mat(D::d, D::qkv)},
    {"h.{i}.attn.c_attn.bias", layer_part<&L::wqkv, &nn::Linear::bias>, vec(D::qkv)},
    {"h.{i}.attn.c_proj.weight", layer_part<&L::wo, &nn::Linear::weight>, mat(D::q, D::d)},
    {"h.{i}.attn.c_proj.bias", layer_part<&L::wo, &nn::Linear::bias>, vec(D::d)},
    {"h.{i}.ln_2.weight", layer_part<&L::ffn_norm, &nn::NormWeights::weight>, vec(D::d)},
    {"h.{i}.ln_2.bias", layer_part<&L::ffn_norm, &nn::NormWeights::bias>, vec(D::d)},
    {"h.{i}.mlp.c_fc.weight", layer_part<&L::w_up, &nn::Linear::weight>, mat(D::d, D::ffn)},
    {"h.{i}.mlp.c_fc.bias", layer_part<&L::w_up, &nn::Linear::bias>, vec(D::ffn)},
    {"h.{i}.mlp.c_proj.weight", layer_part<&L::w_down, &nn::Linear::weight>, mat(D::ffn, D::d)},
    {"h.{i}.mlp.c_proj.bias", layer_part<&L::w_down, &nn::Linear::bias>, vec(D::d)},
    {"ln_f.weight", model_part<&W::final_norm, &nn::NormWeights::weight>, vec(D::d)},
    {"ln_f.bias", model_part<&W::final_norm, &nn::NormWeights::bias>, vec(D::d)},
    {"lm_head.weight", model_part<&W::output, &nn::Linear::weight>, mat(D::vocab, D::d), When::output},
};
inline constexpr std::string_view gpt2_skip[] = {"h.{i}.attn.bias", "h.{i}.attn.masked_bias"};

// LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM. nn.Linear weights are [out, in].
inline constexpr Entry llama_names[] = {
    {"model.embed_tokens.weight", model_tensor<&W::token_embedding>, mat(D::vocab, D::d)},
    {"model.layers.{i}.input_layernorm.weight", layer_part<&L::attn_norm, &nn::NormWeights::weight>, vec(D::d)},
    {"model.layers.{i}.self_attn.q_proj.weight", layer_part<&L::wq, &nn::Linear::weight>, mat(D::q, D::d)},
    {"model.layers.{i}.self_attn.q_proj.bias", layer_part<&L::wq, &nn::Linear::bias>, vec(D::q), When::qkv_bias},
    {"model.layers.{i}.self_attn.k_proj.weight", layer_part<&L::wk, &nn::Linear::weight>, mat(D::kv, D::d)},
    {"model.layers.{i}.self_attn.k_proj.bias", layer_part<&L::wk, &nn::Linear::bias>, vec(D::kv), When::qkv_bias},
    {"model.layers.{i}.self_attn.v_proj.weight", layer_part<&L::wv, &nn::Linear::weight>, mat(D::kv, D::d)},
    {"model.layers.{i}.self_attn.v_proj.bias", layer_part<&L::wv, &nn::Linear::bias>, vec(D::kv), When::qkv_bias},
    {"model.layers.{i}.self_attn.o_proj.weight", layer_part<&L::wo, &nn::Linear::weight>, mat(D::d, D::q)},
    {"model.layers.{i}.self_attn.o_proj.bias", layer_part<&L::wo, &nn::Linear::bias>, vec(D::d), When::out_bias},
    {"model.layers.{i}.post_attention_layernorm.weight", layer_part<&L::ffn_norm, &nn::NormWeights::weight>, vec(D::d)},
    {"model.layers.{i}.mlp.gate_proj.weight", layer_part<&L::w_gate, &nn::Linear::weight>, mat(D::ffn, D::d)},
    {"model.layers.{i}.mlp.gate_proj.bias", layer_part<&L::w_gate, &nn::Linear::bias>, vec(D::ffn), When::ffn_bias},
    {"model.layers.{i}.mlp.up_proj.weight", layer_part<&L::w_up, &nn::Linear::weight>, mat(D::ffn, D::d)},
    {"model.layers.{i}.mlp.up_proj.bias", layer_part<&L::w_up, &nn::Linear::bias>, vec(D::ffn), When::ffn_bias},
    {"model.layers.{i}.mlp.down_proj.weight", layer_part<&L::w_down, &nn::Linear::weight>, mat(D::d, D::ffn)},
    {"model.layers.{i}.mlp.down_proj.bias", layer_part<&L::w_down, &nn::Linear::bias>, vec(D::d), When::ffn_bias},
    {"model.norm.weight", model_part<&W::final_norm, &nn::NormWeights::weight>, vec(D::d)},
    {"lm_head.weight", model_part<&W::output, &nn::Linear::weight>, mat(D::vocab, D::d), When::output},
};
inline constexpr std::string_view llama_skip[] = {"model.layers.{i}.self_attn.rotary_emb.inv_freq"};

}  // namespace hf_tables

inline hf_tables::HfNameTable hf_name_table(HfArch arch) {
  using namespace hf_tables;
  if (arch == HfArch::gpt2) return {gpt2_names, gpt2_skip, "transformer.", true};
  return {llama_names, llama_skip, "", false};
}

}  // namespace detail

/// Binds the tensors of `set` to a Weights struct following the architecture's name table.
/// Every tensor the config needs must be present with its expected shape; any other tensor that
/// is not a known buffer is an error. When the checkpoint has no `lm_head.weight` the output
/// projection is tied to the token embedding and `config.tied_embeddings` is set.
inline Weights bind_hf_weights(Config& config, const SafetensorsSet& set, detail::HfArch arch) {
  using tensor_table::When;
  const detail::hf_tables::HfNameTable table = detail::hf_name_table(arch);
  const std::string& source = set.source();

  // Name as the table writes it → name in the file (the optional prefix removed).
  std::map<std::string, std::string, std::less<>> names;
  for (const auto& [name, entry] : set.tensors()) {
    std::string key = name;
    if (!table.optional_prefix.empty() && key.starts_with(table.optional_prefix) &&
        !key.starts_with("lm_head."))
      key.erase(0, table.optional_prefix.size());
    if (auto [it, inserted] = names.emplace(key, name); !inserted)
      fail(ErrorKind::format, "hf_model", "'", source, "': tensors '", it->second, "' and '", name,
           "' are the same weight (with and without the '", table.optional_prefix, "' prefix)");
  }

  Weights w;
  w.layers.resize(std::size_t(config.n_layers));
  std::set<std::string, std::less<>> used;
  LayerWeights none;  // slot argument for model-level entries
  bool has_lm_head = false;
  for (const tensor_table::Entry& e : table.names) {
    if (!tensor_table::applies(e.when, config)) continue;
    const bool per_layer = e.per_layer();
    const Shape expected = e.shape.resolve(config);
    for (int i = 0; i < (per_layer ? config.n_layers : 1); ++i) {
      const std::string name = tensor_table::layer_name(e.name, i);
      const auto it = names.find(name);
      if (e.when == When::output) {
        if (it == names.end()) continue;  // absent ⇒ tied
        used.insert(name);
        if (config.tied_embeddings) continue;  // tied: the embedding is the output (as transformers does)
        has_lm_head = true;
      }
      if (it == names.end())
        fail(ErrorKind::format, "hf_model", "'", source, "': missing tensor '", name,
             "' (expected shape ", expected.str(), ")");
      const std::string& stored = it->second;
      const TensorRef& ref = *set.find(stored);
      if (ref.dtype != DType::f32 && ref.dtype != DType::f16 && ref.dtype != DType::bf16)
        fail(ErrorKind::unsupported, "hf_model", "'", set.file_of(stored), "': tensor '", stored, "' has dtype ",
             to_string(ref.dtype), "; model weights must be F32, F16 or BF16");
      if (!(ref.shape == expected))
        fail(ErrorKind::format, "hf_model", "'", set.file_of(stored), "': tensor '", stored, "': expected shape ",
             expected.str(), ", got ", ref.shape.str());
      e.slot(w, per_layer ? w.layers[std::size_t(i)] : none) = ref;
      used.insert(name);
    }
  }

  // Everything else must be a known buffer.
  std::set<std::string, std::less<>> skip;
  for (std::string_view pattern : table.skip)
    for (int i = 0; i < config.n_layers; ++i) skip.insert(tensor_table::layer_name(pattern, i));
  std::vector<std::string> unexpected;
  for (const auto& [key, stored] : names)
    if (!used.contains(key) && !skip.contains(key)) unexpected.push_back(stored);
  if (!unexpected.empty()) {
    std::string list;
    for (std::size_t k = 0; k < unexpected.size() && k < 5; ++k) list += (k ? "', '" : "") + unexpected[k];
    fail(ErrorKind::format, "hf_model", "'", source, "': unexpected tensor", unexpected.size() > 1 ? "s" : "", " '",
         list, "'", unexpected.size() > 5 ? loom::detail::cat(" and ", unexpected.size() - 5, " more") : std::string(),
         " (not used by a ", config.architecture, " model with this config)");
  }

  if (table.conv1d)
    for (LayerWeights& l : w.layers) l.wqkv.in_out = l.wo.in_out = l.w_up.in_out = l.w_down.in_out = true;
  if (!has_lm_head) {
    config.tied_embeddings = true;
    w.output.weight = w.token_embedding;
  }
  for (const auto& f : set.files()) w.storage.push_back(f);
  validate_weights(config, w, "hf_model");
  return w;
}

/// Loads a Hugging Face checkpoint: `path` is a model folder (config.json + model.safetensors or
/// model.safetensors.index.json + shards, optional generation_config.json), or a `.safetensors`
/// file (or `*.safetensors.index.json`) with config.json beside it.
inline HfModel load_hf_model(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  if (!is_dir && !fs::exists(path, ec))
    fail(ErrorKind::io, "hf_model", "'", path.string(), "' does not exist");
  const fs::path dir = is_dir ? path : path.parent_path().empty() ? fs::path(".") : path.parent_path();

  HfModel m;
  m.hf_config = read_hf_config(dir / "config.json");
  m.config = to_config(m.hf_config);
  m.special_tokens = m.hf_config.special_tokens();
  if (const fs::path g = dir / "generation_config.json"; fs::exists(g, ec)) {
    m.generation = read_hf_generation_config(g);
    m.has_generation_config = true;
  }
  const SafetensorsSet set(path);
  m.weights = bind_hf_weights(m.config, set, detail::hf_arch(m.hf_config));
  m.files = set.files();
  return m;
}

}  // namespace loom::io

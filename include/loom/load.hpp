// loom::load: one call from a path on disk to a runnable model, its tokenizer and its defaults.
// The format is detected from the content (magic bytes, JSON), never from the file extension:
//   a folder with config.json (Hugging Face), a .safetensors file beside its config.json,
//   a GGUF file (with its embedded vocabulary), a llama2.c checkpoint.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "loom/error.hpp"
#include "loom/io/gguf_model.hpp"
#include "loom/io/gguf_tokenizer.hpp"
#include "loom/io/hf_model.hpp"
#include "loom/io/llama2c.hpp"
#include "loom/io/llama2c_tokenizer.hpp"
#include "loom/io/tokenizer_json.hpp"
#include "loom/model/model.hpp"
#include "loom/sampling/sampler.hpp"
#include "loom/tokenizer/tokenizer.hpp"

namespace loom {

enum class FileFormat { hf_folder, safetensors, llama2c, gguf, json, unknown };

/// Everything needed to run a model.
struct Loaded {
  std::shared_ptr<const Model> model;
  std::optional<Tokenizer> tokenizer;          ///< absent when the model carries none and none was given
  std::int32_t bos_id = -1;                    ///< the id that starts a sequence (-1: none)
  std::vector<std::int32_t> end_of_generation; ///< ids that end generation
  SamplerParams sampler;                       ///< llama.cpp's defaults with the model's generation_config.json applied
  std::string chat_template;                   ///< the model's Jinja chat template (empty: none); see chat.hpp
  FileFormat format = FileFormat::unknown;
};

namespace detail {

inline std::string read_head(const std::filesystem::path& p, std::size_t n) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail(ErrorKind::io, "load", "cannot open '", p.string(), "'");
  std::string s(n, '\0');
  f.read(s.data(), std::streamsize(n));
  s.resize(std::size_t(f.gcount()));
  return s;
}

/// `chat_template` from a tokenizer_config.json: a string, or a list of {name, template} entries
/// (the "default" one is used). Absent or unreadable ⇒ empty.
inline std::string read_chat_template(const std::filesystem::path& folder) {
  const auto path = folder / "tokenizer_config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return {};
  std::ifstream f(path, std::ios::binary);
  const auto j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("chat_template")) return {};
  const auto& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())
    for (const auto& e : t)
      if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
        return e["template"].get<std::string>();
  return {};
}

inline void add_unique(std::vector<std::int32_t>& v, std::int64_t id) {
  if (id < 0 || id > INT32_MAX) return;
  for (std::int32_t x : v)
    if (x == id) return;
  v.push_back(std::int32_t(id));
}

}  // namespace detail

/// Detects a file's or folder's format from its content.
inline FileFormat detect_format(const std::filesystem::path& p) {
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) return FileFormat::hf_folder;
  if (!std::filesystem::exists(p, ec)) fail(ErrorKind::io, "load", "'", p.string(), "' does not exist");
  const std::string head = detail::read_head(p, 64);
  if (head.size() >= 4 && std::memcmp(head.data(), "GGUF", 4) == 0) return FileFormat::gguf;
  const std::size_t first = head.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && head[first] == '{') return FileFormat::json;
  if (head.size() >= 9) {
    std::uint64_t n;
    std::memcpy(&n, head.data(), 8);
    if (head[8] == '{' && n >= 2 && n < (std::uint64_t(1) << 32)) return FileFormat::safetensors;
  }
  if (io::looks_like_llama2c(std::as_bytes(std::span(head.data(), head.size())))) return FileFormat::llama2c;
  return FileFormat::unknown;
}

/// Loads a tokenizer file for a model with `vocab_size` embeddings: a tokenizer.json (or a folder
/// holding one) or a llama2.c tokenizer.bin. Its ids must fit the model's vocabulary.
inline Tokenizer load_tokenizer(const std::filesystem::path& p, std::int32_t vocab_size) {
  std::error_code ec;
  const bool dir = std::filesystem::is_directory(p, ec);
  const auto file = dir ? p / "tokenizer.json" : p;
  Tokenizer tok = (dir || detect_format(file) == FileFormat::json) ? io::load_tokenizer_json(file)
                                                                    : io::load_llama2c_tokenizer(file, vocab_size);
  if (tok.vocab_size() > vocab_size)
    fail(ErrorKind::format, "load", "tokenizer '", file.string(), "' has ", tok.vocab_size(),
         " tokens but the model's embedding has only ", vocab_size, " rows");
  return tok;
}

/// Loads a model (format detected from the content) and its tokenizer: `tokenizer_path` when
/// given, else the tokenizer.json beside a Hugging Face checkpoint.
inline Loaded load(const std::filesystem::path& model_path, const std::filesystem::path& tokenizer_path = {}) {
  Loaded out;
  out.format = detect_format(model_path);
  switch (out.format) {
    case FileFormat::hf_folder:
    case FileFormat::safetensors: {
      io::HfModel hf = io::load_hf_model(model_path);
      const std::int32_t vocab = hf.config.vocab_size;
      const auto folder = out.format == FileFormat::hf_folder ? model_path : model_path.parent_path();
      if (tokenizer_path.empty() && std::filesystem::exists(folder / "tokenizer.json"))
        out.tokenizer = load_tokenizer(folder / "tokenizer.json", vocab);
      for (std::int32_t id : hf.special_tokens.eos) detail::add_unique(out.end_of_generation, id);
      for (std::int64_t id : hf.generation.eos_token_id) detail::add_unique(out.end_of_generation, id);
      if (auto b = hf.special_tokens.bos_id()) out.bos_id = *b;
      out.chat_template = detail::read_chat_template(folder);
      const io::HfGenerationConfig& g = hf.generation;
      if (g.greedy()) out.sampler.temperature = 0.0f;
      if (g.temperature && !g.greedy()) out.sampler.temperature = float(*g.temperature);
      if (g.top_k) out.sampler.top_k = std::int32_t(std::clamp<std::int64_t>(*g.top_k, 0, INT32_MAX));
      if (g.top_p) out.sampler.top_p = float(*g.top_p);
      if (g.min_p) out.sampler.min_p = float(*g.min_p);
      if (g.repetition_penalty) out.sampler.repeat_penalty = float(*g.repetition_penalty);
      try {
        out.sampler.validate();
      } catch (const Error& e) {
        fail(ErrorKind::format, "load", "generation_config.json in '", folder.string(), "': ", e.what());
      }
      out.model = std::make_shared<const Model>(std::move(hf.config), std::move(hf.weights));
      break;
    }
    case FileFormat::llama2c: {
      io::Llama2cModel m = io::load_llama2c(model_path);
      out.model = std::make_shared<const Model>(std::move(m.config), std::move(m.weights));
      // llama2.c's run.c starts from BOS = 1 and stops when BOS is sampled again; 2 is EOS.
      out.bos_id = 1;
      out.end_of_generation = {1, 2};
      break;
    }
    case FileFormat::gguf: {
      io::GgufModel g = io::load_gguf_model(model_path);
      if (tokenizer_path.empty()) out.tokenizer = io::load_gguf_tokenizer(*g.file);
      if (g.bos_id) out.bos_id = *g.bos_id;
      if (g.eos_id) detail::add_unique(out.end_of_generation, *g.eos_id);
      out.chat_template = g.file->get_optional<std::string>("tokenizer.chat_template").value_or("");
      out.model = std::make_shared<const Model>(std::move(g.config), std::move(g.weights));
      break;
    }
    case FileFormat::json:
      fail(ErrorKind::format, "load", "'", model_path.string(),
           "' is a JSON file, not a model (pass the folder that holds config.json)");
    case FileFormat::unknown:
      fail(ErrorKind::format, "load", "'", model_path.string(),
           "' is not a recognized model: expected a Hugging Face folder, a .safetensors file or a llama2.c checkpoint");
  }
  const std::int32_t vocab = out.model->config().vocab_size;
  if (!tokenizer_path.empty()) out.tokenizer = load_tokenizer(tokenizer_path, vocab);
  if (out.tokenizer) {
    if (out.tokenizer->vocab_size() > vocab)
      fail(ErrorKind::format, "load", "the tokenizer has ", out.tokenizer->vocab_size(),
           " tokens but the model's embedding has only ", vocab, " rows");
    if (out.tokenizer->bos_id() >= 0 && out.format != FileFormat::llama2c) out.bos_id = out.tokenizer->bos_id();
    if (out.tokenizer->eos_id() >= 0) detail::add_unique(out.end_of_generation, out.tokenizer->eos_id());
    for (std::int32_t id : out.tokenizer->spec().eog_ids) detail::add_unique(out.end_of_generation, id);
  }
  for (std::int32_t id : out.end_of_generation)
    if (id >= vocab)
      fail(ErrorKind::format, "load", "end-of-generation id ", id, " is outside the model's vocabulary of ", vocab);
  if (out.bos_id >= vocab) fail(ErrorKind::format, "load", "BOS id ", out.bos_id, " is outside the vocabulary of ", vocab);
  return out;
}

}  // namespace loom

// loom::load: one call from a path on disk to a runnable model, its tokenizer and its defaults.
// The format is detected from the content (magic bytes, JSON), never from the file extension:
//   a folder with config.json (Hugging Face), a .safetensors file beside its config.json,
//   a GGUF file (with its embedded vocabulary), a llama2.c checkpoint.
// Tokenizers (load_tokenizer) are detected the same way: tokenizer.json (or a folder holding it),
// a GGUF model or vocabulary, a llama2.c tokenizer.bin. A file that is something else — a
// SentencePiece tokenizer.model, a checkpoint without a vocabulary, a FIFO — is an Error saying
// what it is, never an empty tokenizer.
//
// One rule for failures: load() and load_tokenizer() throw only loom::Error. Exceptions of the
// libraries underneath (nlohmann::json, std::filesystem, std::bad_alloc from allocations sized by
// the input) are converted to an Error naming the file.
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
#include "loom/io/input_file.hpp"
#include "loom/io/json_text.hpp"
#include "loom/io/gguf_tokenizer.hpp"
#include "loom/io/hf_model.hpp"
#include "loom/io/llama2c.hpp"
#include "loom/io/llama2c_tokenizer.hpp"
#include "loom/io/tokenizer_json.hpp"
#include "loom/model/model.hpp"
#include "loom/sampling/sampler.hpp"
#include "loom/tokenizer/tokenizer.hpp"

namespace loom {

enum class FileFormat {
  hf_folder,
  safetensors,
  llama2c,
  gguf,
  json,
  unknown,
  llama2c_tokenizer,  ///< llama2.c tokenizer.bin
  sentencepiece,      ///< SentencePiece tokenizer.model (protobuf), which loom does not read
};

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

/// `chat_template` from the text of a tokenizer_config.json: a string, or a list of
/// {name, template} entries (the "default" one is used). Absent ⇒ empty. Malformed JSON, nesting
/// beyond limits::json_depth or a value of the wrong type is Error(format, "load") naming `source`
/// and the field.
inline std::string parse_chat_template(std::string_view text, const std::string& source) {
  auto bad = [&](const auto&... parts) { fail(ErrorKind::format, "load", "'", source, "': ", parts...); };
  io::detail::check_json_depth(text, "load", source, "tokenizer_config.json");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    bad("invalid JSON: ", e.what());
  }
  if (!j.is_object()) bad("expected a JSON object, got ", j.type_name());
  const auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) bad("chat_template: expected a string or a list of {name, template}, got ", it->type_name());
  for (std::size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json& e = (*it)[i];
    if (!e.is_object()) bad("chat_template[", i, "]: expected an object, got ", e.type_name());
    const auto name = e.find("name"), tmpl = e.find("template");
    if (name == e.end() || !name->is_string()) bad("chat_template[", i, "].name: expected a string");
    if (tmpl == e.end() || !tmpl->is_string()) bad("chat_template[", i, "].template: expected a string");
    if (name->get<std::string>() == "default") return tmpl->get<std::string>();
  }
  return {};
}

/// The chat template of the tokenizer_config.json in `folder` (empty when there is none).
inline std::string read_chat_template(const std::filesystem::path& folder) {
  const auto path = folder / "tokenizer_config.json";
  if (io::path_info(path).kind == io::PathKind::missing) return {};
  return parse_chat_template(io::read_input(path, "load", limits::json_file_bytes, "tokenizer_config.json"),
                             path.string());
}

/// Whether `head` starts like a SentencePiece ModelProto: field 1 (a repeated SentencePiece
/// message, wire type 2) whose first field is again field 1 (the piece string).
inline bool looks_like_sentencepiece(std::string_view head) {
  if (head.size() < 4 || head[0] != '\x0a') return false;
  std::size_t i = 1;
  std::uint64_t len = 0;
  for (int shift = 0; i < head.size() && shift < 35; shift += 7) {
    const auto b = std::uint8_t(head[i++]);
    len |= std::uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return len >= 2 && i < head.size() && head[i] == '\x0a';
  }
  return false;
}

inline void add_unique(std::vector<std::int32_t>& v, std::int64_t id) {
  if (id < 0 || id > INT32_MAX) return;
  for (std::int32_t x : v)
    if (x == id) return;
  v.push_back(std::int32_t(id));
}

}  // namespace detail

/// Detects a file's or folder's format from its content. Throws Error(io, "load") when the path
/// does not exist, cannot be read, or is not a regular file or folder (FIFO, device, socket).
inline FileFormat detect_format(const std::filesystem::path& p) {
  const io::PathInfo info = io::path_info(p);
  switch (info.kind) {
    case io::PathKind::missing: fail(ErrorKind::io, "load", "'", p.string(), "' does not exist");
    case io::PathKind::error: fail(ErrorKind::io, "load", "cannot open '", p.string(), "': ", info.what);
    case io::PathKind::other: fail(ErrorKind::io, "load", "'", p.string(), "' is ", info.what, ", not a regular file");
    case io::PathKind::directory: return FileFormat::hf_folder;
    case io::PathKind::regular: break;
  }
  const std::string head = io::read_input_head(p, "load", 64);
  if (head.size() >= 4 && std::memcmp(head.data(), "GGUF", 4) == 0) return FileFormat::gguf;
  const std::size_t first = head.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && head[first] == '{') return FileFormat::json;
  if (head.size() >= 9) {
    std::uint64_t n;
    std::memcpy(&n, head.data(), 8);
    if (head[8] == '{' && n >= 2 && n < (std::uint64_t(1) << 32)) return FileFormat::safetensors;
  }
  if (detail::looks_like_sentencepiece(head)) return FileFormat::sentencepiece;
  if (head.size() >= 12) {  // a llama2.c tokenizer.bin: entries that end exactly at the end of the file
    const io::MappedFile f(p);
    if (io::llama2c_tokenizer_entries(f.bytes()) > 0) return FileFormat::llama2c_tokenizer;
  }
  if (io::looks_like_llama2c(std::as_bytes(std::span(head.data(), head.size())))) return FileFormat::llama2c;
  return FileFormat::unknown;
}

namespace detail {

/// Runs `f`; any exception other than loom::Error becomes one naming `path`.
template <typename F>
auto converting_exceptions(const std::filesystem::path& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    fail(ErrorKind::capacity, "load", "'", path.string(), "': out of memory while reading it");
  } catch (const std::length_error& e) {
    fail(ErrorKind::capacity, "load", "'", path.string(), "': a size read from it is too large (", e.what(), ")");
  } catch (const std::filesystem::filesystem_error& e) {
    fail(ErrorKind::io, "load", "'", path.string(), "': ", e.code().message());
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::format, "load", "'", path.string(), "': ", e.what());
  } catch (const std::exception& e) {
    fail(ErrorKind::format, "load", "'", path.string(), "': ", e.what());
  }
}

/// A tokenizer from `p`, its format detected; `vocab_size` (> 0) is the model's, which a
/// llama2.c tokenizer.bin needs (0: read every entry).
inline Tokenizer load_tokenizer_detected(const std::filesystem::path& p, std::int32_t vocab_size) {
  const std::string name = p.string();
  switch (detect_format(p)) {
    case FileFormat::hf_folder:
      if (io::path_info(p / "tokenizer.json").kind != io::PathKind::regular)
        fail(ErrorKind::io, "load", "'", name, "' is a folder without a tokenizer.json");
      return io::load_tokenizer_json(p / "tokenizer.json");
    case FileFormat::json: return io::load_tokenizer_json(p);
    case FileFormat::gguf: {
      const io::GgufFile f(p);
      if (auto t = io::load_gguf_tokenizer(f)) return std::move(*t);
      fail(ErrorKind::format, "load", "'", name, "' is a GGUF file without a vocabulary (no tokenizer.ggml.tokens)");
    }
    case FileFormat::llama2c_tokenizer: {
      const io::MappedFile f(p);
      return io::load_llama2c_tokenizer_bytes(f.bytes(), vocab_size > 0 ? vocab_size : io::llama2c_tokenizer_entries(f.bytes()),
                                              f.path());
    }
    case FileFormat::sentencepiece:
      fail(ErrorKind::unsupported, "load", "'", name,
           "' is a SentencePiece tokenizer.model, which loom does not read; pass the model's tokenizer.json "
           "(or a GGUF file) instead");
    case FileFormat::llama2c:
      fail(ErrorKind::format, "load", "'", name, "' is a llama2.c checkpoint, which holds no tokenizer; pass its tokenizer.bin");
    case FileFormat::safetensors:
      fail(ErrorKind::format, "load", "'", name, "' is a safetensors file, which holds no tokenizer; pass tokenizer.json");
    case FileFormat::unknown: break;
  }
  fail(ErrorKind::format, "load", "'", name,
       "' is not a recognized tokenizer: expected tokenizer.json (or a folder holding it), a GGUF file or a llama2.c "
       "tokenizer.bin");
}

}  // namespace detail

/// Loads a tokenizer by itself: tokenizer.json (or a folder holding one), a GGUF model or
/// vocabulary, or a llama2.c tokenizer.bin (every entry). Throws only loom::Error.
inline Tokenizer load_tokenizer(const std::filesystem::path& p) {
  return detail::converting_exceptions(p, [&] { return detail::load_tokenizer_detected(p, 0); });
}

/// Loads a tokenizer file for a model with `vocab_size` embeddings: a tokenizer.json (or a folder
/// holding one) or a llama2.c tokenizer.bin. Its ids must fit the model's vocabulary.
inline Tokenizer load_tokenizer(const std::filesystem::path& p, std::int32_t vocab_size) {
  const auto file = io::is_directory(p) ? p / "tokenizer.json" : p;
  Tokenizer tok = detail::converting_exceptions(p, [&] { return detail::load_tokenizer_detected(p, vocab_size); });
  if (tok.vocab_size() > vocab_size)
    fail(ErrorKind::format, "load", "tokenizer '", file.string(), "' has ", tok.vocab_size(),
         " tokens but the model's embedding has only ", vocab_size, " rows");
  return tok;
}

/// Loads a model (format detected from the content) and its tokenizer: `tokenizer_path` when
/// given, else the tokenizer.json beside a Hugging Face checkpoint.
inline Loaded load(const std::filesystem::path& model_path, const std::filesystem::path& tokenizer_path = {});

namespace detail {

inline Loaded load_detected(const std::filesystem::path& model_path, const std::filesystem::path& tokenizer_path) {
  Loaded out;
  out.format = detect_format(model_path);
  switch (out.format) {
    case FileFormat::hf_folder:
    case FileFormat::safetensors: {
      io::HfModel hf = io::load_hf_model(model_path);
      const std::int32_t vocab = hf.config.vocab_size;
      const auto folder = out.format == FileFormat::hf_folder ? model_path : model_path.parent_path();
      if (tokenizer_path.empty() && io::path_info(folder / "tokenizer.json").kind != io::PathKind::missing)
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
    case FileFormat::llama2c_tokenizer:
      fail(ErrorKind::format, "load", "'", model_path.string(), "' is a llama2.c tokenizer.bin, not a model (pass it as the tokenizer)");
    case FileFormat::sentencepiece:
      fail(ErrorKind::format, "load", "'", model_path.string(), "' is a SentencePiece tokenizer.model, not a model");
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

}  // namespace detail

inline Loaded load(const std::filesystem::path& model_path, const std::filesystem::path& tokenizer_path) {
  return detail::converting_exceptions(model_path, [&] { return detail::load_detected(model_path, tokenizer_path); });
}

}  // namespace loom

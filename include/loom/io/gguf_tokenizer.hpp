// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata, read into the same BPE
// engine as tokenizer.json and llama2.c's tokenizer.bin.
#pragma once

#include <optional>
#include <string>

#include "loom/error.hpp"
#include "loom/io/gguf.hpp"
#include "loom/tokenizer/tokenizer.hpp"

namespace loom::io {

/// The `tokenizer.ggml.*` keys of a GGUF file. Types are checked; every failure names the key.
inline GgufVocab read_gguf_vocab(const GgufFile& f) {
  GgufVocab v;
  v.model = f.get<std::string>("tokenizer.ggml.model");
  // The keys each tokenizer model needs (llama.cpp refuses a vocabulary without them too).
  const char* required = v.model == "gpt2" ? "tokenizer.ggml.merges" : v.model == "llama" ? "tokenizer.ggml.scores" : nullptr;
  if (required && !f.contains(required))
    fail(ErrorKind::format, "gguf", "'", f.path(), "': tokenizer.ggml.model '", v.model, "' needs the key '", required,
         "', which is missing");
  v.pre = f.get_optional<std::string>("tokenizer.ggml.pre").value_or("default");
  v.tokens = f.at("tokenizer.ggml.tokens").as_strings("tokenizer.ggml.tokens");
  if (const GgufValue* s = f.find("tokenizer.ggml.scores")) v.scores = s->as_f32s("tokenizer.ggml.scores");
  if (const GgufValue* t = f.find("tokenizer.ggml.token_type")) v.token_types = t->as_i32s("tokenizer.ggml.token_type");
  if (const GgufValue* m = f.find("tokenizer.ggml.merges")) v.merges = m->as_strings("tokenizer.ggml.merges");
  v.bos_id = f.get_optional<std::int64_t>("tokenizer.ggml.bos_token_id");
  v.eos_id = f.get_optional<std::int64_t>("tokenizer.ggml.eos_token_id");
  v.unk_id = f.get_optional<std::int64_t>("tokenizer.ggml.unknown_token_id");
  v.eot_id = f.get_optional<std::int64_t>("tokenizer.ggml.eot_token_id");
  v.eom_id = f.get_optional<std::int64_t>("tokenizer.ggml.eom_token_id");
  v.add_bos = f.get_optional<bool>("tokenizer.ggml.add_bos_token");
  v.add_eos = f.get_optional<bool>("tokenizer.ggml.add_eos_token");
  v.add_space_prefix = f.get_optional<bool>("tokenizer.ggml.add_space_prefix");
  return v;
}

/// The file's tokenizer, or nullopt when it carries none (no `tokenizer.ggml.tokens`).
inline std::optional<Tokenizer> load_gguf_tokenizer(const GgufFile& f) {
  if (!f.contains("tokenizer.ggml.tokens")) return std::nullopt;
  return Tokenizer(gguf_tokenizer_spec(read_gguf_vocab(f), f.path()));
}

}  // namespace loom::io

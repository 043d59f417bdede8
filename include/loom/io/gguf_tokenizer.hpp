// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata, read into the same BPE
// engine as tokenizer.json and llama2.c's tokenizer.bin: the keys are read into GgufVocab, which
// gguf_tokenizer_spec turns into a TokenizerSpec with llama.cpp's semantics.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/error.hpp"
#include "loom/io/gguf.hpp"
#include "loom/tokenizer/bpe_pre_types.hpp"
#include "loom/tokenizer/spec.hpp"
#include "loom/tokenizer/tokenizer.hpp"

namespace loom::io {

/// The `tokenizer.ggml.*` metadata of a GGUF file (optional keys as std::optional / empty).
struct GgufVocab {
  std::string model;                 ///< tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
  std::string pre;                   ///< tokenizer.ggml.pre: "gpt-2", "llama-bpe", "smollm", ... (bpe_pre_types.hpp)
  std::vector<std::string> tokens;   ///< tokenizer.ggml.tokens
  std::vector<float> scores;         ///< tokenizer.ggml.scores (SentencePiece)
  std::vector<std::int32_t> token_types;  ///< tokenizer.ggml.token_type (1 normal, 2 unknown,
                                          ///< 3 control, 4 user-defined, 5 unused, 6 byte)
  std::vector<std::string> merges;   ///< tokenizer.ggml.merges ("left right")
  std::optional<std::int64_t> bos_id, eos_id, unk_id, eot_id, eom_id;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
};

/// The TokenizerSpec for a GGUF vocabulary. Throws Error(unsupported, "tokenizer") for a model
/// or pre-tokenizer type loom does not implement, Error(format, "tokenizer") for inconsistent
/// data (sizes, ids, a merge naming an unknown token). `source` names the file in messages.
inline TokenizerSpec gguf_tokenizer_spec(const GgufVocab& v, const std::string& source) {
  auto bad = [&](const auto&... parts) { fail(ErrorKind::format, "tokenizer", "'", source, "': ", parts...); };
  TokenizerSpec s;
  s.source = source;
  const std::size_t n = v.tokens.size();
  if (n == 0) bad("tokenizer.ggml.tokens is empty");
  s.pieces = v.tokens;
  if (!v.token_types.empty()) {
    if (v.token_types.size() != n) bad("tokenizer.ggml.token_type has ", v.token_types.size(), " entries for ", n, " tokens");
    s.types.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      switch (v.token_types[i]) {
        case 1: s.types[i] = TokenType::normal; break;
        case 2: s.types[i] = TokenType::unknown; break;
        case 3: s.types[i] = TokenType::control; break;
        case 4: s.types[i] = TokenType::user_defined; break;
        case 5: s.types[i] = TokenType::unused; break;
        case 6: s.types[i] = TokenType::byte; break;
        default: bad("tokenizer.ggml.token_type[", i, "] = ", v.token_types[i], " is not a known token type");
      }
    }
  }
  auto id_of = [&](const std::optional<std::int64_t>& id, const char* key) -> std::int32_t {
    if (!id) return -1;
    if (*id < 0 || std::uint64_t(*id) >= n) bad(key, " = ", *id, " is outside the vocabulary [0, ", n, ")");
    return std::int32_t(*id);
  };
  s.bos_id = id_of(v.bos_id, "tokenizer.ggml.bos_token_id");
  s.eos_id = id_of(v.eos_id, "tokenizer.ggml.eos_token_id");
  s.unk_id = id_of(v.unk_id, "tokenizer.ggml.unknown_token_id");
  for (const auto& [id, key] : {std::pair{v.eot_id, "tokenizer.ggml.eot_token_id"}, std::pair{v.eom_id, "tokenizer.ggml.eom_token_id"}})
    if (const std::int32_t e = id_of(id, key); e >= 0 && e != s.eos_id) s.eog_ids.push_back(e);

  bool add_bos = false;
  if (v.model == "llama") {
    if (v.scores.size() != n) bad("tokenizer.ggml.scores has ", v.scores.size(), " entries for ", n, " tokens");
    s.scores = v.scores;
    s.merge_mode = MergeMode::scores;
    s.byte_fallback = true;
    const bool prefix = v.add_space_prefix.value_or(true);
    const std::string marker = "\xE2\x96\x81";  // ▁
    if (prefix) s.normalizers.push_back({NormalizerStep::Kind::prepend, marker, {}});
    s.normalizers.push_back({NormalizerStep::Kind::replace, " ", marker});
    s.decoder.space_marker = marker;
    s.decoder.byte_tokens = true;
    s.decoder.strip = prefix ? StripSpace::first_piece : StripSpace::none;
    add_bos = v.add_bos.value_or(true);
  } else if (v.model == "gpt2") {
    // The split rule named by tokenizer.ggml.pre (bpe_pre_types.hpp): each regex isolates its
    // matches in turn, then the pieces go to the byte-level alphabet.
    const BpePreType* pre = find_bpe_pre_type(v.pre);
    if (!pre)
      fail(ErrorKind::unsupported, "tokenizer", "'", source, "': tokenizer.ggml.pre '", v.pre,
           "' is not a pre-tokenizer loom knows (known: ", bpe_pre_type_names(), ")");
    for (const std::string_view regex : pre->regexes) {
      PreTokenizerStep split;
      split.kind = PreTokenizerStep::Kind::split;
      split.regex = regex;
      s.pre_tokenizers.push_back(split);
    }
    PreTokenizerStep bytes;
    bytes.kind = PreTokenizerStep::Kind::byte_level;
    bytes.use_regex = false;
    s.pre_tokenizers.push_back(bytes);
    s.ignore_merges = pre->ignore_merges;
    add_bos = pre->add_bos;
    s.decoder.byte_level = true;
    add_bos = v.add_bos.value_or(add_bos);
    // Merges: "left right", split at the one space (byte-level pieces never contain ' ').
    std::unordered_map<std::string_view, std::int32_t> ids;
    ids.reserve(n);
    for (std::size_t i = 0; i < n; ++i) ids.emplace(s.pieces[i], std::int32_t(i));
    s.merges.reserve(v.merges.size());
    for (std::size_t r = 0; r < v.merges.size(); ++r) {
      const std::string_view m = v.merges[r];
      const auto sp = m.find(' ');
      if (sp == std::string_view::npos || m.find(' ', sp + 1) != std::string_view::npos)
        bad("tokenizer.ggml.merges[", r, "] = '", m, "' is not two tokens separated by one space");
      const auto a = ids.find(m.substr(0, sp)), b = ids.find(m.substr(sp + 1));
      if (a == ids.end() || b == ids.end())
        bad("tokenizer.ggml.merges[", r, "] = '", m, "' names a token that is not in the vocabulary");
      s.merges.emplace_back(a->second, b->second);
    }
  } else {
    fail(ErrorKind::unsupported, "tokenizer", "'", source, "': tokenizer.ggml.model '", v.model, "' (only gpt2 and llama are implemented)");
  }
  if (add_bos && s.bos_id >= 0) s.prefix_ids = {s.bos_id};
  if (v.add_eos.value_or(false) && s.eos_id >= 0) s.suffix_ids = {s.eos_id};
  // Other end-of-generation control tokens by their usual names (as llama.cpp does).
  for (std::size_t i = 0; i < n; ++i) {
    if (s.types.empty() || s.types[i] != TokenType::control || std::int32_t(i) == s.eos_id) continue;
    for (const char* name : {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"})
      if (s.pieces[i] == name) s.eog_ids.push_back(std::int32_t(i));
  }
  return s;
}

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

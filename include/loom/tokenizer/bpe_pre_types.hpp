// The BPE pre-tokenizer types a GGUF names in `tokenizer.ggml.pre`, as data.
//
// A byte-level BPE vocabulary in GGUF (`tokenizer.ggml.model = gpt2`) does not carry its split
// rule; `tokenizer.ggml.pre` names it, and every reader must know what each name means. This is
// loom's table of the names llama.cpp knows (src/llama-vocab.cpp, ggml-org/llama.cpp@c392e50,
// 2025-02): one row per group of names that share a regex list and settings. A text is cut by
// the first regex, each piece by the next, and so on (each regex isolates its matches, HF's
// `Split` with behavior Isolated); the pieces are then mapped to the byte-level alphabet and
// merged by BPE.
//
// Where llama.cpp rewrote a model's regex for std::regex (which lacks \p{...} and (?i:)), the
// row holds the original from the model's tokenizer.json, which loom's matcher runs as written:
// LLaMA-3's and Qwen2's (?i:'s|...) contractions, Tekken's \p{Lu}/\p{Ll} classes. Where llama.cpp
// wrote GPT-2's pattern without its final `|\s+`, the row has it back (the two split every text
// identically: the last alternative only takes the single whitespace characters the others leave,
// which llama.cpp keeps as pieces of their own anyway).
//
// Columns besides the regexes:
//   ignore_merges  a word that is itself a vocabulary piece is one token, without merging
//   add_bos        whether BOS is added when the GGUF has no tokenizer.ggml.add_bos_token key
//   clean_spaces   llama.cpp's detokenizer removes the space before punctuation and
//                  contractions (" ." → "."); loom's decode is the exact inverse of encode and
//                  does not, the value is recorded for users who want that cleanup
//   models         examples of models converted with this name
//   vectors        the llama.cpp test vocabularies (models/ggml-vocab-NAME.gguf.inp/.out) that
//                  exercise this row; tests/test_tokenizer.cpp runs each one whose vocabulary is
//                  at hand (the README says which ran and passed)
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "loom/tokenizer/pretokenizer.hpp"

namespace loom {

/// One row of the pre-tokenizer table.
struct BpePreType {
  std::span<const std::string_view> names;
  std::span<const std::string_view> regexes;
  bool ignore_merges = false;
  bool add_bos = false;
  bool clean_spaces = true;
  std::string_view models = {};
  std::string_view vectors = {};
};

namespace detail::pre {

// ---- the regexes -------------------------------------------------------------------------------

inline constexpr std::string_view kGpt2 = kGpt2SplitRegex;
inline constexpr std::string_view kLlama3 = kLlama3SplitRegex;
inline constexpr std::string_view kQwen2 = kQwen2SplitRegex;
inline constexpr std::string_view kDigit = R"(\p{N})";
/// DeepSeek's CJK runs: CJK Unified Ideographs 一-龥, U+0800..U+4E00, Hangul 가..U+D7FF.
inline constexpr std::string_view kDeepseekCjk = "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+";
/// Bloom / Poro / GPT3-Finnish: everything up to one of ( \s | . , ! ? … 。 ， 、 । ۔ ، ).
inline constexpr std::string_view kBloom = " ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+";

inline constexpr std::string_view kDefault[] = {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"};
inline constexpr std::string_view kGpt2List[] = {kGpt2};
inline constexpr std::string_view kLlama3List[] = {kLlama3};
inline constexpr std::string_view kQwen2List[] = {kQwen2};
inline constexpr std::string_view kDigitsThenGpt2[] = {kDigit, kGpt2};
inline constexpr std::string_view kFalcon[] = {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"};
// DeepSeek-LLM's letter class: the Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee, ... letter
// ranges of its tokenizer.json, verbatim.
inline constexpr std::string_view kDeepseekLlm[] = {
    "[\r\n]",
    "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373"
    "\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F"
    "\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77"
    "\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D"
    "\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4"
    "\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139"
    "\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D"
    "\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A"
    "\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2"
    "\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+",
    "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+",
    R"(\s+$)",
    kDeepseekCjk,
    R"(\p{N}+)",
};
inline constexpr std::string_view kDeepseekCoder[] = {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, kDigit};
// DeepSeek-V3: digits in threes, CJK and kana runs, then a LLaMA-3-like rule with \p{M} and \p{S}.
inline constexpr std::string_view kDeepseekV3[] = {
    R"(\p{N}{1,3})",
    "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
};
inline constexpr std::string_view kBloomList[] = {kBloom};
inline constexpr std::string_view kViking[] = {kBloom, kDigit};
// Tekken (Mistral-Nemo): an upper-case run may lead a lower-case run (camelCase splits apart).
inline constexpr std::string_view kTekken[] = {
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
};
// Chameleon: its sentinel and image tokens, tabs/newlines and double spaces, digits, punctuation.
inline constexpr std::string_view kChameleon[] = {
    "<sentinel:[0-9]+>",
    "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
    R"(([\t\n]|    |  ))",
    kDigit,
    R"([\p{P}!-/:-@\[-`{-~])",
    kGpt2,
};

// ---- the names ---------------------------------------------------------------------------------

inline constexpr std::string_view nDefault[] = {"default", ""};
inline constexpr std::string_view nGpt2[] = {"gpt-2", "phi-2", "roberta-bpe", "mpt", "olmo", "jais", "gigachat",
                                             "jina-es", "jina-de", "jina-v1-en", "jina-v2-es", "jina-v2-de",
                                             "jina-v2-code"};
inline constexpr std::string_view nLlama3[] = {"llama-bpe", "llama3", "llama-v3", "falcon3"};
inline constexpr std::string_view nDbrx[] = {"dbrx", "smaug-bpe", "chatglm-bpe"};
inline constexpr std::string_view nQwen2[] = {"qwen2", "deepseek-r1-qwen"};
inline constexpr std::string_view nStablelm2[] = {"stablelm2", "megrez"};
inline constexpr std::string_view nStarcoder[] = {"starcoder", "refact", "codeshell", "exaone", "minerva-7b"};
inline constexpr std::string_view nCommandR[] = {"command-r", "smollm"};
inline constexpr std::string_view nFalcon[] = {"falcon"};
inline constexpr std::string_view nDeepseekLlm[] = {"deepseek-llm"};
inline constexpr std::string_view nDeepseekCoder[] = {"deepseek-coder"};
inline constexpr std::string_view nDeepseekV3[] = {"deepseek-v3"};
inline constexpr std::string_view nPoro[] = {"poro-chat"};
inline constexpr std::string_view nBloom[] = {"bloom", "gpt3-finnish"};
inline constexpr std::string_view nViking[] = {"viking"};
inline constexpr std::string_view nTekken[] = {"tekken"};
inline constexpr std::string_view nChameleon[] = {"chameleon"};

}  // namespace detail::pre

/// Every BPE pre-tokenizer type loom knows, in the order of the README table.
inline constexpr BpePreType kBpePreTypes[] = {
    {.names = detail::pre::nGpt2, .regexes = detail::pre::kGpt2List,
     .models = "GPT-2, Phi-2, RoBERTa, MPT, OLMo, JAIS, Jina, GigaChat", .vectors = "gpt-2, mpt, roberta-bpe"},
    {.names = detail::pre::nDefault, .regexes = detail::pre::kDefault,
     .models = "GGUFs converted without a pre-tokenizer name (GPT-NeoX, old conversions)"},
    {.names = detail::pre::nLlama3, .regexes = detail::pre::kLlama3List, .ignore_merges = true, .add_bos = true,
     .models = "LLaMA-3/3.1/3.2, Falcon3", .vectors = "llama-bpe"},
    {.names = detail::pre::nDbrx, .regexes = detail::pre::kLlama3List, .models = "DBRX, Smaug, ChatGLM-4"},
    {.names = detail::pre::nQwen2, .regexes = detail::pre::kQwen2List, .clean_spaces = false,
     .models = "Qwen1.5/2/2.5, DeepSeek-R1-Distill-Qwen", .vectors = "qwen2, deepseek-r1-qwen"},
    {.names = detail::pre::nStablelm2, .regexes = detail::pre::kQwen2List, .models = "StableLM-2, Megrez"},
    {.names = detail::pre::nStarcoder, .regexes = detail::pre::kDigitsThenGpt2,
     .models = "StarCoder/StarCoder2, Refact, CodeShell, EXAONE, Minerva", .vectors = "starcoder, refact"},
    {.names = detail::pre::nCommandR, .regexes = detail::pre::kDigitsThenGpt2, .clean_spaces = false,
     .models = "Command-R, SmolLM/SmolLM2", .vectors = "command-r"},
    {.names = detail::pre::nFalcon, .regexes = detail::pre::kFalcon,
     .models = "Falcon (7B/40B/180B)", .vectors = "falcon"},
    {.names = detail::pre::nDeepseekLlm, .regexes = detail::pre::kDeepseekLlm, .clean_spaces = false,
     .models = "DeepSeek-LLM, DeepSeek-V2", .vectors = "deepseek-llm"},
    {.names = detail::pre::nDeepseekCoder, .regexes = detail::pre::kDeepseekCoder, .clean_spaces = false,
     .models = "DeepSeek-Coder", .vectors = "deepseek-coder"},
    {.names = detail::pre::nDeepseekV3, .regexes = detail::pre::kDeepseekV3, .clean_spaces = false,
     .models = "DeepSeek-V3, DeepSeek-R1"},
    {.names = detail::pre::nPoro, .regexes = detail::pre::kBloomList, .clean_spaces = false, .models = "Poro"},
    {.names = detail::pre::nBloom, .regexes = detail::pre::kBloomList, .models = "BLOOM, GPT3-Finnish"},
    {.names = detail::pre::nViking, .regexes = detail::pre::kViking, .clean_spaces = false, .models = "Viking"},
    {.names = detail::pre::nTekken, .regexes = detail::pre::kTekken, .ignore_merges = true, .add_bos = true,
     .clean_spaces = false, .models = "Mistral-Nemo, Ministral, Pixtral"},
    {.names = detail::pre::nChameleon, .regexes = detail::pre::kChameleon, .add_bos = true, .clean_spaces = false,
     .models = "Chameleon", .vectors = "chameleon"},
};

/// The row for `tokenizer.ggml.pre` = `name`, or nullptr when loom does not know the name.
inline const BpePreType* find_bpe_pre_type(std::string_view name) {
  for (const auto& row : kBpePreTypes)
    for (const auto n : row.names)
      if (n == name) return &row;
  return nullptr;
}

/// The known names, comma-separated (for error messages).
inline std::string bpe_pre_type_names() {
  std::string out;
  for (const auto& row : kBpePreTypes)
    for (const auto n : row.names) {
      if (n.empty()) continue;
      if (!out.empty()) out += ", ";
      out += n;
    }
  return out;
}

/// The first row whose regex list is `regexes` (the name to write when exporting a tokenizer), or
/// nullptr.
inline const BpePreType* find_bpe_pre_type(std::span<const std::string> regexes) {
  for (const auto& row : kBpePreTypes) {
    if (row.regexes.size() != regexes.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < regexes.size() && same; ++i) same = row.regexes[i] == regexes[i];
    if (same) return &row;
  }
  return nullptr;
}

}  // namespace loom

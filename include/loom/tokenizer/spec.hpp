// TokenizerSpec: everything a Tokenizer is built from, as plain data — the vocabulary and its
// token types, the merge rule, special tokens, normalization, pre-tokenization and decoding
// settings. Loaders (io/tokenizer_json.hpp, io/llama2c_tokenizer.hpp, io/gguf_tokenizer.hpp) fill
// it in; the Tokenizer (tokenizer.hpp) validates it.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "loom/tokenizer/pretokenizer.hpp"

namespace loom {

/// What a vocabulary entry is (the GGUF / SentencePiece token types).
enum class TokenType : std::uint8_t {
  normal,        ///< ordinary piece produced by BPE
  unknown,       ///< the `<unk>` token
  control,       ///< BOS, EOS and other control tokens: matched in text only with parse_special,
                 ///< rendered by decode only when asked
  user_defined,  ///< added token: always matched in text, rendered verbatim
  unused,        ///< reserved slot, never produced by encode
  byte,          ///< `<0xNN>` byte-fallback token
};

/// How the BPE engine prioritizes merges.
enum class MergeMode {
  ranks,   ///< an explicit ranked merge list (lower rank merges first)
  scores,  ///< SentencePiece: merge into the vocabulary piece with the highest score
};

/// One text normalization step, applied to every text fragment (not to special tokens).
struct NormalizerStep {
  enum class Kind {
    prepend,  ///< prepend `text` to a non-empty fragment (HF `Prepend`, SentencePiece dummy prefix)
    replace,  ///< replace every occurrence of `text` by `with` (HF `Replace` with a String pattern)
    nfc,      ///< Unicode NFC. Only text that is already NFC is accepted (UAX #15 quick check):
              ///< other input → Error(unsupported) naming the code point; loom has no composer.
  };
  Kind kind = Kind::prepend;
  std::string text;
  std::string with;
};

/// One pre-tokenization step: splits words into smaller words (and may transform them).
struct PreTokenizerStep {
  enum class Kind {
    split,       ///< split with a regex (HF `Split`, `Digits`, `Punctuation`; llama.cpp's regex lists)
    byte_level,  ///< optional GPT-2 regex split, then map bytes to the byte-level alphabet
    metaspace,   ///< spaces → replacement, optional prefix, optional split before each marker
  };
  enum class Prepend { always, first, never };
  Kind kind = Kind::split;
  std::string regex = std::string(kGpt2SplitRegex);  ///< split; byte_level (when use_regex)
  SplitBehavior behavior = SplitBehavior::isolated;  ///< split
  bool invert = false;                               ///< split: the gaps are the matches
  bool use_regex = true;                             ///< byte_level
  bool add_prefix_space = false;                     ///< byte_level: prepend ' ' unless already there
  std::string replacement = "\xE2\x96\x81";          ///< metaspace: "▁"
  Prepend prepend = Prepend::always;                 ///< metaspace
  bool split = true;                                 ///< metaspace
};

/// Which leading space decoding removes (the one the dummy prefix / prefix space added).
enum class StripSpace {
  none,         ///< keep everything (byte-level models)
  first_piece,  ///< the first non-empty piece of a sequence (HF Strip / Metaspace, llama.cpp)
  after_bos,    ///< a piece right after BOS (llama2.c run.c)
};

/// How pieces turn back into bytes.
struct DecoderSpec {
  bool byte_level = false;    ///< normal pieces are byte-level text
  std::string space_marker;   ///< replaced by ' ' in normal pieces (e.g. "▁"); empty: none
  bool byte_tokens = true;    ///< byte-type `<0xNN>` pieces decode to the raw byte
  StripSpace strip = StripSpace::none;
};

/// Optional per-token matching rules for added tokens.
struct AddedTokenRule {
  std::int32_t id = -1;
  bool lstrip = false;  ///< swallow whitespace before the token when it is matched
  bool rstrip = false;  ///< swallow whitespace after it
};

/// Everything a Tokenizer is built from. Loaders fill it in; the Tokenizer validates it.
struct TokenizerSpec {
  std::string source;                ///< file name or description, for error messages
  std::vector<std::string> pieces;   ///< id → piece text in the model's alphabet
  std::vector<float> scores;         ///< empty, or one per id (MergeMode::scores)
  std::vector<TokenType> types;      ///< empty (all normal), or one per id
  MergeMode merge_mode = MergeMode::ranks;
  /// Ranked merges (index = rank) as (left id, right id); the result is the id of the
  /// concatenated piece, which must exist.
  std::vector<std::pair<std::int32_t, std::int32_t>> merges;
  bool byte_fallback = false;  ///< unknown characters → byte tokens
  bool fuse_unk = false;       ///< consecutive unknown characters → one unknown token
  bool ignore_merges = false;  ///< a word that is itself a piece is taken as is (LLaMA-3)
  /// Byte-fallback ids for bytes 0..255; empty: looked up as `<0xNN>` pieces.
  std::vector<std::int32_t> byte_fallback_ids;
  std::int32_t unk_id = -1;
  std::int32_t bos_id = -1;
  std::int32_t eos_id = -1;
  std::vector<std::int32_t> prefix_ids;  ///< added before the text by encode(add_special)
  std::vector<std::int32_t> suffix_ids;  ///< added after it
  std::vector<std::int32_t> eog_ids;     ///< end-of-generation tokens besides eos
  std::vector<AddedTokenRule> added_rules;
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  DecoderSpec decoder;
};

}  // namespace loom

// loom::Tokenizer — one BPE engine for every supported vocabulary (streaming decode:
// stream_decoder.hpp).
//
// A Tokenizer is built from a plain `TokenizerSpec` (spec.hpp) that loaders fill in
// (tokenizer.json, llama2.c tokenizer.bin, GGUF metadata). The pipeline of `encode` is:
//
//   text ─ split out added/special tokens ─▶ text fragments
//        ─ normalizers (Prepend, Replace) ─ pre-tokenizers (Split, ByteLevel, Metaspace, Digits)
//        ─▶ words ─ BPE ─▶ ids     (+ BOS/EOS from the post-processor rule when add_special)
//
// The BPE engine starts from one symbol per character of a word and repeatedly merges the
// adjacent pair with the best priority until none applies. The priority is either
//   * a rank (HF tokenizer.json, GGUF `gpt2`): the merge list's index, lower first; or
//   * a score (SentencePiece: llama2.c tokenizer.bin, GGUF `llama`): the pair whose concatenation
//     is a vocabulary piece, the piece with the highest score first.
// Ties go to the leftmost pair. A character that is not in the vocabulary becomes byte tokens
// (`<0xNN>`, byte fallback), or the unknown token (consecutive ones fused with fuse_unk), or is
// dropped when the vocabulary has neither (as HF does).
//
// Pieces are stored in the model's alphabet: byte-level text (`Ġhello`) for GPT-2-style models,
// `▁hello` for SentencePiece, plain bytes for llama2.c. The decoder settings map them back.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "loom/error.hpp"
#include "loom/tokenizer/pretokenizer.hpp"
#include "loom/tokenizer/spec.hpp"
#include "loom/tokenizer/unicode.hpp"

namespace loom {

namespace detail {

/// Hash that lets unordered_map<std::string, ...> be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

/// The byte a `<0xNN>` piece stands for, or -1 when `piece` is not of that form.
inline int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]), lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/// Decoding state shared by one-shot and streaming decode, so both give identical bytes.
struct DecodeState {
  bool emitted = false;     // a non-empty piece has been produced
  std::int32_t prev = -1;   // previous token id
};

}  // namespace detail

/// A BPE tokenizer: vocabulary, merge rule, special tokens, normalization, pre-tokenization and
/// decoding. Immutable after construction; `encode`/`decode` are const and thread-safe.
class Tokenizer {
 public:
  Tokenizer() = default;

  /// Builds a tokenizer from `spec`. Throws Error(format, "tokenizer") naming spec.source when the
  /// spec is inconsistent (ids out of range, a merge whose result is not a piece, ...).
  explicit Tokenizer(TokenizerSpec spec) : s_(std::move(spec)) { build(); }

  /// Token ids for `text`. `add_special`: add BOS/EOS as the tokenizer prescribes.
  /// `parse_special`: recognize control tokens (e.g. `<|endoftext|>`, `<s>`) written in the text;
  /// when false they are tokenized as plain text. User-defined added tokens are always recognized.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special = true,
                                   bool parse_special = false) const {
    std::vector<std::int32_t> out;
    if (add_special) out.insert(out.end(), s_.prefix_ids.begin(), s_.prefix_ids.end());
    for (const auto& frag : split_special(text, parse_special)) {
      if (frag.id >= 0) {
        out.push_back(frag.id);
      } else {
        encode_fragment(frag.text, frag.first, out);
      }
    }
    if (add_special) out.insert(out.end(), s_.suffix_ids.begin(), s_.suffix_ids.end());
    return out;
  }

  /// The bytes `ids` stand for (inverse of encode). Control tokens contribute nothing unless
  /// `render_special`. The leading space added by a dummy prefix is removed as the decoder rule
  /// says. Returns raw bytes (not necessarily valid UTF-8: encode round-trips invalid input).
  /// Throws Error(invalid_argument) for an id outside the vocabulary.
  std::string decode(std::span<const std::int32_t> ids, bool render_special = false) const {
    std::string out;
    detail::DecodeState st;
    for (const std::int32_t id : ids) append_decoded(st, id, render_special, out);
    return out;
  }

  /// The bytes token `id` contributes on its own (e.g. `<0x0A>` → "\n", `Ġworld` → " world"),
  /// without any leading-space stripping. Control tokens give "" unless `render_special`.
  std::string token_to_piece(std::int32_t id, bool render_special = false) const {
    std::string out;
    append_piece(id, render_special, out);
    return out;
  }

  std::int32_t vocab_size() const { return std::int32_t(s_.pieces.size()); }
  std::int32_t bos_id() const { return s_.bos_id; }  ///< -1 when absent
  std::int32_t eos_id() const { return s_.eos_id; }  ///< -1 when absent
  std::int32_t unk_id() const { return s_.unk_id; }  ///< -1 when absent
  /// Whether encode(add_special = true) starts with BOS.
  bool add_bos() const { return !s_.prefix_ids.empty() && s_.prefix_ids.front() == s_.bos_id; }
  /// Whether encode(add_special = true) ends with EOS.
  bool add_eos() const { return !s_.suffix_ids.empty() && s_.suffix_ids.back() == s_.eos_id; }
  /// The tokens encode(add_special = true) puts before / after the text.
  const std::vector<std::int32_t>& prefix_ids() const { return s_.prefix_ids; }
  const std::vector<std::int32_t>& suffix_ids() const { return s_.suffix_ids; }

  /// Whether generation should stop at `id`: EOS and the other end-of-generation tokens.
  bool is_end_of_generation(std::int32_t id) const {
    if (id < 0) return false;
    return id == s_.eos_id || std::find(s_.eog_ids.begin(), s_.eog_ids.end(), id) != s_.eog_ids.end();
  }

  /// The stored piece text of `id` (model alphabet, e.g. `Ġworld`, `▁world`).
  const std::string& piece(std::int32_t id) const { return s_.pieces[checked(id)]; }
  TokenType token_type(std::int32_t id) const { return s_.types[checked(id)]; }
  float score(std::int32_t id) const { return s_.scores.empty() ? 0.0f : s_.scores[checked(id)]; }
  /// The id of the stored piece `piece`, or -1.
  std::int32_t piece_to_id(std::string_view piece) const {
    const auto it = piece_to_id_.find(piece);
    return it == piece_to_id_.end() ? -1 : it->second;
  }
  const TokenizerSpec& spec() const { return s_; }

  /// Decoding step shared with StreamDecoder: appends the bytes of `id` to `out`, applying the
  /// leading-space rule with the state `st`.
  void append_decoded(detail::DecodeState& st, std::int32_t id, bool render_special, std::string& out) const {
    const std::size_t start = out.size();
    append_piece(id, render_special, out);
    if (out.size() > start) {
      const bool strip = (s_.decoder.strip == StripSpace::first_piece && !st.emitted) ||
                         (s_.decoder.strip == StripSpace::after_bos && st.prev >= 0 && st.prev == s_.bos_id);
      if (strip && out[start] == ' ') out.erase(start, 1);
      st.emitted = true;
    }
    st.prev = id;
  }

 private:
  struct Fragment {
    std::string_view text;
    std::int32_t id;  // >= 0: a matched added token
    bool first;       // fragment starts the text
  };
  struct MergeInfo {
    std::int32_t rank;
    std::int32_t result;
  };
  struct Symbol {
    std::int32_t id;
    std::int32_t prev, next;
    std::uint32_t start, len;  // byte span in the word
    bool mergeable;
  };
  struct Candidate {
    double priority;  // lower merges first
    std::int32_t left, right;
    std::uint32_t left_len, right_len;
    std::uint32_t pos;
    std::int32_t result;
    bool operator<(const Candidate& o) const {  // for std::priority_queue (max-heap): invert
      if (priority != o.priority) return priority > o.priority;
      return pos > o.pos;
    }
  };

  static std::string code_point_name(char32_t cp) {
    static const char* hex = "0123456789ABCDEF";
    std::string digits;
    for (; cp || digits.size() < 4; cp >>= 4) digits.insert(digits.begin(), hex[cp & 15]);
    return "U+" + digits;
  }

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b);
  }

  std::size_t checked(std::int32_t id) const {
    if (id < 0 || id >= vocab_size())
      fail(ErrorKind::invalid_argument, "tokenizer", "token id ", id, " is outside the vocabulary [0, ",
           vocab_size(), ") of '", s_.source, "'");
    return std::size_t(id);
  }

  [[noreturn]] void bad_spec(const std::string& what) const {
    fail(ErrorKind::format, "tokenizer", "'", s_.source, "': ", what);
  }

  void check_id(std::int32_t id, std::string_view what, bool allow_absent) const {
    if ((allow_absent && id == -1) || (id >= 0 && id < vocab_size())) return;
    bad_spec(detail::cat(what, " ", id, " is outside the vocabulary [0, ", vocab_size(), ")"));
  }

  void build() {
    const std::size_t n = s_.pieces.size();
    if (n == 0) bad_spec("empty vocabulary");
    if (n > std::size_t(INT32_MAX)) bad_spec("vocabulary too large");
    if (s_.types.empty()) s_.types.assign(n, TokenType::normal);
    if (s_.types.size() != n) bad_spec(detail::cat(s_.types.size(), " token types for ", n, " pieces"));
    if (!s_.scores.empty() && s_.scores.size() != n)
      bad_spec(detail::cat(s_.scores.size(), " scores for ", n, " pieces"));
    if (s_.merge_mode == MergeMode::scores && s_.scores.empty()) bad_spec("score-based merges need scores");
    for (std::size_t i = 0; i < s_.scores.size(); ++i)
      if (!std::isfinite(s_.scores[i])) bad_spec(detail::cat("token ", i, " has a non-finite score"));
    check_id(s_.unk_id, "unknown token id", true);
    check_id(s_.bos_id, "BOS id", true);
    check_id(s_.eos_id, "EOS id", true);
    for (auto id : s_.prefix_ids) check_id(id, "prefix token id", false);
    for (auto id : s_.suffix_ids) check_id(id, "suffix token id", false);
    for (auto id : s_.eog_ids) check_id(id, "end-of-generation token id", false);
    for (const auto& r : s_.added_rules) check_id(r.id, "added token id", false);

    // Split rules, compiled once (a pattern loom cannot run fails here, not at encode time).
    splitters_.clear();
    for (const auto& p : s_.pre_tokenizers) {
      const bool regex = p.kind == PreTokenizerStep::Kind::split ||
                         (p.kind == PreTokenizerStep::Kind::byte_level && p.use_regex);
      splitters_.push_back(regex ? std::optional<Splitter>(std::in_place, p.regex) : std::nullopt);
    }

    piece_to_id_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) piece_to_id_.emplace(s_.pieces[i], std::int32_t(i));  // first wins

    merges_.reserve(s_.merges.size());
    for (std::size_t r = 0; r < s_.merges.size(); ++r) {
      const auto [a, b] = s_.merges[r];
      check_id(a, detail::cat("merge ", r, ": left id"), false);
      check_id(b, detail::cat("merge ", r, ": right id"), false);
      const std::int32_t result = piece_to_id(s_.pieces[a] + s_.pieces[b]);
      if (result < 0)
        bad_spec(detail::cat("merge ", r, " ('", s_.pieces[a], "' '", s_.pieces[b], "'): the merged piece is not in the vocabulary"));
      merges_.emplace(pair_key(a, b), MergeInfo{std::int32_t(r), result});  // first (best) rank wins
    }

    byte_ids_.fill(-1);
    if (!s_.byte_fallback_ids.empty()) {
      if (s_.byte_fallback_ids.size() != 256) bad_spec("byte_fallback_ids must hold 256 ids");
      for (int b = 0; b < 256; ++b) {
        check_id(s_.byte_fallback_ids[b], "byte-fallback id", true);
        byte_ids_[b] = s_.byte_fallback_ids[b];
      }
    } else {
      static const char* hex = "0123456789ABCDEF";
      for (int b = 0; b < 256; ++b) {
        const std::string p = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        byte_ids_[b] = piece_to_id(p);
      }
    }

    // Added tokens matched in the text, by first byte, longest first.
    std::unordered_map<std::int32_t, AddedTokenRule> rules;
    for (const auto& r : s_.added_rules) rules[r.id] = r;
    for (std::size_t i = 0; i < n; ++i) {
      const TokenType t = s_.types[i];
      if (s_.pieces[i].empty()) continue;
      if (t != TokenType::control && t != TokenType::user_defined && t != TokenType::unknown) continue;
      Special sp{std::int32_t(i), t == TokenType::user_defined, false, false};
      if (auto it = rules.find(sp.id); it != rules.end()) {
        sp.lstrip = it->second.lstrip;
        sp.rstrip = it->second.rstrip;
      }
      specials_[static_cast<unsigned char>(s_.pieces[i][0])].push_back(sp);
    }
    for (auto& v : specials_)
      std::stable_sort(v.begin(), v.end(), [&](const Special& x, const Special& y) {
        return s_.pieces[x.id].size() > s_.pieces[y.id].size();
      });
  }

  // ---- added / special tokens ----------------------------------------------------------------

  struct Special {
    std::int32_t id;
    bool always;  // user-defined: matched even without parse_special
    bool lstrip, rstrip;
  };

  static bool ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

  std::vector<Fragment> split_special(std::string_view text, bool parse_special) const {
    std::vector<Fragment> frags;
    std::size_t text_start = 0;
    std::size_t i = 0;
    while (i < text.size()) {
      const Special* hit = nullptr;
      for (const Special& sp : specials_[static_cast<unsigned char>(text[i])]) {
        if (!sp.always && !parse_special) continue;
        const std::string& p = s_.pieces[sp.id];
        if (text.compare(i, p.size(), p) == 0) {
          hit = &sp;
          break;  // longest first
        }
      }
      if (!hit) {
        ++i;
        continue;
      }
      std::size_t text_end = i;
      if (hit->lstrip)
        while (text_end > text_start && ascii_space(text[text_end - 1]))
          --text_end;
      if (text_end > text_start) frags.push_back({text.substr(text_start, text_end - text_start), -1, text_start == 0});
      frags.push_back({{}, hit->id, false});
      i += s_.pieces[hit->id].size();
      if (hit->rstrip)
        while (i < text.size() && ascii_space(text[i])) ++i;
      text_start = i;
    }
    if (text_start < text.size()) frags.push_back({text.substr(text_start), -1, text_start == 0});
    return frags;
  }

  // ---- normalization and pre-tokenization ----------------------------------------------------

  static void replace_all(std::string& s, std::string_view from, std::string_view to) {
    if (from.empty()) return;
    std::string out;
    std::size_t pos = 0;
    for (std::size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
      out.append(s, pos, hit - pos);
      out += to;
    }
    if (pos == 0) return;
    out.append(s, pos);
    s = std::move(out);
  }

  std::vector<std::string> pre_tokenize(std::string text, bool first) const {
    for (const auto& n : s_.normalizers) {
      if (n.kind == NormalizerStep::Kind::prepend) {
        if (!text.empty()) text.insert(0, n.text);
      } else if (n.kind == NormalizerStep::Kind::nfc) {
        char32_t culprit = 0;
        if (unicode::nfc_quick_check(text, &culprit) != unicode::NfcQuickCheck::yes)
          fail(ErrorKind::unsupported, "tokenizer", "'", s_.source, "': the text needs NFC normalization (at ",
               code_point_name(culprit), "), which loom does not implement; normalize it before encoding");
      } else {
        replace_all(text, n.text, n.with);
      }
    }
    std::vector<std::string> words;
    if (!text.empty()) words.push_back(std::move(text));
    for (std::size_t step = 0; step < s_.pre_tokenizers.size(); ++step) {
      const PreTokenizerStep& p = s_.pre_tokenizers[step];
      const std::optional<Splitter>& splitter = splitters_[step];
      std::vector<std::string> next;
      for (auto& w : words) {
        switch (p.kind) {
          case PreTokenizerStep::Kind::split:
            for (auto v : splitter->split(w, p.behavior, p.invert)) next.emplace_back(v);
            break;
          case PreTokenizerStep::Kind::byte_level: {
            if (p.add_prefix_space && (w.empty() || w.front() != ' ')) w.insert(0, 1, ' ');
            if (splitter) {
              for (auto v : splitter->split(w)) next.push_back(byte_level_encode(v));
            } else {
              next.push_back(byte_level_encode(w));
            }
            break;
          }
          case PreTokenizerStep::Kind::metaspace: {
            replace_all(w, " ", p.replacement);
            const bool prepend = p.prepend == PreTokenizerStep::Prepend::always ||
                                 (p.prepend == PreTokenizerStep::Prepend::first && first && &w == &words.front());
            if (prepend && w.compare(0, p.replacement.size(), p.replacement) != 0) w.insert(0, p.replacement);
            if (!p.split || p.replacement.empty()) {
              next.push_back(std::move(w));
              break;
            }
            // Split before every marker; the marker starts the next word (MergedWithNext).
            std::size_t start = 0;
            for (std::size_t hit = w.find(p.replacement, 1); hit != std::string::npos;
                 hit = w.find(p.replacement, hit + p.replacement.size())) {
              next.push_back(w.substr(start, hit - start));
              start = hit;
            }
            next.push_back(w.substr(start));
            break;
          }
        }
      }
      words = std::move(next);
    }
    return words;
  }

  void encode_fragment(std::string_view text, bool first, std::vector<std::int32_t>& out) const {
    for (const auto& w : pre_tokenize(std::string(text), first)) bpe(w, out);
  }

  // ---- the BPE engine ------------------------------------------------------------------------

  /// Whether the pair (a, b) may merge, and into what with which priority (lower first).
  bool lookup_merge(const std::string_view word, const Symbol& a, const Symbol& b, double& priority,
                    std::int32_t& result) const {
    if (!a.mergeable || !b.mergeable) return false;
    if (s_.merge_mode == MergeMode::ranks) {
      const auto it = merges_.find(pair_key(a.id, b.id));
      if (it == merges_.end()) return false;
      priority = it->second.rank;
      result = it->second.result;
      return true;
    }
    const std::int32_t id = piece_to_id(word.substr(a.start, a.len + b.len));
    if (id < 0) return false;
    const TokenType t = s_.types[id];
    if (t != TokenType::normal && t != TokenType::user_defined) return false;
    priority = -double(s_.scores[id]);
    result = id;
    return true;
  }

  void bpe(std::string_view word, std::vector<std::int32_t>& out) const {
    if (word.empty()) return;
    if (s_.ignore_merges) {
      if (const std::int32_t id = piece_to_id(word); id >= 0) {
        out.push_back(id);
        return;
      }
    }
    // Initial symbols: one per character (an invalid UTF-8 byte is a character of its own).
    std::vector<Symbol> sym;
    sym.reserve(word.size());
    for (std::size_t pos = 0; pos < word.size();) {
      const auto u = unicode::decode_utf8(word, pos);
      const std::int32_t id = piece_to_id(word.substr(pos, u.len));
      if (id >= 0) {
        sym.push_back({id, 0, 0, std::uint32_t(pos), u.len, true});
      } else if (s_.byte_fallback && std::all_of(word.begin() + pos, word.begin() + pos + u.len,
                                                 [&](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; })) {
        for (std::size_t k = 0; k < u.len; ++k)
          sym.push_back({byte_ids_[static_cast<unsigned char>(word[pos + k])], 0, 0, std::uint32_t(pos + k), 1, false});
      } else if (s_.unk_id >= 0) {
        if (s_.fuse_unk && !sym.empty() && sym.back().id == s_.unk_id && !sym.back().mergeable)
          sym.back().len += u.len;
        else
          sym.push_back({s_.unk_id, 0, 0, std::uint32_t(pos), u.len, false});
      }  // else: dropped, as HF does without an unknown token
      pos += u.len;
    }
    const std::int32_t n = std::int32_t(sym.size());
    for (std::int32_t i = 0; i < n; ++i) {
      sym[i].prev = i - 1;
      sym[i].next = i + 1 < n ? i + 1 : -1;
    }

    std::priority_queue<Candidate> queue;
    auto consider = [&](std::int32_t l) {
      if (l < 0) return;
      const std::int32_t r = sym[l].next;
      if (r < 0) return;
      double priority;
      std::int32_t result;
      if (lookup_merge(word, sym[l], sym[r], priority, result))
        queue.push({priority, l, r, sym[l].len, sym[r].len, sym[l].start, result});
    };
    for (std::int32_t i = 0; i + 1 < n; ++i) consider(i);

    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& l = sym[c.left];
      // Stale candidate: one side has been merged away or grown since it was queued.
      if (l.len != c.left_len || l.next != c.right || sym[c.right].len != c.right_len) continue;
      Symbol& r = sym[c.right];
      l.id = c.result;
      l.len += r.len;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = c.left;
      r.len = 0;  // dead
      consider(l.prev);
      consider(c.left);
    }
    for (std::int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
  }

  // ---- decoding ------------------------------------------------------------------------------

  void append_piece(std::int32_t id, bool render_special, std::string& out) const {
    const std::string& p = s_.pieces[checked(id)];
    switch (s_.types[std::size_t(id)]) {
      case TokenType::control:
        if (render_special) out += p;
        return;
      case TokenType::user_defined:
        out += p;
        return;
      case TokenType::byte:
        if (s_.decoder.byte_tokens) {
          if (const int b = detail::parse_byte_piece(p); b >= 0) {
            out += char(b);
            return;
          }
        }
        break;
      default:
        break;
    }
    if (s_.decoder.byte_level) {
      if (!byte_level_decode(p, out)) out += p;  // not byte-level text: raw (as HF does)
    } else if (!s_.decoder.space_marker.empty()) {
      std::string t = p;
      replace_all(t, s_.decoder.space_marker, " ");
      out += t;
    } else {
      out += p;
    }
  }

  TokenizerSpec s_;
  std::unordered_map<std::string, std::int32_t, detail::StringHash, std::equal_to<>> piece_to_id_;
  std::unordered_map<std::uint64_t, MergeInfo> merges_;
  std::array<std::int32_t, 256> byte_ids_{};
  std::array<std::vector<Special>, 256> specials_;
  std::vector<std::optional<Splitter>> splitters_;  // one per pre-tokenizer step
};

}  // namespace loom

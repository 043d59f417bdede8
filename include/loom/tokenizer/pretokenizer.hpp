// Pre-tokenization: splitting text into words before BPE, and the byte-level alphabet.
//
// Tokenizers describe their split rule as a regular expression. loom compiles any of them with
// its own matcher (regex.hpp); the three patterns nearly every model uses also have a hand-written
// matcher that follows the regex's leftmost-first alternation semantics exactly and is faster:
//
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:  as llama3 with \p{N} (one digit per word) instead of \p{N}{1,3}
//
// (A test runs both matchers on random text and requires identical words.) \s is Unicode
// White_Space, \p{L} / \p{N} are the General_Category groups (unicode.hpp). A byte that is not
// valid UTF-8 counts as one character outside \s, \p{L} and \p{N}.
//
// A split (HF `Split`, llama.cpp's regex lists) cuts a text into the pieces the pattern matches
// and the gaps between them; the behavior says what happens to the matched pieces.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/tokenizer/regex.hpp"
#include "loom/tokenizer/unicode.hpp"

namespace loom {

/// A split regex loom knows how to apply.
enum class SplitPattern { gpt2, llama3, qwen2 };

/// The regex text of each known pattern, exactly as tokenizer.json spells it (after JSON
/// unescaping).
inline constexpr std::string_view kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

/// The pattern whose regex text is `regex`, or nullopt for a regex loom does not implement.
inline std::optional<SplitPattern> recognize_split_regex(std::string_view regex) {
  if (regex == kGpt2SplitRegex) return SplitPattern::gpt2;
  if (regex == kLlama3SplitRegex) return SplitPattern::llama3;
  if (regex == kQwen2SplitRegex) return SplitPattern::qwen2;
  return std::nullopt;
}

namespace detail {

/// Matches the regex alternatives on a classified text. Each `match_*` returns how many
/// characters the pattern matches at index `i` (always >= 1: the patterns cover every input).
class SplitMatcher {
 public:
  explicit SplitMatcher(const std::vector<SplitChar>& c) : c_(c), n_(c.size()) {}

  std::size_t match(SplitPattern p, std::size_t i) const {
    return p == SplitPattern::gpt2 ? match_gpt2(i) : match_llama3(i, p == SplitPattern::llama3 ? 3 : 1);
  }

 private:
  bool is(std::size_t i, char32_t cp) const { return i < n_ && c_[i].valid && c_[i].cp == cp; }
  bool letter(std::size_t i) const { return i < n_ && c_[i].letter; }
  bool number(std::size_t i) const { return i < n_ && c_[i].number; }
  bool space(std::size_t i) const { return i < n_ && c_[i].space; }
  /// [^\s\p{L}\p{N}]
  bool other(std::size_t i) const { return i < n_ && !c_[i].letter && !c_[i].number && !c_[i].space; }
  bool crlf(std::size_t i) const { return is(i, '\r') || is(i, '\n'); }

  template <typename Pred>
  std::size_t run_end(std::size_t i, Pred pred) const {
    while (i < n_ && pred(i)) ++i;
    return i;
  }
  std::size_t letters_end(std::size_t i) const { return run_end(i, [&](std::size_t k) { return letter(k); }); }
  std::size_t numbers_end(std::size_t i) const { return run_end(i, [&](std::size_t k) { return number(k); }); }
  std::size_t others_end(std::size_t i) const { return run_end(i, [&](std::size_t k) { return other(k); }); }
  std::size_t spaces_end(std::size_t i) const { return run_end(i, [&](std::size_t k) { return space(k); }); }

  /// 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive. Returns 0 when none matches.
  std::size_t contraction(std::size_t i, bool fold) const {
    if (!is(i, '\'')) return 0;
    auto ch = [&](std::size_t k) -> char {
      if (k >= n_ || !c_[k].valid) return 0;
      if (fold) return unicode::fold_to_ascii(c_[k].cp);
      return c_[k].cp < 0x80 ? char(c_[k].cp) : 0;
    };
    const char a = ch(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    const char b = ch(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
  }

  /// \s+(?!\S)|\s+ at a whitespace character: the whole run when it ends the text or has length
  /// 1; otherwise the run minus its last character (which then leads the next word).
  std::size_t trailing_space(std::size_t i) const {
    const std::size_t j = spaces_end(i);
    if (j == n_ || j - i == 1) return j - i;
    return j - i - 1;
  }

  std::size_t match_gpt2(std::size_t i) const {
    if (const std::size_t k = contraction(i, false)) return k;
    const std::size_t s = is(i, ' ') ? 1 : 0;  // the optional leading space of ` ?X+`
    if (letter(i + s)) return letters_end(i + s) - i;
    if (number(i + s)) return numbers_end(i + s) - i;
    if (other(i + s)) return others_end(i + s) - i;
    return trailing_space(i);  // c_[i] is whitespace here
  }

  std::size_t match_llama3(std::size_t i, std::size_t max_digits) const {
    if (const std::size_t k = contraction(i, true)) return k;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!crlf(i) && !letter(i) && !number(i) && letter(i + 1)) return letters_end(i + 1) - i;
    if (letter(i)) return letters_end(i) - i;
    // \p{N}{1,k}
    if (number(i)) return std::min(numbers_end(i) - i, max_digits);
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    const std::size_t s = is(i, ' ') ? 1 : 0;
    if (other(i + s)) {
      const std::size_t j = others_end(i + s);
      return run_end(j, [&](std::size_t k) { return crlf(k); }) - i;
    }
    // \s*[\r\n]+ : the whitespace run up to and including its last CR/LF.
    const std::size_t j = spaces_end(i);
    for (std::size_t k = j; k > i; --k)
      if (crlf(k - 1)) return k - i;
    return trailing_space(i);
  }

  const std::vector<SplitChar>& c_;
  std::size_t n_;
};

}  // namespace detail

/// Splits `text` into consecutive words according to `pattern`. The words cover `text` exactly
/// (concatenated they give `text` back); an empty text gives no words.
inline std::vector<std::string_view> split_words(SplitPattern pattern, std::string_view text) {
  const auto chars = detail::classify(text);
  const detail::SplitMatcher m(chars);
  std::vector<std::string_view> words;
  for (std::size_t i = 0; i < chars.size();) {
    const std::size_t len = m.match(pattern, i);
    const std::size_t end = i + len;
    const std::size_t b = chars[i].pos;
    const std::size_t e = end < chars.size() ? chars[end].pos : text.size();
    words.push_back(text.substr(b, e - b));
    i = end;
  }
  return words;
}

/// What a split does with the pieces its pattern matches (HF `SplitDelimiterBehavior`). Splitting
/// "the-final--countdown" on "-":
///   isolated             the | - | final | - | - | countdown
///   removed              the | final | countdown
///   merged_with_previous the- | final- | - | countdown
///   merged_with_next     the | -final | - | -countdown
///   contiguous           the | - | final | -- | countdown
enum class SplitBehavior { isolated, removed, merged_with_previous, merged_with_next, contiguous };

/// A compiled split rule. Known patterns run on their hand-written matcher, others on loom::Regex.
class Splitter {
 public:
  /// Compiles `regex`; throws Error(unsupported / format, "regex") for a pattern loom cannot run.
  explicit Splitter(std::string_view regex) : regex_(regex), fast_(recognize_split_regex(regex)) {
    if (!fast_) re_ = std::make_shared<const Regex>(regex);
  }

  const std::string& regex() const { return regex_; }

  /// The pieces of `text`: matches and the gaps between them, combined as `behavior` says (with
  /// `invert`, the gaps count as the matches). Empty pieces are dropped.
  std::vector<std::string_view> split(std::string_view text, SplitBehavior behavior = SplitBehavior::isolated,
                                      bool invert = false) const {
    struct Piece {
      std::size_t b, e;
      bool match;
    };
    std::vector<Piece> pieces;
    if (fast_) {
      for (auto w : split_words(*fast_, text)) {
        const auto b = std::size_t(w.data() - text.data());
        pieces.push_back({b, b + w.size(), true});
      }
    } else {
      const auto chars = detail::classify(text);
      auto byte_at = [&](std::size_t i) { return i < chars.size() ? std::size_t(chars[i].pos) : text.size(); };
      std::size_t prev = 0;
      for (const auto& [b, e] : re_->find_all(chars)) {
        if (b > prev) pieces.push_back({byte_at(prev), byte_at(b), false});
        pieces.push_back({byte_at(b), byte_at(e), true});
        prev = e;
      }
      if (prev < chars.size()) pieces.push_back({byte_at(prev), text.size(), false});
    }
    if (invert)
      for (auto& p : pieces) p.match = !p.match;

    std::vector<Piece> out;
    bool prev_match = false;
    switch (behavior) {
      case SplitBehavior::isolated: out = std::move(pieces); break;
      case SplitBehavior::removed:
        for (const auto& p : pieces)
          if (!p.match) out.push_back(p);
        break;
      case SplitBehavior::merged_with_previous:
        for (const auto& p : pieces) {
          if (p.match && !prev_match && !out.empty()) out.back().e = p.e;
          else out.push_back(p);
          prev_match = p.match;
        }
        break;
      case SplitBehavior::merged_with_next:
        for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
          if (it->match && !prev_match && !out.empty()) out.back().b = it->b;
          else out.push_back(*it);
          prev_match = it->match;
        }
        std::reverse(out.begin(), out.end());
        break;
      case SplitBehavior::contiguous:
        for (const auto& p : pieces) {
          if (p.match == prev_match && !out.empty()) out.back().e = p.e;
          else out.push_back(p);
          prev_match = p.match;
        }
        break;
    }
    std::vector<std::string_view> words;
    words.reserve(out.size());
    for (const auto& p : out)
      if (p.e > p.b) words.push_back(text.substr(p.b, p.e - p.b));
    return words;
  }

 private:
  std::string regex_;
  std::optional<SplitPattern> fast_;
  std::shared_ptr<const Regex> re_;
};

// ---------------------------------------------------------------------------------------------
// Byte-level alphabet (GPT-2's bytes_to_unicode): every byte gets a printable code point. The
// printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF map to themselves; the other 68 bytes map,
// in increasing order, to U+0100, U+0101, ... (so ' ' is U+0120 'Ġ' and '\n' is U+010A 'Ċ').
// ---------------------------------------------------------------------------------------------

namespace detail {

struct ByteLevelTables {
  std::array<char32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8{};
  std::array<std::int16_t, 256 + 68> from_cp{};  // code point -> byte, -1 when none
  ByteLevelTables() {
    from_cp.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? char32_t(b) : next++;
      to_utf8[b] = unicode::encode_utf8(to_cp[b]);
      from_cp[to_cp[b]] = std::int16_t(b);
    }
  }
};

inline const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables t;
  return t;
}

}  // namespace detail

/// The code point byte `b` stands for in the byte-level alphabet.
inline char32_t byte_to_unicode(std::uint8_t b) { return detail::byte_level_tables().to_cp[b]; }

/// The byte code point `cp` stands for, or -1 when `cp` is not in the byte-level alphabet.
inline int unicode_to_byte(char32_t cp) {
  const auto& t = detail::byte_level_tables();
  return cp < t.from_cp.size() ? t.from_cp[cp] : -1;
}

/// Maps every byte of `bytes` to its byte-level code point, UTF-8 encoded.
inline std::string byte_level_encode(std::string_view bytes) {
  const auto& t = detail::byte_level_tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char ch : bytes) out += t.to_utf8[static_cast<unsigned char>(ch)];
  return out;
}

/// Maps byte-level text back to bytes, appending to `out`. Returns false (appending nothing)
/// when `text` contains a character outside the byte-level alphabet.
inline bool byte_level_decode(std::string_view text, std::string& out) {
  std::string tmp;
  tmp.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    const auto u = unicode::decode_utf8(text, pos);
    const int b = u.valid ? unicode_to_byte(u.cp) : -1;
    if (b < 0) return false;
    tmp += char(b);
    pos += u.len;
  }
  out += tmp;
  return true;
}

}  // namespace loom

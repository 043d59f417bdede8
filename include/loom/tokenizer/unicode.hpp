// UTF-8 decoding/encoding and Unicode property look-ups for the tokenizer.
//
// Decoding never reads past the end of its input and never fails: a byte that does not start a
// well-formed UTF-8 sequence (stray continuation byte, overlong form, surrogate, value above
// U+10FFFF, truncated sequence) is reported as an invalid one-byte unit, so that callers can keep
// the original bytes (the tokenizer round-trips invalid input) or substitute U+FFFD.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

#include "loom/tokenizer/unicode_tables.hpp"

namespace loom::unicode {

/// U+FFFD REPLACEMENT CHARACTER.
inline constexpr char32_t kReplacement = 0xFFFD;

/// One decoded unit of a UTF-8 string.
struct Utf8Unit {
  char32_t cp;      ///< the code point, or kReplacement when `valid` is false
  std::uint8_t len; ///< bytes consumed (1..4); an invalid unit is always 1 byte
  bool valid;       ///< false for a byte that does not start a well-formed sequence
};

/// Length of the UTF-8 sequence introduced by lead byte `b`, or 0 when `b` cannot start one.
constexpr int utf8_sequence_length(unsigned char b) noexcept {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;  // continuation byte, C0/C1 (always overlong) or F5..FF
}

/// Whether `b` may follow the first `index` bytes of a sequence that starts with `lead`
/// (Unicode Table 3-7, well-formed UTF-8 byte sequences). `index` is 1..3.
constexpr bool utf8_continuation_ok(unsigned char lead, int index, unsigned char b) noexcept {
  if (index == 1) {
    if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;  // no overlong 3-byte forms
    if (lead == 0xED) return b >= 0x80 && b <= 0x9F;  // no surrogates
    if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;  // no overlong 4-byte forms
    if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;  // nothing above U+10FFFF
  }
  return b >= 0x80 && b <= 0xBF;
}

/// Decodes the unit starting at `s[pos]` (`pos < s.size()`).
inline Utf8Unit decode_utf8(std::string_view s, std::size_t pos) noexcept {
  const auto lead = static_cast<unsigned char>(s[pos]);
  const int n = utf8_sequence_length(lead);
  if (n == 1) return {lead, 1, true};
  if (n == 0 || s.size() - pos < std::size_t(n)) return {kReplacement, 1, false};
  char32_t cp = lead & (0xFF >> (n + 1));
  for (int i = 1; i < n; ++i) {
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if (!utf8_continuation_ok(lead, i, b)) return {kReplacement, 1, false};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, std::uint8_t(n), true};
}

/// Appends the UTF-8 encoding of `cp` to `out` (surrogates and values above U+10FFFF become
/// U+FFFD).
inline void append_utf8(std::string& out, char32_t cp) {
  if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = kReplacement;
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

/// The UTF-8 encoding of `cp`.
inline std::string encode_utf8(char32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

/// General_Category of `cp` (Cn for unassigned code points and values above U+10FFFF).
inline GeneralCategory general_category(char32_t cp) noexcept {
  const auto* begin = std::begin(detail::kCategoryRanges);
  const auto* end = std::end(detail::kCategoryRanges);
  // First range whose last code point is >= cp.
  const auto* it = std::lower_bound(begin, end, cp, [](const detail::CategoryRange& r, char32_t c) {
    return r.last < c;
  });
  if (it == end || it->first > cp) return GeneralCategory::Cn;
  return it->category;
}

/// \p{L}: Lu, Ll, Lt, Lm or Lo.
inline bool is_letter(char32_t cp) noexcept {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  const auto c = general_category(cp);
  return c >= GeneralCategory::Lu && c <= GeneralCategory::Lo;
}

/// \p{N}: Nd, Nl or No.
inline bool is_number(char32_t cp) noexcept {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  const auto c = general_category(cp);
  return c >= GeneralCategory::Nd && c <= GeneralCategory::No;
}

/// \p{M}: Mn, Mc or Me.
inline bool is_mark(char32_t cp) noexcept {
  const auto c = general_category(cp);
  return c >= GeneralCategory::Mn && c <= GeneralCategory::Me;
}

/// \s: the Unicode White_Space property.
inline bool is_whitespace(char32_t cp) noexcept {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  for (const auto& r : detail::kWhiteSpaceRanges)
    if (cp >= r.first && cp <= r.last) return true;
  return false;
}

/// The ASCII lowercase letter `cp` case-folds to (simple folding), or 0 when it folds to none.
inline char fold_to_ascii(char32_t cp) noexcept {
  if (cp >= 'a' && cp <= 'z') return char(cp);
  for (const auto& f : detail::kAsciiFolds)
    if (f.code == cp) return f.folded;
  return 0;
}

/// Canonical_Combining_Class of `cp` (0 for most characters).
inline std::uint8_t combining_class(char32_t cp) noexcept {
  if (cp < 0x300) return 0;
  const auto* begin = std::begin(detail::kCombiningClassRanges);
  const auto* end = std::end(detail::kCombiningClassRanges);
  const auto* it = std::lower_bound(begin, end, cp, [](const detail::ClassRange& r, char32_t c) { return r.last < c; });
  return it == end || it->first > cp ? 0 : it->ccc;
}

/// Result of the NFC quick check (UAX #15): `yes` means the text is certainly in NFC.
enum class NfcQuickCheck { yes, no, maybe };

/// The NFC_Quick_Check property of one code point.
inline NfcQuickCheck nfc_quick_check(char32_t cp) noexcept {
  if (cp < 0x300) return NfcQuickCheck::yes;
  const auto* begin = std::begin(detail::kNfcQuickCheckRanges);
  const auto* end = std::end(detail::kNfcQuickCheckRanges);
  const auto* it = std::lower_bound(begin, end, cp, [](const detail::QuickCheckRange& r, char32_t c) { return r.last < c; });
  if (it == end || it->first > cp) return NfcQuickCheck::yes;
  return it->maybe ? NfcQuickCheck::maybe : NfcQuickCheck::no;
}

/// The UAX #15 quick check of a whole string. Invalid UTF-8 bytes count as `yes` characters.
/// Returns the code point that decided a `no`/`maybe` result through `culprit` (if non-null).
inline NfcQuickCheck nfc_quick_check(std::string_view s, char32_t* culprit = nullptr) noexcept {
  std::uint8_t last_class = 0;
  NfcQuickCheck result = NfcQuickCheck::yes;
  for (std::size_t pos = 0; pos < s.size();) {
    const auto u = decode_utf8(s, pos);
    pos += u.len;
    if (!u.valid || u.cp < 0x300) {
      last_class = 0;
      continue;
    }
    const std::uint8_t cls = combining_class(u.cp);
    if (cls != 0 && last_class > cls) {  // marks out of canonical order
      if (culprit) *culprit = u.cp;
      return NfcQuickCheck::no;
    }
    const NfcQuickCheck q = nfc_quick_check(u.cp);
    if (q == NfcQuickCheck::no) {
      if (culprit) *culprit = u.cp;
      return q;
    }
    if (q == NfcQuickCheck::maybe && result == NfcQuickCheck::yes) {
      result = q;
      if (culprit) *culprit = u.cp;
    }
    last_class = cls;
  }
  return result;
}

/// Incremental UTF-8 sanitizer: feed bytes, get only complete, well-formed characters; every
/// maximal ill-formed subsequence becomes one U+FFFD (the W3C / Unicode "maximal subpart"
/// practice). Bytes of an unfinished character wait in the sanitizer until it completes.
class Utf8Sanitizer {
 public:
  /// Appends the sanitized form of `bytes` to `out`.
  void feed(std::string_view bytes, std::string& out) {
    for (const char ch : bytes) feed_byte(static_cast<unsigned char>(ch), out);
  }
  /// Flushes a pending incomplete sequence as U+FFFD.
  void finish(std::string& out) {
    if (!pending_.empty()) {
      append_utf8(out, kReplacement);
      pending_.clear();
    }
  }
  /// Bytes waiting for the rest of their character.
  std::size_t pending() const noexcept { return pending_.size(); }

 private:
  void feed_byte(unsigned char b, std::string& out) {
    if (!pending_.empty()) {
      const auto lead = static_cast<unsigned char>(pending_[0]);
      if (utf8_continuation_ok(lead, int(pending_.size()), b)) {
        pending_ += char(b);
        if (int(pending_.size()) == utf8_sequence_length(lead)) {
          out += pending_;
          pending_.clear();
        }
        return;
      }
      // The pending prefix can never complete: it is one maximal ill-formed subsequence.
      append_utf8(out, kReplacement);
      pending_.clear();
    }
    const int n = utf8_sequence_length(b);
    if (n == 1) {
      out += char(b);
    } else if (n == 0) {
      append_utf8(out, kReplacement);
    } else {
      pending_ += char(b);
    }
  }
  std::string pending_;
};

/// `s` with every maximal ill-formed subsequence replaced by U+FFFD.
inline std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  Utf8Sanitizer z;
  z.feed(s, out);
  z.finish(out);
  return out;
}

}  // namespace loom::unicode

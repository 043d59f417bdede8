// loom::Regex — the regular expressions tokenizers split text with, over Unicode code points.
//
// Tokenizer split rules are regexes in the Perl / Oniguruma dialect (HF tokenizers uses
// Oniguruma, llama.cpp lists the same patterns). This is a small backtracking matcher for the part
// of that dialect those patterns use, with leftmost-first alternation (the first alternative that
// lets the whole pattern match wins), greedy or lazy quantifiers and atomic lookahead:
//
//   a|b  (...)  (?:...)  (?i:...)  (?i)  (?=...)  (?!...)
//   ?  *  +  {n}  {n,}  {n,m}   (each optionally followed by `?`: lazy)
//   .  ^  $  \A  \z  [...]  [^...]  ranges a-z (any code points, e.g. 一-龥)
//   \s \S \d \D \w \W  \p{X} \P{X} \pX  (X: a General_Category or group: L Lu Ll Lt Lm Lo M Mn
//   Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp C Cc Cf Cs Co Cn, or its long
//   name such as Letter / Punctuation), \r \n \t \f \v \e \0 \xHH \x{H...} \uHHHH, \<punct>
//
// Semantics: \s is White_Space, \d is Nd, \w is L/M/Nd/Pc, `.` is anything but '\n', ^ and $ are
// the start and end of the text being split (the split is applied to each piece separately; as in
// llama.cpp's std::regex, and as in Oniguruma wherever the text holds no '\n', where Oniguruma's
// line anchors would also match — the one pattern in use with $, DeepSeek-LLM's, never sees one).
// (?i) folds ASCII letters (and the code points whose simple case folding is an ASCII letter, such
// as U+212A KELVIN SIGN); other literals match exactly. A byte that is not valid UTF-8 is one
// character that only negated items (\S, [^...], \P{...}, `.`) match. Anything else (lookbehind,
// backreferences, \b, possessive quantifiers, nested classes) is refused with Error(unsupported),
// never approximated. A pattern that backtracks pathologically (nested unbounded quantifiers) is
// stopped with Error(unsupported) instead of running for ever.
#pragma once

#include <algorithm>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/error.hpp"
#include "loom/tokenizer/unicode.hpp"

namespace loom {

namespace detail {

/// One character of a text being split, classified once.
struct SplitChar {
  std::uint32_t pos;  // byte offset
  char32_t cp;        // code point (U+FFFD for an invalid byte)
  unicode::GeneralCategory cat;  // Cn for an invalid byte
  bool letter, number, space, valid;
};

inline std::vector<SplitChar> classify(std::string_view text) {
  std::vector<SplitChar> out;
  out.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    const auto u = unicode::decode_utf8(text, pos);
    SplitChar c{std::uint32_t(pos), u.cp, unicode::GeneralCategory::Cn, false, false, false, u.valid};
    if (u.valid) {
      c.cat = unicode::general_category(u.cp);
      c.letter = c.cat >= unicode::GeneralCategory::Lu && c.cat <= unicode::GeneralCategory::Lo;
      c.number = c.cat >= unicode::GeneralCategory::Nd && c.cat <= unicode::GeneralCategory::No;
      c.space = !c.letter && !c.number && unicode::is_whitespace(u.cp);
    }
    out.push_back(c);
    pos += u.len;
  }
  return out;
}

/// A bit per General_Category value.
inline constexpr std::uint32_t category_bit(unicode::GeneralCategory c) { return std::uint32_t(1) << unsigned(c); }

/// The General_Category bits named by a \p{...} property, or 0 for a name loom does not know.
inline std::uint32_t category_mask(std::string_view name) {
  using G = unicode::GeneralCategory;
  auto bits = [](std::initializer_list<G> cs) {
    std::uint32_t m = 0;
    for (G c : cs) m |= category_bit(c);
    return m;
  };
  struct Named {
    std::string_view short_name, long_name;
    std::uint32_t mask;
  };
  const Named table[] = {
      {"L", "Letter", bits({G::Lu, G::Ll, G::Lt, G::Lm, G::Lo})},
      {"LC", "Cased_Letter", bits({G::Lu, G::Ll, G::Lt})},
      {"Lu", "Uppercase_Letter", bits({G::Lu})},
      {"Ll", "Lowercase_Letter", bits({G::Ll})},
      {"Lt", "Titlecase_Letter", bits({G::Lt})},
      {"Lm", "Modifier_Letter", bits({G::Lm})},
      {"Lo", "Other_Letter", bits({G::Lo})},
      {"M", "Mark", bits({G::Mn, G::Mc, G::Me})},
      {"Mn", "Nonspacing_Mark", bits({G::Mn})},
      {"Mc", "Spacing_Mark", bits({G::Mc})},
      {"Me", "Enclosing_Mark", bits({G::Me})},
      {"N", "Number", bits({G::Nd, G::Nl, G::No})},
      {"Nd", "Decimal_Number", bits({G::Nd})},
      {"Nl", "Letter_Number", bits({G::Nl})},
      {"No", "Other_Number", bits({G::No})},
      {"P", "Punctuation", bits({G::Pc, G::Pd, G::Ps, G::Pe, G::Pi, G::Pf, G::Po})},
      {"Pc", "Connector_Punctuation", bits({G::Pc})},
      {"Pd", "Dash_Punctuation", bits({G::Pd})},
      {"Ps", "Open_Punctuation", bits({G::Ps})},
      {"Pe", "Close_Punctuation", bits({G::Pe})},
      {"Pi", "Initial_Punctuation", bits({G::Pi})},
      {"Pf", "Final_Punctuation", bits({G::Pf})},
      {"Po", "Other_Punctuation", bits({G::Po})},
      {"S", "Symbol", bits({G::Sm, G::Sc, G::Sk, G::So})},
      {"Sm", "Math_Symbol", bits({G::Sm})},
      {"Sc", "Currency_Symbol", bits({G::Sc})},
      {"Sk", "Modifier_Symbol", bits({G::Sk})},
      {"So", "Other_Symbol", bits({G::So})},
      {"Z", "Separator", bits({G::Zs, G::Zl, G::Zp})},
      {"Zs", "Space_Separator", bits({G::Zs})},
      {"Zl", "Line_Separator", bits({G::Zl})},
      {"Zp", "Paragraph_Separator", bits({G::Zp})},
      {"C", "Other", bits({G::Cc, G::Cf, G::Cs, G::Co, G::Cn})},
      {"Cc", "Control", bits({G::Cc})},
      {"Cf", "Format", bits({G::Cf})},
      {"Cs", "Surrogate", bits({G::Cs})},
      {"Co", "Private_Use", bits({G::Co})},
      {"Cn", "Unassigned", bits({G::Cn})},
  };
  for (const auto& n : table)
    if (name == n.short_name || name == n.long_name) return n.mask;
  return 0;
}

}  // namespace detail

/// A compiled regular expression (see the header comment for the dialect).
class Regex {
 public:
  /// Compiles `pattern`. Throws Error(unsupported, "regex") naming the construct loom does not
  /// implement, Error(format, "regex") for a malformed pattern.
  explicit Regex(std::string_view pattern) : pattern_(pattern) {
    Parser p{*this, pattern, 0};
    root_ = p.parse_alternation(false);
    if (p.pos < pattern.size()) p.bad("unbalanced ')'");
    // Children are created before their parents, so one forward pass sees every child first.
    for (int i = 0; i < int(nodes_.size()); ++i) compute_width1(i);
    // Most text is ASCII: each class answers for those 128 characters from a table.
    for (int ch = 0; ch < 128; ++ch) {
      const auto c = detail::classify(std::string(1, char(ch)));
      for (auto& k : classes_) k.ascii[std::size_t(ch)] = class_matches_slow(k, c[0]);
    }
  }

  const std::string& pattern() const { return pattern_; }

  /// The number of characters of the leftmost-first match that starts exactly at `i` in `text`,
  /// or -1 when the pattern does not match there.
  std::ptrdiff_t match_at(const std::vector<detail::SplitChar>& text, std::size_t i) const {
    Matcher m{*this, text, text.size()};
    m.budget = 100000 + 1000 * (text.size() - i + 1);
    if (!m.match(root_, i, nullptr)) return -1;
    return std::ptrdiff_t(m.end - i);
  }

  /// Every match, left to right, as [begin, end) character indices. After a match the search
  /// goes on at its end; an empty match is dropped and the search goes on one character later.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(const std::vector<detail::SplitChar>& text) const {
    std::vector<std::pair<std::size_t, std::size_t>> out;
    for (std::size_t i = 0; i < text.size();) {
      const std::ptrdiff_t len = match_at(text, i);
      if (len > 0) {
        out.emplace_back(i, i + std::size_t(len));
        i += std::size_t(len);
      } else {
        ++i;
      }
    }
    return out;
  }

 private:
  // ---- the compiled form ---------------------------------------------------------------------

  /// One item of a character class; `negated` for \S, \D, \W, \P{...}.
  struct ClassItem {
    enum class Kind : std::uint8_t { range, categories, space, digit, word, any_but_newline } kind;
    bool negated = false;
    char32_t lo = 0, hi = 0;    // range
    std::uint32_t mask = 0;     // categories
  };
  struct CharClass {
    std::vector<ClassItem> items;
    bool negated = false;  // [^...]
    bool icase = false;    // under (?i)
    std::bitset<128> ascii;  // the answer for each ASCII character, filled in after parsing
  };
  struct Node {
    enum class Kind : std::uint8_t { chars, seq, alt, repeat, look, begin, end };
    explicit Node(Kind k) : kind(k) {}
    Kind kind;
    int cls = -1;            // chars: index into classes_
    std::vector<int> kids;   // seq, alt; repeat and look: kids[0]
    int min = 0, max = -1;   // repeat; max -1: unbounded
    bool greedy = true;      // repeat
    bool negated = false;    // look: (?!...)
    bool width1 = false;     // matches exactly one character whenever it matches
  };

  static bool item_matches(const ClassItem& it, const detail::SplitChar& c) {
    bool r = false;
    switch (it.kind) {
      case ClassItem::Kind::range: r = c.valid && c.cp >= it.lo && c.cp <= it.hi; break;
      case ClassItem::Kind::categories: r = c.valid && (it.mask & detail::category_bit(c.cat)) != 0; break;
      case ClassItem::Kind::space: r = c.space; break;
      case ClassItem::Kind::digit: r = c.valid && c.cat == unicode::GeneralCategory::Nd; break;
      case ClassItem::Kind::word: {
        using G = unicode::GeneralCategory;
        r = c.valid && (c.letter || c.cat == G::Nd || c.cat == G::Pc || (c.cat >= G::Mn && c.cat <= G::Me));
        break;
      }
      case ClassItem::Kind::any_but_newline: r = !(c.valid && c.cp == '\n'); break;
    }
    return r != it.negated;
  }

  bool class_matches(const CharClass& k, const detail::SplitChar& c) const {
    if (c.valid && c.cp < 128) return k.ascii[c.cp];
    return class_matches_slow(k, c);
  }

  bool class_matches_slow(const CharClass& k, const detail::SplitChar& c) const {
    auto any = [&](const detail::SplitChar& x) {
      for (const auto& it : k.items)
        if (item_matches(it, x)) return true;
      return false;
    };
    bool hit = any(c);
    if (!hit && k.icase && c.valid) {
      // Case-insensitive: try the ASCII letter `c` folds to, in both cases.
      if (const char f = unicode::fold_to_ascii(c.cp)) {
        for (const char32_t alt : {char32_t(f), char32_t(f - 'a' + 'A')}) {
          if (alt == c.cp) continue;
          detail::SplitChar x = c;
          x.cp = alt;
          x.cat = alt >= 'a' ? unicode::GeneralCategory::Ll : unicode::GeneralCategory::Lu;
          if (any(x)) {
            hit = true;
            break;
          }
        }
      }
    }
    return hit != k.negated;
  }

  void compute_width1(int i) {
    Node& n = nodes_[std::size_t(i)];
    switch (n.kind) {
      case Node::Kind::chars: n.width1 = true; break;
      case Node::Kind::alt:
        n.width1 = !n.kids.empty() &&
                   std::all_of(n.kids.begin(), n.kids.end(), [&](int k) { return nodes_[std::size_t(k)].width1; });
        break;
      case Node::Kind::seq: {
        // Zero-width lookaheads followed by exactly one single-character item.
        int singles = 0;
        bool ok = true;
        for (int k : n.kids) {
          const Node& kid = nodes_[std::size_t(k)];
          if (kid.kind == Node::Kind::look && singles == 0) continue;
          if (kid.width1) ++singles;
          else ok = false;
        }
        n.width1 = ok && singles == 1;
        break;
      }
      case Node::Kind::repeat: n.width1 = n.min == 1 && n.max == 1 && nodes_[std::size_t(n.kids[0])].width1; break;
      default: n.width1 = false; break;
    }
  }

  // ---- matching ------------------------------------------------------------------------------

  /// What remains to be matched after the current node: the rest of a sequence (from `index`),
  /// or further iterations of a repeat (`count` done, the last one started at `start`).
  struct Cont {
    const Cont* next;
    int node;
    int index;
    std::size_t start;
  };

  struct Matcher {
    const Regex& re;
    const std::vector<detail::SplitChar>& c;
    std::size_t n;
    std::size_t end = 0;
    std::size_t steps = 0;
    std::size_t budget = 0;
    int depth = 0;

    struct DepthGuard {
      int& d;
      explicit DepthGuard(int& depth) : d(depth) { ++d; }
      ~DepthGuard() { --d; }
    };

    void tick() {
      if (++steps > budget || depth > 2000)
        fail(ErrorKind::unsupported, "regex", "pattern \"", re.pattern_,
             "\" backtracks too much on this text (nested unbounded repetition?)");
    }

    /// Whether the single-character node `k` matches the character at `i`.
    bool one(int k, std::size_t i) {
      const Node& node = re.nodes_[std::size_t(k)];
      switch (node.kind) {
        case Node::Kind::chars: return i < n && re.class_matches(re.classes_[std::size_t(node.cls)], c[i]);
        case Node::Kind::alt:
          for (int kid : node.kids)
            if (one(kid, i)) return true;
          return false;
        case Node::Kind::repeat: return one(node.kids[0], i);
        case Node::Kind::seq:
          for (int kid : node.kids) {
            const Node& x = re.nodes_[std::size_t(kid)];
            if (x.kind == Node::Kind::look) {
              Matcher sub{re, c, n, 0, 0, budget, depth + 1};
              if (sub.match(x.kids[0], i, nullptr) == x.negated) return false;
              steps += sub.steps;
            } else if (!one(kid, i)) {
              return false;
            }
          }
          return true;
        default: return false;
      }
    }

    /// Continues with `k` at `i`; the empty continuation is success.
    bool run(const Cont* k, std::size_t i) {
      if (!k) {
        end = i;
        return true;
      }
      const Node& node = re.nodes_[std::size_t(k->node)];
      if (node.kind == Node::Kind::seq) {
        if (std::size_t(k->index) == node.kids.size()) return run(k->next, i);
        const Cont rest{k->next, k->node, k->index + 1, 0};
        return match(node.kids[std::size_t(k->index)], i, &rest);
      }
      // Another iteration of a general repeat finished at `i`.
      if (i == k->start) return run(k->next, i);  // an empty iteration ends the loop
      return iterate(k->node, k->index, i, k->next);
    }

    /// Repeat `r` having done `count` iterations, now at `i`.
    bool iterate(int r, int count, std::size_t i, const Cont* k) {
      const Node& node = re.nodes_[std::size_t(r)];
      const bool more = node.max < 0 || count < node.max;
      const Cont again{k, r, count + 1, i};
      if (node.greedy) {
        if (more && match(node.kids[0], i, &again)) return true;
        return count >= node.min && run(k, i);
      }
      if (count >= node.min && run(k, i)) return true;
      return more && match(node.kids[0], i, &again);
    }

    bool match(int idx, std::size_t i, const Cont* k) {
      tick();
      const DepthGuard guard(depth);
      const Node& node = re.nodes_[std::size_t(idx)];
      switch (node.kind) {
        case Node::Kind::chars:
          return i < n && re.class_matches(re.classes_[std::size_t(node.cls)], c[i]) && run(k, i + 1);
        case Node::Kind::begin: return i == 0 && run(k, i);
        case Node::Kind::end: return i == n && run(k, i);
        case Node::Kind::seq: {
          if (node.kids.empty()) return run(k, i);
          const Cont rest{k, idx, 1, 0};
          return match(node.kids[0], i, node.kids.size() == 1 ? k : &rest);
        }
        case Node::Kind::alt:
          for (int kid : node.kids)
            if (match(kid, i, k)) return true;
          return false;
        case Node::Kind::look: {
          Matcher sub{re, c, n, 0, 0, budget - std::min(budget, steps), depth};
          const bool hit = sub.match(node.kids[0], i, nullptr);
          steps += sub.steps;
          return hit != node.negated && run(k, i);
        }
        case Node::Kind::repeat: {
          if (!re.nodes_[std::size_t(node.kids[0])].width1) return iterate(idx, 0, i, k);
          // One character per iteration: find the longest run, then try counts in order.
          std::size_t most = 0;
          const std::size_t cap = node.max < 0 ? n : std::size_t(node.max);
          while (most < cap && i + most < n && one(node.kids[0], i + most)) ++most;
          const std::size_t least = std::size_t(node.min);
          if (most < least) return false;
          if (node.greedy) {
            for (std::size_t cnt = most + 1; cnt-- > least;) {
              tick();
              if (run(k, i + cnt)) return true;
            }
          } else {
            for (std::size_t cnt = least; cnt <= most; ++cnt) {
              tick();
              if (run(k, i + cnt)) return true;
            }
          }
          return false;
        }
      }
      return false;
    }
  };

  // ---- parsing -------------------------------------------------------------------------------

  struct Parser {
    Regex& re;
    std::string_view s;
    std::size_t pos;
    bool icase = false;
    int nesting = 0;  // open groups (bounded: the parser recurses once per group)

    [[noreturn]] void bad(std::string_view what) const {
      fail(ErrorKind::format, "regex", "pattern \"", s, "\" at offset ", pos, ": ", what);
    }
    [[noreturn]] void unsupported(std::string_view what) const {
      fail(ErrorKind::unsupported, "regex", "pattern \"", s, "\" at offset ", pos, ": ", what,
           " is not implemented");
    }

    bool at_end() const { return pos >= s.size(); }
    char peek() const { return at_end() ? '\0' : s[pos]; }
    bool eat(char ch) {
      if (peek() != ch) return false;
      ++pos;
      return true;
    }
    /// The next code point of the pattern (which must be valid UTF-8).
    char32_t next_cp() {
      const auto u = unicode::decode_utf8(s, pos);
      if (!u.valid) bad("invalid UTF-8");
      pos += u.len;
      return u.cp;
    }

    int add(Node n) {
      re.nodes_.push_back(std::move(n));
      return int(re.nodes_.size()) - 1;
    }
    int add_class(CharClass k) {
      k.icase = icase;
      re.classes_.push_back(std::move(k));
      Node n(Node::Kind::chars);
      n.cls = int(re.classes_.size()) - 1;
      return add(std::move(n));
    }
    int add_char(char32_t cp) {
      CharClass k;
      k.items.push_back({ClassItem::Kind::range, false, cp, cp, 0});
      return add_class(std::move(k));
    }

    int parse_alternation(bool in_group) {
      const bool saved = icase;
      std::vector<int> alts{parse_sequence()};
      while (eat('|')) alts.push_back(parse_sequence());
      if (in_group && !eat(')')) bad("missing ')'");
      icase = saved;  // (?i) lasts to the end of its group
      if (alts.size() == 1) return alts[0];
      Node n(Node::Kind::alt);
      n.kids = std::move(alts);
      return add(std::move(n));
    }

    int parse_sequence() {
      Node seq(Node::Kind::seq);
      while (!at_end() && peek() != '|' && peek() != ')') {
        const int atom = parse_atom();
        if (atom < 0) continue;  // a flag group such as (?i)
        seq.kids.push_back(parse_quantifier(atom));
      }
      if (seq.kids.size() == 1) return seq.kids[0];
      return add(std::move(seq));
    }

    bool parse_number(int& out) {
      const std::size_t start = pos;
      long v = 0;
      while (peek() >= '0' && peek() <= '9') {
        v = v * 10 + (s[pos++] - '0');
        if (v > 100000) bad("repetition count too large");
      }
      out = int(v);
      return pos > start;
    }

    int parse_quantifier(int atom) {
      for (;;) {
        int lo = 0, hi = -1;
        const std::size_t start = pos;
        if (eat('*')) {
        } else if (eat('+')) {
          lo = 1;
        } else if (eat('?')) {
          hi = 1;
        } else if (eat('{')) {
          // {n} {n,} {n,m}; anything else is a literal '{' (as Oniguruma reads it).
          if (!parse_number(lo)) {
            pos = start;
            return atom;
          }
          if (eat(',')) {
            if (!parse_number(hi)) hi = -1;
          } else {
            hi = lo;
          }
          if (!eat('}')) {
            pos = start;
            return atom;
          }
          if (hi >= 0 && hi < lo) bad("repetition {n,m} with m < n");
        } else {
          return atom;
        }
        Node n(Node::Kind::repeat);
        n.min = lo;
        n.max = hi;
        if (eat('?')) n.greedy = false;
        else if (peek() == '+') unsupported("a possessive quantifier");
        n.kids = {atom};
        atom = add(std::move(n));
      }
    }

    int parse_atom() {
      const char ch = peek();
      if (ch == '(') {
        ++pos;
        if (++nesting > 100) unsupported("nesting groups more than 100 deep");
        struct Close {
          int& n;
          ~Close() { --n; }
        } close{nesting};
        if (eat('?')) {
          if (eat(':')) return parse_alternation(true);
          if (eat('=') || eat('!')) {
            Node n(Node::Kind::look);
            n.negated = s[pos - 1] == '!';
            n.kids = {parse_alternation(true)};
            return add(std::move(n));
          }
          if (peek() == 'i') {
            ++pos;
            if (eat(')')) {  // (?i): case-insensitive to the end of the enclosing group
              icase = true;
              return -1;
            }
            if (!eat(':')) unsupported("this group flag");
            const bool saved = icase;
            icase = true;
            const int g = parse_alternation(true);
            icase = saved;
            return g;
          }
          if (peek() == '<') unsupported("lookbehind or a named group");
          unsupported("this (? group");
        }
        return parse_alternation(true);  // a capturing group: loom never reports captures
      }
      if (ch == '[') return parse_class();
      if (ch == '.') {
        ++pos;
        CharClass k;
        k.items.push_back({ClassItem::Kind::any_but_newline});
        return add_class(std::move(k));
      }
      if (ch == '^') {
        ++pos;
        return add(Node(Node::Kind::begin));
      }
      if (ch == '$') {
        ++pos;
        return add(Node(Node::Kind::end));
      }
      if (ch == '*' || ch == '+' || ch == '?') bad("quantifier without anything to repeat");
      if (ch == '\\') {
        ++pos;
        if (eat('A')) return add(Node(Node::Kind::begin));
        if (eat('z')) return add(Node(Node::Kind::end));
        CharClass k;
        k.items.push_back(parse_escape());
        return add_class(std::move(k));
      }
      return add_char(next_cp());
    }

    static int hex_value(char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    }

    char32_t parse_hex(std::size_t digits) {
      char32_t v = 0;
      for (std::size_t k = 0; k < digits; ++k) {
        const int h = hex_value(peek());
        if (h < 0) bad("bad hexadecimal escape");
        v = v * 16 + char32_t(h);
        ++pos;
      }
      return v;
    }

    /// The escape after a backslash, as one class item.
    ClassItem parse_escape() {
      if (at_end()) bad("pattern ends with a backslash");
      const char e = s[pos++];
      auto single = [](char32_t cp) { return ClassItem{ClassItem::Kind::range, false, cp, cp, 0}; };
      switch (e) {
        case 's': return {ClassItem::Kind::space, false};
        case 'S': return {ClassItem::Kind::space, true};
        case 'd': return {ClassItem::Kind::digit, false};
        case 'D': return {ClassItem::Kind::digit, true};
        case 'w': return {ClassItem::Kind::word, false};
        case 'W': return {ClassItem::Kind::word, true};
        case 'r': return single('\r');
        case 'n': return single('\n');
        case 't': return single('\t');
        case 'f': return single('\f');
        case 'v': return single('\v');
        case 'e': return single(0x1B);
        case 'a': return single(0x07);
        case '0': return single(0);
        case 'x':
          if (eat('{')) {
            char32_t v = 0;
            std::size_t digits = 0;
            while (hex_value(peek()) >= 0 && digits < 8) v = v * 16 + char32_t(hex_value(s[pos++])), ++digits;
            if (!digits || !eat('}') || v > 0x10FFFF) bad("bad \\x{...} escape");
            return single(v);
          }
          return single(parse_hex(2));
        case 'u': return single(parse_hex(4));
        case 'p':
        case 'P': {
          std::string name;
          if (eat('{')) {
            const bool neg = eat('^');
            while (!at_end() && peek() != '}') name += s[pos++];
            if (!eat('}')) bad("unterminated \\p{...}");
            const std::uint32_t mask = detail::category_mask(name);
            if (!mask) unsupported("the Unicode property \\p{" + name + "}");
            return {ClassItem::Kind::categories, (e == 'P') != neg, 0, 0, mask};
          }
          if (at_end()) bad("pattern ends after \\p");
          name = s[pos++];
          const std::uint32_t mask = detail::category_mask(name);
          if (!mask) unsupported("the Unicode property \\p" + name);
          return {ClassItem::Kind::categories, e == 'P', 0, 0, mask};
        }
        default: break;
      }
      const unsigned char u = static_cast<unsigned char>(e);
      if (u < 0x80 && !((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9')))
        return single(char32_t(u));  // an escaped punctuation or space character stands for itself
      --pos;
      unsupported(std::string("the escape \\") + e);
    }

    int parse_class() {
      ++pos;  // '['
      CharClass k;
      k.negated = eat('^');
      bool first = true;
      for (;;) {
        if (at_end()) bad("unterminated character class");
        if (peek() == ']' && !first) {
          ++pos;
          break;
        }
        first = false;
        if (peek() == '[') unsupported("a nested character class");
        ClassItem lo_item;
        if (eat('\\')) {
          lo_item = parse_escape();
        } else {
          const char32_t cp = next_cp();
          lo_item = {ClassItem::Kind::range, false, cp, cp, 0};
        }
        // A range a-b (a '-' before ']' or after a class escape is a literal '-').
        if (lo_item.kind == ClassItem::Kind::range && lo_item.lo == lo_item.hi && peek() == '-' &&
            pos + 1 < s.size() && s[pos + 1] != ']') {
          ++pos;
          char32_t hi;
          if (eat('\\')) {
            const ClassItem h = parse_escape();
            if (h.kind != ClassItem::Kind::range) bad("a range ends with a class escape");
            hi = h.lo;
          } else {
            hi = next_cp();
          }
          if (hi < lo_item.lo) bad("range out of order");
          lo_item.hi = hi;
        }
        k.items.push_back(lo_item);
      }
      return add_class(std::move(k));
    }
  };

  std::string pattern_;
  std::vector<Node> nodes_;
  std::vector<CharClass> classes_;
  int root_ = -1;
};

/// A pattern that matches `literal` exactly (ASCII punctuation and spaces escaped).
inline std::string regex_escape(std::string_view literal) {
  std::string out;
  for (const char ch : literal) {
    const auto u = static_cast<unsigned char>(ch);
    const bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
    if (u < 0x80 && u > 0x20 && !alnum) out += '\\';
    if (u == '\t') out += "\\t";
    else if (u == '\n') out += "\\n";
    else if (u == '\r') out += "\\r";
    else out += ch;
  }
  return out;
}

}  // namespace loom

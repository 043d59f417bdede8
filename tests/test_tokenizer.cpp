// Tokenizer tests: Unicode tables, pre-tokenizer matchers, the BPE engine against llama.cpp's
// tokenizer test vectors, loaders (tokenizer.json, llama2.c tokenizer.bin), broken inputs, and
// streaming decode.
#include <gtest/gtest.h>

#include <cstdint>
#include <cctype>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fixtures.hpp"
#include "loom/io/gguf_tokenizer.hpp"
#include "loom/io/llama2c_tokenizer.hpp"
#include "loom/io/tokenizer_json.hpp"
#include "loom/tokenizer/bpe_pre_types.hpp"
#include "loom/tokenizer/pretokenizer.hpp"
#include "loom/tokenizer/regex.hpp"
#include "loom/tokenizer/stream_decoder.hpp"
#include "loom/tokenizer/tokenizer.hpp"
#include "loom/tokenizer/unicode.hpp"

namespace test_tokenizer {

namespace {

using loom::Tokenizer;
using Ids = std::vector<std::int32_t>;

// ---- test-vector files (rules of llama.cpp's tests/test-tokenizer-0.cpp) --------------------

std::vector<std::string> read_cases(const std::filesystem::path& inp) {
  const std::string text = loom::test::read_text(inp);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> cases;
  std::size_t pos = 0;
  for (std::size_t hit; (hit = text.find(sep, pos)) != std::string::npos; pos = hit + sep.size())
    cases.push_back(text.substr(pos, hit - pos));
  return cases;
}

std::vector<Ids> read_expected(const std::filesystem::path& out) {
  std::istringstream in(loom::test::read_text(out));
  std::vector<Ids> result;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    Ids ids;
    for (std::int32_t id; ls >> id;) ids.push_back(id);
    result.push_back(ids);
  }
  return result;
}

std::string stream_decode(const Tokenizer& tok, const Ids& ids) {
  loom::StreamDecoder d(tok);
  std::string out;
  for (auto id : ids) {
    const std::string part = d.push(id);
    // Every chunk is complete UTF-8 on its own.
    EXPECT_EQ(loom::unicode::sanitize_utf8(part), part);
    out += part;
  }
  out += d.finish();
  return out;
}

std::string show(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) out += char(c);
    else out += loom::detail::cat("\\x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]);
  }
  return out;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const loom::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("NOT loom::Error: ") + e.what();
  }
  return "no error";
}

/// Runs all cases of a vocab test file through `tok`: exact ids, decode round trip, streaming.
void check_vectors(const Tokenizer& tok, const std::filesystem::path& inp, const std::filesystem::path& out,
                   bool spm) {
  const auto cases = read_cases(inp);
  const auto expected = read_expected(out);
  ASSERT_EQ(cases.size(), 46u);
  ASSERT_EQ(expected.size(), cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(loom::detail::cat("case ", i, ": \"", show(cases[i]), "\""));
    const Ids ids = tok.encode(cases[i], /*add_special=*/false, /*parse_special=*/false);
    EXPECT_EQ(ids, expected[i]);
    EXPECT_EQ(tok.decode(ids), cases[i]);
    EXPECT_EQ(stream_decode(tok, ids), tok.decode(ids));
    // With BOS (SentencePiece) the round trip still holds.
    if (spm) {
      const Ids with_bos = tok.encode(cases[i], true, false);
      ASSERT_FALSE(with_bos.empty());
      EXPECT_EQ(with_bos.front(), tok.bos_id());
      EXPECT_EQ(tok.decode(with_bos), cases[i]);
      EXPECT_EQ(stream_decode(tok, with_bos), cases[i]);
    }
  }
}

const Tokenizer& gpt2() {
  static const Tokenizer t =
      loom::io::load_tokenizer_json(loom::test::fixtures_root() / "tokenizers/hf/gpt2-tokenizer.json");
  return t;
}
const Tokenizer& llama2() {
  static const Tokenizer t = loom::io::load_tokenizer_json(loom::test::fixtures_root() /
                                                           "tokenizers/hf/llama2-tokenizer.nbsp-restored.json");
  return t;
}

// ---- Unicode ---------------------------------------------------------------------------------

TEST(Unicode, CategorySpotChecks) {
  using loom::unicode::GeneralCategory;
  using loom::unicode::general_category;
  EXPECT_EQ(general_category(U'A'), GeneralCategory::Lu);
  EXPECT_EQ(general_category(U'z'), GeneralCategory::Ll);
  EXPECT_EQ(general_category(U'7'), GeneralCategory::Nd);
  EXPECT_EQ(general_category(0x01C5), GeneralCategory::Lt);   // ǅ
  EXPECT_EQ(general_category(0x02B0), GeneralCategory::Lm);   // ʰ
  EXPECT_EQ(general_category(0x4E00), GeneralCategory::Lo);   // 一 (inside a First/Last range)
  EXPECT_EQ(general_category(0x9FFF), GeneralCategory::Lo);   // end of the CJK range
  EXPECT_EQ(general_category(0xAC00), GeneralCategory::Lo);   // 가 (Hangul range)
  EXPECT_EQ(general_category(0x0301), GeneralCategory::Mn);   // combining acute
  EXPECT_EQ(general_category(0x17B6), GeneralCategory::Mc);   // Khmer vowel sign aa
  EXPECT_EQ(general_category(0x00BD), GeneralCategory::No);   // ½
  EXPECT_EQ(general_category(0x2165), GeneralCategory::Nl);   // Ⅵ
  EXPECT_EQ(general_category(0x0660), GeneralCategory::Nd);   // Arabic-Indic zero
  EXPECT_EQ(general_category(0x200D), GeneralCategory::Cf);   // ZWJ
  EXPECT_EQ(general_category(0x1F999), GeneralCategory::So);  // 🦙
  EXPECT_EQ(general_category(0x00A0), GeneralCategory::Zs);
  EXPECT_EQ(general_category(0x0378), GeneralCategory::Cn);   // unassigned
  EXPECT_EQ(general_category(0x110000), GeneralCategory::Cn);
  EXPECT_TRUE(loom::unicode::is_letter(0x00FC));    // ü
  EXPECT_TRUE(loom::unicode::is_letter(0x0431));    // б
  EXPECT_FALSE(loom::unicode::is_letter(0xFE0F));   // variation selector (Mn)
  EXPECT_TRUE(loom::unicode::is_number(0x00BD));
  EXPECT_TRUE(loom::unicode::is_whitespace(0x3000));
  EXPECT_TRUE(loom::unicode::is_whitespace(0x0085));
  EXPECT_FALSE(loom::unicode::is_whitespace(0x200B));  // zero width space is not White_Space
  EXPECT_EQ(loom::unicode::fold_to_ascii(U'S'), 's');
  EXPECT_EQ(loom::unicode::fold_to_ascii(0x017F), 's');  // ſ
  EXPECT_EQ(loom::unicode::fold_to_ascii(U'é'), 0);
  EXPECT_STREQ(loom::unicode::kVersion, "15.0.0");
}

TEST(Unicode, Utf8DecodeHandlesInvalidBytes) {
  using loom::unicode::decode_utf8;
  const std::string s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\xA6\x99";
  EXPECT_EQ(decode_utf8(s, 0).cp, U'a');
  EXPECT_EQ(decode_utf8(s, 1).cp, 0xE9u);
  EXPECT_EQ(decode_utf8(s, 3).cp, 0x20ACu);
  EXPECT_EQ(decode_utf8(s, 6).cp, 0x1F999u);
  for (const std::string bad : {"\x80", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE2\x82", "\xFF"}) {
    const auto u = decode_utf8(bad, 0);
    EXPECT_FALSE(u.valid) << show(bad);
    EXPECT_EQ(u.len, 1);
  }
  // Maximal-subpart replacement: "\xE2\x82" is one ill-formed subsequence, then 'x'.
  EXPECT_EQ(loom::unicode::sanitize_utf8("\xE2\x82x\xFF"), "\xEF\xBF\xBDx\xEF\xBF\xBD");
  EXPECT_EQ(loom::unicode::sanitize_utf8("ok \xF0\x9F\xA6\x99"), "ok \xF0\x9F\xA6\x99");
  EXPECT_EQ(loom::unicode::encode_utf8(0x1F999), "\xF0\x9F\xA6\x99");
}

// ---- pre-tokenizer matchers --------------------------------------------------------------------

std::vector<std::string> split(loom::SplitPattern p, std::string_view text) {
  std::vector<std::string> out;
  for (auto w : loom::split_words(p, text)) out.emplace_back(w);
  return out;
}
using Words = std::vector<std::string>;

TEST(PreTokenizer, RecognizesKnownRegexes) {
  EXPECT_EQ(loom::recognize_split_regex(loom::kGpt2SplitRegex), loom::SplitPattern::gpt2);
  EXPECT_EQ(loom::recognize_split_regex(loom::kLlama3SplitRegex), loom::SplitPattern::llama3);
  EXPECT_EQ(loom::recognize_split_regex(loom::kQwen2SplitRegex), loom::SplitPattern::qwen2);
  EXPECT_FALSE(loom::recognize_split_regex("\\w+|[^\\w\\s]+"));
}

TEST(PreTokenizer, Gpt2) {
  using loom::SplitPattern;
  EXPECT_EQ(split(SplitPattern::gpt2, "Hello world, this is a test."),
            (Words{"Hello", " world", ",", " this", " is", " a", " test", "."}));
  // Case-sensitive contractions; an upper-case one is not a contraction.
  EXPECT_EQ(split(SplitPattern::gpt2, "I'm y'all HE'S"), (Words{"I", "'m", " y", "'", "all", " HE", "'", "S"}));
  // Whitespace runs: all but the last space stay apart; trailing run kept whole.
  EXPECT_EQ(split(SplitPattern::gpt2, "a   b  "), (Words{"a", "  ", " b", "  "}));
  EXPECT_EQ(split(SplitPattern::gpt2, "x\n\ny"), (Words{"x", "\n", "\n", "y"}));
  EXPECT_EQ(split(SplitPattern::gpt2, "12345 abc123"), (Words{"12345", " abc", "123"}));
  EXPECT_EQ(split(SplitPattern::gpt2, "ok!!! ?"), (Words{"ok", "!!!", " ?"}));
  EXPECT_EQ(split(SplitPattern::gpt2, ""), Words{});
}

TEST(PreTokenizer, Llama3) {
  using loom::SplitPattern;
  // Contractions are case-insensitive.
  EXPECT_EQ(split(SplitPattern::llama3, "I'M HE'S we'Ve"), (Words{"I", "'M", " HE", "'S", " we", "'Ve"}));
  // Digits in groups of at most three.
  EXPECT_EQ(split(SplitPattern::llama3, "1234567 x12"), (Words{"123", "456", "7", " x", "12"}));
  // One non-letter, non-digit, non-newline char may lead a letter run (a tab, a '$')...
  EXPECT_EQ(split(SplitPattern::llama3, "\tab x$cd"), (Words{"\tab", " x", "$cd"}));
  // ...but only one: " $cd" is punctuation with its optional space, then letters.
  EXPECT_EQ(split(SplitPattern::llama3, " $cd"), (Words{" $", "cd"}));
  // Punctuation takes trailing newlines; whitespace up to the last newline is one word.
  EXPECT_EQ(split(SplitPattern::llama3, "end.\n\nNext"), (Words{"end", ".\n\n", "Next"}));
  EXPECT_EQ(split(SplitPattern::llama3, "a \n  b"), (Words{"a", " \n", " ", " b"}));
  EXPECT_EQ(split(SplitPattern::llama3, "a\r\nb"), (Words{"a", "\r\n", "b"}));
  // A newline does not lead a letter run.
  EXPECT_EQ(split(SplitPattern::llama3, "\nab"), (Words{"\n", "ab"}));
  // Trailing spaces and spaces before a word.
  EXPECT_EQ(split(SplitPattern::llama3, "a   b  "), (Words{"a", "  ", " b", "  "}));
}

TEST(PreTokenizer, Qwen2) {
  using loom::SplitPattern;
  EXPECT_EQ(split(SplitPattern::qwen2, "1234 x12"), (Words{"1", "2", "3", "4", " x", "1", "2"}));
  EXPECT_EQ(split(SplitPattern::qwen2, "THEY'LL go"), (Words{"THEY", "'LL", " go"}));
  EXPECT_EQ(split(SplitPattern::qwen2, "hi!\n\n  there"), (Words{"hi", "!\n\n", " ", " there"}));
}

TEST(PreTokenizer, InvalidUtf8IsCoveredByteByByte) {
  const std::string s = "ab\xFF\xFE cd\xE2\x82";
  std::string joined;
  for (auto w : loom::split_words(loom::SplitPattern::gpt2, s)) joined += w;
  EXPECT_EQ(joined, s);
  EXPECT_EQ(split(loom::SplitPattern::gpt2, s), (Words{"ab", "\xFF\xFE", " cd", "\xE2\x82"}));
}

TEST(PreTokenizer, ByteLevelAlphabet) {
  EXPECT_EQ(loom::byte_to_unicode(' '), 0x120u);   // Ġ
  EXPECT_EQ(loom::byte_to_unicode('\n'), 0x10Au);  // Ċ
  EXPECT_EQ(loom::byte_to_unicode('A'), u'A');
  EXPECT_EQ(loom::byte_to_unicode(0xAD), 0x143u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(loom::unicode_to_byte(loom::byte_to_unicode(std::uint8_t(b))), b);
  EXPECT_EQ(loom::unicode_to_byte(0x144), -1);
  EXPECT_EQ(loom::byte_level_encode(" hi"), "\xC4\xA0hi");
}

// ---- the regex matcher ---------------------------------------------------------------------------

/// The matches of `regex` in `text`, left to right.
Words matches(std::string_view regex, std::string_view text) {
  const loom::Regex re(regex);
  const auto chars = loom::detail::classify(text);
  Words out;
  for (const auto& [b, e] : re.find_all(chars)) {
    const std::size_t from = chars[b].pos, to = e < chars.size() ? chars[e].pos : text.size();
    out.emplace_back(text.substr(from, to - from));
  }
  return out;
}

/// The pieces of a split of `text` by `regex`.
Words split_by(std::string_view regex, std::string_view text, loom::SplitBehavior b = loom::SplitBehavior::isolated,
               bool invert = false) {
  Words out;
  for (auto w : loom::Splitter(regex).split(text, b, invert)) out.emplace_back(w);
  return out;
}

TEST(Regex, AlternationQuantifiersAndAnchors) {
  EXPECT_EQ(matches("a|ab", "ab"), Words{"a"});  // leftmost-first, not longest
  EXPECT_EQ(matches("ab|a", "ab"), Words{"ab"});
  EXPECT_EQ(matches("a{2,3}", "aaaaaaa"), (Words{"aaa", "aaa"}));
  EXPECT_EQ(matches("a{2}", "aaaaa"), (Words{"aa", "aa"}));
  EXPECT_EQ(matches("a{2,}b", "aaab ab"), Words{"aaab"});
  EXPECT_EQ(matches("a+?", "aaa"), (Words{"a", "a", "a"}));
  EXPECT_EQ(matches("a??b", "ab b"), (Words{"ab", "b"}));
  EXPECT_EQ(matches("x{,2}", "x{,2}"), Words{"x{,2}"});  // not a quantifier: literal braces
  EXPECT_EQ(matches(R"(\s+$)", "a  b  "), Words{"  "});   // only the run at the end
  EXPECT_EQ(matches("^a", "aa"), Words{"a"});
  EXPECT_EQ(matches(R"(\Ab|c\z)", "bcbc"), (Words{"b", "c"}));
  EXPECT_EQ(matches(R"(\s+(?!\S))", "a   b  "), (Words{"  ", "  "}));
  EXPECT_EQ(matches("a(?=b)", "ac ab"), Words{"a"});
  EXPECT_EQ(matches("(ab)+", "ababx ab"), (Words{"abab", "ab"}));
  EXPECT_EQ(matches("(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "xIMGIMGABZ IMGIMGABCDEZ"), Words{"IMGIMGABZ"});
  EXPECT_EQ(matches("<sentinel:[0-9]+>", "a<sentinel:12>b<sentinel:>"), Words{"<sentinel:12>"});
  EXPECT_EQ(matches(R"(([\t\n]|    |  ))", "a\t     b"), (Words{"\t", "    "}));
  EXPECT_EQ(matches(".+", "ab\ncd"), (Words{"ab", "cd"}));
  EXPECT_EQ(matches("", "abc"), Words{});  // empty matches give no pieces
}

TEST(Regex, ClassesAndUnicodeProperties) {
  EXPECT_EQ(matches(R"(\p{Lu}+)", "abcDEFgh\u00C9"), (Words{"DEF", "\u00C9"}));
  EXPECT_EQ(matches(R"(\p{Ll}+)", "abcDEF"), Words{"abc"});
  EXPECT_EQ(matches(R"(\p{L}\p{M}+)", "e\u0301\u0302x"), Words{"e\u0301\u0302"});
  EXPECT_EQ(matches(R"(\p{P}+)", "a.,b+c$d\u3002"), (Words{".,", "\u3002"}));
  EXPECT_EQ(matches(R"(\p{S}+)", "a.,b+c$d~"), (Words{"+", "$", "~"}));
  EXPECT_EQ(matches(R"(\pN+)", "x\u0663\u00BD1"), Words{"\u0663\u00BD1"});
  EXPECT_EQ(matches(R"(\P{L}+)", "ab12cd"), Words{"12"});
  EXPECT_EQ(matches(R"(\p{Letter}+|\p{Nd})", "ab1"), (Words{"ab", "1"}));
  EXPECT_EQ(matches(R"(\d+|\w+)", "ab_1 \u0663"), (Words{"ab_1", "\u0663"}));
  EXPECT_EQ(matches(R"([^\s\p{L}]+)", "ab!? 12c"), (Words{"!?", "12"}));
  // CJK ranges written as literal code points.
  EXPECT_EQ(matches("[\u4E00-\u9FA5]+", "abc\u4E2D\u6587def"), Words{"\u4E2D\u6587"});
  EXPECT_EQ(matches("[\u3040-\u309F\u30A0-\u30FF]+", "\u3072\u30AB\u4E00"), Words{"\u3072\u30AB"});
  // Escapes inside classes, ranges between escapes, a literal '-' at the end.
  EXPECT_EQ(matches(R"([\[-`]+)", "a[\\]^_`b"), Words{"[\\]^_`"});
  EXPECT_EQ(matches(R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+)", "x-ab .cd"), (Words{"-ab", ".cd"}));
  EXPECT_EQ(matches("[a-]+", "a-b"), Words{"a-"});
  EXPECT_EQ(matches(R"([\x41-\x{43}\u0044]+)", "ABCDE"), Words{"ABCD"});
  // Bloom's class holds '(', '|' and ')' literally.
  EXPECT_EQ(matches(" ?[^(\\s|.,!?\u2026)]+", "ab(c d|e\u2026f"), (Words{"ab", "c", " d", "e", "f"}));
  // Case-insensitive groups fold ASCII letters (and the code points that fold to them).
  EXPECT_EQ(matches("(?i:'s|'ll)", "'S 'Ll 'x '\u017F"), (Words{"'S", "'Ll", "'\u017F"}));
  EXPECT_EQ(matches("(?i)ab|c", "AB aB C"), (Words{"AB", "aB", "C"}));
  EXPECT_EQ(matches("x(?i:a)b", "xAb xAB"), Words{"xAb"});
  // An invalid UTF-8 byte is matched only by negated items.
  EXPECT_EQ(matches("[^a]", "\xFF"), Words{"\xFF"});
  EXPECT_EQ(matches(R"(\S)", "\xFF"), Words{"\xFF"});
  EXPECT_EQ(matches(R"(\p{L}|\p{S}|\p{C})", "\xFF"), Words{});
}

TEST(Regex, RefusesWhatItDoesNotImplement) {
  for (const char* p : {"(?<=a)b", "(?<!a)b", R"(\bword)", "a*+", R"(\p{Greek})", "[[a]]", "(?x)a", R"(\1)", "(?<n>a)"}) {
    const std::string e = error_of([&] { loom::Regex r(p); });
    EXPECT_NE(e.find("[loom.unsupported.regex]"), std::string::npos) << p << ": " << e;
    EXPECT_NE(e.find(p), std::string::npos) << e;
  }
  for (const char* p : {"(a", "a)", "[a", "a{3,2}", "*a", "\\", "[b-a]", R"(\p{L)", "\xFF"}) {
    const std::string e = error_of([&] { loom::Regex r(p); });
    EXPECT_NE(e.find("[loom.format.regex]"), std::string::npos) << p << ": " << e;
  }
}

TEST(Regex, PathologicalBacktrackingIsStopped) {
  const loom::Regex r("(a*)*b");
  const auto chars = loom::detail::classify(std::string(40, 'a'));
  const std::string e = error_of([&] { r.find_all(chars); });
  EXPECT_NE(e.find("[loom.unsupported.regex]"), std::string::npos) << e;
  // Deep nesting and long repeats of multi-character groups are refused, not a stack overflow.
  const std::string deep = std::string(5000, '(') + "a" + std::string(5000, ')');
  EXPECT_NE(error_of([&] { loom::Regex x(deep); }).find("[loom.unsupported.regex]"), std::string::npos);
  const loom::Regex pairs("(ab)+");
  std::string abs;
  for (int k = 0; k < 50000; ++k) abs += "ab";
  EXPECT_NE(error_of([&] { pairs.find_all(loom::detail::classify(abs)); }).find("[loom.unsupported.regex]"), std::string::npos);
  EXPECT_EQ(matches("(ab)+", "abababx"), Words{"ababab"});
  // Long runs through single-character repeats stay cheap (no recursion per character).
  const std::string spaces(200000, ' ');
  EXPECT_EQ(matches(R"(\s+(?!\S)|\s+)", spaces + "x"), (Words{std::string(199999, ' '), " "}));
}

// The hand-written matchers of the three common patterns split exactly as the general matcher
// runs the same regexes, on random text over characters those patterns treat differently.
TEST(Regex, HandWrittenMatchersAgreeWithTheGeneralOne) {
  const std::vector<std::string> alphabet = {"a", "Z", "s", "S", "l", "L", "e", "\u00E9", "\u4E2D", "\u017F", " ", " ", "  ",
                                             "\n", "\r", "\t", "\u00A0", "\u3000", "1", "7", "\u0663", "\u00BD", "'", "'",
                                             "!", "$", ".", "\u0301", "\xFF", "\xE2\x82", "\xF0\x9F\xA6\x99"};
  std::mt19937 rng(29);
  for (const auto pattern : {loom::kGpt2SplitRegex, loom::kLlama3SplitRegex, loom::kQwen2SplitRegex}) {
    const auto fast = loom::recognize_split_regex(pattern);
    ASSERT_TRUE(fast);
    for (int iter = 0; iter < 3000; ++iter) {
      std::string text;
      const int len = int(rng() % 12);
      for (int k = 0; k < len; ++k) text += alphabet[rng() % alphabet.size()];
      const Words general = matches(pattern, text);
      EXPECT_EQ(split(*fast, text), general) << pattern << " on \"" << show(text) << "\"";
    }
  }
}

TEST(Split, Behaviors) {
  using B = loom::SplitBehavior;
  const std::string dash = loom::regex_escape("-");
  const std::string text = "the-final--countdown";
  EXPECT_EQ(split_by(dash, text, B::isolated), (Words{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split_by(dash, text, B::removed), (Words{"the", "final", "countdown"}));
  EXPECT_EQ(split_by(dash, text, B::merged_with_previous), (Words{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split_by(dash, text, B::merged_with_next), (Words{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split_by(dash, text, B::contiguous), (Words{"the", "-", "final", "--", "countdown"}));
  // invert: the gaps are the matches.
  EXPECT_EQ(split_by(dash, text, B::removed, true), (Words{"-", "-", "-"}));
  EXPECT_EQ(split_by(dash, text, B::merged_with_previous, true), (Words{"the", "-final", "-", "-countdown"}));
  // Literal patterns escape what is special to the regex.
  EXPECT_EQ(loom::regex_escape("a.b*\n c"), "a\\.b\\*\\n c");
  EXPECT_EQ(split_by(loom::regex_escape(". "), "a. b.c. "), (Words{"a", ". ", "b.c", ". "}));
}

// ---- the GGUF pre-tokenizer table ------------------------------------------------------------------

TEST(BpePreTypes, EveryRowCompilesAndEveryNameIsFound) {
  std::set<std::string_view> seen;
  for (const auto& row : loom::kBpePreTypes) {
    for (const auto regex : row.regexes) EXPECT_NO_THROW(loom::Splitter{regex}) << regex;
    for (const auto name : row.names) {
      EXPECT_TRUE(seen.insert(name).second) << "duplicate name " << name;
      EXPECT_EQ(loom::find_bpe_pre_type(name), &row) << name;
    }
  }
  // The names llama.cpp knows (src/llama-vocab.cpp) are all there.
  for (const char* name : {"default", "llama3", "llama-v3", "llama-bpe", "falcon3", "deepseek-llm", "deepseek-coder",
                           "deepseek-v3", "falcon", "mpt", "starcoder", "gpt-2", "phi-2", "jina-es", "jina-de",
                           "gigachat", "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe",
                           "refact", "command-r", "qwen2", "deepseek-r1-qwen", "stablelm2", "olmo", "dbrx",
                           "smaug-bpe", "poro-chat", "chatglm-bpe", "viking", "jais", "tekken", "smollm",
                           "codeshell", "bloom", "gpt3-finnish", "exaone", "chameleon", "minerva-7b", "megrez"})
    EXPECT_NE(loom::find_bpe_pre_type(name), nullptr) << name;
  EXPECT_EQ(loom::find_bpe_pre_type("mystery"), nullptr);
}

TEST(BpePreTypes, SplitRulesOnSamples) {
  auto words = [](std::string_view name, std::string_view text) {
    const auto* row = loom::find_bpe_pre_type(name);
    EXPECT_NE(row, nullptr) << name;
    Words ws{std::string(text)};
    for (const auto regex : row->regexes) {
      Words next;
      for (const auto& w : ws)
        for (auto v : loom::Splitter(regex).split(w)) next.emplace_back(v);
      ws = next;
    }
    return ws;
  };
  EXPECT_EQ(words("starcoder", "x = 123;"), (Words{"x", " =", " ", "1", "2", "3", ";"}));
  EXPECT_EQ(words("falcon", "a+=1234, b"), (Words{"a", "+=", "123", "4", ",", " b"}));
  EXPECT_EQ(words("default", "a+=1234, b"), (Words{"a", "+=", "123", "4", ",", " b"}));
  EXPECT_EQ(words("deepseek-coder", "int x=10;\n\u4E2D\u6587"),
            (Words{"int", " x", "=", "1", "0", ";", "\n", "\u4E2D\u6587"}));
  // DeepSeek-LLM's third regex, [!-/:-~...], spans the ASCII letters too: it cuts " über" after ü.
  EXPECT_EQ(words("deepseek-llm", "Hi \u00FCber!  \n12"), (Words{"Hi", " \u00FC", "ber", "!", "  ", "\n", "12"}));
  EXPECT_EQ(words("tekken", "helloWorld HTTPServer"), (Words{"hello", "World", " HTTPServer"}));
  EXPECT_EQ(words("bloom", "Hi, there. A"), (Words{"Hi", ",", " there", ".", " A"}));
  // (Chameleon's sentinel regex isolates "<sentinel:3>", its punctuation regex then cuts it up: in
  // llama.cpp as here, a real sentinel token is matched as a special token before any regex.)
  EXPECT_EQ(words("chameleon", "a<sentinel:3>  b1"), (Words{"a", "<", "sentinel", ":", "3", ">", "  ", "b", "1"}));
  EXPECT_EQ(words("deepseek-v3", "1234 \u3072\u3089\u304C\u306A.x"),
            (Words{"123", "4", " ", "\u3072\u3089\u304C\u306A", ".x"}));
}

// ---- GPT-2 (tokenizer.json, byte-level BPE with ranked merges) -------------------------------

TEST(Gpt2Json, LlamaCppVectors) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/gpt2-tokenizer.json");
  LOOM_REQUIRE_FIXTURE(inp, "tokenizers/ggml-vocab-gpt-2.gguf.inp");
  LOOM_REQUIRE_FIXTURE(out, "tokenizers/ggml-vocab-gpt-2.gguf.out");
  check_vectors(gpt2(), inp, out, false);
}

TEST(Gpt2Json, HelloWorldAndMetadata) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/gpt2-tokenizer.json");
  const auto& t = gpt2();
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.encode("Hello world, this is a test."), (Ids{15496, 995, 11, 428, 318, 257, 1332, 13}));
  EXPECT_FALSE(t.add_bos());
  EXPECT_FALSE(t.add_eos());
  EXPECT_EQ(t.eos_id(), 50256);
  EXPECT_TRUE(t.is_end_of_generation(50256));
  EXPECT_FALSE(t.is_end_of_generation(13));
  EXPECT_EQ(t.token_to_piece(995), " world");
  EXPECT_EQ(t.decode(Ids{15496, 995, 11, 428, 318, 257, 1332, 13}), "Hello world, this is a test.");
}

TEST(Gpt2Json, SpecialTokensParsedOrPlain) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/gpt2-tokenizer.json");
  const auto& t = gpt2();
  const std::string text = "Hi<|endoftext|>there";
  const Ids parsed = t.encode(text, false, true);
  EXPECT_EQ(parsed, (Ids{17250, 50256, 8117}));
  const Ids plain = t.encode(text, false, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50256), 0);
  EXPECT_GT(plain.size(), 3u);
  EXPECT_EQ(t.decode(plain), text);
  // Control tokens render only on request.
  EXPECT_EQ(t.decode(parsed), "Hithere");
  EXPECT_EQ(t.decode(parsed, true), text);
}

TEST(Gpt2Json, InvalidUtf8RoundTrips) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/gpt2-tokenizer.json");
  const auto& t = gpt2();
  for (const std::string& s : std::vector<std::string>{"\xFF\xFE abc \x80", "caf\xC3", std::string("\xED\xA0\x80 x", 5),
                                                       std::string("a\0b", 3)}) {
    const Ids ids = t.encode(s, false, false);
    EXPECT_EQ(t.decode(ids), s) << show(s);
    EXPECT_EQ(stream_decode(t, ids), loom::unicode::sanitize_utf8(s)) << show(s);
  }
}

// ---- LLaMA-2 (tokenizer.json, SentencePiece-style BPE with byte fallback) ---------------------

TEST(Llama2Json, LlamaCppVectors) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/llama2-tokenizer.nbsp-restored.json");
  LOOM_REQUIRE_FIXTURE(inp, "tokenizers/ggml-vocab-llama-spm.gguf.inp");
  LOOM_REQUIRE_FIXTURE(out, "tokenizers/ggml-vocab-llama-spm.gguf.out");
  check_vectors(llama2(), inp, out, true);
}

TEST(Llama2Json, HelloWorldAndMetadata) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/llama2-tokenizer.nbsp-restored.json");
  const auto& t = llama2();
  EXPECT_EQ(t.vocab_size(), 32000);
  EXPECT_EQ(t.encode("Hello world, this is a test.", false),
            (Ids{15043, 3186, 29892, 445, 338, 263, 1243, 29889}));
  EXPECT_EQ(t.encode("Hello world, this is a test."),
            (Ids{1, 15043, 3186, 29892, 445, 338, 263, 1243, 29889}));
  EXPECT_TRUE(t.add_bos());
  EXPECT_FALSE(t.add_eos());
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_TRUE(t.is_end_of_generation(2));
  EXPECT_EQ(t.token_type(13), loom::TokenType::byte);
  EXPECT_EQ(t.token_to_piece(13), "\n");
  EXPECT_EQ(t.token_to_piece(3186), " world");
  // NBSP pieces from the README: "a\u00a0\u00a0b" → [263, 8655, 29890].
  EXPECT_EQ(t.encode("a\xC2\xA0\xC2\xA0" "b", false), (Ids{263, 8655, 29890}));
}

TEST(Llama2Json, SpecialTokensParsedOrPlain) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/llama2-tokenizer.nbsp-restored.json");
  const auto& t = llama2();
  const Ids parsed = t.encode("<s>Hello</s>", false, true);
  // Each text fragment gets its own dummy prefix (llama.cpp behaviour).
  EXPECT_EQ(parsed, (Ids{1, 15043, 2}));
  const Ids plain = t.encode("<s>Hello</s>", false, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 2), 0);
  EXPECT_EQ(t.decode(plain), "<s>Hello</s>");
}

TEST(Llama2Json, InvalidUtf8RoundTripsThroughByteFallback) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/llama2-tokenizer.nbsp-restored.json");
  const auto& t = llama2();
  for (const std::string& s : std::vector<std::string>{"\xFF\xFE abc \x80", "caf\xC3", "x\xF0\x9F\xA6"}) {
    const Ids ids = t.encode(s, true, false);
    EXPECT_EQ(t.decode(ids), s) << show(s);
    EXPECT_EQ(stream_decode(t, ids), loom::unicode::sanitize_utf8(s)) << show(s);
  }
}

TEST(Llama2Json, StreamingWaitsForCompleteCharacters) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/llama2-tokenizer.nbsp-restored.json");
  const auto& t = llama2();
  // "🦙" is 4 byte tokens: 243 162 169 156 (<0xF0><0x9F><0xA6><0x99>).
  loom::StreamDecoder d(t);
  EXPECT_EQ(d.push(1), "");
  EXPECT_EQ(d.push(29871), "");  // "▁": the dummy-prefix space, stripped at the start
  EXPECT_EQ(d.push(243), "");
  EXPECT_EQ(d.push(162), "");
  EXPECT_EQ(d.push(169), "");
  EXPECT_EQ(d.push(156), "\xF0\x9F\xA6\x99");
  EXPECT_EQ(d.push(243), "");
  EXPECT_EQ(d.push(29889), "\xEF\xBF\xBD.");  // broken sequence → U+FFFD, then '.'
  EXPECT_EQ(d.push(243), "");
  EXPECT_EQ(d.finish(), "\xEF\xBF\xBD");

  // Streaming only the continuation of an already-printed prompt keeps its leading space.
  const Ids prompt = t.encode("Hello");
  loom::StreamDecoder cont(t);
  cont.skip(prompt);
  EXPECT_EQ(cont.push(3186), " world");
  loom::StreamDecoder fresh(t);
  fresh.skip(Ids{1});  // only BOS shown so far: the first word loses the dummy-prefix space
  EXPECT_EQ(fresh.push(15043), "Hello");
}

// ---- llama2.c tokenizer.bin ------------------------------------------------------------------

TEST(Llama2c, MatchesSentencePieceVectors) {
  LOOM_REQUIRE_FIXTURE(bin, "tokenizers/llama2/tokenizer.bin");
  LOOM_REQUIRE_FIXTURE(inp, "tokenizers/ggml-vocab-llama-spm.gguf.inp");
  LOOM_REQUIRE_FIXTURE(out, "tokenizers/ggml-vocab-llama-spm.gguf.out");
  const Tokenizer t = loom::io::load_llama2c_tokenizer(bin, 32000);
  const auto cases = read_cases(inp);
  const auto expected = read_expected(out);
  ASSERT_EQ(cases.size(), 46u);
  std::size_t ascii = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(loom::detail::cat("case ", i, ": \"", show(cases[i]), "\""));
    EXPECT_EQ(t.encode(cases[i], false, false), expected[i]);
    // run.c decode strips the dummy-prefix space after BOS.
    const Ids with_bos = t.encode(cases[i], true, false);
    EXPECT_EQ(with_bos.front(), 1);
    EXPECT_EQ(t.decode(with_bos), cases[i]);
    EXPECT_EQ(stream_decode(t, with_bos), cases[i]);
    ascii += std::all_of(cases[i].begin(), cases[i].end(), [](char c) { return (unsigned char)c < 0x80; });
  }
  EXPECT_GT(ascii, 30u);
  EXPECT_EQ(t.encode("Hello world, this is a test."), (Ids{1, 15043, 3186, 29892, 445, 338, 263, 1243, 29889}));
  EXPECT_EQ(t.token_to_piece(13), "\n");
  EXPECT_EQ(t.piece(1), "\n<s>\n");
  EXPECT_EQ(t.token_to_piece(1), "");
  EXPECT_EQ(t.token_to_piece(1, true), "\n<s>\n");
}

TEST(Llama2c, PlaceholderDecodesToIdPieces) {
  LOOM_REQUIRE_FIXTURE(bin, "stories260K/tok512_placeholder.bin");
  const Tokenizer t = loom::io::load_llama2c_tokenizer(bin, 512);
  EXPECT_EQ(t.vocab_size(), 512);
  for (std::int32_t i = 0; i < 512; ++i)
    EXPECT_EQ(t.token_to_piece(i, /*render_special=*/true), loom::detail::cat(" <", i, ">"));
  // As run.c prints them: the piece right after BOS loses its leading space.
  EXPECT_EQ(t.decode(Ids{1, 461, 461, 401}), "<461> <461> <401>");
  EXPECT_EQ(t.decode(Ids{461, 401}), " <461> <401>");
  EXPECT_EQ(stream_decode(t, Ids{1, 461, 461, 401}), "<461> <461> <401>");
  EXPECT_EQ(t.encode(""), Ids{1});
}

// ---- broken inputs ---------------------------------------------------------------------------

std::string bin_file(std::int32_t max_len, const std::vector<std::pair<float, std::string>>& entries) {
  std::string s;
  auto put = [&](const void* p, std::size_t n) { s.append(static_cast<const char*>(p), n); };
  put(&max_len, 4);
  for (const auto& [score, piece] : entries) {
    const auto len = std::int32_t(piece.size());
    put(&score, 4);
    put(&len, 4);
    s += piece;
  }
  return s;
}

loom::Tokenizer from_bin(const std::string& bytes, std::int32_t n) {
  return loom::io::load_llama2c_tokenizer_bytes(std::as_bytes(std::span(bytes.data(), bytes.size())), n, "test.bin");
}

TEST(Broken, Llama2cFiles) {
  const std::vector<std::pair<float, std::string>> good = {{0, "<unk>"}, {0, "<s>"}, {0, "</s>"}, {-1, "a"}, {-2, "b"}, {-0.5f, "ab"}};
  const std::string ok = bin_file(5, good);
  const Tokenizer t = from_bin(ok, 6);
  // No " " piece and no byte tokens: the dummy prefix is dropped; "ab" (score -0.5) wins.
  EXPECT_EQ(t.encode("ab", false), Ids{5});
  EXPECT_EQ(t.encode("abab"), (Ids{1, 5, 5}));

  std::string e = error_of([&] { from_bin(ok.substr(0, ok.size() - 1), 6); });
  EXPECT_NE(e.find("[loom.format.llama2c]"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated: token 5"), std::string::npos) << e;
  EXPECT_NE(e.find("test.bin"), std::string::npos) << e;

  e = error_of([&] { from_bin(ok.substr(0, 2), 6); });
  EXPECT_NE(e.find("max_token_length"), std::string::npos) << e;

  e = error_of([&] { from_bin(ok, 7); });  // fewer entries than vocab_size
  EXPECT_NE(e.find("[loom.format.llama2c]"), std::string::npos) << e;

  e = error_of([&] { from_bin(ok, 1000000000); });
  EXPECT_NE(e.find("fewer than 1000000000 entries"), std::string::npos) << e;

  std::string neg = ok;
  const std::int32_t minus = -5;
  std::memcpy(neg.data() + 4 + 4, &minus, 4);  // token 0's length
  e = error_of([&] { from_bin(neg, 6); });
  EXPECT_NE(e.find("token 0: negative length -5"), std::string::npos) << e;

  std::string huge = ok;
  const std::int32_t big = 0x7fffffff;
  std::memcpy(huge.data() + 4 + 4, &big, 4);
  e = error_of([&] { from_bin(huge, 6); });
  EXPECT_NE(e.find("[loom.format.llama2c]"), std::string::npos) << e;

  e = error_of([&] { from_bin(bin_file(-1, good), 6); });
  EXPECT_NE(e.find("max_token_length is negative"), std::string::npos) << e;

  e = error_of([&] { from_bin(ok, 0); });
  EXPECT_NE(e.find("[loom.invalid_argument.llama2c]"), std::string::npos) << e;

  e = error_of([&] { loom::io::load_llama2c_tokenizer("/nonexistent/tokenizer.bin", 10); });
  EXPECT_NE(e.find("[loom.io."), std::string::npos) << e;
}

std::string mini_json(const std::string& model, const std::string& extra = "") {
  return R"({"version":"1.0","added_tokens":[],"normalizer":null,)" + extra +
         R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
           "decoder":{"type":"ByteLevel"},"model":)" + model + "}";
}
const std::string kVocab = R"("vocab":{"a":0,"b":1,"ab":2,"c":3})";

TEST(Broken, TokenizerJson) {
  using loom::io::load_tokenizer_json_string;
  auto err = [&](const std::string& json) { return error_of([&] { load_tokenizer_json_string(json, "t.json"); }); };

  // A good one first: merges as strings and as pairs.
  const Tokenizer ok = load_tokenizer_json_string(mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":["a b"]})"));
  EXPECT_EQ(ok.encode("abc", false), (Ids{2, 3}));
  const Tokenizer ok2 = load_tokenizer_json_string(mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":[["a","b"]]})"));
  EXPECT_EQ(ok2.encode("cab", false), (Ids{3, 2}));

  std::string e = err(mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":["a b","a x"]})"));
  EXPECT_NE(e.find("[loom.format.tokenizer.json]"), std::string::npos) << e;
  EXPECT_NE(e.find("model.merges[1]"), std::string::npos) << e;
  EXPECT_NE(e.find("'x'"), std::string::npos) << e;
  EXPECT_NE(e.find("t.json"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":["b c"]})"));  // "bc" not in vocab
  EXPECT_NE(e.find("merged token 'bc'"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":["abc"]})"));
  EXPECT_NE(e.find("model.merges[0]"), std::string::npos) << e;

  e = err(R"({"model": {"type":"BPE", "vocab": )");
  EXPECT_NE(e.find("invalid JSON"), std::string::npos) << e;

  e = err("[1,2,3]");
  EXPECT_NE(e.find("root"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"BPE","vocab":{"a":"zero"},"merges":[]})"));
  EXPECT_NE(e.find("model.vocab['a']"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"BPE","vocab":[1,2],"merges":[]})"));
  EXPECT_NE(e.find("model.vocab"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":"a b"})"));
  EXPECT_NE(e.find("model.merges"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":[42]})"));
  EXPECT_NE(e.find("model.merges[0]"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"BPE","vocab":{"a":0,"b":0},"merges":[]})"));
  EXPECT_NE(e.find("also used"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"BPE","vocab":{"a":0,"b":99999999},"merges":[]})"));
  EXPECT_NE(e.find("far beyond"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"Unigram","vocab":[["a",0.0]]})"));
  EXPECT_NE(e.find("[loom.unsupported.tokenizer.json]"), std::string::npos) << e;
  EXPECT_NE(e.find("Unigram"), std::string::npos) << e;

  e = err(mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":[]})", R"("post_processor":{"type":"Mystery"},)"));
  EXPECT_NE(e.find("Mystery"), std::string::npos) << e;

  // A split regex loom cannot run (here: lookbehind) is quoted with its JSON path.
  const std::string split = R"({"version":"1.0","added_tokens":[],"normalizer":null,
    "pre_tokenizer":{"type":"Split","pattern":{"Regex":"(?<=x)\\w+"},"behavior":"Isolated","invert":false},
    "decoder":null,"model":{"type":"BPE",)" + kVocab + R"(,"merges":[]}})";
  e = err(split);
  EXPECT_NE(e.find("[loom.unsupported.tokenizer.json]"), std::string::npos) << e;
  EXPECT_NE(e.find("pre_tokenizer.pattern.Regex"), std::string::npos) << e;
  EXPECT_NE(e.find("(?<=x)\\w+"), std::string::npos) << e;
  EXPECT_NE(e.find("lookbehind"), std::string::npos) << e;

  e = err(R"({"model":{"type":"BPE",)" + kVocab + R"(,"merges":[]},"added_tokens":[{"id":"x","content":"<s>"}]})");
  EXPECT_NE(e.find("added_tokens[0].id"), std::string::npos) << e;
}

TEST(Broken, NormalizerUnsupported) {
  const std::string j = R"({"normalizer":{"type":"NFKC"},"model":{"type":"BPE",)" + kVocab + R"(,"merges":[]}})";
  const std::string e = error_of([&] { loom::io::load_tokenizer_json_string(j, "n.json"); });
  EXPECT_NE(e.find("[loom.unsupported.tokenizer.json]"), std::string::npos) << e;
  EXPECT_NE(e.find("NFKC"), std::string::npos) << e;
}

TEST(Broken, BadTokenIdInDecode) {
  const Tokenizer ok = loom::io::load_tokenizer_json_string(mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":[]})"));
  const std::string e = error_of([&] { ok.decode(Ids{0, 7}); });
  EXPECT_NE(e.find("[loom.invalid_argument.tokenizer]"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { ok.token_to_piece(-1); }).find("token id -1"), std::string::npos);
}

// ---- LLaMA-3-style tokenizer.json built by hand ----------------------------------------------

TEST(Llama3StyleJson, SplitThenByteLevelWithIgnoreMerges) {
  // Byte-level vocab: all 256 byte symbols, plus a few merged pieces.
  std::string vocab;
  int id = 0;
  for (int b = 0; b < 256; ++b) {
    nlohmann::json key = loom::unicode::encode_utf8(loom::byte_to_unicode(std::uint8_t(b)));
    if (id) vocab += ',';
    vocab += key.dump();
    vocab += ':';
    vocab += std::to_string(id);
    ++id;
  }
  const std::string G = "\xC4\xA0";  // Ġ
  for (const std::string& p : std::vector<std::string>{"he", "ll", "hell", "hello", G + "w", G + "wor", "or", "12", "123"}) {
    vocab += "," + nlohmann::json(p).dump() + ":" + std::to_string(id++);
  }
  const std::string merges =
      nlohmann::json(std::vector<std::string>{"h e", "l l", "he ll", "hell o", G + " w", "o r", G + "w or", "1 2", "12 3"}).dump();
  const std::string json = std::string(R"({"added_tokens":[{"id":)") + std::to_string(id) +
      R"(,"content":"<|eot_id|>","special":true},{"id":)" + std::to_string(id + 1) +
      R"(,"content":"<|begin_of_text|>","special":true}],
    "pre_tokenizer":{"type":"Sequence","pretokenizers":[
      {"type":"Split","pattern":{"Regex":)" + nlohmann::json(std::string(loom::kLlama3SplitRegex)).dump() +
      R"(},"behavior":"Isolated","invert":false},
      {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]},
    "post_processor":{"type":"Sequence","processors":[{"type":"ByteLevel"},{"type":"TemplateProcessing",
      "single":[{"SpecialToken":{"id":"<|begin_of_text|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
      "special_tokens":{"<|begin_of_text|>":{"id":"<|begin_of_text|>","ids":[)" + std::to_string(id + 1) + R"(]}}}]},
    "decoder":{"type":"ByteLevel"},
    "model":{"type":"BPE","ignore_merges":true,"vocab":{)" + vocab + "},\"merges\":" + merges + "}}";
  const std::string config = R"({"bos_token":"<|begin_of_text|>","eos_token":"<|eot_id|>"})";
  const Tokenizer t = loom::io::load_tokenizer_json_string(json, "llama3.json", config);
  const std::int32_t base = 256;
  const std::int32_t eot = id, bot = id + 1;
  EXPECT_EQ(t.bos_id(), bot);
  EXPECT_EQ(t.eos_id(), eot);
  EXPECT_TRUE(t.add_bos());
  EXPECT_TRUE(t.is_end_of_generation(eot));
  // "hello" is a piece: taken as is (ignore_merges); " world": Ġwor + l + d; "1234": "123" + "4".
  const Ids ids = t.encode("hello world1234<|eot_id|>", true, true);
  EXPECT_EQ(ids, (Ids{bot, base + 3, base + 5, 'l', 'd', base + 8, '4', eot}));
  EXPECT_EQ(t.decode(ids), "hello world1234");
  EXPECT_EQ(t.decode(ids, true), "<|begin_of_text|>hello world1234<|eot_id|>");
}

// ---- GGUF vocabularies, read by loom's GGUF reader ----------------------------------------------

loom::io::GgufVocab read_gguf_vocab(const std::filesystem::path& path) {
  return loom::io::read_gguf_vocab(loom::io::GgufFile(path));
}

TEST(Gguf, Gpt2VocabRankedMerges) {
  LOOM_REQUIRE_FIXTURE(gguf, "tokenizers/ggml-vocab-gpt-2.gguf");
  LOOM_REQUIRE_FIXTURE(inp, "tokenizers/ggml-vocab-gpt-2.gguf.inp");
  LOOM_REQUIRE_FIXTURE(out, "tokenizers/ggml-vocab-gpt-2.gguf.out");
  const Tokenizer t(loom::io::gguf_tokenizer_spec(read_gguf_vocab(gguf), gguf.string()));
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_FALSE(t.add_bos());  // no add_bos_token key
  EXPECT_EQ(t.bos_id(), 50256);
  EXPECT_TRUE(t.is_end_of_generation(50256));
  check_vectors(t, inp, out, false);
}

TEST(Gguf, LlamaSpmVocabScores) {
  LOOM_REQUIRE_FIXTURE(gguf, "tokenizers/ggml-vocab-llama-spm.gguf");
  LOOM_REQUIRE_FIXTURE(inp, "tokenizers/ggml-vocab-llama-spm.gguf.inp");
  LOOM_REQUIRE_FIXTURE(out, "tokenizers/ggml-vocab-llama-spm.gguf.out");
  const Tokenizer t(loom::io::gguf_tokenizer_spec(read_gguf_vocab(gguf), gguf.string()));
  EXPECT_TRUE(t.add_bos());
  EXPECT_FALSE(t.add_eos());
  EXPECT_EQ(t.token_type(0), loom::TokenType::unknown);
  EXPECT_EQ(t.encode("Hello world, this is a test."), (Ids{1, 15043, 3186, 29892, 445, 338, 263, 1243, 29889}));
  check_vectors(t, inp, out, true);
}

TEST(Gguf, BadVocabs) {
  loom::io::GgufVocab v;
  v.model = "gpt2";
  v.tokens = {"a", "b", "ab"};
  v.merges = {"a b"};
  EXPECT_EQ(Tokenizer(loom::io::gguf_tokenizer_spec(v, "v.gguf")).encode("ab"), Ids{2});
  v.merges = {"a c"};
  std::string e = error_of([&] { loom::io::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("tokenizer.ggml.merges[0]"), std::string::npos) << e;
  v.merges = {"b a"};  // "ba" is not a piece: rejected when the Tokenizer is built
  e = error_of([&] { Tokenizer(loom::io::gguf_tokenizer_spec(v, "v.gguf")); });
  EXPECT_NE(e.find("merge 0"), std::string::npos) << e;
  v.merges = {};
  v.pre = "mystery";
  e = error_of([&] { loom::io::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("[loom.unsupported.tokenizer]"), std::string::npos) << e;
  EXPECT_NE(e.find("'mystery'"), std::string::npos) << e;
  EXPECT_NE(e.find("smollm"), std::string::npos) << e;  // the known names are listed
  v.pre = "";
  v.model = "bert";
  e = error_of([&] { loom::io::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("bert"), std::string::npos) << e;
  v.model = "llama";
  e = error_of([&] { loom::io::gguf_tokenizer_spec(v, "v.gguf"); });  // no scores
  EXPECT_NE(e.find("tokenizer.ggml.scores"), std::string::npos) << e;
  v.scores = {0, 0, 0};
  v.token_types = {1, 9, 1};
  e = error_of([&] { loom::io::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("token_type[1]"), std::string::npos) << e;
  v.token_types = {};
  v.bos_id = 7;
  e = error_of([&] { loom::io::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("bos_token_id"), std::string::npos) << e;
}

// ---- llama.cpp's test vectors for every vocabulary it ships ----------------------------------------
//
// tests/data/llama-vocab holds the .inp/.out files of llama.cpp's models/ggml-vocab-*.gguf (see its
// README); the vocabulary GGUFs themselves (1-4 MB each) are read from $LOOM_LLAMA_VOCABS, or from
// the shared fixtures for the two that live there. A vocabulary that is absent is SKIPPED.

struct LlamaVocabCase {
  const char* name;
  bool spm;  // SentencePiece (tokenizer.ggml.model = llama)
};

class LlamaVocab : public ::testing::TestWithParam<LlamaVocabCase> {};

TEST_P(LlamaVocab, MatchesLlamaCppVectors) {
  const std::string file = std::string("ggml-vocab-") + GetParam().name + ".gguf";
  const std::filesystem::path data = std::filesystem::path(LOOM_SOURCE_DIR) / "tests/data/llama-vocab";
  std::filesystem::path gguf;
  if (const char* dir = std::getenv("LOOM_LLAMA_VOCABS"); dir && *dir) gguf = std::filesystem::path(dir) / file;
  if (gguf.empty() || !std::filesystem::exists(gguf)) gguf = loom::test::fixtures_root() / "tokenizers" / file;
  if (!std::filesystem::exists(gguf))
    GTEST_SKIP() << file << " not found: set LOOM_LLAMA_VOCABS to a folder holding llama.cpp's models/ggml-vocab-*.gguf"
                 << " (tests/data/llama-vocab/README.md)";
  const Tokenizer t(loom::io::gguf_tokenizer_spec(read_gguf_vocab(gguf), gguf.string()));
  const auto cases = read_cases(data / (file + ".inp"));
  const auto expected = read_expected(data / (file + ".out"));
  ASSERT_EQ(cases.size(), expected.size());
  std::size_t same = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) same += t.encode(cases[i], false, false) == expected[i];
  std::printf("[ vectors  ] %s: %zu/%zu cases give llama.cpp's ids\n", GetParam().name, same, cases.size());
  check_vectors(t, data / (file + ".inp"), data / (file + ".out"), GetParam().spm);
}

INSTANTIATE_TEST_SUITE_P(
    All, LlamaVocab,
    ::testing::Values(LlamaVocabCase{"gpt-2", false}, LlamaVocabCase{"llama-spm", true}, LlamaVocabCase{"phi-3", true},
                      LlamaVocabCase{"deepseek-llm", false}, LlamaVocabCase{"deepseek-coder", false},
                      LlamaVocabCase{"starcoder", false}, LlamaVocabCase{"refact", false},
                      LlamaVocabCase{"falcon", false}, LlamaVocabCase{"mpt", false},
                      LlamaVocabCase{"llama-bpe", false}, LlamaVocabCase{"qwen2", false},
                      LlamaVocabCase{"deepseek-r1-qwen", false}, LlamaVocabCase{"command-r", false},
                      LlamaVocabCase{"roberta-bpe", false}, LlamaVocabCase{"chameleon", false}),
    [](const ::testing::TestParamInfo<LlamaVocabCase>& info) {
      std::string n = info.param.name;
      std::replace(n.begin(), n.end(), '-', '_');
      return n;
    });

// ---- the same model as tokenizer.json and as GGUF ------------------------------------------------
//
// A GGUF names its split rule; the model's tokenizer.json spells it as pre-tokenizer steps. Built
// from the GPT-2 vocabulary, both must give the same ids for every pre-tokenizer type.

/// The GPT-2 tokenizer.json with its pre-tokenizer replaced by `pre_tokenizer`.
std::string gpt2_json_with(const nlohmann::json& pre_tokenizer, bool ignore_merges) {
  static const nlohmann::json base =
      nlohmann::json::parse(loom::test::read_text(loom::test::fixtures_root() / "tokenizers/hf/gpt2-tokenizer.json"));
  nlohmann::json j = base;
  j["pre_tokenizer"] = pre_tokenizer;
  j["model"]["ignore_merges"] = ignore_merges;
  return j.dump();
}

std::vector<std::string> sample_texts() {
  auto texts = read_cases(std::filesystem::path(LOOM_SOURCE_DIR) / "tests/data/llama-vocab/ggml-vocab-gpt-2.gguf.inp");
  for (const char* extra : {"x = 123;\n\tif (a<=b) { return 4567; }", "helloWorld HTTPServer camelCase",
                            "DeepSeek: \u4E2D\u6587 \u3072\u3089\u304C\u306A \uD55C\uAD6D\uC5B4 \u00FCber!",
                            "a<sentinel:3>  IMGIMGABZ b\t\tc", "Hi, there. A\u2026 \u3002ok", "  trailing  \n\n"})
    texts.emplace_back(extra);
  return texts;
}

TEST(JsonAndGguf, EveryPreTokenizerTypeAsSplitSteps) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/gpt2-tokenizer.json");
  LOOM_REQUIRE_FIXTURE(gguf, "tokenizers/ggml-vocab-gpt-2.gguf");
  const auto texts = sample_texts();
  loom::io::GgufVocab v = read_gguf_vocab(gguf);
  for (const auto& row : loom::kBpePreTypes) {
    SCOPED_TRACE(std::string(row.names.front()));
    nlohmann::json steps = nlohmann::json::array();
    for (const auto regex : row.regexes)
      steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}});
    steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
    const Tokenizer from_json = loom::io::load_tokenizer_json_string(
        gpt2_json_with({{"type", "Sequence"}, {"pretokenizers", steps}}, row.ignore_merges), "split.json");
    v.pre = row.names.front();
    const Tokenizer from_gguf(loom::io::gguf_tokenizer_spec(v, gguf.string()));
    for (const auto& text : texts) EXPECT_EQ(from_json.encode(text, false), from_gguf.encode(text, false)) << show(text);
  }
}

// SmolLM's and StarCoder's tokenizer.json isolate digits with a Digits step, then split with
// ByteLevel's own regex: the GGUF names for that rule give the same ids.
TEST(JsonAndGguf, DigitsThenByteLevelIsSmolLM) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/gpt2-tokenizer.json");
  LOOM_REQUIRE_FIXTURE(gguf, "tokenizers/ggml-vocab-gpt-2.gguf");
  const nlohmann::json pre = nlohmann::json::parse(R"({"type":"Sequence","pretokenizers":[
      {"type":"Digits","individual_digits":true},
      {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}]})");
  const Tokenizer from_json = loom::io::load_tokenizer_json_string(gpt2_json_with(pre, false), "smollm.json");
  loom::io::GgufVocab v = read_gguf_vocab(gguf);
  for (const char* name : {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}) {
    v.pre = name;
    const Tokenizer from_gguf(loom::io::gguf_tokenizer_spec(v, gguf.string()));
    for (const auto& text : sample_texts())
      EXPECT_EQ(from_json.encode(text, false), from_gguf.encode(text, false)) << name << ": " << show(text);
  }
  EXPECT_EQ(from_json.encode("x=2024", false).size(), 6u);  // x, =, 2, 0, 2, 4
}

// Falcon's tokenizer.json: Punctuation (contiguous), ByteLevel with its regex, Digits, and a split
// of three-digit groups. llama.cpp's "falcon" list runs the same rules on the raw text; HF runs the
// last two on the byte-level text, where a digit run is cut from the "Ġ" before it and the bytes
// 0xB2 0xB3 0xB9 0xBC 0xBD 0xBE stand for themselves and are digits (² ³ ¹ ¼ ½ ¾). Falcon's own
// vocabulary has no "Ġ7"-like pieces, so the two agree on its ids (the llama.cpp vectors above);
// with GPT-2's vocabulary the difference shows. loom follows each pipeline faithfully.
TEST(JsonAndGguf, FalconStyleSequence) {
  LOOM_REQUIRE_FIXTURE(json, "tokenizers/hf/gpt2-tokenizer.json");
  LOOM_REQUIRE_FIXTURE(gguf, "tokenizers/ggml-vocab-gpt-2.gguf");
  const nlohmann::json pre = nlohmann::json::parse(R"({"type":"Sequence","pretokenizers":[
      {"type":"Punctuation","behavior":"Contiguous"},
      {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},
      {"type":"Digits","individual_digits":false},
      {"type":"Split","pattern":{"Regex":"[0-9][0-9][0-9]"},"behavior":"Isolated","invert":false}]})");
  const Tokenizer from_json = loom::io::load_tokenizer_json_string(gpt2_json_with(pre, false), "falcon.json");
  loom::io::GgufVocab v = read_gguf_vocab(gguf);
  v.pre = "falcon";
  const Tokenizer from_gguf(loom::io::gguf_tokenizer_spec(v, gguf.string()));
  std::size_t compared = 0;
  for (const auto& text : sample_texts()) {
    // ASCII text without digits: the same words either way.
    if (!std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80 && !std::isdigit(c); }))
      continue;
    ++compared;
    EXPECT_EQ(from_json.encode(text, false), from_gguf.encode(text, false)) << show(text);
  }
  EXPECT_GT(compared, 20u);
  auto pieces = [](const Tokenizer& t, std::string_view text) {
    Words w;
    for (auto id : t.encode(text, false)) w.push_back(t.piece(id));
    return w;
  };
  const std::string G = "\xC4\xA0", half = "\xC3\x82\xC2\xBD";  // Ġ; 'Â½', the bytes of ½
  EXPECT_EQ(pieces(from_json, "a+=12345"), (Words{"a", "+=", "123", "45"}));
  EXPECT_EQ(pieces(from_gguf, "a+=12345"), (Words{"a", "+=", "123", "45"}));
  EXPECT_EQ(pieces(from_json, "x 7"), (Words{"x", G, "7"}));
  EXPECT_EQ(pieces(from_gguf, "x 7"), (Words{"x", G + "7"}));
  EXPECT_EQ(pieces(from_json, "x \u00BD"), (Words{"x", G + "\xC3\x82", "\xC2\xBD"}));
  EXPECT_EQ(pieces(from_gguf, "x \u00BD"), (Words{"x", G + half}));
}

// ---- randomized robustness ---------------------------------------------------------------------

TEST(Robustness, RandomBytesRoundTrip) {
  LOOM_REQUIRE_FIXTURE(g, "tokenizers/hf/gpt2-tokenizer.json");
  LOOM_REQUIRE_FIXTURE(l, "tokenizers/hf/llama2-tokenizer.nbsp-restored.json");
  std::mt19937 rng(1234);
  const std::string alphabet[] = {"a", "Z", " ", "  ", "\n", "\t", "'s", "'LL", "1", "½", "é", "\xCC\x81", "🦙",
                                  "\xE2\x80\x8D", "\xC2\xA0", "<s>", "<|endoftext|>", "\xFF", "\x80", "\xE2\x82", "."};
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const int n = int(rng() % 24);
    for (int k = 0; k < n; ++k) {
      if (rng() % 4 == 0) text += char(rng() % 256);
      else text += alphabet[rng() % std::size(alphabet)];
    }
    for (const Tokenizer* t : {&gpt2(), &llama2()}) {
      for (bool parse : {false, true}) {
        const Ids ids = t->encode(text, true, parse);
        if (!parse) {
          EXPECT_EQ(t->decode(ids), text) << show(text);
        }
        EXPECT_EQ(stream_decode(*t, ids), loom::unicode::sanitize_utf8(t->decode(ids))) << show(text);
      }
    }
  }
}

TEST(Robustness, MutatedFilesOnlyThrowLoomError) {
  std::mt19937 rng(99);
  // tokenizer.bin: random truncations and byte flips.
  const std::string bin = bin_file(5, {{0, "<unk>"}, {0, "<s>"}, {0, "</s>"}, {-1, "a"}, {-2, "b"}, {-0.5f, "ab"}});
  for (int round = 0; round < 2000; ++round) {
    std::string m = bin.substr(0, rng() % (bin.size() + 1));
    for (int k = int(rng() % 4); k > 0 && !m.empty(); --k) m[rng() % m.size()] = char(rng() % 256);
    const std::string e = error_of([&] { from_bin(m, 6).encode("abba"); });
    EXPECT_TRUE(e == "no error" || e.rfind("[loom.", 0) == 0) << e;
  }
  // tokenizer.json: random truncations and character flips.
  const std::string json = mini_json(R"({"type":"BPE",)" + kVocab + R"(,"merges":["a b"]})",
                                     R"("post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"c","type_id":0}},{"Sequence":{"id":"A","type_id":0}}]},)");
  const std::string chars = "{}[]\":,0123456789abc -nulltrue";
  for (int round = 0; round < 3000; ++round) {
    std::string m = json;
    if (rng() % 3 == 0) m = m.substr(0, rng() % (m.size() + 1));
    for (int k = int(rng() % 3) + 1; k > 0 && !m.empty(); --k) m[rng() % m.size()] = chars[rng() % chars.size()];
    const std::string e = error_of([&] { loom::io::load_tokenizer_json_string(m, "m.json").encode("abcab"); });
    EXPECT_TRUE(e == "no error" || e.rfind("[loom.", 0) == 0) << e << "\n" << m;
  }
}

TEST(Unicode, NfcQuickCheck) {
  using loom::unicode::NfcQuickCheck;
  using loom::unicode::nfc_quick_check;
  EXPECT_EQ(nfc_quick_check("plain ASCII, caf\xC3\xA9, \xE4\xB8\x80, \xF0\x9F\xA6\x99"), NfcQuickCheck::yes);
  EXPECT_EQ(nfc_quick_check("cafe\xCC\x81"), NfcQuickCheck::maybe);          // e + U+0301
  EXPECT_EQ(nfc_quick_check("\xE2\x84\xAB"), NfcQuickCheck::no);             // U+212B ANGSTROM SIGN
  EXPECT_EQ(nfc_quick_check("a\xCC\x81\xCC\xA3"), NfcQuickCheck::no);         // ccc 230 then 220
  EXPECT_EQ(loom::unicode::combining_class(0x0301), 230);
  EXPECT_EQ(loom::unicode::combining_class(U'a'), 0);
}

TEST(NfcJson, AcceptsNfcTextRejectsOther) {
  const std::string j = R"({"normalizer":{"type":"NFC"},"pre_tokenizer":{"type":"ByteLevel","use_regex":false},)"
                        R"("model":{"type":"BPE",)" + kVocab + R"(,"merges":["a b"]}})";
  const Tokenizer t = loom::io::load_tokenizer_json_string(j, "nfc.json");
  EXPECT_EQ(t.encode("abc"), (Ids{2, 3}));
  const std::string e = error_of([&] { t.encode("ab\xE2\x84\xAB"); });
  EXPECT_NE(e.find("[loom.unsupported.tokenizer]"), std::string::npos) << e;
  EXPECT_NE(e.find("U+212B"), std::string::npos) << e;
}

}  // namespace

}  // namespace test_tokenizer

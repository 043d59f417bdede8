// Tokenizer tests: Unicode tables, pre-tokenizer matchers, the BPE engine against llama.cpp's
// tokenizer test vectors, loaders (tokenizer.json, llama2.c tokenizer.bin), broken inputs, and
// streaming decode.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fixtures.hpp"
#include "loom/io/gguf_tokenizer.hpp"
#include "loom/io/llama2c_tokenizer.hpp"
#include "loom/io/tokenizer_json.hpp"
#include "loom/tokenizer/pretokenizer.hpp"
#include "loom/tokenizer/tokenizer.hpp"
#include "loom/tokenizer/unicode.hpp"

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

  // An unknown split regex is quoted.
  const std::string split = R"({"version":"1.0","added_tokens":[],"normalizer":null,
    "pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\w+"},"behavior":"Isolated","invert":false},
    "decoder":null,"model":{"type":"BPE",)" + kVocab + R"(,"merges":[]}})";
  e = err(split);
  EXPECT_NE(e.find("[loom.unsupported.tokenizer.json]"), std::string::npos) << e;
  EXPECT_NE(e.find("\\w+"), std::string::npos) << e;

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

loom::GgufVocab read_gguf_vocab(const std::filesystem::path& path) {
  return loom::io::read_gguf_vocab(loom::io::GgufFile(path));
}

TEST(Gguf, Gpt2VocabRankedMerges) {
  LOOM_REQUIRE_FIXTURE(gguf, "tokenizers/ggml-vocab-gpt-2.gguf");
  LOOM_REQUIRE_FIXTURE(inp, "tokenizers/ggml-vocab-gpt-2.gguf.inp");
  LOOM_REQUIRE_FIXTURE(out, "tokenizers/ggml-vocab-gpt-2.gguf.out");
  const Tokenizer t(loom::gguf_tokenizer_spec(read_gguf_vocab(gguf), gguf.string()));
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
  const Tokenizer t(loom::gguf_tokenizer_spec(read_gguf_vocab(gguf), gguf.string()));
  EXPECT_TRUE(t.add_bos());
  EXPECT_FALSE(t.add_eos());
  EXPECT_EQ(t.token_type(0), loom::TokenType::unknown);
  EXPECT_EQ(t.encode("Hello world, this is a test."), (Ids{1, 15043, 3186, 29892, 445, 338, 263, 1243, 29889}));
  check_vectors(t, inp, out, true);
}

TEST(Gguf, BadVocabs) {
  loom::GgufVocab v;
  v.model = "gpt2";
  v.tokens = {"a", "b", "ab"};
  v.merges = {"a b"};
  EXPECT_EQ(Tokenizer(loom::gguf_tokenizer_spec(v, "v.gguf")).encode("ab"), Ids{2});
  v.merges = {"a c"};
  std::string e = error_of([&] { loom::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("tokenizer.ggml.merges[0]"), std::string::npos) << e;
  v.merges = {"b a"};  // "ba" is not a piece: rejected when the Tokenizer is built
  e = error_of([&] { Tokenizer(loom::gguf_tokenizer_spec(v, "v.gguf")); });
  EXPECT_NE(e.find("merge 0"), std::string::npos) << e;
  v.merges = {};
  v.pre = "mystery";
  e = error_of([&] { loom::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("[loom.unsupported.tokenizer]"), std::string::npos) << e;
  v.pre = "";
  v.model = "bert";
  e = error_of([&] { loom::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("bert"), std::string::npos) << e;
  v.model = "llama";
  e = error_of([&] { loom::gguf_tokenizer_spec(v, "v.gguf"); });  // no scores
  EXPECT_NE(e.find("tokenizer.ggml.scores"), std::string::npos) << e;
  v.scores = {0, 0, 0};
  v.token_types = {1, 9, 1};
  e = error_of([&] { loom::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("token_type[1]"), std::string::npos) << e;
  v.token_types = {};
  v.bos_id = 7;
  e = error_of([&] { loom::gguf_tokenizer_spec(v, "v.gguf"); });
  EXPECT_NE(e.find("bos_token_id"), std::string::npos) << e;
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

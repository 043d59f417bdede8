// The command-line programs, run as a user would: outputs against reference fixtures, exit codes.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <loom/io/gguf.hpp>
#include <loom/load.hpp>

#include "../examples/cli.hpp"
#include "fixtures.hpp"

namespace test_cli {

#ifndef LOOM_GENERATE_BIN
#define LOOM_GENERATE_BIN ""
#endif

namespace {

struct Result {
  int status = -1;
  std::string out;
};

// Runs a shell command, capturing stdout (stderr is discarded unless redirected by the caller).
Result sh(const std::string& cmd) {
  Result r;
  FILE* p = popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string quote(const std::filesystem::path& p) {
  std::string s(1, '\'');
  s += p.string();
  s += '\'';
  return s;
}

std::string last_line(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const auto nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

#ifndef LOOM_TOKENIZE_BIN
#define LOOM_TOKENIZE_BIN ""
#endif
#ifndef LOOM_CONVERT_BIN
#define LOOM_CONVERT_BIN ""
#endif
#ifndef LOOM_PERPLEXITY_BIN
#define LOOM_PERPLEXITY_BIN ""
#endif

const std::string gen = LOOM_GENERATE_BIN;
const std::string tokenize = LOOM_TOKENIZE_BIN;
const std::string convert = LOOM_CONVERT_BIN;
const std::string perplexity = LOOM_PERPLEXITY_BIN;
#ifndef LOOM_BATCHED_BIN
#define LOOM_BATCHED_BIN ""
#endif
const std::string batched = LOOM_BATCHED_BIN;

// How many times `needle` occurs in `s`.
std::size_t count_of(const std::string& s, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
  return n;
}

// Runs `cmd` with its stderr (only) captured: {status, stderr}.
Result stderr_of(const std::string& cmd) { return sh("(" + cmd + " 2>&1 >/dev/null)"); }

TEST(Cli, GenerateGreedyStories260KMatchesRunC) {
  ASSERT_FALSE(gen.empty()) << "generate was not built";
  LOOM_REQUIRE_FIXTURE(model, "stories260K/stories260K.bin");
  LOOM_REQUIRE_FIXTURE(tok, "stories260K/tok512_placeholder.bin");
  LOOM_REQUIRE_FIXTURE(ref, "stories260K/greedy_tokens.json");
  const auto expected = nlohmann::json::parse(loom::test::read_text(ref));
  for (const std::string& extra : {std::string(" -z ") + quote(tok), std::string(), std::string(" -t 2"), std::string(" -t 3")}) {
    const Result r = sh(gen + " -m " + quote(model) + extra + " --temp 0 -n 200 --ids");
    ASSERT_EQ(r.status, 0) << extra;
    EXPECT_EQ(nlohmann::json::parse(last_line(r.out)), expected) << extra;
  }
}

/// The last `n` lines of s.
std::vector<std::string> last_lines(const std::string& s, std::size_t n) {
  std::vector<std::string> lines;
  std::string t = s;
  while (lines.size() < n && !t.empty()) {
    while (!t.empty() && t.back() == '\n') t.pop_back();
    const auto nl = t.rfind('\n');
    lines.insert(lines.begin(), nl == std::string::npos ? t : t.substr(nl + 1));
    t.resize(nl == std::string::npos ? 0 : nl);
  }
  return lines;
}

// batched --parallel N: every greedy continuation is run.c's; sampled continuation i is
// generate's with seed + i; one JSON array per continuation on the last N lines.
TEST(Cli, BatchedContinuationsMatchRunCAndGenerate) {
  ASSERT_FALSE(batched.empty()) << "batched was not built";
  LOOM_REQUIRE_FIXTURE(model, "stories260K/stories260K.bin");
  LOOM_REQUIRE_FIXTURE(ref, "stories260K/greedy_tokens.json");
  const auto expected = nlohmann::json::parse(loom::test::read_text(ref));
  const Result r = sh(batched + " -m " + quote(model) + " --temp 0 -n 200 --parallel 3 -t 2 --ids");
  ASSERT_EQ(r.status, 0);
  for (const std::string& line : last_lines(r.out, 3)) EXPECT_EQ(nlohmann::json::parse(line), expected);
  const std::string sampling = " -m " + quote(model) + " --temp 1 --top-k 0 --top-p 1 --min-p 0 -n 40 --ids";
  const Result b = sh(batched + sampling + " -s 5 --parallel 2");
  ASSERT_EQ(b.status, 0);
  const auto lines = last_lines(b.out, 2);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[0]), nlohmann::json::parse(last_line(sh(gen + sampling + " -s 5").out)));
  EXPECT_EQ(nlohmann::json::parse(lines[1]), nlohmann::json::parse(last_line(sh(gen + sampling + " -s 6").out)));
  EXPECT_NE(lines[0], lines[1]);
  EXPECT_EQ(sh(batched + " -m " + quote(model) + " --parallel 0").status, 2);
  EXPECT_EQ(sh(batched + " -m " + quote(model) + " --parallel").status, 2);
  EXPECT_EQ(sh(batched + " -m " + quote(model) + " --chat").status, 2);
}

// Every fixture model's greedy continuation and prompt logits are the same bytes with 1, 2 and 3
// threads (each output is computed in an order fixed by the shapes, whichever thread runs it).
TEST(Cli, FixtureOutputsDoNotDependOnTheThreadCount) {
  ASSERT_FALSE(gen.empty());
  for (const char* fixture : {"stories260K/stories260K.bin", "tiny-models/tiny-llama/tiny-llama.gguf",
                              "tiny-models/tiny-llama/hf", "tiny-models/tiny-gpt2/tiny-gpt2.gguf",
                              "tiny-models/tiny-gpt2/hf"}) {
    LOOM_REQUIRE_FIXTURE(model, fixture);
    std::string first_ids, first_logits;
    for (const char* threads : {"1", "2", "3"}) {
      const auto out = std::filesystem::temp_directory_path() / "loom_test_cli_threads.bin";
      const Result r = sh(gen + " -m " + quote(model) + " --prompt-ids 1,5,9,14,20,27,35,44,54,65,77,90 -n 48 --temp 0"
                          " --ignore-eos --ids --dump-logits " + quote(out) + " -t " + threads);
      ASSERT_EQ(r.status, 0) << fixture << " -t " << threads;
      const std::string ids = last_line(r.out), logits = loom::test::read_text(out);
      ASSERT_TRUE(!logits.empty() && logits.size() % (12 * 4) == 0) << fixture;  // [12 prompt rows, vocab] f32
      if (first_ids.empty()) {
        first_ids = ids, first_logits = logits;
        EXPECT_EQ(nlohmann::json::parse(ids).size(), 48u) << fixture;
      } else {
        EXPECT_EQ(ids, first_ids) << fixture << " -t " << threads;
        EXPECT_TRUE(logits == first_logits) << fixture << " -t " << threads;
      }
    }
  }
}

TEST(Cli, DumpLogitsMatchesRunC) {
  ASSERT_FALSE(gen.empty());
  LOOM_REQUIRE_FIXTURE(model, "stories260K/stories260K.bin");
  LOOM_REQUIRE_FIXTURE(ref_path, "stories260K/logits_steps_0-7.json");
  const auto ref = nlohmann::json::parse(loom::test::read_text(ref_path));
  std::string ids;
  for (const auto& t : ref["input_token"]) ids += (ids.empty() ? "" : ",") + std::to_string(t.get<int>());
  const auto out = std::filesystem::temp_directory_path() / "loom_test_cli_logits.bin";
  const Result r = sh(gen + " -m " + quote(model) + " --prompt-ids " + ids + " -n 1 --temp 0 --dump-logits " + quote(out));
  ASSERT_EQ(r.status, 0);
  const std::string bytes = loom::test::read_text(out);
  ASSERT_EQ(bytes.size(), 8u * 512u * 4u);
  const auto* logits = reinterpret_cast<const float*>(bytes.data());
  double max_err = 0;
  for (int s = 0; s < 8; ++s)
    for (int i = 0; i < 512; ++i)
      max_err = std::max(max_err, std::abs(double(logits[s * 512 + i]) - double(float(ref["logits"][s][i].get<double>()))));
  EXPECT_LT(max_err, 1e-4);
}

TEST(Cli, BadFlagsAndValuesExitTwo) {
  ASSERT_FALSE(gen.empty());
  LOOM_REQUIRE_FIXTURE(model, "stories260K/stories260K.bin");
  const std::string m = " -m " + quote(model);
  for (const std::string& args : {m + " --bogus", m + " -n", m + " -n abc", m + " -n 1.5", m + " --temp -1",
                                 m + " --temp nan", m + " --top-p 0", m + " --top-p 1.5", m + " --top-k -1",
                                 m + " --min-p 2", m + " -t 0", m + " -c -5", m + " --prompt-ids 1,x",
                                 m + " --prompt-ids 1,,2", m + " --prompt-ids 600", m + " --repeat-penalty 0",
                                 std::string(" -p hello"), m + " --prompt-ids 1 -p hi", m + " --cache-type q8_0",
                                 m + " --cache-type", m + " -ctk f16", m + " -ctk f16 -ctv f32"})
    EXPECT_EQ(sh(gen + args).status, 2) << args;
  EXPECT_EQ(sh(gen + " -h").status, 0);
}

TEST(Cli, BadModelFilesExitOneWithTheReason) {
  ASSERT_FALSE(gen.empty());
  const auto junk = std::filesystem::temp_directory_path() / "loom_test_cli_junk.bin";
  std::ofstream(junk, std::ios::binary) << "this is not a model";
  const Result r = sh(gen + " -m " + quote(junk) + " 2>&1");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(sh(gen + " -m /nonexistent/model.bin").status, 1);
}

TEST(Cli, TokenizeGpt2HelloWorld) {
  ASSERT_FALSE(tokenize.empty()) << "tokenize was not built";
  LOOM_REQUIRE_FIXTURE(tok, "tokenizers/hf/gpt2-tokenizer.json");
  const Result r = sh(tokenize + " -m " + quote(tok) + " -p 'Hello world, this is a test.' --ids");
  ASSERT_EQ(r.status, 0);
  EXPECT_EQ(last_line(r.out), "[15496, 995, 11, 428, 318, 257, 1332, 13]");
}

// generate -m DIR --prompt-ids ... --dump-logits F reproduces llama.cpp's logits for the tiny
// Hugging Face checkpoints (every position, 2e-4 absolute as the fixtures README suggests).
TEST(Cli, DumpLogitsTinyHfModelsMatchLlamaCpp) {
  ASSERT_FALSE(gen.empty());
  for (const char* model : {"tiny-llama", "tiny-gpt2"}) {
    const std::string name = model;
    LOOM_REQUIRE_FIXTURE(dir, "tiny-models/" + name + "/hf");
    LOOM_REQUIRE_FIXTURE(ref_path, "tiny-models/" + name + "/reference_logits.json");
    const auto ref = nlohmann::json::parse(loom::test::read_text(ref_path));
    std::string ids;
    for (const auto& t : ref["tokens"]) ids += (ids.empty() ? "" : ",") + std::to_string(t.get<int>());
    const auto out = std::filesystem::temp_directory_path() / ("loom_test_cli_" + name + ".bin");
    const Result r = sh(gen + " -m " + quote(dir) + " --prompt-ids " + ids + " -n 1 --temp 0 --dump-logits " + quote(out));
    ASSERT_EQ(r.status, 0) << name;
    const std::string bytes = loom::test::read_text(out);
    const std::size_t n = ref["tokens"].size(), vocab = ref["logits"][0].size();
    ASSERT_EQ(bytes.size(), n * vocab * 4) << name;
    const auto* logits = reinterpret_cast<const float*>(bytes.data());
    for (std::size_t s = 0; s < n; ++s) {
      double max_err = 0;
      for (std::size_t i = 0; i < vocab; ++i)
        max_err = std::max(max_err, std::abs(double(logits[s * vocab + i]) - double(float(ref["logits"][s][i].get<double>()))));
      EXPECT_LT(max_err, 2e-4) << name << " position " << s;
    }
  }
}

// --context-shift keeps generating past a full context; without it generation stops there.
// --max-memory refuses a context that does not fit, before allocating, with exit status 1.
TEST(Cli, ContextShiftAndMemoryBudget) {
  ASSERT_FALSE(gen.empty());
  LOOM_REQUIRE_FIXTURE(model, "stories260K/stories260K.bin");
  const std::string m = gen + " -m " + quote(model) + " --temp 0 -c 32 -n 100 --ignore-eos --ids";
  const Result stop = sh(m);
  ASSERT_EQ(stop.status, 0);
  EXPECT_EQ(nlohmann::json::parse(last_line(stop.out)).size(), 32u);  // the BOS prompt + 31 evaluated + 1 emitted
  const Result shift = sh(m + " --context-shift --keep 1");
  ASSERT_EQ(shift.status, 0);
  const auto ids = nlohmann::json::parse(last_line(shift.out));
  ASSERT_EQ(ids.size(), 100u);
  // Before the first shift the output is the same as without shifting.
  const auto first = nlohmann::json::parse(last_line(stop.out));
  for (std::size_t i = 0; i < first.size(); ++i) EXPECT_EQ(ids[i], first[i]) << i;
  const Result big = sh("(" + gen + " -m " + quote(model) + " -c 256 -n 4 --max-memory 64K 2>&1)");
  EXPECT_EQ(big.status, 1);
  EXPECT_NE(big.out.find("[loom.capacity.session] a context of 256 tokens needs"), std::string::npos) << big.out;
  EXPECT_NE(big.out.find("memory budget of 65536 bytes"), std::string::npos) << big.out;
  EXPECT_EQ(sh(gen + " -m " + quote(model) + " -c 256 -n 4 --max-memory 64M").status, 0);
  EXPECT_EQ(sh(gen + " -m " + quote(model) + " --max-memory 12X").status, 2);
}

// --cache-type f16 (or llama.cpp's -ctk f16 -ctv f16) runs with a KV cache of half the bytes,
// which the memory budget check counts.
TEST(Cli, CacheTypeF16) {
  ASSERT_FALSE(gen.empty());
  LOOM_REQUIRE_FIXTURE(model, "stories260K/stories260K.bin");
  const std::string m = gen + " -m " + quote(model) + " --temp 0 -n 24 --ids";
  const Result f32 = sh(m), f16 = sh(m + " --cache-type f16"), ctk = sh(m + " -ctk f16 -ctv f16");
  ASSERT_EQ(f32.status, 0);
  ASSERT_EQ(f16.status, 0);
  ASSERT_EQ(ctk.status, 0);
  EXPECT_EQ(nlohmann::json::parse(last_line(f16.out)).size(), 24u);
  EXPECT_EQ(last_line(ctk.out), last_line(f16.out));
  // The KV bytes the refusal names: f16 needs exactly half of f32.
  auto kv_bytes = [&](const std::string& flags) {
    const Result r = sh("(" + gen + " -m " + quote(model) + " -c 256 -n 4 --max-memory 1K" + flags + " 2>&1)");
    EXPECT_EQ(r.status, 1) << r.out;
    const std::size_t at = r.out.find(" bytes of KV cache");
    EXPECT_NE(at, std::string::npos) << r.out;
    return std::stoull(r.out.substr(r.out.rfind(' ', at - 1) + 1));
  };
  EXPECT_EQ(kv_bytes(" --cache-type f16") * 2, kv_bytes(""));
}

std::filesystem::path demo_model() { return std::filesystem::path(LOOM_SOURCE_DIR) / "models" / "tiny-shakespeare"; }

// --stop: the printed text is the text generated without it, cut just before the stop string.
TEST(Cli, StopStringEndsGenerationAndIsNotPrinted) {
  ASSERT_FALSE(gen.empty());
  const std::string base = gen + " -m " + quote(demo_model()) + " -p ROMEO: -n 80 --temp 0.8 -s 3 --no-display-prompt";
  const Result full = sh(base);
  ASSERT_EQ(full.status, 0);
  const std::string text = full.out;
  const std::size_t cut = text.find("e");
  ASSERT_NE(cut, std::string::npos) << text;
  const Result stopped = sh(base + " --stop e");
  ASSERT_EQ(stopped.status, 0);
  EXPECT_EQ(stopped.out, text.substr(0, cut) + "\n");
  // A stop string that spans tokens: two characters taken from the full output.
  const std::string two = text.substr(cut, 2);
  const Result stopped2 = sh(base + " --stop '" + two + "'");
  EXPECT_EQ(stopped2.out, text.substr(0, text.find(two)) + "\n");
}

TEST(Cli, ChatHoldsAConversationAndQuantizeRuns) {
  ASSERT_FALSE(gen.empty());
  const std::string m = " -m " + quote(demo_model());
  const Result chat = sh("(printf 'Hello\\nHow are you?\\n' | " + gen + m +
                         " --chat --chat-template chatml --system 'Answer in verse.' -n 8 --temp 0 2>&1)");
  ASSERT_EQ(chat.status, 0) << chat.out;
  EXPECT_NE(chat.out.find("chat template: chatml"), std::string::npos) << chat.out;
  std::size_t turns = 0;
  for (std::size_t at = chat.out.find("\n> "); at != std::string::npos; at = chat.out.find("\n> ", at + 1)) ++turns;
  EXPECT_EQ(turns, 3u) << chat.out;  // two answered prompts and the final one that reads EOF
  EXPECT_EQ(sh(gen + m + " --chat --chat-template vicuna").status, 2);
  EXPECT_EQ(sh(gen + m + " --chat --prompt-ids 1,2").status, 2);
  EXPECT_EQ(sh(gen + m + " -p Hi -n 4 --quantize q8_0").status, 0);
  EXPECT_EQ(sh(gen + m + " -p Hi -n 4 --quantize q5_1").status, 0);
  EXPECT_EQ(sh(gen + m + " -p Hi -n 4 --quantize q3_k").status, 2);  // no Q3_K quantizer
  EXPECT_EQ(sh(gen + m + " -p Hi --stop ''").status, 2);
}

// convert writes a llama.cpp mix with the file type llama.cpp gives it, which generate then runs;
// bad flags exit 2, a bad model 1.
TEST(Cli, ConvertWritesMixesAndRejectsBadFlags) {
  ASSERT_FALSE(convert.empty()) << "convert was not built";
  const auto out = std::filesystem::temp_directory_path() / "loom_test_cli_convert.gguf";
  const std::string base = convert + " -m " + quote(demo_model()) + " --out " + quote(out);
  const Result r = sh(base + " --type q4_k_m -t 2 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(loom::io::GgufFile(out).get<std::uint32_t>("general.file_type"), 15u);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  EXPECT_EQ(sh(gen + " -m " + quote(out) + " -p Hi -n 4").status, 0);
  EXPECT_EQ(sh(base + " --type q4_k_l").status, 2);
  EXPECT_EQ(sh(base + " --type q3_k").status, 2);  // no Q3_K quantizer
  EXPECT_EQ(sh(base + " -t 0").status, 2);
  EXPECT_EQ(sh(convert + " -m " + quote(demo_model())).status, 2);  // no --out
  EXPECT_EQ(sh(convert + " -m /nonexistent/model --out " + quote(out)).status, 1);
  std::filesystem::remove(out);
}

}  // namespace

namespace {

// llama.cpp's GPU, memory-locking, flash-attention and batch flags are accepted with one note
// each on stderr and change nothing; a missing or malformed value still exits 2.
TEST(Cli, LlamaCppFlagsWithoutMeaningAreAcceptedWithANote) {
  ASSERT_FALSE(gen.empty());
  const std::string base = gen + " -m " + quote(demo_model()) + " -p ROMEO: -n 12 --temp 0";
  const std::string flags = " -ngl 99 --n-gpu-layers 0 --gpu-layers all --mlock -fa --flash-attn on -fa off -fa -1"
                            " -b 512 --batch-size 64 -ub 128 --ubatch-size 32";
  const Result plain = sh(base), with = sh(base + flags);
  ASSERT_EQ(plain.status, 0);
  ASSERT_EQ(with.status, 0);
  EXPECT_EQ(with.out, plain.out);
  const Result notes = stderr_of(base + flags);
  EXPECT_EQ(count_of(notes.out, "generate: note: "), 12u) << notes.out;
  for (const char* note : {"note: -ngl 99 ignored: loom runs on the CPU", "note: --gpu-layers all ignored",
                           "note: --mlock ignored", "note: -fa ignored", "note: --flash-attn on ignored",
                           "note: -fa -1 ignored", "note: -b 512 ignored", "note: --ubatch-size 32 ignored"})
    EXPECT_NE(notes.out.find(note), std::string::npos) << note << "\n" << notes.out;
  EXPECT_EQ(sh(base + " -fa").status, 0);  // a bare -fa at the end (llama.cpp before its values)
  for (const char* bad : {" -ngl", " -ngl many", " --n-gpu-layers", " --gpu-layers 1.5", " -b", " -b big",
                          " --batch-size", " -ub", " --ubatch-size 1.5", " -fa maybe", " --flash-attn yes"})
    EXPECT_EQ(sh(base + bad).status, 2) << bad;
}

// -e processes llama.cpp's escapes in the prompt (and --stop); without it they stay as written.
TEST(Cli, EscapeProcessesThePromptAsLlamaCpp) {
  using loom::cli::process_escapes;
  EXPECT_EQ(process_escapes(R"(a\nb\tc\rd)"), "a\nb\tc\rd");
  EXPECT_EQ(process_escapes(R"(\'\"\\)"), "'\"\\");
  EXPECT_EQ(process_escapes(R"(\\n)"), "\\n");  // an escaped backslash, then a plain n
  EXPECT_EQ(process_escapes(R"(\x41\x7a!)"), "Az!");
  EXPECT_EQ(process_escapes(R"(\x4)"), "\\x4");    // fewer than two hex digits: kept
  EXPECT_EQ(process_escapes(R"(\x4g)"), "\\x4g");  // not hex: kept
  EXPECT_EQ(process_escapes(R"(\q \)"), "\\q \\");  // unknown escape and a final backslash: kept
  EXPECT_EQ(process_escapes(""), "");

  ASSERT_FALSE(gen.empty());
  const std::string m = gen + " -m " + quote(demo_model()) + " -n 12 --temp 0";
  const Result escaped = sh(m + R"( -e -p 'ROMEO:\nJULIET:\x21')");
  const Result real = sh(m + " -p \"$(printf 'ROMEO:\\nJULIET:!')\"");
  ASSERT_EQ(escaped.status, 0);
  ASSERT_EQ(real.status, 0);
  EXPECT_EQ(escaped.out, real.out);
  EXPECT_EQ(escaped.out.rfind("ROMEO:\nJULIET:!", 0), 0u) << escaped.out;
  const Result literal = sh(m + R"( -p 'ROMEO:\nJULIET:\x21')");
  EXPECT_EQ(literal.out.rfind(R"(ROMEO:\nJULIET:\x21)", 0), 0u) << literal.out;
  EXPECT_EQ(sh(m + R"( -e --no-escape -p 'ROMEO:\nJULIET:\x21')").out, literal.out);
  // --stop takes the escapes too: -e --stop '\n' ends at the first generated line break.
  const std::string sampled = gen + " -m " + quote(demo_model()) + " -p ROMEO: -n 80 --temp 0.8 -s 3 --no-display-prompt";
  const std::string text = sh(sampled).out;
  const std::size_t nl = text.find('\n');
  ASSERT_LT(nl + 1, text.size()) << "the sample has no line break before its end: " << text;
  EXPECT_EQ(sh(sampled + R"( -e --stop '\n')").out, text.substr(0, nl) + "\n");
}

// The prompt is echoed before the generated text (decoded from its tokens, so --prompt-ids echo
// the same text); --no-display-prompt leaves it out; --ids stays the last line either way.
TEST(Cli, PromptIsEchoedAndIdsStayOnTheLastLine) {
  ASSERT_FALSE(gen.empty());
  const std::string m = gen + " -m " + quote(demo_model()) + " -n 16 --temp 0 --ids";
  const Result echoed = sh(m + " -p ROMEO:");
  ASSERT_EQ(echoed.status, 0);
  EXPECT_EQ(echoed.out.rfind("ROMEO:", 0), 0u) << echoed.out;
  const auto ids = nlohmann::json::parse(last_line(echoed.out));
  EXPECT_EQ(ids.size(), 16u);
  const Result quiet = sh(m + " -p ROMEO: --no-display-prompt");
  ASSERT_EQ(quiet.status, 0);
  EXPECT_EQ("ROMEO:" + quiet.out, echoed.out);
  // The same prompt as token ids (as -p encodes it): the same output, echo included.
  const loom::Loaded demo = loom::load(demo_model());
  ASSERT_TRUE(demo.tokenizer);
  std::string list;
  for (std::int32_t id : demo.tokenizer->encode("ROMEO:", /*add_special=*/true)) list += (list.empty() ? "" : ",") + std::to_string(id);
  EXPECT_EQ(sh(m + " --prompt-ids " + list).out, echoed.out);
  // A prompt with a line break: the ids are still alone on the last line.
  const Result two_lines = sh(m + " -e -p 'ROMEO:\\nJULIET:'");
  ASSERT_EQ(two_lines.status, 0);
  EXPECT_EQ(nlohmann::json::parse(last_line(two_lines.out)).size(), 16u);
  EXPECT_EQ(two_lines.out.rfind("ROMEO:\nJULIET:", 0), 0u) << two_lines.out;
}

// The timing block names the seed; a random one is printed as drawn, and -s with it repeats the run.
TEST(Cli, SeedIsPrintedAndRepeatsTheRun) {
  ASSERT_FALSE(gen.empty());
  const std::string m = gen + " -m " + quote(demo_model()) + " -p ROMEO: -n 24 --temp 0.8";
  const auto err = std::filesystem::temp_directory_path() / "loom_test_cli_seed.txt";
  auto seed_in = [&](const std::string& text) {
    const std::size_t at = text.find("seed           = ");
    EXPECT_NE(at, std::string::npos) << text;
    return at == std::string::npos ? std::string() : text.substr(at + 17, text.find('\n', at) - at - 17);
  };
  const Result random = sh("(" + m + " 2>" + quote(err) + ")");
  ASSERT_EQ(random.status, 0);
  const std::string seed = seed_in(loom::test::read_text(err));
  ASSERT_FALSE(seed.empty());
  EXPECT_NE(seed, std::to_string(loom::default_seed));
  EXPECT_EQ(sh(m + " -s " + seed).out, random.out) << "seed " << seed;
  EXPECT_EQ(seed_in(stderr_of(m + " -s 3").out), "3");
  EXPECT_EQ(seed_in(stderr_of(m + " -s 18446744073709551615").out), "18446744073709551615");  // every 64-bit seed
  EXPECT_EQ(sh(m + " -s 18446744073709551616").status, 2);
  EXPECT_EQ(seed_in(stderr_of(m + " --temp 0").out).empty(), false);  // greedy too
}

// perplexity --chunks N evaluates only the first N chunks (windows with --stride), as llama.cpp.
TEST(Cli, PerplexityChunksLimitsTheChunks) {
  ASSERT_FALSE(perplexity.empty()) << "perplexity was not built";
  const std::string base = perplexity + " -m " + quote(demo_model()) + " -f " + quote(demo_model() / "README.md") + " -c 64";
  const Result three = sh("(" + base + " --chunks 3 -ngl 99 2>&1)");
  ASSERT_EQ(three.status, 0) << three.out;
  EXPECT_NE(three.out.find("perplexity: 3 windows of 64 tokens (--chunks; the text has "), std::string::npos) << three.out;
  EXPECT_NE(three.out.find("perplexity: 93 tokens scored"), std::string::npos) << three.out;  // 3 * (64 - 1 - 32)
  EXPECT_NE(three.out.find("perplexity: note: -ngl 99 ignored"), std::string::npos) << three.out;
  const Result all = sh(base), minus_one = sh(base + " --chunks -1"), many = sh(base + " --chunks 100000");
  ASSERT_EQ(all.status, 0);
  EXPECT_EQ(minus_one.out, all.out);
  EXPECT_EQ(many.out, all.out);
  EXPECT_NE(last_line(three.out), last_line(all.out));
  const Result strided = sh("(" + base + " --stride 64 --chunks 2 2>&1)");
  ASSERT_EQ(strided.status, 0) << strided.out;
  EXPECT_NE(strided.out.find("perplexity: 126 tokens scored"), std::string::npos) << strided.out;  // 2 * (64 - 1)
  for (const char* bad : {" --chunks 0", " --chunks -2", " --chunks x", " --chunks"})
    EXPECT_EQ(sh(base + bad).status, 2) << bad;
}

// --system and --chat-template act only with --chat, --keep only with --context-shift: alone,
// each says so on stderr (and the run goes on).
TEST(Cli, FlagsThatActOnlyWithAnotherSaySo) {
  ASSERT_FALSE(gen.empty());
  const std::string m = gen + " -m " + quote(demo_model()) + " -p Hi -n 2";
  const Result alone = stderr_of(m + " --system 'Be brief.' --chat-template chatml --keep 4");
  EXPECT_EQ(alone.status, 0);
  for (const char* note : {"generate: note: --system has no effect without --chat",
                           "generate: note: --chat-template has no effect without --chat",
                           "generate: note: --keep has no effect without --context-shift"})
    EXPECT_NE(alone.out.find(note), std::string::npos) << note << "\n" << alone.out;
  const Result together =
      stderr_of(m + " --chat --system 'Be brief.' --chat-template chatml --context-shift --keep 4 </dev/null");
  EXPECT_EQ(together.status, 0);
  EXPECT_EQ(together.out.find("has no effect"), std::string::npos) << together.out;
}

// Piped into --chat, every non-empty line is a turn until EOF: empty lines (and CRLF endings) do
// not end the conversation.
TEST(Cli, PipedChatReadsTurnsUntilEof) {
  ASSERT_FALSE(gen.empty());
  const std::string chat = gen + " -m " + quote(demo_model()) + " --chat --chat-template chatml -n 8 --temp 0";
  const Result two = sh("printf 'Hello\\nHow are you?\\n' | " + chat);
  ASSERT_EQ(two.status, 0);
  const Result gaps = sh("printf '\\nHello\\n\\n\\nHow are you?\\n\\n' | " + chat);
  EXPECT_EQ(gaps.status, 0);
  EXPECT_EQ(gaps.out, two.out);
  EXPECT_EQ(sh("printf 'Hello\\r\\n\\r\\nHow are you?\\r\\n' | " + chat).out, two.out);
  const Result one = sh("printf 'Hello\\n' | " + chat);
  EXPECT_NE(one.out, two.out);
  const Result banner = stderr_of("printf 'Hello\\n\\nHow are you?\\n' | " + chat);
  EXPECT_NE(banner.out.find("Reading turns from stdin to its end"), std::string::npos) << banner.out;
  EXPECT_EQ(count_of(banner.out, "\n> "), 3u) << banner.out;  // two turns and the read that meets EOF
}

}  // namespace

}  // namespace test_cli

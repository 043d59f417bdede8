// The command-line programs, run as a user would: outputs against reference fixtures, exit codes.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <loom/io/gguf.hpp>

#include "fixtures.hpp"

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

const std::string gen = LOOM_GENERATE_BIN;
const std::string tokenize = LOOM_TOKENIZE_BIN;
const std::string convert = LOOM_CONVERT_BIN;

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
  const std::string base = gen + " -m " + quote(demo_model()) + " -p ROMEO: -n 80 --temp 0.8 -s 3";
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

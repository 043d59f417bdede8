// The tools against hostile and broken inputs, run as a user would, under `ulimit -v 6291456`
// (6 GiB of address space) and a 20-second timeout: every input must end in exactly one line
// `TOOL: MESSAGE` on stderr naming the problem, exit status 1 (2 for a bad flag or value) — never
// an abort, a hang, or exit 0 with an empty or non-finite answer. The classes are those of issue
// 25: deep JSON, values of the wrong type, special files, runaway sizes, mis-detected formats,
// checks that must fail loudly.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fixtures.hpp"
#include "temp_dir.hpp"

namespace test_bad_inputs {

#ifndef LOOM_TOOLS_DIR
#define LOOM_TOOLS_DIR ""
#endif

namespace {

namespace fs = std::filesystem;

struct Outcome {
  int status = -1;  ///< exit status; -1 when killed by a signal (abort, timeout)
  std::string out, err;
};

const fs::path& tmp() { return loom::test::process_temp_dir("loom-bad-inputs"); }

std::string quote(const fs::path& p) { return "'" + p.string() + "'"; }

// AddressSanitizer reserves terabytes of shadow address space at start-up, so a sanitized tool
// cannot run under an address-space limit: there the limit is left out (the Release stage runs
// these tests with it).
#if defined(__SANITIZE_ADDRESS__)
constexpr const char* address_limit = "";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr const char* address_limit = "";
#else
constexpr const char* address_limit = "ulimit -v 6291456\n";
#endif
#else
constexpr const char* address_limit = "ulimit -v 6291456\n";
#endif

/// Runs `tool args` under the 6 GiB address-space limit (except with AddressSanitizer) and a 20 s
/// timeout.
Outcome run(const std::string& tool, const std::string& args) {
  const fs::path out = tmp() / "stdout", err = tmp() / "stderr";
  const fs::path script = tmp() / "run.sh";
  std::ofstream(script) << address_limit << "exec timeout -s KILL 20 " << quote(fs::path(LOOM_TOOLS_DIR) / tool) << " "
                        << args << " </dev/null >" << quote(out) << " 2>" << quote(err) << "\n";
  const int st = std::system(("bash " + quote(script)).c_str());
  Outcome r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (r.status == 137 || r.status == 134 || r.status == 139) r.status = -1;  // killed, aborted, crashed
  r.out = loom::test::read_text(out);
  r.err = loom::test::read_text(err);
  return r;
}

std::string write(const std::string& name, const std::string& bytes) {
  const fs::path p = tmp() / name;
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
  return p.string();
}

/// `tool args` must fail with `status`, nothing on stdout, and a last stderr line `tool: ...`
/// that contains `expected` (progress lines may come before it).
void expect_failure(const std::string& tool, const std::string& args, int status, const std::string& expected) {
  SCOPED_TRACE(tool + " " + args.substr(0, 300));
  const Outcome r = run(tool, args);
  EXPECT_EQ(r.status, status) << r.err;
  EXPECT_EQ(r.out, "");
  std::string err = r.err;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  const std::size_t nl = err.rfind('\n');
  const std::string last = nl == std::string::npos ? err : err.substr(nl + 1);
  EXPECT_EQ(last.rfind(tool + ": ", 0), 0u) << r.err;
  EXPECT_NE(last.find(expected), std::string::npos) << "expected '" << expected << "' in: " << r.err;
}

#define REQUIRE_TOOLS() \
  if (std::string(LOOM_TOOLS_DIR).empty()) GTEST_SKIP() << "the tools were not built"

TEST(BadInputs, DeepJsonAt1e5And1e6Levels) {
  REQUIRE_TOOLS();
  LOOM_REQUIRE_FIXTURE(hf, "tiny-models/tiny-llama/hf");
  for (std::size_t depth : {std::size_t(100'000), std::size_t(1'000'000)}) {
    const std::string d = std::to_string(depth);
    const std::string tok = write("deep" + d + "/tokenizer.json", "{\"model\":" + std::string(depth, '['));
    expect_failure("tokenize", "-m " + quote(tok) + " -p hi", 1, "nests arrays/objects more than 128 levels deep");
    // config.json of a Hugging Face folder, and a tokenizer.json beside a model
    const std::string cfg = write("deepcfg" + d + "/config.json", "{\"architectures\":" + std::string(depth, '['));
    expect_failure("generate", "-m " + quote(fs::path(cfg).parent_path()) + " -n 1", 1, "levels deep");
    expect_failure("perplexity", "-m " + quote(fs::path(cfg).parent_path()) + " -f " + quote(cfg), 1, "levels deep");
    // a safetensors header
    std::string header = "{\"a\":" + std::string(depth, '[');
    std::string st(8, '\0');
    for (int i = 0; i < 8; ++i) st[std::size_t(i)] = char((header.size() >> (8 * i)) & 255);
    const std::string sf = write("deepst" + d + "/model.safetensors", st + header);
    fs::copy_file(hf / "config.json", fs::path(sf).parent_path() / "config.json");
    expect_failure("generate", "-m " + quote(sf) + " -n 1", 1, "levels deep");
  }
}

TEST(BadInputs, TokenizerConfigWrongTypesAndDepth) {
  REQUIRE_TOOLS();
  LOOM_REQUIRE_FIXTURE(hf, "tiny-models/tiny-llama/hf");
  for (const auto& [name, text, expected] :
       {std::tuple<std::string, std::string, std::string>{"name", R"({"chat_template":[{"name":5,"template":"x"}]})",
                                                          "chat_template[0].name: expected a string"},
        {"type", R"({"chat_template":3})", "chat_template: expected a string or a list"},
        {"deep", "{\"chat_template\":" + std::string(100'000, '['), "levels deep"}}) {
    const fs::path folder = tmp() / ("tc-" + name);
    fs::create_directories(folder);
    for (const auto& e : fs::directory_iterator(hf)) fs::create_symlink(e.path(), folder / e.path().filename());
    fs::remove(folder / "tokenizer_config.json");
    write("tc-" + name + "/tokenizer_config.json", text);
    expect_failure("generate", "-m " + quote(folder) + " -n 1 -p hi", 1, expected);
  }
}

TEST(BadInputs, SpecialFilesAndPaths) {
  REQUIRE_TOOLS();
  LOOM_REQUIRE_FIXTURE(model, "stories260K/stories260K.bin");
  LOOM_REQUIRE_FIXTURE(tok, "stories260K/tok512_placeholder.bin");
  const fs::path fifo = tmp() / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::error_code ec;
  fs::create_symlink(tmp() / "loop", tmp() / "loop", ec);
  const std::string longname = quote(tmp() / std::string(300, 'x'));
  const std::string m = "-m " + quote(model);
  for (const std::string tool : {"generate", "perplexity", "convert"}) {
    const std::string out = tool == "convert" ? " --out " + quote(tmp() / "o.gguf") : tool == "perplexity" ? " -f /etc/hostname" : " -n 1";
    expect_failure(tool, "-m /dev/zero" + out, 1, "'/dev/zero' is a character device, not a regular file");
    expect_failure(tool, "-m " + quote(fifo) + out, 1, "is a FIFO (named pipe), not a regular file");
    expect_failure(tool, "-m " + quote(tmp() / "loop") + out, 1, "Too many levels of symbolic links");
    expect_failure(tool, "-m " + longname + out, 1, "File name too long");
    expect_failure(tool, "-m " + quote(tmp() / "missing.bin") + out, 1, "does not exist");
  }
  expect_failure("tokenize", "-m /dev/zero -p hi", 1, "is a character device");
  expect_failure("tokenize", "-m " + quote(fifo) + " -p hi", 1, "is a FIFO");
  expect_failure("generate", m + " -z /dev/zero -p hi", 1, "is a character device");
  expect_failure("generate", m + " -z " + quote(fifo) + " -p hi", 1, "is a FIFO");
  for (const std::string& f : {std::string("/dev/zero"), quote(fifo), quote(tmp())}) {
    expect_failure("generate", m + " -n 1 -f " + f, 2, "not a regular file");
    expect_failure("perplexity", m + " -z " + quote(tok) + " -f " + f, 1, "not a regular file");
  }
  // a wrong path: no progress bar before the error
  const Outcome r = run("generate", "-m " + quote(tmp() / "missing.bin"));
  EXPECT_EQ(r.err.find("loading"), std::string::npos) << r.err;
}

TEST(BadInputs, FormatsAreDetectedByContent) {
  REQUIRE_TOOLS();
  LOOM_REQUIRE_FIXTURE(vocab, "tokenizers/ggml-vocab-gpt-2.gguf");
  LOOM_REQUIRE_FIXTURE(spm, "tokenizers/llama2/tokenizer.model");
  LOOM_REQUIRE_FIXTURE(stories, "stories260K/stories260K.bin");
  LOOM_REQUIRE_FIXTURE(gguf, "tiny-models/tiny-llama/tiny-llama.gguf");
  // tokenize reads GGUF vocabularies and models through the library
  Outcome r = run("tokenize", "-m " + quote(vocab) + " -p 'Hello world' --ids --no-parse-special");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "[15496, 995]\n");
  r = run("tokenize", "-m " + quote(gguf) + " -p 'Hello world' --ids");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "[1, 15043, 3186]\n");
  expect_failure("tokenize", "-m " + quote(spm) + " -p hi", 1, "is a SentencePiece tokenizer.model, which loom does not read; pass the model's tokenizer.json");
  expect_failure("tokenize", "-m " + quote(stories) + " -p hi", 1, "is a llama2.c checkpoint, which holds no tokenizer");
  expect_failure("tokenize", "-m " + quote(write("words.txt", "just words")) + " -p hi", 1, "is not a recognized tokenizer");
  expect_failure("generate", "-m " + quote(stories) + " -z " + quote(spm) + " -p hi", 1, "SentencePiece tokenizer.model");
  expect_failure("generate", "-m " + quote(stories) + " -z " + quote(vocab) + " -p hi", 1, "has 50257 tokens but the model's embedding has only 512 rows");
  expect_failure("generate", "-m " + quote(vocab) + " -n 1", 1, "is a GGUF vocabulary, not a model");
  expect_failure("generate", "-m " + quote(spm) + " -n 1", 1, "is a SentencePiece tokenizer.model, not a model");
}

/// The bytes of `path` with the u32 value of metadata key `key` set to `value`.
std::string with_u32_key(const std::string& bytes, const std::string& key, std::uint32_t value) {
  std::string s = bytes;
  const std::size_t at = s.find(key);
  if (at == std::string::npos) return {};
  std::memcpy(s.data() + at + key.size() + 4, &value, 4);  // after the key: u32 type, then the value
  return s;
}

TEST(BadInputs, RunawaySizesAreRefusedUnderTheMemoryLimit) {
  REQUIRE_TOOLS();
  if (*address_limit == '\0') GTEST_SKIP() << "AddressSanitizer: the tools cannot run under an address-space limit";
  LOOM_REQUIRE_FIXTURE(gguf, "tiny-models/tiny-llama/tiny-llama.gguf");
  // context_length 2^24: the KV cache would need ~8 GiB, more than the 6 GiB address space
  const std::string big = with_u32_key(loom::test::read_text(gguf), "llama.context_length", 1u << 24);
  ASSERT_FALSE(big.empty());
  const std::string m = "-m " + quote(write("ctx24.gguf", big));
  expect_failure("generate", m + " -n 1 -p hi", 1, "RLIMIT_AS");
  expect_failure("generate", m + " -n 1 -p hi --max-memory 64G", 1, "RLIMIT_AS");
  // 1024 threads: their stacks may not fit the address space; a clean error or a run, never an abort
  LOOM_REQUIRE_FIXTURE(stories, "stories260K/stories260K.bin");
  const Outcome threads = run("generate", "-m " + quote(stories) + " -t 1024 -n 1");
  EXPECT_TRUE(threads.status == 0 || (threads.status == 1 && threads.err.find("cannot start 1024 threads") != std::string::npos))
      << threads.status << " " << threads.err;
  // a prompt file over the limit (sparse)
  const fs::path text = write("big.txt", "");
  fs::resize_file(text, (std::uint64_t(16) << 20) + 1);
  expect_failure("generate", m + " -n 1 -f " + quote(text), 2, "exceeds the limit of 16777216 bytes");
}

TEST(BadInputs, PerplexityRefusesNonFiniteResultsAndEmptyScoring) {
  REQUIRE_TOOLS();
  LOOM_REQUIRE_FIXTURE(model, "stories260K/stories260K.bin");
  LOOM_REQUIRE_FIXTURE(tok, "stories260K/tok512_placeholder.bin");
  std::string text;
  for (int i = 0; i < 60; ++i) text += "Once upon a time there was a little girl. ";
  const std::string f = " -f " + quote(write("story.txt", text)) + " -z " + quote(tok);
  expect_failure("perplexity", "-m " + quote(model) + f + " -c 2", 1, "no token would be scored");
  // the same checkpoint with NaN weights (every float after the 28-byte header)
  std::string nan = loom::test::read_text(model);
  std::memset(nan.data() + 28, 0xff, nan.size() - 28);
  expect_failure("perplexity", "-m " + quote(write("nan.bin", nan)) + f + " -c 32", 1, "not finite");
  const Outcome ok = run("perplexity", "-m " + quote(model) + f + " -c 32");
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_EQ(ok.out.rfind("PPL = ", 0), 0u) << ok.out;
}

TEST(BadInputs, ContextBeyondTrainingIsTheSameInEveryTool) {
  REQUIRE_TOOLS();
  LOOM_REQUIRE_FIXTURE(llama, "tiny-models/tiny-llama/tiny-llama.gguf");  // RoPE, 256 trained positions
  LOOM_REQUIRE_FIXTURE(gpt2, "tiny-models/tiny-gpt2/tiny-gpt2.gguf");     // learned, 128 positions
  std::string text;
  for (int i = 0; i < 300; ++i) text += "hello world ";
  const std::string f = quote(write("ctx.txt", text));
  Outcome r = run("generate", "-m " + quote(llama) + " -c 512 -n 1 -p hi");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("generate: warning: a context of 512 tokens exceeds the model's trained context of 256"),
            std::string::npos) << r.err;
  r = run("perplexity", "-m " + quote(llama) + " -c 512 --stride 512 -f " + f);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("perplexity: warning: a context of 512 tokens exceeds"), std::string::npos) << r.err;
  expect_failure("generate", "-m " + quote(gpt2) + " -c 129 -n 1 -p hi", 1, "exceeds the 128 learned positions");
  expect_failure("perplexity", "-m " + quote(gpt2) + " -c 129 -f " + f, 1, "exceeds the 128 learned positions");
}

TEST(BadInputs, BadFlagsExitTwoInEveryTool) {
  REQUIRE_TOOLS();
  LOOM_REQUIRE_FIXTURE(model, "stories260K/stories260K.bin");
  const std::string m = "-m " + quote(model);
  for (const auto& [tool, args] :
       {std::pair{"perplexity", m + " -f x -c -1"}, std::pair{"perplexity", m + " -f x -c 99999999999"},
        std::pair{"perplexity", m + " -f x --stride 0"}, std::pair{"perplexity", m + " -t 0 -f x"},
        std::pair{"perplexity", m + " --bogus"}, std::pair{"perplexity", m},
        std::pair{"tokenize", m}, std::pair{"tokenize", std::string("-p hi")}, std::pair{"tokenize", m + " -p"},
        std::pair{"convert", m}, std::pair{"convert", m + " --out x --type q9"}, std::pair{"convert", m + " --out x -t -3"},
        std::pair{"generate", m + " -n 99999999999999999999"}, std::pair{"generate", m + " --max-memory 99999999999999G"},
        std::pair{"generate", m + " -s -1"}}) {
    SCOPED_TRACE(std::string(tool) + " " + args);
    const Outcome r = run(tool, args);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_EQ(r.err.rfind(std::string(tool) + ": ", 0), 0u) << r.err;
  }
}

}  // namespace

}  // namespace test_bad_inputs

// Replays every input under tests/fuzz/regressions/<target>/ through the fuzz target of that name
// (tests/fuzz/targets.hpp): each is a minimized input that once crashed a target and is kept so
// the fix stays fixed. Runs in every build, so the sanitizer build replays them too.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "fixtures.hpp"
#include "fuzz/targets.hpp"

namespace test_fuzz_regressions {

namespace {

namespace fs = std::filesystem;

fs::path regressions_root() { return fs::path(LOOM_SOURCE_DIR) / "tests" / "fuzz" / "regressions"; }

TEST(FuzzRegressions, EveryFolderNamesATarget) {
  ASSERT_TRUE(fs::is_directory(regressions_root())) << regressions_root() << " is missing";
  for (const auto& dir : fs::directory_iterator(regressions_root())) {
    if (!dir.is_directory()) continue;
    bool known = false;
    for (const auto& t : loom::fuzz::targets) known |= dir.path().filename() == t.name;
    EXPECT_TRUE(known) << dir.path() << " does not name a fuzz target";
  }
}

// tests/fuzz/CMakeLists.txt links fuzz/fuzz_<name> to the one fuzz binary for each name it lists:
// the list must be the table's, or a target would be left out of scripts/fuzz (and CI) unnoticed.
TEST(FuzzRegressions, TheBuildLinksEveryTarget) {
  const std::string cmake = loom::test::read_text(fs::path(LOOM_SOURCE_DIR) / "tests" / "fuzz" / "CMakeLists.txt");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(cmake, m, std::regex(R"(set\(LOOM_FUZZ_TARGETS([^)]*)\))")))
      << "tests/fuzz/CMakeLists.txt sets no LOOM_FUZZ_TARGETS";
  std::istringstream names(m[1].str());
  std::set<std::string> listed, table;
  for (std::string n; names >> n;) listed.insert(n);
  for (const auto& t : loom::fuzz::targets) table.insert(std::string(t.name));
  EXPECT_EQ(listed, table);
}

// The replay must replay something: an empty folder (or one whose files were lost) would make
// every case below pass without running a single input.
TEST(FuzzRegressions, TheFolderHoldsInputs) {
  int inputs = 0, folders = 0;
  for (const auto& dir : fs::directory_iterator(regressions_root())) {
    if (!dir.is_directory()) continue;
    ++folders;
    int here = 0;
    for (const auto& e : fs::directory_iterator(dir.path())) here += e.is_regular_file();
    EXPECT_GT(here, 0) << dir.path() << " holds no inputs";
    inputs += here;
  }
  EXPECT_GE(folders, 5) << "regression inputs for at least five targets";
  EXPECT_GE(inputs, 10);
}

class FuzzRegression : public ::testing::TestWithParam<loom::fuzz::Target> {};

TEST_P(FuzzRegression, ReplaysWithoutCrashing) {
  const loom::fuzz::Target t = GetParam();
  if (t.name == "tokenizer_roundtrip") {
    LOOM_REQUIRE_FIXTURE(gpt2, "tokenizers/hf/gpt2-tokenizer.json");
  }
  const fs::path dir = regressions_root() / std::string(t.name);
  if (!fs::exists(dir)) GTEST_SKIP() << "no regression inputs for " << t.name;
  int replayed = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string bytes = loom::test::read_text(e.path());
    SCOPED_TRACE(e.path().string());
    t.run({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
    ++replayed;
  }
  RecordProperty("replayed", replayed);
  EXPECT_GT(replayed, 0) << dir << " holds no inputs";
}

// Empty and tiny inputs must be harmless for every target.
TEST_P(FuzzRegression, EmptyAndTinyInputs) {
  const loom::fuzz::Target t = GetParam();
  if (t.name == "tokenizer_roundtrip") {
    LOOM_REQUIRE_FIXTURE(gpt2, "tokenizers/hf/gpt2-tokenizer.json");
  }
  for (const std::string& s : {std::string(), std::string(1, '\0'), std::string("{"), std::string("\xff\xfe"),
                              std::string(9, '\xff'), std::string("-m\0x\0-h", 7)})
    t.run({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzRegression, ::testing::ValuesIn(loom::fuzz::targets),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace

}  // namespace test_fuzz_regressions

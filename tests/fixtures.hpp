// Finds the shared test fixtures: $LOOM_FIXTURES, else ../shared/fixtures beside the source root.
// A test that needs a missing fixture is SKIPPED with the reason, except under CI (CI=true),
// where the fixtures must be present and a missing one FAILS the test.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace loom::test {

inline std::filesystem::path fixtures_root() {
  if (const char* env = std::getenv("LOOM_FIXTURES"); env && *env) return env;
  return std::filesystem::path(LOOM_SOURCE_DIR) / ".." / "shared" / "fixtures";
}

inline bool running_in_ci() {
  const char* ci = std::getenv("CI");
  return ci && *ci && std::string(ci) != "0" && std::string(ci) != "false";
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace loom::test

/// Declares `std::filesystem::path var` = the fixture at `relative`, or skips (fails under CI)
/// the current test when it is absent.
#define LOOM_REQUIRE_FIXTURE(var, relative)                                                   \
  const std::filesystem::path var = ::loom::test::fixtures_root() / (relative);               \
  do {                                                                                        \
    if (!std::filesystem::exists(var)) {                                                      \
      if (::loom::test::running_in_ci())                                                      \
        FAIL() << "fixture missing under CI: " << var.string();                               \
      GTEST_SKIP() << "fixture not found: " << var.string()                                   \
                   << " (set LOOM_FIXTURES or place ../shared/fixtures beside the source)";   \
    }                                                                                         \
  } while (0)

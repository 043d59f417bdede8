// The main() of every test binary. The tests run once at the machine's best kernel level and
// again at each lower level tests/CMakeLists.txt lists: tests named scalar.* and avx2.*, run with
// LOOM_CPU=<level> and the argument --loom-level-run. Where such a level is the machine's best one
// (avx2 on a CPU without AVX-512), that run would repeat the unprefixed run test for test: its
// tests are SKIPPED, saying why, and the time goes to the other runs.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <string_view>

#include <loom/kernels/cpu.hpp>

namespace {

class SkipRepeatedLevel : public testing::Environment {
 public:
  void SetUp() override {
    loom::CpuFeatures cpu;
    try {
      cpu = loom::cpu_features();
    } catch (const loom::Error&) {
      return;  // LOOM_CPU names a level this CPU lacks: the tests run and report that error
    }
    if (cpu.level != cpu.best) return;
    const std::string why = "kernel level " + std::string(loom::to_string(cpu.level)) +
                            " is this machine's best: the unprefixed run of this test ran it";
    // GoogleTest 1.12 counts tests an environment skips as passed; ctest reports a test SKIPPED
    // when its output has this marker (gtest_discover_tests' SKIP_REGULAR_EXPRESSION).
    std::printf("[  SKIPPED ] %s\n", why.c_str());
    GTEST_SKIP() << why;
  }
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);  // removes the --gtest_* arguments it reads
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--loom-level-run") testing::AddGlobalTestEnvironment(new SkipRepeatedLevel);
  return RUN_ALL_TESTS();
}

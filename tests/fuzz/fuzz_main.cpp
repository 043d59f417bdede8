// The libFuzzer binary of every target in targets.hpp. One binary instead of one per target:
// each instrumented compile of loom's headers costs about a minute, and CI builds it on two
// cores. CMake links fuzz/fuzz_<name> to it for every target; the name it is started under picks
// the target (LOOM_FUZZ_TARGET=<name> overrides it), so `build-fuzz/fuzz/fuzz_gguf CORPUS` fuzzes
// the GGUF reader alone, and libFuzzer's own re-runs of argv[0] (-jobs, -fork) keep the target.
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "targets.hpp"

namespace {

void (*selected)(loom::fuzz::Bytes) = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  std::string_view name;
  if (const char* env = std::getenv("LOOM_FUZZ_TARGET"); env != nullptr && *env != '\0') {
    name = env;
  } else if (*argc > 0) {
    name = (*argv)[0];
    if (const auto slash = name.rfind('/'); slash != std::string_view::npos) name.remove_prefix(slash + 1);
    if (name.starts_with("fuzz_")) name.remove_prefix(5);
  }
  for (const auto& t : loom::fuzz::targets)
    if (t.name == name) selected = t.run;
  if (selected == nullptr) {
    std::fprintf(stderr, "loom fuzz: no target '%.*s'; start the binary as fuzz/fuzz_<name> or set LOOM_FUZZ_TARGET to one of:",
                 int(name.size()), name.data());
    for (const auto& t : loom::fuzz::targets) std::fprintf(stderr, " %.*s", int(t.name.size()), t.name.data());
    std::fprintf(stderr, "\n");
    std::exit(2);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  selected({data, size});
  return 0;
}

// libFuzzer target: a safetensors file (header + data) read from memory. The body is loom::fuzz::safetensors in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(safetensors)

// libFuzzer target: a llama2.c checkpoint read from memory. The body is loom::fuzz::llama2c in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(llama2c)

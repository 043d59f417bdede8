// libFuzzer target: a llama2.c tokenizer.bin. The body is loom::fuzz::llama2c_tokenizer in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(llama2c_tokenizer)

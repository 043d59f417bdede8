// libFuzzer target: format detection of loom::load and loom::load_tokenizer (the tokenize tool). The body is loom::fuzz::detect in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(detect)

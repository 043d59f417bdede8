// libFuzzer target: tokenizer.json text. The body is loom::fuzz::tokenizer_json in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(tokenizer_json)

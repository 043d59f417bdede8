// libFuzzer target: encode/decode of arbitrary bytes with the GPT-2 and LLaMA tokenizers. The body is loom::fuzz::tokenizer_roundtrip in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(tokenizer_roundtrip)

// libFuzzer target: tokenizer_config.json (its chat_template) and the chat formats. The body is loom::fuzz::tokenizer_config in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(tokenizer_config)

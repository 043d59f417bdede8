// libFuzzer target: chat template detection and formatting. The body is loom::fuzz::chat_template in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(chat_template)

// libFuzzer target: config.json / generation_config.json text mapped to a Config. The body is loom::fuzz::hf_config in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(hf_config)

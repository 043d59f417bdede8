// libFuzzer target: a GGUF file (header, metadata, tensor infos) and the GGUF model loader. The
// body is loom::fuzz::gguf in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(gguf)

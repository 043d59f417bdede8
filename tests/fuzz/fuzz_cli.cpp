// libFuzzer target: the generate command line (NUL-separated arguments). The body is loom::fuzz::cli in targets.hpp.
#include "targets.hpp"

LOOM_FUZZ_TARGET(cli)

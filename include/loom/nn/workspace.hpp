// Workspace: the scratch memory and the threads an nn block runs with. Blocks never allocate:
// each says how many floats it needs (`*_scratch_floats`) and the caller hands them in.
#pragma once

#include <cstdint>
#include <span>

#include "loom/error.hpp"
#include "loom/kernels/thread_pool.hpp"

namespace loom::nn {

struct Workspace {
  std::span<float> scratch;
  kernels::ThreadPool* pool = nullptr;  ///< null: run on the calling thread

  int threads() const { return pool ? pool->size() : 1; }
  /// The first `floats` floats of the scratch; throws when there are fewer, naming `block`.
  std::span<float> take(std::int64_t floats, const char* block) const {
    if (floats < 0 || std::int64_t(scratch.size()) < floats)
      fail(ErrorKind::invalid_argument, "nn", block, " needs ", floats, " floats of scratch, got ", scratch.size());
    return scratch.first(std::size_t(floats));
  }
};

}  // namespace loom::nn

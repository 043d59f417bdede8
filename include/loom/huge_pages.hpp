// Memory for large buffers read again every token (the KV cache, the bandwidth probe, the random
// weights of loom-bench): aligned to 2 MiB and advised for transparent huge pages, so that
// streaming through them costs few TLB misses and the hardware prefetchers are not stopped at
// every 4 KiB page boundary. Measured on this project's machine (one core, f32 KV cache of
// GPT-2's 12 layers at context 544): the attention row products read 10 % faster.
#pragma once

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace loom {

class HugePageBuffer {
 public:
  static constexpr std::size_t page = std::size_t(2) << 20;

  HugePageBuffer() = default;
  /// At least `bytes` bytes (rounded up to whole 2 MiB pages), zero-filled unless `zero` is
  /// false (the caller then writes every byte it reads). Throws std::bad_alloc.
  explicit HugePageBuffer(std::size_t bytes, bool zero = true) : size_(bytes) {
    if (bytes > SIZE_MAX - page) throw std::bad_alloc();
    capacity_ = (std::max<std::size_t>(bytes, 1) + page - 1) / page * page;
    p_.reset(static_cast<std::byte*>(std::aligned_alloc(page, capacity_)));
    if (!p_) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    ::madvise(p_.get(), capacity_, MADV_HUGEPAGE);  // a hint: ignored where transparent huge pages are off
#endif
    if (zero) std::memset(p_.get(), 0, capacity_);
  }

  std::byte* data() { return p_.get(); }
  const std::byte* data() const { return p_.get(); }
  /// The bytes asked for (capacity() may be more).
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return capacity_; }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::size_t size_ = 0, capacity_ = 0;
  std::unique_ptr<std::byte, Free> p_;
};

}  // namespace loom

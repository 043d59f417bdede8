// Memory next to inaccessible pages, for tests that kernels read nothing outside a tensor.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace loom::test {

/// Pages whose data ends right before an inaccessible page (and starts right after one): a kernel
/// that reads past the end of a weight matrix faults here. A mapped file's last tensor can end
/// at a page boundary, so such a read would crash on a real model.
class GuardedBytes {
 public:
  explicit GuardedBytes(std::size_t n) {
    page_ = std::size_t(sysconf(_SC_PAGESIZE));
    data_pages_ = (n + page_ - 1) / page_;
    void* p = mmap(nullptr, (data_pages_ + 2) * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<std::byte*>(p);
    mprotect(base_, page_, PROT_NONE);
    mprotect(base_ + (data_pages_ + 1) * page_, page_, PROT_NONE);
  }
  GuardedBytes(const GuardedBytes&) = delete;
  GuardedBytes& operator=(const GuardedBytes&) = delete;
  ~GuardedBytes() { munmap(base_, (data_pages_ + 2) * page_); }
  /// A copy of `bytes` ending at the guard page after it.
  const std::byte* at_end(const std::vector<std::byte>& bytes) {
    std::byte* p = base_ + (data_pages_ + 1) * page_ - bytes.size();
    std::memcpy(p, bytes.data(), bytes.size());
    return p;
  }
  /// A copy of `bytes` starting at the guard page before it.
  const std::byte* at_start(const std::vector<std::byte>& bytes) {
    std::memcpy(base_ + page_, bytes.data(), bytes.size());
    return base_ + page_;
  }

 private:
  std::size_t page_ = 0, data_pages_ = 0;
  std::byte* base_ = nullptr;
};

}  // namespace loom::test

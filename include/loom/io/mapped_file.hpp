// A read-only memory-mapped file. Weights are used in place from the mapping, never copied.
// Every access from a parser goes through `bytes(offset, size, what)`, which checks the range.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "loom/error.hpp"
#include "loom/io/input_file.hpp"

namespace loom::io {

class MappedFile {
 public:
  MappedFile() = default;
  /// Maps `path` read-only. Throws Error(io) naming the file when it cannot be opened or mapped.
  explicit MappedFile(const std::filesystem::path& path) : path_(path.string()) {
    const InputFile in(path, "file");  // regular files only; never blocks (input_file.hpp)
    const int fd = in.fd();
    if (in.size() > std::uint64_t(SIZE_MAX)) fail(ErrorKind::io, "file", "'", path_, "' is too large to map");
    size_ = std::size_t(in.size());
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        size_ = 0;
        fail(ErrorKind::io, "file", "cannot map '", path_, "': ", std::strerror(errno));
      }
      data_ = static_cast<const std::byte*>(p);
#if defined(MADV_HUGEPAGE)
      // A hint: where the page cache holds the file in 2 MiB folios they are mapped as huge pages,
      // which removes most TLB misses from decoding (it reads every weight once per token).
      ::madvise(p, size_, MADV_HUGEPAGE);
#endif
    }
  }
  ~MappedFile() { reset(); }

  /// A "file" held in memory: a copy of `bytes`, called `name` in messages. Lets every parser that
  /// reads a MappedFile also read a buffer (tests, fuzzers). The copy is exactly `bytes.size()`
  /// long, so an out-of-range read is caught by AddressSanitizer.
  static MappedFile from_bytes(std::span<const std::byte> bytes, std::string name = "<memory>") {
    MappedFile f;
    f.path_ = std::move(name);
    f.size_ = bytes.size();
    if (!bytes.empty()) {
      f.owned_.reset(new std::byte[bytes.size()]);
      std::memcpy(f.owned_.get(), bytes.data(), bytes.size());
      f.data_ = f.owned_.get();
    }
    return f;
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      reset();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      owned_ = std::move(o.owned_);
    }
    return *this;
  }

  const std::string& path() const { return path_; }
  std::size_t size() const { return size_; }
  const std::byte* data() const { return data_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }

  /// The bytes [offset, offset + size); throws Error(format, area) naming `what` when the range
  /// is not inside the file.
  std::span<const std::byte> bytes(std::uint64_t offset, std::uint64_t size, std::string_view area,
                                   std::string_view what) const {
    if (offset > size_ || size > size_ - offset)
      fail(ErrorKind::format, area, "'", path_, "': ", what, ": bytes [", loom::detail::hex(offset), ", ",
           offset > UINT64_MAX - size ? std::string("overflow") : loom::detail::hex(offset + size),
           ") extend past the end of the file (", loom::detail::hex(size_), " bytes)");
    return {data_ + offset, std::size_t(size)};
  }

 private:
  void reset() {
    if (data_ && !owned_) ::munmap(const_cast<std::byte*>(data_), size_);
    owned_.reset();
    data_ = nullptr;
    size_ = 0;
  }
  std::string path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::unique_ptr<std::byte[]> owned_;  // set for from_bytes(): the data lives here, not in a mapping
};

}  // namespace loom::io

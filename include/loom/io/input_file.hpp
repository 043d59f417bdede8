// Opening the files a user names, safely: every path loom reads goes through `open_input`, which
// never blocks and never throws anything but loom::Error.
//
//   * FIFOs, sockets and devices (/dev/zero, /dev/stdin, a named pipe) are refused with an error
//     naming the kind of file: their size is unknown and reading them may never end. The open
//     itself uses O_NONBLOCK, so a FIFO without a writer cannot block it.
//   * A missing path, a symlink loop, a name over the length limit or a permission problem is an
//     Error(io) with the system's reason — no std::filesystem exception escapes.
//   * `read_input` reads a whole regular file up to a byte limit (limits.hpp) stated in the error.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "loom/error.hpp"

namespace loom::io {

/// What a path names, found with stat() (following symlinks) without throwing.
enum class PathKind { missing, regular, directory, other, error };

struct PathInfo {
  PathKind kind = PathKind::missing;
  std::uint64_t size = 0;  ///< bytes, for a regular file
  std::string what;        ///< "a FIFO", "a character device", ... for `other`; strerror for `error`
};

namespace detail {

inline std::string file_type_name(mode_t m) {
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISDIR(m)) return "a directory";
  return "not a regular file";
}

}  // namespace detail

/// Classifies `path`. Never throws.
inline PathInfo path_info(const std::filesystem::path& path) noexcept {
  PathInfo info;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return info;
    info.kind = PathKind::error;
    info.what = std::strerror(errno);
    return info;
  }
  if (S_ISREG(st.st_mode)) {
    info.kind = PathKind::regular;
    info.size = std::uint64_t(st.st_size);
  } else if (S_ISDIR(st.st_mode)) {
    info.kind = PathKind::directory;
  } else {
    info.kind = PathKind::other;
    info.what = detail::file_type_name(st.st_mode);
  }
  return info;
}

/// Whether `path` is an existing directory. Never throws.
inline bool is_directory(const std::filesystem::path& path) noexcept {
  return path_info(path).kind == PathKind::directory;
}
/// Whether `path` is an existing regular file (after symlinks). Never throws.
inline bool is_regular_file(const std::filesystem::path& path) noexcept {
  return path_info(path).kind == PathKind::regular;
}

/// An open regular file: a descriptor (closed by the destructor) and its size.
class InputFile {
 public:
  /// Opens `path` for reading. Throws Error(io, area) naming the file when it does not exist,
  /// cannot be opened, or is not a regular file (directory, FIFO, device, socket).
  InputFile(const std::filesystem::path& path, std::string_view area) : path_(path.string()) {
    if (path_.empty()) fail(ErrorKind::io, area, "empty path");
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd_ < 0) {
      fail(ErrorKind::io, area, "cannot open '", path_, "': ", std::strerror(errno));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int e = errno;
      close();
      fail(ErrorKind::io, area, "cannot stat '", path_, "': ", std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      close();
      fail(ErrorKind::io, area, "'", path_, "' is ", detail::file_type_name(st.st_mode), ", not a regular file");
    }
    size_ = std::uint64_t(st.st_size);
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);  // a regular file: plain blocking reads
  }
  ~InputFile() { close(); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  int fd() const { return fd_; }
  std::uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  /// Reads up to `n` bytes from offset `offset`; returns what was read (fewer at the end).
  std::string read_at(std::uint64_t offset, std::size_t n, std::string_view area) const {
    std::string s(n, '\0');
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::pread(fd_, s.data() + got, n - got, off_t(offset + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail(ErrorKind::io, area, "cannot read '", path_, "': ", std::strerror(errno));
      if (r == 0) break;
      got += std::size_t(r);
    }
    s.resize(got);
    return s;
  }

 private:
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

/// The whole content of the regular file `path`, refused with Error(capacity, area) naming the
/// limit when it holds more than `max_bytes` (`what` names the file's role: "prompt file").
inline std::string read_input(const std::filesystem::path& path, std::string_view area, std::uint64_t max_bytes,
                              std::string_view what = "file") {
  const InputFile f(path, area);
  if (f.size() > max_bytes)
    fail(ErrorKind::capacity, area, "'", f.path(), "': ", what, " of ", f.size(), " bytes exceeds the limit of ",
         max_bytes, " bytes");
  std::string s = f.read_at(0, std::size_t(f.size()), area);
  if (s.size() != f.size())
    fail(ErrorKind::io, area, "'", f.path(), "': read ", s.size(), " of ", f.size(), " bytes (file changed?)");
  return s;
}

/// The first `n` bytes (or fewer) of the regular file `path`.
inline std::string read_input_head(const std::filesystem::path& path, std::string_view area, std::size_t n) {
  const InputFile f(path, area);
  return f.read_at(0, n, area);
}

}  // namespace loom::io

// How much memory this process may still allocate, from every limit that applies to it.
//
// MemAvailable alone is not the limit a process meets first: under `ulimit -v` (RLIMIT_AS) an
// allocation past the limit fails, under RLIMIT_DATA too, and in a container with a cgroup v2
// `memory.max` the kernel kills the process instead. loom checks the KV cache, scratch and other
// input-sized buffers against the smallest of these before allocating, so a too-large context is
// an Error(capacity) that names the limit, never an abort or an OOM kill.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

namespace loom {

/// The tightest memory limit found, in bytes still available, and where it comes from.
struct MemoryLimit {
  std::uint64_t bytes = 0;  ///< 0: no limit could be determined
  std::string source;       ///< "MemAvailable", "RLIMIT_AS (ulimit -v)", "RLIMIT_DATA", "cgroup memory.max"
};

namespace detail {

/// MemAvailable from /proc/meminfo in bytes, or 0 when it cannot be read.
inline std::uint64_t available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (f >> key >> kib) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

/// Field `index` of /proc/self/statm (pages) in bytes, or 0.
inline std::uint64_t statm_bytes(int index) {
  std::ifstream f("/proc/self/statm");
  std::uint64_t v = 0;
  for (int i = 0; i <= index; ++i)
    if (!(f >> v)) return 0;
  const long page = ::sysconf(_SC_PAGESIZE);
  return v * std::uint64_t(page > 0 ? page : 4096);
}

/// A single unsigned number from a file ("max" or unreadable: nullopt-like 0 with ok = false).
inline bool read_number(const std::string& path, std::uint64_t& out) {
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return false;
  try {
    out = std::stoull(s);
  } catch (...) {
    return false;
  }
  return true;
}

}  // namespace detail

/// The smallest of: MemAvailable; RLIMIT_AS minus the address space in use; RLIMIT_DATA minus the
/// data in use; memory.max minus memory.current of this process's cgroup v2 and its ancestors.
inline MemoryLimit memory_limit() {
  MemoryLimit best;
  auto consider = [&](std::uint64_t bytes, const char* source) {
    if (best.source.empty() || bytes < best.bytes) {
      best.bytes = bytes;
      best.source = source;
    }
  };
  if (const std::uint64_t avail = detail::available_memory()) consider(avail, "MemAvailable");
  rlimit rl{};
  if (::getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    const std::uint64_t used = detail::statm_bytes(0);  // total program size (the address space)
    consider(rl.rlim_cur > used ? rl.rlim_cur - used : 0, "RLIMIT_AS (ulimit -v)");
  }
  if (::getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    const std::uint64_t used = detail::statm_bytes(5);  // data + stack
    consider(rl.rlim_cur > used ? rl.rlim_cur - used : 0, "RLIMIT_DATA");
  }
  // cgroup v2: "0::/some/path" in /proc/self/cgroup; a limit anywhere up the tree applies.
  std::ifstream cg("/proc/self/cgroup");
  for (std::string line; std::getline(cg, line);) {
    if (line.rfind("0::", 0) != 0) continue;
    std::string rel = line.substr(3);
    for (;;) {
      const std::string dir = "/sys/fs/cgroup" + (rel == "/" ? std::string() : rel);
      std::uint64_t max = 0, current = 0;
      if (detail::read_number(dir + "/memory.max", max)) {
        detail::read_number(dir + "/memory.current", current);
        consider(max > current ? max - current : 0, "cgroup memory.max");
      }
      if (rel.empty() || rel == "/") break;
      const auto slash = rel.rfind('/');
      rel = slash == 0 || slash == std::string::npos ? "/" : rel.substr(0, slash);
    }
  }
  return best;
}

}  // namespace loom

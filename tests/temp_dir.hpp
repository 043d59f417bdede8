// A per-process temporary folder for a test binary's files, removed when the process exits.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace loom::test {

/// The process's folder `<temp>/<prefix>-<pid>`, created on first use and removed at exit.
inline const std::filesystem::path& process_temp_dir(const char* prefix) {
  struct Folder {
    std::filesystem::path path;
    explicit Folder(const char* p)
        : path(std::filesystem::temp_directory_path() / (std::string(p) + "-" + std::to_string(::getpid()))) {
      std::filesystem::create_directories(path);
    }
    ~Folder() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Folder folder(prefix);
  return folder.path;
}

}  // namespace loom::test

#pragma once

// A small tmpfs for tests of a filesystem that fills up.

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <sys/mount.h>

namespace troupe::test {

/// A tmpfs of `size` (e.g. "64m") mounted at `path` for one test, unmounted
/// when it goes away. Needs the right to mount (root, as the tests run);
/// when it has none, `mounted` is false and `error` says why.
struct tmpfs_mount {
  std::filesystem::path where;
  bool mounted = false;
  std::string error;

  tmpfs_mount(std::filesystem::path path, const std::string& size)
      : where(std::move(path)) {
    std::filesystem::create_directories(where);
    if (::mount("tmpfs", where.c_str(), "tmpfs", 0, ("size=" + size).c_str())
        == 0)
      mounted = true;
    else
      error = std::strerror(errno);
  }

  ~tmpfs_mount() {
    if (mounted)
      ::umount2(where.c_str(), MNT_DETACH);
  }

  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;
};

} // namespace troupe::test

#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace troupe::test {

/// A fresh folder under the system temp folder, removed with its contents
/// when the object goes away.
class temp_dir {
 public:
  temp_dir() {
    auto base = std::filesystem::temp_directory_path();
    std::string pattern = (base / "troupe-test-XXXXXX").string();
    if (!mkdtemp(pattern.data()))
      throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }

  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }

  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const noexcept { return path_; }

  /// Writes `content` to `name` inside the folder and returns its path.
  std::filesystem::path write(const std::string& name,
                              std::string_view content) const {
    auto p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream out{p, std::ios::binary};
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    return p;
  }

 private:
  std::filesystem::path path_;
};

/// Counts the lines of the file at `path` that are `line` (0 when there is
/// no such file).
inline int count_lines(const std::filesystem::path& path,
                       const std::string& line) {
  std::ifstream in{path};
  std::string l;
  int n = 0;
  while (std::getline(in, l))
    n += l == line;
  return n;
}

} // namespace troupe::test

#include "tools/local_host.hpp"

#include <arpa/inet.h>
#include <cstdlib>
#include <filesystem>
#include <netinet/in.h>
#include <sstream>
#include <stdexcept>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace troupe::tools {

std::string find_on_path(const std::string& program) {
  namespace fs = std::filesystem;
  auto* path = std::getenv("PATH");
  std::stringstream dirs{path ? path : ""};
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty())
      continue;
    auto p = fs::path{dir} / program;
    std::error_code ec;
    if (fs::is_regular_file(p, ec) && access(p.c_str(), X_OK) == 0)
      return p.string();
  }
  return {};
}

uint16_t free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0
      && ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  size_t got = 0;
  for (int tries = 0; got < bytes && tries < 100; ++tries) {
    auto n = getrandom(raw.data() + got, bytes - got, 0);
    if (n > 0)
      got += static_cast<size_t>(n);
  }
  if (got < bytes)
    throw std::runtime_error("cannot read random bytes for a secret");
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes);
  for (auto b : raw) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

} // namespace troupe::tools

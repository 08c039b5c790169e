#include "tests/support/net.hpp"

#include <arpa/inet.h>
#include <chrono>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace troupe::test {

namespace {

/// Sends `request` to 127.0.0.1:`port` and reads until the server closes
/// or `limit` passes; returns (status line, body), or the whole answer and
/// "" when it is cut short, or nothing when none came.
std::pair<std::string, std::string>
http_exchange(uint16_t port, const std::string& request,
              std::chrono::milliseconds limit) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return {};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return {};
  }
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string all;
  char buf[8192];
  auto until = std::chrono::steady_clock::now() + limit;
  for (int i = 0; i < 10'000; ++i) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      until - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      break;
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0)
      break;
    all.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  auto eol = all.find("\r\n");
  auto body = all.find("\r\n\r\n");
  if (eol == std::string::npos || body == std::string::npos)
    return {all, ""};
  return {all.substr(0, eol), all.substr(body + 4)};
}

} // namespace

std::pair<std::string, std::string> http_get(uint16_t port,
                                             const std::string& path) {
  return http_exchange(port,
                       "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n",
                       std::chrono::seconds{5});
}

std::pair<std::string, std::string> http_post(uint16_t port,
                                              const std::string& path,
                                              const std::string& json_body,
                                              std::chrono::milliseconds limit) {
  return http_exchange(port,
                       "POST " + path
                         + " HTTP/1.0\r\nHost: localhost\r\nContent-Type: "
                           "application/json\r\nContent-Length: "
                         + std::to_string(json_body.size()) + "\r\n\r\n"
                         + json_body,
                       limit);
}

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
      || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

black_hole::black_hole() {
  fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0
      && ::listen(fd, 16) == 0
      && ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
}

black_hole::~black_hole() {
  ::close(fd);
}

} // namespace troupe::test

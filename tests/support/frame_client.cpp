#include "tests/support/frame_client.hpp"

#include "runtime/control/wire.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace troupe::test {

namespace control = runtime::control;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

frame_client::frame_client(uint16_t port, const std::string& host) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0)
    return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1
      || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

frame_client::~frame_client() {
  if (fd_ >= 0)
    ::close(fd_);
}

bool frame_client::send_raw(const std::string& bytes) {
  size_t sent = 0;
  while (fd_ >= 0 && sent < bytes.size()) {
    auto n
      = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    sent += static_cast<size_t>(n);
  }
  return fd_ >= 0;
}

bool frame_client::send(const json& msg) {
  return send_raw(control::encode_frame(msg));
}

bool frame_client::read_exact(char* out, size_t n,
                              steady::time_point deadline) {
  size_t got = 0;
  while (got < n) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - steady::now())
                  .count();
    if (left <= 0)
      return false;
    pollfd p{fd_, POLLIN, 0};
    auto r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return false;
    auto k = ::recv(fd_, out + got, n - got, 0);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return false;
    got += static_cast<size_t>(k);
  }
  return true;
}

std::optional<json> frame_client::receive(std::chrono::milliseconds limit) {
  if (fd_ < 0)
    return std::nullopt;
  auto deadline = steady::now() + limit;
  unsigned char header[control::header_size];
  if (!read_exact(reinterpret_cast<char*>(header), sizeof header, deadline))
    return std::nullopt;
  auto n = control::read_length(header);
  if (n > (64u << 20))
    return std::nullopt;
  std::string body(n, '\0');
  if (!read_exact(body.data(), n, deadline))
    return std::nullopt;
  std::string error;
  return control::decode_body(body, error);
}

std::optional<json> frame_client::hello(const std::string& token,
                                        int64_t version) {
  json msg = {{"t", "hello"},
              {"id", 1},
              {"version", version != 0 ? version : control::protocol_version}};
  if (!token.empty())
    msg["token"] = token;
  if (!send(msg))
    return std::nullopt;
  return receive();
}

std::optional<json> frame_client::call(json msg, uint64_t id,
                                       std::chrono::milliseconds limit) {
  msg["id"] = id;
  if (!send(msg))
    return std::nullopt;
  auto deadline = steady::now() + limit;
  for (int i = 0; i < 10'000; ++i) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - steady::now());
    if (left.count() <= 0)
      return std::nullopt;
    auto m = receive(left);
    if (!m)
      return std::nullopt;
    if (m->value("id", uint64_t{0}) == id)
      return m;
  }
  return std::nullopt;
}

bool frame_client::closed_within(std::chrono::milliseconds limit) {
  auto deadline = steady::now() + limit;
  char buf[4096];
  for (int i = 0; i < 100'000; ++i) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - steady::now())
                  .count();
    if (left <= 0)
      return false;
    pollfd p{fd_, POLLIN, 0};
    auto r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return false;
    auto k = ::recv(fd_, buf, sizeof buf, 0);
    if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
      return true;
  }
  return false;
}

} // namespace troupe::test

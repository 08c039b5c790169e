#include "tests/support/pty_session.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace troupe::test {

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// States of strip_terminal_codes.
enum : int {
  plain,
  after_escape,  // ESC seen
  in_csi,        // ESC [ and parameters, up to a final byte
  in_string,     // ESC ] (OSC) or ESC P/X/^/_ , up to BEL or ESC backslash
  string_escape, // ESC inside such a string
  in_escape,     // ESC and intermediate bytes, up to a final byte
};

std::chrono::milliseconds left_until(clock_type::time_point deadline) {
  // Rounded up: a deadline less than a millisecond away is not yet due.
  return std::max(0ms, std::chrono::ceil<std::chrono::milliseconds>(
                         deadline - clock_type::now()));
}

} // namespace

std::string strip_terminal_codes(std::string_view raw, int& state) {
  std::string out;
  out.reserve(raw.size());
  for (char ch : raw) {
    auto c = static_cast<unsigned char>(ch);
    switch (state) {
    case plain:
      if (c == 0x1B)
        state = after_escape;
      else if (c == '\n' || c == '\t' || (c >= 0x20 && c != 0x7F))
        out += ch;
      break;
    case string_escape:
      // ESC \ ends the string; any other escape sequence ends it too.
      if (c == '\\') {
        state = plain;
        break;
      }
      [[fallthrough]];
    case after_escape:
      if (c == '[')
        state = in_csi;
      else if (c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_')
        state = in_string;
      else if (c >= 0x20 && c <= 0x2F)
        state = in_escape;
      else
        state = plain;
      break;
    case in_csi:
      if (c >= 0x40 && c <= 0x7E)
        state = plain;
      break;
    case in_string:
      if (c == 0x07)
        state = plain;
      else if (c == 0x1B)
        state = string_escape;
      break;
    case in_escape:
      if (c < 0x20 || c > 0x2F)
        state = plain;
      break;
    default: state = plain;
    }
  }
  return out;
}

terminal_screen::terminal_screen(int rows, int cols)
    : rows_(std::max(rows, 1)), cols_(std::max(cols, 1)),
      cells_(static_cast<size_t>(rows_),
             std::vector<std::string>(static_cast<size_t>(cols_), " ")) {}

void terminal_screen::feed(std::string_view raw) {
  bytes_ += raw.size();
  for (char ch : raw) {
    auto c = static_cast<unsigned char>(ch);
    switch (state_) {
    case plain:
      if (c == 0x1B)
        state_ = after_escape;
      else if (c == '\r')
        col_ = 0, pending_wrap_ = false;
      else if (c == '\n')
        line_feed();
      else if (c == '\b')
        col_ = std::max(0, col_ - 1), pending_wrap_ = false;
      else if ((c & 0xC0) == 0x80 && (col_ > 0 || pending_wrap_))
        // A UTF-8 continuation byte belongs to the last character.
        cells_[static_cast<size_t>(row_)]
              [static_cast<size_t>(pending_wrap_ ? col_ : col_ - 1)]
          += ch;
      else if (c >= 0x20 && c != 0x7F)
        put(ch);
      break;
    case after_escape:
      if (c == '[') {
        state_ = in_csi;
        params_.clear();
      } else if (c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_') {
        state_ = in_string;
      } else {
        state_ = (c >= 0x20 && c <= 0x2F) ? in_escape : plain;
      }
      break;
    case in_csi:
      if (c >= 0x40 && c <= 0x7E) {
        state_ = plain;
        csi(ch);
      } else {
        params_ += ch;
      }
      break;
    case in_string:
      if (c == 0x07)
        state_ = plain;
      else if (c == 0x1B)
        state_ = string_escape;
      break;
    case string_escape: state_ = c == '[' ? in_csi : plain; break;
    case in_escape:
      if (c < 0x20 || c > 0x2F)
        state_ = plain;
      break;
    default: state_ = plain;
    }
  }
}

void terminal_screen::put(char c) {
  if (pending_wrap_) {
    pending_wrap_ = false;
    ++wraps_;
    col_ = 0;
    line_feed();
  }
  cells_[static_cast<size_t>(row_)][static_cast<size_t>(col_)]
    = std::string(1, c);
  if (col_ + 1 < cols_)
    ++col_;
  else
    pending_wrap_ = true;
}

void terminal_screen::line_feed() {
  // The pty turns LF into CR LF (onlcr), as a terminal shows it.
  col_ = 0;
  pending_wrap_ = false;
  if (row_ + 1 < rows_) {
    ++row_;
    return;
  }
  cells_.erase(cells_.begin());
  cells_.emplace_back(static_cast<size_t>(cols_), " ");
}

void terminal_screen::csi(char final) {
  // The numbers of the sequence, 0 for those left out.
  std::vector<int> n;
  int v = 0;
  bool any = false;
  for (char p : params_) {
    if (p >= '0' && p <= '9') {
      v = std::min(v * 10 + (p - '0'), 100'000);
      any = true;
    } else if (p == ';') {
      n.push_back(any ? v : 0);
      v = 0;
      any = false;
    }
  }
  n.push_back(any ? v : 0);
  auto count = std::max(1, n[0]);
  auto blank = [&](size_t r, int from, int to) {
    for (int i = std::max(0, from); i < std::min(to, cols_); ++i)
      cells_[r][static_cast<size_t>(i)] = " ";
  };
  auto r = static_cast<size_t>(row_);
  pending_wrap_ = false;
  switch (final) {
  case 'A':
    most_up_ = std::max(most_up_, count);
    row_ = std::max(0, row_ - count);
    break;
  case 'B': row_ = std::min(rows_ - 1, row_ + count); break;
  case 'C': col_ = std::min(cols_ - 1, col_ + count); break;
  case 'D': col_ = std::max(0, col_ - count); break;
  case 'G': col_ = std::clamp(count - 1, 0, cols_ - 1); break;
  case 'H':
  case 'f':
    row_ = std::clamp(std::max(1, n[0]) - 1, 0, rows_ - 1);
    col_ = std::clamp((n.size() > 1 ? std::max(1, n[1]) : 1) - 1, 0, cols_ - 1);
    break;
  case 'K':
    if (n[0] == 0)
      blank(r, col_, cols_);
    else if (n[0] == 1)
      blank(r, 0, col_ + 1);
    else
      blank(r, 0, cols_);
    break;
  case 'J':
    if (n[0] == 0) {
      blank(r, col_, cols_);
      for (auto i = r + 1; i < cells_.size(); ++i)
        blank(i, 0, cols_);
    } else if (n[0] == 1) {
      for (size_t i = 0; i < r; ++i)
        blank(i, 0, cols_);
      blank(r, 0, col_ + 1);
    } else {
      for (size_t i = 0; i < cells_.size(); ++i)
        blank(i, 0, cols_);
    }
    break;
  default: break;
  }
}

std::vector<std::string> terminal_screen::lines() const {
  std::vector<std::string> out;
  for (auto& row : cells_) {
    std::string line;
    for (auto& cell : row)
      line += cell;
    while (!line.empty() && line.back() == ' ')
      line.pop_back();
    out.push_back(std::move(line));
  }
  return out;
}

pty_session::pty_session(
  const std::vector<std::string>& argv,
  const std::map<std::string, std::optional<std::string>>& env,
  const std::string& cwd, int rows, int cols)
    : screen_(rows, cols) {
  if (argv.empty())
    throw std::runtime_error("pty_session: no program");
  // Everything execve needs is built before fork: the child may only make
  // async-signal-safe calls.
  std::map<std::string, std::string> vars;
  for (char** e = environ; *e; ++e) {
    std::string kv{*e};
    if (auto eq = kv.find('='); eq != std::string::npos)
      vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (auto& [k, v] : env) {
    if (v)
      vars[k] = *v;
    else
      vars.erase(k);
  }
  std::vector<std::string> strings = argv;
  for (auto& [k, v] : vars)
    strings.push_back(k + "=" + v);
  std::vector<char*> args;
  std::vector<char*> envp;
  for (size_t i = 0; i < strings.size(); ++i)
    (i < argv.size() ? args : envp).push_back(strings[i].data());
  args.push_back(nullptr);
  envp.push_back(nullptr);

  winsize ws{};
  ws.ws_row = static_cast<unsigned short>(rows);
  ws.ws_col = static_cast<unsigned short>(cols);
  pid_ = ::forkpty(&master_, nullptr, nullptr, &ws);
  if (pid_ < 0)
    throw std::runtime_error("pty_session: forkpty failed");
  if (pid_ == 0) {
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0)
      ::_exit(126);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::fcntl(master_, F_SETFL, ::fcntl(master_, F_GETFL) | O_NONBLOCK);
  ::fcntl(master_, F_SETFD, FD_CLOEXEC);
}

pty_session::~pty_session() {
  if (!status_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    auto deadline = clock_type::now() + 10s;
    while (!reap(true) && clock_type::now() < deadline) {}
  }
  if (master_ >= 0)
    ::close(master_);
}

bool pty_session::reap(bool block_briefly) {
  if (status_)
    return true;
  int st = 0;
  auto r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    return true;
  }
  if (r < 0 && errno != EINTR) {
    status_ = -1; // Not our child any more: nothing to wait for.
    return true;
  }
  if (block_briefly)
    std::this_thread::sleep_for(10ms);
  return false;
}

void pty_session::append(std::string_view raw) {
  screen_.feed(raw);
  out_ += strip_terminal_codes(raw, escape_state_);
  // Trimmed once it holds twice the limit: a child writing without end
  // costs a copy per max_output bytes, not per read.
  if (out_.size() > 2 * max_output) {
    auto drop = out_.size() - max_output;
    out_.erase(0, drop);
    mark_ = mark_ > drop ? mark_ - drop : 0;
  }
}

bool pty_session::pump(std::chrono::milliseconds limit) {
  if (eof_ || master_ < 0)
    return false;
  pollfd pfd{master_, POLLIN, 0};
  int n = ::poll(&pfd, 1, static_cast<int>(limit.count()));
  if (n <= 0)
    return false;
  bool got = false;
  char buf[4096];
  // Bounded: a child that writes without pause cannot keep us here.
  for (int i = 0; i < 256; ++i) {
    auto r = ::read(master_, buf, sizeof buf);
    if (r > 0) {
      append({buf, static_cast<size_t>(r)});
      got = true;
      continue;
    }
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    // 0, or EIO once no process holds the terminal open any more.
    eof_ = true;
    break;
  }
  return got;
}

bool pty_session::write(std::string_view keys) {
  auto deadline = clock_type::now() + 5s;
  while (!keys.empty()) {
    auto n = ::write(master_, keys.data(), keys.size());
    if (n > 0) {
      keys.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return false;
    if (clock_type::now() >= deadline)
      return false;
    // The terminal's input queue is full: let the child read by draining
    // what it writes meanwhile.
    if (!pump(10ms))
      std::this_thread::sleep_for(5ms);
  }
  return true;
}

bool pty_session::expect(std::string_view text,
                         std::chrono::milliseconds limit) {
  auto deadline = clock_type::now() + limit;
  for (;;) {
    if (auto pos = out_.find(text, mark_); pos != std::string::npos) {
      mark_ = pos + text.size();
      return true;
    }
    auto left = left_until(deadline);
    if (eof_ || left == 0ms)
      return false;
    pump(std::min(left, std::chrono::milliseconds{100}));
  }
}

std::string pty_session::output() {
  pump(0ms);
  return out_;
}

std::string pty_session::unmatched() {
  pump(0ms);
  return out_.substr(std::min(mark_, out_.size()));
}

std::optional<int> pty_session::wait(std::chrono::milliseconds limit) {
  auto deadline = clock_type::now() + limit;
  for (;;) {
    if (reap(false)) {
      // Take what it wrote before it ended; bounded by max_output.
      for (int i = 0; i < 64 && pump(0ms); ++i) {}
      return status_;
    }
    auto left = left_until(deadline);
    if (left == 0ms)
      return std::nullopt;
    if (eof_ || !pump(std::min(left, std::chrono::milliseconds{20})))
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds{5}));
  }
}

} // namespace troupe::test

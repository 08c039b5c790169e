#include "tests/support/process.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace troupe::test {

namespace {

/// argv and envp (the parent's environment changed by `opts.env`) as the
/// C arrays execve wants.
struct exec_args {
  std::vector<std::string> strings;
  std::vector<char*> args;
  std::vector<char*> envp;

  exec_args(const std::vector<std::string>& argv, const process_options& opts)
      : strings(argv) {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e; ++e) {
      std::string kv{*e};
      auto eq = kv.find('=');
      if (eq != std::string::npos)
        env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    for (auto& [k, v] : opts.env) {
      if (v)
        env[k] = *v;
      else
        env.erase(k);
    }
    for (auto& [k, v] : env)
      strings.push_back(k + "=" + v);
    for (size_t i = 0; i < argv.size(); ++i)
      args.push_back(strings[i].data());
    args.push_back(nullptr);
    for (size_t i = argv.size(); i < strings.size(); ++i)
      envp.push_back(strings[i].data());
    envp.push_back(nullptr);
  }
};

void write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    auto n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    done += static_cast<size_t>(n);
  }
}

} // namespace

process_result run_process(const std::vector<std::string>& argv,
                           const process_options& opts) {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC)
      || pipe2(in_pipe, O_CLOEXEC))
    throw std::runtime_error("pipe failed");
  // Built before fork: only async-signal-safe calls after.
  exec_args ea{argv, opts};
  auto& args = ea.args;
  auto& envp = ea.envp;

  pid_t pid = fork();
  if (pid < 0)
    throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    if (!opts.cwd.empty() && chdir(opts.cwd.c_str()) != 0)
      _exit(126);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  write_all(in_pipe[1], opts.stdin_data);
  close(in_pipe[1]);

  process_result result;
  auto deadline = std::chrono::steady_clock::now() + opts.time_limit;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      result.timed_out = true;
      break;
    }
    int n = poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR)
      continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      auto got = read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        (i == 0 ? result.out : result.err)
          .append(buf, static_cast<size_t>(got));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0)
      close(f.fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  result.exit_code
    = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return result;
}

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, {}};
}

} // namespace

background_process::background_process(const std::vector<std::string>& argv,
                                       const process_options& opts,
                                       std::string out_file,
                                       std::string err_file)
    : out_file_(std::move(out_file)), err_file_(std::move(err_file)) {
  // Built before fork: only async-signal-safe calls after.
  exec_args ea{argv, opts};
  auto& args = ea.args;
  auto& envp = ea.envp;
  pid_ = fork();
  if (pid_ < 0)
    throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    int in = open("/dev/null", O_RDONLY);
    int out = open(out_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(err_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0)
      _exit(125);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    if (!opts.cwd.empty() && chdir(opts.cwd.c_str()) != 0)
      _exit(126);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
}

background_process::~background_process() {
  if (!status_) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::milliseconds{10'000});
  }
}

void background_process::signal(int sig) {
  if (!status_)
    ::kill(pid_, sig);
}

std::optional<int> background_process::wait(std::chrono::milliseconds limit) {
  if (status_)
    return status_;
  auto deadline = std::chrono::steady_clock::now() + limit;
  do {
    int st = 0;
    auto r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
      return status_;
    }
    if (r < 0 && errno != EINTR)
      return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  } while (std::chrono::steady_clock::now() < deadline);
  return std::nullopt;
}

std::string background_process::out() const {
  return slurp(out_file_);
}

std::string background_process::err() const {
  return slurp(err_file_);
}

bool wait_until(const std::function<bool()>& pred,
                std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return true;
}

} // namespace troupe::test

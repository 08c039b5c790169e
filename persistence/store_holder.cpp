#include "persistence/store_holder.hpp"

#include <cerrno>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <unistd.h>

namespace troupe::persistence {

namespace {

namespace fs = std::filesystem;

constexpr const char* file_name = "HOLDER";

/// When process `pid` started (field 22 of /proc/PID/stat, in clock ticks
/// since boot), or empty when it cannot be read: with the pid, it names one
/// process, even once the pid is used again.
std::string start_time(int64_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string stat{std::istreambuf_iterator<char>{in}, {}};
  // The command name in parentheses may hold blanks: count from its end.
  auto close = stat.rfind(')');
  if (close == std::string::npos)
    return {};
  std::istringstream fields{stat.substr(close + 1)};
  std::string field;
  // Fields 3 to 22.
  for (int i = 3; i <= 22; ++i)
    if (!(fields >> field))
      return {};
  return field;
}

/// Whether a process with id `pid` exists.
bool alive(int64_t pid) {
  return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
}

/// Keeps values on their line.
std::string one_line(std::string s) {
  for (auto& c : s)
    if (c == '\n' || c == '\r')
      c = ' ';
  return s;
}

} // namespace

std::string write_store_holder(const std::string& dir, const store_holder& h) {
  auto pid = static_cast<int64_t>(::getpid());
  auto path = fs::path{dir} / file_name;
  auto temp = fs::path{dir} / (std::string{file_name} + ".tmp");
  {
    std::ofstream out{temp, std::ios::trunc};
    out << "pid " << pid << "\nstarted " << start_time(pid) << "\ncommand "
        << one_line(h.command) << "\naddress " << one_line(h.address) << "\n";
    if (!out.flush())
      return "cannot write " + temp.string();
  }
  std::error_code ec;
  fs::rename(temp, path, ec);
  if (ec)
    return "cannot write " + path.string() + ": " + ec.message();
  return {};
}

std::optional<store_holder> read_store_holder(const std::string& dir) {
  std::ifstream in{fs::path{dir} / file_name};
  if (!in)
    return std::nullopt;
  store_holder h;
  std::string started;
  std::string line;
  for (int i = 0; i < 16 && std::getline(in, line); ++i) {
    auto blank = line.find(' ');
    auto key = line.substr(0, blank);
    auto value = blank == std::string::npos ? "" : line.substr(blank + 1);
    if (key == "pid")
      h.pid = std::atoll(value.c_str());
    else if (key == "started")
      started = value;
    else if (key == "command")
      h.command = value;
    else if (key == "address")
      h.address = value;
  }
  if (!alive(h.pid))
    return std::nullopt;
  // A pid in use again names a process that started later.
  if (auto now = start_time(h.pid);
      !now.empty() && !started.empty() && now != started)
    return std::nullopt;
  return h;
}

void remove_store_holder(const std::string& dir) {
  auto path = fs::path{dir} / file_name;
  std::ifstream in{path};
  std::string key;
  int64_t pid = 0;
  if (!(in >> key >> pid) || key != "pid" || pid != ::getpid())
    return;
  std::error_code ignored;
  fs::remove(path, ignored);
}

} // namespace troupe::persistence

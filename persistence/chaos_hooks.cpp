// Test-only hooks for `troupe chaos`: see chaos_hooks.hpp.

#include "persistence/chaos_hooks.hpp"

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace troupe::persistence::chaos {

namespace {

using steady = std::chrono::steady_clock;

bool read_hooks_flag() {
  const char* v = std::getenv("TROUPE_CHAOS_HOOKS");
  return v != nullptr && std::string_view{v} == "1";
}

int open_ledger() {
  const char* path = std::getenv("TROUPE_CHAOS_LEDGER");
  if (path == nullptr || *path == '\0')
    return -1;
  // Opened once; O_APPEND so that every member of a machine may share one
  // file and each line lands whole.
  return ::open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

/// slow_disk and fail_disk, under `mtx` (armed rarely, read only while
/// disk_armed is set).
struct disk_state {
  std::mutex mtx;
  std::chrono::milliseconds delay{0};
  steady::time_point slow_until{};
  disk_fault error = disk_fault::none;
  steady::time_point fail_until{};
};

disk_state& disk() {
  static disk_state d;
  return d;
}

/// The ledger's member name and partition mapping, and the epochs this
/// member leads its partitions at (0: not led).
struct ledger_state {
  std::mutex mtx;
  std::string member = "-";
  std::function<uint32_t(std::string_view)> partition_of;
  std::array<std::atomic<uint64_t>, 256> epochs{};
  /// The member lost its lease and has not registered again.
  std::atomic<bool> fenced{false};
  /// Serialises leadership changes with fencing (not the run lines).
  std::mutex fence_mtx;
};

ledger_state& ledger() {
  static ledger_state l;
  return l;
}

int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// Keeps a field one word: the ledger's fields are separated by spaces.
void append_field(std::string& line, std::string_view field) {
  line += ' ';
  if (field.empty()) {
    line += '-';
    return;
  }
  for (char c : field)
    line += (c == ' ' || c == '\n' || c == '\t' || c == '\r') ? '_' : c;
}

/// Writes one line with one write(); a test-only hook, on the path where
/// the event happens.
void write_line(std::string_view event, std::string_view run_id,
                std::string_view node, std::string_view attempt,
                std::string_view partition, std::string_view epoch) {
  std::string line = std::to_string(monotonic_ns());
  {
    std::lock_guard guard{ledger().mtx};
    append_field(line, ledger().member);
  }
  append_field(line, event);
  append_field(line, run_id);
  append_field(line, node);
  append_field(line, attempt);
  append_field(line, partition);
  append_field(line, epoch);
  line += '\n';
  // A short write to a regular file does not happen but on a full disk;
  // a ledger line is then lost, as the test would see.
  (void)!::write(detail::ledger_fd, line.data(), line.size());
}

} // namespace

namespace detail {

const bool hooks_on = read_hooks_flag();
std::atomic<bool> disk_armed{false};
std::atomic<int64_t> clock_offset_ns{0};
std::atomic<bool> rerun_armed{false};
const int ledger_fd = open_ledger();

disk_fault before_write_armed() {
  std::chrono::milliseconds delay{0};
  disk_fault error = disk_fault::none;
  {
    auto& d = disk();
    std::lock_guard guard{d.mtx};
    auto now = steady::now();
    if (now < d.slow_until)
      delay = d.delay;
    if (now < d.fail_until)
      error = d.error;
    if (now >= d.slow_until && now >= d.fail_until)
      disk_armed.store(false, std::memory_order_relaxed);
  }
  // On the store's own thread (never a CAF scheduler thread).
  if (delay.count() > 0)
    std::this_thread::sleep_for(delay);
  return error;
}

} // namespace detail

void slow_disk(std::chrono::milliseconds delay,
               std::chrono::milliseconds span) {
  if (!hooks_enabled())
    return;
  auto& d = disk();
  std::lock_guard guard{d.mtx};
  d.delay = delay;
  d.slow_until = steady::now() + span;
  detail::disk_armed.store(true);
}

void fail_disk(disk_fault error, std::chrono::milliseconds span) {
  if (!hooks_enabled())
    return;
  auto& d = disk();
  std::lock_guard guard{d.mtx};
  d.error = error;
  d.fail_until = steady::now() + span;
  detail::disk_armed.store(true);
}

void jump_clock(std::chrono::milliseconds offset) {
  if (!hooks_enabled())
    return;
  detail::clock_offset_ns.fetch_add(
    std::chrono::duration_cast<std::chrono::nanoseconds>(offset).count());
}

void arm_rerun() {
  if (hooks_enabled())
    detail::rerun_armed.store(true);
}

void clear() {
  auto& d = disk();
  {
    std::lock_guard guard{d.mtx};
    d.delay = {};
    d.slow_until = {};
    d.error = disk_fault::none;
    d.fail_until = {};
    detail::disk_armed.store(false);
  }
  detail::clock_offset_ns.store(0);
  detail::rerun_armed.store(false);
}

std::string describe() {
  auto& d = disk();
  int64_t slow_ms = 0, slow_left = 0, fail_left = 0;
  std::string fail = "none";
  {
    std::lock_guard guard{d.mtx};
    auto now = steady::now();
    auto left = [&](steady::time_point until) -> int64_t {
      return until > now
               ? std::chrono::duration_cast<std::chrono::milliseconds>(until
                                                                       - now)
                   .count()
               : 0;
    };
    slow_left = left(d.slow_until);
    fail_left = left(d.fail_until);
    if (slow_left > 0)
      slow_ms = d.delay.count();
    if (fail_left > 0)
      fail = d.error == disk_fault::io_error ? "io_error" : "no_space";
  }
  return "{\"slow_disk_ms\":" + std::to_string(slow_ms)
         + ",\"slow_for_ms\":" + std::to_string(slow_left) + ",\"fail_disk\":\""
         + fail + "\",\"fail_for_ms\":" + std::to_string(fail_left)
         + ",\"clock_offset_ms\":"
         + std::to_string(clock_offset_ns() / 1'000'000) + ",\"rerun_armed\":"
         + (detail::rerun_armed.load() ? "true" : "false") + "}";
}

void set_ledger_member(std::string member,
                       std::function<uint32_t(std::string_view)> partition_of) {
  auto& l = ledger();
  std::lock_guard guard{l.mtx};
  l.member = member.empty() ? "-" : std::move(member);
  l.partition_of = std::move(partition_of);
}

void note_leading(uint32_t partition, std::optional<uint64_t> epoch,
                  std::optional<uint64_t> was) {
  auto& l = ledger();
  if (!ledger_on() || partition >= l.epochs.size())
    return;
  auto now = epoch.value_or(0);
  auto before = was.value_or(0);
  if (now == before)
    return;
  // Serialised with note_member_fenced. A fenced member resigned already,
  // and says lead once it is back.
  std::lock_guard guard{l.fence_mtx};
  bool fenced = l.fenced.load();
  auto p = std::to_string(partition);
  if (before != 0) {
    l.epochs[partition].store(0);
    if (!fenced)
      write_line("resign", "", "", "", p, std::to_string(before));
  }
  if (now != 0) {
    // Before the store records anything as the partition's leader.
    if (!fenced)
      write_line("lead", "", "", "", p, std::to_string(now));
    l.epochs[partition].store(now);
  }
}

void note_member_fenced(bool fenced) {
  auto& l = ledger();
  if (!ledger_on())
    return;
  std::lock_guard guard{l.fence_mtx};
  if (l.fenced.exchange(fenced) == fenced)
    return;
  for (size_t p = 0; p < l.epochs.size(); ++p)
    if (auto e = l.epochs[p].load(); e != 0)
      write_line(fenced ? "resign" : "lead", "", "", "", std::to_string(p),
                 std::to_string(e));
}

void record(std::string_view event, std::string_view run_id,
            std::string_view node, int64_t attempt) {
  if (!ledger_on())
    return;
  std::optional<uint32_t> part;
  {
    auto& l = ledger();
    std::lock_guard guard{l.mtx};
    if (l.partition_of) {
      try {
        part = l.partition_of(run_id);
      } catch (...) {
        part.reset();
      }
    }
  }
  std::string p = "-", e = "-";
  if (part) {
    p = std::to_string(*part);
    if (*part < ledger().epochs.size() && !ledger().fenced.load())
      if (auto epoch = ledger().epochs[*part].load(); epoch != 0)
        e = std::to_string(epoch);
  }
  write_line(event, run_id, node, attempt > 0 ? std::to_string(attempt) : "", p,
             e);
}

} // namespace troupe::persistence::chaos

#pragma once

// Fault hooks and the chaos ledger: test-only switches compiled into the
// `troupe` binary for `troupe chaos` (docs/chaos.md, "Fault hooks and the
// ledger").
//
// The hooks (a slow or failing store, a clock offset, a completed node run
// again) do anything only in a process started with TROUPE_CHAOS_HOOKS=1,
// read once when the process starts; there is no configuration key for
// them, so no production config can turn them on. Off, each costs one
// relaxed atomic load where it is checked, and nothing else.
//
// The ledger is a text file named by TROUPE_CHAOS_LEDGER, opened once with
// O_APPEND when the process starts: one line per event, each written with
// one write() and no buffering, so that a SIGKILL loses no line already
// written. Without the variable nothing is written or formatted.
//
// Here in persistence/ because the store is the lowest layer that needs
// them; the engine's clock (actors::now_ns), the run and attempt actors and
// the control request use them from above.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::persistence::chaos {

/// The error a failing store write gives.
enum class disk_fault : uint8_t { none, io_error, no_space };

namespace detail {
/// Whether TROUPE_CHAOS_HOOKS=1 was set at start.
extern const bool hooks_on;
/// Whether slow_disk or fail_disk may be in force (their windows may have
/// passed): the store's fast check.
extern std::atomic<bool> disk_armed;
/// The clock offset of clock_jump, in ns (0 unless hooks_on).
extern std::atomic<int64_t> clock_offset_ns;
/// Armed by rerun_completed, taken by the first completion after.
extern std::atomic<bool> rerun_armed;
/// The ledger's descriptor, or -1 without TROUPE_CHAOS_LEDGER.
extern const int ledger_fd;

disk_fault before_write_armed();
} // namespace detail

// -- fault hooks
// ---------------------------------------------------------------

/// Returns whether this process was started with TROUPE_CHAOS_HOOKS=1.
inline bool hooks_enabled() noexcept {
  return detail::hooks_on;
}

/// Called by the store on its own threads (writer, replicator worker,
/// retention) before each write reaches RocksDB: sleeps for slow_disk's
/// delay while it is in force, and returns the error fail_disk injects
/// (none otherwise). Never called on a CAF scheduler thread.
inline disk_fault before_store_write() {
  if (!detail::disk_armed.load(std::memory_order_relaxed))
    return disk_fault::none;
  return detail::before_write_armed();
}

/// Delays every store write by `delay` for the next `span`.
void slow_disk(std::chrono::milliseconds delay, std::chrono::milliseconds span);

/// Fails every store write with `error` for the next `span`.
void fail_disk(disk_fault error, std::chrono::milliseconds span);

/// Adds `offset` to the wall clock the engine reads (cumulative).
void jump_clock(std::chrono::milliseconds offset);

/// Returns the clock offset clock_jump set, in ns (0 when off).
inline int64_t clock_offset_ns() noexcept {
  return detail::clock_offset_ns.load(std::memory_order_relaxed);
}

/// Arms rerun_completed: the next node that completes on this member runs
/// once more (the "deliberately broken build" of `troupe chaos`).
void arm_rerun();

/// Returns true once after arm_rerun(): the caller runs the node again.
inline bool take_rerun() noexcept {
  return detail::rerun_armed.load(std::memory_order_relaxed)
         && detail::rerun_armed.exchange(false);
}

/// Turns every hook off: slow and failing writes, the clock offset, rerun.
void clear();

/// What the hooks in force are, for the answer to a fault request: JSON
/// text {"slow_disk_ms", "slow_for_ms", "fail_disk", "fail_for_ms",
/// "clock_offset_ms", "rerun_armed"} (windows left, 0 when over).
std::string describe();

// -- the ledger
// ----------------------------------------------------------------

/// Returns whether TROUPE_CHAOS_LEDGER names a ledger this process writes.
inline bool ledger_on() noexcept {
  return detail::ledger_fd >= 0;
}

/// Names this member in the ledger (`-` until set: a node outside a
/// cluster), and how to tell a run's partition from its id.
void set_ledger_member(std::string member,
                       std::function<uint32_t(std::string_view)> partition_of);

/// The store begins (`epoch` set) or stops (unset) leading `partition`:
/// writes a `lead` line before it acts as leader, or a `resign` line, and
/// remembers the epoch for the run lines. Epoch 0 (a store never fenced,
/// not in a cluster) is no leadership of the cluster and writes nothing.
void note_leading(uint32_t partition, std::optional<uint64_t> epoch,
                  std::optional<uint64_t> was);

/// The member lost its lease (`fenced`: it starts no work, and may no
/// longer lead anything) or registered again after it: writes a `resign`
/// line for each partition its store leads, or a `lead` line for each it
/// still leads then (until the store learns of a newer epoch). While
/// fenced, run lines carry no epoch.
void note_member_fenced(bool fenced);

/// Writes a run line: `event` (start, done) of `node`'s attempt `attempt`
/// of run `run_id`, with the run's partition and the epoch this member
/// leads it at (`-` for each when unknown). No-op without a ledger.
void record(std::string_view event, std::string_view run_id,
            std::string_view node, int64_t attempt);

} // namespace troupe::persistence::chaos

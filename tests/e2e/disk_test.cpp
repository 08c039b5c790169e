// A node whose data dir runs low on space (storage.min_free): it refuses
// submissions with a typed error, starts no attempts, answers /ready with
// 503 naming why, says so in its metrics, and resumes by itself when space
// returns. Free space is injected (TROUPE_TEST_FREE_SPACE_FILE), or real on
// a small tmpfs.

#include "tests/support/node_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_session.hpp"
#include "tests/support/tmpfs_mount.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <sys/statvfs.h>
#include <unistd.h>

using namespace std::chrono_literals;
using troupe::test::background_process;
using troupe::test::http_get;
using troupe::test::process_result;
using troupe::test::tmpfs_mount;
using troupe::test::wait_until;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t mib = uint64_t{1} << 20;
constexpr uint64_t gib = uint64_t{1} << 30;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct Disk : troupe::test::node_process_fixture {
  /// Where the injected free-space reading is kept ("FREE TOTAL").
  fs::path space_file = dir.path() / "free-space";
  /// Whether processes read free space from `space_file`, not statvfs.
  bool inject = true;

  troupe::test::process_options opts() override {
    auto o = node_process_fixture::opts();
    if (inject)
      o.env["TROUPE_TEST_FREE_SPACE_FILE"] = space_file.string();
    else
      o.env["TROUPE_TEST_FREE_SPACE_FILE"] = std::nullopt;
    return o;
  }

  /// Sets the injected reading.
  void set_free(uint64_t free, uint64_t total = 100 * gib) {
    auto tmp = space_file.string() + ".tmp";
    std::ofstream{tmp} << free << " " << total << "\n";
    fs::rename(tmp, space_file);
  }

  std::string ready_status() { return http_get(http_port, "/ready").first; }

  /// Every journal event of `run` as the node reports it.
  json events(const std::string& run) {
    auto h = cli({"history", run, "--json"});
    auto j = json::parse(h.out, nullptr, false);
    return j.is_discarded() ? json::array() : j["events"];
  }

  static bool started(const json& events, const std::string& node_id) {
    for (auto& e : events)
      if (e.value("type", "") == "attempt_started"
          && e.value("node", "") == node_id)
        return true;
    return false;
  }
};

} // namespace

// With the injected reading below storage.min_free: submissions are refused
// with disk_low naming free space and the floor (`troupe submit` prints it
// and exits 3), a run in flight starts no further attempt, /ready answers
// 503 with the reason, the metrics show it; when space returns the node
// resumes by itself and the run finishes.
TEST_F(Disk, LowSpaceRefusesSubmissionsHoldsAttemptsAndResumes) {
  set_free(10 * gib);
  start_node({"--set", "storage.min_free=1GiB"});
  EXPECT_EQ(ready_status(), "HTTP/1.0 200 OK");
  auto sleeper = workflow("sleeper", "nodes:\n  a: {kind: noop}\n  nap: "
                                     "{kind: sleep, duration: 1s, after: "
                                     "[a]}\n  b: {kind: noop, after: [nap]}\n");
  auto r = cli({"submit", sleeper});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto run = r.out.substr(0, r.out.find('\n'));
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto& e : events(run))
        if (e.value("type", "") == "timer_set")
          return true;
      return false;
    },
    10s));

  set_free(512 * mib);
  ASSERT_TRUE(wait_until(
    [&] { return ready_status() == "HTTP/1.0 503 Service Unavailable"; }, 10s));
  auto ready = json::parse(http_get(http_port, "/ready").second);
  EXPECT_EQ(ready["status"], "disk_low");
  EXPECT_EQ(ready["reason"], "the data dir's filesystem has 512 MiB free, "
                             "below storage.min_free (1 GiB)");
  EXPECT_EQ(ready["free_bytes"], 512 * mib);
  EXPECT_EQ(ready["min_free_bytes"], gib);
  // A ping says the same as /ready.
  troupe::test::raw_session viewer{control_port, token("viewer")};
  auto ping = viewer.call({{"t", "ping"}})["body"];
  EXPECT_EQ(ping["ready"], false) << ping;
  EXPECT_EQ(ping["status"], "disk_low") << ping;
  EXPECT_EQ(ping["reason"], ready["reason"]) << ping;
  EXPECT_EQ(ping["free_bytes"], 512 * mib) << ping;
  auto metrics = http_get(http_port, "/metrics").second;
  EXPECT_TRUE(contains(metrics, "troupe_disk_low 1\n")) << metrics;
  EXPECT_TRUE(contains(metrics, "troupe_disk_free_bytes 536870912\n"))
    << metrics;
  EXPECT_TRUE(contains(metrics, "troupe_disk_min_free_bytes 1073741824\n"))
    << metrics;
  EXPECT_TRUE(contains(node->err(), "data dir low on space")) << node->err();

  auto refused = cli({"submit", sleeper});
  EXPECT_EQ(refused.exit_code, 3);
  EXPECT_TRUE(contains(refused.err,
                       "troupe: submit: the data dir's filesystem has 512 MiB "
                       "free, below storage.min_free (1 GiB): the node takes "
                       "no submissions and starts no attempts until space is "
                       "freed"))
    << refused.err;
  auto list = cli({"list", "--json"});
  EXPECT_EQ(json::parse(list.out)["runs"].size(), 1u) << list.out;

  // The nap ended long ago, yet b has not started: its start is held.
  std::this_thread::sleep_for(2500ms);
  auto held = events(run);
  EXPECT_FALSE(started(held, "b")) << held.dump();
  EXPECT_EQ(json::parse(cli({"status", run, "--json"}).out)["state"],
            "running");
  metrics = http_get(http_port, "/metrics").second;
  EXPECT_TRUE(contains(metrics, "troupe_journal_queued_appends 1\n"))
    << metrics;

  set_free(10 * gib);
  ASSERT_TRUE(
    wait_until([&] { return ready_status() == "HTTP/1.0 200 OK"; }, 10s));
  ping = viewer.call({{"t", "ping"}})["body"];
  EXPECT_EQ(ping, json({{"ready", true}}));
  auto done = cli({"watch", run});
  EXPECT_EQ(done.exit_code, 0) << done.err;
  EXPECT_TRUE(started(events(run), "b"));
  EXPECT_TRUE(contains(node->err(), "data dir space is back")) << node->err();
  EXPECT_TRUE(
    contains(http_get(http_port, "/metrics").second, "troupe_disk_low 0\n"));
  auto again = cli({"submit", sleeper});
  EXPECT_EQ(again.exit_code, 0) << again.err;
}

// `troupe run` on a data dir low on space refuses to start the run with
// the same reason, and exits 3.
TEST_F(Disk, TroupeRunRefusesToStartOnALowDisk) {
  set_free(100 * mib, 10 * gib);
  auto quick = workflow("quick", "nodes:\n  a: {kind: noop}\n");
  auto r = troupe({"run", quick, "--data-dir", data});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(contains(r.err, "troupe: run: cannot start the run: the data "
                              "dir's filesystem has 100 MiB free, below "
                              "storage.min_free (512 MiB)"))
    << r.err;
  set_free(5 * gib, 10 * gib);
  r = troupe({"run", quick, "--data-dir", data});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// The real thing on a 64 MiB tmpfs holding the data dir: filling it below
// storage.min_free stops submissions; deleting the filler resumes them.
TEST_F(Disk, AFullTmpfsStopsSubmissionsUntilSpaceIsFreed) {
  tmpfs_mount disk{dir.path() / "tmpfs", "64m"};
  if (!disk.mounted)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.error
                 << "); LowSpaceRefusesSubmissionsHoldsAttemptsAndResumes "
                    "covers the same with an injected reading";
  inject = false;
  data = (disk.where / "data").string();
  start_node({"--set", "storage.min_free=16MiB"});
  auto quick = workflow("quick", "nodes:\n  a: {kind: noop}\n");
  ASSERT_EQ(cli({"submit", quick, "--wait"}).exit_code, 0);
  struct statvfs st {};
  ASSERT_EQ(::statvfs(disk.where.c_str(), &st), 0);
  auto free = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  ASSERT_GT(free, 24 * mib);
  auto filler = disk.where / "filler";
  {
    std::ofstream out{filler, std::ios::binary};
    std::string chunk(mib, 'f');
    for (uint64_t left = free - 8 * mib; left > 0;) {
      auto n = std::min<uint64_t>(left, chunk.size());
      out.write(chunk.data(), static_cast<std::streamsize>(n));
      left -= n;
    }
  }
  ASSERT_TRUE(wait_until(
    [&] { return ready_status() == "HTTP/1.0 503 Service Unavailable"; }, 10s));
  auto refused = cli({"submit", quick});
  EXPECT_EQ(refused.exit_code, 3);
  EXPECT_TRUE(contains(refused.err, "below storage.min_free (16 MiB)"))
    << refused.err;
  fs::remove(filler);
  ASSERT_TRUE(
    wait_until([&] { return ready_status() == "HTTP/1.0 200 OK"; }, 10s));
  auto ok = cli({"submit", quick, "--wait"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  node->signal(SIGTERM);
  EXPECT_EQ(node->wait(15s), 0) << node->err();
  node.reset();
}

// SIGTERM while journal writes are held: the node fails them rather than
// wait for space, stops within its grace with exit 0. The next start, still
// low on space, recovers the run but holds its writes (and is not ready);
// once space returns the run resumes from its journal and finishes, without
// a restart of its actor.
TEST_F(Disk, SigtermWhileLowStopsPromptlyAndTheRunResumesLater) {
  set_free(10 * gib);
  start_node({"--set", "storage.min_free=1GiB"});
  auto sleeper = workflow("sleeper", "nodes:\n  nap: {kind: sleep, duration: "
                                     "2s}\n  b: {kind: noop, after: "
                                     "[nap]}\n");
  auto submitted = std::chrono::steady_clock::now();
  auto r = cli({"submit", sleeper});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto run = r.out.substr(0, r.out.find('\n'));
  set_free(100 * mib);
  ASSERT_TRUE(wait_until(
    [&] { return ready_status() == "HTTP/1.0 503 Service Unavailable"; }, 10s));
  // The nap ends while space is low: its completion and b's start wait.
  std::this_thread::sleep_until(submitted + 3s);
  EXPECT_FALSE(started(events(run), "b"));
  auto began = std::chrono::steady_clock::now();
  node->signal(SIGTERM);
  EXPECT_EQ(node->wait(15s), 0) << node->err();
  EXPECT_LT(std::chrono::steady_clock::now() - began, 5s);
  EXPECT_TRUE(contains(node->err(), "stopped")) << node->err();
  node.reset();
  start_node({"--set", "storage.min_free=1GiB"});
  EXPECT_TRUE(contains(node->err(), "ready: resumed 1 unfinished run(s)"))
    << node->err();
  EXPECT_EQ(ready_status(), "HTTP/1.0 503 Service Unavailable");
  std::this_thread::sleep_for(500ms);
  EXPECT_FALSE(started(events(run), "b"));
  set_free(10 * gib);
  auto done = cli({"watch", run});
  EXPECT_EQ(done.exit_code, 0) << done.err;
  auto all = events(run);
  EXPECT_TRUE(started(all, "b"));
  for (auto& e : all)
    EXPECT_NE(e.value("type", ""), "run_restarted") << all.dump();
}

// With no floor (storage.min_free = 0) the disk really fills up: the write
// that finds it full fails, the node holds what follows instead of failing
// it too, and neither crashes nor aborts (Debian's RocksDB asserted on
// closing a log that failed to write: exit 134). Once space is freed and
// RocksDB has recovered, the node takes work again by itself.
TEST_F(Disk, AWriteThatFindsTheDiskFullHoldsTheRestAndRecovers) {
  tmpfs_mount disk{dir.path() / "tmpfs", "64m"};
  if (!disk.mounted)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.error << ")";
  inject = false;
  data = (disk.where / "data").string();
  start_node({"--set", "storage.min_free=0"});
  auto big = workflow("big", "nodes:\n  a: {kind: noop, message: \""
                               + std::string(200'000, 'x') + "\"}\n");
  ASSERT_EQ(cli({"submit", big, "--wait"}).exit_code, 0);
  auto filler = disk.where / "filler";
  {
    // Fills the tmpfs to the last byte (the write stops at ENOSPC).
    std::ofstream out{filler, std::ios::binary};
    std::string chunk(mib, 'f');
    for (int i = 0; i < 64 && out; ++i)
      out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
  }
  process_result refused;
  for (int i = 0; i < 200; ++i) {
    refused = cli({"submit", big});
    if (refused.exit_code == 3)
      break;
  }
  ASSERT_EQ(refused.exit_code, 3) << refused.err;
  EXPECT_TRUE(contains(refused.err, "ran out of space (a journal write failed"))
    << refused.err << node->err();
  EXPECT_EQ(ready_status(), "HTTP/1.0 503 Service Unavailable");
  fs::remove(filler);
  ASSERT_TRUE(
    wait_until([&] { return ready_status() == "HTTP/1.0 200 OK"; }, 30s));
  auto ok = cli({"submit", big, "--wait"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  node->signal(SIGTERM);
  EXPECT_EQ(node->wait(15s), 0) << node->err();
  node.reset();
}

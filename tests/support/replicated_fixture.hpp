#pragma once

// A fixture for end-to-end tests of replicated partitions: members of
// cluster_fixture with R=3 and min_insync 2 (and /metrics), workflows whose
// exec steps append to a ledger, and the checks every such test makes:
// every accepted run completes, no completed node runs again, and the
// replicas' copies of each partition agree (digests through `troupe
// partitions --digest`). The target defines TROUPE_BINARY.

#include "tests/support/cluster_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

namespace troupe::test {

/// Nanoseconds of the wall clock (as the ledger's lines and the journal's
/// at_ns).
inline int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Three members at most, R=3, min_insync 2.
struct replicated_fixture : cluster_fixture {
  replicated_fixture() {
    http = "127.0.0.1:0";
    replication = 3;
    min_insync = 2;
  }

  /// Etcd and members m1, m2 and m3, linked, and every partition with a
  /// leader and its three copies in sync (as m1 knows them).
  void three_in_sync() {
    using namespace std::chrono_literals;
    linked({"m1", "m2", "m3"});
    if (::testing::Test::HasFatalFailure())
      return;
    ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
      << partitions("m1").dump();
  }

  /// Kills member `name` with SIGKILL and reaps it.
  void kill(const std::string& name) {
    using namespace std::chrono_literals;
    members[name].proc->signal(SIGKILL);
    members[name].proc->wait(5s);
  }

  /// Waits until the ledger has at least `n` lines (steps started).
  void until_started(size_t n) {
    using namespace std::chrono_literals;
    ASSERT_TRUE(wait_until([&] { return lines().size() >= n; }, 20s))
      << all_logs();
  }

  /// A chain of `n` exec nodes, each appending "<run> <node> <attempt>
  /// <member> <ns>" to the ledger, then sleeping `nap` seconds.
  std::string chain(int n, const std::string& nap) {
    auto path = (dir.path() / "chain.yaml").string();
    std::ofstream out{path};
    out << "name: chain\nnodes:\n";
    for (int i = 0; i < n; ++i) {
      out << "  s" << i << ":\n    kind: exec\n";
      if (i > 0)
        out << "    after: [s" << i - 1 << "]\n";
      out << "    command: [\"sh\", \"-c\", \"echo $TROUPE_RUN_ID "
             "$TROUPE_NODE_ID $TROUPE_ATTEMPT $TROUPE_MEMBER $(date +%s%N) >> "
          << ledger << "; sleep " << nap << "\"]\n";
    }
    return path;
  }

  /// The ledger's lines: run, node, attempt, member, ns.
  std::vector<std::array<std::string, 5>> lines() { return ledger_lines<5>(); }

  /// `troupe status --json RUN` through `via`.
  json status(const std::string& via, const std::string& run) {
    return json::parse(cli(via, {"--json", "status", run}).out, nullptr, false);
  }

  /// The journal events of `run`, through `via`.
  json history(const std::string& via, const std::string& run) {
    auto h
      = json::parse(cli(via, {"--json", "history", run}).out, nullptr, false);
    return h.is_discarded() ? json::array() : h.value("events", json::array());
  }

  /// `troupe partitions --json` on `name`.
  json partitions(const std::string& name) {
    auto r = cli(name, {"--json", "partitions"}, runtime::auth::role::viewer);
    return json::parse(r.out, nullptr, false);
  }

  /// Submits `n` runs of `wf` through `via`; their ids.
  std::vector<std::string> submit(const std::string& via, const std::string& wf,
                                  int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
      auto r = cli(via, {"submit", wf});
      EXPECT_EQ(r.exit_code, 0) << via << ": " << r.err;
      if (r.exit_code == 0)
        out.push_back(run_id(r.out));
    }
    return out;
  }

  /// Waits until every run in `runs` completed, asked through `via`.
  void all_complete(const std::string& via,
                    const std::vector<std::string>& runs,
                    std::chrono::seconds limit = std::chrono::seconds{45}) {
    using namespace std::chrono_literals;
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (auto& id : runs) {
      json s;
      EXPECT_TRUE(wait_until(
        [&] {
          s = status(via, id);
          return !s.is_discarded() && s.value("state", "") == "completed";
        },
        std::max<std::chrono::milliseconds>(
          std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now()),
          1s)))
        << id << ": " << s << all_logs();
    }
  }

  /// Each run in `runs` (workflows of `nodes` nodes) completed each node
  /// exactly once, and no node ran again after it completed (no ledger
  /// line of it started after its node_completed).
  void each_node_once(const std::string& via,
                      const std::vector<std::string>& runs, size_t nodes) {
    auto ledger = lines();
    for (auto& id : runs) {
      std::map<std::string, int> completed;
      std::map<std::string, int64_t> completed_at;
      for (auto& e : history(via, id))
        if (e.value("type", "") == "node_completed") {
          ++completed[e.value("node", "")];
          completed_at[e.value("node", "")] = e.value("at_ns", int64_t{0});
        }
      EXPECT_EQ(completed.size(), nodes) << id;
      for (auto& [node, n] : completed)
        EXPECT_EQ(n, 1) << id << " " << node;
      for (auto& l : ledger) {
        if (l[0] == id && completed_at.count(l[1])) {
          EXPECT_LT(std::stoll(l[4]), completed_at[l[1]])
            << id << " " << l[1] << " ran again after it completed";
        }
      }
    }
  }

  /// What every test checks at its end: each run in `runs` (workflows of
  /// `nodes` nodes) completes, asked through `via`, each node exactly once
  /// and none again after it completed; and the members `copies` hold the
  /// same copies of the partitions they share.
  void all_done_once_and_agree(const std::string& via,
                               const std::vector<std::string>& runs,
                               size_t nodes,
                               const std::vector<std::string>& copies,
                               std::chrono::seconds limit
                               = std::chrono::seconds{45}) {
    all_complete(via, runs, limit);
    each_node_once(via, runs, nodes);
    copies_agree(copies);
  }

  /// Whether every partition has a leader and `n` in-sync replicas, as
  /// `via` knows them.
  bool isr_full(const std::string& via, size_t n = 3) {
    auto body = partitions(via);
    if (body.is_discarded() || !body.contains("partitions"))
      return false;
    auto& list = body["partitions"];
    if (list.empty())
      return false;
    for (auto& p : list)
      if (p.value("leader", "").empty()
          || p.value("isr", json::array()).size() != n)
        return false;
    return true;
  }

  /// Whether no partition is led by `who`, as `via` knows them.
  bool leads_none(const std::string& via, const std::string& who) {
    auto body = partitions(via);
    if (body.is_discarded() || !body.contains("partitions")
        || body["partitions"].empty())
      return false;
    for (auto& p : body["partitions"])
      if (p.value("leader", "") == who || p.value("leader", "").empty())
        return false;
    return true;
  }

  /// Waits until every pair of `names` holds the same copies.
  void copies_agree(const std::vector<std::string>& names,
                    std::chrono::seconds limit = std::chrono::seconds{20}) {
    for (size_t i = 0; i + 1 < names.size(); ++i) {
      std::string why;
      EXPECT_TRUE(wait_until(
        [&] { return same_copies(names[i], names[i + 1], why); }, limit))
        << names[i] << " vs " << names[i + 1] << ": " << why;
    }
  }

  /// Restarts member `name` on its data dir and waits until every member
  /// is linked and every partition's ISR is whole again.
  void restart(const std::string& name) {
    using namespace std::chrono_literals;
    join(name);
    if (::testing::Test::HasFatalFailure())
      return;
    ASSERT_TRUE(wait_until([&] { return all_linked(); }, 30s)) << all_logs();
    ASSERT_TRUE(wait_until([&] { return isr_full(name); }, 30s))
      << partitions(name).dump() << all_logs();
  }

  /// Whether, for every partition both `a` and `b` replicate, they have
  /// applied the same records into the same journals (digests, asked
  /// through the control protocol).
  bool same_copies(const std::string& a, const std::string& b,
                   std::string& why) {
    auto da = digests(a);
    auto db = digests(b);
    size_t compared = 0;
    for (auto& [p, d] : da) {
      auto i = db.find(p);
      if (i == db.end())
        continue;
      ++compared;
      if (d != i->second) {
        why = "partition " + std::to_string(p) + ": " + a + " " + d.dump()
              + " vs " + b + " " + i->second.dump();
        return false;
      }
    }
    why = "compared " + std::to_string(compared) + " partition(s)";
    return compared > 0;
  }

  /// Each partition `name` replicates: what it applied.
  std::map<uint32_t, json> digests(const std::string& name) {
    std::map<uint32_t, json> out;
    auto body = json::parse(cli(name, {"--json", "partitions", "--digest"},
                                runtime::auth::role::viewer)
                              .out,
                            nullptr, false);
    if (body.is_discarded())
      return out;
    for (auto& p : body.value("partitions", json::array())) {
      auto replicas = p.value("replicas", json::array());
      bool mine = false;
      for (auto& r : replicas)
        mine = mine || r == name;
      if (mine && p.contains("digest"))
        out[p["partition"].get<uint32_t>()] = p["digest"];
    }
    return out;
  }
};

} // namespace troupe::test

// Replicated partitions with real members: a leader killed with SIGKILL in
// the middle of its runs, whose runs resume on the members that held
// copies of their journals, losing none and running no completed node
// again; the copies end identical.

#include "tests/support/cluster_fixture.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

using namespace std::chrono_literals;
using json = nlohmann::json;
using troupe::test::wait_until;

namespace {

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Three members, R=3, min_insync 2.
struct Failover : troupe::test::cluster_fixture {
  Failover() {
    http = "127.0.0.1:0";
    replication = 3;
    min_insync = 2;
  }

  std::string run_id(const std::string& out) {
    std::smatch id;
    EXPECT_TRUE(
      std::regex_search(out, id, std::regex{"[0-9a-f]{12}-[0-9a-f]{8}"}))
      << out;
    return id.empty() ? std::string{} : id[0].str();
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

  json status(const std::string& via, const std::string& run) {
    return json::parse(cli(via, {"--json", "status", run}).out, nullptr, false);
  }

  json history(const std::string& via, const std::string& run) {
    auto h
      = json::parse(cli(via, {"--json", "history", run}).out, nullptr, false);
    return h.is_discarded() ? json::array() : h.value("events", json::array());
  }

  /// `troupe partitions --json` on `name`.
  json partitions(const std::string& name) {
    auto r = cli(name, {"--json", "partitions"},
                 troupe::runtime::auth::role::viewer);
    return json::parse(r.out, nullptr, false);
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
                                troupe::runtime::auth::role::viewer)
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

} // namespace

TEST_F(Failover, AKilledLeadersRunsResumeElsewhereLosingNothing) {
  linked({"m1", "m2", "m3"});
  // Runs submitted to m1 without a key go to partitions m1 leads.
  auto wf = chain(6, "0.3");
  std::vector<std::string> runs;
  for (int i = 0; i < 6; ++i) {
    auto r = cli("m1", {"submit", wf});
    ASSERT_EQ(r.exit_code, 0) << r.err << all_logs();
    runs.push_back(run_id(r.out));
  }
  // Mid-flight: some nodes done, most not.
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 9; }, 20s))
    << all_logs();
  auto killed_at = wall_ns();
  members["m1"].proc->signal(SIGKILL);
  members["m1"].proc->wait(5s);

  // Every run completes, found through m2 at their new leaders.
  for (auto& id : runs) {
    json s;
    EXPECT_TRUE(wait_until(
      [&] {
        s = status("m2", id);
        return !s.is_discarded() && s.value("state", "") == "completed";
      },
      30s))
      << id << ": " << s << all_logs();
  }
  // No completed node ran again: a node completed before the kill has no
  // ledger line after it, and each node completed exactly once.
  auto ledger = lines();
  for (auto& id : runs) {
    std::map<std::string, int> completed;
    std::map<std::string, int64_t> completed_at;
    for (auto& e : history("m2", id))
      if (e.value("type", "") == "node_completed") {
        ++completed[e.value("node", "")];
        completed_at[e.value("node", "")] = e.value("at_ns", int64_t{0});
      }
    EXPECT_EQ(completed.size(), 6u) << id;
    for (auto& [node, n] : completed)
      EXPECT_EQ(n, 1) << id << " " << node;
    for (auto& l : ledger) {
      if (l[0] == id && completed_at.count(l[1])
          && completed_at[l[1]] < killed_at) {
        EXPECT_LT(std::stoll(l[4]), killed_at)
          << id << " " << l[1] << " ran again after the kill";
      }
    }
  }
  // The copies of the two members left end identical.
  std::string why;
  EXPECT_TRUE(wait_until([&] { return same_copies("m2", "m3", why); }, 10s))
    << why;
  // What the new leaders said, for the record.
  for (auto name : {"m2", "m3"}) {
    std::istringstream in{members[name].proc->err()};
    std::string line;
    while (std::getline(in, line))
      if (line.find("took over partition") != std::string::npos)
        std::cerr << "[ " << name << " ] " << line << "\n";
  }
}

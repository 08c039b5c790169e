// The chaos ledger (TROUPE_CHAOS_LEDGER) on a real 3-member cluster with
// replicated partitions: each member writes a `lead` line for every
// partition it comes to lead, with the partition's epoch, before it acts as
// leader; start and done lines carry the member, the run's partition and
// the epoch it is led at; a leader killed with SIGKILL is followed by lead
// lines of the members that take its partitions over, at newer epochs, and
// once it is back and its partitions move to it again, by their resign
// lines.

#include "tests/support/raw_session.hpp"
#include "tests/support/replicated_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using json = nlohmann::json;
using troupe::test::wait_until;

namespace {

struct line {
  int64_t ns = 0;
  std::string member, event, run, node, attempt, partition, epoch;
};

struct ChaosLedgerCluster : troupe::test::replicated_fixture {
  /// One chaos ledger for every member (O_APPEND: lines land whole).
  std::string chaos_ledger = (dir.path() / "chaos-ledger").string();

  troupe::test::process_options opts() override {
    auto o = replicated_fixture::opts();
    o.env["TROUPE_CHAOS_LEDGER"] = chaos_ledger;
    return o;
  }

  std::vector<line> read() {
    std::vector<line> out;
    std::ifstream in{chaos_ledger};
    std::string text;
    while (std::getline(in, text)) {
      std::istringstream words{text};
      line l;
      words >> l.ns >> l.member >> l.event >> l.run >> l.node >> l.attempt
        >> l.partition >> l.epoch;
      EXPECT_TRUE(words && l.ns > 0) << "bad ledger line: " << text;
      out.push_back(l);
    }
    return out;
  }

  /// Each partition's newest lead line: (member, epoch).
  std::map<std::string, std::pair<std::string, uint64_t>> leaders() {
    std::map<std::string, std::pair<std::string, uint64_t>> out;
    for (auto& l : read())
      if (l.event == "lead") {
        auto e = std::stoull(l.epoch);
        auto& now = out[l.partition];
        if (e > now.second)
          now = {l.member, e};
      }
    return out;
  }

  /// Waits until the ledger's newest lead lines name the leaders and
  /// epochs m1 lists (`want`, then); false after 20 s.
  bool
  ledger_agrees(std::map<std::string, std::pair<std::string, uint64_t>>& want) {
    return wait_until(
      [&] {
        want = listed("m1");
        return !want.empty() && leaders() == want;
      },
      std::chrono::seconds{20});
  }

  /// Each partition's leader and epoch as `via` lists them.
  std::map<std::string, std::pair<std::string, uint64_t>>
  listed(const std::string& via) {
    std::map<std::string, std::pair<std::string, uint64_t>> out;
    auto body = partitions(via);
    if (body.is_discarded() || !body.contains("partitions"))
      return out;
    for (auto& p : body["partitions"])
      out[std::to_string(p.value("partition", 0))]
        = {p.value("leader", ""), p.value("epoch", uint64_t{0})};
    return out;
  }
};

} // namespace

TEST_F(ChaosLedgerCluster, LeadLinesMatchTheLeadersAndRunLinesCarryEpochs) {
  three_in_sync();
  ASSERT_FALSE(HasFatalFailure());
  // A member answers a fault request itself (no run to forward it for):
  // without TROUPE_CHAOS_HOOKS=1, hooks_off.
  {
    troupe::test::raw_session admin{members["m2"].port, token()};
    auto a = admin.call({{"t", "fault"}, {"hook", "clear"}});
    EXPECT_EQ(a.value("code", ""), "hooks_off") << a;
  }
  // Every partition's newest lead line names the leader and epoch etcd
  // says (the ledger's lines are written before the member acts as leader,
  // so they are there once the partitions list shows it).
  std::map<std::string, std::pair<std::string, uint64_t>> want;
  ASSERT_TRUE(ledger_agrees(want)) << "listed: " << json(listed("m1")).dump()
                                   << "\nledger: " << json(leaders()).dump();
  std::set<std::string> leading;
  for (auto& [p, who] : want) {
    leading.insert(who.first);
    EXPECT_GT(who.second, 0u) << p;
  }
  EXPECT_EQ(leading, (std::set<std::string>{"m1", "m2", "m3"}));

  // Runs on m1: a start and a done line for each node, from m1 (or the
  // member a step was placed on), with the run's partition, and m1's epoch
  // of it on m1's lines.
  auto runs = submit("m1", chain(2, "0"), 3);
  ASSERT_EQ(runs.size(), 3u) << all_logs();
  all_complete("m1", runs, 30s);
  ASSERT_TRUE(wait_until(
    [&] {
      size_t done = 0;
      for (auto& l : read())
        done += l.event == "done";
      return done >= 6;
    },
    10s));
  auto led = leaders();
  for (auto& run : runs) {
    std::map<std::string, std::vector<line>> by_node;
    for (auto& l : read())
      if (l.run == run)
        by_node[l.node].push_back(l);
    ASSERT_EQ(by_node.size(), 2u) << run;
    for (auto& [node, lines] : by_node) {
      ASSERT_EQ(lines.size(), 2u) << run << " " << node;
      EXPECT_EQ(lines[0].event, "start");
      EXPECT_EQ(lines[1].event, "done");
      auto& owner = led[lines[1].partition];
      EXPECT_EQ(lines[1].member, "m1");
      EXPECT_EQ(owner.first, "m1") << lines[1].partition;
      EXPECT_EQ(lines[1].epoch, std::to_string(owner.second));
      EXPECT_EQ(lines[0].partition, lines[1].partition);
      if (lines[0].member == "m1")
        EXPECT_EQ(lines[0].epoch, lines[1].epoch);
      else // a step placed on another member: no epoch travels with it
        EXPECT_EQ(lines[0].epoch, "-");
    }
  }

  // m1 killed: its partitions are led again by m2 and m3 at newer epochs,
  // and the ledger says so.
  std::set<std::string> of_m1;
  for (auto& [p, who] : want)
    if (who.first == "m1")
      of_m1.insert(p);
  ASSERT_FALSE(of_m1.empty());
  kill("m1");
  ASSERT_TRUE(wait_until(
    [&] {
      auto now = leaders();
      for (auto& p : of_m1)
        if (now[p].first == "m1" || now[p].second <= want[p].second)
          return false;
      return true;
    },
    30s))
    << json(leaders()).dump() << "\n"
    << all_logs();
  auto took_over = leaders();

  // m1 back: the partitions it ranks first in move back to it, and the
  // members that led them in between write resign lines, each with the
  // epoch it led at, once the newer epoch reaches them.
  restart("m1");
  ASSERT_FALSE(HasFatalFailure());
  std::vector<line> resigned;
  ASSERT_TRUE(wait_until(
    [&] {
      resigned.clear();
      for (auto& l : read())
        if (l.event == "resign" && of_m1.count(l.partition) > 0)
          resigned.push_back(l);
      return !resigned.empty();
    },
    30s))
    << all_logs();
  for (auto& l : resigned) {
    EXPECT_NE(l.member, "m1");
    EXPECT_EQ(l.run, "-");
    EXPECT_EQ(l.epoch, std::to_string(took_over[l.partition].second))
      << l.partition;
  }
}

// A leader stopped (SIGSTOP) past its lease's TTL notices, once it runs
// again, that it lost its lease: it writes a resign line for each partition
// it led, with the epoch it led at, before it registers again; the others
// lead its partitions at newer epochs.
TEST_F(ChaosLedgerCluster, ALeaderThatLostItsLeaseResigns) {
  three_in_sync();
  ASSERT_FALSE(HasFatalFailure());
  std::map<std::string, std::pair<std::string, uint64_t>> want;
  ASSERT_TRUE(ledger_agrees(want));
  std::map<std::string, uint64_t> of_m2;
  for (auto& [p, who] : want)
    if (who.first == "m2")
      of_m2[p] = who.second;
  ASSERT_FALSE(of_m2.empty());
  auto& m2 = *members["m2"].proc;
  m2.signal(SIGSTOP);
  // Past the 2 s lease: the others take its partitions over.
  auto taken = wait_until(
    [&] {
      auto now = leaders();
      for (auto& [p, e] : of_m2)
        if (now[p].first == "m2")
          return false;
      return true;
    },
    30s);
  m2.signal(SIGCONT);
  ASSERT_TRUE(taken) << json(leaders()).dump() << all_logs();
  std::map<std::string, std::string> resigned;
  ASSERT_TRUE(wait_until(
    [&] {
      resigned.clear();
      for (auto& l : read())
        if (l.event == "resign" && l.member == "m2")
          resigned.emplace(l.partition, l.epoch);
      return resigned.size() >= of_m2.size();
    },
    30s))
    << all_logs();
  for (auto& [p, e] : of_m2) {
    ASSERT_TRUE(resigned.count(p)) << p;
    EXPECT_EQ(resigned[p], std::to_string(e)) << p;
  }
  // After it resigned, m2 writes no line under its old epoch of those
  // partitions: it neither leads them again at it nor starts work there.
  int64_t resigned_at = 0;
  for (auto& l : read())
    if (l.event == "resign" && l.member == "m2")
      resigned_at = std::max(resigned_at, l.ns);
  for (auto& l : read()) {
    if (l.member != "m2" || l.ns <= resigned_at || !of_m2.count(l.partition)
        || l.epoch == "-")
      continue;
    EXPECT_GT(std::stoull(l.epoch), of_m2[l.partition])
      << l.event << " " << l.partition << " " << l.epoch;
  }
}

// etcd stopped past the lease TTL: no partition can move (nothing can be
// written), yet every leader notices, while etcd is still stopped, that it
// lost its lease, and writes a resign line for each partition it led with
// the epoch it led at; back in the cluster, it says lead again for those
// its store still leads.
TEST_F(ChaosLedgerCluster, LeadersResignWhenTheirLeaseIsLostWithEtcdAway) {
  three_in_sync();
  ASSERT_FALSE(HasFatalFailure());
  std::map<std::string, std::pair<std::string, uint64_t>> want;
  ASSERT_TRUE(ledger_agrees(want));
  auto monotonic = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  };
  auto stopped_at = monotonic();
  ASSERT_EQ(::kill(etcd->pid(), SIGSTOP), 0);
  // Every leader resigns every partition it led, while etcd is away.
  auto all_resigned = wait_until(
    [&] {
      std::set<std::string> resigned;
      for (auto& l : read())
        if (l.event == "resign" && l.ns > stopped_at
            && want[l.partition]
                 == std::pair<std::string, uint64_t>{l.member,
                                                     std::stoull(l.epoch)})
          resigned.insert(l.partition);
      return resigned.size() == want.size();
    },
    20s);
  auto continued_at = monotonic();
  ::kill(etcd->pid(), SIGCONT);
  ASSERT_TRUE(all_resigned) << all_logs();
  for (auto& l : read()) {
    if (l.event == "resign" && l.ns > stopped_at) {
      EXPECT_LT(l.ns, continued_at);
    }
  }
}

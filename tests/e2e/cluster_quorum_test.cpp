// Real `troupe node start --cluster` members against a 3-member etcd, one of
// whose members is stopped with SIGSTOP (once a follower, once the leader)
// for longer than the members' lease TTL while spread exec steps run and
// submissions go on: etcd keeps its quorum, so no member may be declared
// down or rejoin, and no step may be lost or completed twice. Also two
// paths beside it: a fenced attempt reaching its timeout, and
// `troupe cluster start-local` replacing a port taken after it chose it.

#include "tests/support/cluster_fixture.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"
#include "tests/support/troupe_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <array>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <netinet/in.h>
#include <regex>
#include <set>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;
using troupe::test::background_process;
using troupe::test::contains;
using troupe::test::wait_until;
using json = nlohmann::json;

namespace {

/// Members against every member of a 3-member etcd (`etcd_urls`), each
/// CLI call limited to 20 s.
struct Quorum : troupe::test::cluster_fixture {
  /// The etcd cluster (in place of the fixture's single etcd).
  std::unique_ptr<troupe::test::etcd_cluster> etcd;

  Quorum() { cli_limit = 20s; }

  /// Starts the etcd cluster and waits until it has a leader: `lead`.
  void start_etcd_cluster(std::optional<size_t>& lead) {
    etcd = std::make_unique<troupe::test::etcd_cluster>();
    ASSERT_TRUE(etcd->ok()) << etcd->error();
    ASSERT_TRUE(wait_until(
      [&] {
        lead = etcd->leader();
        return lead.has_value();
      },
      10s));
  }

  /// Every member's view: viewer -> member -> incarnation, for the members
  /// it lists up (and linked, but for itself).
  std::map<std::string, std::map<std::string, std::string>> views() {
    std::map<std::string, std::map<std::string, std::string>> out;
    for (auto& [viewer, m] : members)
      for (auto& e : members_of(viewer).value("members", json::array()))
        if (e.value("state", "") == "up"
            && (e.value("self", false) || e.value("link", "") == "connected"))
          out[viewer][e.value("name", "")] = e.value("incarnation", "");
    return out;
  }

  /// Writes a workflow of `n` exec nodes placed with `spread`, each
  /// appending "$TROUPE_MEMBER $TROUPE_RUN_ID $TROUPE_NODE_ID
  /// $TROUPE_ATTEMPT" to the ledger and then running `then`; returns its
  /// path. `extra` is added to every node.
  std::string fan_out(const std::string& name, int n, const std::string& then,
                      const std::string& extra = "") {
    return write_fan_out(
      name, n, "    placement: spread\n" + extra, then,
      "$TROUPE_MEMBER $TROUPE_RUN_ID $TROUPE_NODE_ID $TROUPE_ATTEMPT");
  }

  /// The ledger's lines as (member, run, node, attempt).
  std::vector<std::array<std::string, 4>> ledger_lines() {
    return cluster_fixture::ledger_lines<4>();
  }

  /// The run id in `out` (a submit's answer), or "".
  static std::string run_id(const std::string& out) {
    std::smatch id;
    return std::regex_search(out, id, std::regex{"[0-9a-f]{12}-[0-9a-f]{8}"})
             ? id[0].str()
             : std::string{};
  }

  /// The scenario: 3 members linked, a long spread fan-out running, then
  /// etcd member `victim` (the leader when `leader`, else a follower)
  /// stopped for twice the members' TTL while runs are submitted to every
  /// member in turn, then continued. Checks that every member's view kept
  /// the same three incarnations, all up and linked, throughout; that every
  /// run completes; and that each step ran and completed exactly once.
  void ride_out_a_stopped_etcd_member(bool leader) {
    std::optional<size_t> lead;
    start_etcd_cluster(lead);
    if (HasFatalFailure())
      return;
    size_t follower = (*lead + 1) % 3, other = (*lead + 2) % 3;
    size_t victim = leader ? *lead : follower;
    // The order that costs a renewal most: members start with the first
    // endpoint, a follower, and go on to the leader. A stopped follower
    // hangs first; a stopped leader makes the follower hang too (during the
    // election it forwards renewals to the stopped leader), then hangs.
    for (auto i : {follower, *lead, other})
      etcd_urls += (etcd_urls.empty() ? "" : ",") + etcd->url(i);
    // TTL 2 s (renewed every 500 ms) against the default 1 s etcd request
    // deadline: a renewal stuck on a stopped member must fail over within
    // the TTL.
    const auto ttl = 2s;
    join_linked({"m1", "m2", "m3"});
    if (HasFatalFailure())
      return;
    auto first = views();
    for (auto& [viewer, seen] : first)
      ASSERT_EQ(seen.size(), 3u) << viewer;
    ASSERT_EQ(first.size(), 3u);
    for (auto& [viewer, seen] : first)
      ASSERT_EQ(seen, first["m1"]) << viewer;

    // The leader as it is now (a quiet cluster keeps it; should a busy
    // machine have made etcd elect another, the endpoints' order is no
    // longer the costliest, but the stop is still of the leader).
    std::optional<size_t> now_lead;
    ASSERT_TRUE(wait_until(
      [&] {
        now_lead = etcd->leader();
        return now_lead.has_value();
      },
      10s));
    if (leader)
      victim = *now_lead;
    else if (victim == *now_lead)
      victim = other;

    // A fan-out whose steps span the pause.
    std::vector<std::pair<std::string, std::string>> runs; // owner, run
    auto big = fan_out("big", 24, "sleep 1");
    auto b = cli("m1", {"submit", big});
    ASSERT_EQ(b.exit_code, 0) << b.out << b.err;
    runs.emplace_back("m1", run_id(b.out));
    ASSERT_TRUE(wait_until([&] { return !ledger_lines().empty(); }, 10s))
      << all_logs();
    auto small = fan_out("small", 3, "sleep 0.2");

    // Stop it; submit to each member in turn and watch every view.
    std::vector<std::string> deviations;
    auto check_views = [&](const char* when) {
      for (auto& [viewer, m] : members) {
        auto j = members_of(viewer);
        auto list = j.value("members", json::array());
        if (list.size() != 3)
          deviations.push_back(std::string{when} + ": " + viewer + " lists "
                               + j.dump());
        for (auto& e : list) {
          auto name = e.value("name", "");
          bool self = e.value("self", false);
          if (e.value("state", "") != "up"
              || (!self && e.value("link", "") != "connected")
              || e.value("incarnation", "") != first[viewer][name])
            deviations.push_back(std::string{when} + ": " + viewer + " lists "
                                 + e.dump());
        }
      }
    };
    etcd->signal(victim, SIGSTOP);
    auto stopped_at = std::chrono::steady_clock::now();
    int submitted = 0;
    const char* owners[] = {"m1", "m2", "m3"};
    for (int i = 0; i < 200; ++i) {
      if (std::chrono::steady_clock::now() - stopped_at >= 2 * ttl)
        break;
      auto owner = owners[i % 3];
      auto s = cli(owner, {"submit", small});
      EXPECT_EQ(s.exit_code, 0) << owner << ": " << s.out << s.err;
      if (s.exit_code == 0) {
        runs.emplace_back(owner, run_id(s.out));
        ++submitted;
      }
      check_views("etcd member stopped");
    }
    EXPECT_GE(submitted, 3);
    // While it was stopped, every member kept its registration.
    EXPECT_TRUE(deviations.empty())
      << deviations.size() << " deviations, first: " << deviations.front()
      << "\n"
      << all_logs();
    auto while_stopped = deviations.size();
    etcd->signal(victim, SIGCONT);
    // After it is back, until it answers again, and one round more.
    ASSERT_TRUE(wait_until(
      [&] {
        check_views("etcd member continued");
        return etcd->healthy(victim);
      },
      15s));
    check_views("etcd member healthy again");
    // An etcd with etcd-io/etcd#15247 lets the old leader, running again,
    // revoke the leases it saw expire while it was stopped, although the
    // new leader renewed them: the members that held them lose their
    // registration and rejoin (availability, not safety). Nothing else may
    // go wrong then, and on a fixed etcd nothing at all.
    std::set<std::string> revoked;
    if (leader && etcd->paused_leader_revokes_leases()) {
      for (auto& [name, m] : members)
        if (contains(m.proc->err(), "member '" + name
                                      + "' lost its registration (its key "
                                        "was deleted"))
          revoked.insert(name);
      if (!revoked.empty()) {
        std::cerr << "note: etcd " << etcd->version()[0] << "."
                  << etcd->version()[1] << "." << etcd->version()[2]
                  << " has etcd-io/etcd#15247: its old leader revoked the "
                     "leases of "
                  << revoked.size() << " member(s) once continued\n";
        // They rejoin, and everyone sees the new incarnations linked.
        EXPECT_TRUE(wait_until(
          [&] {
            auto now = views();
            for (auto& [viewer, seen] : now)
              if (seen.size() != 3)
                return false;
            return now.size() == 3;
          },
          15s))
          << all_logs();
      }
    }
    if (revoked.empty()) {
      EXPECT_TRUE(deviations.empty())
        << deviations.size()
        << " deviations, first: " << deviations[while_stopped] << "\n"
        << all_logs();
    }

    // Every run completes.
    for (auto& [owner, run] : runs) {
      ASSERT_FALSE(run.empty());
      std::string state;
      EXPECT_TRUE(wait_until(
        [&] {
          auto s = json::parse(cli(owner, {"--json", "status", run}).out,
                               nullptr, false);
          state = s.is_discarded() ? std::string{} : s.value("state", "");
          return state != "running" && !state.empty();
        },
        60s));
      EXPECT_EQ(state, "completed") << owner << " " << run << "\n"
                                    << all_logs();
    }
    // Each step ran once and completed once; nobody failed over. A member
    // whose lease etcd's bug revoked was declared down, so the attempts it
    // ran then failed as member_down and ran again elsewhere (at least
    // once, as the docs say): those alone may have run twice.
    std::map<std::pair<std::string, std::string>, int> ran;
    std::map<std::pair<std::string, std::string>, std::string> first_on;
    for (auto& l : ledger_lines()) {
      ++ran[{l[1], l[2]}];
      first_on.emplace(std::pair{l[1], l[2]}, l[0]);
    }
    size_t expected_steps = 24 + 3 * static_cast<size_t>(submitted);
    EXPECT_EQ(ran.size(), expected_steps);
    for (auto& [step, n] : ran)
      EXPECT_EQ(n, revoked.count(first_on[step]) ? std::min(n, 2) : 1)
        << step.first << " " << step.second << " first on " << first_on[step];
    for (auto& [owner, run] : runs) {
      auto h = json::parse(cli(owner, {"--json", "history", run}).out, nullptr,
                           false);
      std::map<std::string, int> completed;
      for (auto& e : h.value("events", json::array())) {
        if (e.value("type", "") == "node_completed")
          ++completed[e.value("node", "")];
        if (e.value("type", "") == "attempt_failed" && !revoked.empty()
            && e.value("error_kind", "") == "member_down")
          continue;
        EXPECT_NE(e.value("type", ""), "attempt_failed") << e;
      }
      EXPECT_EQ(completed.size(), run == runs.front().second ? 24u : 3u) << run;
      for (auto& [node, n] : completed)
        EXPECT_EQ(n, 1) << run << " " << node;
    }
    auto logs = all_logs();
    if (revoked.empty()) {
      EXPECT_FALSE(contains(logs, "lost its registration")) << logs;
    }
    EXPECT_FALSE(contains(logs, "etcd was out of reach")) << logs;
    EXPECT_FALSE(contains(logs, "is suspect")) << logs;
    EXPECT_FALSE(contains(logs, "revoked the lease")) << logs;
  }
};

} // namespace

TEST_F(Quorum, AStoppedEtcdFollowerCostsNoMemberAndNoStep) {
  ride_out_a_stopped_etcd_member(false);
}

TEST_F(Quorum, AStoppedEtcdLeaderCostsNoMemberAndNoStep) {
  ride_out_a_stopped_etcd_member(true);
}

// Members watch the members' keys over one HTTP stream to one etcd member.
// Stopped, that member keeps the stream open and silent: a member that
// joins meanwhile must still be seen by every other within about a TTL.
TEST_F(Quorum, AMemberJoiningWhileTheWatchedEtcdMemberIsStoppedIsSeenByAll) {
  std::optional<size_t> lead;
  start_etcd_cluster(lead);
  if (HasFatalFailure())
    return;
  // Members start with the first endpoint, so their watches live there.
  size_t victim = (*lead + 1) % 3;
  for (auto i : {victim, *lead, (*lead + 2) % 3})
    etcd_urls += (etcd_urls.empty() ? "" : ",") + etcd->url(i);
  join_linked({"m1", "m2", "m3"});
  if (HasFatalFailure())
    return;
  etcd->signal(victim, SIGSTOP);
  join("m4");
  if (HasFatalFailure())
    return;
  auto joined_at = std::chrono::steady_clock::now();
  std::map<std::string, std::chrono::milliseconds> seen_after;
  wait_until(
    [&] {
      for (auto viewer : {"m1", "m2", "m3"})
        if (!seen_after.count(viewer)) {
          auto e = entry(viewer, "m4");
          if (e.is_object() && e.value("state", "") == "up")
            seen_after[viewer]
              = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - joined_at);
        }
      return seen_after.size() == 3;
    },
    15s);
  etcd->signal(victim, SIGCONT);
  for (auto viewer : {"m1", "m2", "m3"}) {
    ASSERT_TRUE(seen_after.count(viewer)) << viewer << "\n" << all_logs();
    // The TTL (2 s) and an etcd request's deadline (1 s), with room.
    EXPECT_LT(seen_after[viewer], 4500ms) << viewer;
  }
}

namespace {

/// A member fenced (cut off from etcd past its TTL) whose waiting attempt
/// reaches its timeout.
struct Fencing : Quorum {
  std::unique_ptr<troupe::test::etcd_process> solo;
};

} // namespace

// The wait of a fenced attempt counts toward its timeout: cut off from
// etcd, the member starts nothing, and the attempt fails by its timeout
// (then the run, with no retry left), counted as a fenced wait.
TEST_F(Fencing, AFencedAttemptFailsByItsTimeoutAndIsCounted) {
  solo = std::make_unique<troupe::test::etcd_process>();
  ASSERT_TRUE(solo->ok()) << solo->error();
  etcd_urls = solo->url();
  http = "127.0.0.1:0";
  lease_ttl = "1s";
  join("m1");
  if (HasFatalFailure())
    return;
  std::smatch match;
  auto err = members["m1"].proc->err();
  ASSERT_TRUE(std::regex_search(
    err, match, std::regex{"metrics on http://127.0.0.1:(\\d+)/metrics"}))
    << err;
  auto metrics_port = static_cast<uint16_t>(std::stoi(match[1]));
  auto fenced_waits = [&]() -> long {
    auto body = troupe::test::http_get(metrics_port, "/metrics").second;
    std::smatch m;
    if (!std::regex_search(body, m,
                           std::regex{"\ntroupe_fenced_waits_total (\\d+)"}))
      return -1;
    return std::stol(m[1]);
  };
  ASSERT_EQ(fenced_waits(), 0);
  auto self_state = [&] {
    auto e = entry("m1", "m1");
    return e.is_object() ? e.value("state", "") : std::string{};
  };
  ASSERT_EQ(self_state(), "up");

  // etcd goes: once its 1 s lease may have expired, m1 is fenced.
  solo->stop();
  ASSERT_TRUE(wait_until([&] { return self_state() == "joining"; }, 15s))
    << members["m1"].proc->err();

  auto wf = fan_out("short", 1, "true",
                    "    timeout: 2s\n    retry: {max_attempts: 1}\n");
  auto started = std::chrono::steady_clock::now();
  auto s = cli("m1", {"submit", wf});
  ASSERT_EQ(s.exit_code, 0) << s.out << s.err;
  auto run = run_id(s.out);
  ASSERT_FALSE(run.empty()) << s.out;
  std::string state;
  ASSERT_TRUE(wait_until(
    [&] {
      auto j
        = json::parse(cli("m1", {"--json", "status", run}).out, nullptr, false);
      state = j.is_discarded() ? std::string{} : j.value("state", "");
      return !state.empty() && state != "running";
    },
    20s))
    << members["m1"].proc->err();
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(state, "failed");
  // By its own 2 s timeout, counted from the start of the wait.
  EXPECT_GE(took, 2s);
  EXPECT_LT(took, 10s);
  // m1 was fenced all along (etcd is still gone), and nothing ran.
  EXPECT_EQ(self_state(), "joining");
  EXPECT_TRUE(ledger_lines().empty());
  auto h
    = json::parse(cli("m1", {"--json", "history", run}).out, nullptr, false);
  int timeouts = 0;
  for (auto& e : h.value("events", json::array())) {
    EXPECT_NE(e.value("type", ""), "node_completed") << e;
    if (e.value("type", "") == "attempt_failed"
        && e.value("error_kind", "") == "timeout")
      ++timeouts;
  }
  EXPECT_EQ(timeouts, 1) << h;
  EXPECT_EQ(fenced_waits(), 1);
}

namespace {

/// `troupe cluster start-local` on a folder of the test's.
struct StartLocal : troupe::test::local_cluster_fixture {
  /// The ports `D/cluster.json` records, by role; empty until it exists.
  static std::map<std::string, int> ports(const std::filesystem::path& d) {
    std::ifstream in{d / "cluster.json"};
    auto j = json::parse(in, nullptr, false);
    std::map<std::string, int> out;
    if (!j.is_discarded() && j.contains("ports"))
      for (auto& [role, port] : j["ports"].items())
        out[role] = port.get<int>();
    return out;
  }
};

/// A socket listening on 127.0.0.1:`port`, closed when it goes away.
struct listener {
  int fd = -1;
  explicit listener(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0
        || ::listen(fd, 4) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ~listener() {
    if (fd >= 0)
      ::close(fd);
  }
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
};

} // namespace

// start-local chooses every port before it starts anything and records
// them in D/cluster.json. A member's port taken after that (here: while
// start-local is held with SIGSTOP, after it chose the ports and before it
// starts the members, which it does once etcd answers) makes that member
// exit; start-local chooses it other ports and starts it again.
TEST_F(StartLocal, AMemberPortTakenAfterItWasChosenIsReplacedByAnother) {
  std::unique_ptr<listener> squatter;
  std::filesystem::path d;
  int taken = 0;
  // Bounded: the hold must come before the members start (etcd takes far
  // longer to answer than the poll below takes to notice the file).
  for (int attempt = 0; attempt < 3 && !squatter; ++attempt) {
    d = dir.path() / ("cluster-" + std::to_string(attempt));
    local
      = start({"cluster", "start-local", "--dir", d.string(), "--nodes", "2"});
    auto until = std::chrono::steady_clock::now() + 20s;
    while (!std::filesystem::exists(d / "cluster.json")
           && std::chrono::steady_clock::now() < until && !local->wait(0ms))
      std::this_thread::sleep_for(1ms);
    local->signal(SIGSTOP);
    auto chosen = ports(d);
    bool early = chosen.count("m1.control") != 0
                 && !std::filesystem::exists(d / "m1" / "node.log");
    if (early) {
      taken = chosen["m1.control"];
      squatter = std::make_unique<listener>(taken);
      if (squatter->fd < 0)
        squatter.reset();
    }
    local->signal(SIGCONT);
    if (!squatter) {
      local->signal(SIGTERM);
      local->wait(40s);
    }
  }
  ASSERT_TRUE(squatter) << "start-local was never held before its members "
                           "started";
  wait_until_up(2);
  if (HasFatalFailure())
    return;
  // m1 listens elsewhere, and D/cluster.json and D/env say where.
  auto now = ports(d);
  EXPECT_NE(now["m1.control"], taken);
  auto env = read_env_file(d);
  EXPECT_EQ(env["TROUPE_NODE"],
            "127.0.0.1:" + std::to_string(now["m1.control"]));
  EXPECT_TRUE(
    contains(local->out(), "127.0.0.1:" + std::to_string(now["m1.control"])))
    << local->out();
  auto o = opts();
  for (auto& [k, v] : env)
    o.env[k] = v;
  auto r = troupe::test::run_process(args({"members", "--json"}), o);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = json::parse(r.out, nullptr, false);
  std::set<std::string> up;
  for (auto& m : j.value("members", json::array()))
    if (m.value("state", "") == "up")
      up.insert(m.value("name", ""));
  EXPECT_EQ(up, (std::set<std::string>{"m1", "m2"})) << r.out;
  local->signal(SIGINT);
  EXPECT_EQ(local->wait(40s), 0) << local->err();
}

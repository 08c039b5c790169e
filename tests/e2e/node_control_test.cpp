// A real `troupe node start` under the loads that test its control port:
// requests that arrive while it recovers many runs, watches that outlast the
// idle timeout, viewers that hammer it while others submit.

#include "persistence/journal_store.hpp"
#include "runtime/auth/token.hpp"
#include "runtime/control/wire.hpp"
#include "tests/support/frame_client.hpp"
#include "tests/support/node_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_session.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using troupe::test::background_process;
using troupe::test::frame_client;
using troupe::test::process_result;
using troupe::test::wait_until;
using json = nlohmann::json;
namespace auth = troupe::runtime::auth;
namespace persistence = troupe::persistence;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

size_t count_of(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (auto at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size()))
    ++n;
  return n;
}

/// A hello in the oldest protocol version, which every node speaks: these
/// clients need no keepalives.
json hello_message(const std::string& token) {
  return {{"t", "hello"},
          {"id", 1},
          {"version", troupe::runtime::control::min_protocol_version},
          {"token", token}};
}

/// Says hello on `c` in the oldest version; whether it was welcomed.
bool say_hello(frame_client& c, const std::string& token) {
  auto w = c.hello(token, troupe::runtime::control::min_protocol_version);
  return w && (*w)["t"] == "welcome";
}

/// A raw client past its hello in the oldest version.
struct raw : troupe::test::raw_session {
  raw(uint16_t port, const std::string& token)
      : raw_session(port, token,
                    troupe::runtime::control::min_protocol_version) {}
};

struct NodeControl : troupe::test::node_process_fixture {
  NodeControl() {
    time_limit = 120s;
    start_limit = 60s;
  }

  /// Parks `n` runs in an hour's sleep on the data dir, fast: one real run
  /// is parked by a node (killed with SIGKILL then), and its journal and
  /// index entry are copied under `n` new ids, each older than any id a node
  /// makes from now on. Returns the new ids in order.
  std::vector<std::string> park_runs(size_t n) {
    start_node();
    auto id = submit(sleeper("1h"));
    EXPECT_TRUE(wait_until(
      [&] {
        auto h = cli({"history", id}, token("viewer"));
        return contains(h.out, "timer");
      },
      20s));
    node->signal(SIGKILL);
    node->wait(10s);
    node.reset();

    persistence::journal_store::options so;
    so.path = data;
    so.max_batch = 4096;
    std::string error;
    auto store = persistence::journal_store::open(so, error);
    EXPECT_TRUE(store) << error;
    if (!store)
      return {};
    auto events = store->read_journal(id, error);
    auto entry = store->find_run(id);
    EXPECT_TRUE(error.empty() && entry && events.size() >= 4)
      << error << " " << events.size();
    if (!entry)
      return {};
    // Ids sort by their first 12 characters (milliseconds): one second
    // before the real run's, so that every later submission sorts after.
    auto ms = std::stoull(id.substr(0, 12), nullptr, 16) - 1000;
    std::vector<std::string> ids;
    ids.reserve(n);
    std::atomic<size_t> failed{0};
    for (size_t i = 0; i < n; ++i) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%012llx-%08zx",
                    static_cast<unsigned long long>(ms), i);
      ids.emplace_back(buf);
      persistence::journal_store::append_op op;
      op.run_id = buf;
      op.events = events;
      op.index = *entry;
      op.index->run_id = buf;
      store->append(std::move(op), [&failed](const std::string& e) {
        if (!e.empty())
          ++failed;
      });
    }
    store->flush();
    EXPECT_EQ(failed.load(), 0u);
    return ids;
  }
};

} // namespace

TEST_F(NodeControl, WaitReadyMustBeADuration) {
  auto r = troupe({"--wait-ready", "soon", "status", "x"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "--wait-ready")) << r.err;
}

// Requests that change state wait until recovery is over: a submission
// racing a recovery of 100,000 runs runs once, a cancel of a run not yet
// resumed takes effect, and a client that will not wait is told why.
TEST_F(NodeControl, RequestsDuringARecoveryOf100kRunsWaitAndActOnce) {
  const size_t parked = 100'000;
  auto ids = park_runs(parked);
  ASSERT_EQ(ids.size(), parked);
  auto lines = dir.path() / "lines.txt";
  auto once = workflow("once", R"(nodes:
  append:
    kind: exec
    command: ["/bin/sh", "-c", "echo ran >> ')"
                                 + lines.string() + R"('"]
)");

  // The submission goes out the moment the port listens, before the node
  // could log where it listens: a client spins on the port meanwhile, and
  // sends its hello and the submission in one write.
  auto port = troupe::test::free_port();
  std::string once_source;
  {
    std::ifstream f{once};
    std::stringstream t;
    t << f.rdbuf();
    once_source = t.str();
  }
  std::optional<frame_client> early;
  std::thread spinner{[&] {
    for (int i = 0; i < 600'000; ++i) {
      early.emplace(port);
      if (early->connected())
        break;
      early.reset();
      std::this_thread::sleep_for(100us);
    }
    if (!early)
      return;
    early->send_raw(
      troupe::runtime::control::encode_frame(hello_message(token("operator")))
      + troupe::runtime::control::encode_frame(
        {{"t", "submit"}, {"id", 2}, {"workflow", once_source}}));
  }};
  launch_node({}, port);
  spinner.join();
  ASSERT_TRUE(early && early->connected());
  // As soon as the port listens: the recovery has at most just begun.
  auto submitted = cli_in_background({"submit", once, "--wait", "--json"});
  auto cancelled = cli_in_background({"cancel", ids.back()});
  auto impatient = cli({"--wait-ready", "0s", "pause", ids[ids.size() - 2]});
  EXPECT_EQ(impatient.exit_code, 3) << impatient.err;
  EXPECT_TRUE(contains(impatient.err, "still recovering")) << impatient.err;
  EXPECT_TRUE(contains(impatient.err, "--wait-ready")) << impatient.err;

  // The early submission is refused until the node is ready (then sent
  // again), or taken at once.
  std::string early_run;
  auto welcome = early->receive(30s);
  ASSERT_TRUE(welcome && (*welcome)["t"] == "welcome");
  for (uint64_t id = 2; id < 2000 && early_run.empty(); ++id) {
    auto answer
      = id == 2
          ? early->receive(30s)
          : early->call({{"t", "submit"}, {"workflow", once_source}}, id, 30s);
    ASSERT_TRUE(answer);
    if ((*answer)["t"] == "reply") {
      early_run = (*answer)["body"]["run_id"];
      break;
    }
    ASSERT_EQ((*answer)["code"], "not_ready") << answer->dump();
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_FALSE(early_run.empty());

  ASSERT_EQ(submitted->wait(90s), 0) << submitted->err();
  ASSERT_EQ(cancelled->wait(90s), 0) << cancelled->err();
  ASSERT_TRUE(
    wait_until([&] { return contains(node->err(), "ready: resumed"); }, 60s))
    << node->err();
  EXPECT_TRUE(contains(node->err(), "resumed " + std::to_string(parked + 1)))
    << node->err();
  // With --json, each event is a line and the run's end the last one.
  auto out = submitted->out();
  auto last = out.find_last_of('\n', out.size() - 2);
  auto end = json::parse(out.substr(last == std::string::npos ? 0 : last + 1),
                         nullptr, false);
  ASSERT_FALSE(end.is_discarded()) << submitted->out();
  EXPECT_EQ(end["state"], "completed");
  auto run = end.value("run_id", std::string{});

  // Every resumed run's actor is up and the supervisors are idle: a second
  // start of the submission would have run by now.
  raw viewer{control_port, token("viewer")};
  json stats;
  ASSERT_TRUE(wait_until(
    [&] {
      stats = viewer.call({{"t", "inspect"}, {"what", "stats"}}, 30s);
      auto& b = stats["body"];
      // Every supervisor answered (the parked runs, the one they were
      // copied from, less the cancelled one; a supervisor that does not
      // answer in time is left out), and the submission is not live.
      auto live = b.is_object() ? b.value("runs_live", size_t{0}) : 0;
      return live >= parked && live <= parked + 1
             && b.value("supervisor_mailboxes", 1) == 0;
    },
    60s))
    << stats.dump();
  std::ifstream in{lines};
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "ran\nran\n");
  for (auto& id : {run, early_run}) {
    auto history = cli({"history", id, "--json"}, token("viewer"));
    ASSERT_EQ(history.exit_code, 0) << history.err;
    EXPECT_EQ(count_of(history.out, "\"run_completed\""), 1u)
      << id << ": " << history.out;
  }

  // The cancel reached the run once it was live again.
  ASSERT_TRUE(
    wait_until([&] { return state_of(ids.back()) == "cancelled"; }, 30s))
    << state_of(ids.back());
  EXPECT_EQ(state_of(ids[ids.size() - 2]), "running");
}

// A watch lasts as long as its run, however short the idle timeout: the node
// sends keepalives while it streams, and the client answers them. A client
// that stops answering is still cut off.
TEST_F(NodeControl, WatchesOutlastTheIdleTimeoutAndDeadClientsAreCutOff) {
  start_node({"--set", "control.idle_timeout=1s"});
  auto nap = sleeper("4s");
  auto waited = cli({"submit", nap, "--wait"});
  ASSERT_EQ(waited.exit_code, 0) << waited.err;
  EXPECT_TRUE(contains(waited.out, "\"done\": \"yes\"")) << waited.out;

  auto id = submit(nap);
  auto watch = cli({"watch", id}, token("viewer"));
  ASSERT_EQ(watch.exit_code, 0) << watch.err;
  EXPECT_TRUE(contains(watch.out, "\"done\": \"yes\"")) << watch.out;

  // A run whose events stream without a pause for 3 s.
  std::string steps = "nodes:\n  s0: {kind: sleep, duration: 100ms}\n";
  for (int i = 1; i < 30; ++i)
    steps += "  s" + std::to_string(i) + ": {kind: sleep, duration: 100ms, "
             + "after: [s" + std::to_string(i - 1) + "]}\n";
  auto busy = cli({"submit", workflow("busy", steps), "--wait"});
  ASSERT_EQ(busy.exit_code, 0) << busy.err;
  EXPECT_EQ(count_of(busy.err, "node_completed"), 30u) << busy.err;

  // A watcher frozen by SIGSTOP answers nothing: the node closes its
  // connection after the idle timeout, and once thawed it says so.
  auto frozen = submit(nap);
  auto watcher = cli_in_background({"watch", frozen}, token("viewer"));
  ASSERT_TRUE(
    wait_until([&] { return contains(watcher->err(), "timer_set"); }, 10s))
    << watcher->err();
  watcher->signal(SIGSTOP);
  EXPECT_TRUE(wait_until(
    [&] { return contains(node->err(), "idle past control.idle_timeout"); },
    10s))
    << node->err();
  watcher->signal(SIGCONT);
  EXPECT_EQ(watcher->wait(20s), 3) << watcher->err();
  EXPECT_TRUE(contains(watcher->err(), "lost the connection"))
    << watcher->err();

  // A raw client that watches and then neither reads nor writes is cut off
  // too (the node's unsent keepalives stay small).
  frame_client silent{control_port};
  ASSERT_TRUE(silent.hello(token("viewer"))); // the newest version
  ASSERT_TRUE(silent.send({{"t", "watch"}, {"id", 2}, {"run_id", frozen}}));
  auto idle_closes
    = [&] { return count_of(node->err(), "idle past control.idle_timeout"); };
  EXPECT_TRUE(wait_until([&] { return idle_closes() >= 2; }, 10s))
    << node->err();
  EXPECT_TRUE(silent.closed_within(3s));
}

// A run that journals nothing for longer than `troupe watch` waits without a
// frame from the node (three keepalive intervals and ten seconds: 11 s with
// a 1 s idle timeout) is still watched to its end: the node's keepalives
// are signs of life, and the watch lasts as long as the run.
TEST_F(NodeControl, AWatchOfAQuietRunOutlastsTheClientsSilenceLimit) {
  start_node({"--set", "control.idle_timeout=1s"});
  auto id = submit(sleeper("13s"));
  auto watch = cli({"watch", id}, token("viewer"));
  EXPECT_EQ(watch.exit_code, 0) << watch.err;
  EXPECT_TRUE(contains(watch.out, "\"done\": \"yes\"")) << watch.out;
  EXPECT_FALSE(contains(watch.err, "lost the connection")) << watch.err;
}

// Viewers that hammer the node with inspections of actors that do not exist
// cost one index lookup each, and submissions are acknowledged on a path of
// their own meanwhile.
TEST_F(NodeControl, ViewersHammeringUnknownActorsDoNotDelaySubmissions) {
  const size_t parked = 1000;
  ASSERT_EQ(park_runs(parked).size(), parked);
  start_node();
  const uint64_t nobody = uint64_t{1} << 60;
  json ask_nobody = {{"t", "inspect"}, {"what", "actor"}, {"actor_id", nobody}};

  raw viewer{control_port, token("viewer")};
  // Live actors are found through the index: a run actor, and an attempt as
  // its run sees it.
  auto slow = workflow("slow", R"(nodes:
  wait:
    kind: exec
    command: ["/bin/sleep", "30"]
)");
  auto slow_run = submit(slow);
  json run;
  ASSERT_TRUE(wait_until(
    [&] {
      run = viewer.call(
        {{"t", "inspect"}, {"what", "run"}, {"run_id", slow_run}});
      return run["t"] == "reply"
             && run["body"]["nodes"][0].contains("attempt_actor_id");
    },
    10s))
    << run.dump();
  auto run_actor = viewer.call({{"t", "inspect"},
                                {"what", "actor"},
                                {"actor_id", run["body"]["actor_id"]}});
  EXPECT_EQ(run_actor["body"]["kind"], "run") << run_actor.dump();
  EXPECT_EQ(run_actor["body"]["run_id"], slow_run);
  auto attempt
    = viewer.call({{"t", "inspect"},
                   {"what", "actor"},
                   {"actor_id", run["body"]["nodes"][0]["attempt_actor_id"]}});
  EXPECT_EQ(attempt["body"]["kind"], "attempt") << attempt.dump();
  EXPECT_EQ(attempt["body"]["run_id"], slow_run);
  ASSERT_EQ(cli({"cancel", slow_run}).exit_code, 0);

  // One unknown id: not found, and no run was asked.
  auto before = viewer.call({{"t", "inspect"}, {"what", "stats"}}, 30s);
  EXPECT_TRUE(before["body"].contains("inspect_asks")) << before.dump();
  auto answer = viewer.call(ask_nobody, 30s);
  EXPECT_EQ(answer["code"], "not_found") << answer.dump();
  auto after = viewer.call({{"t", "inspect"}, {"what", "stats"}}, 30s);
  // The second stats call asks the supervisors (4) itself.
  EXPECT_LE(after["body"].value("inspect_asks", uint64_t{0})
              - before["body"].value("inspect_asks", uint64_t{0}),
            4u)
    << before.dump() << after.dump();

  // Four viewers, each with 150 such inspections in flight (more than the
  // node takes from one connection: the rest are refused at once).
  std::atomic<bool> stop{false};
  std::atomic<size_t> answers{0};
  std::vector<std::thread> viewers;
  for (int v = 0; v < 4; ++v)
    viewers.emplace_back([&, v] {
      frame_client c{control_port};
      if (!say_hello(c, token("viewer", "viewer" + std::to_string(v))))
        return;
      uint64_t id = 10;
      for (int i = 0; i < 150; ++i) {
        auto m = ask_nobody;
        m["id"] = id++;
        c.send(m);
      }
      for (int i = 0; i < 1'000'000 && !stop.load(); ++i) {
        auto m = c.receive(200ms);
        if (!m)
          continue;
        ++answers;
        auto next = ask_nobody;
        next["id"] = id++;
        c.send(next);
      }
    });
  ASSERT_TRUE(wait_until([&] { return answers.load() >= 4; }, 30s));

  raw op{control_port, token("operator")};
  auto quick = workflow("quick", "nodes:\n  a: {kind: noop}\n");
  std::ifstream f{quick};
  std::stringstream source;
  source << f.rdbuf();
  std::vector<double> took_ms;
  for (int i = 0; i < 3; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = op.call({{"t", "submit"}, {"workflow", source.str()}}, 60s);
    took_ms.push_back(std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t0)
                        .count());
    EXPECT_EQ(r["t"], "reply") << r.dump();
  }
  stop = true;
  for (auto& t : viewers)
    t.join();
  // Loosely: today's node answers these within milliseconds; one that makes
  // submissions wait behind inspections takes many seconds.
  for (auto ms : took_ms)
    EXPECT_LT(ms, 3000.0) << "a submission took " << ms << " ms to be "
                          << "acknowledged; " << answers.load()
                          << " inspections answered meanwhile";
}

// A run's events cost the control port's thread nothing unless somebody
// watches the run; failed attempts are logged all the same.
TEST_F(NodeControl, OnlyWatchedRunsPostTheirEvents) {
  start_node();
  auto flaky = workflow("flaky", R"(nodes:
  a:
    kind: fail
    times: 1
    retry: {max_attempts: 2, initial_backoff: 10ms}
  nap: {kind: sleep, duration: 500ms, after: [a]}
)");
  auto id = submit(flaky);
  ASSERT_TRUE(wait_until([&] { return state_of(id) == "completed"; }, 10s));
  EXPECT_TRUE(contains(node->err(), "attempt_failed")) << node->err();
  raw viewer{control_port, token("viewer")};
  auto stats = viewer.call({{"t", "inspect"}, {"what", "stats"}});
  ASSERT_TRUE(stats["body"].contains("progress_posts")) << stats.dump();
  EXPECT_EQ(stats["body"]["progress_posts"], 0) << stats.dump();

  auto watched = cli({"submit", flaky, "--wait"});
  ASSERT_EQ(watched.exit_code, 0) << watched.err;
  EXPECT_TRUE(contains(watched.err, "attempt_failed")) << watched.err;
  stats = viewer.call({{"t", "inspect"}, {"what", "stats"}});
  EXPECT_GT(stats["body"].value("progress_posts", 0), 0) << stats.dump();
}

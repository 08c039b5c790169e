// A real `troupe node start` on 127.0.0.1, driven by the real CLI and by raw
// clients: submit, watch, list, cancel, pause, resume, logs, the auth matrix,
// kill -9 during a watch, SIGTERM drains, bad frames, health and metrics.

#include "runtime/auth/token.hpp"
#include "tests/support/frame_client.hpp"
#include "tests/support/node_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/pty_session.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <csignal>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <regex>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace std::chrono_literals;
using troupe::test::background_process;
using troupe::test::frame_client;
using troupe::test::http_get;
using troupe::test::process_result;
using troupe::test::wait_until;
using json = nlohmann::json;
namespace auth = troupe::runtime::auth;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct Node : troupe::test::node_process_fixture {
  /// `troupe shell` for a viewer in a pseudo-terminal, its history in the
  /// temp dir.
  std::unique_ptr<troupe::test::pty_session> shell_in_terminal() {
    std::map<std::string, std::optional<std::string>> env
      = {{"TROUPE_NODE", address()},
         {"TROUPE_TOKEN", token("viewer")},
         {"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
         {"HOME", dir.path().string()},
         {"TERM", "xterm"}};
    return std::make_unique<troupe::test::pty_session>(
      std::vector<std::string>{TROUPE_BINARY, "shell"}, env,
      dir.path().string());
  }
};

} // namespace

TEST_F(Node, SubmitWaitPrintsOutputsAndStatusListHistoryAgree) {
  start_node();
  auto hello
    = (std::filesystem::path{TROUPE_SOURCE_DIR} / "examples" / "hello.yaml")
        .string();
  auto r = cli({"submit", hello, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = r.out.substr(r.out.find('\n') + 1);
  auto outputs = json::parse(lines);
  EXPECT_EQ(outputs["greeting"], "Hello, world!");
  auto id = r.out.substr(0, 21);
  EXPECT_TRUE(contains(r.err, "node_completed")) << r.err;

  auto s = cli({"status", id, "--json"}, token("viewer"));
  ASSERT_EQ(s.exit_code, 0) << s.err;
  auto st = json::parse(s.out);
  EXPECT_EQ(st["state"], "completed");
  EXPECT_EQ(st["nodes"].size(), 3u);
  EXPECT_EQ(st["nodes"][0]["state"], "completed");

  auto res = cli({"result", id, "--json"}, token("viewer"));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json::parse(res.out)["outputs"]["farewell"], "goodbye, world");

  auto h = cli({"history", id}, token("viewer"));
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_TRUE(contains(h.out, "run completed")) << h.out;
  auto hj = json::parse(cli({"history", id, "--json"}, token("viewer")).out);
  EXPECT_EQ(hj["events"].front()["type"], "run_submitted");
  EXPECT_EQ(hj["events"].back()["type"], "run_completed");

  auto l = cli({"list", "--json"}, token("viewer"));
  ASSERT_EQ(l.exit_code, 0) << l.err;
  auto page = json::parse(l.out);
  ASSERT_EQ(page["runs"].size(), 1u);
  EXPECT_EQ(page["runs"][0]["run_id"], id);

  // The same views from the data dir once the node is gone.
  node->signal(SIGTERM);
  ASSERT_EQ(node->wait(15s), 0) << node->err();
  node.reset();
  auto local = troupe({"status", id, "--data-dir", data, "--json"});
  ASSERT_EQ(local.exit_code, 0) << local.err;
  EXPECT_EQ(json::parse(local.out)["nodes"], st["nodes"]);
  auto local_list = troupe({"list", "--data-dir", data});
  EXPECT_TRUE(contains(local_list.out, id)) << local_list.out;
}

TEST_F(Node, ListPagesWithACursorAndFilters) {
  start_node();
  auto quick = workflow("quick", "nodes:\n  a: {kind: noop}\n");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto r = cli({"submit", quick, "--wait"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ids.push_back(r.out.substr(0, 21));
  }
  auto parked = submit(sleeper());
  std::vector<std::string> seen;
  std::string after;
  for (int page = 0; page < 10; ++page) {
    std::vector<std::string> a
      = {"list", "--json", "--limit", "2", "--workflow", "quick"};
    if (!after.empty()) {
      a.push_back("--after");
      a.push_back(after);
    }
    auto r = cli(a, token("viewer"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto p = json::parse(r.out);
    for (auto& run : p["runs"])
      seen.push_back(run["run_id"]);
    EXPECT_LE(p["runs"].size(), 2u);
    after = p["next"];
    if (after.empty())
      break;
  }
  EXPECT_EQ(seen, ids);
  auto running = json::parse(
    cli({"list", "--json", "--state", "running"}, token("viewer")).out);
  ASSERT_EQ(running["runs"].size(), 1u);
  EXPECT_EQ(running["runs"][0]["run_id"], parked);
  auto bad = cli({"list", "--state", "sleeping"}, token("viewer"));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(contains(bad.err, "--state sleeping")) << bad.err;
  // Text output says how to get the next page.
  auto text = cli({"list", "--limit", "2"}, token("viewer"));
  EXPECT_TRUE(contains(text.err, "troupe list --limit 2 --after ")) << text.err;
}

TEST_F(Node, PauseResumeAndCancelOneRunAndInBulk) {
  start_node();
  auto id = submit(sleeper());
  ASSERT_TRUE(wait_until([&] { return state_of(id) == "running"; }, 10s));
  auto p = cli({"pause", id, "--reason", "maintenance"}, token("operator"));
  ASSERT_EQ(p.exit_code, 0) << p.err;
  ASSERT_TRUE(wait_until([&] { return state_of(id) == "paused"; }, 10s));
  // Pausing twice is a conflict: exit 1, saying why.
  auto again = cli({"pause", id}, token("operator"));
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_TRUE(contains(again.err, "is paused already")) << again.err;
  auto list = json::parse(
    cli({"list", "--json", "--state", "paused"}, token("viewer")).out);
  EXPECT_EQ(list["runs"].size(), 1u);
  ASSERT_EQ(cli({"resume", id}, token("operator")).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return state_of(id) == "running"; }, 10s));
  ASSERT_EQ(cli({"cancel", id}, token("operator")).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return state_of(id) == "cancelled"; }, 10s));
  auto res = cli({"result", id}, token("viewer"));
  EXPECT_EQ(res.exit_code, 1);
  EXPECT_TRUE(contains(res.err, "cancelled by tester")) << res.err;
  auto h = cli({"history", id}, token("viewer"));
  EXPECT_TRUE(contains(h.out, "run paused: paused by tester: maintenance"))
    << h.out;
  // A finished run cannot be cancelled again.
  auto twice = cli({"cancel", id}, token("operator"));
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_TRUE(contains(twice.err, "already ended cancelled")) << twice.err;

  // Bulk: without a terminal, --yes is needed.
  auto a = submit(sleeper());
  auto b = submit(sleeper());
  auto refused = cli({"cancel", "--workflow", "sleeper", "--state", "running"},
                     token("operator"));
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_TRUE(contains(refused.err, "2 run(s) match")) << refused.err;
  auto bulk
    = cli({"cancel", "--workflow", "sleeper", "--state", "running", "--yes"},
          token("operator"));
  ASSERT_EQ(bulk.exit_code, 0) << bulk.err;
  EXPECT_TRUE(contains(bulk.out, "cancelling 2 run(s)")) << bulk.out;
  ASSERT_TRUE(wait_until(
    [&] { return state_of(a) == "cancelled" && state_of(b) == "cancelled"; },
    10s));
}

TEST_F(Node, AuthMatrix) {
  start_node();
  auto parked = submit(sleeper());
  auto quick = workflow("quick", "nodes:\n  a: {kind: noop}\n");
  struct command {
    std::vector<std::string> argv;
    std::string needs;
  };
  std::vector<command> commands = {
    {{"status", parked}, "viewer"},
    {{"list"}, "viewer"},
    {{"history", parked}, "viewer"},
    {{"logs", parked}, "viewer"},
    {{"submit", quick}, "operator"},
    {{"pause", "no-such-run"}, "operator"},
    {{"resume", "no-such-run"}, "operator"},
    {{"cancel", "no-such-run"}, "operator"},
  };
  auto rank = [](const std::string& r) {
    return r == "viewer" ? 0 : r == "operator" ? 1 : 2;
  };
  for (auto role : {"viewer", "operator", "admin"}) {
    for (auto& c : commands) {
      auto r = cli(c.argv, token(role));
      bool allowed = rank(role) >= rank(c.needs);
      if (allowed) {
        EXPECT_NE(r.exit_code, 4) << role << " " << c.argv[0] << ": " << r.err;
      } else {
        EXPECT_EQ(r.exit_code, 4) << role << " " << c.argv[0] << ": " << r.err;
        EXPECT_TRUE(contains(r.err, "may not " + c.argv[0])) << r.err;
      }
    }
  }
  // Missing, expired and forged tokens are refused with distinct messages.
  auto o = opts();
  o.env["TROUPE_NODE"] = address();
  auto none = troupe::test::run_process(args({"list"}), o);
  EXPECT_EQ(none.exit_code, 4);
  EXPECT_TRUE(contains(none.err, "needs a token")) << none.err;
  auto expired = auth::issue_token(secret, auth::role::admin, "old", 1s,
                                   auth::token_clock::now() - 1h);
  auto e = cli({"list"}, expired);
  EXPECT_EQ(e.exit_code, 4);
  EXPECT_TRUE(contains(e.err, "expired")) << e.err;
  auto forged = auth::issue_token("another-secret-0123456789abcdef-xyz",
                                  auth::role::admin, "mallory", 1h,
                                  auth::token_clock::now());
  auto f = cli({"list"}, forged);
  EXPECT_EQ(f.exit_code, 4);
  EXPECT_TRUE(contains(f.err, "signature")) << f.err;
  // Refusals are logged with the subject, never the token.
  EXPECT_FALSE(contains(node->err(), forged));
  EXPECT_FALSE(contains(node->err(), secret));
}

TEST_F(Node, KillDuringWatchReportsTheLostNodeAndWatchResumesAfterRestart) {
  start_node();
  auto id = submit(sleeper("3s"));
  auto o = opts();
  o.env["TROUPE_NODE"] = address();
  o.env["TROUPE_TOKEN"] = token("viewer");
  auto n = std::to_string(spawned++);
  background_process watch{args({"watch", id}), o,
                           (dir.path() / ("w-out" + n)).string(),
                           (dir.path() / ("w-err" + n)).string()};
  ASSERT_TRUE(
    wait_until([&] { return contains(watch.err(), "timer_set"); }, 10s))
    << watch.err();
  auto port = control_port;
  node->signal(SIGKILL);
  ASSERT_EQ(node->wait(10s), -SIGKILL);
  node.reset();
  ASSERT_EQ(watch.wait(10s), 3) << watch.err();
  EXPECT_TRUE(contains(watch.err(), "lost the connection")) << watch.err();
  EXPECT_TRUE(contains(watch.err(), "troupe watch " + id)) << watch.err();
  // Restart on the same port: the run resumes and a new watch follows it to
  // its end.
  start_node({}, port);
  auto again = cli({"watch", id}, token("viewer"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(json::parse(again.out)["done"], "yes");
}

TEST_F(Node, SigtermDrainsAndTheNextStartResumes) {
  start_node();
  auto id = submit(sleeper("2s"));
  ASSERT_TRUE(wait_until([&] { return state_of(id) == "running"; }, 10s));
  node->signal(SIGTERM);
  ASSERT_EQ(node->wait(15s), 0) << node->err();
  EXPECT_TRUE(contains(node->err(), "draining")) << node->err();
  node.reset();
  start_node();
  EXPECT_TRUE(contains(node->err(), "resumed 1 unfinished run")) << node->err();
  auto r = cli({"watch", id}, token("viewer"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(Node, LogsShowEachAttemptsOutput) {
  start_node();
  auto wf = workflow("noisy", R"(nodes:
  say:
    kind: exec
    command: ["/bin/sh", "-c", "echo out-$(cat $0 2>/dev/null || echo 1); echo err-line >&2; test -f $0 || { echo 2 > $0; exit 3; }", ")"
                                + (dir.path() / "marker").string() + R"("]
    retry: {max_attempts: 3, initial_backoff: 10ms}
)");
  auto r = cli({"submit", wf, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto id = r.out.substr(0, 21);
  auto logs = cli({"logs", id, "--node", "say"}, token("viewer"));
  ASSERT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_TRUE(contains(logs.out, "say, attempt 1: failed (exit_code)"))
    << logs.out;
  EXPECT_TRUE(contains(logs.out, "say, attempt 2: completed")) << logs.out;
  EXPECT_TRUE(contains(logs.out, "out-1")) << logs.out;
  EXPECT_TRUE(contains(logs.out, "out-2")) << logs.out;
  EXPECT_TRUE(contains(logs.out, "err-line")) << logs.out;
  auto unknown = cli({"logs", id, "--node", "nope"}, token("viewer"));
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_TRUE(contains(unknown.err, "has no node 'nope'")) << unknown.err;
}

TEST_F(Node, BadFramesLeaveTheNodeServingOthers) {
  start_node({"--set", "control.read_timeout=500ms"});
  {
    frame_client c{control_port};
    std::string junk;
    uint32_t x = 7;
    for (int i = 0; i < 2048; ++i) {
      x = x * 1103515245u + 12345u;
      junk.push_back(static_cast<char>(x >> 16));
    }
    c.send_raw(junk);
    EXPECT_TRUE(c.closed_within(3s));
  }
  {
    frame_client c{control_port};
    ASSERT_TRUE(c.hello(token("viewer")));
    c.send_raw(std::string{"\xff\xff\xff\xff", 4});
    auto r = c.receive();
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["code"], "frame_too_large");
    EXPECT_TRUE(c.closed_within(3s));
  }
  frame_client truncated{control_port};
  truncated.send_raw(std::string{"\x00\x00\x00\x40", 4} + "partial");
  frame_client slow{control_port};
  slow.send_raw(std::string(2, '\0'));
  EXPECT_EQ(cli({"list"}, token("viewer")).exit_code, 0);
  EXPECT_TRUE(truncated.closed_within(5s));
  EXPECT_TRUE(slow.closed_within(5s));
  {
    frame_client c{control_port};
    ASSERT_TRUE(c.hello(token("operator")));
    auto r = c.call({{"t", "submit"}, {"workflow", "name: x\nnodes: 3\n"}}, 2);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["code"], "invalid_workflow");
    r = c.call({{"t", "status"}, {"run_id", 42}}, 3);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["code"], "bad_request");
    EXPECT_EQ((*r)["message"], "status: field 'run_id' must be a string");
  }
  EXPECT_EQ(cli({"list"}, token("viewer")).exit_code, 0);
}

TEST_F(Node, SubmitRefusesAMissingRequiredInput) {
  start_node();
  // No default and no `required: false`: the input must be given.
  auto text
    = std::string{"name: needs\ninputs: {who: {type: string}}\n"
                  "nodes: {a: {kind: noop, v: \"{{ inputs.who }}\"}}\n"};
  auto file = workflow("needs", "inputs: {who: {type: string}}\n"
                                "nodes: {a: {kind: noop, v: \"{{ inputs.who "
                                "}}\"}}\n");
  auto r = cli({"submit", file, "--wait"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "missing required input 'who'")) << r.err;
  frame_client c{control_port};
  ASSERT_TRUE(c.hello(token("operator")));
  auto reply = c.call({{"t", "submit"}, {"workflow", text}}, 7);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["code"], "invalid_workflow") << reply->dump();
  EXPECT_TRUE(contains((*reply)["message"].get<std::string>(),
                       "missing required input 'who'"))
    << reply->dump();
  reply = c.call(
    {{"t", "submit"}, {"workflow", text}, {"inputs", {{"who", "x"}}}}, 8);
  ASSERT_TRUE(reply);
  EXPECT_TRUE((*reply)["body"].contains("run_id")) << reply->dump();
}

TEST_F(Node, HealthReadinessAndMetricsPassPromtool) {
  start_node();
  auto quick = workflow("quick", "nodes:\n  a: {kind: noop}\n");
  ASSERT_EQ(cli({"submit", quick, "--wait"}).exit_code, 0);
  EXPECT_EQ(http_get(http_port, "/health").first, "HTTP/1.0 200 OK");
  auto ready = http_get(http_port, "/ready");
  EXPECT_EQ(ready.first, "HTTP/1.0 200 OK");
  // The wait may end from the journal a moment before the node counts the
  // run as finished: the count follows within the poll.
  std::string status, body;
  EXPECT_TRUE(wait_until(
    [&] {
      std::tie(status, body) = http_get(http_port, "/metrics");
      return contains(body, "troupe_runs_finished_total{state=\"completed\","
                            "workflow=\"quick\"} 1");
    },
    5s));
  ASSERT_EQ(status, "HTTP/1.0 200 OK");
  EXPECT_TRUE(
    contains(body, "troupe_runs_submitted_total{workflow=\"quick\"} 1"))
    << body;
  EXPECT_TRUE(contains(
    body,
    "troupe_runs_finished_total{state=\"completed\",workflow=\"quick\"} 1"))
    << body;
  EXPECT_TRUE(
    contains(body, "troupe_attempts_total{kind=\"noop\",outcome=\"ok\"}"))
    << body;
  EXPECT_TRUE(contains(body, "troupe_journal_commit_seconds_bucket")) << body;
  EXPECT_TRUE(contains(body, "troupe_recovery_duration_seconds")) << body;
  auto file = dir.write("metrics.prom", body);
  auto check = troupe::test::run_process(
    {"/bin/sh", "-c", "promtool check metrics < '" + file.string() + "'"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST_F(Node, SubmissionsAreRateLimitedPerSubject) {
  start_node({"--set", "auth.submit_rate=1", "--set", "auth.submit_burst=1"});
  auto quick = workflow("quick", "nodes:\n  a: {kind: noop}\n");
  EXPECT_EQ(cli({"submit", quick}, token("operator", "alice")).exit_code, 0);
  auto r = cli({"submit", quick}, token("operator", "alice"));
  // Not now, as for a node that is recovering: exit 3.
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(contains(r.err, "too many submissions from 'alice'")) << r.err;
  // When to retry, said once.
  EXPECT_TRUE(contains(r.err, "retry in")) << r.err;
  EXPECT_FALSE(contains(r.err, "retry after")) << r.err;
  // Another subject has its own bucket.
  EXPECT_EQ(cli({"submit", quick}, token("operator", "bob")).exit_code, 0);
}

TEST_F(Node, BadInputExitsTwoAndNoNodeExitsThree) {
  auto bad = workflow("bad", "nodes:\n  a: {kind: noop, after: [ghost]}\n");
  auto o = opts();
  o.env["TROUPE_NODE"] = "127.0.0.1:1";
  o.env["TROUPE_TOKEN"] = "x";
  auto r = troupe::test::run_process(args({"submit", bad}), o);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "ghost")) << r.err;
  auto hello
    = (std::filesystem::path{TROUPE_SOURCE_DIR} / "examples" / "hello.yaml")
        .string();
  r = troupe::test::run_process(args({"submit", hello}), o);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(contains(r.err, "cannot reach a node at 127.0.0.1:1")) << r.err;
  o.env["TROUPE_NODE"] = "no-port";
  r = troupe::test::run_process(args({"list"}), o);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "is not HOST:PORT")) << r.err;
  // A node with auth on and no secret refuses to start.
  auto no_secret = opts();
  no_secret.env["TROUPE_AUTH_SECRET"] = std::nullopt;
  r = troupe::test::run_process(
    args({"node", "start", "--data-dir", data, "--listen", "127.0.0.1:0"}),
    no_secret);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "TROUPE_AUTH_SECRET")) << r.err;
}

TEST_F(Node, AuthOffOnANonLoopbackAddressWarnsLoudly) {
  auto o = opts();
  auto n = std::to_string(spawned++);
  background_process p{
    args({"node", "start", "--data-dir", data, "--listen", "0.0.0.0:0",
          "--http", "", "--set", "auth.enabled=false"}),
    o, (dir.path() / ("o" + n)).string(), (dir.path() / ("e" + n)).string()};
  ASSERT_TRUE(wait_until([&] { return contains(p.err(), "ready"); }, 30s))
    << p.err();
  EXPECT_TRUE(contains(p.err(), "IS NOT A LOOPBACK ADDRESS")) << p.err();
  // `--http ""` turns the endpoint off (it used to fall back to
  // http.listen's default port, and fail when that was taken).
  EXPECT_FALSE(contains(p.err(), "health and metrics on")) << p.err();
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(15s), 0);
}

TEST_F(Node, ServesTheControlProtocolOverTls) {
  auto cert = (dir.path() / "cert.pem").string();
  auto key = (dir.path() / "key.pem").string();
  auto gen = troupe::test::run_process(
    {"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
     "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
     "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  start_node({"--set", "tls.cert=" + cert, "--set", "tls.key=" + key});
  auto tls = "tls://" + address();
  auto quick = workflow("quick", "nodes:\n  a: {kind: noop}\n");
  auto r = cli({"--node", tls, "--ca", cert, "submit", quick, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Without the CA the certificate is not trusted; a plain client gets no
  // answer it understands. Both fail cleanly, and the node goes on.
  auto untrusted = cli({"--node", tls, "list"});
  EXPECT_EQ(untrusted.exit_code, 3);
  EXPECT_TRUE(contains(untrusted.err, "TLS handshake")) << untrusted.err;
  // A plain client is told that the node speaks TLS (exit 2: the address
  // is wrong), and the node logs why it closed the connection, once.
  auto plain = cli({"list"});
  EXPECT_EQ(plain.exit_code, 2) << plain.err;
  EXPECT_TRUE(contains(plain.err, "the node looks like it speaks TLS: use "
                                  "--node tls://"
                                    + address()))
    << plain.err;
  EXPECT_EQ(cli({"--node", tls, "--ca", cert, "list"}).exit_code, 0);
  EXPECT_TRUE(wait_until(
    [&] { return contains(node->err(), "control: TLS handshake with "); }, 10s))
    << node->err();
  EXPECT_FALSE(contains(node->err(), "control: control:")) << node->err();
  // The other way round: a TLS client of a plain node.
  node->signal(SIGTERM);
  ASSERT_EQ(node->wait(15s), 0);
  start_node();
  auto mismatch = cli({"--node", "tls://" + address(), "--ca", cert, "list"});
  EXPECT_EQ(mismatch.exit_code, 2) << mismatch.err;
  EXPECT_TRUE(contains(mismatch.err, "the node looks like it speaks plain "
                                     "TCP: use --node "
                                       + address() + ", without tls://"))
    << mismatch.err;
}

namespace {

/// A raw client past its hello, for requests the CLI has no command for.
struct raw {
  frame_client c;
  uint64_t next = 2;
  raw(uint16_t port, const std::string& token) : c(port) {
    auto w = c.hello(token);
    EXPECT_TRUE(w && (*w)["t"] == "welcome");
  }
  json call(json msg) {
    auto r = c.call(std::move(msg), next++);
    EXPECT_TRUE(r);
    return r ? *r : json::object();
  }
};

} // namespace

TEST_F(Node, InspectShowsLiveActorsAndActionsChangeThem) {
  start_node();
  auto wf = workflow("stuck", R"(nodes:
  flaky:
    kind: fail
    times: 1
    retry: {max_attempts: 3, initial_backoff: 1h, max_backoff: 2h,
            jitter: none}
    circuit_breaker: {key: payments, failure_threshold: 5}
    concurrency: {key: "{{ inputs.customer }}", limit: 1}
inputs: {customer: {type: string, default: acme}}
)");
  auto id = submit(wf);
  raw viewer{control_port, token("viewer")};
  json run;
  ASSERT_TRUE(wait_until(
    [&] {
      run = viewer.call({{"t", "inspect"}, {"what", "run"}, {"run_id", id}});
      return run.value("t", "") == "reply"
             && run["body"]["nodes"][0].value("state", "") == "waiting_retry";
    },
    10s))
    << run.dump();
  auto& body = run["body"];
  EXPECT_EQ(body["kind"], "run");
  EXPECT_EQ(body["restarts"], 0);
  auto& node = body["nodes"][0];
  EXPECT_EQ(node["last_error_kind"], "injected");
  EXPECT_GT(node["next_retry_ns"].get<int64_t>(),
            std::chrono::duration_cast<std::chrono::nanoseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count());
  EXPECT_GT(node["backoff_ms"].get<int64_t>(), 3'000'000);
  EXPECT_EQ(body["waiting_for"][0], "retry of 'flaky' (attempt 2)");
  auto n = viewer.call(
    {{"t", "inspect"}, {"what", "node"}, {"run_id", id}, {"node", "flaky"}});
  EXPECT_EQ(n["body"]["state"], "waiting_retry");

  // The tree: supervisors with this run, the breaker, the limiter.
  auto tree = viewer.call({{"t", "inspect"}, {"what", "actors"}})["body"];
  size_t runs = 0;
  uint64_t run_actor = 0;
  for (auto& s : tree["supervisors"])
    for (auto& c : s["children"]) {
      ++runs;
      run_actor = c["actor_id"];
    }
  EXPECT_EQ(runs, 1u) << tree.dump();
  ASSERT_EQ(tree["breakers"].size(), 1u);
  EXPECT_EQ(tree["breakers"][0]["key"], "payments");
  EXPECT_EQ(tree["breakers"][0]["failures_in_window"], 1);
  auto limits = viewer.call({{"t", "inspect"}, {"what", "limits"}})["body"];
  ASSERT_EQ(limits["limiters"].size(), 1u);
  EXPECT_EQ(limits["limiters"][0]["key"], "acme");
  auto actor = viewer.call(
    {{"t", "inspect"}, {"what", "actor"}, {"actor_id", run_actor}});
  EXPECT_EQ(actor["body"]["run_id"], id);

  // Crash the run actor (admin only): it restarts from its journal, its
  // restart count goes up, and it still waits for the same retry.
  auto refused = viewer.call({{"t", "crash"}, {"actor_id", run_actor}});
  EXPECT_EQ(refused["code"], "forbidden");
  raw admin{control_port, token("admin")};
  auto crash = admin.call({{"t", "crash"}, {"actor_id", run_actor}});
  ASSERT_EQ(crash["t"], "reply") << crash.dump();
  ASSERT_TRUE(wait_until(
    [&] {
      run = viewer.call({{"t", "inspect"}, {"what", "run"}, {"run_id", id}});
      return run.value("t", "") == "reply"
             && run["body"].value("restarts", 0) == 1;
    },
    10s))
    << run.dump();
  EXPECT_EQ(run["body"]["nodes"][0]["state"], "waiting_retry");
  EXPECT_NE(run["body"]["actor_id"], run_actor);

  // Retry now skips the hour of backoff; the run completes.
  auto retry = admin.call({{"t", "retry"}, {"run_id", id}, {"node", "flaky"}});
  ASSERT_EQ(retry["t"], "reply") << retry.dump();
  auto done = cli({"watch", id}, token("viewer"));
  EXPECT_EQ(done.exit_code, 0) << done.err;
  // Once the run ended, nothing waits for a retry: a conflict, naming why.
  auto again = admin.call({{"t", "retry"}, {"run_id", id}, {"node", "flaky"}});
  EXPECT_EQ(again["code"], "conflict") << again.dump();
  EXPECT_EQ(again["state"], "completed") << again.dump();

  // Breakers reset by hand; unknown ones and bad targets say so.
  auto reset = admin.call({{"t", "breaker_reset"}, {"key", "payments"}});
  EXPECT_EQ(reset["t"], "reply");
  auto b
    = viewer.call({{"t", "inspect"}, {"what", "breaker"}, {"key", "payments"}});
  EXPECT_EQ(b["body"]["state"], "closed");
  EXPECT_EQ(b["body"]["calls_in_window"], 0);
  EXPECT_EQ(admin.call({{"t", "breaker_reset"}, {"key", "nope"}})["code"],
            "not_found");
  auto bad = viewer.call({{"t", "inspect"}, {"what", "everything"}});
  EXPECT_EQ(bad["code"], "bad_request");
  EXPECT_TRUE(contains(bad["message"], "targets: actors, run")) << bad.dump();
  auto gone = viewer.call({{"t", "inspect"}, {"what", "run"}, {"run_id", id}});
  EXPECT_EQ(gone["code"], "not_found");
  EXPECT_TRUE(contains(gone["message"], "not live on this node"))
    << gone.dump();

  // Config comes masked; stats count what is live.
  auto config = viewer.call({{"t", "inspect"}, {"what", "config"}})["body"];
  EXPECT_FALSE(contains(config.dump(), secret));
  auto stats = viewer.call({{"t", "inspect"}, {"what", "stats"}})["body"];
  EXPECT_EQ(stats["ready"], true);
  EXPECT_EQ(stats["runs_live"], 0);
}

TEST_F(Node, ShellInspectsAStuckRunAndWatchesItsActorRestart) {
  start_node();
  auto wf = workflow("stuck", R"(nodes:
  flaky:
    kind: fail
    times: 1
    retry: {max_attempts: 3, initial_backoff: 1h, max_backoff: 2h,
            jitter: none}
)");
  auto id = submit(wf);
  auto shell = [&](const std::string& commands, const std::string& role) {
    return cli({"shell", "-c", commands}, token(role));
  };
  process_result r;
  ASSERT_TRUE(wait_until(
    [&] {
      r = shell("inspect run " + id, "viewer");
      return contains(r.out, "waiting for: retry of 'flaky' (attempt 2)");
    },
    10s))
    << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "next attempt in ")) << r.out;
  EXPECT_TRUE(contains(r.out, "(backoff ")) << r.out;
  EXPECT_TRUE(contains(r.out, "restarts 0")) << r.out;
  // The same through a query, and as JSON.
  r = shell("select nodes where state = 'waiting_retry' and attempts >= 1",
            "viewer");
  EXPECT_TRUE(contains(r.out, "1 row(s)")) << r.out;
  auto j = cli({"--json", "shell", "-c", "inspect node " + id + "/flaky"},
               token("viewer"));
  EXPECT_EQ(json::parse(j.out)["state"], "waiting_retry") << j.out;
  // Crash the run actor: its supervisor restarts it from its journal.
  auto tree = json::parse(
    cli({"--json", "shell", "-c", "actors"}, token("viewer")).out);
  uint64_t run_actor = 0;
  for (auto& s : tree["supervisors"])
    for (auto& c : s["children"])
      run_actor = c["actor_id"];
  ASSERT_NE(run_actor, 0u) << tree.dump();
  r = shell("crash actor " + std::to_string(run_actor), "operator");
  EXPECT_EQ(r.exit_code, 4) << r.err;
  r = shell("crash actor " + std::to_string(run_actor), "admin");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(wait_until(
    [&] {
      r = shell("inspect run " + id, "viewer");
      return contains(r.out, "restarts 1");
    },
    10s))
    << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "waiting for: retry of 'flaky'")) << r.out;
  // Mistakes are explained: the closest command, the column of a query.
  r = shell("inspct run " + id, "viewer");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "did you mean 'inspect'")) << r.err;
  r = shell("select nodes where atempts > 3", "viewer");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "                   ^")) << r.err;
  EXPECT_TRUE(contains(r.err, "did you mean 'attempts'")) << r.err;
  r = shell("inspect actor 999999", "viewer");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "no live actor 999999")) << r.err;
  // A script on standard input; retry now ends the wait.
  auto o = opts();
  o.env["TROUPE_NODE"] = address();
  o.env["TROUPE_TOKEN"] = token("operator");
  o.stdin_data = "# a script\nretry " + id + "/flaky\n";
  auto script = troupe::test::run_process(args({"shell"}), o);
  EXPECT_EQ(script.exit_code, 0) << script.err;
  EXPECT_EQ(cli({"watch", id}, token("viewer")).exit_code, 0);
}

TEST_F(Node, ShellPrintsTablesWithoutJsonAndJsonWithIt) {
  start_node();
  auto wf = workflow("stuck", R"(nodes:
  flaky:
    kind: fail
    times: 1
    retry: {max_attempts: 3, initial_backoff: 1h, max_backoff: 2h,
            jitter: none}
    circuit_breaker: {key: payments, failure_threshold: 5}
    concurrency: {key: "{{ inputs.customer }}", limit: 1}
inputs: {customer: {type: string, default: acme}}
)");
  auto id = submit(wf);
  auto shell = [&](const std::string& commands) {
    auto r = cli({"shell", "-c", commands}, token("viewer"));
    EXPECT_EQ(r.exit_code, 0) << commands << ": " << r.err;
    return r.out;
  };
  auto shell_json = [&](const std::string& commands) {
    auto r = cli({"--json", "shell", "-c", commands}, token("viewer"));
    EXPECT_EQ(r.exit_code, 0) << commands << ": " << r.err;
    auto j = json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_object()) << commands << ": " << r.out;
    return j;
  };
  std::string out;
  ASSERT_TRUE(wait_until(
    [&] {
      out = shell("inspect run " + id);
      return contains(out, "waiting for: retry of 'flaky'");
    },
    10s))
    << out;
  auto tree = shell_json("actors");
  ASSERT_EQ(tree["breakers"].size(), 1u) << tree.dump();
  auto breaker = std::to_string(tree["breakers"][0]["actor_id"].get<int>());
  auto limiter = std::to_string(tree["limiters"][0]["actor_id"].get<int>());

  // Without --json: aligned names and values, or a table; no JSON.
  std::map<std::string, std::vector<std::string>> expected = {
    {"stats", {"  runs live             1\n", "  ready                 yes\n"}},
    {"config",
     {"KEY  ", "  VALUE  ", "  SOURCE\n", "\"127.0.0.1:0\"  ", "auth.secret",
      "\"********\""}},
    {"inspect limits",
     {"KEY   LIMIT  HELD  WAITING  ACTOR  HOLDERS\n", "acme  1      "}},
    {"inspect actor " + breaker,
     {"breaker 'payments' (actor " + breaker + "): closed\n",
      "  failures in window   1\n", "  window               1m\n"}},
    {"inspect actor " + limiter,
     {"limiter 'acme' (actor " + limiter + ")\n", "  limit    1\n"}},
    {"inspect breaker payments", {"  failure threshold    5\n"}}};
  for (auto& [command, parts] : expected) {
    out = shell(command);
    EXPECT_FALSE(contains(out, "{")) << command << ":\n" << out;
    for (auto& part : parts)
      EXPECT_TRUE(contains(out, part)) << command << ": " << part << "\n"
                                       << out;
  }
  // With --json: the node's answer, as it came.
  EXPECT_EQ(shell_json("stats")["runs_live"], 1);
  EXPECT_EQ(shell_json("config")["settings"]["control.listen"]["value"],
            "127.0.0.1:0");
  EXPECT_EQ(shell_json("inspect limits")["limiters"][0]["key"], "acme");
  EXPECT_EQ(shell_json("inspect actor " + breaker)["key"], "payments");
  // A run's age reads as a span.
  out = shell("actors");
  std::smatch m;
  EXPECT_TRUE(std::regex_search(out, m, std::regex{", age [0-9.]+m?s\n"}))
    << out;
  EXPECT_FALSE(contains(out, "ago")) << out;
}

TEST_F(Node, ShellCompletesCommandsAndRunIdsInATerminal) {
  start_node();
  auto id = submit(sleeper());
  auto pty = shell_in_terminal();
  ASSERT_TRUE(pty->expect("> ")) << pty->output();
  pty->write("ins\t");
  ASSERT_TRUE(pty->expect("inspect ")) << pty->output();
  pty->write("r\t");
  ASSERT_TRUE(pty->expect("run ")) << pty->output();
  pty->write(id.substr(0, 4) + "\t\r");
  ASSERT_TRUE(pty->expect("waiting for: timer of 'nap'")) << pty->output();
  // Keys typed before the next prompt are kept, but Ctrl-D typed then
  // would be the terminal's, not the editor's: leave with a command.
  ASSERT_TRUE(pty->expect(")> ")) << pty->output();
  pty->write("quit\r");
  EXPECT_EQ(pty->wait(10s), 0) << pty->output();
}

TEST_F(Node, ShellReportsALostNodeAndReconnectsOnTheNextCommand) {
  start_node();
  auto pty = shell_in_terminal();
  ASSERT_TRUE(pty->expect("> ")) << pty->output();
  pty->write("stats\r");
  ASSERT_TRUE(pty->expect("ready                 yes")) << pty->output();
  auto port = control_port;
  node->signal(SIGKILL);
  ASSERT_EQ(node->wait(10s), -SIGKILL);
  node.reset();
  pty->write("stats\r");
  ASSERT_TRUE(pty->expect("reconnecting on the next command")) << pty->output();
  start_node({}, port);
  pty->write("stats\r");
  ASSERT_TRUE(pty->expect("ready                 yes")) << pty->output();
  ASSERT_TRUE(pty->expect(")> ")) << pty->output();
  pty->write("quit\r");
  EXPECT_EQ(pty->wait(10s), 0) << pty->output();
}

TEST_F(Node, ShellRunsEachPipedLineAsItArrives) {
  start_node();
  // A pipe whose writer is still at work: opened read-write here, which
  // does not wait for a reader, and closed at the end (end of input).
  auto fifo = (dir.path() / "script").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  int fd = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto send = [fd](const std::string& text) {
    return ::write(fd, text.data(), text.size())
           == static_cast<ssize_t>(text.size());
  };
  auto o = opts();
  o.env["TROUPE_NODE"] = address();
  o.env["TROUPE_TOKEN"] = token("viewer");
  auto n = std::to_string(spawned++);
  background_process sh{
    {"/bin/sh", "-c", "exec \"$0\" shell < \"$1\"", TROUPE_BINARY, fifo},
    o,
    (dir.path() / ("out" + n)).string(),
    (dir.path() / ("err" + n)).string()};
  auto answers = [&] {
    auto out = sh.out();
    size_t count = 0;
    for (auto at = out.find("runs live"); at != std::string::npos;
         at = out.find("runs live", at + 1))
      ++count;
    return count;
  };
  ASSERT_TRUE(send("stats\n"));
  // The first answer comes before the second line is written.
  EXPECT_TRUE(wait_until([&] { return answers() == 1; }, 20s))
    << sh.out() << sh.err();
  // A quoted newline waits for the rest of its command.
  ASSERT_TRUE(send("inspect breaker 'no\n"));
  ASSERT_TRUE(send("such'; stats\n"));
  EXPECT_TRUE(wait_until([&] { return answers() == 2; }, 20s))
    << sh.out() << sh.err();
  EXPECT_TRUE(contains(sh.err(), "no circuit breaker 'no\nsuch'")) << sh.err();
  ::close(fd);
  EXPECT_EQ(sh.wait(20s), 1) << sh.err();
}

TEST_F(Node, BenchRunsThroughputWorkloadsAgainstTheNode) {
  start_node(
    {"--set", "auth.submit_rate=100000", "--set", "auth.submit_burst=100000"});
  auto r = cli(
    {"--node", address(), "bench", "seq10", "fan10", "--n", "30", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines{r.out};
  std::vector<json> results;
  for (std::string line; std::getline(lines, line);)
    results.push_back(json::parse(line));
  ASSERT_EQ(results.size(), 2u) << r.out;
  for (auto& j : results) {
    EXPECT_EQ(j.value("ok", 0), 30) << j;
    EXPECT_EQ(j.value("failed", -1), 0) << j;
    EXPECT_FALSE(j.value("node", std::string{}).empty()) << j;
    EXPECT_GT(j.value("steps_per_s", 0.0), 0.0) << j;
  }
  EXPECT_EQ(results[0].value("steps_per_run", 0), 10);
  EXPECT_EQ(results[1].value("steps_per_run", 0), 11);
  // The runs are real: the node lists them as completed.
  auto l = cli({"list", "--workflow", "bench-seq10", "--state", "completed",
                "--limit", "1000", "--json"},
               token("viewer"));
  ASSERT_EQ(l.exit_code, 0) << l.err;
  // 30 measured plus the warm-up's 3.
  EXPECT_EQ(json::parse(l.out)["runs"].size(), 33u) << l.out;

  auto bad = cli({"--node", address(), "bench", "sleepers"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(contains(bad.err, "embedded node only")) << bad.err;
}

TEST_F(Node, BenchNamesTheNodesSubmissionLimit) {
  start_node({"--set", "auth.submit_rate=1", "--set", "auth.submit_burst=1"});
  auto r = cli({"--node", address(), "bench", "seq10", "--n", "20"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "too many submissions")) << r.err;
  EXPECT_TRUE(contains(r.err, "auth.submit_rate=100000")) << r.err;
}

// A node whose storage.retention is 0s keeps every run: `troupe gc` without
// --older-than removes nothing and says why, as on a data dir (exit 0).
TEST_F(Node, GcOnANodeThatKeepsEveryRunSaysWhyAndRemovesNothing) {
  start_node({"--set", "storage.retention=0s"});
  auto id = submit(sleeper("0s"));
  ASSERT_TRUE(wait_until([&] { return state_of(id) == "completed"; }, 10s));
  auto g = cli({"gc"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  EXPECT_TRUE(contains(g.err,
                       "storage.retention is 0s on node-1, which keeps "
                       "every run: nothing removed (give --older-than D"))
    << g.err;
  EXPECT_EQ(g.out, "");
  g = cli({"gc", "--json"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  auto report = json::parse(g.out, nullptr, false);
  ASSERT_TRUE(report.is_object()) << g.out;
  EXPECT_EQ(report["runs"], 0) << g.out;
  EXPECT_EQ(report["kept_all"], true) << g.out;
  EXPECT_EQ(state_of(id), "completed");
  // Told an age, it deletes.
  g = cli({"gc", "--older-than", "0s", "--json"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(json::parse(g.out, nullptr, false).value("runs", 0), 1) << g.out;
}

TEST_F(Node, RetentionDeletesFinishedRunsInTheBackground) {
  start_node(
    {"--set", "storage.retention=1s", "--set", "storage.gc_interval=200ms"});
  auto parked = submit(sleeper("60s"));
  auto hello
    = (std::filesystem::path{TROUPE_SOURCE_DIR} / "examples" / "hello.yaml")
        .string();
  auto r = cli({"submit", hello, "--wait", "--idempotency-key", "key-1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto id = r.out.substr(0, 21);

  // Deleted about a second after it finished (bounded poll).
  process_result h;
  EXPECT_TRUE(wait_until(
    [&] {
      h = cli({"history", id}, token("viewer"));
      return h.exit_code != 0;
    },
    30s))
    << h.out;
  EXPECT_EQ(h.exit_code, 1);
  EXPECT_TRUE(
    contains(h.err, "run " + id + ": not found (deleted after retention)"))
    << h.err;
  EXPECT_TRUE(wait_until(
    [&] { return contains(node->err(), "retention: deleted"); }, 10s))
    << node->err();
  for (auto cmd : {"status", "result", "logs", "watch"}) {
    auto s = cli({cmd, id}, token("viewer"));
    EXPECT_EQ(s.exit_code, 1) << cmd;
    EXPECT_TRUE(contains(s.err, "not found (deleted after retention)"))
      << cmd << s.err;
  }
  for (auto cmd : {"cancel", "pause", "resume"}) {
    auto s = cli({cmd, id}, token("operator"));
    EXPECT_EQ(s.exit_code, 1) << cmd;
    EXPECT_TRUE(contains(s.err, "not found (deleted after retention)"))
      << cmd << s.err;
  }
  // Never existed: plainly not found.
  auto unknown = cli({"history", "0190000000000-0000000"}, token("viewer"));
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_TRUE(contains(unknown.err, "no run '0190000000000-0000000'"))
    << unknown.err;
  EXPECT_FALSE(contains(unknown.err, "deleted")) << unknown.err;
  // Unfinished runs are kept, however old.
  EXPECT_EQ(state_of(parked), "running");
  // The key went with its run: the same key starts a new run.
  r = cli({"submit", hello, "--idempotency-key", "key-1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto again = json::parse(r.out, nullptr, false);
  EXPECT_EQ(again.value("existing", true), false) << r.out;
  EXPECT_NE(again.value("run_id", ""), id) << r.out;

  // On demand, through the node: admins only.
  auto g = cli({"gc", "--older-than", "1h"}, token("operator"));
  EXPECT_EQ(g.exit_code, 4) << g.err;
  g = cli({"gc", "--older-than", "1h", "--json"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  auto report = json::parse(g.out, nullptr, false);
  ASSERT_TRUE(report.is_object()) << g.out;
  EXPECT_EQ(report["runs"], 0) << g.out;
  EXPECT_EQ(report["older_than_ms"], 3'600'000) << g.out;
  EXPECT_TRUE(report.contains("node")) << g.out;
  g = cli({"gc", "--older-than", "soon"});
  EXPECT_EQ(g.exit_code, 2) << g.err;
  // The data dir is the node's: gc on it directly says whom to ask.
  g = cli({"gc", "--data-dir", data, "--older-than", "0s"});
  EXPECT_EQ(g.exit_code, 3) << g.err;
  EXPECT_TRUE(contains(g.err, "troupe gc --node " + address())) << g.err;
}

// An idempotency key names one submission: `submit` with the same key and
// another workflow or other inputs exits 2 naming the run that holds it,
// and the wire answers `conflict` with that run's id; the same workflow and
// inputs get that run.
TEST_F(Node, IdempotencyKeyOfAnotherWorkflowOrInputsIsAConflict) {
  start_node();
  auto greet = workflow("greet", "inputs: {who: {type: string, default: x}}\n"
                                 "nodes:\n  a: {kind: noop}\n");
  auto r = cli({"submit", greet, "--idempotency-key", "k", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto id = json::parse(r.out).value("run_id", "");
  ASSERT_EQ(id.size(), 21u) << r.out;
  auto other = workflow("other", "nodes:\n  a: {kind: noop}\n");
  r = cli({"submit", other, "--idempotency-key", "k"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(contains(r.err, "idempotency key 'k' is held by run " + id))
    << r.err;
  EXPECT_TRUE(contains(r.err, "a different workflow")) << r.err;
  r = cli({"submit", greet, "--idempotency-key", "k", "--input", "who=y"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "held by run " + id)) << r.err;
  EXPECT_TRUE(contains(r.err, "different inputs")) << r.err;
  // The same workflow and inputs: that run.
  r = cli(
    {"submit", greet, "--idempotency-key", "k", "--input", "who=x", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto again = json::parse(r.out);
  EXPECT_EQ(again.value("run_id", ""), id) << r.out;
  EXPECT_EQ(again.value("existing", false), true) << r.out;
  // On the wire: a typed conflict naming the run.
  raw c{control_port, token("operator")};
  auto answer
    = c.call({{"t", "submit"},
              {"workflow", "name: other\nnodes:\n  a: {kind: noop}\n"},
              {"idempotency_key", "k"}});
  EXPECT_EQ(answer.value("t", ""), "error") << answer;
  EXPECT_EQ(answer.value("code", ""), "conflict") << answer;
  EXPECT_EQ(answer.value("run_id", ""), id) << answer;
  EXPECT_TRUE(contains(answer.value("message", ""), id)) << answer;
  // Nothing else was started.
  auto l = cli({"list", "--json"}, token("viewer"));
  EXPECT_EQ(json::parse(l.out)["runs"].size(), 1u) << l.out;
}

namespace {

/// The command of the "more runs: troupe ..." hint in `err`, as arguments
/// after "troupe"; empty when there is none.
std::vector<std::string> next_page_hint(const std::string& err) {
  const std::string lead = "more runs: troupe ";
  auto at = err.find(lead);
  if (at == std::string::npos)
    return {};
  at += lead.size();
  std::istringstream words{err.substr(at, err.find('\n', at) - at)};
  std::vector<std::string> out;
  for (std::string w; words >> w;)
    out.push_back(w);
  return out;
}

/// Follows `list` from `first` (arguments after "troupe") through its hints,
/// with `run` running each; returns the runs of `ids` seen, in order, and
/// the hints.
template<class Run>
std::pair<std::vector<std::string>, std::vector<std::string>>
follow_list_hints(std::vector<std::string> a,
                  const std::vector<std::string>& ids, Run run) {
  std::vector<std::string> seen, hints;
  for (int page = 0; page < 10 && !a.empty(); ++page) {
    auto r = run(a);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::istringstream lines{r.out};
    for (std::string line; std::getline(lines, line);)
      for (auto& id : ids)
        if (line.starts_with(id))
          seen.push_back(id);
    a = next_page_hint(r.err);
    if (!a.empty())
      hints.push_back(r.err);
  }
  return {seen, hints};
}

} // namespace

// `list`'s "more runs" hint keeps the filters and page size (and the data
// dir), a cursor that names no run is refused rather than read as the end,
// and a page size outside 1-1000 is refused, on the CLI and on the wire.
TEST_F(Node, ListHintKeepsFiltersAndBadCursorsAndLimitsAreRefused) {
  start_node();
  auto quick = workflow("quick", "nodes:\n  a: {kind: noop}\n");
  auto other = workflow("other", "nodes:\n  a: {kind: noop}\n");
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = cli({"submit", quick, "--wait"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ids.push_back(r.out.substr(0, 21));
    ASSERT_EQ(cli({"submit", other, "--wait"}).exit_code, 0);
  }
  auto via_node = [&](const std::vector<std::string>& a) {
    return cli(a, token("viewer"));
  };
  auto [seen, hints] = follow_list_hints(
    {"list", "--workflow", "quick", "--state", "completed", "--limit", "1"},
    ids, via_node);
  EXPECT_EQ(seen, ids);
  EXPECT_EQ(hints.size(), 2u);
  for (auto& h : hints)
    EXPECT_TRUE(contains(h, "more runs: troupe list --state completed "
                            "--workflow quick --limit 1 --after "))
      << h;

  // A cursor that is no run's id is an error, not an empty page.
  for (std::string cursor : {"bogus", "0190000000000-00000000"}) {
    auto r = cli({"list", "--after", cursor}, token("viewer"));
    EXPECT_EQ(r.exit_code, 2) << cursor << r.out << r.err;
    EXPECT_FALSE(contains(r.out, "no runs")) << r.out;
    EXPECT_TRUE(contains(r.err, "troupe: list: field 'after': '" + cursor
                                  + "' is not a cursor"))
      << r.err;
  }
  // The page size: 1 to 1000.
  for (auto limit : {"0", "1001"}) {
    auto r = cli({"list", "--limit", limit}, token("viewer"));
    EXPECT_EQ(r.exit_code, 2) << limit << r.err;
    EXPECT_TRUE(contains(r.err, "--limit must be from 1 to 1000")) << r.err;
  }
  // On the wire: bad_request naming the field.
  raw c{control_port, token("viewer")};
  auto e = c.call({{"t", "list"}, {"after", "bogus"}});
  EXPECT_EQ(e.value("code", ""), "bad_request") << e;
  EXPECT_TRUE(contains(e.value("message", ""), "field 'after'")) << e;
  for (json limit : {json(0), json(1001), json(-1), json("5"), json(2.5)}) {
    e = c.call({{"t", "list"}, {"limit", limit}});
    EXPECT_EQ(e.value("code", ""), "bad_request") << limit << e;
    EXPECT_TRUE(contains(e.value("message", ""),
                         "field 'limit' must be a whole number from 1 to 1000"))
      << e;
  }
  for (json limit : {json(1), json(1000)}) {
    e = c.call({{"t", "list"}, {"limit", limit}});
    ASSERT_EQ(e.value("t", ""), "reply") << limit << e;
    EXPECT_EQ(e["body"]["runs"].size(), limit == 1 ? 1u : 6u) << e;
  }
  // A real cursor still pages.
  e = c.call({{"t", "list"}, {"after", ids[0]}, {"workflow", "quick"}});
  ASSERT_EQ(e.value("t", ""), "reply") << e;
  EXPECT_EQ(e["body"]["runs"].size(), 2u) << e;

  // The same from the data dir, once the node is gone: the hint keeps it.
  node->signal(SIGTERM);
  ASSERT_EQ(node->wait(15s), 0) << node->err();
  node.reset();
  auto local = [&](const std::vector<std::string>& a) { return troupe(a); };
  std::tie(seen, hints) = follow_list_hints(
    {"list", "--data-dir", data, "--workflow", "quick", "--limit", "2"}, ids,
    local);
  EXPECT_EQ(seen, ids);
  EXPECT_EQ(hints.size(), 1u);
  for (auto& h : hints)
    EXPECT_TRUE(contains(h, "more runs: troupe list --data-dir " + data
                              + " --workflow quick --limit 2 --after "))
      << h;
  auto r = troupe({"list", "--data-dir", data, "--after", "bogus"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_FALSE(contains(r.out, "no runs")) << r.out;
  EXPECT_TRUE(contains(r.err, "troupe: list: --after 'bogus' is not a cursor"))
    << r.err;
  r = troupe({"list", "--data-dir", data, "--limit", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

TEST_F(Node, EveryCommandOnItsDataDirOrPortExitsThreeAndNamesTheHolder) {
  start_node();
  auto holder = "is in use by a node (`troupe node start`, pid "
                + std::to_string(node->pid()) + ", control " + address() + ")";
  auto hello
    = (std::filesystem::path{TROUPE_SOURCE_DIR} / "examples" / "hello.yaml")
        .string();
  const std::map<std::string, std::pair<std::vector<std::string>, std::string>>
    commands
    = {{"status", {{"status", "r"}, "troupe --node " + address() + " status"}},
       {"list", {{"list"}, "troupe --node " + address() + " list"}},
       {"history", {{"history", "r"}, "troupe --node " + address()}},
       {"logs", {{"logs", "r"}, "troupe --node " + address()}},
       {"breakers", {{"breakers"}, "troupe --node " + address() + " shell"}},
       {"cancel", {{"cancel", "r"}, "troupe --node " + address() + " cancel"}},
       {"gc", {{"gc", "--older-than", "0s"}, "troupe gc --node " + address()}},
       {"run", {{"run", hello}, "troupe --node " + address() + " submit FILE"}},
       {"node start",
        {{"node", "start", "--listen", "127.0.0.1:0", "--http", ""},
         "stop that node first"}}};
  for (auto& [name, c] : commands) {
    auto a = c.first;
    a.insert(a.end(), {"--data-dir", data});
    auto r = cli(a);
    EXPECT_EQ(r.exit_code, 3) << name << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "troupe: " + name + ": data dir '" + data + "' "
                                  + holder))
      << name << ": " << r.err;
    EXPECT_TRUE(contains(r.err, c.second)) << name << ": " << r.err;
  }
  // The ports it listens on are taken: exit 3 as well.
  auto other = (dir.path() / "other").string();
  auto r = cli({"node", "start", "--data-dir", other, "--listen", address(),
                "--http", ""});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "(control.listen); another process listens "
                              "there: stop it, or give another --listen"))
    << r.err;
  r = cli({"node", "start", "--data-dir", other, "--listen", "127.0.0.1:0",
           "--http", "127.0.0.1:" + std::to_string(http_port)});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "(http.listen); another process listens "
                              "there: stop it, or give another --http"))
    << r.err;
  // The node went on.
  EXPECT_EQ(cli({"list"}).exit_code, 0);
}

TEST_F(Node, SigtermTellsEveryClientAnswersWhatWaitsAndTakesNoSubmission) {
  start_node();
  auto id = submit(sleeper("30s"));
  ASSERT_TRUE(wait_until([&] { return state_of(id) == "running"; }, 10s));
  raw watcher{control_port, token("viewer")};
  ASSERT_TRUE(watcher.c.send({{"t", "watch"}, {"id", 5}, {"run_id", id}}));
  auto first = watcher.c.receive(10s);
  ASSERT_TRUE(first);
  EXPECT_EQ((*first)["body"]["type"], "watching") << first->dump();
  raw submitter{control_port, token("operator")};
  // `troupe watch` of the same run.
  auto cli_watch = cli_in_background({"watch", id}, token("viewer"));
  ASSERT_TRUE(
    wait_until([&] { return contains(cli_watch->err(), "timer_set"); }, 10s))
    << cli_watch->err();
  node->signal(SIGTERM);
  std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(submitter.c.send({{"t", "submit"},
                                {"id", 9},
                                {"workflow", "name: quick\nnodes:\n  a: "
                                             "{kind: noop}\n"}}));
  ASSERT_TRUE(submitter.c.send({{"t", "ping"}, {"id", 10}}));
  // The watcher hears that the node stops, and its watch ends with
  // `draining` (the run goes on at the next start).
  bool notice = false;
  json ended;
  for (int i = 0; i < 1000; ++i) {
    auto m = watcher.c.receive(5s);
    if (!m)
      break;
    if ((*m)["t"] == "draining")
      notice = true;
    else if ((*m)["t"] != "event") {
      ended = *m;
      break;
    }
  }
  EXPECT_TRUE(notice);
  EXPECT_EQ(ended.value("id", 0), 5) << ended.dump();
  EXPECT_EQ(ended.value("code", ""), "draining") << ended.dump();
  EXPECT_TRUE(watcher.c.closed_within(5s));
  // The submission sent just after SIGTERM is answered: refused with
  // `draining`, or (if it came before the node began to stop) taken.
  std::optional<json> answer, pong;
  for (int i = 0; i < 10 && !(answer && pong); ++i) {
    auto m = submitter.c.receive(5s);
    if (!m)
      break;
    if (m->value("id", 0) == 9)
      answer = *m;
    else if (m->value("id", 0) == 10)
      pong = *m;
  }
  ASSERT_TRUE(answer) << "no answer before the node closed the connection";
  ASSERT_TRUE(pong) << "no answer to the ping";
  bool taken = (*answer)["t"] == "reply";
  if (!taken) {
    EXPECT_EQ((*answer)["code"], "draining") << answer->dump();
    // A ping after the refused submission says why, as GET /ready does.
    EXPECT_EQ((*pong)["body"]["ready"], false) << pong->dump();
    EXPECT_EQ((*pong)["body"]["status"], "draining") << pong->dump();
  }
  EXPECT_TRUE(submitter.c.closed_within(5s));
  // The command says why its watch ended and how to go on: exit 3.
  EXPECT_EQ(cli_watch->wait(10s), 3) << cli_watch->err();
  EXPECT_TRUE(contains(cli_watch->err(), "shutting down")) << cli_watch->err();
  EXPECT_TRUE(contains(cli_watch->err(), "troupe watch " + id))
    << cli_watch->err();
  ASSERT_EQ(node->wait(15s), 0) << node->err();
  node.reset();
  // What the answer said is what the node did.
  start_node();
  auto page = json::parse(cli({"list", "--json"}, token("viewer")).out);
  EXPECT_EQ(page["runs"].size(), taken ? 2u : 1u) << page.dump();
}

TEST_F(Node, RequestsNeedIdsAndAStreamingIdIsNotTakenAgain) {
  start_node();
  auto id = submit(sleeper());
  raw r{control_port, token("viewer")};
  ASSERT_TRUE(r.c.send({{"t", "ping"}}));
  auto m = r.c.receive(5s);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["id"], 0) << m->dump();
  EXPECT_EQ((*m)["code"], "bad_request") << m->dump();
  ASSERT_TRUE(r.c.send({{"t", "watch"}, {"id", 5}, {"run_id", id}}));
  m = r.c.receive(5s);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["t"], "event");
  ASSERT_TRUE(r.c.send({{"t", "status"}, {"id", 5}, {"run_id", id}}));
  json refused;
  for (int i = 0; i < 100; ++i) {
    m = r.c.receive(5s);
    ASSERT_TRUE(m);
    if ((*m)["t"] != "event") {
      refused = *m;
      break;
    }
  }
  EXPECT_EQ(refused.value("id", 99), 0) << refused.dump();
  EXPECT_EQ(refused.value("code", ""), "bad_request") << refused.dump();
  EXPECT_EQ(refused.value("id_in_use", 0), 5) << refused.dump();
  // The connection is kept.
  EXPECT_EQ(r.call({{"t", "ping"}})["t"], "reply");
}

TEST_F(Node, SilentConnectionsAreClosedAndOneAddressCannotTakeThemAll) {
  start_node({"--set", "control.hello_timeout=500ms", "--set",
              "control.max_connections_per_address=3"});
  frame_client a{control_port};
  frame_client b{control_port};
  frame_client c{control_port};
  ASSERT_TRUE(a.connected() && b.connected() && c.connected());
  frame_client d{control_port};
  EXPECT_TRUE(d.closed_within(3s));
  // The node's log says why (its lines may come a moment later).
  EXPECT_TRUE(wait_until(
    [&] {
      return contains(node->err(), "control.max_connections_per_address");
    },
    5s))
    << node->err();
  // None said hello: each is closed after the hello timeout, not the idle
  // timeout, and the address is served again.
  EXPECT_TRUE(a.closed_within(5s));
  EXPECT_TRUE(b.closed_within(5s));
  EXPECT_TRUE(c.closed_within(5s));
  EXPECT_TRUE(wait_until(
    [&] {
      return contains(node->err(), "no hello within control.hello_timeout");
    },
    5s))
    << node->err();
  EXPECT_EQ(cli({"list"}, token("viewer")).exit_code, 0);
}

TEST_F(Node, ReplayedEventsRetryAndBulkCancelAnswerAsDocumented) {
  start_node();
  auto done = submit(workflow("quick", "nodes:\n  a: {kind: noop}\n"));
  ASSERT_TRUE(wait_until([&] { return state_of(done) == "completed"; }, 10s));
  raw r{control_port, token("operator")};
  // A watch of a finished run replays its journal: every event names its
  // run, as live ones do; `watching` is event 0, the journal counts from 1.
  ASSERT_TRUE(r.c.send({{"t", "watch"}, {"id", 3}, {"run_id", done}}));
  int64_t seq = -1;
  bool ended = false;
  for (int i = 0; i < 100 && !ended; ++i) {
    auto m = r.c.receive(5s);
    ASSERT_TRUE(m);
    if ((*m)["t"] == "end") {
      ended = true;
      break;
    }
    ASSERT_EQ((*m)["t"], "event") << m->dump();
    auto& body = (*m)["body"];
    EXPECT_EQ(body.value("run_id", ""), done) << body.dump();
    EXPECT_EQ(body["seq"], seq + 1) << body.dump();
    seq = body["seq"];
  }
  EXPECT_TRUE(ended);
  EXPECT_GE(seq, 3);
  // Retry of a run that ended: a conflict naming its state, as for cancel.
  auto a = r.call({{"t", "retry"}, {"run_id", done}, {"node", "a"}});
  EXPECT_EQ(a["code"], "conflict") << a.dump();
  EXPECT_EQ(a["state"], "completed") << a.dump();
  a = r.call({{"t", "retry"}, {"run_id", "no-such-run"}, {"node", "a"}});
  EXPECT_EQ(a["code"], "not_found") << a.dump();
  // A bulk cancel says which runs it means.
  a = r.call({{"t", "cancel_many"}, {"workflow", "quick"}});
  EXPECT_EQ(a["code"], "bad_request") << a.dump();
  EXPECT_TRUE(contains(a.value("message", ""), "'state'")) << a.dump();
  auto bulk
    = cli({"cancel", "--workflow", "quick", "--yes"}, token("operator"));
  EXPECT_EQ(bulk.exit_code, 2) << bulk.err;
  EXPECT_TRUE(contains(bulk.err, "--state")) << bulk.err;
  // An empty frame is a bad frame; the connection is kept.
  ASSERT_TRUE(r.c.send_raw(std::string(4, '\0')));
  auto m = r.c.receive(5s);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["code"], "bad_frame") << m->dump();
  EXPECT_EQ(r.call({{"t", "ping"}})["t"], "reply");
}

TEST_F(Node, PartitionsOfANodeAloneSayItLeadsThemAllAndBadNumbersExitTwo) {
  start_node();
  auto r = cli({"partitions"}, token("viewer"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "runs alone")) << r.out;
  r = cli({"--json", "partitions"}, token("viewer"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = json::parse(r.out);
  EXPECT_EQ(j["cluster"], "");
  EXPECT_TRUE(j["partitions"].empty()) << j;
  // A partition that is no number is refused before the node is asked.
  r = cli({"partitions", "x7"}, token("viewer"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "'x7'")) << r.err;
  r = cli({"shell", "-c", "inspect partition -1"}, token("viewer"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "'-1'")) << r.err;
  // A node alone has no partition records to show one of.
  r = cli({"partitions", "3"}, token("viewer"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "partition 3")) << r.err;
  // Nor a cluster to leave.
  r = cli({"leave"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "runs alone")) << r.err;
}

// http nodes through the real `troupe run`: a local test server on
// 127.0.0.1 scripts the service (failures, Retry-After, slowness, silence),
// records what the node sent, and the journal tells what the node made of it.

#include "tests/support/http_server.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/troupe_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <map>
#include <set>

using namespace std::chrono_literals;
using troupe::test::background_process;
using troupe::test::closed_port;
using troupe::test::http_reply;
using troupe::test::http_seen_request;
using troupe::test::http_server;
using troupe::test::process_options;
using troupe::test::process_result;
using troupe::test::run_process;
using troupe::test::temp_dir;
using troupe::test::wait_until;
using json = nlohmann::json;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct HttpNode : troupe::test::troupe_fixture {

  /// Writes a workflow of one http node `call` with `params` (YAML lines
  /// indented by four spaces) and outputs status and body.
  std::string workflow(const std::string& name, const std::string& params,
                       const std::string& inputs = "") {
    auto text = "name: " + name + "\n" + inputs + "nodes:\n  call:\n"
                + "    kind: http\n" + params
                + "outputs:\n"
                  "  status: \"{{ nodes.call.output.status }}\"\n"
                  "  body: \"{{ nodes.call.output.body }}\"\n";
    return dir.write(name + ".yaml", text).string();
  }

  /// The journal of `run_id`, as events.
  json history(const std::string& run_id) {
    auto h = troupe({"history", run_id, "--data-dir", data, "--json"});
    EXPECT_EQ(h.exit_code, 0) << h.err;
    auto parsed = json::parse(h.out, nullptr, false);
    if (parsed.is_discarded() || !parsed.contains("events"))
      return json::array();
    return parsed["events"];
  }

  /// The error kinds of the attempt_failed events of node `call`.
  std::vector<std::string> failed_attempts(const std::string& run_id) {
    std::vector<std::string> kinds;
    for (auto& e : history(run_id))
      if (e["type"] == "attempt_failed" && e["node"] == "call")
        kinds.push_back(e.value("error_kind", ""));
    return kinds;
  }
};

/// The run id in "... run ID ..." on stderr of a failed run.
std::string run_id_in(const std::string& err) {
  auto at = err.find("run ");
  if (at == std::string::npos)
    return "";
  at += 4;
  return err.substr(at, err.find(' ', at) - at);
}

/// The JSON report `troupe run --json` prints.
json report_of(const process_result& r) {
  auto report = json::parse(r.out, nullptr, false);
  return report.is_discarded() ? json::object() : report;
}

} // namespace

TEST_F(HttpNode, FlakyServiceIsRetriedUnderOneIdempotencyKey) {
  http_server server;
  server.script("/flaky", {http_reply::text(503, "busy"),
                           http_reply::text(503, "still busy"),
                           http_reply::json(200, R"({"ok": true, "n": 3})")});
  auto wf = workflow("flaky", "    url: \"" + server.url("/flaky")
                                + "\"\n"
                                  "    retry: {max_attempts: 3, "
                                  "initial_backoff: 10ms, jitter: none}\n");
  auto r = troupe({"run", wf, "--data-dir", data, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto report = report_of(r);
  EXPECT_EQ(report["state"], "completed") << r.out;
  EXPECT_EQ(report["outputs"]["status"], 200) << r.out;
  EXPECT_EQ(report["outputs"]["body"], (json{{"ok", true}, {"n", 3}})) << r.out;
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 3u);
  std::string run_id = report["run_id"];
  for (auto& s : seen) {
    EXPECT_EQ(s.method, "GET");
    EXPECT_EQ(s.target, "/flaky");
    EXPECT_EQ(s.count("Idempotency-Key"), 1u);
    EXPECT_EQ(s.header("Idempotency-Key"), run_id + "-call");
  }
  EXPECT_EQ(failed_attempts(run_id),
            (std::vector<std::string>{"http_5xx", "http_5xx"}));
  // The recorded output has the response headers, names lower-cased.
  json output;
  for (auto& e : history(run_id))
    if (e["type"] == "node_completed" && e["node"] == "call")
      output = json::parse(e["data"].get<std::string>(), nullptr, false);
  ASSERT_TRUE(output.is_object()) << output;
  EXPECT_EQ(output["headers"]["content-type"], "application/json") << output;
  EXPECT_FALSE(output["headers"].contains("Content-Type")) << output;
}

TEST_F(HttpNode, RetryAfterOf429IsTheLeastWaitBeforeTheRetry) {
  http_server server{[](const http_seen_request& s) {
    if (s.index == 0) {
      auto r = http_reply::text(429, "slow down");
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    return http_reply::json(200, R"({"done": true})");
  }};
  auto wf = workflow("limited", "    url: \"" + server.url("/limited")
                                  + "\"\n"
                                    "    retry: {max_attempts: 3, "
                                    "initial_backoff: 10ms, jitter: none}\n");
  auto r = troupe({"run", wf, "--data-dir", data, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(report_of(r)["outputs"]["body"], (json{{"done", true}})) << r.out;
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 2u);
  auto gap = seen[1].at - seen[0].at;
  EXPECT_GE(gap, 900ms);
  EXPECT_LT(gap, 15s);
  EXPECT_EQ(failed_attempts(report_of(r)["run_id"]),
            (std::vector<std::string>{"http_429"}));
}

TEST_F(HttpNode, NotFoundIsNotRetried) {
  http_server server;
  server.script("/missing", {http_reply::text(404, "no such order")});
  auto wf = workflow("missing", "    url: \"" + server.url("/missing")
                                  + "\"\n"
                                    "    retry: {max_attempts: 5, "
                                    "initial_backoff: 10ms}\n");
  auto r = troupe({"run", wf, "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(server.request_count(), 1u);
  EXPECT_TRUE(contains(r.err, "node 'call'")) << r.err;
  EXPECT_TRUE(contains(r.err, "HTTP 404")) << r.err;
  EXPECT_EQ(failed_attempts(run_id_in(r.err)),
            (std::vector<std::string>{"http_4xx"}))
    << r.err;
}

TEST_F(HttpNode, PostSendsItsBodyHeadersEncodedQueryAndKey) {
  http_server server;
  server.script("/orders", {http_reply::json(201, R"({"id": "o-1"})")});
  auto wf = workflow("post",
                     "    method: POST\n"
                     "    url: \""
                       + server.url("/orders")
                       + "\"\n"
                         "    headers: {X-Trace: trace-7}\n"
                         "    query: {q: \"a b&c=d\", page: \"2\"}\n"
                         "    body: {item: book, qty: 2, for: \"{{ inputs.id "
                         "}}\"}\n"
                         "    idempotency_key: \"order-{{ inputs.id }}\"\n",
                     "inputs: {id: {type: string, required: true}}\n");
  auto r
    = troupe({"run", wf, "--data-dir", data, "--json", "--input", "id=42"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto report = report_of(r);
  EXPECT_EQ(report["outputs"]["status"], 201) << r.out;
  EXPECT_EQ(report["outputs"]["body"], (json{{"id", "o-1"}})) << r.out;
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  const auto& s = seen[0];
  EXPECT_EQ(s.method, "POST");
  EXPECT_EQ(s.path(), "/orders");
  // Each parameter encoded; their order is not part of the contract.
  auto query = s.target.substr(s.target.find('?') + 1);
  std::set<std::string> params;
  for (size_t at = 0; at <= query.size();) {
    auto amp = std::min(query.find('&', at), query.size());
    params.insert(query.substr(at, amp - at));
    at = amp + 1;
  }
  EXPECT_EQ(params, (std::set<std::string>{"page=2", "q=a%20b%26c%3Dd"}))
    << s.target;
  EXPECT_EQ(s.header("Content-Type"), "application/json");
  EXPECT_EQ(s.header("X-Trace"), "trace-7");
  EXPECT_EQ(s.header("Idempotency-Key"), "order-42");
  EXPECT_EQ(json::parse(s.body, nullptr, false),
            (json{{"item", "book"}, {"qty", 2}, {"for", "42"}}))
    << s.body;
}

TEST_F(HttpNode, ResponseBiggerThanTheCapFailsWithoutRetry) {
  http_server server;
  server.script("/big", {http_reply::text(200, std::string(5000, 'x'))});
  auto wf = workflow("big", "    url: \"" + server.url("/big")
                              + "\"\n"
                                "    max_response_bytes: 1000\n"
                                "    retry: {max_attempts: 3, "
                                "initial_backoff: 10ms}\n");
  auto r = troupe({"run", wf, "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(server.request_count(), 1u);
  EXPECT_TRUE(contains(r.err, "node 'call'")) << r.err;
  EXPECT_TRUE(contains(r.err, "response_too_large")) << r.err;
  EXPECT_EQ(failed_attempts(run_id_in(r.err)),
            (std::vector<std::string>{"response_too_large"}))
    << r.err;
}

TEST_F(HttpNode, SilentServiceTimesOutEachAttempt) {
  http_server server{[](const http_seen_request&) {
    http_reply r;
    r.never_answer = true;
    return r;
  }};
  auto wf = workflow("silent", "    url: \"" + server.url("/silent")
                                 + "\"\n"
                                   "    timeout: 300ms\n"
                                   "    retry: {max_attempts: 2, "
                                   "initial_backoff: 10ms}\n");
  auto started = std::chrono::steady_clock::now();
  auto r = troupe({"run", wf, "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "timed out")) << r.err;
  EXPECT_TRUE(contains(r.err, "node 'call': gave up after 2 attempts"))
    << r.err;
  // The node's timeout ended each request, not the 30s request_timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - started, 20s);
  EXPECT_TRUE(server.wait_for_requests(2, 5s));
  EXPECT_EQ(server.request_count(), 2u);
  EXPECT_EQ(failed_attempts(run_id_in(r.err)),
            (std::vector<std::string>{"timeout", "timeout"}))
    << r.err;
}

TEST_F(HttpNode, TimedOutAttemptAbortsItsRequest) {
  http_server server{[](const http_seen_request&) {
    http_reply r;
    r.never_answer = true;
    return r;
  }};
  // After the timeout the run goes on in the fallback, so the process is
  // still there when the connection must have been closed.
  std::string text = "name: abort\nnodes:\n"
                     "  call:\n"
                     "    kind: http\n"
                     "    url: \""
                     + server.url("/silent")
                     + "\"\n"
                       "    timeout: 300ms\n"
                       "    retry: {max_attempts: 1}\n"
                       "    fallback: rest\n"
                       "  rest: {kind: sleep, duration: 3s}\n";
  auto wf = dir.write("abort.yaml", text).string();
  auto p = start({"run", wf, "--data-dir", data});
  ASSERT_TRUE(server.wait_for_requests(1, 30s)) << p->err();
  EXPECT_TRUE(
    wait_until([&] { return server.open_connections() == 0; }, 2500ms));
  EXPECT_EQ(p->wait(0ms), std::nullopt) << p->err();
  EXPECT_EQ(p->wait(30s), 0) << p->err();
  EXPECT_EQ(server.request_count(), 1u);
}

TEST_F(HttpNode, ConnectionRefusedIsRetriedThenFails) {
  auto port = closed_port();
  auto wf
    = workflow("refused", "    url: \"http://127.0.0.1:" + std::to_string(port)
                            + "/x\"\n"
                              "    retry: {max_attempts: 2, "
                              "initial_backoff: 10ms}\n");
  auto r = troupe({"run", wf, "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "node 'call': gave up after 2 attempts"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "Connection refused")) << r.err;
  auto run_id = run_id_in(r.err);
  EXPECT_EQ(failed_attempts(run_id),
            (std::vector<std::string>{"connect", "connect"}))
    << r.err;
  auto h = troupe({"history", run_id, "--data-dir", data});
  EXPECT_TRUE(contains(h.out, "call: FAILED (connect): gave up after 2 "
                              "attempts"))
    << h.out;
}

TEST_F(HttpNode, KillDuringARequestResumesUnderTheSameIdempotencyKey) {
  http_server server{[](const http_seen_request&) {
    auto r = http_reply::json(200, R"({"paid": true})");
    r.delay = 2s;
    return r;
  }};
  auto wf = workflow("pay", "    method: POST\n    url: \"" + server.url("/pay")
                              + "\"\n    body: {amount: 10}\n");
  auto p = start({"run", wf, "--data-dir", data});
  ASSERT_TRUE(server.wait_for_requests(1, 30s)) << p->err();
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
  auto r = troupe({"run", "--resume", "--data-dir", data});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto report = json::parse(r.out.substr(0, r.out.find('\n')), nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << r.out;
  EXPECT_EQ(report["state"], "completed") << r.out;
  EXPECT_EQ(report["outputs"]["body"], (json{{"paid", true}})) << r.out;
  auto seen = server.requests();
  ASSERT_GE(seen.size(), 1u);
  ASSERT_LE(seen.size(), 2u);
  std::string run_id = report["run_id"];
  for (auto& s : seen)
    EXPECT_EQ(s.header("Idempotency-Key"), run_id + "-call");
}

TEST_F(HttpNode, BadUrlOrMethodIsRefusedAtValidation) {
  auto wf = workflow("ftp", "    url: ftp://x\n");
  auto r = troupe({"run", wf, "--data-dir", data});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "nodes.call.url")) << r.err;
  EXPECT_TRUE(contains(r.err, "must start with http:// or https://")) << r.err;
  wf = workflow("fetch", "    url: http://127.0.0.1:1/\n    method: FETCH\n");
  r = troupe({"run", wf, "--data-dir", data});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "nodes.call.method")) << r.err;
}

TEST_F(HttpNode, BenchHttp10StepsEachGetTheEchoUrlGiven) {
  // Figures only: the speed is the benchmark's to show. What is checked is
  // the work: every step of every run (a warm-up run included) is one GET
  // of the URL given, with ?i=K for step K, and every run completes.
  http_server server{[](const http_seen_request& s) {
    return http_reply::json(
      200, json{{"ok", true}, {"n", s.index + 1}, {"path", s.target}}.dump());
  }};
  auto r = troupe({"bench", "http10", "--durability", "process", "--n", "6",
                   "--concurrency", "3", "--data-dir", dir.path().string(),
                   "--echo-url", server.url("/step"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j.value("workload", ""), "http10") << j;
  EXPECT_EQ(j.value("ok", 0), 6) << j;
  EXPECT_EQ(j.value("failed", -1), 0) << j;
  EXPECT_EQ(j.value("steps_per_run", 0), 10) << j;
  EXPECT_GT(j.value("steps_per_s", 0.0), 0.0) << j;
  // 6 runs and a warm-up of one, 10 steps each, none failed: 70 requests.
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 70u);
  std::map<std::string, int> per_target;
  for (auto& s : seen) {
    EXPECT_EQ(s.method, "GET");
    ++per_target[s.target];
  }
  ASSERT_EQ(per_target.size(), 10u);
  for (int i = 1; i <= 10; ++i)
    EXPECT_EQ(per_target["/step?i=" + std::to_string(i)], 7) << i;
  // Without --echo-url the bench answers the steps itself.
  r = troupe({"bench", "http10", "--durability", "process", "--n", "4",
              "--data-dir", dir.path().string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = json::parse(r.out, nullptr, false);
  EXPECT_EQ(j.value("ok", 0), 4) << r.out;
  EXPECT_EQ(j.value("failed", -1), 0) << r.out;
  EXPECT_EQ(server.request_count(), 70u);
  // A URL that cannot be one is refused before anything runs.
  for (auto bad : {"ftp://127.0.0.1/step", "http://", "http:///step",
                   "http://127.0.0.1/a b", "http://127.0.0.1/{{ x }}"}) {
    r = troupe({"bench", "http10", "--echo-url", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "--echo-url")) << bad << ": " << r.err;
  }
}

#pragma once

// A test fixture for end-to-end tests of `troupe node start`: a real node on
// 127.0.0.1 with ports it picks itself, auth on with a known secret, tokens
// for each role, the real CLI pointed at the node, and plain HTTP GETs of its
// endpoint. The target defines TROUPE_BINARY and links troupe_runtime_auth.

#include "runtime/auth/token.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"
#include "tests/support/troupe_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <utility>
#include <vector>

namespace troupe::test {

struct node_process_fixture : troupe_fixture {
  /// The auth secret of every node the fixture starts.
  static constexpr const char* secret
    = "test-secret-0123456789abcdef-0123456789";

  std::unique_ptr<background_process> node;
  uint16_t control_port = 0;
  /// 0 until a node with an HTTP endpoint has said where it listens.
  uint16_t http_port = 0;
  /// How long every process the fixture starts may run.
  std::chrono::milliseconds time_limit{60'000};
  /// How long launch_node and start_node wait for the node.
  std::chrono::milliseconds start_limit{30'000};

  /// A token for `role` ("viewer", "operator" or "admin"), valid for an hour.
  std::string token(const std::string& role,
                    const std::string& subject = "tester") {
    return runtime::auth::issue_token(secret, *runtime::auth::parse_role(role),
                                      subject, std::chrono::hours{1},
                                      runtime::auth::token_clock::now());
  }

  /// The fixture's options with the auth secret set, and no node or token
  /// inherited from the environment.
  process_options opts() override {
    auto o = troupe_fixture::opts();
    o.env["TROUPE_AUTH_SECRET"] = std::string{secret};
    o.env["TROUPE_NODE"] = std::nullopt;
    o.env["TROUPE_TOKEN"] = std::nullopt;
    o.time_limit = time_limit;
    return o;
  }

  /// Starts `troupe node start` on the data dir, control port `port` (0:
  /// one it picks) and an HTTP endpoint on a port it picks, with `extra`
  /// arguments, and waits until its control port listens (not until it is
  /// ready: it may still be recovering).
  void launch_node(std::vector<std::string> extra = {}, uint16_t port = 0) {
    std::vector<std::string> a
      = {"node",   "start",      "--data-dir",
         data,     "--listen",   "127.0.0.1:" + std::to_string(port),
         "--http", "127.0.0.1:0"};
    a.insert(a.end(), extra.begin(), extra.end());
    auto n = std::to_string(spawned++);
    node = std::make_unique<background_process>(
      args(a), opts(), (dir.path() / ("node-out" + n)).string(),
      (dir.path() / ("node-err" + n)).string());
    std::smatch m;
    std::string err;
    ASSERT_TRUE(wait_until(
      [&] {
        err = node->err();
        return std::regex_search(err, m,
                                 std::regex{"listening on 127.0.0.1:(\\d+)"});
      },
      start_limit))
      << node->err();
    control_port = static_cast<uint16_t>(std::stoi(m[1]));
    // The endpoint says where it listens before the control port does.
    http_port = 0;
    if (std::regex_search(err, m,
                          std::regex{"https?://127.0.0.1:(\\d+)/metrics"}))
      http_port = static_cast<uint16_t>(std::stoi(m[1]));
  }

  /// Like launch_node, and waits until the node is ready (it has resumed its
  /// unfinished runs).
  void start_node(std::vector<std::string> extra = {}, uint16_t port = 0) {
    launch_node(std::move(extra), port);
    if (::testing::Test::HasFatalFailure())
      return;
    ASSERT_TRUE(wait_until([&] { return has(node->err(), "ready: resumed"); },
                           start_limit))
      << node->err();
  }

  /// The node's control address.
  std::string address() const {
    return "127.0.0.1:" + std::to_string(control_port);
  }

  /// Runs a CLI command against the node with `tok` (default: an admin's).
  process_result cli(std::vector<std::string> rest,
                     const std::string& tok = "") {
    auto r = run_process(args(std::move(rest)), cli_opts(tok));
    EXPECT_FALSE(r.timed_out);
    return r;
  }

  /// The same in the background.
  std::unique_ptr<background_process>
  cli_in_background(std::vector<std::string> rest,
                    const std::string& tok = "") {
    auto n = std::to_string(spawned++);
    return std::make_unique<background_process>(
      args(std::move(rest)), cli_opts(tok),
      (dir.path() / ("cli-out" + n)).string(),
      (dir.path() / ("cli-err" + n)).string());
  }

  /// Writes workflow `name` with `body` (the lines after its name) to the
  /// temp dir; returns its path.
  std::string workflow(const std::string& name, const std::string& body) {
    return dir.write(name + ".yaml", "name: " + name + "\n" + body).string();
  }

  /// A workflow that sleeps `nap` between two noops, then outputs done: yes.
  std::string sleeper(const std::string& nap = "30s") {
    return workflow("sleeper", "nodes:\n  a: {kind: noop}\n  nap: {kind: "
                               "sleep, duration: "
                                 + nap
                                 + ", after: [a]}\n  b: {kind: noop, after: "
                                   "[nap]}\noutputs:\n  done: yes\n");
  }

  /// Submits `file` through the CLI; returns the run id.
  std::string submit(const std::string& file) {
    auto r = cli({"submit", file});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto id = r.out.substr(0, r.out.find('\n'));
    EXPECT_EQ(id.size(), 21u) << r.out;
    return id;
  }

  /// The state of `run` as `troupe status` says it, or "?".
  std::string state_of(const std::string& run) {
    auto r = cli({"status", run, "--json"}, token("viewer"));
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_discarded() ? std::string{"?"} : j.value("state", "?");
  }

  /// Stops a node still running with SIGTERM.
  void TearDown() override {
    if (node) {
      node->signal(SIGTERM);
      node->wait(std::chrono::seconds{30});
    }
  }

 private:
  static bool has(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
  }

  process_options cli_opts(const std::string& tok) {
    auto o = opts();
    o.env["TROUPE_NODE"] = address();
    o.env["TROUPE_TOKEN"] = tok.empty() ? token("admin") : tok;
    return o;
  }
};

} // namespace troupe::test

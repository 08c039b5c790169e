// Runs the real `troupe` binary as a child process and checks its exit codes
// and messages.

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

using troupe::test::background_process;
using troupe::test::process_options;
using troupe::test::process_result;
using troupe::test::run_process;
using troupe::test::temp_dir;
using troupe::test::wait_until;
using namespace std::chrono_literals;

namespace {

const std::string examples = std::string{TROUPE_SOURCE_DIR} + "/examples/";

struct Cli : ::testing::Test {
  temp_dir dir;

  /// Runs troupe in the temp folder with a config dir of its own and none of
  /// the caller's TROUPE_* variables.
  process_result troupe(std::vector<std::string> args,
                        std::map<std::string, std::optional<std::string>> env
                        = {}) {
    args.insert(args.begin(), TROUPE_BINARY);
    process_options opts;
    opts.cwd = dir.path().string();
    opts.env = {{"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
                {"TROUPE_ENV", std::nullopt},
                {"TROUPE_AUTH_SECRET", std::nullopt}};
    for (auto& [k, v] : env)
      opts.env[k] = v;
    auto r = run_process(args, opts);
    EXPECT_FALSE(r.timed_out);
    return r;
  }
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

} // namespace

TEST_F(Cli, ValidatesTheExamples) {
  auto r = troupe({"validate", examples + "hello.yaml",
                   examples + "retries.yaml", examples + "fanout.json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "hello.yaml: valid (workflow 'hello', 3 nodes)"))
    << r.out;
  EXPECT_TRUE(contains(r.out, "fanout.json: valid")) << r.out;
}

TEST_F(Cli, ReportsEveryErrorWithFileLinePathAndExitsTwo) {
  auto bad = dir.write("bad.yaml", "name: bad\nnodes:\n  a:\n    kind: sleep\n"
                                   "    duration: 10\n  b:\n    kind: noop\n"
                                   "    after: [c]\n");
  auto r = troupe({"validate", bad.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, bad.string() + ":5:15: nodes.a.duration: "))
    << r.err;
  EXPECT_TRUE(contains(r.err, bad.string()
                                + ":8:13: nodes.b.after[0]: node "
                                  "'b' runs after unknown node 'c'"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "bad.yaml: 2 errors")) << r.err;
  // One good and one bad file: still 2, and the good one is reported valid.
  r = troupe({"validate", examples + "hello.yaml", bad.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.out, "hello.yaml: valid"));
}

TEST_F(Cli, JsonOutputIsMachineReadable) {
  auto bad = dir.write("bad.json", "{\"name\": \"x\", \"nodes\": {\"a\": "
                                   "{\"kind\": \"nop\"}}}");
  auto r
    = troupe({"validate", "--json", bad.string(), examples + "hello.yaml"});
  EXPECT_EQ(r.exit_code, 2);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["valid"], false);
  ASSERT_EQ(j["files"].size(), 2u);
  auto& e = j["files"][0]["errors"][0];
  EXPECT_EQ(e["path"], "nodes.a.kind");
  EXPECT_EQ(e["code"], "unknown_kind");
  EXPECT_EQ(e["line"], 1);
  EXPECT_TRUE(contains(e["message"], "did you mean 'noop'?"));
  EXPECT_EQ(j["files"][1]["valid"], true);
  EXPECT_EQ(j["files"][1]["nodes"], 3);
}

TEST_F(Cli, HostileFilesGetAClearMessageNotACrash) {
  std::string hello_text;
  {
    std::ifstream in{examples + "hello.yaml"};
    hello_text.assign(std::istreambuf_iterator<char>{in}, {});
  }
  struct hostile {
    std::string name;
    std::string content;
    std::string message;
  };
  std::vector<hostile> files = {
    {"truncated.yaml", hello_text.substr(0, hello_text.find("Hello, {{") + 8),
     "syntax error"},
    {"truncated.json", "{\"name\": \"x\", \"nodes\": {\"a\": {\"ki",
     "syntax error"},
    {"binary.yaml",
     std::string("\x7f"
                 "ELF\x02\x01\x01\0\0\0",
                 10),
     "binary data"},
    {"latin1.yaml", "name: caf\xe9\n", "invalid UTF-8"},
    {"huge.yaml", "name: x\n" + std::string(11 << 20, '#'),
     "limited to 10 MiB"},
    {"empty.yaml", "", "the file is empty"},
    {"scalar.yaml", "42", "expected a mapping"},
  };
  for (auto& h : files) {
    auto path = dir.write(h.name, h.content);
    auto r = troupe({"validate", path.string()});
    EXPECT_EQ(r.exit_code, 2) << h.name << ": " << r.err;
    EXPECT_TRUE(contains(r.err, path.string() + ":"))
      << h.name << ": " << r.err;
    EXPECT_TRUE(contains(r.err, h.message)) << h.name << ": " << r.err;
    EXPECT_FALSE(contains(r.err, "terminate")) << r.err;
  }
  auto r = troupe({"validate", (dir.path() / "nope.yaml").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "nope.yaml: no such file")) << r.err;
}

TEST_F(Cli, BadFlagsExitTwoWithUsageHint) {
  auto r = troupe({"validate", "--frobnicate", examples + "hello.yaml"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--frobnicate")) << r.err;
  EXPECT_TRUE(contains(r.err, "troupe --help")) << r.err;
  r = troupe({});
  EXPECT_EQ(r.exit_code, 2);
  r = troupe({"fly"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "fly")) << r.err;
  r = troupe({"validate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "files")) << r.err;
  r = troupe({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "validate")) << r.out;
}

// `run FILE --resume` asks for two things at once: say so, not that one of
// them is missing.
TEST_F(Cli, RunRefusesAFileTogetherWithResume) {
  auto data = (dir.path() / "data").string();
  auto r
    = troupe({"run", examples + "hello.yaml", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "a workflow FILE and --resume cannot be "
                              "combined"))
    << r.err;
  EXPECT_FALSE(contains(r.err, "give a workflow FILE, or --resume")) << r.err;
  EXPECT_EQ(r.out, "");
  // Neither is missing the other way round.
  r = troupe({"run", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "give a workflow FILE, or --resume")) << r.err;
}

TEST_F(Cli, ConfigShowPrintsValuesSourcesAndMasksSecrets) {
  dir.write("config/default.toml", "[node]\nname = \"alpha\"\n");
  dir.write("config/development.toml", "[log]\nlevel = \"debug\"\n");
  auto extra = dir.write("extra.toml", "[storage]\ndurability = \"machine\"\n");
  auto r = troupe(
    {"config", "show", "--config", extra.string(), "--set", "log.format=json"},
    {{"TROUPE_AUTH_SECRET", "hunter2"},
     {"TROUPE_CONTROL_LISTEN", "127.0.0.1:9000"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.out, "hunter2"));
  EXPECT_TRUE(contains(r.out, "# environment: development")) << r.out;
  EXPECT_TRUE(contains(r.out, "name = \"alpha\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "default.toml:2")) << r.out;
  EXPECT_TRUE(contains(r.out, "level = \"debug\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "development.toml:2")) << r.out;
  EXPECT_TRUE(contains(r.out, "durability = \"machine\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "extra.toml:2")) << r.out;
  EXPECT_TRUE(contains(r.out, "listen = \"127.0.0.1:9000\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "# env TROUPE_CONTROL_LISTEN")) << r.out;
  EXPECT_TRUE(contains(r.out, "format = \"json\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "# flag --set")) << r.out;
  EXPECT_TRUE(contains(r.out, "secret = \"********\"")) << r.out;
  r = troupe({"config", "show", "--json"}, {{"TROUPE_AUTH_SECRET", "hunter2"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["settings"]["auth.secret"]["value"], "********");
  EXPECT_EQ(j["settings"]["auth.secret"]["source"], "env TROUPE_AUTH_SECRET");
  EXPECT_EQ(j["settings"]["node.data_dir"]["value"], "data");
}

TEST_F(Cli, BadConfigExitsTwoNamingEachProblem) {
  dir.write("config/default.toml", "[storage]\ndurability = \"fast\"\n"
                                   "[node]\nnmae = 1\n");
  auto r = troupe({"config", "show", "--set", "log.level=loud"},
                  {{"TROUPE_CONTROL_MAX_CONNECTIONS", "0"}});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "default.toml:2: storage.durability = \"fast\": "
                              "must be one of process, machine"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "default.toml:4: node.nmae: unknown key"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "environment TROUPE_CONTROL_MAX_CONNECTIONS: "
                              "control.max_connections = \"0\": must be from "
                              "1 to 100000"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "flag --set: log.level = \"loud\": must be one "
                              "of"))
    << r.err;
  EXPECT_EQ(r.out, "");
  dir.write("config/default.toml", "[node\n");
  r = troupe({"config", "show"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "default.toml: syntax error: line 1")) << r.err;
  r = troupe({"config", "show"}, {{"TROUPE_ENV", "staging"}});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "staging.toml: file does not exist")) << r.err;
  r = troupe({"config", "show", "--set", "novalue"});
  EXPECT_EQ(r.exit_code, 2);
}

TEST_F(Cli, ListsKindsAndConfigKeys) {
  auto r = troupe({"kinds", "--json"});
  ASSERT_EQ(r.exit_code, 0);
  auto j = nlohmann::json::parse(r.out);
  std::vector<std::string> names;
  for (auto& k : j)
    names.push_back(k["kind"]);
  EXPECT_EQ(names, (std::vector<std::string>{"exec", "fail", "http", "map",
                                             "noop", "sleep", "switch"}));
  r = troupe({"config", "keys"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "storage.durability")) << r.out;
  EXPECT_TRUE(contains(r.out, "process | machine")) << r.out;
}

TEST_F(Cli, BenchRunsEveryWorkloadAndPrintsItsFigures) {
  auto r = troupe({"bench", "seq10", "fan10", "exec10", "sleepers", "recover",
                   "idle", "--durability", "process", "--n", "20", "--data-dir",
                   dir.path().string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, nlohmann::json> by_workload;
  std::istringstream lines{r.out};
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    EXPECT_EQ(j.value("durability", ""), "process") << line;
    by_workload[j.value("workload", "")] = j;
  }
  ASSERT_EQ(by_workload.size(), 6u) << r.out;
  for (auto [name, steps] :
       {std::pair{"seq10", 10}, {"fan10", 11}, {"exec10", 10}}) {
    auto& j = by_workload[name];
    EXPECT_EQ(j.value("ok", 0), 20) << j;
    EXPECT_EQ(j.value("failed", -1), 0) << j;
    EXPECT_EQ(j.value("steps_per_run", 0), steps) << j;
    EXPECT_GT(j.value("steps_per_s", 0.0), 0.0) << j;
    EXPECT_LE(j.value("p50_ms", 0.0), j.value("p99_ms", 0.0)) << j;
    EXPECT_GT(j.value("peak_rss_mib", 0.0), 0.0) << j;
  }
  EXPECT_EQ(by_workload["sleepers"].value("parked", 0), 20);
  EXPECT_GT(by_workload["sleepers"].value("rss_mib", 0.0), 0.0);
  auto& rec = by_workload["recover"];
  EXPECT_EQ(rec.value("n", 0), 20) << rec;
  EXPECT_GT(rec.value("ready_s", 0.0), 0.0) << rec;
  EXPECT_GE(rec.value("resumed_s", 0.0), rec.value("ready_s", 1e9)) << rec;
  EXPECT_GT(by_workload["idle"].value("rss_mib", 0.0), 0.0);
}

TEST_F(Cli, BenchChainComparesOneLongChainWithTenShortOnes) {
  // Figures only: the speed itself is the benchmark's to show, not a test's.
  auto r = troupe({"bench", "chain", "--durability", "process", "--n", "300",
                   "--data-dir", dir.path().string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j.value("workload", ""), "chain") << j;
  EXPECT_EQ(j.value("n", 0), 300) << j;
  auto rounds = j.value("rounds", 0);
  EXPECT_GE(rounds, 1) << j;
  // Each round: ten short runs and one run of each length.
  EXPECT_EQ(j.value("ok", 0), rounds * 14) << j;
  EXPECT_EQ(j.value("failed", -1), 0) << j;
  std::vector<int> sizes;
  for (auto& c : j.value("chains", nlohmann::json::array())) {
    sizes.push_back(c.value("nodes", 0));
    EXPECT_GT(c.value("s", 0.0), 0.0) << j;
    EXPECT_GT(c.value("us_per_step", 0.0), 0.0) << j;
  }
  EXPECT_EQ(sizes, (std::vector<int>{30, 75, 150, 300})) << j;
  EXPECT_GT(j.value("one_run_s", 0.0), 0.0) << j;
  EXPECT_GT(j.value("ten_runs_s", 0.0), 0.0) << j;
  EXPECT_NEAR(j.value("ratio", 0.0),
              j.value("one_run_s", 0.0) / j.value("ten_runs_s", 1.0), 1e-6)
    << j;
  r = troupe({"bench", "chain", "--durability", "process", "--n", "300",
              "--data-dir", dir.path().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "chains of 30/75/150/300 nodes in")) << r.out;
  EXPECT_TRUE(contains(r.out, "ten chains of 30 in")) << r.out;
  EXPECT_TRUE(contains(r.out, "one of 300 takes")) << r.out;
}

TEST_F(Cli, BenchNamesBadInputAndExitsTwo) {
  auto r = troupe({"bench", "seq11"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unknown workload 'seq11'")) << r.err;
  EXPECT_TRUE(contains(r.err, "seq10")) << r.err;
  r = troupe({"bench", "seq10", "--durability", "disk"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--durability must be machine, process or both"))
    << r.err;
  r = troupe({"bench", "seq10", "--n", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--n must be at least 1")) << r.err;
  r = troupe({"bench", "seq10", "--concurrency", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--concurrency must be at least 1")) << r.err;
  r = troupe({"bench", "seq10", "--data-dir", "/proc/no-such-folder"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--data-dir '/proc/no-such-folder' cannot hold"))
    << r.err;
  // The internal child mode checks its flags too, rather than wait an hour.
  r = troupe({"bench", "--one", "seq10", "--n", "0", "--concurrency", "1",
              "--data-dir", dir.path().string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--one needs --data-dir")) << r.err;
  r = troupe({"bench", "seq10", "--n", "many"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--n")) << r.err;
  // Against a node its own durability applies: the flag is refused, not
  // ignored (before any connection is tried).
  for (auto w : {"seq10", "viewers"}) {
    r = troupe(
      {"--node", "127.0.0.1:1", "bench", w, "--durability", "process"});
    EXPECT_EQ(r.exit_code, 2) << w << r.err;
    EXPECT_TRUE(contains(r.err, "leave out --durability")) << w << r.err;
  }
}

using troupe::test::etcd_on_path;

TEST_F(Cli, BenchClusterQuickPrintsReplicatedSeq10Http10AndFailoverFigures) {
  // A smoke run of `bench --cluster 3 --quick`: figures only, no speed is
  // checked; but no run may be lost and no completed node run again.
  if (!etcd_on_path())
    GTEST_SKIP() << "etcd is not on PATH";
  auto args = std::vector<std::string>{
    TROUPE_BINARY, "--json",  "bench",      "--cluster",
    "3",           "--quick", "--data-dir", dir.path().string()};
  process_options opts;
  opts.cwd = dir.path().string();
  opts.env = {{"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
              {"TROUPE_ENV", std::nullopt},
              {"TROUPE_AUTH_SECRET", std::nullopt}};
  opts.time_limit = std::chrono::seconds{240};
  auto r = run_process(args, opts);
  ASSERT_FALSE(r.timed_out) << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j.value("workload", ""), "cluster") << j;
  EXPECT_EQ(j.value("replication", 0), 3) << j;
  EXPECT_EQ(j.value("min_insync", 0), 2) << j;
  auto& s = j["seq10"];
  EXPECT_GT(s["cluster"].value("steps_per_s", 0.0), 0.0) << s;
  EXPECT_GT(s["cluster"].value("p99_ms", 0.0), 0.0) << s;
  EXPECT_EQ(s["cluster"].value("failed", -1), 0) << s;
  EXPECT_GT(s["embedded"].value("steps_per_s", 0.0), 0.0) << s;
  EXPECT_EQ(s["embedded"].value("durability", ""), "machine") << s;
  EXPECT_GT(s.value("ratio", 0.0), 0.0) << s;
  // http10: the same over the members, each step a GET of the bench's own
  // echo service (no --echo-url): every run completes, and every step of
  // every run (warm-ups and the embedded run included) called it.
  auto& h = j["http10"];
  auto& hc = h["cluster"];
  EXPECT_EQ(hc.value("workload", ""), "http10") << h;
  EXPECT_EQ(hc.value("ok", 0), hc.value("n", -1)) << h;
  EXPECT_EQ(hc.value("failed", -1), 0) << h;
  EXPECT_GT(hc.value("steps_per_s", 0.0), 0.0) << h;
  EXPECT_GT(hc.value("p99_ms", 0.0), 0.0) << h;
  EXPECT_EQ(h["embedded"].value("workload", ""), "http10") << h;
  EXPECT_EQ(h["embedded"].value("failed", -1), 0) << h;
  EXPECT_GT(h["embedded"].value("steps_per_s", 0.0), 0.0) << h;
  EXPECT_EQ(h.value("echo", ""), "built-in") << h;
  EXPECT_GE(h.value("echo_requests", 0),
            10 * (hc.value("ok", 0) + h["embedded"].value("ok", 0)))
    << h;
  auto& f = j["failover"];
  EXPECT_EQ(f.value("trials", 0), 2) << f;
  EXPECT_EQ(f["per_trial"].size(), 2u) << f;
  EXPECT_GT(f.value("stalled", 0), 0) << f;
  for (auto key : {"victim_resumed_ms", "all_progress_ms", "all_done_ms"}) {
    EXPECT_GT(f[key].value("median", 0.0), 0.0) << key << " " << f;
    EXPECT_GE(f[key].value("max", 0.0), f[key].value("median", 1e9))
      << key << " " << f;
  }
  EXPECT_EQ(f.value("lost", -1), 0) << f;
  EXPECT_EQ(f.value("completed_rerun", -1), 0) << f;
  EXPECT_TRUE(j.contains("fan") && j.contains("detect")) << j;
}

TEST_F(Cli, BenchClusterRunsOnlyThePartsNamed) {
  if (!etcd_on_path())
    GTEST_SKIP() << "etcd is not on PATH";
  auto args = std::vector<std::string>{
    TROUPE_BINARY, "--json", "bench",      "--cluster",        "2",
    "--quick",     "detect", "--data-dir", dir.path().string()};
  process_options opts;
  opts.cwd = dir.path().string();
  opts.env = {{"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
              {"TROUPE_ENV", std::nullopt},
              {"TROUPE_AUTH_SECRET", std::nullopt}};
  opts.time_limit = std::chrono::seconds{120};
  auto r = run_process(args, opts);
  ASSERT_FALSE(r.timed_out) << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j.value("members", 0), 2) << j;
  EXPECT_TRUE(j.contains("detect")) << j;
  for (auto part : {"fan", "seq10", "http10", "failover"})
    EXPECT_FALSE(j.contains(part)) << part << " " << j;
}

namespace {

/// PIDs of the processes whose command line mentions `text`.
std::vector<int> processes_mentioning(const std::string& text) {
  std::vector<int> out;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator{"/proc", ec}) {
    auto name = e.path().filename().string();
    if (name.empty()
        || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    std::ifstream in{e.path() / "cmdline", std::ios::binary};
    std::string cmdline{std::istreambuf_iterator<char>{in}, {}};
    if (cmdline.find(text) != std::string::npos)
      out.push_back(std::stoi(name));
  }
  return out;
}

} // namespace

TEST_F(Cli, ABenchClusterKilledWithSigkillLeavesNoProcessBehind) {
  if (!etcd_on_path())
    GTEST_SKIP() << "etcd is not on PATH";
  auto scratch = dir.path() / "scratch";
  std::filesystem::create_directories(scratch);
  process_options opts;
  opts.cwd = dir.path().string();
  opts.env = {{"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
              {"TROUPE_ENV", std::nullopt},
              {"TROUPE_AUTH_SECRET", std::nullopt}};
  background_process bench({TROUPE_BINARY, "bench", "--cluster", "2", "--quick",
                            "detect", "--data-dir", scratch.string()},
                           opts, (dir.path() / "bench.out").string(),
                           (dir.path() / "bench.err").string());
  // Its etcd and two members run (each found by its scratch folder).
  auto ours = [&] {
    auto pids = processes_mentioning(scratch.string());
    std::erase(pids, bench.pid());
    return pids;
  };
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds{60};
  while (ours().size() < 3 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  ASSERT_GE(ours().size(), 3u) << bench.err();
  bench.signal(SIGKILL);
  ASSERT_TRUE(bench.wait(std::chrono::seconds{5}));
  // The kernel ends them with it.
  until = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (!ours().empty() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  auto left = ours();
  EXPECT_TRUE(left.empty()) << left.size() << " process(es) left";
  for (int pid : left) // the test's own leftovers, by PID
    ::kill(pid, SIGKILL);
}

TEST_F(Cli, BenchClusterNamesABadMemberCountAndExitsTwo) {
  // Refused before anything is started: no etcd is needed to check them.
  for (auto bad : {"0", "1", "10", "1000000", "-3", "three", "3x", ""}) {
    auto r = troupe({"bench", "--cluster", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "--cluster")) << bad << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "from 2 to 9")) << bad << ": " << r.err;
  }
  auto r = troupe({"bench", "--cluster", "three"});
  EXPECT_TRUE(contains(r.err, "not 'three'")) << r.err;
  r = troupe({"bench", "--cluster", "3", "--echo-url", "127.0.0.1:1/step"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "--echo-url '127.0.0.1:1/step' must start with "
                              "http:// or https://"))
    << r.err;
  r = troupe({"bench", "--cluster", "3", "seq10", "fan10"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "leave out 'fan10'")) << r.err;
  r = troupe({"--node", "127.0.0.1:1", "bench", "--cluster", "3"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "leave out --node")) << r.err;
  r = troupe({"bench", "--cluster", "3", "--n", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "--n must be at least 1")) << r.err;
}

namespace {

/// The run id in `troupe run`'s "run ID of workflow 'W' started" line.
std::string started_run(const std::string& err) {
  std::smatch m;
  if (!std::regex_search(err, m, std::regex{"run ([0-9a-f-]{21}) of workflow"}))
    return {};
  return m[1];
}

} // namespace

TEST_F(Cli, GcDeletesFinishedRunsAndHistorySaysTheyWereDeleted) {
  auto data = (dir.path() / "data").string();
  auto r = troupe({"run", examples + "hello.yaml", "--data-dir", data,
                   "--idempotency-key", "k1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto id = started_run(r.err);
  ASSERT_FALSE(id.empty()) << r.err;

  // Within retention (storage.retention, 7d by default, or --older-than):
  // kept, and history answers as before.
  r = troupe({"gc", "--data-dir", data});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "removed 0 runs finished more than 7d ago"))
    << r.out;
  r = troupe({"gc", "--data-dir", data, "--older-than", "1h"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "removed 0 runs finished more than 1h ago (0 journal "
                   "events, 0 idempotency keys) and 0 expired tombstones "
                   "from "
                     + data + "\n");
  r = troupe({"history", id, "--data-dir", data});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "run completed")) << r.out;

  // Past it: deleted, and said so.
  r = troupe({"gc", "--data-dir", data, "--older-than", "0s", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j["runs"], 1) << j;
  EXPECT_GE(j.value("events", 0), 3) << j;
  EXPECT_EQ(j["keys"], 1) << j;
  EXPECT_EQ(j["tombstones"], 0) << j;
  EXPECT_EQ(j["older_than_ms"], 0) << j;
  EXPECT_EQ(j["data_dir"], data) << j;
  for (auto cmd : {"history", "status", "logs"}) {
    r = troupe({cmd, id, "--data-dir", data});
    EXPECT_EQ(r.exit_code, 1) << cmd << r.err;
    EXPECT_TRUE(
      contains(r.err, "run " + id + ": not found (deleted after retention)"))
      << cmd << r.err;
  }
  // A run that never existed is plainly not found.
  r = troupe({"history", "0190000000000-0000000", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "no run '0190000000000-0000000'")) << r.err;
  EXPECT_FALSE(contains(r.err, "deleted")) << r.err;
  // The idempotency key was released with its run.
  r = troupe({"run", examples + "hello.yaml", "--data-dir", data,
              "--idempotency-key", "k1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "no new run started")) << r.err;
  EXPECT_NE(started_run(r.err), id) << r.err;
  // Nothing older is left.
  r = troupe({"gc", "--data-dir", data, "--older-than", "1d"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "removed 0 runs")) << r.out;
}

TEST_F(Cli, GcNamesBadInputAndABusyDataDir) {
  auto data = (dir.path() / "data").string();
  auto r = troupe({"gc", "--data-dir", data, "--older-than", "soon"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "gc: --older-than 'soon':")) << r.err;
  r = troupe({"gc", "--data-dir", data, "--older-than", "-1d"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "negative duration")) << r.err;
  r = troupe({"gc", "--data-dir", data, "--older-than"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = troupe({"gc", "--older", "1d"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--older")) << r.err;
  r = troupe({"gc", "--data-dir", data, "--node", "127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "not both")) << r.err;
  // A data dir that holds no store (a typo) is bad input, and no store is
  // made there.
  auto typo = (dir.path() / "dta").string();
  r = troupe({"gc", "--data-dir", typo, "--older-than", "0s"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "gc: data dir '" + typo + "' does not exist"))
    << r.err;
  EXPECT_FALSE(std::filesystem::exists(typo));
  r = troupe({"gc", "--data-dir", data, "--set", "storage.retention=a week"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "storage.retention")) << r.err;
  // Zero retention keeps every run: nothing to do unless told an age.
  r = troupe({"gc", "--data-dir", data, "--set", "storage.retention=0s"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "keeps every run")) << r.err;
  // Without --data-dir it asks a node; with none there, exit 3.
  r = troupe({"gc", "--node", "127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(contains(r.err, "give --data-dir DIR")) << r.err;

  // A data dir another troupe process holds: exit 3, naming the way out.
  auto nap = dir.write("nap.yaml", "name: nap\nnodes:\n  nap: {kind: sleep, "
                                   "duration: 60s}\n");
  process_options opts;
  opts.cwd = dir.path().string();
  opts.env = {{"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
              {"TROUPE_ENV", std::nullopt}};
  background_process holder{
    {TROUPE_BINARY, "run", nap.string(), "--data-dir", data},
    opts,
    (dir.path() / "holder-out").string(),
    (dir.path() / "holder-err").string()};
  ASSERT_TRUE(wait_until(
    [&] { return contains(holder.err(), "of workflow 'nap' started"); }, 30s))
    << holder.err();
  r = troupe({"gc", "--data-dir", data, "--older-than", "0s"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(contains(r.err, "is in use by `troupe run` (pid "
                                + std::to_string(holder.pid()) + ")"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "collect once it has ended")) << r.err;
  holder.signal(SIGKILL);
  EXPECT_TRUE(holder.wait(10s).has_value());
}

TEST_F(Cli, CommandsThatReadADataDirRefuseOneThatDoesNotExist) {
  const std::vector<std::vector<std::string>> commands
    = {{"status", "0190000000000-0000000"},
       {"list"},
       {"history", "0190000000000-0000000"},
       {"logs", "0190000000000-0000000"},
       {"breakers"},
       {"cancel", "0190000000000-0000000"},
       {"gc", "--older-than", "0s"}};
  for (auto args : commands) {
    auto cmd = args[0];
    args.insert(args.end(), {"--data-dir", "typo"});
    auto r = troupe(args);
    EXPECT_EQ(r.exit_code, 2) << cmd << ": " << r.out << r.err;
    EXPECT_TRUE(contains(r.err, "troupe: " + cmd
                                  + ": data dir 'typo' does "
                                    "not exist"))
      << cmd << ": " << r.err;
    EXPECT_EQ(r.out, "") << cmd;
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "typo")) << cmd;
  }
  // A folder that holds no store is no data dir either, and stays empty.
  std::filesystem::create_directories(dir.path() / "empty");
  for (auto args : commands) {
    auto cmd = args[0];
    args.insert(args.end(), {"--data-dir", "empty"});
    auto r = troupe(args);
    EXPECT_EQ(r.exit_code, 2) << cmd << ": " << r.out << r.err;
    EXPECT_TRUE(contains(r.err, "no journal store at 'empty': the folder "
                                "holds none"))
      << cmd << ": " << r.err;
    EXPECT_TRUE(std::filesystem::is_empty(dir.path() / "empty")) << cmd;
  }
  // The commands that write create it, and then the others read it.
  auto r = troupe({"run", examples + "hello.yaml", "--data-dir", "typo"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = troupe({"list", "--data-dir", "typo"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "hello")) << r.out;
}

TEST_F(Cli, EveryCommandOnADataDirATroupeRunHoldsExitsThreeAndNamesIt) {
  auto data = (dir.path() / "data").string();
  auto nap = dir.write("nap.yaml", "name: nap\nnodes:\n  nap: {kind: sleep, "
                                   "duration: 60s}\n");
  process_options opts;
  opts.cwd = dir.path().string();
  opts.env = {{"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
              {"TROUPE_ENV", std::nullopt}};
  background_process holder{
    {TROUPE_BINARY, "run", nap.string(), "--data-dir", data},
    opts,
    (dir.path() / "holder-out").string(),
    (dir.path() / "holder-err").string()};
  ASSERT_TRUE(wait_until(
    [&] { return contains(holder.err(), "of workflow 'nap' started"); }, 30s))
    << holder.err();
  auto held = "troupe: {}: data dir '" + data + "' is in use by `troupe run` "
              + "(pid " + std::to_string(holder.pid()) + ")";
  const std::vector<std::pair<std::vector<std::string>, std::string>> commands
    = {{{"status", "r"}, "it takes no commands: wait for it to end"},
       {{"list"}, "it takes no commands: wait for it to end"},
       {{"history", "r"}, "it takes no commands: wait for it to end"},
       {{"logs", "r"}, "it takes no commands: wait for it to end"},
       {{"breakers"}, "it takes no commands: wait for it to end"},
       {{"cancel", "r"}, "an embedded node takes no commands"},
       {{"gc", "--older-than", "0s"}, "collect once it has ended"},
       {{"run", examples + "hello.yaml"},
        "wait for it to end, or give "
        "another --data-dir"},
       {{"node", "start", "--listen", "127.0.0.1:0", "--http", ""},
        "wait for it to end"}};
  for (auto& [args, hint] : commands) {
    auto name = args[0] == "node" ? std::string{"node start"} : args[0];
    auto a = args;
    a.insert(a.end(), {"--data-dir", data});
    auto r = troupe(
      a, {{"TROUPE_AUTH_SECRET", "test-secret-0123456789abcdef-0123456789"}});
    EXPECT_EQ(r.exit_code, 3) << name << ": " << r.err;
    auto expected = held;
    expected.replace(expected.find("{}"), 2, name);
    EXPECT_TRUE(contains(r.err, expected)) << name << ": " << r.err;
    EXPECT_TRUE(contains(r.err, hint)) << name << ": " << r.err;
    EXPECT_FALSE(contains(r.err, "ask the node")) << name << ": " << r.err;
  }
  // Killed, a holder leaves its description behind. A later holder that
  // writes none (an older troupe) is not taken for it: both ways out.
  auto holder_file = std::filesystem::path{data} / "HOLDER";
  std::ifstream in{holder_file};
  std::string stale{std::istreambuf_iterator<char>{in}, {}};
  in.close();
  ASSERT_TRUE(contains(stale, "pid " + std::to_string(holder.pid()))) << stale;
  holder.signal(SIGKILL);
  ASSERT_TRUE(holder.wait(10s).has_value());
  background_process second{
    {TROUPE_BINARY, "run", nap.string(), "--data-dir", data},
    opts,
    (dir.path() / "second-out").string(),
    (dir.path() / "second-err").string()};
  ASSERT_TRUE(wait_until(
    [&] { return contains(second.err(), "of workflow 'nap' started"); }, 30s))
    << second.err();
  std::ofstream{holder_file, std::ios::trunc} << stale;
  auto r = troupe({"list", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "is in use by another troupe process, and"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "if a node runs on it, ask the node instead"))
    << r.err;
  second.signal(SIGKILL);
  EXPECT_TRUE(second.wait(10s).has_value());
}

TEST_F(Cli, ShellHelpIsInAlignedColumns) {
  // No node needed.
  auto r = troupe({"shell", "-c", "help"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines{r.out};
  std::string line;
  std::set<size_t> columns;
  size_t commands = 0;
  for (int i = 0; i < 100 && std::getline(lines, line); ++i) {
    // "  USAGE  HELP", or a long "  USAGE" with "  HELP" on the next line.
    auto gap = line.find("  ", 2);
    if (gap == std::string::npos)
      continue;
    auto help = line.find_first_not_of(' ', gap);
    ASSERT_NE(help, std::string::npos) << line;
    columns.insert(help);
    ++commands;
  }
  EXPECT_EQ(commands, 16u) << r.out;
  EXPECT_EQ(columns.size(), 1u) << r.out;
  EXPECT_TRUE(contains(r.out, "limits | partition P\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "  one actor's own account of its state, or a "
                              "partition's replicas\n"))
    << r.out;
}

// `troupe run` as a child process: runs, failures, bad input, and kill -9 at
// chosen moments followed by a restart on the same data dir. Side effects are
// counted as lines that exec nodes append to files.

#include "tests/support/process.hpp"
#include "tests/support/pty_session.hpp"
#include "tests/support/store_surgery.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/troupe_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>
#include <unistd.h>

using namespace std::chrono_literals;
using troupe::test::background_process;
using troupe::test::count_lines;
using troupe::test::process_options;
using troupe::test::process_result;
using troupe::test::run_process;
using troupe::test::temp_dir;
using troupe::test::wait_until;
using json = nlohmann::json;

namespace {

const std::string examples = std::string{TROUPE_SOURCE_DIR} + "/examples/";

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct Run : troupe::test::troupe_fixture {
  std::string marks = (dir.path() / "marks.txt").string();

  /// A node that appends `name` to the marks file, then sleeps `secs`.
  std::string mark_node(const std::string& name, const std::string& after,
                        const std::string& secs = "0") {
    std::string s = "  " + name + ":\n    kind: exec\n";
    if (!after.empty())
      s += "    after: [" + after + "]\n";
    s += "    command: [\"/bin/sh\", \"-c\", \"echo " + name + " >> " + marks
         + "; sleep " + secs + "; echo '{\\\"" + name + "\\\": true}'\"]\n";
    return s;
  }

  /// Kills the background run with SIGKILL once `ready` holds, restarts with
  /// --resume, and returns the resumed process's result.
  process_result kill_and_resume(background_process& p,
                                 const std::function<bool()>& ready) {
    EXPECT_TRUE(wait_until(ready, 30s)) << p.err();
    p.signal(SIGKILL);
    EXPECT_EQ(p.wait(10s), -SIGKILL);
    auto r = troupe({"run", "--resume", "--data-dir", data});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r;
  }
};

/// Whether `pid` still runs: it exists and is not a zombie (a process whose
/// parent died is reaped by init in its own time).
bool running(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string text;
  std::getline(in, text);
  auto close = text.rfind(')');
  if (pid <= 1 || close == std::string::npos || close + 2 >= text.size())
    return false;
  auto state = text[close + 2];
  return state != 'Z' && state != 'X';
}

/// The pid written in `path`; 0 while there is none.
pid_t read_pid(const std::filesystem::path& path) {
  pid_t pid = 0;
  std::ifstream{path} >> pid;
  return pid;
}

/// The reaper process `troupe` (pid `parent`) started; 0 when none is found.
pid_t find_reaper(pid_t parent) {
  for (auto& e : std::filesystem::directory_iterator{"/proc"}) {
    auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    std::ifstream in{e.path() / "stat"};
    std::string text;
    std::getline(in, text);
    auto open = text.find('('), close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos)
      continue;
    std::istringstream rest{text.substr(close + 2)};
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent
        && text.substr(open + 1, close - open - 1) == "troupe-reaper")
      return std::stoi(name);
  }
  return 0;
}

/// SIGKILLs the processes an exec node started for a test, if they run.
void kill_leftovers(std::initializer_list<pid_t> pids) {
  for (auto pid : pids)
    if (running(pid))
      ::kill(pid, SIGKILL);
}

/// Returns the one JSON report line --resume prints for a completed run.
json resumed_report(const process_result& r) {
  auto line = r.out.substr(0, r.out.find('\n'));
  return json::parse(line, nullptr, false);
}

} // namespace

TEST_F(Run, RunsHelloAndPrintsItsOutputs) {
  auto r = troupe(
    {"run", examples + "hello.yaml", "--data-dir", data, "--input", "who=Ada"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = json::parse(r.out);
  EXPECT_EQ(out["greeting"], "Hello, Ada!");
  EXPECT_EQ(out["farewell"], "goodbye, Ada");
}

TEST_F(Run, RunsTheExamples) {
  auto r = troupe({"run", examples + "pipeline.yaml", "--data-dir", data});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = json::parse(r.out);
  EXPECT_EQ(out["doubled"], 42);
  EXPECT_EQ(out["seen_by_last_step"], (json{{"doubled", 42}}));
  r = troupe({"run", examples + "flaky.yaml", "--data-dir", data});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["attempt"], 3);
  r = troupe({"run", examples + "fanout.json", "--data-dir", data, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto report = json::parse(r.out);
  EXPECT_EQ(report["state"], "completed");
  EXPECT_EQ(report["outputs"]["n"], 3);
}

TEST_F(Run, FailedRunExitsOneNamingTheNodeAndItsAttempts) {
  auto wf = dir.write("f.yaml", R"(name: f
nodes:
  a: {kind: noop}
  charge:
    kind: fail
    after: [a]
    times: 9
    message: card service down
    retry: {max_attempts: 3, initial_backoff: 10ms, jitter: none}
)");
  auto r = troupe({"run", wf.string(), "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "node 'charge': gave up after 3 attempts: card "
                              "service down"))
    << r.err;
  // The journal tells the same story.
  auto id_start = r.err.find("run ") + 4;
  auto id = r.err.substr(id_start, r.err.find(' ', id_start) - id_start);
  auto h = troupe({"history", id, "--data-dir", data});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_TRUE(contains(h.out, "charge: attempt 2 failed (injected): card "
                              "service down; retry in"))
    << h.out;
  EXPECT_TRUE(contains(h.out, "run FAILED")) << h.out;
  auto hj = troupe({"history", id, "--data-dir", data, "--json"});
  auto events = json::parse(hj.out)["events"];
  EXPECT_EQ(events.front()["type"], "run_submitted");
  EXPECT_EQ(events.back()["type"], "run_failed");
}

TEST_F(Run, BadInputExitsTwo) {
  auto r = troupe(
    {"run", examples + "hello.yaml", "--data-dir", data, "--input", "whom=x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unknown input 'whom'")) << r.err;
  EXPECT_TRUE(contains(r.err, "did you mean 'who'?")) << r.err;
  // An input without a default is required.
  auto typed = dir.write("t.yaml", "name: t\ninputs: {n: {type: integer}}\n"
                                   "nodes: {a: {kind: noop}}\n");
  r = troupe({"run", typed.string(), "--data-dir", data});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "missing required input 'n'")) << r.err;
  r = troupe({"run", typed.string(), "--data-dir", data, "--input", "n=x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "must be of type integer")) << r.err;
  // An inputs file over the limit is refused as what it is.
  auto huge = dir.write("huge.json", "{\"n\": 1, \"pad\": \""
                                       + std::string(11 << 20, 'x') + "\"}");
  r = troupe({"run", typed.string(), "--data-dir", data, "--inputs-file",
              huge.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "inputs files are limited to 10 MiB")) << r.err;
  EXPECT_FALSE(contains(r.err, "workflow")) << r.err;
  r = troupe(
    {"run", typed.string(), "--data-dir", data, "--durability", "fast"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "storage.durability")) << r.err;
  r = troupe({"run", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 2);
  // A data dir that is a file.
  auto file = dir.write("not-a-dir", "x");
  r = troupe({"run", examples + "hello.yaml", "--data-dir", file.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, file.string())) << r.err;
}

TEST_F(Run, RuntimeProblemsEndAsReadableNodeErrors) {
  auto wf = dir.write("p.yaml", R"(name: p
nodes:
  chatty:
    kind: exec
    command: ["/bin/sh", "-c", "head -c 50000000 /dev/zero; printf '\\377\\376 not utf8' >&2"]
    max_output_bytes: 1024
  thrower:
    kind: fail
    times: 1
    exception: true
    retry: {initial_backoff: 10ms}
  deaf:
    kind: exec
    after: [chatty, thrower]
    command: ["/bin/sh", "-c", "trap '' TERM; sleep 30"]
    timeout: 300ms
    retry: {max_attempts: 2, initial_backoff: 10ms}
)");
  auto r = troupe({"run", wf.string(), "--data-dir", data, "--set",
                   "exec.kill_grace=100ms", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto report = json::parse(r.out);
  EXPECT_TRUE(contains(report["error"], "node 'deaf': gave up after 2 "
                                        "attempts: attempt timed out after "
                                        "300ms"))
    << report.dump();
  auto h = troupe({"history", report["run_id"], "--data-dir", data, "--json"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  bool chatty_capped = false, thrower_crashed = false, thrower_retried = false;
  auto history = json::parse(h.out);
  for (auto& e : history["events"]) {
    if (e["node"] == "chatty" && e["type"] == "node_completed") {
      auto out = json::parse(e["data"].get<std::string>());
      chatty_capped = out["stdout"].get<std::string>().size() == 1024
                      && out["stdout_truncated"] == true;
    }
    if (e["node"] == "thrower" && e["type"] == "attempt_failed")
      thrower_crashed = e["error_kind"] == "crash"
                        && contains(e["message"], "threw on purpose");
    if (e["node"] == "thrower" && e["type"] == "node_completed")
      thrower_retried = true;
  }
  EXPECT_TRUE(chatty_capped) << h.out.substr(0, 2000);
  EXPECT_TRUE(thrower_crashed) << h.out.substr(0, 2000);
  EXPECT_TRUE(thrower_retried) << h.out.substr(0, 2000);
}

TEST_F(Run, AJsonObjectCutOffAtTheOutputCapFailsItsNode) {
  // 3000 bytes of one JSON object against a cap of 1024: the object is cut.
  auto wf = dir.write("cut.yaml", R"(name: cut
nodes:
  big:
    kind: exec
    command: ["/bin/sh", "-c", "printf '{\"pad\": \"'; head -c 3000 /dev/zero | tr '\\0' x; printf '\", \"k\": 1}'"]
    max_output_bytes: 1024
    after: [text]
  after_big: {kind: noop, after: [big], k: "{{ nodes.big.output.k }}"}
  text:
    kind: exec
    command: ["/bin/sh", "-c", "head -c 3000 /dev/zero | tr '\\0' y"]
    max_output_bytes: 1024
)");
  auto r = troupe({"run", wf.string(), "--data-dir", data, "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto report = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << r.out;
  EXPECT_TRUE(contains(report["error"], "node 'big': not retryable "
                                        "(output_too_large): stdout started a "
                                        "JSON object but was cut off at 1024 "
                                        "bytes"))
    << report.dump();
  auto h = troupe({"history", report["run_id"], "--data-dir", data, "--json"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  int big_attempts = 0;
  bool text_flagged = false;
  auto history = json::parse(h.out);
  for (auto& e : history["events"]) {
    if (e["node"] == "big" && e["type"] == "attempt_started")
      ++big_attempts;
    if (e["node"] == "text" && e["type"] == "node_completed") {
      auto out = json::parse(e["data"].get<std::string>());
      text_flagged = out["stdout"].get<std::string>().size() == 1024
                     && out["stdout_truncated"] == true;
    }
  }
  // Not retried: the same program would be cut off again.
  EXPECT_EQ(big_attempts, 1) << h.out.substr(0, 2000);
  EXPECT_TRUE(text_flagged) << h.out.substr(0, 3000);
}

TEST_F(Run, TemplateThatResolvesToNothingFailsTheNode) {
  auto wf = dir.write("t.yaml", R"(name: t
nodes:
  a: {kind: noop, x: 1}
  b: {kind: noop, after: [a], y: "{{ nodes.a.output.nope }}"}
)");
  auto r = troupe({"run", wf.string(), "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "node 'b': not retryable (bad_template): "
                              "template '{{ nodes.a.output.nope }}' resolved "
                              "to nothing: the output of node 'a' has no "
                              "field 'nope'"))
    << r.err;
}

TEST_F(Run, KillDuringSleepResumesAtTheDeadlineWithoutRedoingWork) {
  auto wf = dir.write("s.yaml", "name: s\nnodes:\n" + mark_node("a", "")
                                  + "  nap: {kind: sleep, after: [a], "
                                    "duration: 1500ms}\n"
                                  + mark_node("b", "nap"));
  auto p = start({"run", wf.string(), "--data-dir", data});
  // The progress line of the timer comes once it is journaled: `a` has
  // completed and the run is parked in its sleep.
  auto r = kill_and_resume(
    *p, [&] { return contains(p->err(), " nap  timer_set"); });
  auto report = resumed_report(r);
  EXPECT_EQ(report["state"], "completed") << r.out << r.err;
  EXPECT_EQ(count_lines(marks, "a"), 1);
  EXPECT_EQ(count_lines(marks, "b"), 1);
}

TEST_F(Run, KillDuringExecRunsTheInFlightNodeAtMostTwice) {
  auto wf = dir.write("e.yaml", "name: e\nnodes:\n" + mark_node("a", "", "1")
                                  + mark_node("b", "a"));
  auto p = start({"run", wf.string(), "--data-dir", data});
  kill_and_resume(*p, [&] { return count_lines(marks, "a") == 1; });
  EXPECT_GE(count_lines(marks, "a"), 1);
  EXPECT_LE(count_lines(marks, "a"), 2);
  EXPECT_EQ(count_lines(marks, "b"), 1);
}

TEST_F(Run, KillBetweenNodesNeverRedoesCompletedOnes) {
  std::string wf_text = "name: chain\nnodes:\n" + mark_node("n1", "");
  for (int i = 2; i <= 6; ++i)
    wf_text
      += mark_node("n" + std::to_string(i), "n" + std::to_string(i - 1), "0.1");
  auto wf = dir.write("c.yaml", wf_text);
  auto p = start({"run", wf.string(), "--data-dir", data});
  kill_and_resume(*p, [&] { return count_lines(marks, "n3") == 1; });
  // n1 and n2 completed before the kill (n3 had started): exactly once.
  EXPECT_EQ(count_lines(marks, "n1"), 1);
  EXPECT_EQ(count_lines(marks, "n2"), 1);
  for (int i = 3; i <= 6; ++i) {
    auto n = count_lines(marks, "n" + std::to_string(i));
    EXPECT_GE(n, 1) << i;
    EXPECT_LE(n, 2) << i;
  }
  EXPECT_EQ(count_lines(marks, "n6"), 1);
}

TEST_F(Run, KillInTheMiddleOfAFanOut) {
  std::string wf_text = "name: fan\nnodes:\n" + mark_node("start", "");
  for (int i = 1; i <= 6; ++i)
    wf_text
      += mark_node("w" + std::to_string(i), "start", std::to_string(0.2 * i));
  wf_text += mark_node("join", "w1, w2, w3, w4, w5, w6");
  auto wf = dir.write("f.yaml", wf_text);
  auto p = start({"run", wf.string(), "--data-dir", data});
  kill_and_resume(*p, [&] { return count_lines(marks, "w6") == 1; });
  EXPECT_EQ(count_lines(marks, "start"), 1);
  for (int i = 1; i <= 6; ++i) {
    auto n = count_lines(marks, "w" + std::to_string(i));
    EXPECT_GE(n, 1) << i;
    EXPECT_LE(n, 2) << i;
  }
  EXPECT_EQ(count_lines(marks, "join"), 1);
}

// An exec node's grandchild dies with the node: kill -9 of troupe ends the
// whole process group of the attempt (its reaper does it), not only the
// direct child.
TEST_F(Run, Kill9LeavesNoProcessOfAnAttemptBehind) {
  auto leader = dir.path() / "leader", grand = dir.path() / "grand";
  auto script = dir.write(
    "work.sh", "echo $$ > " + leader.string() + "\nsleep 300 &\necho $! > "
                 + grand.string() + ".tmp\nmv " + grand.string() + ".tmp "
                 + grand.string() + "\nwait\n");
  auto wf = dir.write("o.yaml", "name: o\nnodes:\n  work:\n    kind: exec\n"
                                "    command: [\"/bin/sh\", \""
                                  + script.string() + "\"]\n");
  auto p = start({"run", wf.string(), "--data-dir", data});
  ASSERT_TRUE(wait_until([&] { return read_pid(grand) > 0; }, 30s)) << p->err();
  auto l = read_pid(leader), g = read_pid(grand);
  ASSERT_TRUE(running(g));
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
  EXPECT_TRUE(wait_until([&] { return !running(g) && !running(l); }, 10s))
    << "the attempt's " << (running(g) ? "grandchild" : "child")
    << " outlived troupe";
  kill_leftovers({l, g});
}

// When the reaper is killed too, the next start on the data dir kills the
// attempt's leftover process group before the attempt runs again: two
// copies of the same work never run at once.
TEST_F(Run, LeftoversOfAKilledNodeAreKilledBeforeTheAttemptRunsAgain) {
  auto leader = dir.path() / "leader", grand = dir.path() / "grand";
  auto seen = dir.path() / "seen", second = dir.path() / "second";
  // The first attempt starts a grandchild and waits; the one after the
  // restart notes whether that grandchild still ran when it started.
  auto script = dir.write(
    "work.sh", "g=" + grand.string()
                 + "\nif [ -e $g ]; then\n"
                   "  s=$(cut -d' ' -f3 /proc/$(cat $g)/stat 2>/dev/null)\n"
                   "  if [ -n \"$s\" ] && [ \"$s\" != Z ]; then echo alive > "
                 + seen.string() + "; else echo gone > " + seen.string()
                 + "; fi\n  echo $$ > " + second.string()
                 + "\n  echo '{}'\n  exit 0\nfi\n"
                   "echo $$ > "
                 + leader.string() + "\nsleep 300 &\necho $! > $g.tmp\n"
                 + "mv $g.tmp $g\nwait\n");
  auto wf = dir.write("o.yaml", "name: o\nnodes:\n  work:\n    kind: exec\n"
                                "    command: [\"/bin/sh\", \""
                                  + script.string() + "\"]\n");
  auto p = start({"run", wf.string(), "--data-dir", data});
  ASSERT_TRUE(wait_until([&] { return read_pid(grand) > 0; }, 30s)) << p->err();
  auto l = read_pid(leader), g = read_pid(grand);
  ASSERT_TRUE(running(g));
  // The reaper first (else it would do the work), then troupe.
  if (auto reaper = find_reaper(p->pid()); reaper > 0) {
    ::kill(reaper, SIGKILL);
    ASSERT_TRUE(wait_until([&] { return !running(reaper); }, 10s));
  }
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(running(g)) << "nothing should have killed it yet";
  auto r = troupe({"run", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(read_pid(second), 0) << "the attempt did not run again";
  std::string state;
  std::ifstream{seen} >> state;
  EXPECT_EQ(state, "gone")
    << "the old grandchild still ran when the attempt started again";
  EXPECT_FALSE(running(g));
  EXPECT_TRUE(contains(r.err, "killed 1 exec process group(s) left behind"))
    << r.err;
  kill_leftovers({l, g});
}

TEST_F(Run, SigtermStopsCleanlyAndTheNextRunResumes) {
  auto wf = dir.write("s.yaml", "name: s\nnodes:\n" + mark_node("a", "")
                                  + "  nap: {kind: sleep, after: [a], "
                                    "duration: 800ms}\n");
  auto p = start({"run", wf.string(), "--data-dir", data});
  ASSERT_TRUE(wait_until([&] { return count_lines(marks, "a") == 1; }, 30s));
  p->signal(SIGTERM);
  EXPECT_EQ(p->wait(10s), 128 + SIGTERM) << p->err();
  EXPECT_TRUE(contains(p->err(), "resume with 'troupe run --resume"))
    << p->err();
  // A new `troupe run` resumes the interrupted run next to its own; what of
  // it is left when its own ends, --resume finishes.
  auto r = troupe({"run", examples + "hello.yaml", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "resuming 1 unfinished run")) << r.err;
  bool finished = contains(r.err, "(s) completed");
  EXPECT_NE(finished, contains(r.err, "1 other unfinished run")) << r.err;
  r = troupe({"run", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (!finished) {
    EXPECT_EQ(resumed_report(r)["state"], "completed") << r.out << r.err;
  }
  EXPECT_EQ(count_lines(marks, "a"), 1);
  // Nothing left to resume.
  r = troupe({"run", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(Run, UnreadableDataDirIsAClearErrorNotACrash) {
  // Run a first time so the folder holds a real store.
  ASSERT_EQ(
    troupe({"run", examples + "hello.yaml", "--data-dir", data}).exit_code, 0);
  std::filesystem::permissions(data, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace);
  auto cmd = args({"run", examples + "hello.yaml", "--data-dir", data});
  if (::geteuid() == 0) {
    // Root reads every folder: run as nobody, from copies nobody can reach
    // (the build tree may sit in a folder closed to others).
    namespace fs = std::filesystem;
    auto bin = dir.path() / "troupe";
    auto hello = dir.path() / "hello.yaml";
    fs::copy_file(TROUPE_BINARY, bin);
    fs::copy_file(examples + "hello.yaml", hello);
    fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::others_exec,
                    fs::perm_options::replace);
    fs::permissions(bin,
                    fs::perms::owner_all | fs::perms::others_read
                      | fs::perms::others_exec,
                    fs::perm_options::replace);
    fs::permissions(hello, fs::perms::owner_all | fs::perms::others_read,
                    fs::perm_options::replace);
    cmd = {"/usr/bin/setpriv",
           "--reuid=65534",
           "--regid=65534",
           "--clear-groups",
           "--",
           bin.string(),
           "run",
           hello.string(),
           "--data-dir",
           data};
  } else {
    std::filesystem::permissions(data, std::filesystem::perms::none,
                                 std::filesystem::perm_options::replace);
  }
  auto o = opts();
  o.cwd = "/";
  auto r = run_process(cmd, o);
  std::filesystem::permissions(data, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, data)) << r.err;
  EXPECT_TRUE(contains(r.err, "ermission denied")) << r.err;
  // The store is intact: the owner can still use it.
  EXPECT_EQ(troupe({"run", "--resume", "--data-dir", data}).exit_code, 0);
}

TEST_F(Run, CorruptJournalFailsThatRunAndOthersStillRecover) {
  auto wf = [&](const std::string& name, const std::string& nap) {
    return dir.write(name + ".yaml", "name: " + name + "\nnodes:\n"
                                       + mark_node(name, "")
                                       + "  nap: {kind: sleep, after: [" + name
                                       + "], duration: " + nap + "}\n");
  };
  // Two runs, each killed while parked in its sleep (long enough for slow
  // builds, e.g. with sanitizers, to get there first).
  for (auto [name, nap] : {std::pair{"first", "4s"}, {"second", "4s"}}) {
    auto p = start({"run", wf(name, nap).string(), "--data-dir", data});
    ASSERT_TRUE(wait_until(
      [&, n = std::string{name}] { return count_lines(marks, n) == 1; }, 30s))
      << p->err();
    std::this_thread::sleep_for(100ms);
    p->signal(SIGKILL);
    ASSERT_EQ(p->wait(10s), -SIGKILL);
  }
  // Damage record 3 of the first run's journal, behind the node's back.
  auto ids = troupe::test::corrupt_journal_record(data, 0, 3);
  ASSERT_EQ(ids.size(), 2u);
  auto r = troupe({"run", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "not resumed: run " + ids[0]
                                + ": journal record 3 is corrupt"))
    << r.err;
  // The other run finished; its report is the only line on stdout.
  auto report = resumed_report(r);
  EXPECT_EQ(report["run_id"], ids[1]) << r.out;
  EXPECT_EQ(report["state"], "completed") << r.out;
  // The damaged run is marked failed with the reason: no crash loop, and
  // its history says why.
  r = troupe({"run", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  auto h = troupe({"history", ids[0], "--data-dir", data});
  EXPECT_TRUE(contains(h.out + h.err, "journal record 3 is corrupt"))
    << h.out << h.err;
}

TEST_F(Run, FallbackRunsInPlaceOfAFailedNodeAndHistoryShowsThePath) {
  auto r
    = troupe({"run", examples + "fallback.yaml", "--data-dir", data, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto report = json::parse(r.out);
  EXPECT_EQ(report["outputs"]["paid_via"], "backup") << r.out;
  auto h = troupe({"history", report["run_id"], "--data-dir", data});
  EXPECT_TRUE(contains(h.out, "charge_primary: FAILED (gateway_down): gave up "
                              "after 2 attempts: primary gateway is down; "
                              "falling back to 'charge_backup'"))
    << h.out;
  EXPECT_TRUE(contains(h.out, "charge_primary: completed with the output of "
                              "fallback 'charge_backup'"))
    << h.out;
}

TEST_F(Run, KillDuringAFallbackResumesIt) {
  auto wf = dir.write("fb.yaml", "name: fb\nnodes:\n"
                                 "  primary: {kind: fail, times: 9, "
                                 "error_kind: fatal, retry: {non_retryable: "
                                 "[fatal]}, fallback: backup}\n"
                                   + mark_node("backup", "", "1")
                                   + mark_node("after_it", "primary"));
  auto p = start({"run", wf.string(), "--data-dir", data});
  auto r
    = kill_and_resume(*p, [&] { return count_lines(marks, "backup") == 1; });
  EXPECT_EQ(resumed_report(r)["state"], "completed") << r.out << r.err;
  EXPECT_GE(count_lines(marks, "backup"), 1);
  EXPECT_LE(count_lines(marks, "backup"), 2);
  EXPECT_EQ(count_lines(marks, "after_it"), 1);
}

TEST_F(Run, RunTimeoutKeepsItsDeadlineAcrossKill9) {
  auto wf = dir.write("rt.yaml", "name: rt\ntimeout: 1500ms\nnodes:\n"
                                   + mark_node("a", "")
                                   + "  nap: {kind: sleep, after: [a], "
                                     "duration: 1h}\n");
  auto p = start({"run", wf.string(), "--data-dir", data});
  ASSERT_TRUE(
    wait_until([&] { return contains(p->err(), " nap  timer_set"); }, 30s))
    << p->err();
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
  auto r = troupe({"run", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto report = resumed_report(r);
  EXPECT_EQ(report["state"], "failed") << r.out;
  EXPECT_EQ(report["error"], "the run timed out after 1500ms") << r.out;
  // It ended at the deadline set at submission, not one restarted later.
  auto h = troupe({"history", report["run_id"], "--data-dir", data, "--json"});
  auto events = json::parse(h.out)["events"];
  auto span = events.back()["at_ns"].get<int64_t>()
              - events.front()["at_ns"].get<int64_t>();
  EXPECT_GE(span, 1'500'000'000);
  EXPECT_EQ(count_lines(marks, "a"), 1);
}

TEST_F(Run, ScheduleToCloseEndsANodeAcrossItsAttempts) {
  auto wf = dir.write("stc.yaml", R"(name: stc
nodes:
  slow:
    kind: exec
    command: ["/bin/sh", "-c", "sleep 5"]
    timeout: 300ms
    schedule_to_close: 800ms
    retry: {max_attempts: 100, initial_backoff: 10ms, jitter: none}
)");
  auto r = troupe({"run", wf.string(), "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "node 'slow': gave up after")) << r.err;
  EXPECT_TRUE(contains(r.err, "schedule_to_close of 800ms; last attempt: "
                              "timeout: attempt timed out after"))
    << r.err;
}

TEST_F(Run, SilentExecMissingItsHeartbeatIsKilledAndRetried) {
  auto wf = dir.write("hb.yaml", R"(name: hb
nodes:
  quiet:
    kind: exec
    command: ["/bin/sh", "-c", "echo . >&3; sleep 30"]
    heartbeat_timeout: 200ms
    retry: {max_attempts: 2, initial_backoff: 10ms}
)");
  auto r = troupe(
    {"run", wf.string(), "--data-dir", data, "--set", "exec.kill_grace=100ms"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "node 'quiet': gave up after 2 attempts: no "
                              "heartbeat on fd 3 within 200ms"))
    << r.err;
}

TEST_F(Run, SwitchBranchesAndTheMergeRuns) {
  for (auto [total, country, by] : {std::tuple{"250", "FR", "freight"},
                                    {"250", "US", "courier"},
                                    {"40", "DE", "post"}}) {
    auto r = troupe({"run", examples + "branching.yaml", "--data-dir", data,
                     "--json", "--input", std::string{"total="} + total,
                     "--input", std::string{"country="} + country});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto report = json::parse(r.out);
    EXPECT_EQ(report["outputs"]["shipped_by"], json::array({by})) << r.out;
    auto h = troupe({"history", report["run_id"], "--data-dir", data});
    EXPECT_TRUE(contains(h.out, "skipped: branch not taken by switch 'route'"))
      << h.out;
  }
  // A comparison that cannot be made at run time fails the switch node.
  auto wf = dir.write("b.yaml", R"(name: b
inputs: {v: {type: any}}
nodes:
  s: {kind: switch, cases: [{when: "inputs.v > 3", goto: [x]}]}
  x: {kind: noop}
)");
  auto r = troupe({"run", wf.string(), "--data-dir", data, "--input", "v=[1]"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(
    contains(r.err, "node 's': case 1 ('inputs.v > 3'): cannot order"))
    << r.err;
}

TEST_F(Run, OrderSagaReleasesTheInventoryWhenTheChargeFails) {
  auto r = troupe(
    {"run", examples + "order-saga.yaml", "--data-dir", data, "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto report = json::parse(r.out);
  EXPECT_EQ(report["state"], "failed");
  EXPECT_EQ(report["compensation"],
            (json{{"compensated", true},
                  {"compensations", {{"release", "completed"}}}}))
    << r.out;
  EXPECT_TRUE(contains(report["error"], "node 'charge': not retryable "
                                        "(card_declined): card declined; "
                                        "compensated by release"))
    << r.out;
  auto h = troupe({"history", report["run_id"], "--data-dir", data});
  EXPECT_TRUE(contains(h.out, "run failing (card_declined)")) << h.out;
  EXPECT_TRUE(contains(h.out, "release: completed, output")) << h.out;
  EXPECT_FALSE(contains(h.out, "ship: attempt")) << h.out;
}

TEST_F(Run, KillDuringCompensationFinishesIt) {
  auto wf
    = dir.write("saga.yaml", "name: saga\nnodes:\n" + mark_node("book", "")
                               + "    compensate: unbook\n"
                               + "  pay: {kind: fail, after: [book], "
                                 "times: 9, retry: {max_attempts: 1}}\n"
                               + mark_node("unbook", "book", "1"));
  auto p = start({"run", wf.string(), "--data-dir", data});
  ASSERT_TRUE(
    wait_until([&] { return count_lines(marks, "unbook") == 1; }, 30s))
    << p->err();
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
  auto r = troupe({"run", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto report = resumed_report(r);
  EXPECT_EQ(report["state"], "failed") << r.out;
  EXPECT_EQ(report["compensation"]["compensated"], true) << r.out;
  EXPECT_EQ(count_lines(marks, "book"), 1);
  EXPECT_GE(count_lines(marks, "unbook"), 1);
  EXPECT_LE(count_lines(marks, "unbook"), 2);
}

TEST_F(Run, CircuitBreakerOpensAndRefusedCallsDoNotUseUpAttempts) {
  auto wf = dir.write("cb.yaml", R"(name: cb
nodes:
  call:
    kind: fail
    times: 4
    error_kind: unavailable
    retry: {max_attempts: 5, initial_backoff: 10ms, jitter: none}
    circuit_breaker: {key: svc, failure_threshold: 2, reset_timeout: 300ms}
)");
  auto r = troupe({"run", wf.string(), "--data-dir", data, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto report = json::parse(r.out);
  EXPECT_EQ(report["state"], "completed");
  EXPECT_TRUE(contains(r.err, "circuit breaker 'svc': closed -> open (2 "
                              "failures within 1m)"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "circuit breaker 'svc': half-open -> closed"))
    << r.err;
  auto h = troupe({"history", report["run_id"], "--data-dir", data, "--json"});
  auto history = json::parse(h.out);
  int refused = 0, failed = 0;
  for (auto& e : history["events"]) {
    if (e["type"] != "attempt_failed")
      continue;
    if (e["error_kind"] == "circuit_open")
      ++refused;
    else
      ++failed;
  }
  // Four real failures (attempts 1-4) and some refusals in between; the
  // fifth attempt succeeded although there were more than five tries.
  EXPECT_EQ(failed, 4);
  EXPECT_GE(refused, 1);
}

TEST_F(Run, KillDuringACircuitOpenWaitResumes) {
  auto wf = dir.write("cb.yaml", R"(name: cb
nodes:
  call:
    kind: fail
    times: 2
    retry: {max_attempts: 5, initial_backoff: 10ms, jitter: none}
    circuit_breaker: {key: svc, failure_threshold: 2, reset_timeout: 1s}
)");
  auto p = start({"run", wf.string(), "--data-dir", data});
  ASSERT_TRUE(wait_until(
    [&] { return contains(p->err(), "call  attempt_failed  attempt 3"); }, 30s))
    << p->err();
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
  auto r = troupe({"run", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(resumed_report(r)["state"], "completed") << r.out;
}

TEST_F(Run, IdempotencyKeyGivesTheSameRunInsteadOfANewOne) {
  auto wf = dir.write("i.yaml",
                      "name: i\nnodes:\n" + mark_node("once", "")
                        + "outputs: {ok: \"{{ nodes.once.output.once }}\"}\n");
  auto first = troupe({"run", wf.string(), "--data-dir", data, "--json",
                       "--idempotency-key", "order-42"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto again = troupe({"run", wf.string(), "--data-dir", data, "--json",
                       "--idempotency-key", "order-42"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(json::parse(again.out)["run_id"], json::parse(first.out)["run_id"]);
  EXPECT_EQ(json::parse(again.out)["outputs"], (json{{"ok", true}}));
  EXPECT_EQ(count_lines(marks, "once"), 1);
  // Another key is another run.
  auto other = troupe({"run", wf.string(), "--data-dir", data, "--json",
                       "--idempotency-key", "order-43"});
  EXPECT_NE(json::parse(other.out)["run_id"], json::parse(first.out)["run_id"]);
  EXPECT_EQ(count_lines(marks, "once"), 2);
  // A key whose run was interrupted waits for that run, resumed.
  auto slow
    = dir.write("s.yaml", "name: s\nnodes:\n" + mark_node("slow", "", "1"));
  auto p = start(
    {"run", slow.string(), "--data-dir", data, "--idempotency-key", "slow-1"});
  ASSERT_TRUE(wait_until([&] { return count_lines(marks, "slow") == 1; }, 30s));
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
  auto r = troupe({"run", slow.string(), "--data-dir", data, "--json",
                   "--idempotency-key", "slow-1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["state"], "completed") << r.out;
  EXPECT_LE(count_lines(marks, "slow"), 2);
  // Bad use.
  EXPECT_EQ(
    troupe({"run", "--resume", "--data-dir", data, "--idempotency-key", "k"})
      .exit_code,
    2);
}

// A key names one submission: the same key with another workflow, or with
// other inputs, is refused and names the run that holds it; the same
// workflow (however laid out) with the same inputs gets that run.
TEST_F(Run, IdempotencyKeyOfAnotherWorkflowOrInputsIsRefused) {
  auto text = "nodes:\n" + mark_node("once", "")
              + "outputs: {ok: \"{{ nodes.once.output.once }}\"}\n";
  auto wf = dir.write(
    "i.yaml", "name: i\ninputs: {who: {type: string, default: x}}\n" + text);
  auto first = troupe({"run", wf.string(), "--data-dir", data, "--json",
                       "--idempotency-key", "k"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto id = json::parse(first.out)["run_id"].get<std::string>();
  // Another workflow.
  auto other = dir.write(
    "o.yaml", "name: o\nnodes:\n" + mark_node("other", "")
                + "outputs: {ok: \"{{ nodes.other.output.other }}\"}\n");
  auto r = troupe({"run", other.string(), "--data-dir", data, "--json",
                   "--idempotency-key", "k"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(contains(r.err, "idempotency key 'k' is held by run " + id))
    << r.err;
  EXPECT_TRUE(contains(r.err, "a different workflow")) << r.err;
  EXPECT_EQ(count_lines(marks, "other"), 0);
  // Other inputs.
  r = troupe({"run", wf.string(), "--data-dir", data, "--json",
              "--idempotency-key", "k", "--input", "who=y"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "held by run " + id)) << r.err;
  EXPECT_TRUE(contains(r.err, "different inputs")) << r.err;
  // The same workflow, laid out otherwise, with the same inputs (the
  // default, given): that run, nothing new.
  auto same = dir.write("same.yaml", "# the same workflow\n" + text
                                       + "inputs:\n  who:\n    default: x\n"
                                         "    type: string\nname: i\n");
  r = troupe({"run", same.string(), "--data-dir", data, "--json",
              "--idempotency-key", "k", "--input", "who=x"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["run_id"], id) << r.out;
  EXPECT_EQ(count_lines(marks, "once"), 1);
}

TEST_F(Run, ConcurrencyLimitBoundsExecutionsWithTheSameKey) {
  // Six parallel nodes, keyed by an input, at most two at once.
  std::string text = "name: lim\ninputs: {customer: {type: string}}\nnodes:\n";
  for (int i = 1; i <= 6; ++i) {
    auto n = "w" + std::to_string(i);
    text
      += "  " + n + ":\n    kind: exec\n"
         + "    concurrency: {key: \"cust-{{ inputs.customer }}\", limit: 2}\n"
         + "    command: [\"/bin/sh\", \"-c\", \"echo start >> " + marks
         + "; sleep 0.3; echo end >> " + marks + "\"]\n";
  }
  auto wf = dir.write("lim.yaml", text);
  auto r = troupe(
    {"run", wf.string(), "--data-dir", data, "--input", "customer=acme"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in{marks};
  std::string line;
  int running = 0, most = 0, starts = 0;
  while (std::getline(in, line)) {
    running += line == "start" ? 1 : -1;
    starts += line == "start";
    most = std::max(most, running);
  }
  EXPECT_EQ(starts, 6);
  EXPECT_EQ(most, 2);
}

TEST_F(Run, MapRunsTenThousandItemsInOrder) {
  auto r = troupe({"run", examples + "map.yaml", "--data-dir", data, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["outputs"]["greeted"][3],
            (json{{"city", "Kyiv"}, {"n", 3}}))
    << r.out;
  json items = json::array();
  for (int i = 0; i < 10'000; ++i)
    items.push_back(i);
  auto inputs = dir.write("in.json", json{{"xs", items}}.dump());
  auto wf = dir.write("big.yaml", R"(name: big
inputs: {xs: {type: array}}
nodes:
  each:
    kind: map
    items: "{{ inputs.xs }}"
    max_concurrency: 64
    node: {kind: noop, twice: "{{ item }}"}
outputs:
  out: "{{ nodes.each.output }}"
)");
  r = troupe({"run", wf.string(), "--data-dir", data, "--json", "--inputs-file",
              inputs.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = json::parse(r.out)["outputs"]["out"];
  ASSERT_EQ(out.size(), 10'000u);
  EXPECT_EQ(out[9'999], (json{{"twice", 9'999}}));
  // Not a list: a recorded error on the map node.
  auto bad = dir.write("bad.json", R"({"xs": {"not": "a list"}})");
  r = troupe(
    {"run", wf.string(), "--data-dir", data, "--inputs-file", bad.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err; // the input is typed: array
}

TEST_F(Run, KillDuringAMapResumesWithoutRedoingFinishedItems) {
  std::string text = "name: m\nnodes:\n  each:\n    kind: map\n"
                     "    items: [0, 1, 2, 3, 4, 5]\n    max_concurrency: 2\n"
                     "    node:\n      kind: exec\n"
                     "      command: [\"/bin/sh\", \"-c\", \"echo item$1 >> "
                     + marks
                     + "; sleep 0.4; echo '{}'\", \"sh\", \"{{ item }}\"]\n";
  auto wf = dir.write("m.yaml", text);
  auto p = start({"run", wf.string(), "--data-dir", data});
  auto r
    = kill_and_resume(*p, [&] { return count_lines(marks, "item3") == 1; });
  EXPECT_EQ(resumed_report(r)["state"], "completed") << r.out << r.err;
  // Items 0 and 1 finished before item 3 started (two at a time).
  EXPECT_EQ(count_lines(marks, "item0"), 1);
  EXPECT_EQ(count_lines(marks, "item1"), 1);
  for (int i = 2; i < 6; ++i) {
    auto n = count_lines(marks, "item" + std::to_string(i));
    EXPECT_GE(n, 1) << i;
    EXPECT_LE(n, 2) << i;
  }
  EXPECT_EQ(count_lines(marks, "item5"), 1);
}

TEST_F(Run, BreakersShowsTheLastStatesAndCancelNeedsARunningNode) {
  auto r = troupe({"breakers", "--data-dir", data});
  // No store yet: none is made, and the data dir is named.
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "data dir '" + data + "' does not exist"))
    << r.err;
  auto wf = dir.write("cb.yaml", R"(name: cb
nodes:
  call:
    kind: fail
    times: 1
    retry: {max_attempts: 1}
    circuit_breaker: {key: payments, failure_threshold: 1}
)");
  EXPECT_EQ(troupe({"run", wf.string(), "--data-dir", data}).exit_code, 1);
  r = troupe({"breakers", "--data-dir", data, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto all = json::parse(r.out);
  ASSERT_EQ(all.size(), 1u) << r.out;
  EXPECT_EQ(all[0]["key"], "payments");
  EXPECT_EQ(all[0]["state"], "open");
  // cancel: unknown run, finished run, and an unfinished run with no node.
  EXPECT_EQ(troupe({"cancel", "nope", "--data-dir", data}).exit_code, 1);
  auto slow = dir.write("s.yaml", "name: s\nnodes:\n" + mark_node("a", "")
                                    + "  nap: {kind: sleep, after: [a], "
                                      "duration: 1h}\n");
  auto p = start({"run", slow.string(), "--data-dir", data, "--json"});
  ASSERT_TRUE(wait_until([&] { return count_lines(marks, "a") == 1; }, 30s));
  // While troupe run holds the data dir: it takes no commands.
  r = troupe({"cancel", "x", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "takes no commands")) << r.err;
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
}

TEST_F(Run, AFormatOneStoreIsMigratedAndItsRunsResume) {
  // A finished run holding an idempotency key, and one killed while parked
  // in its sleep, in a store then taken back to format 1's layout.
  auto done = troupe({"run", examples + "hello.yaml", "--data-dir", data,
                      "--idempotency-key", "k1"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  auto wf = dir.write("s.yaml", "name: s\nnodes:\n" + mark_node("a", "")
                                  + "  nap: {kind: sleep, after: [a], "
                                    "duration: 1500ms}\n"
                                  + mark_node("b", "nap"));
  auto p = start({"run", wf.string(), "--data-dir", data});
  ASSERT_TRUE(
    wait_until([&] { return contains(p->err(), " nap  timer_set"); }, 30s))
    << p->err();
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
  troupe::test::downgrade_to_format_one(data);
  ASSERT_EQ(troupe::test::store_format(data), "1");

  // Opened, migrated, and its unfinished run found and finished.
  auto r = troupe({"run", "--resume", "--data-dir", data});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto report = resumed_report(r);
  EXPECT_EQ(report["state"], "completed") << r.out << r.err;
  EXPECT_EQ(count_lines(marks, "a"), 1);
  EXPECT_EQ(count_lines(marks, "b"), 1);
  EXPECT_EQ(troupe::test::store_format(data), "2");
  // The migration rebuilt the reverse idempotency keys: deleting the runs
  // releases the key.
  auto gc = troupe({"gc", "--data-dir", data, "--older-than", "0s", "--json"});
  ASSERT_EQ(gc.exit_code, 0) << gc.err;
  auto removed = json::parse(gc.out, nullptr, false);
  ASSERT_TRUE(removed.is_object()) << gc.out;
  EXPECT_EQ(removed["runs"], 2) << gc.out;
  EXPECT_EQ(removed["keys"], 1) << gc.out;
  auto again = troupe({"run", examples + "hello.yaml", "--data-dir", data,
                       "--idempotency-key", "k1"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_FALSE(contains(again.err, "no new run started")) << again.err;
}

// -- `troupe run FILE` ends with FILE's run ----------------------------------

// A run parked in a long sleep (its process killed -9) is resumed by the next
// `troupe run FILE`, yet does not hold it: the command ends with its own run,
// says what it left, and the parked run stays for --resume.
TEST_F(Run, RunOfAFileEndsWithItsRunAndLeavesOtherResumedRunsParked) {
  auto parked = start({"run", examples + "long-sleep.yaml", "--data-dir", data,
                       "--input", "duration=1h"});
  ASSERT_TRUE(
    wait_until([&] { return contains(parked->err(), " nap  timer_set"); }, 30s))
    << parked->err();
  parked->signal(SIGKILL);
  ASSERT_EQ(parked->wait(10s), -SIGKILL);
  auto o = opts();
  o.time_limit = 30s; // an hour's sleep must not hold it
  auto r = run_process(args({"run", examples + "hello.yaml", "--data-dir", data,
                             "--input", "who=Ada"}),
                       o);
  ASSERT_FALSE(r.timed_out) << "troupe run waited for the parked run\n"
                            << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto out = json::parse(r.out, nullptr, false);
  EXPECT_EQ(out["farewell"], "goodbye, Ada") << r.out;
  EXPECT_TRUE(contains(r.err, "resuming 1 unfinished run")) << r.err;
  EXPECT_TRUE(contains(r.err, "1 other unfinished run resumed from " + data
                                + " is stopped"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "'troupe run --resume --data-dir " + data
                                + "' finishes it"))
    << r.err;
  // Still journaled, still unfinished: --resume takes it up again.
  auto again = start({"run", "--resume", "--data-dir", data});
  EXPECT_TRUE(wait_until(
    [&] { return contains(again->err(), "resuming 1 unfinished run"); }, 30s))
    << again->err();
  again->signal(SIGTERM);
  EXPECT_EQ(again->wait(20s), 128 + SIGTERM) << again->err();
}

// -- progress, piped ---------------------------------------------------------

// Piped, each event is one line; a long message is cut between words, and
// events of the run as a whole carry no attempt number.
TEST_F(Run, PipedProgressLinesKeepWholeWordsAndRunEventsHaveNoAttempt) {
  std::set<std::string> words;
  std::string message;
  for (int i = 1; i <= 80; ++i) {
    char word[8];
    std::snprintf(word, sizeof word, "zq%04d", i);
    words.insert(word);
    message += (i > 1 ? " " : "") + std::string{word};
  }
  auto wf = dir.write("w.yaml", "name: w\nnodes:\n  broken:\n    kind: fail\n"
                                "    times: 9\n    message: \""
                                  + message
                                  + "\"\n    retry: {max_attempts: 2, "
                                    "initial_backoff: 10ms, jitter: none}\n");
  auto r = troupe({"run", wf.string(), "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  int progress_lines = 0;
  std::istringstream lines{r.err};
  std::string line;
  while (std::getline(lines, line)) {
    if (!contains(line, "zq0001"))
      continue;
    ++progress_lines;
    std::istringstream tokens{line};
    std::string token;
    while (tokens >> token) {
      if (token.rfind("z", 0) != 0)
        continue;
      if (token.size() > 3 && token.substr(token.size() - 3) == "...")
        token.resize(token.size() - 3);
      EXPECT_TRUE(words.count(token)) << "cut mid-word: '" << token << "' in\n"
                                      << line;
    }
  }
  // Two failed attempts, the node's failure and the run's, each with the
  // message, and the final word on stderr.
  EXPECT_GE(progress_lines, 4) << r.err;
  EXPECT_TRUE(contains(r.err, "  run_failed")) << r.err;
  // A run that fails after its compensations ran: its run_failed names the
  // failing node, of which no attempt is meant.
  r = troupe({"run", examples + "order-saga.yaml", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "run_failed")) << r.err;
  EXPECT_FALSE(contains(r.err, "attempt 0")) << r.err;
}

// -- progress, in a terminal -------------------------------------------------

namespace {

/// The lines of `screen` that are rows of the progress table.
std::vector<std::string> table_rows(const std::vector<std::string>& screen) {
  std::vector<std::string> rows;
  for (auto& l : screen)
    if (l.rfind("  ", 0) == 0 && l.size() > 2 && l[2] != ' ')
      rows.push_back(l);
  return rows;
}

} // namespace

// A map's items take one row however many there are, and the bytes written
// grow with the items at most linearly (they grew with their square); the
// table never has more lines than the terminal.
TEST_F(Run, LiveTableOfAMapStaysLinearAndWithinTheTerminal) {
  auto wf = dir.write("big.yaml", R"(name: big
inputs: {xs: {type: array}}
nodes:
  each:
    kind: map
    items: "{{ inputs.xs }}"
    max_concurrency: 64
    node: {kind: noop, v: "{{ item }}"}
  done: {kind: noop, after: [each]}
outputs:
  n: "{{ nodes.done.output }}"
)");
  constexpr int rows = 40, cols = 100;
  std::map<int, size_t> bytes;
  for (int n : {500, 2000}) {
    json items = json::array();
    for (int i = 0; i < n; ++i)
      items.push_back(i);
    auto in = dir.write("in" + std::to_string(n) + ".json",
                        json{{"xs", items}}.dump());
    troupe::test::pty_session t{
      args({"run", wf.string(), "--data-dir", data + std::to_string(n),
            "--inputs-file", in.string()}),
      opts().env, dir.path().string(), rows, cols};
    auto started = std::chrono::steady_clock::now();
    auto rc = t.wait(120s);
    auto took = std::chrono::duration<double>(std::chrono::steady_clock::now()
                                              - started)
                  .count();
    ASSERT_TRUE(rc) << n << " items: still running after 120s, "
                    << t.screen().bytes() << " bytes written";
    EXPECT_EQ(*rc, 0) << t.output().substr(0, 2000);
    auto& screen = t.screen();
    bytes[n] = screen.bytes();
    std::cout << n << " items on a " << rows
              << "-row terminal: " << screen.bytes() << " bytes in " << took
              << " s\n";
    EXPECT_LT(screen.most_lines_up(), rows) << n << " items";
    EXPECT_EQ(screen.wraps(), 0u) << n << " items";
    auto table = table_rows(screen.lines());
    EXPECT_LT(table.size(), static_cast<size_t>(rows));
    bool summarised = false;
    for (auto& l : table)
      summarised |= contains(l, "each")
                    && contains(l, std::to_string(n) + "/" + std::to_string(n)
                                     + " done");
    EXPECT_TRUE(summarised) << testing::PrintToString(screen.lines());
  }
  // Bytes per item of the large map within twice those of the small one.
  EXPECT_LE(static_cast<double>(bytes[2000]) / 2000,
            2.0 * static_cast<double>(bytes[500]) / 500)
    << bytes[500] << " bytes for 500 items, " << bytes[2000] << " for 2000";
}

// A fan-out wider than the terminal: the table keeps within it, the running
// node and the failing one on top, and the rest counted in one line.
TEST_F(Run, LiveTableOfAWideFanOutShowsRunningAndFailedNodesFirst) {
  std::string text = "name: wide\nnodes:\n";
  for (int i = 0; i < 60; ++i)
    text += "  n" + std::to_string(100 + i) + ": {kind: noop}\n";
  text += "  slow:\n    kind: exec\n    after: [n159]\n"
          "    command: [\"/bin/sh\", \"-c\", \"sleep 60\"]\n"
          "  broken:\n    kind: fail\n    after: [n159]\n    times: 99\n"
          "    message: no luck\n"
          "    retry: {max_attempts: 50, initial_backoff: 30s, jitter: none}\n";
  auto wf = dir.write("wide.yaml", text);
  constexpr int rows = 24, cols = 80;
  troupe::test::pty_session t{args({"run", wf.string(), "--data-dir", data}),
                              opts().env, dir.path().string(), rows, cols};
  // Both settle: slow runs for a minute, broken waits 30s for its retry.
  std::vector<std::string> table;
  auto settled = [&] {
    t.output(); // reads what is ready
    table = table_rows(t.screen().lines());
    return table.size() >= 3 && contains(table[0], "slow")
           && contains(table[0], "running") && contains(table[1], "broken")
           && contains(table[1], "retrying");
  };
  EXPECT_TRUE(wait_until(settled, 30s))
    << testing::PrintToString(t.screen().lines());
  EXPECT_LT(t.screen().most_lines_up(), rows);
  EXPECT_LT(table.size(), static_cast<size_t>(rows));
  EXPECT_TRUE(contains(table.back(), "more: 0 running, 0 failed, "))
    << table.back();
  EXPECT_EQ(t.screen().wraps(), 0u);
  // Ctrl-C stops it cleanly.
  ASSERT_TRUE(t.write("\x03"));
  EXPECT_EQ(t.wait(20s), 128 + SIGINT) << t.output();
}

// `troupe chaos SCENARIO`: runs a scenario. It starts a local cluster (its
// own etcd and members, on loopback), drives the workload from a thread of
// its own while the main thread injects the faults on schedule and watches
// for their detection, then ends every fault, waits for every accepted run
// to end, checks the invariants over the members' ledgers, their journals
// and the workload's submissions, and reports.

#include "runtime/auth/token.hpp"
#include "runtime/ids/partition.hpp"
#include "tools/chaos/netns.hpp"
#include "tools/chaos/report.hpp"
#include "tools/chaos/scenario.hpp"
#include "tools/chaos/schedule.hpp"
#include "tools/commands.hpp"
#include "tools/control_client.hpp"
#include "tools/local_cluster.hpp"
#include "tools/local_host.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

namespace troupe::tools {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;
using chaos::action;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           steady::now().time_since_epoch())
    .count();
}

int64_t ms_of(const chaos::duration& d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

/// The members' control addresses as the main thread last saw them; the
/// workload's thread reads them.
struct address_book {
  std::mutex mu;
  std::map<std::string, std::string> by_member;

  void set(const std::string& member, const std::string& address) {
    std::lock_guard<std::mutex> guard{mu};
    by_member[member] = address;
  }
  void drop(const std::string& member) {
    std::lock_guard<std::mutex> guard{mu};
    by_member.erase(member);
  }
  std::vector<std::pair<std::string, std::string>> all() {
    std::lock_guard<std::mutex> guard{mu};
    return {by_member.begin(), by_member.end()};
  }
};

/// One answer of a member: the body, or the error's protocol code ("" with
/// `sent` false when it could not be reached, "lost" when the request went
/// out and no answer came).
struct answer {
  json body;
  std::string code;
  std::string message;
  bool ok() const { return code.empty(); }
};

/// Control clients by address, made on first use; one set per thread.
class client_pool {
 public:
  explicit client_pool(std::string token) : token_(std::move(token)) {}

  answer ask(const std::string& address, const json& request,
             std::chrono::milliseconds timeout) {
    answer a;
    auto& c = clients_[address];
    bool sent = false;
    try {
      if (!c) {
        c = std::make_unique<control_client>();
        control_client::options o;
        o.address = address;
        o.token = token_;
        o.connect_timeout = 1s;
        o.wait_ready = 0ms;
        c->connect(o);
      }
      sent = true;
      a.body = c->call(request, timeout);
    } catch (const client_error& e) {
      a.code = e.code.empty() ? (sent ? "lost" : "unreachable") : e.code;
      a.message = e.what();
      if (e.code.empty())
        clients_.erase(address);
    } catch (const std::exception& e) {
      a.code = sent ? "lost" : "unreachable";
      a.message = e.what();
      clients_.erase(address);
    }
    return a;
  }

 private:
  std::string token_;
  std::map<std::string, std::unique_ptr<control_client>> clients_;
};

/// A refusal the member may have acted on before failing to answer.
bool ambiguous(const std::string& code) {
  return code == "lost" || code == "internal";
}

/// Refusals that sending again cannot cure.
bool final_refusal(const std::string& code) {
  return code == "invalid_workflow" || code == "conflict"
         || code == "bad_request" || code == "forbidden";
}

struct workflow_text {
  std::string file;
  std::string text;
};

/// The workload: submits the scenario's runs at their times, each with an
/// idempotency key of its own, trying the next member on a refusal.
class workload_driver {
 public:
  workload_driver(const chaos::scenario& s, std::vector<workflow_text> wfs,
                  std::string key_prefix, std::string token, address_book& book)
      : s_(s), wfs_(std::move(wfs)), prefix_(std::move(key_prefix)),
        pool_(std::move(token)), book_(book) {}

  void start(int64_t t0) {
    t0_ = t0;
    thread_ = std::thread{[this] { loop(); }};
  }

  void join() {
    if (thread_.joinable())
      thread_.join();
  }

  void cancel() { stop_ = true; }

  bool done() const { return finished_; }

  /// The submissions so far (a copy).
  std::vector<chaos::submission> snapshot() {
    std::lock_guard<std::mutex> guard{mu_};
    return subs_;
  }

  /// The run id of submission `index` (1-based), "" when not accepted yet.
  std::string run_of(int64_t index) {
    std::lock_guard<std::mutex> guard{mu_};
    if (index < 1 || index > static_cast<int64_t>(subs_.size()))
      return {};
    return subs_[index - 1].run_id;
  }

  /// The request that submits `sub`.
  json request_for(const chaos::submission& sub) const {
    auto& wf = wfs_[(sub.index - 1) % wfs_.size()];
    return json{{"t", "submit"},
                {"workflow", wf.text},
                {"file", wf.file},
                {"inputs", s_.workload.inputs},
                {"idempotency_key", sub.key}};
  }

  /// Sends `sub` until a member names its run, for up to `budget`.
  void submit(chaos::submission& sub, client_pool& pool,
              std::chrono::milliseconds budget) {
    auto request = request_for(sub);
    auto until = steady::now() + budget;
    size_t turn = static_cast<size_t>(sub.index);
    for (int round = 0; round < 64 && steady::now() < until && !stop_;
         ++round) {
      auto members = book_.all();
      if (members.empty()) {
        std::this_thread::sleep_for(100ms);
        continue;
      }
      // A member that did not answer is passed over for a while, as a
      // client with a breaker would, unless every one is.
      std::string name, address;
      for (size_t k = 0; k < members.size() && name.empty(); ++k) {
        auto& m = members[turn++ % members.size()];
        std::lock_guard<std::mutex> guard{mu_};
        if (avoid_until_[m.first] <= now_ns())
          std::tie(name, address) = m;
      }
      if (name.empty())
        std::tie(name, address) = members[turn++ % members.size()];
      ++sub.tries;
      auto a = pool.ask(address, request, 3s);
      if (a.code == "lost" || a.code == "unreachable") {
        std::lock_guard<std::mutex> guard{mu_};
        avoid_until_[name] = now_ns() + 2'000'000'000;
      }
      if (a.ok()) {
        auto id = a.body.value("run_id", std::string{});
        if (!id.empty()) {
          std::lock_guard<std::mutex> guard{mu_};
          sub.ids_seen.insert(id);
          if (sub.run_id.empty()) {
            sub.run_id = id;
            sub.accepted_ns = now_ns();
          }
          // Published at once, for owner_of targets.
          if (sub.index >= 1 && sub.index <= static_cast<int64_t>(subs_.size())
              && subs_[sub.index - 1].key == sub.key
              && subs_[sub.index - 1].run_id.empty()) {
            subs_[sub.index - 1].run_id = sub.run_id;
            subs_[sub.index - 1].accepted_ns = sub.accepted_ns;
          }
          sub.refused.clear();
          return;
        }
        a.code = "no_run_id";
      }
      sub.refused = a.code;
      sub.ambiguous = sub.ambiguous || ambiguous(a.code);
      if (final_refusal(a.code))
        return;
      if (round % static_cast<int>(members.size() + 1) == 0)
        std::this_thread::sleep_for(50ms);
    }
  }

 private:
  void loop() {
    auto total = s_.workload.total_runs();
    for (int64_t i = 1; i <= total && !stop_; ++i) {
      auto due = t0_
                 + static_cast<int64_t>(static_cast<double>(i - 1) * 1e9
                                        / s_.workload.runs_per_second);
      while (!stop_ && now_ns() < due)
        std::this_thread::sleep_for(std::chrono::nanoseconds{
          std::min<int64_t>(due - now_ns(), 20'000'000)});
      chaos::submission sub;
      sub.index = i;
      sub.key = prefix_ + std::to_string(i);
      sub.workflow = wfs_[(i - 1) % wfs_.size()].file;
      {
        std::lock_guard<std::mutex> guard{mu_};
        subs_.push_back(sub);
      }
      // The copy in subs_ is updated under the lock as answers come.
      chaos::submission work = sub;
      submit(work, pool_, 10s);
      std::lock_guard<std::mutex> guard{mu_};
      subs_[i - 1] = work;
    }
    finished_ = true;
  }

  const chaos::scenario& s_;
  std::vector<workflow_text> wfs_;
  std::string prefix_;
  client_pool pool_;
  address_book& book_;
  int64_t t0_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<chaos::submission> subs_;
  /// Members passed over until then (steady ns), having not answered.
  std::map<std::string, int64_t> avoid_until_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> finished_{false};
};

/// Something the runner does at a time: a scheduled fault, or the end of
/// one (a restart, SIGCONT, a heal).
struct timed_step {
  int64_t at_ns = 0;
  /// The fault's record (index in report.faults).
  size_t record = 0;
  enum class kind {
    fault,
    restart_member,
    heal,
    restart_etcd,
    cont
  } what
    = kind::fault;
  std::string member;
  size_t plan_index = 0;
};

class runner {
 public:
  runner(const global_options& g, const chaos_options& o,
         const chaos::scenario& s, const chaos::schedule& plan)
      : g_(g), o_(o), s_(s), plan_(plan), pool_({}) {}

  int run();
  /// Stops the workload's thread after a failure, keeping the logs.
  void abandon() {
    if (driver_) {
      driver_->cancel();
      driver_->join();
    }
    if (!cluster_.dir.empty())
      cluster_.keep = true;
  }

 private:
  int setup();
  int setup_target();
  void inject(const timed_step& step);
  void end_step(const timed_step& step);
  void poll_members();
  void poll_detection();
  void heal_all();
  std::string make_namespaces();
  std::vector<std::string> hosts_of(const std::vector<std::string>& set) const;
  void settle_runs(int64_t deadline_ns);
  void check(chaos::report& r);
  std::string any_member(const std::string& but = {});
  json partitions_view();
  std::string leader_of(int64_t partition);
  std::vector<int64_t> led_by(const std::string& member);
  /// Asks `member`; one that is down, starting, or none ("") answers
  /// `unreachable` at once.
  answer ask(const std::string& member, const json& request,
             std::chrono::milliseconds timeout = 5s);
  void say(const std::string& line);

  const global_options& g_;
  const chaos_options& o_;
  const chaos::scenario& s_;
  const chaos::schedule& plan_;
  /// The network namespaces, as root; loopback without. Declared before
  /// the cluster, so its members stop before their network goes.
  std::unique_ptr<chaos::netns_lab> lab_;
  local_cluster cluster_;
  address_book book_;
  client_pool pool_;
  std::unique_ptr<workload_driver> driver_;
  chaos::report report_;
  std::vector<timed_step> steps_;
  int64_t t0_ = 0;
  /// The wall clock a second before the start (runs made since are the
  /// workload's).
  int64_t wall_start_ns_ = 0;
  /// Members down (killed, not yet restarted) or stopped; members starting
  /// again, and the incarnation each fault's target had.
  std::set<std::string> killed_, stopped_, starting_, etcd_down_;
  std::map<size_t, std::string> watch_incarnation_;
  std::map<std::string, fs::path> ledgers_;
  /// Per fault record: the members that may tell whether the target is
  /// seen down, and the cuts to heal when it ends.
  std::map<size_t, std::vector<std::string>> watchers_;
  std::map<size_t,
           std::vector<std::pair<std::string, std::vector<std::string>>>>
    cuts_;
  /// The member a `stop` stopped, by its target as written, for the `cont`
  /// of the same target (its owner may have moved since).
  std::map<std::string, std::string> stopped_by_target_;
  uint32_t partitions_ = runtime::default_partitions;
  /// The members' names: the scenario's m1..mN, or the target cluster's.
  std::vector<std::string> names_;
  /// With --target: the scenario's mK to the K-th member of the cluster,
  /// by name.
  std::map<std::string, std::string> alias_;
};

void runner::say(const std::string& line) {
  if (!g_.json)
    std::cerr << "chaos: " << line << "\n";
}

answer runner::ask(const std::string& member, const json& request,
                   std::chrono::milliseconds timeout) {
  if (!cluster_.ports.count(member) || killed_.count(member)
      || stopped_.count(member) || starting_.count(member)) {
    answer a;
    a.code = "unreachable";
    return a;
  }
  return pool_.ask(cluster_.address(member), request, timeout);
}

std::string runner::any_member(const std::string& but) {
  static size_t turn = 0;
  std::vector<std::string> up;
  for (auto& [name, m] : cluster_.members)
    if (name != but && !killed_.count(name) && !stopped_.count(name)
        && !starting_.count(name) && cluster_.ports.count(name))
      up.push_back(name);
  return up.empty() ? std::string{} : up[turn++ % up.size()];
}

json runner::partitions_view() {
  for (int i = 0; i < 3; ++i) {
    auto via = any_member();
    if (via.empty())
      return nullptr;
    auto a = ask(via, {{"t", "partitions"}}, 2s);
    if (a.ok() && a.body.contains("partitions"))
      return a.body;
  }
  return nullptr;
}

std::string runner::leader_of(int64_t partition) {
  auto v = partitions_view();
  // A node alone leads every partition.
  if (v.is_object() && v.value("cluster", std::string{}).empty()
      && names_.size() == 1)
    return names_.front();
  if (v.is_object())
    for (auto& p : v["partitions"])
      if (p.value("partition", int64_t{-1}) == partition)
        return p.value("leader", std::string{});
  return {};
}

std::vector<int64_t> runner::led_by(const std::string& member) {
  std::vector<int64_t> out;
  auto v = partitions_view();
  if (v.is_object())
    for (auto& p : v["partitions"])
      if (p.value("leader", std::string{}) == member)
        out.push_back(p.value("partition", int64_t{-1}));
  return out;
}

std::string runner::make_namespaces() {
  lab_ = std::make_unique<chaos::netns_lab>("troupe-c");
  if (!lab_->error().empty())
    return lab_->error();
  auto names = s_.cluster.member_names();
  auto etcds = s_.cluster.etcd_names();
  names.insert(names.end(), etcds.begin(), etcds.end());
  for (auto& n : names) {
    if (auto e = lab_->add_host(n); !e.empty())
      return e;
    auto path = lab_->path(n);
    cluster_.hosts[n]
      = local_host{lab_->address(n), [path] {
                     return chaos::netns_lab::enter_path(path.c_str());
                   }};
  }
  report_.namespaces = true;
  return {};
}

std::vector<std::string>
runner::hosts_of(const std::vector<std::string>& set) const {
  std::vector<std::string> out;
  for (auto& n : set)
    if (n == "etcd") {
      for (auto& e : s_.cluster.etcd_names())
        out.push_back(e);
    } else {
      out.push_back(n);
    }
  return out;
}

int runner::setup_target() {
  cluster_.token = g_.token;
  if (cluster_.token.empty())
    if (const char* t = std::getenv("TROUPE_TOKEN"))
      cluster_.token = t;
  pool_ = client_pool{cluster_.token};
  auto a = pool_.ask(o_.target, {{"t", "members"}}, 5s);
  if (!a.ok()) {
    std::cerr << "troupe: chaos: --target " << o_.target << " answered "
              << a.code << ": " << a.message << "\n";
    return a.code == "unauthenticated" || a.code == "token_invalid"
               || a.code == "token_expired"
             ? exit_auth
             : exit_unreachable;
  }
  for (auto& m : a.body.value("members", json::array())) {
    auto name = m.value("name", std::string{});
    auto address = m.value("control_address", std::string{});
    auto colon = address.rfind(':');
    if (name.empty() || colon == std::string::npos
        || m.value("state", "") != "up")
      continue;
    names_.push_back(name);
    cluster_.hosts[name].address = address.substr(0, colon);
    cluster_.ports[name]
      = static_cast<uint16_t>(std::stoi(address.substr(colon + 1)));
    cluster_.members[name] = child{};
  }
  std::sort(names_.begin(), names_.end());
  if (static_cast<int>(names_.size()) < s_.cluster.members) {
    std::cerr << "troupe: chaos: " << o_.scenario << ": cluster.members is "
              << s_.cluster.members << ", and the cluster at " << o_.target
              << " has " << names_.size() << " member(s) up\n";
    return exit_bad_input;
  }
  for (size_t i = 0; i < names_.size(); ++i)
    alias_["m" + std::to_string(i + 1)] = names_[i];
  auto v = partitions_view();
  if (v.is_object())
    partitions_ = v.value("count", runtime::default_partitions);
  if (partitions_ == 0)
    partitions_ = runtime::default_partitions;
  if (!o_.ledger_dir.empty()) {
    std::error_code ec;
    for (auto& f : fs::directory_iterator{o_.ledger_dir, ec})
      if (f.is_regular_file())
        ledgers_[f.path().filename().string()] = f.path();
    if (ec) {
      std::cerr << "troupe: chaos: --ledger-dir " << o_.ledger_dir << ": "
                << ec.message() << "\n";
      return exit_bad_input;
    }
  }
  for (auto& n : names_)
    book_.set(n, cluster_.address(n));
  report_.target = o_.target;
  return exit_ok;
}

int runner::setup() {
  auto etcd = find_on_path("etcd");
  if (etcd.empty()) {
    std::cerr << "troupe: chaos: a scenario runs its own etcd, and none is "
                 "on PATH (Debian's etcd-server; tools/bootstrap.sh installs "
                 "it)\n";
    return exit_unreachable;
  }
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) {
    std::cerr << "troupe: chaos: cannot find this program: " << ec.message()
              << "\n";
    return exit_failed;
  }
  auto tmpl = (fs::temp_directory_path() / "troupe-chaos-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    std::cerr << "troupe: chaos: cannot make a scratch folder: "
              << std::strerror(errno) << "\n";
    return exit_failed;
  }
  cluster_.dir = tmpl;
  cluster_.self_exe = self.string();
  cluster_.name = "chaos";
  auto auth_secret = random_hex(32);
  cluster_.env = {{"TROUPE_AUTH_SECRET", auth_secret},
                  {"TROUPE_CLUSTER_SECRET", random_hex(32)},
                  {"TROUPE_CHAOS_HOOKS", "1"}};
  cluster_.token = runtime::auth::issue_token(
    auth_secret, runtime::auth::role::admin, "chaos", std::chrono::hours{24},
    runtime::auth::token_clock::now());
  pool_ = client_pool{cluster_.token};
  cluster_.member_args
    = {"--set", "cluster.replication=" + std::to_string(s_.cluster.replication),
       "--set", "cluster.min_insync=" + std::to_string(s_.cluster.min_insync),
       "--set", "auth.submit_rate=100000",
       "--set", "auth.submit_burst=100000"};
  for (auto& [key, value] : s_.cluster.config)
    cluster_.member_args.insert(cluster_.member_args.end(),
                                {"--set", key + "=" + value});
  partitions_ = static_cast<uint32_t>(s_.cluster.partitions);
  names_ = s_.cluster.member_names();
  for (auto& m : names_) {
    ledgers_[m] = cluster_.dir / ("ledger-" + m);
    cluster_.member_env[m] = {{"TROUPE_CHAOS_LEDGER", ledgers_[m].string()}};
  }
  if (o_.loopback || !chaos::netns_lab::unavailable().empty()) {
    report_.namespaces = false;
  } else if (auto e = make_namespaces(); !e.empty()) {
    std::cerr << "troupe: chaos: cannot set the network namespaces up: " << e
              << "\n";
    return exit_unreachable;
  }
  say("starting " + std::to_string(s_.cluster.etcd_members)
      + " etcd member(s) and " + std::to_string(s_.cluster.members)
      + " member(s) in " + cluster_.dir.string());
  cluster_.start_etcd(etcd, s_.cluster.etcd_names());
  for (auto& m : names_)
    if (auto e = cluster_.start_member(m); !e.empty()) {
      std::cerr << "troupe: chaos: " << e << "\n";
      cluster_.keep = true;
      return exit_unreachable;
    }
  if (!wait_for([&] { return cluster_.all_linked(); }, 60s, 50ms)) {
    std::cerr << "troupe: chaos: the members did not link to each other "
                 "within 60 s\n";
    cluster_.keep = true;
    return exit_unreachable;
  }
  auto whole = [&] {
    auto v = partitions_view();
    if (!v.is_object() || v["partitions"].empty())
      return false;
    for (auto& p : v["partitions"])
      if (p.value("leader", "").empty()
          || static_cast<int>(p.value("isr", json::array()).size())
               < s_.cluster.replication)
        return false;
    return true;
  };
  if (!wait_for(whole, 60s, 100ms)) {
    std::cerr << "troupe: chaos: the partitions did not all get a leader "
                 "and their in-sync replicas within 60 s\n";
    cluster_.keep = true;
    return exit_unreachable;
  }
  for (auto& m : names_)
    book_.set(m, cluster_.address(m));
  return exit_ok;
}

void runner::inject(const timed_step& step) {
  auto& sf = plan_.faults[step.plan_index];
  auto& spec = s_.faults[sf.fault];
  auto& rec = report_.faults[step.record];
  rec.injected_ns = now_ns();
  // Resolve the target now.
  std::string who;
  switch (sf.target.what) {
  case chaos::target::kind::member:
  case chaos::target::kind::random:
    who
      = alias_.count(sf.target.name) ? alias_[sf.target.name] : sf.target.name;
    break;
  case chaos::target::kind::leader_of:
    who = leader_of(sf.target.number);
    if (who.empty())
      rec.outcome = "skipped: partition " + std::to_string(sf.target.number)
                    + " has no leader";
    break;
  case chaos::target::kind::owner_of: {
    auto id = driver_->run_of(sf.target.number);
    if (id.empty()) {
      rec.outcome = "skipped: run " + std::to_string(sf.target.number)
                    + " was not accepted (yet)";
      break;
    }
    who = leader_of(runtime::partition_of_run(id, partitions_));
    if (who.empty())
      rec.outcome = "skipped: the partition of " + id + " has no leader";
    break;
  }
  case chaos::target::kind::none: break;
  }
  if (sf.action == action::cont) {
    // The member an earlier stop of the same target stopped, though its
    // runs may have moved since.
    auto by = stopped_by_target_.find(rec.target);
    if (by != stopped_by_target_.end() && stopped_.count(by->second)) {
      who = by->second;
      rec.outcome.clear();
    }
  }
  rec.resolved = who;
  if (!rec.outcome.empty()) {
    rec.injected_ns = 0;
    return;
  }
  bool is_member = cluster_.members.count(who) > 0;
  if (is_member && sf.action != action::cont
      && (killed_.count(who) || starting_.count(who))) {
    rec.outcome = "skipped: " + who + " is down";
    rec.injected_ns = 0;
    return;
  }
  if (is_member)
    rec.partitions = led_by(who);
  // Detection is watched for the faults that take a member away.
  if (is_member
      && (sf.action == action::kill || sf.action == action::stop
          || sf.action == action::partition)) {
    auto viewer = any_member(who);
    auto e = viewer.empty() ? json{} : cluster_.entry(viewer, who);
    watch_incarnation_[step.record]
      = e.is_object() ? e.value("incarnation", std::string{}) : std::string{};
  }
  // Stamped after the lookups above, just before the fault acts.
  rec.injected_ns = now_ns();
  auto later = [&](timed_step::kind k, const chaos::duration& d) {
    timed_step t;
    t.at_ns = rec.injected_ns + ms_of(d) * 1'000'000;
    t.record = step.record;
    t.what = k;
    t.member = who;
    steps_.push_back(t);
  };
  rec.outcome = "injected";
  switch (sf.action) {
  case action::kill:
    cluster_.members[who].kill();
    killed_.insert(who);
    book_.drop(who);
    later(timed_step::kind::restart_member,
          spec.restart_after.value_or(chaos::duration{2s}));
    break;
  case action::stop:
    if (stopped_.count(who)) {
      rec.outcome = "skipped: " + who + " is stopped already";
      rec.injected_ns = 0;
      return;
    }
    cluster_.members[who].signal(SIGSTOP);
    stopped_.insert(who);
    stopped_by_target_[rec.target] = who;
    if (spec.lasts)
      later(timed_step::kind::cont, *spec.lasts);
    break;
  case action::cont:
    cluster_.members[who].signal(SIGCONT);
    stopped_.erase(who);
    rec.ended = "SIGCONT";
    rec.ended_ns = rec.injected_ns;
    break;
  case action::kill_etcd:
    if (!cluster_.etcd.count(who) || etcd_down_.count(who)) {
      rec.outcome = "skipped: etcd member " + who + " is down";
      rec.injected_ns = 0;
      return;
    }
    cluster_.etcd[who].proc.kill();
    etcd_down_.insert(who);
    later(timed_step::kind::restart_etcd,
          spec.restart_after.value_or(chaos::duration{2s}));
    break;
  case action::slow_disk:
  case action::fail_disk:
  case action::clock_jump: {
    json request{{"t", "fault"}};
    if (sf.action == action::slow_disk)
      request.update(
        {{"hook", "slow_disk"},
         {"delay_ms", ms_of(spec.delay.value_or(chaos::duration{0}))},
         {"for_ms", ms_of(spec.lasts.value_or(chaos::duration{0}))}});
    else if (sf.action == action::fail_disk)
      request.update(
        {{"hook", "fail_disk"},
         {"error", spec.error.empty() ? "io_error" : spec.error},
         {"for_ms", ms_of(spec.lasts.value_or(chaos::duration{0}))}});
    else
      request.update(
        {{"hook", "clock_jump"}, {"offset_ms", ms_of(spec.offset)}});
    auto a = ask(who, request);
    if (!a.ok()) {
      rec.outcome = "failed: " + who + " answered " + a.code
                    + (a.message.empty() ? "" : ": " + a.message);
      return;
    }
    if (spec.lasts) {
      rec.ended = "hook off";
      rec.ended_ns = rec.injected_ns + ms_of(*spec.lasts) * 1'000'000;
    }
    break;
  }
  case action::crash_actor: {
    // The run to crash: the target's own (owner_of), else one running in
    // a partition the target leads.
    std::string run;
    if (sf.target.what == chaos::target::kind::owner_of)
      run = driver_->run_of(sf.target.number);
    else {
      std::set<int64_t> mine(rec.partitions.begin(), rec.partitions.end());
      auto a
        = ask(who, {{"t", "list"}, {"state", "running"}, {"limit", 200}}, 3s);
      if (a.ok())
        for (auto& r : a.body.value("runs", json::array())) {
          auto id = r.value("run_id", std::string{});
          if (mine.count(runtime::partition_of_run(id, partitions_))) {
            run = id;
            break;
          }
        }
    }
    if (run.empty()) {
      rec.outcome = "skipped: no run of " + who + " is running";
      return;
    }
    auto in = ask(who, {{"t", "inspect"}, {"what", "run"}, {"run_id", run}});
    auto actor = in.ok() ? in.body.value("actor_id", int64_t{0}) : 0;
    if (actor == 0) {
      rec.outcome = "skipped: " + run + " has no live actor on " + who
                    + (in.ok() ? "" : " (" + in.code + ")");
      return;
    }
    auto c = ask(who, {{"t", "crash"}, {"actor_id", actor}});
    rec.params = "run " + run;
    if (!c.ok())
      rec.outcome = "failed: crash answered " + c.code;
    break;
  }
  case action::partition: {
    // Each host of one set is cut from every host of the sets after it (a
    // cut drops both ways); a target is cut from everyone.
    std::vector<std::vector<std::string>> sets;
    if (!who.empty()) {
      std::vector<std::string> rest;
      for (auto& [h, _] : cluster_.hosts)
        if (h != who)
          rest.push_back(h);
      sets = {{who}, rest};
    } else {
      for (auto& set : spec.members)
        sets.push_back(hosts_of(set));
      std::string first;
      for (auto& h : sets.front())
        if (cluster_.members.count(h)) {
          if (first.empty())
            first = h;
          auto led = led_by(h);
          rec.partitions.insert(rec.partitions.end(), led.begin(), led.end());
        }
      rec.resolved = first;
      if (!first.empty() && sets.size() > 1) {
        for (auto& v : sets[1])
          if (cluster_.members.count(v))
            watchers_[step.record].push_back(v);
        auto e = watchers_[step.record].empty()
                   ? json{}
                   : cluster_.entry(watchers_[step.record].front(), first);
        watch_incarnation_[step.record]
          = e.is_object() ? e.value("incarnation", std::string{})
                          : std::string{};
      }
    }
    std::string failed;
    for (size_t i = 0; i < sets.size(); ++i)
      for (size_t j = i + 1; j < sets.size(); ++j)
        for (auto& a : sets[i]) {
          if (auto e = lab_->cut(a, sets[j]); !e.empty())
            failed = e;
          cuts_[step.record].emplace_back(a, sets[j]);
        }
    if (!failed.empty())
      rec.outcome = "failed: " + failed;
    later(timed_step::kind::heal, spec.lasts.value_or(chaos::duration{1s}));
    break;
  }
  }
}

void runner::end_step(const timed_step& step) {
  auto& rec = report_.faults[step.record];
  switch (step.what) {
  case timed_step::kind::restart_member:
    cluster_.spawn_member(step.member);
    killed_.erase(step.member);
    starting_.insert(step.member);
    rec.ended = "restarted";
    rec.ended_ns = now_ns();
    break;
  case timed_step::kind::restart_etcd:
    cluster_.restart_etcd(step.member);
    etcd_down_.erase(step.member);
    rec.ended = "restarted";
    rec.ended_ns = now_ns();
    break;
  case timed_step::kind::cont:
    cluster_.members[step.member].signal(SIGCONT);
    stopped_.erase(step.member);
    rec.ended = "SIGCONT";
    rec.ended_ns = now_ns();
    break;
  case timed_step::kind::heal:
    for (auto& [a, others] : cuts_[step.record])
      (void)lab_->heal(a, others);
    cuts_.erase(step.record);
    rec.ended = "healed";
    rec.ended_ns = now_ns();
    break;
  case timed_step::kind::fault: break;
  }
}

void runner::poll_members() {
  for (auto it = starting_.begin(); it != starting_.end();) {
    std::string why;
    if (cluster_.member_ready(*it, why)) {
      book_.set(*it, cluster_.address(*it));
      it = starting_.erase(it);
    } else if (!why.empty()) {
      say(why);
      // Try again: a member that failed to start is started anew.
      cluster_.spawn_member(*it);
      ++it;
    } else {
      ++it;
    }
  }
}

void runner::poll_detection() {
  for (auto& [record, incarnation] : watch_incarnation_) {
    auto& rec = report_.faults[record];
    if (rec.detected_ns || now_ns() - rec.injected_ns > 30'000'000'000)
      continue;
    std::string viewer;
    if (auto w = watchers_.find(record); w != watchers_.end()) {
      for (auto& m : w->second)
        if (!killed_.count(m) && !stopped_.count(m) && !starting_.count(m))
          viewer = m;
    } else {
      viewer = any_member(rec.resolved);
    }
    if (viewer.empty())
      continue;
    auto v = cluster_.view(viewer);
    if (!v.is_object())
      continue;
    // Absent from the list counts as down.
    bool seen = false;
    for (auto& m : v.value("members", json::array()))
      if (m.value("name", "") == rec.resolved)
        seen = m.value("state", "") == "up"
               && m.value("incarnation", "") == incarnation;
    if (!seen)
      rec.detected_ns = now_ns();
  }
}

void runner::heal_all() {
  if (lab_) {
    cuts_.clear();
    if (auto e = lab_->heal_all(); !e.empty())
      say("healing the network: " + e);
  }
  for (auto& m : std::set<std::string>{stopped_}) {
    cluster_.members[m].signal(SIGCONT);
    stopped_.erase(m);
  }
  for (auto& m : std::set<std::string>{killed_}) {
    cluster_.spawn_member(m);
    killed_.erase(m);
    starting_.insert(m);
  }
  for (auto& e : std::set<std::string>{etcd_down_}) {
    cluster_.restart_etcd(e);
    etcd_down_.erase(e);
  }
  for (auto& m : names_)
    if (!starting_.count(m))
      (void)ask(m, {{"t", "fault"}, {"hook", "clear"}}, 2s);
  wait_for(
    [&] {
      poll_members();
      return starting_.empty();
    },
    60s, 50ms);
  for (auto& m : names_)
    (void)ask(m, {{"t", "fault"}, {"hook", "clear"}}, 2s);
}

int runner::run() {
  report_.scenario = s_.name;
  report_.file = o_.scenario;
  report_.seed = plan_.seed;
  report_.members = s_.cluster.members;
  report_.etcd_members = s_.cluster.etcd_members;
  report_.runs_planned = s_.workload.total_runs();
  report_.workload_ms = ms_of(s_.workload.end());
  report_.deadline_ms = ms_of(s_.deadline);
  for (size_t i = 0; i < s_.faults.size(); ++i)
    if (s_.faults[i].action == action::partition) {
      auto why = o_.loopback ? std::string{"--loopback was given"}
                             : chaos::netns_lab::unavailable();
      if (!why.empty()) {
        std::cerr << "troupe: chaos: " << o_.scenario << ": faults[" << i
                  << "]: a partition cuts network namespaces apart, and "
                     "they cannot be used here: "
                  << why << "\n";
        return exit_bad_input;
      }
    }
  if (!o_.report.empty()) {
    // Found out now, not after the whole run.
    std::ofstream probe{o_.report, std::ios::app};
    if (!probe) {
      std::cerr << "troupe: chaos: --report " << o_.report
                << ": cannot write there: " << std::strerror(errno) << "\n";
      return exit_bad_input;
    }
  }
  std::vector<workflow_text> wfs;
  for (auto& p : s_.workload.workflows)
    wfs.push_back({p.filename().string(), read_text_file(p)});
  if (!o_.ledger_dir.empty() && o_.target.empty()) {
    std::cerr << "troupe: chaos: --ledger-dir is for --target: a cluster "
                 "troupe chaos starts writes its ledgers itself\n";
    return exit_bad_input;
  }
  if (!o_.target.empty())
    for (size_t i = 0; i < s_.faults.size(); ++i) {
      auto act = s_.faults[i].action;
      if (act == action::kill || act == action::stop || act == action::cont
          || act == action::kill_etcd || act == action::partition) {
        std::cerr << "troupe: chaos: " << o_.scenario << ": faults[" << i
                  << "]: " << chaos::to_string(act)
                  << " acts on processes troupe chaos started itself, and "
                     "--target names a cluster it did not start (there: "
                     "crash_actor, slow_disk, fail_disk, clock_jump)\n";
        return exit_bad_input;
      }
    }
  if (auto rc = o_.target.empty() ? setup() : setup_target(); rc != exit_ok)
    return rc;
  if (!o_.break_hook.empty()) {
    // Armed once per member: the next node each completes runs again.
    for (auto& m : names_) {
      auto a = ask(m, {{"t", "fault"}, {"hook", o_.break_hook}});
      if (!a.ok()) {
        std::cerr << "troupe: chaos: " << m << " refused --break "
                  << o_.break_hook << ": " << a.code << " " << a.message
                  << "\n";
        cluster_.keep = !cluster_.dir.empty();
        return exit_unreachable;
      }
    }
    say("armed " + o_.break_hook + " on every member (--break)");
  }
  auto prefix = "chaos-" + random_hex(4) + "-";
  driver_
    = std::make_unique<workload_driver>(s_, wfs, prefix, cluster_.token, book_);
  t0_ = now_ns();
  wall_start_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count()
                   - 1'000'000'000;
  for (size_t i = 0; i < plan_.faults.size(); ++i) {
    auto& sf = plan_.faults[i];
    chaos::fault_record rec;
    rec.at_ms = ms_of(sf.at);
    rec.action = std::string{chaos::to_string(sf.action)};
    rec.target = sf.target.to_string();
    rec.params = sf.params;
    report_.faults.push_back(rec);
    timed_step t;
    t.at_ns = t0_ + rec.at_ms * 1'000'000;
    t.record = i;
    t.plan_index = i;
    steps_.push_back(t);
  }
  say("running: " + std::to_string(report_.runs_planned) + " runs, "
      + std::to_string(plan_.faults.size()) + " fault(s), seed "
      + std::to_string(plan_.seed));
  driver_->start(t0_);
  auto deadline_ns = t0_ + report_.deadline_ms * 1'000'000;
  // The faults, in time order, while the workload runs; steps past the
  // deadline are left for heal_all.
  while (now_ns() < deadline_ns) {
    auto next
      = std::min_element(steps_.begin(), steps_.end(),
                         [](auto& a, auto& b) { return a.at_ns < b.at_ns; });
    if (next == steps_.end() && driver_->done())
      break;
    if (next != steps_.end() && next->at_ns <= now_ns()) {
      auto step = *next;
      steps_.erase(next);
      if (step.what == timed_step::kind::fault) {
        inject(step);
        auto& rec = report_.faults[step.record];
        say(rec.action + " "
            + (rec.resolved.empty() ? rec.target : rec.resolved) + ": "
            + rec.outcome);
      } else {
        end_step(step);
      }
      continue;
    }
    poll_members();
    poll_detection();
    std::this_thread::sleep_for(20ms);
  }
  // Past the deadline, the runs not yet submitted are not.
  driver_->cancel();
  driver_->join();
  steps_.clear();
  say("workload done; ending every fault");
  heal_all();
  settle_runs(deadline_ns);
  check(report_);
  report_.elapsed_ms = (now_ns() - t0_) / 1'000'000;
  if (!report_.passed() && !cluster_.dir.empty())
    cluster_.keep = true;
  if (cluster_.keep)
    report_.kept = cluster_.dir.string();
  auto j = chaos::to_json(report_, t0_);
  if (!o_.report.empty()) {
    std::ofstream out{o_.report};
    out << j.dump(2) << "\n";
    if (!out)
      std::cerr << "troupe: chaos: cannot write the report to " << o_.report
                << "\n";
  }
  if (g_.json)
    std::cout << j.dump(2) << "\n";
  else
    std::cout << chaos::to_text(report_, t0_);
  return report_.passed() ? exit_ok : exit_failed;
}

void runner::settle_runs(int64_t deadline_ns) {
  auto subs = driver_->snapshot();
  // Keys whose answer was lost are sent again, as a client would: the run
  // they made, if any, is then accepted.
  for (auto& s : subs)
    if (s.run_id.empty() && s.ambiguous)
      driver_->submit(s, pool_, 10s);
  auto is_final = [](const std::string& st) {
    return st == "completed" || st == "failed" || st == "cancelled";
  };
  std::map<std::string, int> not_found;
  // At least one pass, even past the deadline.
  for (bool first = true; first || now_ns() < deadline_ns; first = false) {
    bool all = true;
    for (auto& s : subs) {
      if (s.run_id.empty() || is_final(s.final_state))
        continue;
      auto a = ask(any_member(), {{"t", "status"}, {"run_id", s.run_id}}, 3s);
      if (a.ok()) {
        s.final_state = a.body.value("state", std::string{});
        if (is_final(s.final_state))
          s.ended_ns = now_ns();
        else
          all = false;
      } else if (a.code == "not_found") {
        // Lost unless a later pass finds it (a copy catching up).
        s.final_state = "unknown";
        ++not_found[s.run_id];
        all = all && not_found[s.run_id] >= 3;
      } else {
        all = false;
      }
    }
    if (all)
      break;
    std::this_thread::sleep_for(250ms);
  }
  // A run is lost only once members said three times they do not know it.
  for (auto& s : subs)
    for (int i = not_found[s.run_id]; s.final_state == "unknown" && i < 3;
         ++i) {
      std::this_thread::sleep_for(300ms);
      auto a = ask(any_member(), {{"t", "status"}, {"run_id", s.run_id}}, 3s);
      if (a.ok())
        s.final_state = a.body.value("state", std::string{});
      else if (a.code != "not_found")
        s.final_state = "";
    }
  report_.runs = subs;
}

void runner::check(chaos::report& r) {
  // The ledgers.
  std::string text;
  for (auto& [m, p] : ledgers_)
    text += read_text_file(p);
  size_t bad = 0;
  auto ledger = chaos::parse_ledger(text, &bad);
  r.ledger_lines = ledger.size();
  r.ledger_bad_lines = bad;
  // Each key sent again: it must name the same run (for two minutes at
  // most; keys not sent again by then are not checked that way).
  std::map<std::string, std::string> again;
  auto again_until = now_ns() + 120'000'000'000;
  for (auto& s : r.runs) {
    if (s.run_id.empty() || now_ns() > again_until)
      continue;
    auto a = ask(any_member(), driver_->request_for(s), 5s);
    again[s.key] = a.ok() ? a.body.value("run_id", std::string{}) : "";
  }
  // Every run the cluster lists that was made since the start (a target
  // cluster may hold older ones), the list had whole: tried three times.
  std::optional<std::set<std::string>> listed;
  for (int attempt = 0; attempt < 3 && !listed; ++attempt) {
    if (attempt > 0)
      std::this_thread::sleep_for(2s);
    listed.emplace();
    std::string after;
    for (int page = 0; page < 10'000; ++page) {
      json request{{"t", "list"}, {"limit", 1000}};
      if (!after.empty())
        request["after"] = after;
      auto a = ask(any_member(), request, 10s);
      if (!a.ok() || a.body.contains("missing_members")) {
        listed.reset();
        break;
      }
      for (auto& run : a.body.value("runs", json::array()))
        if (run.value("created_at_ns", int64_t{0}) >= wall_start_ns_)
          listed->insert(run.value("run_id", std::string{}));
      after = a.body.value("next", std::string{});
      if (after.empty())
        break;
    }
  }
  // The replicas' digests, until they agree (bounded).
  std::map<int64_t, std::map<std::string, json>> digests;
  std::set<int64_t> unreachable;
  bool settled = wait_for(
    [&] {
      digests.clear();
      unreachable.clear();
      std::map<int64_t, std::set<std::string>> replicas;
      for (auto& m : names_) {
        auto a = ask(m, {{"t", "partitions"}, {"digest", true}}, 5s);
        if (!a.ok())
          continue;
        for (auto& p : a.body.value("partitions", json::array())) {
          auto id = p.value("partition", int64_t{-1});
          for (auto& rep : p.value("replicas", json::array()))
            if (rep.is_string())
              replicas[id].insert(rep.get<std::string>());
          bool mine = false;
          for (auto& rep : p.value("replicas", json::array()))
            mine = mine || rep == m;
          if (mine && p.contains("digest"))
            digests[id][m] = p["digest"];
        }
      }
      bool same = true;
      for (auto& [id, reps] : replicas) {
        if (digests[id].size() < reps.size())
          unreachable.insert(id);
        for (auto& [m, d] : digests[id])
          same = same && d == digests[id].begin()->second;
      }
      return same && unreachable.empty();
    },
    60s, 500ms);
  r.invariants.push_back(chaos::check_final(r.runs));
  r.invariants.push_back(chaos::check_not_lost(r.runs));
  // Each accepted run's journal: which attempt completed each node (for
  // two minutes at most; a run not read by then is checked by the ledger
  // alone).
  chaos::journal_completions journals;
  auto journals_until = now_ns() + 120'000'000'000;
  for (auto& s : r.runs) {
    if (s.run_id.empty() || now_ns() > journals_until)
      continue;
    int64_t after = 0;
    for (int page = 0; page < 100; ++page) {
      json request{{"t", "history"}, {"run_id", s.run_id}, {"limit", 1000}};
      if (after > 0)
        request["after"] = after;
      auto a = ask(any_member(), request, 5s);
      if (!a.ok())
        break;
      for (auto& e : a.body.value("events", json::array()))
        if (e.value("type", "") == "node_completed") {
          auto& j = journals[{s.run_id, e.value("node", std::string{})}];
          j.attempt = e.value("attempt", int64_t{0});
          ++j.count;
        }
      after = a.body.value("next", int64_t{0});
      if (after == 0)
        break;
    }
  }
  r.invariants.push_back(chaos::check_no_rerun(ledger, r.runs, &journals));
  r.invariants.push_back(chaos::check_one_run_per_key(r.runs, again, listed));
  r.invariants.push_back(chaos::check_copies(digests, unreachable, settled));
  r.invariants.push_back(chaos::check_fencing(ledger));
  // Per fault: the runs in flight in what it hit, when they moved again,
  // and the retries after it.
  std::map<std::string, const chaos::submission*> by_run;
  for (auto& s : r.runs)
    if (!s.run_id.empty())
      by_run[s.run_id] = &s;
  for (auto& f : r.faults) {
    if (!f.injected_ns)
      continue;
    std::set<int64_t> parts(f.partitions.begin(), f.partitions.end());
    std::set<std::string> hit;
    for (auto& l : ledger) {
      // The target's own lines are not others taking over.
      if (l.ns <= f.injected_ns || !by_run.count(l.run) || hit.count(l.run)
          || l.member == f.resolved)
        continue;
      auto* s = by_run[l.run];
      if (s->accepted_ns == 0 || s->accepted_ns > f.injected_ns)
        continue;
      if (!parts.empty()
          && !parts.count(runtime::partition_of_run(l.run, partitions_)))
        continue;
      if (f.partitions.empty() && !f.resolved.empty()
          && cluster_.members.count(f.resolved))
        continue; // a member that led nothing: no run of its own was hit
      hit.insert(l.run);
      if (!f.resumed_ns)
        f.resumed_ns = l.ns;
    }
    f.affected.assign(hit.begin(), hit.end());
    f.retries
      = hit.empty() ? 0 : chaos::count_retries(ledger, hit, f.injected_ns);
  }
  r.retries = chaos::count_retries(ledger, {});
}

} // namespace

int run_chaos_scenario(const global_options& g, const chaos_options& c,
                       const chaos::scenario& s, const chaos::schedule& plan) {
  runner r{g, c, s, plan};
  try {
    return r.run();
  } catch (const std::exception& e) {
    r.abandon();
    std::cerr << "troupe: chaos: the run stopped: " << e.what() << "\n";
    return exit_unreachable;
  }
}

} // namespace troupe::tools

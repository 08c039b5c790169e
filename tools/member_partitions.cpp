#include "tools/member_partitions.hpp"

#include "actors/node/embedded_node.hpp"
#include "runtime/ids/partition.hpp"
#include "runtime/log/log.hpp"
#include "runtime/metrics/registry.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

namespace troupe::tools {

using json = nlohmann::json;
namespace repl = cluster::replication;

member_partitions::member_partitions(member_partitions_options opts)
    : opts_(std::move(opts)) {
  if (const char* file = std::getenv("TROUPE_TEST_HOLD_RESUME_FILE"))
    hold_file_ = file;
}

member_partitions::~member_partitions() {
  stop();
}

std::function<void(const std::vector<std::pair<uint32_t, uint64_t>>&)>
member_partitions::records_callback() const {
  return hook_.callback();
}

void member_partitions::start(actors::embedded_node& node,
                              cluster::node_service& service,
                              const std::string& member) {
  opts_.member = member;
  node_ = &node;
  service_ = &service;
  if (!hold_file_.empty())
    runtime::log::warn(
      "partitions", "TROUPE_TEST_HOLD_RESUME_FILE is set: while '" + hold_file_
                      + "' exists, no partition this member comes to lead "
                        "is ready to resume its runs (for tests)");
  transport_ = std::make_unique<repl::mesh_transport>(
    node.system(), opts_.member, [this](const std::string& m) {
      auto* peers = mesh_.load();
      return peers ? peers->peer(m) : caf::actor{};
    });
  repl::replicator_options ro;
  ro.member = opts_.member;
  ro.min_insync = opts_.min_insync;
  ro.replica_lag = opts_.replica_lag;
  ro.log_retain_records = opts_.log_retain_records;
  ro.shrink_isr = [this](uint32_t p, uint64_t epoch, const std::string& member,
                         const std::string& reason) {
    if (auto* map = map_.load()) {
      auto r = map->shrink_isr(p, epoch, member, reason);
      if (!r.took())
        runtime::log::warn("replication",
                           "partition " + std::to_string(p) + ": dropping "
                             + member + " from the ISR did not take: " + r.why);
    }
  };
  ro.expand_isr
    = [this](uint32_t p, uint64_t epoch, const std::string& member) {
        if (auto* map = map_.load())
          (void)map->expand_isr(p, epoch, member);
      };
  ro.deposed = [this](uint32_t p, uint64_t, uint64_t newer) {
    if (agent_)
      agent_->follow(p, newer);
  };
  ro.warn
    = [](const std::string& line) { runtime::log::warn("replication", line); };
  replicator_ = std::make_unique<repl::replicator>(node.store(), *transport_,
                                                   std::move(ro));
  transport_->attach(replicator_.get());
  hook_.attach(replicator_.get());

  cluster::partition_agent_options ao;
  ao.count = opts_.count;
  ao.resume = [this](uint32_t p) { return resume(p); };
  ao.release
    = [this](uint32_t p) { return node_->release_partition(p, opts_.count); };
  ao.info
    = [](const std::string& line) { runtime::log::info("partitions", line); };
  ao.warn
    = [](const std::string& line) { runtime::log::warn("partitions", line); };
  ao.metrics = opts_.metrics;
  agent_ = std::make_unique<cluster::partition_agent>(std::move(ao));

  if (auto* m = opts_.metrics) {
    using runtime::metrics::metric_type;
    using runtime::metrics::sample_sink;
    m->add_gauge_callback(
      "troupe_partitions_led",
      "Partitions this member leads and has resumed the runs of.",
      [this] { return static_cast<double>(led().size()); });
    auto per_partition = [this](auto fn) {
      return [this, fn](sample_sink& sink) {
        if (!replicator_ || stopping_.load())
          return;
        for (auto& pm : replicator_->metrics())
          if (pm.role == "leader")
            fn(sink, pm);
      };
    };
    m->add_collector(
      metric_type::gauge, "troupe_partition_isr_size",
      "In-sync replicas (the leader included) of each partition led here.",
      per_partition([](sample_sink& sink, const repl::partition_metrics& pm) {
        sink.add({{"partition", std::to_string(pm.partition)}},
                 static_cast<double>(pm.isr_size));
      }));
    m->add_collector(
      metric_type::gauge, "troupe_replication_commits_waiting",
      "Records written by each partition led here that wait for its "
      "in-sync replicas before they commit.",
      per_partition([](sample_sink& sink, const repl::partition_metrics& pm) {
        sink.add({{"partition", std::to_string(pm.partition)}},
                 static_cast<double>(pm.waiting));
      }));
    m->add_collector(
      metric_type::gauge, "troupe_replication_lag_records",
      "Records each follower of a partition led here lacks.",
      per_partition([](sample_sink& sink, const repl::partition_metrics& pm) {
        for (auto& f : pm.followers)
          sink.add({{"partition", std::to_string(pm.partition)},
                    {"follower", f.member}},
                   static_cast<double>(f.lag_records));
      }));
    m->add_collector(
      metric_type::gauge, "troupe_replication_lag_seconds",
      "How long ago a partition led here wrote the oldest record a follower "
      "lacks.",
      per_partition([](sample_sink& sink, const repl::partition_metrics& pm) {
        for (auto& f : pm.followers)
          sink.add({{"partition", std::to_string(pm.partition)},
                    {"follower", f.member}},
                   static_cast<double>(f.lag_ms) / 1000.0);
      }));
    m->add_collector(
      metric_type::counter, "troupe_replication_records_total",
      "Partition-log records this member shipped as a leader and accepted "
      "as a follower.",
      [this](sample_sink& sink) {
        if (!replicator_ || stopping_.load())
          return;
        auto c = replicator_->counters();
        sink.add({{"direction", "shipped"}},
                 static_cast<double>(c.records_shipped));
        sink.add({{"direction", "accepted"}},
                 static_cast<double>(c.records_accepted));
      });
    m->add_collector(
      metric_type::counter, "troupe_partition_leader_moves_total",
      "Leaderships this member, as the partition controller, moved to "
      "another live member: for balance, or away from a leaving member.",
      [this](sample_sink& sink) {
        auto* map = map_.load();
        if (!map || stopping_.load())
          return;
        auto c = map->moves();
        sink.add({{"reason", "rebalance"}},
                 static_cast<double>(c.leader_rebalance));
        sink.add({{"reason", "leaving"}},
                 static_cast<double>(c.leader_leaving));
      });
    m->add_collector(
      metric_type::counter, "troupe_rebalance_replicas_total",
      "Replicas this member, as the partition controller, added and "
      "removed to move partitions toward their rendezvous targets.",
      [this](sample_sink& sink) {
        auto* map = map_.load();
        if (!map || stopping_.load())
          return;
        auto c = map->moves();
        sink.add({{"change", "added"}}, static_cast<double>(c.replicas_added));
        sink.add({{"change", "removed"}},
                 static_cast<double>(c.replicas_removed));
      });
    m->add_collector(
      metric_type::counter, "troupe_snapshots_sent_total",
      "Snapshots of a partition's state this member, as its leader, sent "
      "whole to a follower that lacked records trimmed from the log.",
      [this](sample_sink& sink) {
        if (!replicator_ || stopping_.load())
          return;
        sink.add({},
                 static_cast<double>(replicator_->counters().snapshots_sent));
      });
    m->add_collector(
      metric_type::counter, "troupe_snapshots_installed_total",
      "Snapshots of a partition's state this member, as a follower, "
      "installed whole in place of its own.",
      [this](sample_sink& sink) {
        if (!replicator_ || stopping_.load())
          return;
        sink.add(
          {}, static_cast<double>(replicator_->counters().snapshots_installed));
      });
    m->add_collector(
      metric_type::counter, "troupe_replication_deposed_total",
      "Times this member learnt a newer epoch deposed it as a "
      "partition's leader.",
      [this](sample_sink& sink) {
        if (!replicator_ || stopping_.load())
          return;
        sink.add({}, static_cast<double>(replicator_->counters().deposed));
      });
  }
  ticker_ = std::thread{[this] {
    for (int i = 0; !stopping_.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds{100});
      if (i % 5 == 4)
        tick();
    }
  }};
}

caf::actor member_partitions::transport_actor() const {
  return transport_ ? transport_->actor() : caf::actor{};
}

void member_partitions::set_mesh(cluster::mesh* peers) {
  mesh_ = peers;
}

void member_partitions::set_map(cluster::partition_map* map) {
  map_ = map;
}

void member_partitions::on_change(const cluster::partition_record& r) {
  if (!r.exists() || stopping_.load() || !replicator_)
    return;
  replicator_->assign(r.partition, r.leader, r.epoch, r.isr, r.replicas);
  if (r.leader == opts_.member)
    agent_->lead(r.partition, r.epoch, r.failover_since_ms);
  else
    agent_->follow(r.partition, r.epoch);
}

void member_partitions::tick() {
  auto* map = map_.load();
  if (!map || !agent_)
    return;
  // Partitions led here whose runs wait to be resumed (too few in-sync
  // replicas at the last try) are tried again; the rest is a no-op. A
  // takeover resumed on a later try is still one, timed from when its old
  // leader was found gone.
  for (auto p : map->led()) {
    auto r = map->record(p);
    agent_->lead(p, r.epoch, r.failover_since_ms);
  }
}

std::optional<size_t> member_partitions::resume(uint32_t p) {
  // A test holding takeovers back: not ready, as a store that has not
  // committed what it holds.
  if (!hold_file_.empty()) {
    std::error_code ec;
    if (std::filesystem::exists(hold_file_, ec))
      return std::nullopt;
  }
  // Its runs' journals are whole once the store has committed every record
  // it held when it came to lead the partition (those of the old leader's
  // that it accepted): only then are they read.
  uint64_t target = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{5};
  for (int i = 0; i < 5000 && !stopping_.load(); ++i) {
    auto pm = replicator_->metrics(p);
    if (pm && pm->role == "leader") {
      if (target == 0)
        target = std::max<uint64_t>(pm->log_end, 1);
      if (pm->committed >= target || pm->log_end == 0)
        return service_->resume_partition(p, opts_.count).resumed.size();
    }
    if (std::chrono::steady_clock::now() >= deadline)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
  return std::nullopt;
}

bool member_partitions::holds(uint32_t p) const {
  auto* map = map_.load();
  if (!map)
    return true;
  auto r = map->record(p);
  return !r.exists()
         || std::find(r.replicas.begin(), r.replicas.end(), opts_.member)
              != r.replicas.end();
}

bool member_partitions::leads(uint32_t p) const {
  return agent_ && agent_->leads(p);
}

std::vector<uint32_t> member_partitions::led() const {
  return agent_ ? agent_->led() : std::vector<uint32_t>{};
}

uint32_t member_partitions::partition_for(const std::string& key) {
  if (!key.empty())
    return runtime::partition_of_key(key, opts_.count);
  auto led_here = led();
  std::vector<uint32_t> open;
  for (auto p : led_here)
    if (replicator_->writable(p).writable)
      open.push_back(p);
  auto& from = open.empty() ? led_here : open;
  if (from.empty())
    return runtime::random_partition() % opts_.count;
  return from[turn_.fetch_add(1, std::memory_order_relaxed) % from.size()];
}

std::string member_partitions::admit(const std::string& key) const {
  if (!agent_ || !replicator_)
    return "the member is starting";
  if (!key.empty()) {
    auto p = runtime::partition_of_key(key, opts_.count);
    if (!agent_->leads(p))
      return "partition " + std::to_string(p)
             + " of this key is not led here yet (it is being taken over); "
               "retry shortly";
    auto w = replicator_->writable(p);
    return w.writable ? std::string{} : w.reason;
  }
  auto led_here = led();
  if (led_here.empty()) {
    // A partition led here whose runs wait to resume because it takes no
    // writes (too few in-sync replicas to commit what it holds): that is
    // why, not a takeover about to end.
    for (auto& m : replicator_->metrics())
      if (m.role == "leader")
        if (auto w = replicator_->writable(m.partition); !w.writable)
          return "member '" + opts_.member
                 + "' leads no partition with its runs resumed yet: "
                 + w.reason;
    return "member '" + opts_.member
           + "' leads no partition with its runs resumed yet; retry shortly";
  }
  std::string reason;
  for (auto p : led_here) {
    auto w = replicator_->writable(p);
    if (w.writable)
      return {};
    if (reason.empty())
      reason = w.reason;
  }
  return "no partition led by member '" + opts_.member
         + "' may take new runs: " + reason;
}

json member_partitions::view(std::optional<uint32_t> one, bool digest) const {
  json body{{"count", opts_.count},
            {"replication", opts_.replication},
            {"min_insync", opts_.min_insync}};
  auto* map = map_.load();
  json list = json::array();
  if (map) {
    body["controller"] = map->controller();
    auto records = map->records();
    for (auto& r : records) {
      if (!r.exists() || (one && r.partition != *one))
        continue;
      json e{{"partition", r.partition},
             {"leader", r.leader},
             {"epoch", r.epoch},
             {"isr", r.isr},
             {"replicas", r.replicas}};
      if (!r.note.empty())
        e["note"] = r.note;
      std::string state = "ok";
      if (auto why = map->unavailable(r.partition); !why.empty()) {
        state = "unavailable";
        e["reason"] = why;
      } else if (r.isr.size() < opts_.min_insync) {
        state = "below_min_insync";
        e["reason"] = std::to_string(r.isr.size())
                      + " in-sync replica(s), cluster.min_insync is "
                      + std::to_string(opts_.min_insync)
                      + ": it takes no new runs or attempts";
      } else if (r.isr.size() < r.replicas.size()) {
        state = "under_replicated";
      }
      // Toward its rendezvous target: where it goes, and the step under
      // way or due.
      auto b = map->balance(r.partition);
      if (!b.target.empty())
        e["target"] = b.target;
      if (!b.next.empty()) {
        e["moving"]
          = b.next + (b.waiting.empty() ? "" : " (waits: " + b.waiting + ")");
        if ((b.moving || b.waiting.empty())
            && (state == "ok" || state == "under_replicated")) {
          state = "moving";
          e["reason"] = b.next;
        }
      }
      e["state"] = state;
      if (replicator_)
        if (auto pm = replicator_->metrics(r.partition)) {
          e["committed"] = pm->committed;
          e["log_end"] = pm->log_end;
          if (pm->role == "leader") {
            e["lag"] = pm->max_lag_records;
            e["lag_ms"] = pm->max_lag_ms;
            e["waiting"] = pm->waiting;
            json followers = json::array();
            for (auto& f : pm->followers)
              followers.push_back(json{{"member", f.member},
                                       {"in_isr", f.in_isr},
                                       {"log_end", f.log_end},
                                       {"lag", f.lag_records},
                                       {"lag_ms", f.lag_ms}});
            e["followers"] = std::move(followers);
          }
        }
      if (agent_)
        e["here"] = agent_->describe(r.partition);
      if (digest && node_)
        if (auto d = node_->store().digest_partition(r.partition))
          e["digest"] = json{{"applied", d->applied},
                             {"runs", d->runs},
                             {"events", d->events},
                             {"digest", d->digest}};
      list.push_back(std::move(e));
    }
  }
  body["partitions"] = std::move(list);
  return body;
}

void member_partitions::stop() {
  if (stopping_.exchange(true))
    return;
  if (ticker_.joinable())
    ticker_.join();
  if (agent_)
    agent_->stop();
  hook_.attach(nullptr);
  if (transport_)
    transport_->attach(nullptr);
  if (replicator_)
    replicator_->stop();
  transport_.reset();
}

} // namespace troupe::tools

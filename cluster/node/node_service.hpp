#pragma once

#include "actors/node/embedded_node.hpp"
#include "cluster/control/control_server.hpp"
#include "cluster/coordination/coordinator.hpp"
#include "runtime/metrics/registry.hpp"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace troupe::cluster {

/// A long-lived node's answers to the control protocol: submissions, run
/// state, history, watches, cancellation, pause and resume, over an embedded
/// node. Blocking work runs on two small worker pools, never on the
/// io_context thread or a CAF scheduler thread: one for submissions and
/// changes of one run (quick; their acknowledgements never wait behind
/// anything slow), one for reads, scans and inspections.
class node_service final : public control_handler {
 public:
  struct options {
    /// Threads for store reads, scans and inspections.
    size_t workers = 2;
    /// Threads for submissions and changes of one run.
    size_t submit_workers = 2;
    /// Submissions per second per subject, and the burst allowed; 0: no
    /// limit.
    double submit_rate = 0;
    double submit_burst = 0;
    /// Most index entries one `list` request scans.
    size_t max_list_scan = 100'000;
    /// Largest answer (bytes, roughly) of `history` and `logs`.
    size_t max_reply_bytes = 2 << 20;
    /// Where runs submitted and finished are counted; may be null.
    runtime::metrics::registry* metrics = nullptr;
    /// The node's effective configuration, secrets masked (inspect config).
    nlohmann::json config = nlohmann::json::object();
    /// How long an actor may take to answer an inspect request.
    std::chrono::milliseconds inspect_timeout{2000};
  };

  node_service(actors::embedded_node& node, boost::asio::io_context& io,
               options opts);
  ~node_service() override;

  node_service(const node_service&) = delete;
  node_service& operator=(const node_service&) = delete;

  /// Resumes the store's unfinished runs; blocking, before serving. With
  /// `only`, just the runs it accepts (by id): a member with replicated
  /// partitions resumes none here, but each partition's when it comes to
  /// lead it (resume_partition).
  actors::embedded_node::recovery
  recover(const std::function<bool(std::string_view run_id)>& only = {});

  /// Resumes the unfinished runs of `partition` (of `count`) that are not
  /// live here, their progress going to the node's watches; blocking, not
  /// from the io_context thread.
  actors::embedded_node::recovery resume_partition(uint32_t partition,
                                                   uint32_t count);

  /// Why the node may not act on state-changing requests yet (submit,
  /// cancel, pause, ...), or nothing when it may. Requests are refused
  /// with not_ready for it; `ping` and GET /ready answer not ready for it,
  /// and for what unavailable() says.
  std::optional<std::string> not_ready_reason() const;

  /// Whether the node acts on state-changing requests (no reason not to).
  bool ready() const { return !not_ready_reason(); }

  /// Why the node, though ready, takes no new work now: it is shutting
  /// down ({status: "draining", reason}), or its data dir is below
  /// storage.min_free ({status: "disk_low", reason, free_bytes,
  /// min_free_bytes}); nothing when it takes work. GET /ready answers 503
  /// with it, and `ping` says the same.
  std::optional<nlohmann::json> unavailable() const;

  /// The node is stopping: from now on refuses with `draining` every
  /// request that changes state (submit, cancel, ...) and every new watch.
  /// Reads are still served, and requests already taken are answered.
  void drain() { draining_ = true; }

  /// Ends each open watch with a `draining` error (its run goes on at the
  /// next start, where it can be watched again); after drain(), and after
  /// the control server's drain so that clients hear why first.
  void end_watches();

  /// What the node knows of its cluster, for `members` and `ping`; set once
  /// the node has joined (until then `members` lists nobody). Null again
  /// before the coordinator goes away.
  void set_cluster(const coordinator* c) { cluster_ = c; }

  /// Where `members` finds each member's load: by member name, JSON fields
  /// ("load", "runs", ...) added to its entry. Null: none shown.
  void set_loads(std::function<std::map<std::string, nlohmann::json>()> f);

  /// Where `partitions` finds the partitions of the member's cluster: with
  /// the partition asked for (or none: all), a JSON object
  /// {count, replication, min_insync, partitions: [{partition, leader,
  /// epoch, isr, replicas, state, ...}]}. Null (a node alone, or before the
  /// member joined): `partitions` says the node leads every partition
  /// itself. With `digest`, each partition also says what this member
  /// applied of it. Called on a worker thread.
  void
  set_partitions(std::function<nlohmann::json(std::optional<uint32_t> partition,
                                              bool digest)>
                   f);

  /// Why a submission with idempotency key `key` ("" for none) cannot be
  /// taken here now, or "": a member whose partitions lack in-sync
  /// replicas refuses new runs (not_ready, saying why) rather than keep
  /// them in fewer copies. Null: every submission may be taken. Called on
  /// the io_context thread: must be quick.
  void set_admit(std::function<std::string(const std::string& key)> f);

  /// Which runs of the store `list` shows (list_filter::keep); null: all.
  /// Called on a worker thread.
  void set_list_scope(std::function<bool(std::string_view run_id)> f);

  /// Which runs of the store `cancel_many` acts on; null: all. A member
  /// with replicated partitions cancels the runs of the partitions it
  /// leads (the forwarder asks every member). Called on the io_context
  /// thread.
  void set_cancel_scope(std::function<bool(std::string_view run_id)> f);

  /// What `leave` does: starts the member's leaving (it drains, hands its
  /// partitions over and goes, as on SIGTERM) and returns "", or returns
  /// why it cannot. Null (a node alone): `leave` is refused. Called on the
  /// io_context thread: must be quick.
  void set_leave(std::function<std::string(const std::string& who)> f);

  /// Waits for the worker pool's jobs; call before destroying the node.
  void stop();

  void handle(const request_ptr& req, const std::string& type,
              const nlohmann::json& msg) override;

  /// The service's state, shared with its jobs and the progress hub.
  struct impl;

 private:
  std::shared_ptr<impl> impl_;
  /// Set once recover() has resumed every unfinished run.
  std::atomic<bool> recovered_{false};
  std::atomic<bool> draining_{false};
  std::atomic<const coordinator*> cluster_{nullptr};
};

} // namespace troupe::cluster

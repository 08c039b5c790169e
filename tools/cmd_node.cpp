// `troupe node start`: a long-lived node serving the control protocol.

#include "cluster/control/control_server.hpp"
#include "cluster/coordination/coordinator.hpp"
#include "cluster/endpoint/http_endpoint.hpp"
#include "cluster/forward/forwarder.hpp"
#include "cluster/membership/etcd_coordinator.hpp"
#include "cluster/membership/failure_detector.hpp"
#include "cluster/mesh/mesh.hpp"
#include "cluster/mesh/secret.hpp"
#include "cluster/mesh/steps.hpp"
#include "cluster/mesh/tls.hpp"
#include "cluster/node/node_service.hpp"
#include "persistence/chaos_hooks.hpp"
#include "persistence/store_holder.hpp"
#include "runtime/auth/token.hpp"
#include "runtime/ids/partition.hpp"
#include "runtime/log/log.hpp"
#include "runtime/log/log_options.hpp"
#include "runtime/metrics/registry.hpp"
#include "tools/commands.hpp"
#include "tools/data_dir.hpp"
#include "tools/member_partitions.hpp"
#include "tools/node_auth.hpp"
#include "tools/node_setup.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>

#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <pthread.h>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <utility> // before Asio: Boost 1.74 with C++20 needs std::exchange

namespace troupe::tools {

namespace asio = boost::asio;

namespace {

void log_line(const std::string& line) {
  runtime::log::info("node", line);
}

/// Splits HOST:PORT (validated by the configuration already).
std::pair<std::string, uint16_t> split_address(const std::string& a) {
  auto colon = a.rfind(':');
  auto host = a.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return {host, static_cast<uint16_t>(std::stoi(a.substr(colon + 1)))};
}

/// Says why a listener did not start (`key` and `flag` name its address)
/// and returns the exit code: 3 when another process has the port.
int listen_failed(const std::string& error, const char* key, const char* flag) {
  // "Address already in use" (control port), "address in use" (HTTP).
  bool taken = error.find("in use") != std::string::npos;
  std::cerr << "troupe: node start: " << error << " (" << key << ")"
            << (taken ? std::string{"; another process listens there: stop "
                                    "it, or give another "}
                          + flag
                      : std::string{})
            << "\n";
  return taken ? exit_unreachable : exit_bad_input;
}

/// Splits NAME=VALUE items (validated by the configuration already).
std::map<std::string, std::string>
to_pairs(const std::vector<std::string>& items) {
  std::map<std::string, std::string> out;
  for (auto& item : items) {
    auto eq = item.find('=');
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

/// This node as a member: what it registers in its cluster.
cluster::member_info self_member(const config::settings& settings,
                                 const std::string& member,
                                 const std::string& control_address) {
  cluster::member_info me;
  me.name = member;
  me.control_address = control_address;
  me.peer_address = settings.get_string("cluster.advertise");
  if (me.peer_address.empty())
    me.peer_address = settings.get_string("cluster.listen");
  me.labels = to_pairs(settings.get_list("cluster.labels"));
  for (auto& [kind, n] : to_pairs(settings.get_list("cluster.capacity")))
    me.capacity[kind] = std::stoll(n);
  me.version = TROUPE_VERSION;
  me.started_at_ms = cluster::now_ms();
  return me;
}

/// HOSTNAME-PORT: a member's name when none is configured.
std::string default_member_name(uint16_t port) {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
    std::snprintf(host, sizeof host, "%s", "member");
  std::string name;
  // Only the characters a member name may hold.
  for (char* c = host; *c; ++c)
    name += std::isalnum(static_cast<unsigned char>(*c)) || *c == '-'
                || *c == '_' || *c == '.'
              ? *c
              : '-';
  return name.substr(0, 50) + "-" + std::to_string(port);
}

bool is_loopback(const std::string& host) {
  if (host == "localhost")
    return true;
  boost::system::error_code ec;
  auto a = asio::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

/// Sets `password` to the etcd user's password: from
/// TROUPE_CLUSTER_ETCD_PASSWORD (cluster.etcd_password) or the file
/// cluster.etcd_password_file (trailing newlines dropped). Returns why there
/// is none, or "" (also when no etcd user is configured). Never says the
/// password.
std::string resolve_etcd_password(const config::settings& settings,
                                  std::string& password) {
  password.clear();
  auto& user = settings.get_string("cluster.etcd_username");
  if (user.empty())
    return {};
  auto& file = settings.get_string("cluster.etcd_password_file");
  if (file.empty()) {
    password = settings.get_string("cluster.etcd_password");
  } else {
    std::error_code ec;
    std::ifstream in{file, std::ios::binary};
    if (!in || std::filesystem::is_directory(file, ec))
      return "cannot read cluster.etcd_password_file " + file
             + " (the password of etcd user '" + user + "')";
    std::ostringstream text;
    text << in.rdbuf();
    password = text.str();
    while (!password.empty()
           && (password.back() == '\n' || password.back() == '\r'))
      password.pop_back();
  }
  if (password.empty())
    return "etcd user '" + user + "' has an empty password "
           + (file.empty() ? std::string{"(TROUPE_CLUSTER_ETCD_PASSWORD)"}
                           : "(cluster.etcd_password_file " + file + ")");
  return {};
}

} // namespace

int run_node_start(const global_options& g, const node_start_options& o) {
  std::vector<config::flag_override> flags;
  if (!o.data_dir.empty())
    flags.push_back({"--data-dir", "node.data_dir", o.data_dir});
  if (!o.listen.empty())
    flags.push_back({"--listen", "control.listen", o.listen});
  if (o.http_given)
    flags.push_back({"--http", "http.listen", o.http});
  if (!o.name.empty())
    flags.push_back({"--name", "node.name", o.name});
  if (!o.cluster.empty())
    flags.push_back({"--cluster", "cluster.name", o.cluster});
  if (!o.etcd.empty())
    flags.push_back({"--etcd", "cluster.etcd", o.etcd});
  if (!o.member.empty())
    flags.push_back({"--member", "cluster.member", o.member});
  config::settings settings;
  if (!load_config(g, flags, settings))
    return exit_bad_input;
  auto listen = settings.get_string("control.listen");
  if (listen.empty()) {
    std::cerr << "troupe: node start: control.listen is empty: a node needs "
                 "a control address (--listen HOST:PORT)\n";
    return exit_bad_input;
  }
  std::string error;
  auto log_opts = runtime::log::options_from(settings, error);
  if (!log_opts) {
    std::cerr << "troupe: node start: " << error << "\n";
    return exit_bad_input;
  }
  if (auto e = runtime::log::setup(*log_opts); !e.empty()) {
    std::cerr << "troupe: node start: " << e << " (log.file)\n";
    return exit_bad_input;
  }
  auto auth = make_authenticator(settings, error);
  if (!auth) {
    std::cerr << "troupe: node start: " << error << "\n";
    return exit_bad_input;
  }
  auto [host, port] = split_address(listen);
  auto name = settings.get_string("node.name");
  // A cluster member proves the cluster secret to its peers: without one
  // (or with one too short to be a secret) it does not start.
  auto cluster_name = settings.get_string("cluster.name");
  std::string cluster_secret;
  if (!cluster_name.empty()) {
    if (auto why = cluster::resolve_secret(
          settings.get_string("cluster.secret"),
          settings.get_string("cluster.secret_file"), cluster_secret);
        !why.empty()) {
      std::cerr << "troupe: node start: " << why << "\n";
      return exit_bad_input;
    }
  }
  // TLS files (the mesh's, etcd's) and the etcd password: checked before
  // anything starts, each problem naming its key and file.
  cluster::tls_files mesh_tls{settings.get_string("cluster.tls_cert"),
                              settings.get_string("cluster.tls_key"),
                              settings.get_string("cluster.tls_ca")};
  cluster::tls_files etcd_tls{settings.get_string("cluster.etcd_cert"),
                              settings.get_string("cluster.etcd_key"),
                              settings.get_string("cluster.etcd_ca"),
                              "cluster.etcd_cert",
                              "cluster.etcd_key",
                              "cluster.etcd_ca",
                              false};
  bool mesh_uses_tls = !mesh_tls.cert.empty();
  std::string etcd_password;
  if (!cluster_name.empty()) {
    for (auto* files : {&mesh_tls, &etcd_tls})
      if (auto why = cluster::check_tls_files(*files); !why.empty()) {
        std::cerr << "troupe: node start: " << why << "\n";
        return exit_bad_input;
      }
    if (auto why = resolve_etcd_password(settings, etcd_password);
        !why.empty()) {
      std::cerr << "troupe: node start: " << why << "\n";
      return exit_bad_input;
    }
  }
  if (settings.get_bool("auth.enabled")
      && runtime::auth::is_weak_secret(settings.get_string("auth.secret")))
    runtime::log::warn("auth", "auth.secret is shorter than 32 bytes: tokens "
                               "signed with it are easier to forge");
  if (!settings.get_bool("auth.enabled"))
    runtime::log::warn(
      "auth",
      std::string{"auth.enabled = false: anyone who can reach "} + listen
        + " may submit, cancel and read every run"
        + (is_loopback(host) ? std::string{}
                             : "; " + host + " IS NOT A LOOPBACK ADDRESS"));

  // Signals are taken by this thread alone (sigwait below); every thread
  // started from here on inherits the mask. Children reset it.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto started = std::chrono::steady_clock::now();
  runtime::metrics::registry metrics;
  auto opts = node_options(settings);
  opts.log = [](const std::string& line) { log_line(line); };
  opts.metrics = &metrics;
  opts.tune_store = [](auto& so) { so.holder.command = "node start"; };
  if (!cluster_name.empty()) {
    // Only a cluster member loads CAF's middleman (the peer mesh).
    auto ms = [&](const char* key) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
        settings.get_duration(key));
    };
    opts.tune_system = [hb = ms("cluster.heartbeat_interval"),
                        ct = ms("cluster.connection_timeout"), mesh_uses_tls,
                        mesh_tls](auto& cfg) {
      cluster::configure_mesh(cfg, hb, ct);
      // Mutual TLS on the mesh: libcaf_openssl, for members with the keys.
      if (mesh_uses_tls)
        cluster::configure_mesh_tls(cfg, mesh_tls);
    };
  }
  // A member's runs go to their idempotency key's partition, or else to
  // the partitions it owns, in turn; a node alone owns them all.
  auto partitions = static_cast<uint32_t>(
    cluster_name.empty() ? runtime::max_partitions
                         : settings.get_int("cluster.partitions"));
  auto owner_of_runs
    = std::make_shared<std::atomic<const cluster::etcd_coordinator*>>(nullptr);
  // Replicated partitions (cluster.replication above 1): the store records
  // each partition's appends in its log, the replicator ships them to the
  // followers, and a partition's runs live where it is led.
  auto replication = static_cast<uint32_t>(
    cluster_name.empty() ? 1 : settings.get_int("cluster.replication"));
  std::unique_ptr<member_partitions> replicated;
  if (replication > 1) {
    member_partitions_options rpo;
    rpo.count = partitions;
    rpo.replication = replication;
    rpo.min_insync
      = static_cast<uint32_t>(settings.get_int("cluster.min_insync"));
    rpo.replica_lag = std::chrono::duration_cast<std::chrono::milliseconds>(
      settings.get_duration("cluster.replica_lag"));
    rpo.log_retain_records
      = static_cast<uint64_t>(settings.get_int("cluster.log_retain_records"));
    rpo.metrics = &metrics;
    replicated = std::make_unique<member_partitions>(std::move(rpo));
    opts.tune_store
      = [partitions, on_records = replicated->records_callback()](auto& so) {
          so.holder.command = "node start";
          so.replication.partitions = partitions;
          so.replication.partition_of
            = [partitions](std::string_view id, std::string_view key) {
                return key.empty() ? runtime::partition_of_run(id, partitions)
                                   : runtime::partition_of_key(key, partitions);
              };
          so.replication.on_records = on_records;
        };
    // Retention (storage.retention, `troupe gc`) deletes the finished runs
    // of the partitions this member leads, through their logs, so that
    // every replica deletes the same (journal_store::collect).
    opts.partition_for = [r = replicated.get()](const std::string& key) {
      return r->partition_for(key);
    };
  } else if (!cluster_name.empty())
    opts.partition_for = [owner_of_runs, partitions,
                          turn = std::make_shared<std::atomic<uint32_t>>(0)](
                           const std::string& key) {
      if (!key.empty())
        return runtime::partition_of_key(key, partitions);
      auto* m = owner_of_runs->load();
      auto owned = m ? m->owned_partitions() : std::vector<uint32_t>{};
      if (owned.empty())
        return runtime::random_partition() % partitions;
      return owned[turn->fetch_add(1, std::memory_order_relaxed)
                   % owned.size()];
    };
  auto node = actors::embedded_node::open(opts, error);
  if (!node)
    return report_open_failure("node start", opts.data_dir, error);

  asio::io_context io{1};
  auto guard = asio::make_work_guard(io);
  std::thread io_thread{[&] { io.run(); }};

  cluster::node_service::options so;
  so.metrics = &metrics;
  so.config
    = nlohmann::json::parse(config::render_json(settings), nullptr, false);
  so.submit_rate = static_cast<double>(settings.get_int("auth.submit_rate"));
  so.submit_burst = static_cast<double>(settings.get_int("auth.submit_burst"));
  cluster::node_service service{*node, io, so};
  // A member forwards requests about runs another member owns to it (once
  // it has joined); a node alone answers everything itself.
  cluster::forward_options fo;
  fo.metrics = &metrics;
  cluster::forwarder forwarding{node->system(), io, service, fo};

  cluster::control_server::options co;
  co.host = host;
  co.port = port;
  co.node_name = name;
  co.max_frame_bytes
    = static_cast<size_t>(settings.get_int("control.max_frame_bytes"));
  co.max_connections
    = static_cast<size_t>(settings.get_int("control.max_connections"));
  co.max_in_flight
    = static_cast<size_t>(settings.get_int("control.max_in_flight"));
  co.idle_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
    settings.get_duration("control.idle_timeout"));
  co.read_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
    settings.get_duration("control.read_timeout"));
  co.hello_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
    settings.get_duration("control.hello_timeout"));
  co.max_connections_per_address = static_cast<size_t>(
    settings.get_int("control.max_connections_per_address"));
  co.tls_cert = settings.get_string("tls.cert");
  co.tls_key = settings.get_string("tls.key");
  cluster::control_server server{io, co, *auth, forwarding};

  std::unique_ptr<cluster::http_endpoint> http;
  if (auto address = settings.get_string("http.listen"); !address.empty()) {
    cluster::endpoint_options eo;
    std::tie(eo.host, eo.port) = split_address(address);
    eo.tls_cert_file = co.tls_cert;
    eo.tls_key_file = co.tls_key;
    cluster::endpoint_handlers handlers;
    handlers.ready = [&service] { return service.ready(); };
    handlers.unavailable = [&service]() -> std::string {
      auto off = service.unavailable();
      return off ? off->dump() : std::string{};
    };
    handlers.metrics = [&metrics] { return metrics.render(); };
    http = std::make_unique<cluster::http_endpoint>(io, eo, handlers);
  }
  auto& recovery_seconds
    = metrics
        .add_gauge("troupe_recovery_duration_seconds",
                   "Time from the node's start until its unfinished runs were "
                   "resumed.")
        .with({});

  // What the node knows of its cluster: itself alone, or the members of
  // its cluster through etcd. Made once the control port is bound.
  std::unique_ptr<cluster::coordinator> coordination;
  cluster::etcd_coordinator* membership = nullptr;
  // A member's peer mesh and failure detector (the detector is then what
  // the node knows of its cluster: etcd's members with the mesh's view).
  std::unique_ptr<cluster::mesh> peers;
  std::unique_ptr<cluster::failure_detector> detector;
  // Where a member's runs place their attempts (here or on the others).
  std::unique_ptr<cluster::step_placer> placer;
  std::atomic<const cluster::coordinator*> view{nullptr};
  // The membership run actors ask whether this member is fenced; null until
  // it joined, and again once it leaves.
  auto fence_of
    = std::make_shared<std::atomic<const cluster::etcd_coordinator*>>(nullptr);
  // The mesh the partition controller asks for links; null until it is
  // made, and again once the member leaves.
  auto mesh_of = std::make_shared<std::atomic<const cluster::mesh*>>(nullptr);
  metrics.add_collector(
    runtime::metrics::metric_type::gauge, "troupe_cluster_members",
    "Members of the cluster by state, as this member sees them.",
    [&view](runtime::metrics::sample_sink& sink) {
      auto* c = view.load();
      if (!c)
        return;
      std::map<std::string, double> by_state{
        {"joining", 0}, {"up", 0}, {"suspect", 0}, {"down", 0}, {"leaving", 0}};
      for (auto& m : c->members())
        by_state[m.state] += 1;
      for (auto& [state, n] : by_state)
        sink.add({{"state", state}}, n);
    });

  // `drain`: how long clients are given to take their answers (0: none).
  auto shut_down = [&](std::chrono::milliseconds drain) {
    if (membership && placer && drain.count() > 0) {
      // Leaving: the key says so (the others place nothing new here, and
      // list this member as leaving), the executor takes no new attempt,
      // and the attempts running here may finish within the drain window.
      auto from = std::chrono::steady_clock::now();
      placer->leave();
      service.drain();
      membership->mark_leaving();
      if (replicated) {
        // The controller moves the partitions this member leads to other
        // in-sync replicas; their runs go with them (stopped here, resumed
        // there from the copies).
        auto* map = membership->partitions();
        auto self = membership->self().member;
        while (map && !map->leaders_of(self).empty()
               && std::chrono::steady_clock::now() - from < drain)
          std::this_thread::sleep_for(std::chrono::milliseconds{20});
        if (auto left = map ? map->leaders_of(self).size() : 0; left > 0)
          log_line("leaving the cluster with " + std::to_string(left)
                   + " partition(s) still led here: no in-sync replica took "
                     "them within the drain window");
        else
          log_line("leaving the cluster: every partition led here was "
                   "handed over");
      }
      auto running = placer->running();
      if (running > 0)
        log_line("leaving the cluster: waiting up to "
                 + std::to_string(drain.count()) + "ms for "
                 + std::to_string(running)
                 + " attempt(s) running here to finish");
      while (placer->running() > 0
             && std::chrono::steady_clock::now() - from < drain)
        std::this_thread::sleep_for(std::chrono::milliseconds{20});
      if (auto left = placer->running(); left > 0)
        log_line("drain window passed with " + std::to_string(left)
                 + " attempt(s) running here; they are stopped");
      // What is left of the window is the clients' (at least a little).
      auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - from);
      drain = std::max(drain - spent,
                       std::min(drain, std::chrono::milliseconds{500}));
    }
    // Leaving first: the others see this member go at once, not after its
    // lease's TTL.
    service.set_loads(nullptr);
    service.set_cluster(nullptr);
    view = nullptr;
    // The detector revokes nothing from here on; then the lease goes, and
    // the links with the mesh's actors (before the actor system stops).
    forwarding.stop();
    if (placer)
      placer->stop();
    if (detector)
      detector->stop();
    fence_of->store(nullptr);
    mesh_of->store(nullptr);
    owner_of_runs->store(nullptr);
    if (replicated) {
      replicated->set_map(nullptr);
      replicated->stop();
    }
    if (membership)
      membership->leave();
    if (peers)
      peers->stop();
    // Nothing new is taken on from here.
    service.drain();
    // Journal writes held for disk space would keep a submission waiting on
    // the pool: fail them now (the runs resume from their journals later).
    if (node->disk_low())
      node->store().flush();
    if (drain.count() > 0) {
      // Every connection hears that the node stops, gets what it is owed
      // (submissions taken, reads) and is closed, within `drain`.
      server.drain(drain);
      // Queued after the notices: open watches end with `draining`.
      service.end_watches();
      if (!server.wait_closed(drain + std::chrono::milliseconds{500}))
        log_line("drain deadline passed; closing the remaining connections");
    }
    if (http)
      http->stop();
    server.stop();
    // The service's jobs and its progress hub end before the node's
    // actors, which the node then stops (and with them their children).
    service.stop();
    node->stop();
    guard.reset();
    io.stop();
    io_thread.join();
    node.reset();
  };

  if (auto e = server.start(); !e.empty()) {
    shut_down({});
    return listen_failed(e, "control.listen", "--listen");
  }
  if (http) {
    if (auto e = http->start(); !e.empty()) {
      shut_down({});
      return listen_failed(e, "http.listen", "--http");
    }
    log_line("health and metrics on http"
             + std::string{co.tls_cert.empty() ? "" : "s"} + "://"
             + split_address(settings.get_string("http.listen")).first + ":"
             + std::to_string(http->port()) + "/metrics");
  }
  auto control_address = host + ":" + std::to_string(server.port());
  auto member = settings.get_string("cluster.member");
  if (member.empty())
    member = cluster_name.empty() ? name : default_member_name(server.port());
  auto me = self_member(settings, member, control_address);
  auto svc = node->shared_services();
  svc->member = member;
  // Test-only switches of `troupe chaos` (docs/chaos.md), from the
  // environment alone: no configuration turns them on.
  if (persistence::chaos::hooks_enabled())
    log_line("TROUPE_CHAOS_HOOKS=1: fault hooks are on (for tests only)");
  if (persistence::chaos::ledger_on() && !cluster_name.empty())
    persistence::chaos::set_ledger_member(
      member, [partitions](std::string_view id) {
        return runtime::partition_of_run(id, partitions);
      });
  if (!cluster_name.empty()) {
    // The gate for peers: on cluster.listen, else on the control host with
    // a free port; registered as the peer address (or cluster.advertise).
    cluster::mesh_options mo;
    mo.cluster = cluster_name;
    mo.member = member;
    mo.secret = cluster_secret;
    mo.tls = mesh_uses_tls;
    mo.host = host;
    if (auto l = settings.get_string("cluster.listen"); !l.empty())
      std::tie(mo.host, mo.port) = split_address(l);
    mo.info = [](const std::string& line) { runtime::log::info("mesh", line); };
    mo.warn = [](const std::string& line) { runtime::log::warn("mesh", line); };
    cluster::placer_options po;
    po.member = member;
    po.default_placement = settings.get_string("cluster.placement");
    po.capacity = me.capacity;
    po.metrics = &metrics;
    po.runs_owned = [svc] { return svc->runs_live.load(); };
    placer = std::make_unique<cluster::step_placer>(node->system(), po, svc);
    svc->place = placer->hook();
    mo.executor = placer->executor();
    mo.loads = placer->reports();
    mo.forwarder = forwarding.server();
    if (replicated) {
      replicated->start(*node, service, member);
      service.set_admit([r = replicated.get()](const std::string& key) {
        return r->admit(key);
      });
      service.set_list_scope(
        [r = replicated.get(), partitions](std::string_view run_id) {
          return r->holds(runtime::partition_of_run(run_id, partitions));
        });
      service.set_cancel_scope(
        [r = replicated.get(), partitions](std::string_view run_id) {
          return r->leads(runtime::partition_of_run(run_id, partitions));
        });
      service.set_partitions(
        [r = replicated.get()](std::optional<uint32_t> one, bool digest) {
          return r->view(one, digest);
        });
      mo.replicator = replicated->transport_actor();
    }
    peers = std::make_unique<cluster::mesh>(node->system(), mo);
    if (replicated)
      replicated->set_mesh(peers.get());
    mesh_of->store(peers.get());
    service.set_loads([p = placer.get()] { return p->loads(); });
    // A member not joined (its lease may have expired) starts no work until
    // it has joined again: set once it has (before, nothing is fenced: no
    // member holds this one's runs yet).
    svc->fence = [fence_of] {
      auto* m = fence_of->load();
      if (!m || m->self().joined)
        return std::string{};
      return std::string{"member fenced: not joined to the cluster"};
    };
    if (auto e = peers->listen(); !e.empty()) {
      shut_down({});
      return listen_failed(e, "cluster.listen", "--set cluster.listen=...");
    }
    if (settings.get_string("cluster.advertise").empty())
      me.peer_address
        = (mo.host.find(':') != std::string::npos ? "[" + mo.host + "]"
                                                  : mo.host)
          + ":" + std::to_string(peers->port());
    log_line("cluster peers on " + mo.host + ":" + std::to_string(peers->port())
             + " (advertised as " + me.peer_address
             + (mesh_uses_tls ? "; mutual TLS" : "") + ")");
  }
  if (cluster_name.empty()) {
    coordination = std::make_unique<cluster::local_coordinator>(
      me, runtime::max_partitions);
  } else {
    cluster::membership_options mo;
    mo.cluster = cluster_name;
    mo.self = me;
    mo.etcd.endpoints = settings.get_list("cluster.etcd");
    mo.etcd.request_timeout
      = std::chrono::duration_cast<std::chrono::milliseconds>(
        settings.get_duration("cluster.etcd_timeout"));
    mo.etcd.call_timeout = 3 * mo.etcd.request_timeout;
    mo.etcd.ca_file = etcd_tls.ca;
    mo.etcd.cert_file = etcd_tls.cert;
    mo.etcd.key_file = etcd_tls.key;
    mo.etcd.username = settings.get_string("cluster.etcd_username");
    mo.etcd.password = etcd_password;
    // etcd's latency and errors by operation, for every client of this
    // member (membership, detector).
    auto& etcd_latency = metrics.add_histogram(
      "troupe_etcd_request_duration_seconds",
      "etcd calls by operation: time from the first try to the answer, "
      "retries across endpoints included.");
    auto& etcd_errors = metrics.add_counter(
      "troupe_etcd_errors_total",
      "etcd calls that failed, by operation and kind (unreachable, refused, "
      "bad_answer, invalid).");
    mo.etcd.observe = [&etcd_latency, &etcd_errors](
                        const std::string& op, std::chrono::nanoseconds took,
                        const std::string& error) {
      etcd_latency.with({{"op", op}}).observe(took);
      if (!error.empty())
        etcd_errors.with({{"op", op}, {"kind", error}}).inc();
    };
    mo.lease_ttl = std::chrono::duration_cast<std::chrono::seconds>(
      settings.get_duration("cluster.lease_ttl"));
    mo.partitions = partitions;
    mo.held_partitions = node->partitions_held(partitions);
    // With one replica a partition stays with the member whose store holds
    // its runs; with more, its leader moves to an in-sync replica when it
    // is lost, and the records tell the replicator who leads what.
    mo.replication = replication;
    mo.rebalance_concurrency = static_cast<uint32_t>(
      settings.get_int("cluster.rebalance_concurrency"));
    if (replicated)
      mo.on_partition_change
        = [r = replicated.get()](const cluster::partition_record& rec) {
            r->on_change(rec);
          };
    // The controller moves a partition away from a leader that registered
    // again while it has no link to it (see partition_map_options::linked).
    mo.linked = [mesh_of](const std::string& name) {
      auto* m = mesh_of->load();
      if (!m)
        return true;
      auto links = m->links();
      auto i = links.find(name);
      return i != links.end() && i->second.state == "connected";
    };
    mo.info
      = [](const std::string& line) { runtime::log::info("cluster", line); };
    mo.warn
      = [](const std::string& line) { runtime::log::warn("cluster", line); };
    // The chaos ledger (tests only): a lost lease fences this member.
    if (persistence::chaos::ledger_on())
      mo.on_joined
        = [](bool joined) { persistence::chaos::note_member_fenced(!joined); };
    auto etcd_member = std::make_unique<cluster::etcd_coordinator>(mo);
    if (auto failed = etcd_member->join()) {
      etcd_member.reset();
      shut_down({});
      // Where to look: the TLS keys, the user, or the endpoints.
      auto& m = failed.message;
      std::string hint;
      if (m.find("TLS with etcd failed") != std::string::npos)
        hint = " (cluster.etcd, cluster.etcd_ca, cluster.etcd_cert)";
      else if (m.find("etcd refused user") != std::string::npos)
        hint = " (cluster.etcd_username and its password)";
      else if (failed.what == cluster::join_failure::kind::unreachable)
        hint = " (cluster.etcd); is etcd running there?";
      std::cerr << "troupe: node start: cannot join cluster '" << cluster_name
                << "': " << m << hint << "\n";
      return exit_unreachable;
    }
    membership = etcd_member.get();
    if (replicated)
      replicated->set_map(membership->partitions());
    fence_of->store(membership);
    owner_of_runs->store(membership);
    coordination = std::move(etcd_member);
    peers->start([membership] { return membership->members(); },
                 [membership] { return membership->self().incarnation; });
    placer->start([membership] { return membership->members(); },
                  [membership] { return membership->self().incarnation; },
                  *peers);
    cluster::detector_options dopts;
    dopts.cluster = cluster_name;
    dopts.member = member;
    dopts.etcd = mo.etcd;
    dopts.info = mo.info;
    dopts.warn = mo.warn;
    // Paused longer than half the connection timeout: links may have been
    // lost because of this member itself.
    auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      settings.get_duration("cluster.connection_timeout"));
    dopts.pause = timeout / 2;
    dopts.settle = timeout / 2;
    detector = std::make_unique<cluster::failure_detector>(
      dopts, *membership, [p = peers.get()] { return p->links(); });
    detector->start();
    auto joined = coordination->self();
    log_line("joined cluster '" + cluster_name + "' as member '" + member
             + "' (incarnation " + joined.incarnation + ", lease TTL "
             + std::to_string(joined.lease_ttl_s) + "s)");
  }
  const cluster::coordinator* known = coordination.get();
  if (detector)
    known = detector.get();
  service.set_cluster(known);
  if (membership)
    // `troupe leave`, `troupe drain MEMBER`: leaving as on SIGTERM, which
    // this process's main thread waits for.
    service.set_leave([](const std::string& who) {
      log_line("asked to leave the cluster by " + who);
      ::kill(::getpid(), SIGTERM);
      return std::string{};
    });
  view = known;
  if (peers)
    forwarding.start(*peers, *known);

  // Whoever the data dir refuses now learns where to ask instead.
  (void)persistence::write_store_holder(
    opts.data_dir, {0, "node start",
                    std::string{co.tls_cert.empty() ? "" : "tls://"} + host
                      + ":" + std::to_string(server.port())});
  log_line("node '" + name + "' listening on " + host + ":"
           + std::to_string(server.port())
           + (co.tls_cert.empty() ? "" : " (TLS)") + ", data dir "
           + settings.get_string("node.data_dir") + ", durability "
           + settings.get_string("storage.durability"));

  // With replicated partitions a member resumes a partition's runs when it
  // comes to lead it (and its store has committed what it holds), not here.
  auto recovered = replicated
                     ? service.recover([](std::string_view) { return false; })
                     : service.recover();
  for (auto& p : recovered.problems)
    log_line("not resumed: " + p);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
    std::chrono::steady_clock::now() - started);
  recovery_seconds.set(static_cast<double>(took.count()) / 1000.0);
  log_line("ready: resumed " + std::to_string(recovered.resumed.size())
           + " unfinished run(s) in " + std::to_string(took.count()) + "ms");

  int sig = 0;
  sigwait(&stop_signals, &sig);
  auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(
    settings.get_duration("node.shutdown_grace"));
  log_line(std::string{"received "} + (sig == SIGTERM ? "SIGTERM" : "SIGINT")
           + ": draining (no new submissions; attempts stopped; runs resume "
             "on the next start), within "
           + std::to_string(grace.count()) + "ms");
  // A drain that hangs must not keep the node alive: everything it would
  // finish is journaled already.
  std::thread watchdog{[grace] {
    std::this_thread::sleep_for(grace);
    log_line("shutdown grace period passed; exiting now");
    // _Exit runs no exit handlers: write the queued log lines first.
    runtime::log::flush();
    std::_Exit(exit_ok);
  }};
  watchdog.detach();
  // The drain takes at most half the grace: the rest is for the runs.
  shut_down(std::min(std::chrono::duration_cast<std::chrono::milliseconds>(
                       settings.get_duration("control.drain_timeout")),
                     grace / 2));
  log_line("stopped");
  runtime::log::shutdown();
  return exit_ok;
}

} // namespace troupe::tools

#include "cluster/forward/forwarder.hpp"

#include "cluster/mesh/mesh.hpp"
#include "runtime/auth/role.hpp"
#include "runtime/ids/partition.hpp"
#include "runtime/log/log.hpp"
#include "runtime/metrics/registry.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <caf/all.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <unordered_map>
#include <utility> // before Asio: Boost 1.74 with C++20 needs std::exchange
#include <vector>

namespace troupe::cluster {

namespace asio = boost::asio;
using json = nlohmann::json;
using control::error_code;

namespace {

// Local messages of the relay (never on the wire).
using go_atom = caf::atom_constant<caf::atom("f_go")>;
using expire_atom = caf::atom_constant<caf::atom("f_expire")>;
using drop_atom = caf::atom_constant<caf::atom("f_drop")>;

/// JSON as text for the wire; invalid UTF-8 is replaced, never thrown on.
std::string text_of(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// The run a request of `type` names, or "" when it names none (or one
/// the node service refuses anyway: it answers those itself).
std::string run_named(const std::string& type, const json& msg) {
  static const std::set<std::string> about_one_run
    = {"status", "result", "history", "logs",  "watch",
       "cancel", "pause",  "resume",  "retry", "inspect"};
  if (!about_one_run.count(type))
    return {};
  if (type == "inspect") {
    auto what = msg.find("what");
    if (what == msg.end() || !what->is_string()
        || (*what != "run" && *what != "node"))
      return {};
  }
  auto i = msg.find("run_id");
  if (i == msg.end() || !i->is_string())
    return {};
  auto id = i->get<std::string>();
  if (id.size() > 256 || id.find('\0') != std::string::npos)
    return {};
  return id;
}

/// How member `name` failed a request sent to every member, from its error
/// `answer`: {member, state (as this member sees it when it could not be
/// asked, else "up"), reason}.
json member_failure(const std::string& name, const json& answer) {
  auto extra = answer.value("extra", json::object());
  auto state = extra.is_object() && extra.contains("owner_state")
                 ? extra.value("owner_state", std::string{})
                 : std::string{"up"};
  return json{{"member", name},
              {"state", state},
              {"reason", answer.value("code", std::string{"internal"}) + ": "
                           + answer.value("message", std::string{})}};
}

/// Fails `req` as a member's error answer `refused` did: the request
/// itself was wrong, and the client hears why, as from a node alone.
void fail_as(const request_ptr& req, const json& refused) {
  auto code = control::parse_error_code(refused.value("code", ""));
  auto extra = refused.value("extra", json::object());
  req->fail(code.value_or(error_code::internal),
            refused.value("message", std::string{}),
            extra.is_object() ? extra : json::object());
}

/// Answers to a request served by someone else, delivered to a callback:
/// how `list` collects the pages of every member.
class collect_context final : public request_context {
 public:
  using done_fn = std::function<void(bool ok, json answer)>;

  collect_context(request_ptr client, done_fn done)
      : client_(std::move(client)), done_(std::move(done)) {}

  ~collect_context() override {
    if (!answered_.exchange(true))
      done_(false, json{{"code", "internal"},
                        {"message", "dropped without an answer"}});
  }

  uint64_t id() const override { return client_->id(); }
  const principal& who() const override { return client_->who(); }

  void reply(json body) override {
    if (!answered_.exchange(true))
      done_(true, std::move(body));
  }

  void fail(error_code code, const std::string& message, json extra) override {
    if (answered_.exchange(true))
      return;
    done_(false, json{{"code", std::string{control::to_string(code)}},
                      {"message", message},
                      {"extra", std::move(extra)}});
  }

  void event(json) override {}
  void end(json body) override { reply(std::move(body)); }
  bool closed() const override { return client_->closed(); }
  void on_close(std::function<void()>) override {}

 private:
  request_ptr client_;
  done_fn done_;
  std::atomic<bool> answered_{false};
};

/// The pages of every member, merged into one once all have answered.
struct list_merge {
  request_ptr req;
  size_t limit = 50;
  /// The cursor asked for.
  std::string after;
  std::mutex mtx;
  size_t waiting = 0;
  std::vector<json> pages;
  json missing = json::array();
  std::optional<json> refused;

  /// Takes member `name`'s answer; the last one answers the client.
  void take(const std::string& name, bool local, bool ok, json answer) {
    {
      std::lock_guard guard{mtx};
      if (ok) {
        pages.push_back(std::move(answer));
      } else if (local || answer.value("code", "") == "bad_request") {
        // The request itself is wrong (or the cursor's owner refuses the
        // cursor): the client hears why, as from a node alone.
        if (!refused)
          refused = std::move(answer);
      } else {
        // Its state as this member sees it when it could not be asked;
        // else it answered with an error.
        missing.push_back(member_failure(name, answer));
      }
      if (--waiting > 0)
        return;
    }
    finish();
  }

  void finish() {
    if (refused)
      return fail_as(req, *refused);
    bool known = false;
    for (auto& p : pages)
      known = known || p.value("cursor_known", false);
    if (!after.empty() && !known && missing.empty())
      // As a node alone says it, for the whole cluster.
      return req->fail(error_code::bad_request,
                       "list: field 'after': '" + after
                         + "' is not a cursor: no member has a run with that "
                           "id (a cursor is the 'next' of an earlier page)");
    auto body = merge_list_pages(pages, limit);
    if (!missing.empty())
      body["missing_members"] = std::move(missing);
    req->reply(std::move(body));
  }
};

/// The answers of every member to a request each answers for the runs of
/// the partitions it leads (`gc`, `cancel_many`), summed once all have
/// answered.
struct member_sum {
  request_ptr req;
  /// The fields summed: {runs, events, keys, tombstones} or {count}.
  std::vector<std::string> counts;
  std::mutex mtx;
  size_t waiting = 0;
  /// The sums, `run_ids` joined (at most 100), and the other fields as
  /// the first member to answer gave them (older_than_ms, dry_run).
  json body = json::object();
  /// Whether every member answered `kept_all` (gc: its retention keeps
  /// every run).
  bool kept_all = true;
  /// Per member that answered: its counts.
  json each = json::array();
  /// Per member that did not: {member, state, reason}.
  json failed = json::array();
  std::optional<json> refused;

  /// Takes member `name`'s answer; the last one answers the client.
  void take(const std::string& name, bool ok, json answer) {
    {
      std::lock_guard guard{mtx};
      if (ok) {
        json mine{{"member", name}};
        for (auto& f : counts) {
          auto n = answer.value(f, uint64_t{0});
          body[f] = body.value(f, uint64_t{0}) + n;
          mine[f] = n;
        }
        kept_all = kept_all && answer.value("kept_all", false);
        for (auto& [k, v] : answer.items()) {
          if (k == "run_ids" && v.is_array()) {
            auto& ids = body["run_ids"];
            if (!ids.is_array())
              ids = json::array();
            for (auto& id : v)
              if (ids.size() < 100)
                ids.push_back(id);
          } else if (k != "kept_all" && !body.contains(k)) {
            body[k] = v;
          }
        }
        each.push_back(std::move(mine));
      } else if (answer.value("code", "") == "bad_request") {
        // The request itself is wrong: the client hears why.
        if (!refused)
          refused = std::move(answer);
      } else {
        failed.push_back(member_failure(name, answer));
      }
      if (--waiting > 0)
        return;
    }
    finish();
  }

  void finish() {
    if (refused)
      return fail_as(req, *refused);
    for (auto& f : counts)
      if (!body.contains(f))
        body[f] = 0;
    body["members"] = std::move(each);
    if (kept_all && failed.empty())
      body["kept_all"] = true;
    if (!failed.empty())
      body["failed_members"] = std::move(failed);
    req->reply(std::move(body));
  }
};

} // namespace

// -- the forwarder's state ----------------------------------------------------

struct forwarder::impl : std::enable_shared_from_this<impl> {
  /// A request sent to another member, waiting for its answers.
  struct pending {
    request_ptr req;
    std::string type;
    /// What it is about, for errors: "run X" or "idempotency key 'K'",
    /// and the fields that say so (run_id, partition).
    std::string about;
    json fields;
    std::string owner;
    /// The owner's mesh actor.
    caf::actor to;
    /// The request's JSON, until sent.
    std::string body;
    bool stream = false;
    std::chrono::milliseconds timeout{0};
  };

  impl(caf::actor_system& s, asio::io_context& i, control_handler& in,
       forward_options o)
      : sys(s), io(i), inner(in), opts(o) {
    if (opts.metrics)
      counted = &opts.metrics->add_counter(
        "troupe_forwarded_requests_total",
        "Control requests about runs another member owns: sent there "
        "(side=sent) and served here for other members (side=served), by "
        "type and outcome (ok or the error code).");
  }

  void count(const char* side, const std::string& type,
             const std::string& outcome) {
    if (counted)
      counted->with({{"side", side}, {"type", type}, {"outcome", outcome}})
        .inc();
  }

  // -- requester side (io thread) ---------------------------------------------

  /// Fails `req`: `about` is owned by `owner`, which cannot answer now.
  void unavailable(const request_ptr& req, const std::string& type,
                   const std::string& about, const std::string& owner,
                   const std::string& why_not, json extra) {
    count("sent", type, "owner_unavailable");
    // Not registered at all: down (its lease is gone) for longer than the
    // membership shows the down.
    std::string state = "down", link;
    if (auto* c = coord.load())
      for (auto& m : c->members())
        if (m.name == owner) {
          state = m.state;
          link = m.link;
        }
    std::string how;
    if (!why_not.empty())
      how = why_not;
    else if (state == "down")
      how = "which is down";
    else
      how = "which this member cannot reach now (it is " + state
            + (link.empty() ? std::string{} : ", link " + link) + ")";
    // With replicated partitions a lost leader is replaced by an in-sync
    // replica; a partition with none up says so.
    if (auto* c = coord.load();
        c && extra.contains("run_id") && extra["run_id"].is_string()) {
      auto p = runtime::partition_of_run(extra["run_id"].get<std::string>(),
                                         c->partition_count());
      auto down = c->unavailable_partitions();
      if (auto i = down.find(p); i != down.end()) {
        extra["partition"] = p;
        extra["partition_reason"] = i->second;
        how += "; its partition " + std::to_string(p)
               + " is unavailable: " + i->second;
      }
    }
    extra["owner"] = owner;
    extra["owner_state"] = state;
    if (!link.empty())
      extra["owner_link"] = link;
    // `about` is empty for a member's page of a merged list.
    req->fail(error_code::owner_unavailable,
              about.empty()
                ? "member " + owner + ", " + how
                : about + " is owned by member " + owner + ", " + how
                    + "; its runs wait for " + owner + " to come back",
              std::move(extra));
  }

  /// Sends `msg` to `owner`, whose answers go to `req`.
  void forward(const request_ptr& req, const std::string& type, const json& msg,
               const std::string& owner, const std::string& about,
               json about_fields, std::chrono::milliseconds timeout) {
    auto* m = peers.load();
    caf::actor to = m ? m->peer(owner) : caf::actor{};
    if (!to)
      return unavailable(req, type, about, owner, {}, std::move(about_fields));
    pending p;
    p.req = req;
    p.type = type;
    p.about = about;
    p.fields = about_fields;
    p.owner = owner;
    p.to = to;
    p.body = text_of(msg);
    p.stream = type == "watch";
    p.timeout = p.stream ? std::chrono::milliseconds{0} : timeout;
    uint64_t id;
    {
      std::lock_guard guard{mtx};
      if (stopped)
        return req->fail(error_code::draining,
                         "the node is shutting down: it forwards no " + type
                           + " now");
      id = next_id++;
      waiting.emplace(id, std::move(p));
    }
    if (type == "watch")
      // The owner's watch ends with the client's connection.
      req->on_close([w = weak_from_this(), id] {
        if (auto s = w.lock())
          caf::anon_send(s->relay, drop_atom::value, id);
      });
    caf::anon_send(relay, go_atom::value, id);
  }

  void submit(const request_ptr& req, const json& msg, const coordinator& c);
  void list(const request_ptr& req, const json& msg, const coordinator& c);
  /// `gc` or `cancel_many`: asked of every member, summed.
  void each_member(const request_ptr& req, const std::string& type,
                   const json& msg, const coordinator& c,
                   std::vector<std::string> counts,
                   std::chrono::milliseconds timeout);

  // -- requester side (the relay) ---------------------------------------------

  /// Takes pending request `id` out, whole or (for an event) as a copy.
  std::optional<pending> take(uint64_t id, bool keep) {
    std::lock_guard guard{mtx};
    auto i = waiting.find(id);
    if (i == waiting.end())
      return std::nullopt;
    if (keep)
      return i->second;
    auto p = std::move(i->second);
    waiting.erase(i);
    return p;
  }

  /// One answer from the owner, delivered to the client.
  void answered(const caf::strong_actor_ptr& sender, uint64_t id,
                const std::string& kind, const std::string& body) {
    bool last = kind != "event";
    {
      // Only the member the request went to may answer it.
      std::lock_guard guard{mtx};
      auto i = waiting.find(id);
      if (i == waiting.end() || !sender
          || sender->node() != i->second.to.node())
        return;
    }
    auto p = take(id, !last);
    if (!p)
      return;
    auto j = json::parse(body, nullptr, false);
    if (kind == "event")
      return p->req->event(std::move(j));
    if (kind == "reply") {
      count("sent", p->type, "ok");
      return p->req->reply(std::move(j));
    }
    if (kind == "end") {
      count("sent", p->type, "ok");
      return p->req->end(std::move(j));
    }
    auto code = control::parse_error_code(j.value("code", std::string{}))
                  .value_or(error_code::internal);
    count("sent", p->type, std::string{control::to_string(code)});
    auto extra = j.value("extra", json::object());
    p->req->fail(code, j.value("message", std::string{"no reason given"}),
                 extra.is_object() ? std::move(extra) : json::object());
  }

  /// The owner's mesh actor `source` went away: what waits for it fails.
  void owner_lost(const caf::actor_addr& source, const std::string& reason) {
    std::vector<pending> lost;
    {
      std::lock_guard guard{mtx};
      for (auto i = waiting.begin(); i != waiting.end();) {
        if (i->second.to.address() == source) {
          lost.push_back(std::move(i->second));
          i = waiting.erase(i);
        } else {
          ++i;
        }
      }
    }
    for (auto& p : lost)
      unavailable(p.req, p.type, p.about, p.owner,
                  "which went out of reach before it answered (link lost: "
                    + reason + ")",
                  p.fields);
  }

  caf::actor_system& sys;
  asio::io_context& io;
  control_handler& inner;
  forward_options opts;
  std::atomic<mesh*> peers{nullptr};
  std::atomic<const coordinator*> coord{nullptr};
  /// Partition claims (blocking etcd transactions), off the io thread.
  asio::thread_pool claims{1};
  /// Sends requests to owners and takes their answers.
  caf::actor relay;
  /// Serves the requests other members forward here.
  caf::actor server;
  runtime::metrics::family<runtime::metrics::counter>* counted = nullptr;

  /// Set by stop(): no claims any more.
  std::atomic<bool> stopping{false};
  std::mutex mtx;
  bool stopped = false;
  uint64_t next_id = 1;
  std::unordered_map<uint64_t, pending> waiting;
};

// -- the owner's side ---------------------------------------------------------

namespace {

/// A request forwarded here by another member: its answers go back to the
/// requester's relay. Safe from any thread, as the control server's are.
class forwarded_context final : public request_context {
 public:
  forwarded_context(std::weak_ptr<forwarder::impl> svc, caf::actor server,
                    caf::actor relay, uint64_t id, principal who,
                    std::string type)
      : svc_(std::move(svc)), server_(std::move(server)),
        relay_(std::move(relay)), id_(id), who_(std::move(who)),
        type_(std::move(type)) {}

  ~forwarded_context() override {
    if (!closed_.load() && !done_.load())
      fail(error_code::internal, "the owner dropped the request unanswered",
           json::object());
  }

  uint64_t id() const override { return id_; }
  const principal& who() const override { return who_; }

  void reply(json body) override { send("reply", body, true); }

  void fail(error_code code, const std::string& message, json extra) override {
    send("fail",
         json{{"code", std::string{control::to_string(code)}},
              {"message", message},
              {"extra", std::move(extra)}},
         true, std::string{control::to_string(code)});
  }

  void event(json body) override { send("event", body, false); }
  void end(json body) override { send("end", body, true); }

  bool closed() const override { return closed_.load(); }

  void on_close(std::function<void()> f) override {
    {
      std::lock_guard guard{mtx_};
      if (!closed_.load()) {
        on_close_.push_back(std::move(f));
        return;
      }
    }
    post(std::move(f));
  }

  /// The requester went away or wants no more answers: runs the on_close
  /// callbacks on the io thread.
  void close() {
    std::vector<std::function<void()>> callbacks;
    {
      std::lock_guard guard{mtx_};
      if (closed_.exchange(true))
        return;
      callbacks = std::move(on_close_);
    }
    for (auto& f : callbacks)
      post(std::move(f));
  }

 private:
  void post(std::function<void()> f) {
    if (auto s = svc_.lock())
      asio::post(s->io, std::move(f));
  }

  void send(const char* kind, const json& body, bool last,
            std::string outcome = "ok") {
    if (closed_.load())
      return;
    if (last ? done_.exchange(true) : done_.load())
      return;
    caf::send_as(server_, relay_, forward_answer_atom::value, id_,
                 std::string{kind}, text_of(body));
    if (last)
      if (auto s = svc_.lock())
        s->count("served", type_, outcome);
  }

  std::weak_ptr<forwarder::impl> svc_;
  caf::actor server_;
  caf::actor relay_;
  uint64_t id_;
  principal who_;
  std::string type_;
  std::atomic<bool> closed_{false};
  std::atomic<bool> done_{false};
  std::mutex mtx_;
  std::vector<std::function<void()>> on_close_;
};

struct server_state {
  /// Requests served for other members, by their relay and id.
  std::map<std::pair<caf::actor_addr, uint64_t>,
           std::weak_ptr<forwarded_context>>
    served;
  std::set<caf::actor_addr> monitored;
  /// Size at which finished entries are swept out.
  size_t sweep_at = 64;
  static inline const char* name = "troupe.forward_server";
};

caf::behavior server_impl(caf::stateful_actor<server_state>* self,
                          std::weak_ptr<forwarder::impl> svc) {
  self->set_down_handler([=](caf::down_msg& dm) {
    // A requester's relay is gone (its node died or stopped): what it asked
    // for is closed here, so its watches unsubscribe.
    auto& st = self->state;
    st.monitored.erase(dm.source);
    for (auto i = st.served.begin(); i != st.served.end();) {
      if (i->first.first != dm.source) {
        ++i;
        continue;
      }
      if (auto ctx = i->second.lock())
        ctx->close();
      i = st.served.erase(i);
    }
  });
  return {
    [=](forward_atom, uint64_t id, std::string& type, std::string& body,
        std::string& subject, std::string& role_name, int64_t expires_at_s,
        std::string& from) {
      auto s = svc.lock();
      auto relay = caf::actor_cast<caf::actor>(self->current_sender());
      if (!s || !relay)
        return;
      // The mesh actor passes on only what proven peers send; this actor
      // may be addressed by id too, so it checks again.
      auto* m = s->peers.load();
      if (m && !m->is_proven(relay.node()))
        return;
      auto& st = self->state;
      // The requester checked the token and role: its node proved the
      // cluster secret. Whatever does not read as a request is refused.
      auto r = runtime::auth::parse_role(role_name);
      principal who;
      who.subject = std::move(subject);
      who.grants = r.value_or(role::viewer);
      who.expires_at_s = expires_at_s;
      auto ctx = std::make_shared<forwarded_context>(
        svc, caf::actor_cast<caf::actor>(self), relay, id, who, type);
      if (!r)
        return ctx->fail(error_code::forbidden,
                         type + ": forwarded by member '" + from
                           + "' with an unknown role '" + role_name + "'",
                         json::object());
      auto msg = json::parse(body, nullptr, false);
      if (!msg.is_object())
        return ctx->fail(error_code::bad_request,
                         type + ": the request forwarded by member '" + from
                           + "' is not a JSON object",
                         json::object());
      auto needed = required_role(type);
      if (!needed || !runtime::auth::allows(*r, *needed))
        return ctx->fail(
          needed ? error_code::forbidden : error_code::unknown_type,
          needed ? "role '" + std::string{to_string(*r)} + "' may not " + type
                 : "unknown message type '" + type + "'",
          json::object());
      if (st.served.size() >= st.sweep_at) {
        std::erase_if(st.served, [](auto& e) { return e.second.expired(); });
        st.sweep_at = std::max<size_t>(64, 2 * st.served.size());
      }
      st.served[{relay.address(), id}] = ctx;
      if (st.monitored.insert(relay.address()).second)
        self->monitor(relay);
      asio::post(s->io, [s, ctx, type, msg = std::move(msg)] {
        s->inner.handle(ctx, type, msg);
      });
    },
    [=](forward_close_atom, uint64_t id) {
      auto& sender = self->current_sender();
      if (!sender)
        return;
      auto& st = self->state;
      auto i = st.served.find({sender->address(), id});
      if (i == st.served.end())
        return;
      if (auto ctx = i->second.lock())
        ctx->close();
      st.served.erase(i);
    },
  };
}

struct relay_state {
  std::set<caf::actor_addr> monitored;
  static inline const char* name = "troupe.forward_relay";
};

caf::behavior relay_impl(caf::stateful_actor<relay_state>* self,
                         std::weak_ptr<forwarder::impl> svc) {
  self->set_down_handler([=](caf::down_msg& dm) {
    self->state.monitored.erase(dm.source);
    if (auto s = svc.lock())
      s->owner_lost(dm.source, caf::to_string(dm.reason));
  });
  return {
    [=](go_atom, uint64_t id) {
      auto s = svc.lock();
      if (!s)
        return;
      caf::actor to;
      std::string type, body;
      std::chrono::milliseconds timeout{0};
      principal who;
      {
        std::lock_guard guard{s->mtx};
        auto i = s->waiting.find(id);
        if (i == s->waiting.end())
          return;
        to = i->second.to;
        type = i->second.type;
        body = std::move(i->second.body);
        timeout = i->second.timeout;
        who = i->second.req->who();
      }
      // A down_msg comes at once for an actor gone already.
      if (self->state.monitored.insert(to.address()).second)
        self->monitor(to);
      auto* c = s->coord.load();
      self->send(to, forward_atom::value, id, type, std::move(body),
                 who.subject, std::string{to_string(who.grants)},
                 who.expires_at_s, c ? c->self().member : std::string{});
      if (timeout.count() > 0)
        self->delayed_send(self, timeout, expire_atom::value, id);
    },
    [=](forward_answer_atom, uint64_t id, const std::string& kind,
        const std::string& body) {
      if (auto s = svc.lock())
        s->answered(self->current_sender(), id, kind, body);
    },
    [=](expire_atom, uint64_t id) {
      auto s = svc.lock();
      if (!s)
        return;
      auto p = s->take(id, false);
      if (!p)
        return;
      self->send(p->to, forward_close_atom::value, id);
      s->unavailable(p->req, p->type, p->about, p->owner,
                     "which did not answer within "
                       + std::to_string(p->timeout.count()) + "ms",
                     p->fields);
    },
    [=](drop_atom, uint64_t id) {
      // The client went away: the owner stops serving it.
      auto s = svc.lock();
      if (!s)
        return;
      if (auto p = s->take(id, false))
        self->send(p->to, forward_close_atom::value, id);
    },
  };
}

} // namespace

// -- requests -----------------------------------------------------------------

namespace {

/// A member, up and linked, that owns partitions (the owner of the first
/// owned partition from a random one on, so that submissions spread), or ""
/// when none is.
std::string partition_holder(const coordinator& c) {
  std::map<std::string, bool> reachable;
  for (auto& m : c.members())
    reachable[m.name] = m.state == "up" && m.link == "connected";
  auto n = c.partition_count();
  if (n == 0)
    return {};
  static thread_local std::mt19937 rng{std::random_device{}()};
  auto first = static_cast<uint32_t>(rng() % n);
  for (uint32_t i = 0; i < n; ++i) {
    auto owner = c.owner_of_partition((first + i) % n);
    if (!owner.empty() && reachable[owner])
      return owner;
  }
  return {};
}

} // namespace

void forwarder::impl::submit(const request_ptr& req, const json& msg,
                             const coordinator& c) {
  auto k = msg.find("idempotency_key");
  if (k == msg.end() || !k->is_string() || k->get<std::string>().empty()
      || k->get<std::string>().size() > 1024) {
    // Without a key (or with one the node service refuses): accepted here,
    // in one of this member's own partitions; by a member that owns some
    // when this one owns none (every partition was claimed before it
    // joined).
    if (c.self().cluster.empty() || !c.owned_partitions().empty())
      return inner.handle(req, "submit", msg);
    auto to = partition_holder(c);
    if (to.empty())
      return req->fail(error_code::not_ready,
                       "submit: member " + c.self().member
                         + " owns no partition of the cluster's runs, and no "
                           "member that owns some is linked now; try again, "
                           "or submit to another member",
                       json{{"retry_after_ms", 1000}});
    return forward(req, "submit", msg, to,
                   "a run submitted to member " + c.self().member
                     + " (which owns no partition)",
                   json::object(), opts.request_timeout);
  }
  auto key = k->get<std::string>();
  auto p = runtime::partition_of_key(key, c.partition_count());
  auto about
    = "idempotency key '" + key + "' (partition " + std::to_string(p) + ")";
  auto fields = json{{"partition", p}};
  auto me = c.self().member;
  auto owner = c.owner_of_partition(p);
  if (owner == me)
    return inner.handle(req, "submit", msg);
  if (!owner.empty())
    return forward(req, "submit", msg, owner, about, fields,
                   opts.request_timeout);
  // Unclaimed: claim it (an etcd transaction, off the io thread), then
  // accept here or send it to whoever won the claim.
  if (stopping)
    return req->fail(error_code::draining,
                     "the node is shutting down and takes no submissions");
  asio::post(claims, [w = weak_from_this(), req, msg, p, me, about, fields] {
    auto s = w.lock();
    if (!s)
      return;
    auto* c = s->coord.load();
    auto got = c ? c->claim_partition(p) : std::string{};
    asio::post(s->io, [s, req, msg, p, me, about, fields, got, c] {
      if (!c)
        return req->fail(error_code::draining,
                         "the node is shutting down and takes no submissions");
      if (got.empty())
        return req->fail(error_code::not_ready,
                         "submit: cannot claim partition " + std::to_string(p)
                           + " of the " + about
                           + " now: etcd is out of reach; try again",
                         json{{"retry_after_ms", 1000}});
      if (got == me)
        return s->inner.handle(req, "submit", msg);
      s->forward(req, "submit", msg, got, about, fields,
                 s->opts.request_timeout);
    });
  });
}

void forwarder::impl::list(const request_ptr& req, const json& msg,
                           const coordinator& c) {
  auto me = c.self().member;
  std::vector<member_info> others;
  for (auto& m : c.members())
    if (m.name != me)
      others.push_back(m);
  auto limit_field = msg.find("limit");
  bool limit_ok
    = limit_field == msg.end() || limit_field->is_null()
      || (limit_field->is_number_integer() && limit_field->get<int64_t>() >= 1
          && limit_field->get<int64_t>() <= 1000);
  if (others.empty() || !limit_ok)
    return inner.handle(req, "list", msg);
  auto merge = std::make_shared<list_merge>();
  merge->req = req;
  if (limit_field != msg.end() && !limit_field->is_null())
    merge->limit = limit_field->get<size_t>();
  // The cursor is a run of some member: each one says whether it knows it.
  if (auto a = msg.find("after"); a != msg.end() && a->is_string())
    merge->after = a->get<std::string>();
  auto each = msg;
  each["any_cursor"] = true;
  auto* m = peers.load();
  std::vector<std::pair<std::string, caf::actor>> asked;
  for (auto& o : others) {
    auto to = o.state == "down" || !m ? caf::actor{} : m->peer(o.name);
    if (!to) {
      merge->missing.push_back(json{
        {"member", o.name},
        {"state", o.state},
        {"reason", o.state == "down"
                     ? std::string{"down: its runs wait for it to come back"}
                     : "not linked to this member (link "
                         + (o.link.empty() ? std::string{"none"} : o.link)
                         + (o.reason.empty() ? "" : ": " + o.reason) + ")"}});
      continue;
    }
    asked.emplace_back(o.name, to);
  }
  merge->waiting = asked.size() + 1;
  for (auto& [name, to] : asked) {
    auto collect = std::make_shared<collect_context>(
      req, [merge, name = name](bool ok, json answer) {
        merge->take(name, false, ok, std::move(answer));
      });
    forward(collect, "list", each, name, {}, json::object(), opts.list_timeout);
  }
  auto local
    = std::make_shared<collect_context>(req, [merge, me](bool ok, json answer) {
        merge->take(me, true, ok, std::move(answer));
      });
  inner.handle(local, "list", each);
}

void forwarder::impl::each_member(const request_ptr& req,
                                  const std::string& type, const json& msg,
                                  const coordinator& c,
                                  std::vector<std::string> counts,
                                  std::chrono::milliseconds timeout) {
  auto me = c.self().member;
  auto sum = std::make_shared<member_sum>();
  sum->req = req;
  sum->counts = std::move(counts);
  auto* m = peers.load();
  std::vector<std::pair<std::string, caf::actor>> asked;
  for (auto& o : c.members()) {
    if (o.name == me)
      continue;
    auto to = o.state == "down" || !m ? caf::actor{} : m->peer(o.name);
    if (!to) {
      sum->failed.push_back(json{
        {"member", o.name},
        {"state", o.state},
        {"reason", o.state == "down"
                     ? std::string{"down: the partitions it still leads are "
                                   "not reached"}
                     : "not linked to this member (link "
                         + (o.link.empty() ? std::string{"none"} : o.link)
                         + (o.reason.empty() ? "" : ": " + o.reason) + ")"}});
      continue;
    }
    asked.emplace_back(o.name, to);
  }
  sum->waiting = asked.size() + 1;
  // Each member acts on the partitions it leads; it is asked as a member
  // is (through its node service), so nothing is asked twice.
  for (auto& [name, to] : asked) {
    auto collect = std::make_shared<collect_context>(
      req, [sum, name = name](bool ok, json answer) {
        sum->take(name, ok, std::move(answer));
      });
    forward(collect, type, msg, name, {}, json::object(), timeout);
  }
  auto local
    = std::make_shared<collect_context>(req, [sum, me](bool ok, json answer) {
        sum->take(me, ok, std::move(answer));
      });
  inner.handle(local, type, msg);
}

json merge_list_pages(const std::vector<json>& pages, size_t limit) {
  // Every member listed its runs in id order from the same cursor. A
  // member whose page stopped early (its `next`) may hold runs past it
  // that it did not send: the merged page goes no further than the least
  // such `next`.
  std::string bound;
  std::vector<json> all;
  uint64_t scanned = 0;
  for (auto& p : pages) {
    auto next = p.value("next", std::string{});
    if (!next.empty() && (bound.empty() || next < bound))
      bound = next;
    scanned += p.value("scanned", uint64_t{0});
    for (auto& r : p.value("runs", json::array()))
      all.push_back(r);
  }
  auto id_of = [](const json& r) { return r.value("run_id", std::string{}); };
  std::stable_sort(all.begin(), all.end(), [&](const json& a, const json& b) {
    return id_of(a) < id_of(b);
  });
  json runs = json::array();
  size_t used = 0;
  std::string last;
  for (; used < all.size() && runs.size() < limit; ++used) {
    auto id = id_of(all[used]);
    if (!bound.empty() && id > bound)
      break;
    if (!runs.empty() && id == last)
      continue; // the same run twice (never expected): once is enough
    last = id;
    runs.push_back(std::move(all[used]));
  }
  std::string next;
  if (runs.size() >= limit)
    next = used < all.size() || !bound.empty() ? last : std::string{};
  else
    next = bound;
  return json{{"runs", std::move(runs)}, {"next", next}, {"scanned", scanned}};
}

// -- forwarder ----------------------------------------------------------------

forwarder::forwarder(caf::actor_system& sys, asio::io_context& io,
                     control_handler& inner, forward_options opts)
    : impl_(std::make_shared<impl>(sys, io, inner, opts)) {
  impl_->relay = sys.spawn(relay_impl, std::weak_ptr<impl>{impl_});
  impl_->server = sys.spawn(server_impl, std::weak_ptr<impl>{impl_});
}

forwarder::~forwarder() {
  stop();
  impl_->peers = nullptr;
  impl_->coord = nullptr;
}

caf::actor forwarder::server() const {
  return impl_->server;
}

void forwarder::start(mesh& peers, const coordinator& members) {
  impl_->coord = &members;
  impl_->peers = &peers;
}

void forwarder::stop() {
  auto& s = *impl_;
  // Requests about runs other members own are refused from here on (they
  // still need the membership to tell which those are).
  s.stopping = true;
  s.claims.join();
  std::unordered_map<uint64_t, impl::pending> left;
  {
    std::lock_guard guard{s.mtx};
    if (s.stopped)
      return;
    s.stopped = true;
    left = std::move(s.waiting);
    s.waiting.clear();
  }
  for (auto& [id, p] : left) {
    if (p.to)
      caf::anon_send(p.to, forward_close_atom::value, id);
    p.req->fail(error_code::draining,
                "the node is shutting down; "
                  + (p.about.empty()
                       ? "member " + p.owner + " was asked"
                       : p.about + " is owned by member " + p.owner)
                  + ": ask again, there or here once the node is back");
  }
  caf::anon_send_exit(s.relay, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(s.server, caf::exit_reason::user_shutdown);
}

void forwarder::handle(const request_ptr& req, const std::string& type,
                       const json& msg) {
  auto& s = *impl_;
  auto* c = s.coord.load();
  if (!c || !s.peers.load())
    return s.inner.handle(req, type, msg);
  if (type == "list")
    return s.list(req, msg, *c);
  if (type == "gc")
    return s.each_member(req, type, msg, *c,
                         {"runs", "events", "keys", "tombstones"},
                         s.opts.gc_timeout);
  if (type == "cancel_many")
    return s.each_member(req, type, msg, *c, {"count"}, s.opts.request_timeout);
  if (type == "submit")
    return s.submit(req, msg, *c);
  if (type == "leave") {
    // `troupe drain MEMBER` through any member: the member named leaves.
    auto m = msg.find("member");
    if (m != msg.end() && m->is_string() && !m->get<std::string>().empty()
        && *m != c->self().member) {
      auto name = m->get<std::string>();
      for (auto& known : c->members())
        if (known.name == name && known.state != "down")
          return s.forward(req, type, msg, name, "member " + name, json{},
                           s.opts.request_timeout);
    }
    return s.inner.handle(req, type, msg);
  }
  auto run_id = run_named(type, msg);
  if (run_id.empty())
    return s.inner.handle(req, type, msg);
  auto owner = c->owner_of_partition(
    runtime::partition_of_run(run_id, c->partition_count()));
  if (owner.empty() || owner == c->self().member)
    return s.inner.handle(req, type, msg);
  s.forward(req, type, msg, owner, "run " + run_id, json{{"run_id", run_id}},
            s.opts.request_timeout);
}

} // namespace troupe::cluster

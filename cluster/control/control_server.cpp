#include "cluster/control/control_server.hpp"

#include "config/suggest.hpp"
#include "runtime/log/log.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility> // before Asio: Boost 1.74 with C++20 needs std::exchange
#include <vector>

namespace troupe::cluster {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using control::error_code;
using steady = std::chrono::steady_clock;

namespace {

struct request_type {
  std::string_view name;
  role need;
};

constexpr std::array request_types{
  request_type{"ping", role::viewer},
  request_type{"status", role::viewer},
  request_type{"list", role::viewer},
  request_type{"watch", role::viewer},
  request_type{"result", role::viewer},
  request_type{"history", role::viewer},
  request_type{"logs", role::viewer},
  request_type{"inspect", role::viewer},
  request_type{"retry", role::op},
  request_type{"breaker_reset", role::op},
  request_type{"crash", role::admin},
  request_type{"submit", role::op},
  request_type{"cancel", role::op},
  request_type{"cancel_many", role::op},
  request_type{"pause", role::op},
  request_type{"resume", role::op},
  request_type{"gc", role::admin},
  request_type{"members", role::viewer},
  request_type{"partitions", role::viewer},
  request_type{"leave", role::admin},
  request_type{"fault", role::admin},
};

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace

std::optional<role> required_role(std::string_view type) {
  for (auto& t : request_types)
    if (t.name == type)
      return t.need;
  return std::nullopt;
}

// -- connections
// ----------------------------------------------------------------

/// What request contexts need of a connection, whatever its stream type.
class session_base : public std::enable_shared_from_this<session_base> {
 public:
  virtual ~session_base() = default;
  /// On the io thread.
  virtual void send(std::string frame) = 0;
  virtual void close() = 0;
  virtual void add_close_callback(std::function<void()> f) = 0;
  /// A request handed to the handler got its first answer (`first`: a
  /// reply, an error, or its stream's first event) and/or its last one
  /// (`last`: a reply, an error, or its stream's end), or was dropped
  /// without them; on the io thread.
  virtual void request_answered(uint64_t id, bool first, bool last) = 0;
  /// The node is stopping: see control_server::drain. On the io thread.
  virtual void drain(std::chrono::milliseconds within,
                     std::chrono::milliseconds linger)
    = 0;
  std::atomic<bool> closed{false};
};

namespace {

class context final : public request_context {
 public:
  context(asio::io_context& io, std::weak_ptr<session_base> s, uint64_t id,
          principal who)
      : io_(io), session_(std::move(s)), id_(id), who_(std::move(who)) {}

  /// A request dropped unanswered no longer counts as waiting or open.
  ~context() override {
    bool first = !answered_.exchange(true);
    bool last = !done_.exchange(true);
    if (!first && !last)
      return;
    if (auto s = session_.lock(); s && !s->closed.load())
      asio::post(io_, [s = session_, id = id_, first, last] {
        if (auto p = s.lock())
          p->request_answered(id, first, last);
      });
  }

  uint64_t id() const override { return id_; }
  const principal& who() const override { return who_; }

  void reply(json body) override {
    push(json{{"t", "reply"}, {"id", id_}, {"body", std::move(body)}}, true);
  }

  void fail(error_code code, const std::string& message, json extra) override {
    auto msg = control::make_error(id_, code, message);
    for (auto& [k, v] : extra.items())
      msg[k] = v;
    push(std::move(msg), true);
  }

  void event(json body) override {
    push(json{{"t", "event"}, {"id", id_}, {"body", std::move(body)}}, false);
  }

  void end(json body) override {
    push(json{{"t", "end"}, {"id", id_}, {"body", std::move(body)}}, true);
  }

  bool closed() const override {
    auto s = session_.lock();
    return !s || s->closed.load();
  }

  void on_close(std::function<void()> f) override {
    asio::post(io_, [s = session_, f = std::move(f)]() mutable {
      auto p = s.lock();
      if (!p || p->closed.load())
        f();
      else
        p->add_close_callback(std::move(f));
    });
  }

 private:
  /// Queues `msg`; `last` for the request's last answer.
  void push(const json& msg, bool last) {
    bool first = !answered_.exchange(true);
    bool over = last && !done_.exchange(true);
    auto s = session_.lock();
    if (!s || s->closed.load())
      return;
    asio::post(io_, [s = session_, frame = control::encode_frame(msg), id = id_,
                     first, over] {
      if (auto p = s.lock()) {
        p->send(std::move(frame));
        if (first || over)
          p->request_answered(id, first, over);
      }
    });
  }

  asio::io_context& io_;
  std::weak_ptr<session_base> session_;
  uint64_t id_;
  principal who_;
  /// Whether the first answer went out (or the request was dropped).
  std::atomic<bool> answered_{false};
  /// Whether the last answer went out (or the request was dropped).
  std::atomic<bool> done_{false};
};

} // namespace

struct control_server::impl : std::enable_shared_from_this<impl> {
  impl(asio::io_context& io, options o, authenticator a, control_handler& h)
      : io(io), opts(std::move(o)), auth(std::move(a)), handler(h),
        acceptor(io) {}

  /// Notable connection events (refused tokens, bad frames, timeouts).
  void log(const std::string& line) const {
    runtime::log::info("control", line);
  }

  void accept();

  /// How often a connection waiting for answers hears from the node.
  std::chrono::milliseconds keepalive_interval() const {
    if (opts.keepalive_interval.count() > 0)
      return opts.keepalive_interval;
    return std::clamp(opts.idle_timeout / 3, std::chrono::milliseconds{1},
                      std::chrono::milliseconds{30'000});
  }

  void forget(session_base* s, const std::string& address) {
    std::lock_guard guard{mtx};
    sessions.erase(s);
    if (auto i = per_address.find(address); i != per_address.end())
      if (--i->second == 0)
        per_address.erase(i);
  }

  asio::io_context& io;
  options opts;
  authenticator auth;
  control_handler& handler;
  tcp::acceptor acceptor;
  std::optional<asio::ssl::context> tls;
  std::atomic<uint16_t> bound_port{0};
  std::atomic<size_t> open{0};
  std::atomic<bool> stopped{false};
  /// Set by drain(): no more connections are accepted.
  std::atomic<bool> draining{false};
  std::mutex mtx;
  std::unordered_map<session_base*, std::weak_ptr<session_base>> sessions;
  /// Open connections by source address (control.max_connections_per_address).
  std::unordered_map<std::string, size_t> per_address;

  /// Closes the acceptor and gives the sessions still open, to be told
  /// (on the io thread) that the server stops or drains.
  std::vector<std::shared_ptr<session_base>> stop_accepting() {
    boost::system::error_code ignored;
    acceptor.close(ignored);
    std::vector<std::shared_ptr<session_base>> live;
    std::lock_guard guard{mtx};
    for (auto& [_, w] : sessions)
      if (auto s = w.lock())
        live.push_back(std::move(s));
    return live;
  }
};

namespace {

template<class Stream>
class session final : public session_base {
 public:
  using server_ptr = std::shared_ptr<control_server::impl>;

  session(Stream stream, server_ptr server, std::string peer,
          std::string address)
      : stream_(std::move(stream)), timer_(server->io),
        keepalive_timer_(server->io), hello_timer_(server->io),
        drain_timer_(server->io), server_(std::move(server)),
        peer_(std::move(peer)), address_(std::move(address)) {}

  void start() {
    // A connection that says no hello soon is closed, however it trickles
    // bytes: before the hello a client is nobody, and holds a connection.
    hello_timer_.expires_after(server_->opts.hello_timeout);
    hello_timer_.async_wait([self = me()](const boost::system::error_code& ec) {
      if (ec || self->closed.load() || self->hello_done_)
        return;
      self->server_->log("closing " + self->peer_
                         + ": no hello within control.hello_timeout");
      self->close();
    });
    if constexpr (std::is_same_v<Stream, asio::ssl::stream<tcp::socket>>) {
      arm(server_->opts.read_timeout);
      stream_.async_handshake(
        asio::ssl::stream_base::server,
        [self = me()](const boost::system::error_code& ec) {
          if (ec) {
            self->server_->log("TLS handshake with " + self->peer_
                               + " failed: " + ec.message());
            self->close();
            return;
          }
          self->wait_frame();
        });
    } else {
      wait_frame();
    }
  }

  void send(std::string frame) override {
    if (closed.load())
      return;
    pending_ += frame.size();
    if (pending_ > server_->opts.max_pending_bytes) {
      server_->log(
        "closing " + peer_ + ": it reads too slowly (unsent answers over "
        + std::to_string(server_->opts.max_pending_bytes) + " bytes)");
      close();
      return;
    }
    out_.push_back(std::move(frame));
    if (!writing_)
      write_next();
  }

  void add_close_callback(std::function<void()> f) override {
    on_close_.push_back(std::move(f));
  }

  void request_answered(uint64_t id, bool first, bool last) override {
    if (first && waiting_ > 0)
      --waiting_;
    if (last)
      open_.erase(id);
    finish_if_drained();
  }

  void drain(std::chrono::milliseconds within,
             std::chrono::milliseconds linger) override {
    if (closed.load() || draining_)
      return;
    if (!hello_done_)
      return close();
    draining_ = true;
    if (version_ >= 3)
      send_msg(json{{"t", "draining"}, {"within_ms", within.count()}});
    // Whatever it still owes, the connection ends at the deadline.
    drain_timer_.expires_after(within);
    drain_timer_.async_wait([self = me()](const boost::system::error_code& ec) {
      if (ec || self->closed.load())
        return;
      if (!self->open_.empty())
        self->server_->log("closing " + self->peer_ + " with "
                           + std::to_string(self->open_.size())
                           + " request(s) unanswered: the drain deadline "
                             "passed");
      self->close();
    });
    // Requests already on their way get an answer (a refusal, mostly)
    // rather than a closed connection: close no sooner than `linger`.
    auto t = std::make_shared<asio::steady_timer>(server_->io);
    t->expires_after(std::min(linger, within));
    t->async_wait([self = me(), t](const boost::system::error_code& ec) {
      if (ec)
        return;
      self->lingered_ = true;
      self->finish_if_drained();
    });
  }

  void close() override {
    if (closed.exchange(true))
      return;
    timer_.cancel();
    keepalive_timer_.cancel();
    hello_timer_.cancel();
    drain_timer_.cancel();
    boost::system::error_code ignored;
    lowest().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close(ignored);
    server_->open.fetch_sub(1);
    server_->forget(this, address_);
    auto callbacks = std::move(on_close_);
    for (auto& f : callbacks)
      f();
  }

 private:
  std::shared_ptr<session> me() {
    return std::static_pointer_cast<session>(shared_from_this());
  }

  tcp::socket::lowest_layer_type& lowest() { return stream_.lowest_layer(); }

  /// While draining: closes once nothing is owed and the linger is over,
  /// after what is queued is written.
  void finish_if_drained() {
    if (!draining_ || !lingered_ || !open_.empty() || closed.load() || closing_)
      return;
    closing_ = true;
    if (!writing_)
      close();
  }

  /// Closes the connection once `span` has passed, unless re-armed.
  void arm(std::chrono::milliseconds span) {
    timer_.expires_after(span);
    timer_.async_wait([self = me()](const boost::system::error_code& ec) {
      if (ec || self->closed.load())
        return;
      self->server_->log("closing " + self->peer_ + ": "
                         + (self->mid_frame_
                              ? "a frame took longer than "
                                "control.read_timeout"
                              : "idle past control.idle_timeout"));
      self->close();
    });
  }

  /// Every keepalive interval: while requests wait for answers (a watch
  /// streams, however busily), sends a keepalive when the client said
  /// nothing for that long. The client answers it, so a long watch keeps
  /// the connection alive while its client does, and the idle timeout
  /// still closes it once the client stops answering.
  void keepalive_tick() {
    auto every = server_->keepalive_interval();
    keepalive_timer_.expires_after(every);
    keepalive_timer_.async_wait(
      [self = me(), every](const boost::system::error_code& ec) {
        if (ec || self->closed.load() || self->closing_)
          return;
        if (!self->open_.empty() && steady::now() - self->last_heard_ >= every)
          self->send_msg(json{{"t", "keepalive"}});
        self->keepalive_tick();
      });
  }

  /// Waits for the first bytes of the next frame, within the idle timeout;
  /// the rest of the frame must follow within the read timeout.
  void wait_frame() {
    if (closed.load() || closing_)
      return;
    mid_frame_ = false;
    arm(server_->opts.idle_timeout);
    stream_.async_read_some(
      asio::buffer(header_),
      [self = me()](const boost::system::error_code& ec, size_t n) {
        if (ec)
          return self->close();
        self->mid_frame_ = true;
        self->arm(self->server_->opts.read_timeout);
        if (n == control::header_size)
          return self->on_header();
        asio::async_read(
          self->stream_,
          asio::buffer(self->header_.data() + n, control::header_size - n),
          [self](const boost::system::error_code& ec, size_t) {
            if (ec)
              return self->close();
            self->on_header();
          });
      });
  }

  void on_header() {
    auto n = control::read_length(header_.data());
    auto limit = hello_done_ ? server_->opts.max_frame_bytes
                             : server_->opts.max_hello_bytes;
    if (n == 0) {
      // The length is sound, so the stream still holds frames: an empty
      // one is a bad frame like any other, and the connection is kept.
      if (bad_frame("an empty frame (length 0)"))
        wait_frame();
      return;
    }
    if (n > limit)
      // The stream cannot be trusted to hold frames after this one.
      return refuse(
        0, error_code::frame_too_large,
        "a frame of " + std::to_string(n)
          + " bytes exceeds this node's maximum of " + std::to_string(limit)
          + (hello_done_ ? " (control.max_frame_bytes)" : " before the hello"));
    body_.resize(n);
    asio::async_read(
      stream_, asio::buffer(body_),
      [self = me()](const boost::system::error_code& ec, size_t) {
        if (ec)
          return self->close();
        self->on_body();
      });
  }

  void on_body() {
    last_heard_ = steady::now();
    std::string error;
    auto msg = control::decode_body(body_, error);
    body_.clear();
    if (body_.capacity() > (64u << 10))
      body_.shrink_to_fit();
    if (!msg) {
      // The length was sound, so the next frame can still be read.
      if (!bad_frame(error))
        return;
    } else {
      dispatch(*msg);
      finish_if_drained();
    }
    wait_frame();
  }

  /// Answers a bad frame with bad_frame (id 0); returns false when it was
  /// one too many for this connection, which is then closed.
  bool bad_frame(const std::string& error) {
    last_heard_ = steady::now();
    ++bad_frames_;
    server_->log("bad frame from " + peer_ + ": " + error);
    if (bad_frames_ > 16) {
      refuse(0, error_code::bad_frame,
             "too many bad frames on this connection: " + error);
      return false;
    }
    send_msg(
      control::make_error(0, error_code::bad_frame, "bad frame: " + error));
    return true;
  }

  void dispatch(const json& msg) {
    auto t = msg.find("t");
    // A keepalive (or the answer to one) needs nothing more: reading it
    // re-armed the idle timeout. It carries no id.
    if (t != msg.end() && t->is_string() && *t == "keepalive" && hello_done_)
      return;
    // Every other message carries an id from 1 on, which its answers
    // carry: 0 is kept for errors about the connection itself. Without
    // one, the answer could not be told from those.
    uint64_t id = 0;
    if (auto i = msg.find("id"); i != msg.end()) {
      if (i->is_number_unsigned() || (i->is_number_integer() && *i >= 0))
        id = i->get<uint64_t>();
      else
        return refuse_id("field 'id' must be a whole number from 1 to "
                         "2^64-1");
    }
    if (id == 0)
      return refuse_id(std::string{"field 'id' is required: a whole number "
                                   "from 1 to 2^64-1 that the answers carry"}
                       + (msg.contains("id") ? " (0 is kept for errors about "
                                               "the connection)"
                                             : ""));
    // An id still being answered (a watch that streams, a slow request)
    // may not be taken again: its answers could not be told apart.
    if (open_.count(id) > 0) {
      auto e = control::make_error(
        0, error_code::bad_request,
        "id " + std::to_string(id)
          + " is taken by a request of this connection that is still being "
            "answered (a watch streams until its end); use another id");
      e["id_in_use"] = id;
      return send_msg(e);
    }
    if (t == msg.end() || !t->is_string())
      return send_msg(
        control::make_error(id, error_code::bad_request,
                            "field 't' (the message type) must be a string"));
    const auto& type = t->get_ref<const std::string&>();
    if (!hello_done_) {
      if (type != "hello")
        return refuse(id, error_code::hello_required,
                      "the first message must be a hello, not '"
                        + type.substr(0, 64) + "'");
      return hello(id, msg);
    }
    if (type == "hello")
      return send_msg(control::make_error(
        id, error_code::bad_request, "this connection already said hello"));
    auto need = required_role(type);
    if (!need) {
      std::vector<std::string> names;
      for (auto& r : request_types)
        names.emplace_back(r.name);
      return send_msg(
        control::make_error(id, error_code::unknown_type,
                            "unknown message type '" + type.substr(0, 64) + "'"
                              + config::did_you_mean(type, names)));
    }
    if (who_.expires_at_s != 0 && unix_seconds() >= who_.expires_at_s)
      return send_msg(
        control::make_error(id, error_code::token_expired,
                            "the token of '" + who_.subject + "' has expired"));
    if (!runtime::auth::allows(who_.grants, *need)) {
      server_->log("refused '" + type + "' to " + who_.subject + " (role "
                   + std::string{runtime::auth::to_string(who_.grants)} + ")");
      return send_msg(control::make_error(
        id, error_code::forbidden,
        "role " + std::string{runtime::auth::to_string(who_.grants)}
          + " may not " + type + " (needs "
          + std::string{runtime::auth::to_string(*need)} + ")"));
    }
    // One connection may not fill the node's queues: requests waiting for
    // their first answer are bounded (a stream counts until its first
    // event, so many watches may stream at once).
    if (waiting_ >= server_->opts.max_in_flight)
      return send_msg(control::make_error(
        id, error_code::too_many_requests,
        std::to_string(waiting_)
          + " requests of this connection wait for an answer, the most "
            "this node allows (control.max_in_flight); wait for answers "
            "before sending more"));
    request_ptr ctx
      = std::make_shared<context>(server_->io, weak_from_this(), id, who_);
    open_.insert(id);
    ++waiting_;
    try {
      server_->handler.handle(ctx, type, msg);
    } catch (const std::exception& e) {
      server_->log("'" + type + "' failed: " + e.what());
      ctx->fail(error_code::internal,
                std::string{"the node failed: "} + e.what());
    }
  }

  void hello(uint64_t id, const json& msg) {
    control::fields f{msg};
    auto version = f.count("version", 0, UINT32_MAX);
    auto token = f.text("token", false, 16 << 10);
    if (!f.ok())
      return refuse(id, error_code::bad_request, "hello: " + f.error());
    if (version < static_cast<uint64_t>(control::min_protocol_version)
        || version > static_cast<uint64_t>(control::protocol_version))
      return refuse(id, error_code::unsupported_version,
                    "this node speaks control protocol versions "
                      + std::to_string(control::min_protocol_version) + " to "
                      + std::to_string(control::protocol_version) + ", not "
                      + std::to_string(version));
    auto result = server_->auth(token);
    if (auto* failure = std::get_if<auth_failure>(&result)) {
      server_->log("refused a hello from " + peer_ + ": " + failure->message);
      return refuse(id, failure->code, failure->message);
    }
    who_ = std::get<principal>(result);
    hello_done_ = true;
    version_ = static_cast<int64_t>(version);
    hello_timer_.cancel();
    // The connection speaks the client's version; keepalives from 2 on.
    json welcome{{"t", "welcome"},
                 {"id", id},
                 {"version", version},
                 {"node", server_->opts.node_name},
                 {"subject", who_.subject},
                 {"role", std::string{runtime::auth::to_string(who_.grants)}}};
    if (version >= 2) {
      welcome["keepalive_ms"] = server_->keepalive_interval().count();
      keepalive_tick();
    }
    send_msg(welcome);
  }

  /// Answers a message without a usable id: an error with id 0, about the
  /// connection; before the hello, the connection is closed (a refused
  /// hello always closes it).
  void refuse_id(const std::string& message) {
    if (!hello_done_)
      return refuse(0, error_code::bad_request, message);
    send_msg(control::make_error(0, error_code::bad_request, message));
  }

  /// Sends an error, then closes once it is written.
  void refuse(uint64_t id, error_code code, const std::string& message) {
    send_msg(control::make_error(id, code, message));
    closing_ = true;
    if (!writing_)
      close();
    else
      arm(std::chrono::milliseconds{1000});
  }

  void send_msg(const json& msg) { send(control::encode_frame(msg)); }

  /// Writes what is queued, up to 64 frames in one gather write: a watch
  /// streams many small frames, and one write each cost a system call each.
  /// (A deque keeps its elements in place as more are queued meanwhile.)
  void write_next() {
    writing_ = true;
    auto n = std::min<size_t>(out_.size(), 64);
    std::vector<asio::const_buffer> frames;
    frames.reserve(n);
    for (size_t i = 0; i < n; ++i)
      frames.push_back(asio::buffer(out_[i]));
    asio::async_write(
      stream_, frames,
      [self = me(), n](const boost::system::error_code& ec, size_t) {
        if (ec)
          return self->close();
        for (size_t i = 0; i < n; ++i) {
          self->pending_ -= self->out_.front().size();
          self->out_.pop_front();
        }
        if (!self->out_.empty())
          return self->write_next();
        self->writing_ = false;
        if (self->closing_)
          self->close();
      });
  }

  Stream stream_;
  asio::steady_timer timer_;
  asio::steady_timer keepalive_timer_;
  /// Closes a connection that says no hello in time.
  asio::steady_timer hello_timer_;
  /// Closes a draining connection at the drain deadline.
  asio::steady_timer drain_timer_;
  server_ptr server_;
  std::string peer_;
  /// The peer's address, without the port (its per-address count).
  std::string address_;
  std::array<unsigned char, control::header_size> header_{};
  std::string body_;
  std::deque<std::string> out_;
  size_t pending_ = 0;
  /// Ids of the requests handed to the handler and not yet answered to
  /// their end.
  std::unordered_set<uint64_t> open_;
  /// Those of them without any answer yet.
  size_t waiting_ = 0;
  /// When the client's last whole frame arrived.
  steady::time_point last_heard_ = steady::now();
  bool writing_ = false;
  bool closing_ = false;
  bool mid_frame_ = false;
  bool hello_done_ = false;
  /// The protocol version of the hello.
  int64_t version_ = 0;
  /// The node is stopping (drain()); lingered_: the linger has passed.
  bool draining_ = false;
  bool lingered_ = false;
  int bad_frames_ = 0;
  principal who_;
  std::vector<std::function<void()>> on_close_;
};

} // namespace

void control_server::impl::accept() {
  acceptor.async_accept(
    [self = shared_from_this()](const boost::system::error_code& ec,
                                tcp::socket socket) {
      if (self->stopped.load() || self->draining.load())
        return;
      if (ec) {
        // Out of descriptors and the like: keep serving the open connections.
        self->log("accept failed: " + ec.message());
        self->accept();
        return;
      }
      boost::system::error_code pe;
      auto ep = socket.remote_endpoint(pe);
      auto address = pe ? std::string{"?"} : ep.address().to_string();
      auto peer = pe ? std::string{"a client"}
                     : address + ":" + std::to_string(ep.port());
      auto refuse = [&](const std::string& why) {
        self->log("refused " + peer + ": " + why);
        boost::system::error_code ignored;
        socket.close(ignored);
        self->accept();
      };
      if (self->open.load() >= self->opts.max_connections)
        return refuse(std::to_string(self->opts.max_connections)
                      + " connections are open (control.max_connections)");
      {
        std::lock_guard guard{self->mtx};
        auto& from = self->per_address[address];
        if (from >= self->opts.max_connections_per_address) {
          auto n = from;
          if (from == 0)
            self->per_address.erase(address);
          return refuse(std::to_string(n) + " connections from " + address
                        + " are open (control.max_connections_per_address)");
        }
        ++from;
      }
      socket.set_option(tcp::no_delay{true}, pe);
      self->open.fetch_add(1);
      std::shared_ptr<session_base> s;
      if (self->tls) {
        auto ts = std::make_shared<session<asio::ssl::stream<tcp::socket>>>(
          asio::ssl::stream<tcp::socket>{std::move(socket), *self->tls}, self,
          peer, address);
        s = ts;
        {
          std::lock_guard guard{self->mtx};
          self->sessions.emplace(s.get(), s);
        }
        ts->start();
      } else {
        auto ps = std::make_shared<session<tcp::socket>>(std::move(socket),
                                                         self, peer, address);
        s = ps;
        {
          std::lock_guard guard{self->mtx};
          self->sessions.emplace(s.get(), s);
        }
        ps->start();
      }
      self->accept();
    });
}

control_server::control_server(asio::io_context& io, options opts,
                               authenticator auth, control_handler& handler)
    : impl_(
      std::make_shared<impl>(io, std::move(opts), std::move(auth), handler)) {}

control_server::~control_server() {
  stop();
}

std::string control_server::start() {
  auto& o = impl_->opts;
  auto where = o.host + ":" + std::to_string(o.port);
  if (!o.tls_cert.empty() || !o.tls_key.empty()) {
    if (o.tls_cert.empty() || o.tls_key.empty())
      return "TLS needs both tls.cert and tls.key";
    try {
      asio::ssl::context ctx{asio::ssl::context::tls_server};
      ctx.set_options(
        asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2
        | asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1
        | asio::ssl::context::no_tlsv1_1);
      ctx.use_certificate_chain_file(o.tls_cert);
      ctx.use_private_key_file(o.tls_key, asio::ssl::context::pem);
      impl_->tls.emplace(std::move(ctx));
    } catch (const std::exception& e) {
      return "cannot load TLS certificate '" + o.tls_cert + "' and key '"
             + o.tls_key + "': " + e.what();
    }
  }
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  auto address = asio::ip::make_address(o.host, ec);
  if (ec) {
    tcp::resolver resolver{impl_->io};
    auto found = resolver.resolve(o.host, std::to_string(o.port), ec);
    if (ec || found.empty())
      return "cannot listen on " + where + ": unknown host '" + o.host + "'";
    endpoint = found.begin()->endpoint();
  } else {
    endpoint = tcp::endpoint{address, o.port};
  }
  auto& a = impl_->acceptor;
  if (a.open(endpoint.protocol(), ec); !ec)
    a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec)
    a.bind(endpoint, ec);
  if (!ec)
    a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;
    a.close(ignored);
    return "cannot listen on " + where + ": " + ec.message();
  }
  impl_->bound_port = a.local_endpoint(ec).port();
  impl_->accept();
  return {};
}

uint16_t control_server::port() const {
  return impl_->bound_port.load();
}

void control_server::stop() {
  if (impl_->stopped.exchange(true))
    return;
  asio::post(impl_->io, [self = impl_] {
    for (auto& s : self->stop_accepting())
      s->close();
  });
}

void control_server::drain(std::chrono::milliseconds within,
                           std::chrono::milliseconds linger) {
  if (impl_->stopped.load() || impl_->draining.exchange(true))
    return;
  asio::post(impl_->io, [self = impl_, within, linger] {
    for (auto& s : self->stop_accepting())
      s->drain(within, linger);
  });
}

bool control_server::wait_closed(std::chrono::milliseconds limit) const {
  auto until = steady::now() + limit;
  // Polls every 5 ms; bounded by `limit`.
  while (impl_->open.load() > 0) {
    if (steady::now() >= until)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  return true;
}

size_t control_server::connections() const {
  return impl_->open.load();
}

} // namespace troupe::cluster

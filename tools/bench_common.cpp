// Asio's headers want <utility> before them with this Boost and GCC 12.
#include "tools/bench_common.hpp"

#include "tools/control_client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <iomanip>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <utility>

namespace troupe::tools::bench {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

void load_result::merge(const load_result& other) {
  ok += other.ok;
  failed += other.failed;
  if (first_error.empty())
    first_error = other.first_error;
  latencies_ms.insert(latencies_ms.end(), other.latencies_ms.begin(),
                      other.latencies_ms.end());
}

void load_result::sort() {
  std::sort(latencies_ms.begin(), latencies_ms.end());
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty())
    return 0;
  auto i = static_cast<size_t>(q * static_cast<double>(sorted.size()));
  return sorted[std::min(sorted.size() - 1, i)];
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string workflow_source(const std::string& name,
                            const std::string& echo_url) {
  std::ostringstream s;
  s << "name: bench-" << name << "\nnodes:\n";
  if (name == "seq10" || name == "seq10c1") {
    for (int i = 1; i <= 10; ++i) {
      s << "  s" << i << ":\n    kind: noop\n";
      if (i > 1)
        s << "    after: [s" << i - 1 << "]\n";
    }
  } else if (name == "http10") {
    // Each step a GET of the echo service with ?i=K, its JSON answer the
    // step's output: what the Restate peer's http10 does with fetch.
    auto sep = echo_url.find('?') == std::string::npos ? "?" : "&";
    for (int i = 1; i <= 10; ++i) {
      s << "  h" << i << ":\n    kind: http\n    url: \"" << echo_url << sep
        << "i=" << i << "\"\n";
      if (i > 1)
        s << "    after: [h" << i - 1 << "]\n";
    }
  } else if (name == "fan10") {
    for (int i = 1; i <= 10; ++i)
      s << "  f" << i << ":\n    kind: noop\n";
    s << "  join:\n    kind: noop\n    after: [f1";
    for (int i = 2; i <= 10; ++i)
      s << ", f" << i;
    s << "]\n";
  } else if (name == "fanexec10") {
    // Spread over a cluster's members; a node alone runs them all.
    for (int i = 1; i <= 10; ++i)
      s << "  e" << i
        << ":\n    kind: exec\n    placement: spread\n    command: "
           "[\"/bin/true\"]\n";
    s << "  join:\n    kind: noop\n    after: [e1";
    for (int i = 2; i <= 10; ++i)
      s << ", e" << i;
    s << "]\n";
  } else if (name == "exec10") {
    for (int i = 1; i <= 10; ++i) {
      s << "  e" << i << ":\n    kind: exec\n    command: [\"/bin/true\"]\n";
      if (i > 1)
        s << "    after: [e" << i - 1 << "]\n";
    }
  } else if (name == "sleepers") {
    s << "  nap:\n    kind: sleep\n    duration: 1h\n";
  } else if (name == "timeouts") {
    // A run timeout, and a node timeout on an attempt actor's node: both
    // arm timers that outlive the run by an hour.
    s << "  work:\n    kind: fail\n    times: 0\n    timeout: 1h\n"
         "  last:\n    kind: noop\n    after: [work]\n"
         "timeout: 1h\n";
  } else if (name == "recover" || name == "history") {
    s << "  first:\n    kind: noop\n"
         "  nap:\n    kind: sleep\n    duration: 1h\n    after: [first]\n"
         "  last:\n    kind: noop\n    after: [nap]\n";
  }
  return s.str();
}

json submit_request(const std::string& name, const std::string& source) {
  return {{"t", "submit"},
          {"workflow", source},
          {"file", "bench-" + name + ".yaml"},
          {"inputs", json::object()}};
}

load_result closed_loop(control_client& client, const json& submit,
                        size_t count, size_t concurrency,
                        const std::string& who) {
  load_result r;
  std::unordered_map<uint64_t, clock_type::time_point> submitting, watching;
  size_t submitted = 0, ended = 0;
  auto began = clock_type::now();
  auto submit_next = [&] {
    if (submitted < count) {
      ++submitted;
      submitting.emplace(client.start(submit), clock_type::now());
    }
  };
  for (size_t i = 0; i < concurrency; ++i)
    submit_next();
  while (ended < count) {
    auto msg = client.next(std::chrono::seconds{120});
    if (!msg)
      throw client_error(exit_failed, "no answer from " + who + " in 120 s");
    auto t = msg->value("t", std::string{});
    auto id = msg->value("id", uint64_t{0});
    if (t == "reply") {
      auto i = submitting.find(id);
      if (i == submitting.end())
        continue;
      auto run_id = (*msg)["body"].value("run_id", std::string{});
      watching.emplace(client.start({{"t", "watch"}, {"run_id", run_id}}),
                       i->second);
      submitting.erase(i);
    } else if (t == "end") {
      auto i = watching.find(id);
      if (i == watching.end())
        continue;
      r.latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(clock_type::now() - i->second)
          .count());
      watching.erase(i);
      ++ended;
      auto state = (*msg)["body"].value("state", std::string{});
      if (state == "completed") {
        ++r.ok;
      } else {
        ++r.failed;
        if (r.first_error.empty())
          r.first_error = "a run ended " + state + ": "
                          + (*msg)["body"].value("reason", std::string{});
      }
      submit_next();
    }
  }
  r.wall_s = std::chrono::duration<double>(clock_type::now() - began).count();
  r.sort();
  return r;
}

std::string check_echo_url(const std::string& url) {
  auto scheme = url.rfind("http://", 0) == 0    ? 7
                : url.rfind("https://", 0) == 0 ? 8
                                                : 0;
  if (scheme == 0)
    return "--echo-url '" + url + "' must start with http:// or https://";
  if (url.size() == static_cast<size_t>(scheme) || url[scheme] == '/')
    return "--echo-url '" + url + "' names no host";
  // It goes into the workflow as a quoted YAML string, and must not be
  // taken for a template.
  for (char ch : url)
    if (ch <= ' ' || ch == '"' || ch == '\\' || ch == '{' || ch == '}'
        || ch == 0x7f)
      return "--echo-url '" + url
             + "' holds a space, a control character, a quote, a backslash "
               "or a brace";
  return {};
}

// -- echo_service -------------------------------------------------------------

namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
} // namespace

struct echo_service::impl {
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::atomic<uint64_t> served{0};
  std::thread thread;

  impl() {
    acceptor.open(tcp::v4());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind({asio::ip::make_address_v4("127.0.0.1"), 0});
    acceptor.listen(asio::socket_base::max_listen_connections);
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto socket = co_await acceptor.async_accept(asio::use_awaitable);
      socket.set_option(tcp::no_delay(true));
      // An error ends that connection's coroutine, and it alone.
      asio::co_spawn(io, session(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> session(tcp::socket socket) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      co_await http::async_read(socket, buffer, req, asio::use_awaitable);
      auto n = served.fetch_add(1, std::memory_order_relaxed) + 1;
      http::response<http::string_body> res{http::status::ok, req.version()};
      res.set(http::field::content_type, "application/json");
      res.body()
        = json{{"ok", true}, {"n", n}, {"path", std::string{req.target()}}}
            .dump();
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      co_await http::async_write(socket, res, asio::use_awaitable);
      if (!req.keep_alive())
        break;
    }
    beast::error_code ec;
    socket.shutdown(tcp::socket::shutdown_send, ec);
  }
};

echo_service::echo_service() : impl_(std::make_unique<impl>()) {
  asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
  impl_->thread = std::thread{[i = impl_.get()] { i->io.run(); }};
}

echo_service::~echo_service() {
  impl_->io.stop();
  if (impl_->thread.joinable())
    impl_->thread.join();
}

std::string echo_service::url() const {
  return "http://127.0.0.1:"
         + std::to_string(impl_->acceptor.local_endpoint().port()) + "/step";
}

uint64_t echo_service::requests() const {
  return impl_->served.load(std::memory_order_relaxed);
}

} // namespace troupe::tools::bench

// The node's answers to the control protocol, in one process: a node
// service over an embedded node whose store has replicated partitions, and
// requests made through a fake connection.

#include "cluster/node/node_service.hpp"
#include "persistence/journal_store.hpp"
#include "runtime/ids/partition.hpp"
#include "tests/support/temp_dir.hpp"

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

using namespace troupe;
using namespace troupe::cluster;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t partitions = 4;

/// A request whose first answer (reply or failure) the test waits for.
class fake_request : public request_context {
 public:
  struct answer {
    bool ok = false;
    control::error_code code = control::error_code::internal;
    std::string message;
    json body;
  };

  uint64_t id() const override { return 1; }
  const principal& who() const override { return who_; }
  void reply(json body) override { settle({true, {}, {}, std::move(body)}); }
  void fail(control::error_code code, const std::string& message,
            json extra) override {
    settle({false, code, message, std::move(extra)});
  }
  void event(json) override {}
  void end(json body) override { settle({true, {}, {}, std::move(body)}); }
  bool closed() const override { return false; }
  void on_close(std::function<void()>) override {}

  /// The first answer, waited for at most 10s.
  std::optional<answer> wait() {
    auto f = done_.get_future();
    if (f.wait_for(10s) != std::future_status::ready)
      return std::nullopt;
    return f.get();
  }

 private:
  void settle(answer a) {
    std::lock_guard guard{mtx_};
    if (!settled_)
      done_.set_value(std::move(a));
    settled_ = true;
  }

  principal who_{"tester", role::admin, 0};
  std::mutex mtx_;
  bool settled_ = false;
  std::promise<answer> done_;
};

/// A node service over a store with `partitions` replicated partitions,
/// each committed as soon as it is recorded (no other replica), new runs
/// without a key going to partition 0.
struct NodeService : ::testing::Test {
  /// Whether a record commits as soon as it is written; false: records
  /// wait for the test to commit (or truncate) them, as for a replica.
  bool commit_on_record = true;
  test::temp_dir dir;
  std::unique_ptr<actors::embedded_node> node;
  boost::asio::io_context io;
  std::unique_ptr<node_service> service;

  void SetUp() override {
    actors::embedded_node::options o;
    o.data_dir = (dir.path() / "data").string();
    o.partition_for = [](const std::string& key) {
      return key.empty() ? 0u : runtime::partition_of_key(key, partitions);
    };
    o.tune_store = [this](persistence::journal_store::options& so) {
      so.replication.partitions = partitions;
      so.replication.commit_on_record = commit_on_record;
      so.replication.partition_of
        = [](std::string_view id, std::string_view key) {
            return key.empty() ? runtime::partition_of_run(id, partitions)
                               : runtime::partition_of_key(key, partitions);
          };
    };
    std::string error;
    node = actors::embedded_node::open(o, error);
    ASSERT_TRUE(node) << error;
    service
      = std::make_unique<node_service>(*node, io, node_service::options{});
    service->recover([](std::string_view) { return false; });
    // Admission says yes: what it saw before the leadership moved.
    service->set_admit([](const std::string&) { return std::string{}; });
  }

  void TearDown() override {
    if (service)
      service->stop();
    service.reset();
    node.reset();
  }

  /// Sends a submission of a one-node workflow, with idempotency key `key`
  /// if any; its answer is the request's.
  std::shared_ptr<fake_request> send_submit(const std::string& key = {}) {
    json msg{{"workflow", "name: one\nnodes:\n  a:\n    kind: noop\n"}};
    if (!key.empty())
      msg["idempotency_key"] = key;
    auto req = std::make_shared<fake_request>();
    service->handle(req, "submit", msg);
    return req;
  }

  /// Submits a one-node workflow, with idempotency key `key` if any.
  fake_request::answer submit(const std::string& key = {}) {
    auto a = send_submit(key)->wait();
    EXPECT_TRUE(a) << "no answer to submit";
    return a ? *a : fake_request::answer{};
  }
};

// A submission admitted while this member led its partition, whose journal
// write comes after the lead ended (a drain or a rebalance moved it: a newer
// epoch was fenced), is refused with not_ready, which clients retry, naming
// the partition; nothing was written. Keyed and keyless submissions alike.
TEST_F(NodeService, ASubmissionRacingALeadershipMoveIsNotReady) {
  for (uint32_t p = 0; p < partitions; ++p)
    ASSERT_TRUE(node->store().lead(p, 1).ok());
  auto before = submit();
  ASSERT_TRUE(before.ok) << before.message;
  const std::string key = "key-1";
  auto keyed = runtime::partition_of_key(key, partitions);
  for (uint32_t p = 0; p < partitions; ++p)
    ASSERT_TRUE(node->store().fence(p, 2).ok());

  auto refused = submit();
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.code, control::error_code::not_ready)
    << control::to_string(refused.code) << ": " << refused.message;
  EXPECT_NE(refused.message.find("partition 0 "), std::string::npos)
    << refused.message;
  EXPECT_NE(refused.message.find("leadership is moving"), std::string::npos)
    << refused.message;
  EXPECT_GT(refused.body.value("retry_after_ms", 0), 0);

  auto refused_keyed = submit(key);
  EXPECT_FALSE(refused_keyed.ok);
  EXPECT_EQ(refused_keyed.code, control::error_code::not_ready)
    << control::to_string(refused_keyed.code) << ": " << refused_keyed.message;
  EXPECT_NE(
    refused_keyed.message.find("partition " + std::to_string(keyed) + " "),
    std::string::npos)
    << refused_keyed.message;
  EXPECT_FALSE(node->store().find_idempotency_key(key));

  // Led again (the move came back here): the same submission goes through.
  for (uint32_t p = 0; p < partitions; ++p)
    ASSERT_TRUE(node->store().lead(p, 3).ok());
  auto again = submit(key);
  EXPECT_TRUE(again.ok) << again.message;
  EXPECT_TRUE(node->store().find_idempotency_key(key));
}

struct NodeServiceWaiting : NodeService {
  NodeServiceWaiting() { commit_on_record = false; }
};

// A submission whose record was written but then truncated (a newer
// leader's log replaced it before the in-sync replicas had it) exists
// nowhere: it is refused with not_ready, which clients retry, saying why.
TEST_F(NodeServiceWaiting, ASubmissionWhoseRecordIsTruncatedIsNotReady) {
  ASSERT_TRUE(node->store().lead(0, 1).ok());
  auto req = send_submit();
  // Its record is written, not committed: the submission waits.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (node->store().log_state(0)->log_end == 0
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  auto state = *node->store().log_state(0);
  ASSERT_EQ(state.log_end, 1u);
  ASSERT_EQ(state.committed, 0u);
  // A newer leader's log replaces it.
  ASSERT_TRUE(node->store().fence(0, 2).ok());
  ASSERT_TRUE(node->store().truncate(0, 0).ok());
  auto a = req->wait();
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);
  EXPECT_EQ(a->code, control::error_code::not_ready)
    << control::to_string(a->code) << ": " << a->message;
  EXPECT_NE(a->message.find("truncated"), std::string::npos) << a->message;
  EXPECT_GT(a->body.value("retry_after_ms", 0), 0);
  EXPECT_TRUE(node->store().list_runs("", 10).empty());
}

} // namespace

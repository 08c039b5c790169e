// The failure detector in one process, against a real etcd for the
// membership: its calls to an etcd that hangs are slow, and a slow call is
// not a pause of the member (which would make it ignore suspicions).

#include "cluster/membership/etcd_coordinator.hpp"
#include "cluster/membership/failure_detector.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"

#include <gtest/gtest.h>

#include <mutex>
#include <thread>

using namespace std::chrono_literals;
using troupe::cluster::detector_options;
using troupe::cluster::etcd_coordinator;
using troupe::cluster::failure_detector;
using troupe::cluster::membership_options;
using troupe::cluster::peer_link;

TEST(FailureDetector, ASlowEtcdCallIsNotTakenForAPause) {
  troupe::test::etcd_process etcd;
  ASSERT_TRUE(etcd.ok()) << etcd.error();
  membership_options mo;
  mo.cluster = "c1";
  mo.self.name = "a";
  mo.self.control_address = "127.0.0.1:7400";
  mo.etcd.endpoints = {etcd.url()};
  mo.lease_ttl = std::chrono::seconds{2};
  etcd_coordinator a{mo};
  ASSERT_FALSE(a.join());

  // The detector's own etcd hangs: each of its calls (the election) takes
  // its whole deadline, twice the pause threshold.
  troupe::test::black_hole hang;
  ASSERT_NE(hang.port, 0);
  std::mutex mtx;
  std::vector<std::string> warned;
  detector_options d;
  d.cluster = "c1";
  d.member = "a";
  d.etcd.endpoints = {hang.url()};
  d.etcd.request_timeout = 1000ms;
  d.etcd.call_timeout = 1000ms;
  d.pause = 500ms;
  d.warn = [&](const std::string& line) {
    std::lock_guard guard{mtx};
    warned.push_back(line);
  };
  // One linked peer: the member stands for detector, so it calls etcd.
  failure_detector detector{d, a, [] {
                              return std::map<std::string, peer_link>{
                                {"b", peer_link{"i1", "connected", "", 0}}};
                            }};
  detector.start();
  std::this_thread::sleep_for(3500ms); // three calls' deadlines: no condition
  detector.stop();
  std::lock_guard guard{mtx};
  for (auto& line : warned)
    EXPECT_EQ(line.find("was paused"), std::string::npos) << line;
}

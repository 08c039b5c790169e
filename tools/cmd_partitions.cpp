// `troupe partitions`: the partitions of a node's cluster, with each one's
// leader, epoch, in-sync replicas and lag, as that node knows them (any
// member answers).

#include "tools/commands.hpp"
#include "tools/control_client.hpp"

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

namespace troupe::tools {

using json = nlohmann::json;

namespace {

std::string joined(const json& list) {
  std::string out;
  if (list.is_array())
    for (auto& m : list)
      if (m.is_string())
        out += (out.empty() ? "" : ",") + m.get<std::string>();
  return out.empty() ? "-" : out;
}

std::string number(const json& p, const char* key) {
  auto i = p.find(key);
  return i != p.end() && i->is_number_integer()
           ? std::to_string(i->get<int64_t>())
           : std::string{"-"};
}

void print_table(const json& body) {
  auto cluster = body.value("cluster", std::string{});
  if (cluster.empty()) {
    std::cout << "node '" << body.value("member", std::string{})
              << "' runs alone (no cluster): it leads every partition, and "
                 "its runs are kept in one copy, its own\n";
    return;
  }
  auto& list = body["partitions"];
  std::cout << "cluster '" << cluster << "', seen from member '"
            << body.value("member", std::string{})
            << "': " << body.value("count", 0) << " partition(s), replication "
            << body.value("replication", 1) << ", min_insync "
            << body.value("min_insync", 1) << "\n";
  std::vector<std::vector<std::string>> rows{{"PARTITION", "LEADER", "EPOCH",
                                              "ISR", "REPLICAS", "COMMITTED",
                                              "LAG", "STATE"}};
  for (auto& p : list) {
    auto state = p.value("state", std::string{"-"});
    if (auto why = p.value("reason", std::string{}); !why.empty())
      state += " (" + why + ")";
    // A move toward its rendezvous target that is due but waits.
    if (auto next = p.value("moving", std::string{});
        !next.empty() && p.value("state", "") != "moving")
      state += "; rebalance due: " + next;
    auto leader = p.value("leader", std::string{});
    rows.push_back({number(p, "partition"), leader.empty() ? "-" : leader,
                    number(p, "epoch"), joined(p.value("isr", json::array())),
                    joined(p.value("replicas", json::array())),
                    number(p, "committed"), number(p, "lag"), state});
    if (auto d = p.find("digest"); d != p.end() && d->is_object())
      rows.back().back() += "  applied " + number(*d, "applied") + " digest "
                            + d->value("digest", std::string{});
  }
  print_columns(std::cout, rows);
}

} // namespace

int run_partitions(const global_options& g, const partitions_options& o) {
  config::settings settings;
  if (!load_config(g, {}, settings))
    return exit_bad_input;
  json request{{"t", "partitions"}};
  if (o.digest)
    request["digest"] = true;
  if (!o.partition.empty()) {
    // A partition number, checked against the cluster's count by the node.
    size_t used = 0;
    long long p = -1;
    try {
      p = std::stoll(o.partition, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != o.partition.size() || p < 0) {
      std::cerr << "troupe: partitions: PARTITION must be a whole number from "
                   "0 (the cluster's count minus one at most), got '"
                << o.partition << "'\n";
      return exit_bad_input;
    }
    request["partition"] = p;
  }
  control_client client;
  try {
    client.connect(client_options(g, settings));
    auto body = client.call(request);
    if (!body.contains("partitions") || !body["partitions"].is_array())
      throw client_error(exit_failed, "the node's answer lists no partitions");
    if (g.json)
      std::cout << body.dump(2, ' ', false, json::error_handler_t::replace)
                << "\n";
    else
      print_table(body);
    return exit_ok;
  } catch (const client_error& e) {
    std::cerr << "troupe: partitions: " << e.what() << "\n";
    return e.exit_code;
  }
}

} // namespace troupe::tools

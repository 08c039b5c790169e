#include "cluster/coordination/coordinator.hpp"

#include <chrono>
#include <cstdio>
#include <random>

namespace troupe::cluster {

using json = nlohmann::json;

json member_info::to_json() const {
  auto j = json{{"name", name},
                {"peer_address", peer_address},
                {"control_address", control_address},
                {"labels", labels},
                {"capacity", capacity},
                {"version", version},
                {"incarnation", incarnation},
                {"started_at_ms", started_at_ms},
                {"joined_at_ms", joined_at_ms}};
  // The one state a member writes itself: the others then place nothing
  // new on it.
  if (state == "leaving")
    j["leaving"] = true;
  return j;
}

bool member_info::from_json(const json& j, member_info& out) {
  if (!j.is_object())
    return false;
  auto text = [&](const char* key, std::string& into) {
    auto i = j.find(key);
    if (i == j.end() || !i->is_string())
      return false;
    into = i->get<std::string>();
    return true;
  };
  auto number = [&](const char* key, int64_t& into) {
    auto i = j.find(key);
    if (i == j.end() || !i->is_number_integer())
      return false;
    into = i->get<int64_t>();
    return true;
  };
  if (!text("name", out.name) || !text("incarnation", out.incarnation))
    return false;
  text("peer_address", out.peer_address);
  text("control_address", out.control_address);
  text("version", out.version);
  number("started_at_ms", out.started_at_ms);
  number("joined_at_ms", out.joined_at_ms);
  auto leaving = j.find("leaving");
  out.state
    = leaving != j.end() && leaving->is_boolean() && leaving->get<bool>()
        ? "leaving"
        : "up";
  out.labels.clear();
  if (auto l = j.find("labels"); l != j.end() && l->is_object())
    for (auto& [k, v] : l->items())
      if (v.is_string())
        out.labels[k] = v.get<std::string>();
  out.capacity.clear();
  if (auto c = j.find("capacity"); c != j.end() && c->is_object())
    for (auto& [k, v] : c->items())
      if (v.is_number_integer())
        out.capacity[k] = v.get<int64_t>();
  return true;
}

local_coordinator::local_coordinator(member_info self, uint32_t partitions)
    : self_(std::move(self)), partitions_(partitions) {
  self_.state = "up";
  if (self_.incarnation.empty())
    self_.incarnation = new_incarnation();
}

std::vector<member_info> local_coordinator::members() const {
  return {self_};
}

self_status local_coordinator::self() const {
  return {{}, self_.name, true, self_.incarnation, 0, 0};
}

std::string local_coordinator::owner_of_partition(uint32_t) const {
  return self_.name;
}

std::string local_coordinator::claim_partition(uint32_t) const {
  return self_.name;
}

std::vector<uint32_t> local_coordinator::owned_partitions() const {
  return {};
}

std::string new_incarnation() {
  static thread_local std::mt19937_64 rng{std::random_device{}()
                                          ^ static_cast<uint64_t>(now_ms())};
  char text[17];
  std::snprintf(text, sizeof text, "%016llx",
                static_cast<unsigned long long>(rng()));
  return text;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace troupe::cluster

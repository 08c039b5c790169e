// `troupe members`: the members of a node's cluster, as that node knows
// them (any member answers).

#include "config/duration.hpp"
#include "tools/commands.hpp"
#include "tools/control_client.hpp"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

namespace troupe::tools {

using json = nlohmann::json;

namespace {

std::string pad(std::string s, size_t width) {
  if (s.size() < width)
    s.append(width - s.size(), ' ');
  return s + "  ";
}

/// "3.2s", "4m10s", "2h5m", "3d4h".
std::string age(int64_t ms) {
  auto s = ms / 1000;
  if (s < 60)
    return std::to_string(ms / 1000) + "." + std::to_string(ms % 1000 / 100)
           + "s";
  if (s < 3600)
    return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  if (s < 86400)
    return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m";
  return std::to_string(s / 86400) + "d" + std::to_string(s % 86400 / 3600)
         + "h";
}

void print_table(const json& body) {
  auto& members = body["members"];
  auto cluster = body.value("cluster", std::string{});
  if (cluster.empty())
    std::cout << "node '" << body.value("member", std::string{})
              << "' runs alone (no cluster)\n";
  else
    std::cout << "cluster '" << cluster << "', seen from member '"
              << body.value("member", std::string{}) << "': " << members.size()
              << " member(s)\n";
  std::vector<std::vector<std::string>> rows{{"NAME", "STATE", "LINK",
                                              "ADDRESS", "LABELS", "LOAD",
                                              "RUNS", "AGE", "INCARNATION"}};
  for (auto& m : members) {
    std::string labels;
    if (auto l = m.find("labels"); l != m.end() && l->is_object())
      for (auto& [k, v] : l->items())
        labels += (labels.empty() ? "" : ",") + k + "="
                  + (v.is_string() ? v.get<std::string>() : v.dump());
    auto name = m.value("name", std::string{});
    if (m.value("self", false))
      name += " *";
    auto link = m.value("link", std::string{});
    // Attempts in flight / capacity (summed over the kinds; "-": no bound),
    // as the member last reported them; "-" when it has not.
    std::string load = "-";
    if (auto l = m.find("load"); l != m.end() && l->is_object()) {
      auto cap = l->find("capacity");
      load = std::to_string(l->value("in_flight", int64_t{0})) + "/"
             + (cap != l->end() && cap->is_number_integer()
                  ? std::to_string(cap->get<int64_t>())
                  : std::string{"-"});
    }
    auto runs = m.find("runs");
    rows.push_back({name, m.value("state", std::string{}),
                    link.empty() ? "-" : link,
                    m.value("control_address", std::string{}),
                    labels.empty() ? "-" : labels, load,
                    runs != m.end() && runs->is_number_integer()
                      ? std::to_string(runs->get<int64_t>())
                      : std::string{"-"},
                    age(m.value("age_ms", int64_t{0})),
                    m.value("incarnation", std::string{})});
  }
  print_columns(std::cout, rows);
  // Partitions no member can lead now: their runs wait.
  if (auto d = body.find("unavailable_partitions");
      d != body.end() && d->is_array() && !d->empty()) {
    std::cout << d->size()
              << " partition(s) unavailable; their runs wait for an in-sync "
                 "replica to come back:\n";
    for (auto& p : *d)
      std::cout << "  partition " << p.value("partition", 0) << ": "
                << p.value("reason", std::string{}) << "\n";
  }
}

} // namespace

void print_columns(std::ostream& out,
                   const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty())
    return;
  std::vector<size_t> width(rows[0].size(), 0);
  for (auto& r : rows)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  for (auto& r : rows) {
    if (r.empty())
      continue;
    std::string line;
    for (size_t i = 0; i + 1 < r.size(); ++i)
      line += pad(r[i], i < width.size() ? width[i] : 0);
    out << line << r.back() << "\n";
  }
}

int run_members(const global_options& g) {
  config::settings settings;
  if (!load_config(g, {}, settings))
    return exit_bad_input;
  control_client client;
  try {
    client.connect(client_options(g, settings));
    auto body = client.call({{"t", "members"}});
    if (!body.contains("members") || !body["members"].is_array())
      throw client_error(exit_failed, "the node's answer lists no members");
    if (g.json)
      std::cout << body.dump(2, ' ', false, json::error_handler_t::replace)
                << "\n";
    else
      print_table(body);
    return exit_ok;
  } catch (const client_error& e) {
    std::cerr << "troupe: members: " << e.what() << "\n";
    return e.exit_code;
  }
}

int run_leave(const global_options& g, const leave_options& o) {
  const char* what = o.member.empty() ? "leave" : "drain";
  std::string error;
  auto wait = config::parse_duration(o.wait, &error);
  if (!wait) {
    std::cerr << "troupe: " << what << ": --wait '" << o.wait << "': " << error
              << "\n";
    return exit_bad_input;
  }
  config::settings settings;
  if (!load_config(g, {}, settings))
    return exit_bad_input;
  std::string member;
  try {
    control_client client;
    client.connect(client_options(g, settings));
    json request{{"t", "leave"}};
    if (!o.member.empty())
      request["member"] = o.member;
    auto body = client.call(request);
    member = body.value("member", o.member);
    if (!g.json)
      std::cerr << "member '" << member
                << "' is leaving: it hands its partitions over and lets its "
                   "attempts finish\n";
  } catch (const client_error& e) {
    std::cerr << "troupe: " << what << ": " << e.what() << "\n";
    return e.exit_code;
  }
  // Gone: a drained member is no longer listed up by the node asked (or,
  // for `leave`, the node asked no longer answers).
  auto deadline = std::chrono::steady_clock::now() + *wait;
  bool gone = wait->count() == 0;
  for (int i = 0; i < 100'000 && !gone; ++i) {
    try {
      control_client client;
      client.connect(client_options(g, settings));
      auto body = client.call({{"t", "members"}}, std::chrono::seconds{5});
      gone = true;
      for (auto& m : body.value("members", json::array()))
        if (m.value("name", "") == member
            && (m.value("state", "") == "up"
                || m.value("state", "") == "leaving"))
          gone = false;
    } catch (const client_error&) {
      gone = o.member.empty();
    }
    if (gone || std::chrono::steady_clock::now() >= deadline)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds{200});
  }
  if (g.json)
    std::cout << json{{"member", member}, {"left", gone}}.dump() << "\n";
  else if (wait->count() > 0)
    std::cerr << (gone ? "member '" + member + "' has left\n"
                       : "member '" + member + "' has not left within " + o.wait
                           + "; it is still draining\n");
  return gone || wait->count() == 0 ? exit_ok : exit_failed;
}

} // namespace troupe::tools

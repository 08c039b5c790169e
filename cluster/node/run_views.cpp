#include "cluster/node/run_views.hpp"

#include "runtime/engine/run_engine.hpp"

namespace troupe::cluster {

using json = nlohmann::json;
using persistence::event_record;
using persistence::event_type;
using persistence::run_state;

json parse_or_text(const std::string& text) {
  if (text.empty())
    return nullptr;
  auto v = json::parse(text, nullptr, false);
  return v.is_discarded() ? json(text) : v;
}

std::optional<run_state> parse_run_state(const std::string& s) {
  for (auto st : {run_state::running, run_state::paused, run_state::completed,
                  run_state::failed, run_state::cancelled})
    if (persistence::to_string(st) == s)
      return st;
  return std::nullopt;
}

json entry_json(const persistence::run_index_entry& e) {
  return json{{"run_id", e.run_id},
              {"workflow", e.workflow},
              {"state", persistence::to_string(e.state)},
              {"created_at_ns", e.created_at_ns},
              {"updated_at_ns", e.updated_at_ns},
              {"reason", e.reason}};
}

json event_json(const event_record& e, int64_t seq, size_t cap) {
  json out = {
    {"seq", seq}, {"type", persistence::to_string(e.type)}, {"at_ns", e.at_ns}};
  if (!e.node.empty())
    out["node"] = e.node;
  if (e.attempt != 0)
    out["attempt"] = e.attempt;
  if (e.deadline_ns != 0)
    out["deadline_ns"] = e.deadline_ns;
  if (!e.error_kind.empty())
    out["error_kind"] = e.error_kind;
  if (!e.message.empty())
    out["message"] = e.message;
  if (!e.member.empty())
    out["member"] = e.member;
  // A map's first attempt carries its items (data): say how many, as a
  // live event does, since data may be cut.
  if (e.type == event_type::attempt_started && !e.data.empty()
      && e.data.front() == '[')
    if (auto items = json::parse(e.data, nullptr, false); items.is_array())
      out["items"] = items.size();
  auto put = [&](const char* name, const std::string& v) {
    if (v.empty())
      return;
    if (v.size() > cap) {
      out[name] = v.substr(0, cap);
      out[std::string{name} + "_truncated"] = true;
    } else {
      out[name] = v;
    }
  };
  put("data", e.data);
  put("data2", e.data2);
  return out;
}

std::optional<json> status_view(persistence::journal_store& store,
                                actors::spec_cache& specs,
                                const std::string& run_id) {
  auto entry = store.find_run(run_id);
  if (!entry)
    return std::nullopt;
  std::string error;
  auto events = store.read_journal(run_id, error);
  json out = entry_json(*entry);
  out["events"] = events.size();
  out["paused"] = entry->state == run_state::paused;
  json nodes = json::array();
  if (!events.empty() && events.front().type == event_type::run_submitted) {
    std::string spec_error;
    if (auto spec = specs.get(events.front().data, spec_error)) {
      auto inputs = parse_or_text(events.front().data2);
      runtime::run_engine engine{run_id, spec,
                                 inputs.is_object() ? inputs : json::object()};
      // Who ran each node's last attempt that ended (a cluster's member).
      std::map<std::string, std::string> ran_on;
      for (auto& e : events) {
        engine.apply(e);
        if (!e.member.empty())
          ran_on[e.node] = e.member;
      }
      for (auto& n : spec->nodes) {
        auto& st = engine.status(n.id);
        json node = {{"id", n.id},
                     {"kind", n.kind},
                     {"state", runtime::to_string(st.state)},
                     {"attempt", st.attempt}};
        if (st.state == runtime::node_state::waiting_retry
            && st.next_retry_ns != 0)
          node["next_retry_ns"] = st.next_retry_ns;
        if (st.state == runtime::node_state::running
            && st.timer_deadline_ns != 0)
          node["timer_deadline_ns"] = st.timer_deadline_ns;
        if (!st.last_error.empty()) {
          node["last_error_kind"] = st.last_error_kind;
          node["last_error"] = st.last_error.substr(0, 1024);
        }
        if (auto m = ran_on.find(n.id); m != ran_on.end())
          node["member"] = m->second;
        if (auto items = engine.map_items(n.id); items > 0)
          node["items"] = items;
        nodes.push_back(std::move(node));
      }
    } else {
      error = "its workflow no longer parses: " + spec_error;
    }
  }
  out["nodes"] = std::move(nodes);
  if (!error.empty())
    out["journal_error"] = error;
  return out;
}

std::string missing_run(persistence::journal_store& store,
                        const std::string& run_id, json* detail) {
  auto t = store.find_tombstone(run_id);
  if (!t)
    return "no run '" + run_id + "'";
  if (detail)
    *detail = json{{"deleted", true},
                   {"deleted_at_ns", t->deleted_at_ns},
                   {"workflow", t->last.workflow},
                   {"state", persistence::to_string(t->last.state)}};
  return "run " + run_id + ": not found (deleted after retention)";
}

std::string bad_list_cursor(persistence::journal_store& store,
                            const std::string& after) {
  if (after.empty() || store.find_run(after) || store.find_tombstone(after))
    return {};
  return "'" + after
         + "' is not a cursor: no run has that id (a cursor is the 'next' "
           "of an earlier page)";
}

json list_view(persistence::journal_store& store, const list_filter& f) {
  auto matches = [&](const persistence::run_index_entry& e) {
    return (!f.state || e.state == *f.state)
           && (f.workflow.empty() || e.workflow == f.workflow)
           && (!f.keep || f.keep(e.run_id));
  };
  constexpr size_t batch_size = 1000;
  json runs = json::array();
  std::string cursor = f.after;
  size_t scanned = 0;
  bool stopped = false;
  while (!stopped) {
    auto batch = store.list_runs(cursor, batch_size);
    for (auto& e : batch) {
      cursor = e.run_id;
      ++scanned;
      if (matches(e))
        runs.push_back(entry_json(e));
      if (runs.size() >= f.limit || scanned >= f.max_scan) {
        stopped = true;
        break;
      }
    }
    if (batch.size() < batch_size)
      break;
  }
  // A page that stopped may still be the last one: look ahead to say so.
  bool more = false;
  if (stopped)
    for (auto& e : store.list_runs(cursor, batch_size))
      if (matches(e) || scanned >= f.max_scan) {
        more = true;
        break;
      }
  return json{{"runs", std::move(runs)},
              {"next", more ? cursor : std::string{}},
              {"scanned", scanned}};
}

std::optional<json> history_view(persistence::journal_store& store,
                                 const std::string& run_id, uint64_t after,
                                 uint64_t limit, size_t max_bytes) {
  auto entry = store.find_run(run_id);
  if (!entry)
    return std::nullopt;
  std::string error;
  auto events = store.read_journal(run_id, error);
  json out = entry_json(*entry);
  json list = json::array();
  size_t bytes = 0;
  uint64_t seq = 0, last = after;
  bool more = false;
  for (auto& e : events) {
    if (++seq <= after)
      continue;
    if (list.size() >= limit || bytes >= max_bytes) {
      more = true;
      break;
    }
    bytes += e.data.size() + e.data2.size() + e.message.size() + 64;
    list.push_back(event_json(e, static_cast<int64_t>(seq)));
    last = seq;
  }
  out["events"] = std::move(list);
  out["next"] = more ? last : 0;
  if (!error.empty())
    out["journal_error"] = error;
  return out;
}

std::optional<json> logs_view(persistence::journal_store& store,
                              const std::string& run_id,
                              const std::string& node, size_t max_bytes,
                              std::string& error) {
  auto entry = store.find_run(run_id);
  if (!entry)
    return std::nullopt;
  std::string read_error;
  auto events = store.read_journal(run_id, read_error);
  auto of_node = [&](const std::string& id) {
    return node.empty() || id == node || id.starts_with(node + "[");
  };
  json attempts = json::array();
  size_t bytes = 0;
  bool truncated = false, known = node.empty();
  for (auto& e : events) {
    if (!of_node(e.node))
      continue;
    known = true;
    bool ended = e.type == event_type::attempt_failed
                 || (e.type == event_type::node_completed && e.attempt > 0);
    if (!ended)
      continue;
    if (bytes >= max_bytes) {
      truncated = true;
      break;
    }
    json a = {{"node", e.node},
              {"attempt", e.attempt},
              {"at_ns", e.at_ns},
              {"outcome", e.type == event_type::node_completed
                            ? std::string{"completed"}
                            : "failed (" + e.error_kind + ")"}};
    if (e.type == event_type::attempt_failed)
      a["message"] = e.message;
    auto logs = parse_or_text(e.data2);
    if (logs.is_object())
      for (auto& [k, v] : logs.items())
        a[k] = v;
    bytes += e.data2.size() + e.message.size() + 64;
    attempts.push_back(std::move(a));
  }
  if (!known) {
    error = "run " + run_id + " has no node '" + node + "' with events";
    return std::nullopt;
  }
  json out = {{"run_id", run_id},
              {"attempts", std::move(attempts)},
              {"truncated", truncated}};
  if (!read_error.empty())
    out["journal_error"] = read_error;
  return out;
}

} // namespace troupe::cluster

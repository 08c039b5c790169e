#include "runtime/engine/run_engine.hpp"

#include "config/duration.hpp"
#include "config/suggest.hpp"
#include "runtime/engine/backoff.hpp"
#include "runtime/engine/resolve.hpp"

#include <algorithm>
#include <stdexcept>

namespace troupe::runtime {

using json = nlohmann::json;

std::string_view to_string(node_state s) {
  switch (s) {
  case node_state::pending: return "pending";
  case node_state::running: return "running";
  case node_state::waiting_retry: return "waiting_retry";
  case node_state::completed: return "completed";
  case node_state::failed: return "failed";
  case node_state::cancelled: return "cancelled";
  case node_state::fell_back: return "fell_back";
  case node_state::skipped: return "skipped";
  }
  return "unknown";
}

run_engine::run_engine(std::string run_id,
                       std::shared_ptr<const workflow_spec> spec, json inputs)
    : run_id_(std::move(run_id)), spec_(std::move(spec)),
      inputs_(std::move(inputs)), nodes_(spec_->nodes.size()) {
  if (!spec_->indexed()) {
    auto indexed = std::make_shared<workflow_spec>(*spec_);
    indexed->build_index();
    spec_ = std::move(indexed);
  }
  size_t standby = 0;
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    standby += is_standby(i) ? 1 : 0;
    // What waits on nothing may be ready now; the rest is looked at when
    // what it waits on ends.
    if (spec_->nodes[i].after.empty())
      unsettled_.insert(unsettled_.end(), i);
  }
  required_ = nodes_.size() - standby;
}

int32_t run_engine::position(const std::string& id) const {
  auto i = index().position.find(id);
  return i == index().position.end() ? -1 : static_cast<int32_t>(i->second);
}

const node_status* run_engine::find_status(const std::string& id) const {
  if (auto pos = position(id); pos >= 0)
    return &nodes_[static_cast<size_t>(pos)];
  auto item = split_item(id);
  if (!item)
    return nullptr;
  auto m = maps_.find(item->first);
  if (m == maps_.end() || item->second >= m->second.status.size())
    return nullptr;
  return &m->second.status[item->second];
}

const node_status& run_engine::status(const std::string& node) const {
  if (auto* st = find_status(node))
    return *st;
  throw std::out_of_range("run " + run_id_ + " has no node '" + node + "'");
}

void run_engine::track(uint32_t pos, node_state was, int64_t was_retry_ns) {
  auto& st = nodes_[pos];
  bool waited = was == node_state::waiting_retry && was_retry_ns != 0;
  bool waits = st.state == node_state::waiting_retry && st.next_retry_ns != 0;
  bool moved = was_retry_ns != st.next_retry_ns;
  if (waited && (!waits || moved))
    retries_.erase({was_retry_ns, pos});
  if (waits && (!waited || moved))
    retries_.emplace(st.next_retry_ns, pos);
  if (st.state == was)
    return;
  if (was == node_state::pending) {
    unsettled_.erase(pos);
    startable_.erase(pos);
  }
  bool watch
    = st.state == node_state::fell_back
      || (st.state == node_state::running && spec_->nodes[pos].map_node);
  auto w = std::lower_bound(watched_.begin(), watched_.end(), pos);
  bool in = w != watched_.end() && *w == pos;
  if (watch && !in)
    watched_.insert(w, pos);
  else if (!watch && in)
    watched_.erase(w);
  if (st.state == node_state::completed || st.state == node_state::skipped) {
    bool ok = st.state == node_state::completed;
    for (auto d : index().dependents[pos]) {
      auto& ds = nodes_[d];
      ++(ok ? ds.after_completed : ds.after_skipped);
      if (ds.state == node_state::pending)
        unsettled_.insert(d);
    }
  }
}

void run_engine::track_item(map_state& m, size_t i, node_state was,
                            int64_t was_retry_ns) {
  auto& st = m.status[i];
  if (was == node_state::waiting_retry && was_retry_ns != 0)
    m.retrying.erase({was_retry_ns, i});
  if (st.state == node_state::waiting_retry && st.next_retry_ns != 0)
    m.retrying.emplace(st.next_retry_ns, i);
}

namespace {

json parse_or_string(const std::string& text) {
  auto v = json::parse(text, nullptr, false);
  return v.is_discarded() ? json(text) : v;
}

} // namespace

void run_engine::apply(const event_record& e) {
  auto pos = position(e.node);
  node_status* n = pos >= 0 ? &nodes_[static_cast<size_t>(pos)] : nullptr;
  // A map item counts against its map, not against the run.
  std::optional<std::pair<std::string, size_t>> item;
  map_state* ms = nullptr;
  if (!n && !e.node.empty()) {
    item = split_item(e.node);
    if (item)
      if (auto m = maps_.find(item->first);
          m != maps_.end() && item->second < m->second.status.size()) {
        ms = &m->second;
        n = &ms->status[item->second];
      }
    if (!n)
      item.reset();
  }
  auto was = n ? n->state : node_state::pending;
  auto was_retry_ns = n ? n->next_retry_ns : 0;
  auto& running = ms ? ms->running : running_;
  auto leave_running = [&] {
    if (n && n->state == node_state::running)
      --running;
  };
  switch (e.type) {
  case event_type::run_submitted:
    if (spec_->timeout)
      run_deadline_ns_ = e.at_ns + spec_->timeout->count();
    break;
  case event_type::attempt_started:
    if (!n)
      break;
    if (n->state != node_state::running)
      ++running;
    n->state = node_state::running;
    if (ms)
      ms->next = std::max(ms->next, item->second + 1);
    if (n->close_deadline_ns == 0)
      if (auto* s = node_spec_of(e.node); s && s->schedule_to_close)
        n->close_deadline_ns = e.at_ns + s->schedule_to_close->count();
    // A map's first attempt carries its items: each becomes a node.
    if (!item && !e.data.empty() && !maps_.count(e.node)) {
      auto& m = maps_[e.node];
      m.items = parse_or_string(e.data);
      if (!m.items.is_array())
        m.items = nlohmann::json::array();
      m.status.resize(m.items.size());
    }
    n->attempt = e.attempt;
    n->started_at_ns = e.at_ns;
    n->attempt_deadline_ns = e.deadline_ns;
    n->next_retry_ns = 0;
    break;
  case event_type::timer_set:
    if (n && n->timer_deadline_ns == 0)
      n->timer_deadline_ns = e.deadline_ns;
    break;
  case event_type::attempt_failed:
    if (!n)
      break;
    leave_running();
    n->last_error_kind = e.error_kind;
    n->last_error = e.message;
    n->next_retry_ns = e.deadline_ns;
    // Refused by an open circuit breaker: the attempt never ran, so it
    // does not count against max_attempts.
    if (e.error_kind == "circuit_open")
      n->attempt = e.attempt - 1;
    // Without a retry time the node_failed event follows.
    n->state = node_state::waiting_retry;
    break;
  case event_type::node_completed:
    if (!n)
      break;
    leave_running();
    n->state = node_state::completed;
    n->output = parse_or_string(e.data);
    if (item) {
      if (ms)
        ++ms->done;
      break;
    }
    node_outputs_[e.node] = n->output;
    if (!is_standby(static_cast<size_t>(pos)) && was != node_state::completed) {
      ++completed_;
      completion_order_.push_back(static_cast<uint32_t>(pos));
    }
    break;
  case event_type::node_failed:
    if (!n)
      break;
    leave_running();
    n->state = node_state::failed;
    n->last_error_kind = e.error_kind;
    n->last_error = e.message;
    break;
  case event_type::node_cancelled:
    if (!n)
      break;
    leave_running();
    n->state = node_state::cancelled;
    break;
  case event_type::run_completed:
    state_ = run_state::completed;
    outputs_ = parse_or_string(e.data);
    break;
  case event_type::run_failed:
    state_ = run_state::failed;
    ended().reason = e.message;
    ended().failed_node = e.node;
    if (!e.data.empty())
      outputs_ = parse_or_string(e.data); // how compensation went
    break;
  case event_type::run_compensating:
    // Compensations must run: failing or cancelling overrides a pause.
    paused_ = false;
    compensating_ = true;
    ended().reason = e.message;
    ended().failed_node = e.node;
    ended().fail_kind = e.error_kind;
    break;
  case event_type::run_cancelled:
    state_ = run_state::cancelled;
    ended().reason = e.message;
    if (!e.data.empty())
      outputs_ = parse_or_string(e.data); // how compensation went
    break;
  case event_type::run_restarted: restarts_ = e.attempt; break;
  case event_type::run_paused: paused_ = true; break;
  case event_type::run_resumed: paused_ = false; break;
  case event_type::node_skipped:
    if (!n)
      break;
    leave_running();
    n->state = node_state::skipped;
    n->last_error = e.message;
    // Templates naming a skipped node's output see null.
    node_outputs_[e.node] = nullptr;
    if (!item && !is_standby(static_cast<size_t>(pos))
        && was != node_state::skipped)
      ++completed_;
    break;
  case event_type::node_fell_back:
    if (!n)
      break;
    leave_running();
    n->state = node_state::fell_back;
    n->last_error_kind = e.error_kind;
    n->last_error = e.message;
    if (auto f = position(e.data); f >= 0) {
      // Called on: it may run now.
      nodes_[static_cast<size_t>(f)].triggered = true;
      if (nodes_[static_cast<size_t>(f)].state == node_state::pending)
        unsettled_.insert(static_cast<uint32_t>(f));
    }
    break;
  }
  if (pos >= 0)
    track(static_cast<uint32_t>(pos), was, was_retry_ns);
  else if (ms)
    track_item(*ms, item->second, was, was_retry_ns);
}

void run_engine::emit(std::vector<event_record>& out, event_record e) {
  apply(e);
  out.push_back(std::move(e));
}

run_engine::readiness
run_engine::ready(const node_spec& n, const node_status& st, std::string& why) {
  ++readiness_checks_;
  size_t ok = st.after_completed, skipped = st.after_skipped;
  auto all = n.after.size();
  switch (n.trigger) {
  case trigger_rule::all_success:
    if (skipped > 0) {
      for (auto& dep : n.after)
        if (auto p = position(dep);
            p >= 0
            && nodes_[static_cast<size_t>(p)].state == node_state::skipped) {
          why = "upstream '" + dep + "' was skipped";
          break;
        }
      return readiness::skip;
    }
    return ok == all ? readiness::ready : readiness::wait;
  case trigger_rule::all_done:
    return ok + skipped == all ? readiness::ready : readiness::wait;
  case trigger_rule::one_success:
    if (ok > 0 || all == 0)
      return readiness::ready;
    if (skipped == all) {
      why = "every upstream node was skipped";
      return readiness::skip;
    }
    return readiness::wait;
  }
  return readiness::wait;
}

void run_engine::take_branch(const node_spec& sw,
                             std::vector<event_record>& out, int64_t now_ns) {
  template_scope scope{&inputs_,    &node_outputs_, run_id_,
                       spec_->name, sw.id,          1};
  std::string detail;
  expression_lookup lookup
    = [&](const std::vector<std::string>& path) -> std::optional<json> {
    return resolve_path(path, scope, detail);
  };
  const std::vector<std::string>* taken = &sw.default_goto;
  json which = "default";
  for (size_t k = 0; k < sw.cases.size(); ++k) {
    std::string error;
    detail.clear();
    auto holds = evaluate(*sw.cases[k].condition, lookup, error);
    if (!holds) {
      auto failed = give_up_node(sw.id, 1, "bad_expression",
                                 "case " + std::to_string(k + 1) + " ('"
                                   + sw.cases[k].when
                                   + "'): " + (detail.empty() ? error : detail),
                                 now_ns);
      out.insert(out.end(), failed.begin(), failed.end());
      return;
    }
    if (*holds) {
      taken = &sw.cases[k].go_to;
      which = k + 1;
      break;
    }
  }
  json output = {{"case", which}, {"goto", *taken}};
  emit(out, {event_type::node_completed, now_ns, sw.id, 1, 0, "", "",
             output.dump(-1, ' ', false, json::error_handler_t::replace)});
  auto skip = [&](const std::string& target) {
    if (std::find(taken->begin(), taken->end(), target) != taken->end())
      return;
    auto* st = find_status(target);
    if (!st || st->state != node_state::pending)
      return;
    emit(out, {event_type::node_skipped, now_ns, target, 0, 0, "",
               "branch not taken by switch '" + sw.id + "'"});
  };
  for (auto& c : sw.cases)
    for (auto& t : c.go_to)
      skip(t);
  for (auto& t : sw.default_goto)
    skip(t);
}

bool run_engine::settle_branches(std::vector<event_record>& out,
                                 int64_t now_ns) {
  // Passes in the spec's order over the nodes whose readiness may have
  // changed; what a pass changes behind it waits for the next pass.
  uint32_t cursor = 0;
  while (!unsettled_.empty() && !is_finished()) {
    auto it = unsettled_.lower_bound(cursor);
    if (it == unsettled_.end()) {
      cursor = 0;
      continue;
    }
    auto pos = *it;
    unsettled_.erase(it);
    cursor = pos + 1;
    auto& n = spec_->nodes[pos];
    auto& st = nodes_[pos];
    // A standby node not called on is looked at again when it is.
    if (st.state != node_state::pending || (is_standby(pos) && !st.triggered))
      continue;
    std::string why;
    auto r = ready(n, st, why);
    if (r == readiness::skip)
      emit(out, {event_type::node_skipped, now_ns, n.id, 0, 0, "", why});
    else if (r == readiness::ready && n.kind == "switch")
      take_branch(n, out, now_ns);
    else if (r == readiness::ready)
      startable_.insert(pos);
  }
  return !is_finished();
}

std::optional<json> run_engine::resolve_params(const node_spec& node,
                                               std::string& error) const {
  template_scope scope{&inputs_,    &node_outputs_, run_id_,
                       spec_->name, node.id,        status(node.id).attempt};
  return resolve_templates(node.params, scope, error);
}

std::optional<std::string> run_engine::resolve_text(const node_spec& node,
                                                    const std::string& text,
                                                    std::string& error) const {
  template_scope scope{&inputs_,    &node_outputs_, run_id_,
                       spec_->name, node.id,        status(node.id).attempt};
  auto v = resolve_templates(json(text), scope, error);
  if (!v)
    return std::nullopt;
  return v->is_string()
           ? v->get<std::string>()
           : v->dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<std::pair<std::string, size_t>>
run_engine::split_item(const std::string& id) {
  if (id.size() < 4 || id.back() != ']')
    return std::nullopt;
  auto open = id.rfind('[');
  if (open == std::string::npos || open == 0 || open + 2 > id.size() - 1 + 1)
    return std::nullopt;
  size_t index = 0;
  auto digits = std::string_view{id}.substr(open + 1, id.size() - open - 2);
  // One spelling per item: "m[3]", never "m[03]".
  if (digits.empty() || (digits.size() > 1 && digits[0] == '0'))
    return std::nullopt;
  for (char c : digits) {
    if (c < '0' || c > '9')
      return std::nullopt;
    index = index * 10 + static_cast<size_t>(c - '0');
  }
  return std::pair{id.substr(0, open), index};
}

const node_spec* run_engine::node_spec_of(const std::string& id) const {
  if (auto pos = position(id); pos >= 0)
    return &spec_->nodes[static_cast<size_t>(pos)];
  if (auto item = split_item(id))
    if (auto pos = position(item->first);
        pos >= 0 && spec_->nodes[static_cast<size_t>(pos)].map_node)
      return spec_->nodes[static_cast<size_t>(pos)].map_node.get();
  return nullptr;
}

const json* run_engine::item_of(const std::string& id) const {
  auto item = split_item(id);
  if (!item)
    return nullptr;
  auto m = maps_.find(item->first);
  if (m == maps_.end() || item->second >= m->second.items.size())
    return nullptr;
  return &m->second.items[item->second];
}

std::optional<json> run_engine::resolve_params_for(const std::string& id,
                                                   std::string& error) const {
  auto* spec = node_spec_of(id);
  if (!spec) {
    error = "unknown node '" + id + "'";
    return std::nullopt;
  }
  template_scope scope{&inputs_, &node_outputs_,    run_id_, spec_->name,
                       id,       status(id).attempt};
  if (auto* item = item_of(id)) {
    scope.item = item;
    scope.item_index = static_cast<int64_t>(split_item(id)->second);
  }
  return resolve_templates(spec->params, scope, error);
}

void run_engine::settle_maps(std::vector<event_record>& out, int64_t now_ns) {
  if (watched_.empty())
    return;
  // (A copy: completing a map takes it off the list.)
  auto watched = watched_;
  for (auto pos : watched) {
    auto& n = spec_->nodes[pos];
    if (!n.map_node)
      continue;
    auto m = maps_.find(n.id);
    auto& st = nodes_[pos];
    if (m == maps_.end() || st.state != node_state::running
        || m->second.done < m->second.items.size())
      continue;
    json outputs = json::array();
    for (auto& item : m->second.status)
      outputs.push_back(item.output);
    auto text = outputs.dump(-1, ' ', false, json::error_handler_t::replace);
    if (text.size() > max_map_output_bytes) {
      // One journal record holds it, and every reader of the run after it:
      // a map that outgrows the cap fails (its fallback or the run's
      // compensations apply) rather than bloat them.
      auto failed = give_up_node(
        n.id, st.attempt, "output_too_large",
        "the outputs of its " + std::to_string(m->second.items.size())
          + " items add up to " + std::to_string(text.size())
          + " bytes; a map's output may hold at most "
          + std::to_string(max_map_output_bytes)
          + " (keep large results elsewhere and output references to them)",
        now_ns);
      out.insert(out.end(), failed.begin(), failed.end());
      continue;
    }
    emit(out, {event_type::node_completed, now_ns, n.id, st.attempt, 0, "", "",
               std::move(text)});
  }
}

void run_engine::start_items(std::vector<event_record>& out, int64_t now_ns) {
  if (watched_.empty())
    return;
  auto watched = watched_;
  for (auto pos : watched) {
    auto& n = spec_->nodes[pos];
    if (!n.map_node || nodes_[pos].state != node_state::running)
      continue;
    auto m = maps_.find(n.id);
    if (m == maps_.end())
      continue;
    auto& ms = m->second;
    auto limit = static_cast<size_t>(std::max(1, n.map_concurrency));
    // Due retries first, then items never started, in order.
    std::vector<size_t> due;
    for (auto& [at, i] : ms.retrying) {
      if (at > now_ns)
        break;
      due.push_back(i);
    }
    std::sort(due.begin(), due.end());
    for (auto i : due) {
      if (ms.running >= limit || is_finished())
        return;
      if (!start_attempt(*n.map_node, out, now_ns,
                         n.id + "[" + std::to_string(i) + "]"))
        return;
    }
    while (ms.running < limit && ms.next < ms.items.size() && !is_finished()) {
      auto id = n.id + "[" + std::to_string(ms.next++) + "]";
      if (!start_attempt(*n.map_node, out, now_ns, id))
        return;
    }
  }
}

void run_engine::cancel_items(const std::string& id, const std::string& why,
                              std::vector<event_record>& out, int64_t now_ns) {
  auto m = maps_.find(id);
  if (m == maps_.end())
    return;
  auto& items = m->second.status;
  for (size_t i = 0; i < items.size(); ++i) {
    auto& st = items[i];
    if (st.state == node_state::running
        || st.state == node_state::waiting_retry)
      emit(out, {event_type::node_cancelled, now_ns,
                 id + "[" + std::to_string(i) + "]", st.attempt, 0, "", why});
  }
}

std::vector<event_record> run_engine::decide(int64_t now_ns) {
  std::vector<event_record> out;
  if (is_finished())
    return out;
  if (compensating_) {
    compensate_step(out, now_ns);
    return out;
  }
  // A node whose fallback completed completes with the fallback's output
  // (innermost first along a chain, so one pass settles it).
  for (bool settled = watched_.empty(); !settled;) {
    settled = true;
    auto watched = watched_;
    for (auto pos : watched) {
      auto& n = spec_->nodes[pos];
      auto& st = nodes_[pos];
      if (st.state != node_state::fell_back)
        continue;
      auto f = position(n.fallback);
      if (f < 0
          || nodes_[static_cast<size_t>(f)].state != node_state::completed)
        continue;
      auto& fb = nodes_[static_cast<size_t>(f)];
      emit(out,
           {event_type::node_completed, now_ns, n.id, st.attempt, 0, "",
            "output of fallback '" + n.fallback + "'",
            fb.output.dump(-1, ' ', false, json::error_handler_t::replace)});
      settled = false;
    }
  }
  settle_maps(out, now_ns);
  if (!settle_branches(out, now_ns))
    return out;
  if (completed_ == required_) {
    template_scope scope{&inputs_, &node_outputs_, run_id_, spec_->name, "", 0};
    json outputs = json::object();
    for (auto& [name, value] : spec_->outputs) {
      std::string error;
      auto v = resolve_templates(value, scope, error);
      if (!v)
        return fail_node_and_run("", 0, "bad_template",
                                 "output '" + name + "': " + error, now_ns);
      outputs[name] = std::move(*v);
    }
    emit(out, {event_type::run_completed, now_ns, "", 0, 0, "", "",
               outputs.dump(-1, ' ', false, json::error_handler_t::replace)});
    return out;
  }
  if (paused_)
    return out;
  // The nodes found ready and the retries that are due, in the spec's
  // order, up to max_concurrency.
  auto limit = static_cast<size_t>(spec_->max_concurrency);
  std::vector<uint32_t> due;
  for (auto& [at, pos] : retries_) {
    if (at > now_ns)
      break;
    due.push_back(pos);
  }
  std::sort(due.begin(), due.end());
  size_t next_due = 0;
  uint32_t cursor = 0;
  while (running_ < limit) {
    auto s = startable_.lower_bound(cursor);
    bool from_due
      = next_due < due.size() && (s == startable_.end() || due[next_due] < *s);
    if (!from_due && s == startable_.end())
      break;
    auto pos = from_due ? due[next_due++] : *s;
    cursor = pos + 1;
    auto& n = spec_->nodes[pos];
    auto& st = nodes_[pos];
    std::string why;
    bool start
      = (st.state == node_state::pending && (st.triggered || !is_standby(pos))
         && ready(n, st, why) == readiness::ready)
        || (st.state == node_state::waiting_retry && st.next_retry_ns != 0
            && st.next_retry_ns <= now_ns);
    if (!start) {
      if (!from_due)
        startable_.erase(pos);
      continue;
    }
    if (!start_attempt(n, out, now_ns))
      return out;
  }
  start_items(out, now_ns);
  // A map over no items is done as soon as it starts.
  auto before = out.size();
  settle_maps(out, now_ns);
  if (out.size() != before) {
    auto next = decide(now_ns);
    out.insert(out.end(), next.begin(), next.end());
  }
  return out;
}

bool run_engine::start_attempt(const node_spec& n,
                               std::vector<event_record>& out, int64_t now_ns,
                               const std::string& node_id) {
  const auto& id = node_id.empty() ? n.id : node_id;
  auto& st = *mutable_status(id);
  int32_t attempt = st.attempt + 1;
  // The attempt ends at its timeout or when schedule_to_close passes,
  // whichever comes first.
  int64_t deadline = n.timeout ? now_ns + n.timeout->count() : 0;
  int64_t close = st.close_deadline_ns;
  if (close == 0 && n.schedule_to_close)
    close = now_ns + n.schedule_to_close->count();
  if (close != 0 && (deadline == 0 || close < deadline))
    deadline = close;
  if (n.kind == "sleep" && st.timer_deadline_ns == 0) {
    // The timer's deadline is fixed once, so restarts keep it.
    std::string error;
    auto params = resolve_params_for(id, error);
    std::optional<config::duration> d;
    if (params) {
      auto& v = (*params)["duration"];
      if (v.is_string())
        d = config::parse_duration(v.get<std::string>(), &error);
      else
        error = "duration resolved to " + v.dump() + ", not a duration";
    }
    if (!d) {
      auto failed
        = give_up_node(id, attempt, "bad_params", "sleep: " + error, now_ns);
      out.insert(out.end(), failed.begin(), failed.end());
      return false;
    }
    emit(out,
         {event_type::timer_set, now_ns, id, attempt, now_ns + d->count()});
  }
  if (n.kind == "map" && !maps_.count(id)) {
    // The items are fixed (and journaled) when the map starts.
    std::string error;
    std::optional<json> items = n.map_items;
    if (n.map_items.is_string()) {
      template_scope scope{&inputs_, &node_outputs_, run_id_, spec_->name,
                           id,       attempt};
      items = resolve_templates(n.map_items, scope, error);
    }
    if (items && !items->is_array())
      error = "items resolved to " + std::string{items->type_name()}
              + ", not a list";
    else if (items && items->size() > 100'000)
      error = "items holds " + std::to_string(items->size())
              + " values; the limit is 100000";
    if (!error.empty()) {
      auto failed
        = give_up_node(id, attempt, "bad_params", "map: " + error, now_ns);
      out.insert(out.end(), failed.begin(), failed.end());
      return false;
    }
    emit(out,
         {event_type::attempt_started, now_ns, id, attempt, deadline, "", "",
          items->dump(-1, ' ', false, json::error_handler_t::replace)});
    return true;
  }
  emit(out, {event_type::attempt_started, now_ns, id, attempt, deadline});
  return true;
}

void run_engine::compensate_step(std::vector<event_record>& out,
                                 int64_t now_ns) {
  // One at a time, the last completed node's compensation first. A
  // compensation that ended stays ended, and nothing completes while the
  // run compensates: the nodes behind the first one not ended are never
  // looked at again.
  for (; compensations_ended_ < completion_order_.size();
       ++compensations_ended_) {
    auto done
      = completion_order_[completion_order_.size() - 1 - compensations_ended_];
    auto& c = spec_->nodes[done].compensate;
    auto cpos = c.empty() ? -1 : position(c);
    if (cpos < 0)
      continue;
    auto& st = nodes_[static_cast<size_t>(cpos)];
    if (st.state == node_state::completed || st.state == node_state::failed)
      continue;
    if (st.state == node_state::pending
        || (st.state == node_state::waiting_retry && st.next_retry_ns != 0
            && st.next_retry_ns <= now_ns))
      start_attempt(spec_->nodes[static_cast<size_t>(cpos)], out, now_ns);
    return; // it runs, or waits for its retry
  }
  json report = json::object();
  std::vector<std::string> done, failed;
  for (auto it = completion_order_.rbegin(); it != completion_order_.rend();
       ++it) {
    auto& c = spec_->nodes[*it].compensate;
    auto cpos = position(c);
    if (cpos < 0)
      continue;
    auto& st = nodes_[static_cast<size_t>(cpos)];
    if (st.state == node_state::completed) {
      report[c] = "completed";
      done.push_back(c);
    } else {
      report[c] = "failed: " + st.last_error;
      failed.push_back(c + " (" + st.last_error + ")");
    }
  }
  auto& why = ended();
  auto text = why.reason
              + (failed.empty()
                   ? "; compensated by " + config::join(done)
                   : "; compensation failed: " + config::join(failed, "; "));
  json data = {{"compensated", failed.empty()}, {"compensations", report}};
  // A cancelled run ends cancelled once compensated; others end failed.
  auto type = why.fail_kind == "cancelled" ? event_type::run_cancelled
                                           : event_type::run_failed;
  emit(out, {type, now_ns, why.failed_node, 0, 0, why.fail_kind, text,
             data.dump(-1, ' ', false, json::error_handler_t::replace)});
}

std::vector<event_record>
run_engine::on_attempt_succeeded(const std::string& node, int32_t attempt,
                                 const json& output, int64_t now_ns,
                                 const std::string& logs) {
  std::vector<event_record> out;
  auto* st = find_status(node);
  if (is_finished() || !st || st->state != node_state::running
      || st->attempt != attempt)
    return out;
  emit(out,
       {event_type::node_completed, now_ns, node, attempt, 0, "", "",
        output.dump(-1, ' ', false, json::error_handler_t::replace), logs});
  auto next = decide(now_ns);
  out.insert(out.end(), next.begin(), next.end());
  return out;
}

std::vector<event_record> run_engine::on_attempt_failed(
  const std::string& node, int32_t attempt, const std::string& error_kind,
  const std::string& message, int64_t now_ns, double u, int64_t min_delay_ns,
  const std::string& logs) {
  auto out = attempt_failed(node, attempt, error_kind, message, now_ns, u,
                            min_delay_ns);
  if (!logs.empty())
    for (auto& e : out)
      if (e.type == event_type::attempt_failed && e.node == node) {
        e.data2 = logs;
        break;
      }
  return out;
}

std::vector<event_record> run_engine::attempt_failed(
  const std::string& node, int32_t attempt, const std::string& error_kind,
  const std::string& message, int64_t now_ns, double u, int64_t min_delay_ns) {
  std::vector<event_record> out;
  auto* st = find_status(node);
  if (is_finished() || !st || st->state != node_state::running
      || st->attempt != attempt)
    return out;
  auto* spec = node_spec_of(node);
  auto& policy = spec->retry;
  if (spec->map_node) {
    // A map's own attempt ends only by its timeout: its items have their
    // retries; the map as a whole does not start over.
    emit(out, {event_type::attempt_failed, now_ns, node, attempt, 0, error_kind,
               message});
    cancel_items(node, "map '" + node + "' failed", out, now_ns);
    auto failed = give_up_node(node, attempt, error_kind, message, now_ns);
    out.insert(out.end(), failed.begin(), failed.end());
    return out;
  }
  auto close = st->close_deadline_ns;
  auto closed = [&](const std::string& why) {
    emit(out, {event_type::attempt_failed, now_ns, node, attempt, 0, error_kind,
               message});
    auto failed
      = give_up_node(node, attempt, "schedule_to_close",
                     why + " schedule_to_close of "
                       + config::format_duration(*spec->schedule_to_close)
                       + "; last attempt: " + error_kind + ": " + message,
                     now_ns);
    out.insert(out.end(), failed.begin(), failed.end());
    return out;
  };
  if (close != 0 && now_ns >= close)
    return closed("gave up after " + std::to_string(attempt) + " attempt"
                  + (attempt == 1 ? "" : "s") + " at the end of its");
  if (error_kind == "circuit_open") {
    // Wait for the breaker (min_delay_ns: until it lets calls through).
    auto retry_at = now_ns + std::max<int64_t>(1, min_delay_ns);
    if (close != 0 && retry_at >= close)
      return closed("gave up: its circuit stays open past its");
    emit(out, {event_type::attempt_failed, now_ns, node, attempt, retry_at,
               error_kind, message});
    auto next = decide(now_ns);
    out.insert(out.end(), next.begin(), next.end());
    return out;
  }
  if (is_retryable(policy, error_kind) && attempt < policy.max_attempts) {
    auto retry_at
      = now_ns
        + std::max<int64_t>(
          {1, backoff_delay(policy, attempt, u).count(), min_delay_ns});
    if (close != 0 && retry_at >= close)
      return closed("gave up after " + std::to_string(attempt) + " attempt"
                    + (attempt == 1 ? "" : "s")
                    + ": the next would start after its");
    emit(out, {event_type::attempt_failed, now_ns, node, attempt, retry_at,
               error_kind, message});
    auto next = decide(now_ns);
    out.insert(out.end(), next.begin(), next.end());
    return out;
  }
  emit(out, {event_type::attempt_failed, now_ns, node, attempt, 0, error_kind,
             message});
  auto why = attempt >= policy.max_attempts && is_retryable(policy, error_kind)
               ? "gave up after " + std::to_string(attempt) + " attempt"
                   + (attempt == 1 ? "" : "s") + ": "
               : "not retryable (" + error_kind + "): ";
  auto failed = give_up_node(node, attempt, error_kind, why + message, now_ns);
  out.insert(out.end(), failed.begin(), failed.end());
  return out;
}

std::vector<event_record> run_engine::give_up_node(const std::string& node,
                                                   int32_t attempt,
                                                   const std::string& kind,
                                                   const std::string& message,
                                                   int64_t now_ns) {
  auto* spec = node_spec_of(node);
  if (auto item = split_item(node); item && position(item->first) >= 0) {
    // A failed item fails its map (which may fall back, ...).
    std::vector<event_record> out;
    emit(out,
         {event_type::node_failed, now_ns, node, attempt, 0, kind, message});
    auto& map = item->first;
    cancel_items(map,
                 "item " + std::to_string(item->second) + " of map '" + map
                   + "' failed",
                 out, now_ns);
    auto failed = give_up_node(
      map, status(map).attempt, kind,
      "item " + std::to_string(item->second) + ": " + message, now_ns);
    out.insert(out.end(), failed.begin(), failed.end());
    return out;
  }
  if (compensating_ && spec_->compensated_by(node)) {
    // A compensation that fails for good is reported; the others go on.
    std::vector<event_record> out;
    emit(out,
         {event_type::node_failed, now_ns, node, attempt, 0, kind, message});
    compensate_step(out, now_ns);
    return out;
  }
  if (!spec->fallback.empty()) {
    std::vector<event_record> out;
    emit(out, {event_type::node_fell_back, now_ns, node, attempt, 0, kind,
               message, spec->fallback});
    auto next = decide(now_ns);
    out.insert(out.end(), next.begin(), next.end());
    return out;
  }
  // The end of a fallback chain names the node it stood in for.
  auto text = message;
  for (auto* p = spec_->primary_of(node); p; p = spec_->primary_of(p->id))
    text += "; it was the fallback of '" + p->id + "'";
  return fail_node_and_run(node, attempt, kind, text, now_ns);
}

std::vector<event_record>
run_engine::fail_node_and_run(const std::string& node, int32_t attempt,
                              const std::string& kind,
                              const std::string& message, int64_t now_ns) {
  std::vector<event_record> out;
  if (!node.empty())
    emit(out,
         {event_type::node_failed, now_ns, node, attempt, 0, kind, message});
  bool compensate = !compensating_ && has_compensations();
  for (auto& n : spec_->nodes)
    if (n.map_node)
      cancel_items(n.id,
                   "run failed: "
                     + (node.empty() ? message : "node '" + node + "' failed"),
                   out, now_ns);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    auto& n = spec_->nodes[i];
    auto& st = nodes_[i];
    if (st.state == node_state::running
        || st.state == node_state::waiting_retry)
      emit(out, {event_type::node_cancelled, now_ns, n.id, st.attempt, 0, "",
                 "run failed: "
                   + (node.empty() ? message : "node '" + node + "' failed")});
  }
  auto text = node.empty() ? message : "node '" + node + "': " + message;
  if (compensate) {
    // The run fails once the compensations of what completed have run.
    emit(out,
         {event_type::run_compensating, now_ns, node, attempt, 0, kind, text});
    compensate_step(out, now_ns);
    return out;
  }
  emit(out, {event_type::run_failed, now_ns, node, attempt, 0, kind, text});
  return out;
}

std::vector<event_record> run_engine::cancel(const std::string& reason,
                                             int64_t now_ns) {
  std::vector<event_record> out;
  // A run that is already compensating finishes that and fails.
  if (is_finished() || compensating_)
    return out;
  for (auto& n : spec_->nodes)
    if (n.map_node)
      cancel_items(n.id, reason, out, now_ns);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    auto& n = spec_->nodes[i];
    auto& st = nodes_[i];
    if (st.state == node_state::running
        || st.state == node_state::waiting_retry)
      emit(out, {event_type::node_cancelled, now_ns, n.id, st.attempt, 0, "",
                 reason});
  }
  if (has_compensations()) {
    // Undo what completed, then end cancelled.
    emit(out,
         {event_type::run_compensating, now_ns, "", 0, 0, "cancelled", reason});
    compensate_step(out, now_ns);
    return out;
  }
  emit(out, {event_type::run_cancelled, now_ns, "", 0, 0, "", reason});
  return out;
}

bool run_engine::has_compensations() const {
  for (auto pos : completion_order_)
    if (!spec_->nodes[pos].compensate.empty())
      return true;
  return false;
}

std::vector<event_record> run_engine::pause(const std::string& why,
                                            int64_t now_ns) {
  std::vector<event_record> out;
  if (is_finished() || paused_ || compensating_)
    return out;
  emit(out, {event_type::run_paused, now_ns, "", 0, 0, "", why});
  return out;
}

std::vector<event_record> run_engine::resume(const std::string& who,
                                             int64_t now_ns) {
  std::vector<event_record> out;
  if (is_finished() || !paused_)
    return out;
  emit(out, {event_type::run_resumed, now_ns, "", 0, 0, "", who});
  auto next = decide(now_ns);
  out.insert(out.end(), next.begin(), next.end());
  return out;
}

std::vector<event_record> run_engine::retry_now(const std::string& node,
                                                int64_t now_ns) {
  auto* st = mutable_status(node);
  if (is_finished() || paused_ || !st || st->state != node_state::waiting_retry
      || st->next_retry_ns == 0)
    return {};
  // Only the attempt_started that follows is journaled: after a restart
  // before it, the retry keeps its first time.
  auto was = st->next_retry_ns;
  st->next_retry_ns = std::min(was, now_ns);
  if (auto pos = position(node); pos >= 0)
    track(static_cast<uint32_t>(pos), node_state::waiting_retry, was);
  else if (auto item = split_item(node))
    track_item(maps_.at(item->first), item->second, node_state::waiting_retry,
               was);
  return decide(now_ns);
}

std::vector<std::string> run_engine::item_ids(const std::string& id) const {
  std::vector<std::string> out;
  for (size_t i = 0; i < map_items(id); ++i)
    out.push_back(id + "[" + std::to_string(i) + "]");
  return out;
}

std::vector<event_record> run_engine::time_out(int64_t now_ns) {
  if (is_finished() || run_deadline_ns_ == 0 || now_ns < run_deadline_ns_)
    return {};
  return fail_node_and_run("", 0, "run_timeout",
                           "the run timed out after "
                             + config::format_duration(*spec_->timeout),
                           now_ns);
}

int64_t run_engine::restart_attempt_timeout(const std::string& id,
                                            int64_t now_ns) {
  auto* found = mutable_status(id);
  auto* spec = node_spec_of(id);
  if (!found || !spec || found->state != node_state::running)
    return 0;
  auto& st = *found;
  int64_t deadline = spec->timeout ? now_ns + spec->timeout->count() : 0;
  if (st.close_deadline_ns != 0
      && (deadline == 0 || st.close_deadline_ns < deadline))
    deadline = st.close_deadline_ns;
  st.attempt_deadline_ns = deadline;
  return deadline;
}

std::vector<event_record> run_engine::fail_run(const std::string& error_kind,
                                               const std::string& message,
                                               int64_t now_ns) {
  if (is_finished())
    return {};
  return fail_node_and_run("", 0, error_kind, message, now_ns);
}

int64_t run_engine::next_wakeup_ns() const {
  int64_t best = retries_.empty() ? 0 : retries_.begin()->first;
  for (auto& [_, m] : maps_)
    if (!m.retrying.empty() && (best == 0 || m.retrying.begin()->first < best))
      best = m.retrying.begin()->first;
  return best;
}

} // namespace troupe::runtime

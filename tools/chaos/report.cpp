#include "tools/chaos/report.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <sstream>
#include <tuple>

namespace troupe::chaos {

using json = nlohmann::json;
using verdict = invariant_result::verdict;

namespace {

bool parse_number(std::string_view s, int64_t& out) {
  if (s == "-") {
    out = -1;
    return true;
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size();
}

std::string field(std::string_view s) {
  return s == "-" ? std::string{} : std::string{s};
}

/// The accepted runs' ids.
std::set<std::string> accepted(const std::vector<submission>& subs) {
  std::set<std::string> out;
  for (auto& s : subs)
    if (!s.run_id.empty())
      out.insert(s.run_id);
  return out;
}

invariant_result make(std::string name, std::string claim) {
  invariant_result r;
  r.name = std::move(name);
  r.claim = std::move(claim);
  return r;
}

void settle(invariant_result& r) {
  if (!r.offenders.empty())
    r.outcome = verdict::fail;
}

std::string ms_text(int64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0fms", static_cast<double>(ns) / 1e6);
  return buf;
}

std::string seconds_text(int64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fs", static_cast<double>(ms) / 1e3);
  return buf;
}

} // namespace

std::vector<ledger_line> parse_ledger(std::string_view text, size_t* bad) {
  std::vector<ledger_line> out;
  size_t skipped = 0;
  while (!text.empty()) {
    auto end = text.find('\n');
    auto line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{}
                                         : text.substr(end + 1);
    if (line.empty())
      continue;
    std::vector<std::string_view> f;
    while (!line.empty() && f.size() < 9) {
      auto sp = line.find(' ');
      f.push_back(line.substr(0, sp));
      line = sp == std::string_view::npos ? std::string_view{}
                                          : line.substr(sp + 1);
    }
    ledger_line l;
    if (f.size() != 8 || !parse_number(f[0], l.ns) || l.ns < 0
        || !parse_number(f[5], l.attempt) || !parse_number(f[6], l.partition)
        || !parse_number(f[7], l.epoch)) {
      ++skipped;
      continue;
    }
    l.member = field(f[1]);
    l.event = std::string{f[2]};
    l.run = field(f[3]);
    l.node = field(f[4]);
    out.push_back(std::move(l));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](auto& a, auto& b) { return a.ns < b.ns; });
  if (bad)
    *bad = skipped;
  return out;
}

std::string_view to_string(verdict v) {
  switch (v) {
  case verdict::pass: return "pass";
  case verdict::fail: return "fail";
  case verdict::not_checked: return "not checked";
  }
  return "?";
}

invariant_result check_final(const std::vector<submission>& subs) {
  auto r = make("final_by_deadline",
                "every accepted run reached a final state by the deadline");
  size_t n = 0;
  for (auto& s : subs) {
    if (s.run_id.empty())
      continue;
    ++n;
    auto& st = s.final_state;
    if (st != "completed" && st != "failed" && st != "cancelled"
        && st != "unknown")
      r.offenders.emplace_back(s.run_id,
                               "still " + (st.empty() ? "unasked" : st));
  }
  r.detail = std::to_string(n) + " accepted run(s)";
  settle(r);
  return r;
}

invariant_result check_not_lost(const std::vector<submission>& subs) {
  auto r = make("none_lost", "no accepted run was lost");
  size_t n = 0;
  for (auto& s : subs) {
    if (s.run_id.empty())
      continue;
    ++n;
    if (s.final_state == "unknown")
      r.offenders.emplace_back(s.run_id,
                               "no member knows it (key " + s.key + ")");
  }
  r.detail = std::to_string(n) + " accepted run(s) asked for";
  settle(r);
  return r;
}

invariant_result check_no_rerun(const std::vector<ledger_line>& ledger,
                                const std::vector<submission>& subs,
                                const journal_completions* journals) {
  auto r
    = make("no_completed_node_rerun", "no completed node was executed again");
  if (ledger.empty()) {
    r.outcome = verdict::not_checked;
    r.detail = "the members wrote no ledger";
    return r;
  }
  auto runs = accepted(subs);
  // (run, node) -> when its first `done` was written.
  std::map<std::pair<std::string, std::string>, int64_t> done;
  std::set<std::string> named;
  size_t starts = 0;
  for (auto& l : ledger) {
    if (!runs.count(l.run) || l.node.empty())
      continue;
    auto key = std::make_pair(l.run, l.node);
    if (l.event == "done") {
      auto [it, fresh] = done.emplace(key, l.ns);
      if (!fresh && named.insert(l.run).second)
        r.offenders.emplace_back(
          l.run, "node '" + l.node + "' completed twice (on " + l.member + ")");
    } else if (l.event == "start") {
      ++starts;
      auto it = done.find(key);
      if (it != done.end() && named.insert(l.run).second) {
        r.offenders.emplace_back(
          l.run, "node '" + l.node + "' started again (attempt "
                   + std::to_string(l.attempt) + " on " + l.member + ") "
                   + ms_text(l.ns - it->second) + " after it completed");
        continue;
      }
      if (!journals)
        continue;
      auto j = journals->find(key);
      if (j != journals->end() && j->second.count > 0
          && l.attempt > j->second.attempt && named.insert(l.run).second)
        r.offenders.emplace_back(
          l.run, "node '" + l.node + "' started attempt "
                   + std::to_string(l.attempt) + " on " + l.member
                   + ", though its journal has it completed by attempt "
                   + std::to_string(j->second.attempt));
    }
  }
  if (journals)
    for (auto& [key, j] : *journals)
      if (runs.count(key.first) && j.count > 1
          && named.insert(key.first).second)
        r.offenders.emplace_back(
          key.first, "node '" + key.second + "' completed "
                       + std::to_string(j.count) + " times in its journal");
  r.detail = std::to_string(starts) + " attempt(s) and "
             + std::to_string(done.size()) + " completion(s) in the ledger";
  if (journals)
    r.detail += ", " + std::to_string(journals->size())
                + " completion(s) in the journals";
  if (starts == 0 && done.empty())
    r.outcome = verdict::not_checked;
  settle(r);
  return r;
}

invariant_result
check_one_run_per_key(const std::vector<submission>& subs,
                      const std::map<std::string, std::string>& again,
                      const std::optional<std::set<std::string>>& listed) {
  auto r = make("one_run_per_key", "each idempotency key made one run");
  size_t keys = 0;
  for (auto& s : subs) {
    if (s.run_id.empty())
      continue;
    ++keys;
    if (s.ids_seen.size() > 1) {
      std::string ids;
      for (auto& id : s.ids_seen)
        ids += (ids.empty() ? "" : ", ") + id;
      r.offenders.emplace_back(s.run_id,
                               "key " + s.key + " answered with runs " + ids);
      continue;
    }
    auto a = again.find(s.key);
    if (a != again.end() && !a->second.empty() && a->second != s.run_id)
      r.offenders.emplace_back(
        s.run_id, "key " + s.key + " sent again made run " + a->second);
  }
  r.detail = std::to_string(keys) + " key(s)";
  if (listed) {
    auto ids = accepted(subs);
    size_t extra = 0;
    for (auto& id : *listed)
      if (!id.empty() && !ids.count(id)) {
        ++extra;
        r.offenders.emplace_back(id, "a run no key of the workload made");
      }
    r.detail += ", " + std::to_string(listed->size()) + " run(s) listed";
  } else {
    r.detail += "; the cluster's list of runs could not be had whole, so "
                "runs made by no key were not looked for";
    r.outcome = verdict::not_checked;
  }
  settle(r);
  return r;
}

invariant_result
check_copies(const std::map<int64_t, std::map<std::string, json>>& digests,
             const std::set<int64_t>& unreachable, bool settled) {
  auto r = make("replicas_identical",
                "the replicas' committed journals are identical");
  size_t compared = 0;
  std::vector<std::string> lagging;
  for (auto& [p, copies] : digests) {
    if (copies.size() < 2)
      continue;
    // Copies that applied different amounts are behind, not different:
    // only copies at the same applied offset can disagree.
    std::set<std::string> applied;
    for (auto& [member, d] : copies)
      applied.insert(d.is_object() ? d.value("applied", json{}).dump()
                                   : std::string{});
    if (applied.size() > 1) {
      lagging.push_back(std::to_string(p));
      continue;
    }
    ++compared;
    auto& first = copies.begin()->second;
    for (auto& [member, d] : copies)
      if (d != first) {
        std::string seen;
        for (auto& [m, dd] : copies)
          seen += (seen.empty() ? "" : "; ") + m + " "
                  + dd.dump(-1, ' ', false, json::error_handler_t::replace);
        r.offenders.emplace_back("partition " + std::to_string(p), seen);
        break;
      }
  }
  r.detail = std::to_string(compared) + " partition(s) compared";
  if (!unreachable.empty())
    r.detail += "; " + std::to_string(unreachable.size())
                + " partition(s) had replicas that did not answer";
  // One copy of each (replication 1), or none answered: nothing to compare.
  if (compared == 0)
    r.outcome = verdict::not_checked;
  if (!lagging.empty()) {
    std::string list;
    for (auto& p : lagging)
      list += (list.empty() ? "" : ", ") + p;
    r.detail += "; partition(s) " + list
                + " had copies at different applied offsets (not caught up)";
  }
  if (!settled)
    r.detail += "; the copies did not settle in time";
  settle(r);
  return r;
}

invariant_result check_fencing(const std::vector<ledger_line>& ledger) {
  auto r = make("no_attempt_on_fenced_member",
                "no attempt ran on a member that was fenced at that moment");
  if (ledger.empty()) {
    r.outcome = verdict::not_checked;
    r.detail = "the members wrote no ledger";
    return r;
  }
  // Per partition: the newest epoch some member has logged leading it so
  // far (the ledger is in time order), and which member logged it.
  std::map<int64_t, std::pair<int64_t, std::string>> newest;
  // (member, partition, epoch) a member logged leading.
  std::set<std::tuple<std::string, int64_t, int64_t>> led;
  std::set<std::string> named;
  size_t checked = 0;
  for (auto& l : ledger) {
    if (l.partition < 0 || l.epoch < 0)
      continue;
    if (l.event == "lead") {
      led.emplace(l.member, l.partition, l.epoch);
      auto& n = newest[l.partition];
      if (l.epoch > n.first || n.second.empty())
        n = {l.epoch, l.member};
      continue;
    }
    if (l.event != "start" || !led.count({l.member, l.partition, l.epoch}))
      continue;
    ++checked;
    auto n = newest.find(l.partition);
    if (n != newest.end() && n->second.first > l.epoch
        && named.insert(l.run).second)
      r.offenders.emplace_back(
        l.run, "node '" + l.node + "' attempt " + std::to_string(l.attempt)
                 + " started on " + l.member + " under epoch "
                 + std::to_string(l.epoch) + " of partition "
                 + std::to_string(l.partition) + " after " + n->second.second
                 + " led it with epoch " + std::to_string(n->second.first));
  }
  r.detail = std::to_string(checked)
             + " attempt(s) run by their partition's leader checked";
  // No attempt under a leader's epoch (one copy of each partition writes
  // none): nothing was checked, which is not a pass.
  if (checked == 0)
    r.outcome = verdict::not_checked;
  settle(r);
  return r;
}

bool report::passed() const {
  for (auto& i : invariants)
    if (i.outcome == verdict::fail)
      return false;
  return true;
}

int64_t count_retries(const std::vector<ledger_line>& ledger,
                      const std::set<std::string>& runs, int64_t from_ns) {
  std::set<std::pair<std::string, std::string>> seen;
  int64_t retries = 0;
  for (auto& l : ledger) {
    if (l.event != "start" || l.run.empty()
        || (!runs.empty() && !runs.count(l.run)))
      continue;
    bool first = seen.insert({l.run, l.node}).second;
    if (!first && l.ns >= from_ns)
      ++retries;
  }
  return retries;
}

namespace {

json opt_ms(const std::optional<int64_t>& ns, int64_t from) {
  if (!ns)
    return nullptr;
  return (*ns - from) / 1'000'000;
}

} // namespace

json to_json(const report& r, int64_t t0) {
  json faults = json::array();
  for (auto& f : r.faults)
    faults.push_back(
      {{"at_ms", f.at_ms},
       {"action", f.action},
       {"target", f.target},
       {"resolved", f.resolved},
       {"params", f.params},
       {"outcome", f.outcome},
       {"injected_ms",
        f.injected_ns ? json((f.injected_ns - t0) / 1'000'000) : json(nullptr)},
       {"detected_after_ms", opt_ms(f.detected_ns, f.injected_ns)},
       {"resumed_after_ms", opt_ms(f.resumed_ns, f.injected_ns)},
       {"ended", f.ended},
       {"ended_ms",
        f.ended_ns ? json((*f.ended_ns - t0) / 1'000'000) : json(nullptr)},
       {"partitions", f.partitions},
       {"affected_runs", f.affected},
       {"retries", f.retries}});
  std::map<std::string, int64_t> states, refusals;
  int64_t accepted = 0;
  for (auto& s : r.runs) {
    if (s.run_id.empty()) {
      ++refusals[s.refused.empty() ? "unanswered" : s.refused];
      continue;
    }
    ++accepted;
    ++states[s.final_state.empty() ? "unasked" : s.final_state];
  }
  json invariants = json::array();
  for (auto& i : r.invariants) {
    json off = json::array();
    for (auto& [what, why] : i.offenders)
      off.push_back({{"run", what}, {"seen", why}});
    invariants.push_back({{"name", i.name},
                          {"claim", i.claim},
                          {"result", to_string(i.outcome)},
                          {"detail", i.detail},
                          {"offenders", off}});
  }
  json out{
    {"scenario", r.scenario},
    {"file", r.file},
    {"seed", r.seed},
    {"members", r.members},
    {"etcd_members", r.etcd_members},
    {"network_namespaces", r.namespaces},
    {"runs",
     {{"planned", r.runs_planned},
      {"submitted", r.runs.size()},
      {"accepted", accepted},
      {"refused", refusals},
      {"final_states", states},
      {"retries", r.retries}}},
    {"workload_ms", r.workload_ms},
    {"deadline_ms", r.deadline_ms},
    {"elapsed_ms", r.elapsed_ms},
    {"faults", faults},
    {"ledger", {{"lines", r.ledger_lines}, {"bad_lines", r.ledger_bad_lines}}},
    {"invariants", invariants},
    {"passed", r.passed()}};
  if (!r.target.empty())
    out["target"] = r.target;
  if (!r.kept.empty())
    out["logs_kept_in"] = r.kept;
  return out;
}

namespace {

/// Rows as columns, each as wide as its widest cell.
std::string columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i)
        width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  std::string out;
  for (auto& row : rows) {
    std::string line = " ";
    for (size_t i = 0; i < row.size(); ++i) {
      line += " " + row[i];
      if (i + 1 < row.size())
        line += std::string(width[i] - row[i].size(), ' ') + " ";
    }
    while (!line.empty() && line.back() == ' ')
      line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string after(const std::optional<int64_t>& ns, int64_t from) {
  return ns ? "+" + ms_text(*ns - from) : std::string{"-"};
}

} // namespace

std::string to_text(const report& r, int64_t t0) {
  std::ostringstream out;
  out << "chaos: " << (r.scenario.empty() ? r.file : r.scenario) << " (seed "
      << r.seed << "): ";
  if (!r.target.empty())
    out << "the cluster at " << r.target;
  else
    out << r.members << " member" << (r.members == 1 ? "" : "s") << " and "
        << r.etcd_members << " etcd member" << (r.etcd_members == 1 ? "" : "s")
        << ", "
        << (r.namespaces ? "each in its own network namespace" : "on loopback");
  out << "; " << r.runs_planned << " runs over " << seconds_text(r.workload_ms)
      << ", deadline " << seconds_text(r.deadline_ms) << ", took "
      << seconds_text(r.elapsed_ms) << "\n\nFaults\n";
  std::vector<std::vector<std::string>> rows{{"AT", "ACTION", "TARGET",
                                              "DETECTED", "RESUMED", "ENDED",
                                              "RUNS", "RETRIES", "NOTE"}};
  for (auto& f : r.faults) {
    auto target = f.resolved.empty() ? f.target
                  : f.resolved == f.target || f.target == "-"
                    ? f.resolved
                    : f.resolved + " (" + f.target + ")";
    auto note = f.outcome == "injected" ? f.params : f.outcome;
    rows.push_back(
      {seconds_text(f.at_ms), f.action, target.empty() ? "-" : target,
       f.injected_ns ? after(f.detected_ns, f.injected_ns) : "-",
       f.injected_ns ? after(f.resumed_ns, f.injected_ns) : "-",
       f.ended_ns ? seconds_text((*f.ended_ns - t0) / 1'000'000) + " " + f.ended
                  : "-",
       std::to_string(f.affected.size()), std::to_string(f.retries),
       note.empty() ? "-" : note});
  }
  if (r.faults.empty())
    out << "  none\n";
  else
    out << columns(rows);
  auto j = to_json(r, t0);
  auto& runs = j["runs"];
  out << "\nRuns\n  " << runs["submitted"].get<int64_t>() << " submitted, "
      << runs["accepted"].get<int64_t>() << " accepted";
  for (auto& [code, n] : runs["refused"].items())
    out << ", " << n.get<int64_t>() << " refused (" << code << ")";
  out << "\n  final states:";
  if (runs["final_states"].empty())
    out << " none";
  for (auto& [state, n] : runs["final_states"].items())
    out << " " << state << " " << n.get<int64_t>();
  std::set<std::string> affected;
  for (auto& f : r.faults)
    affected.insert(f.affected.begin(), f.affected.end());
  out << "\n  " << affected.size() << " run(s) in flight when a fault hit, "
      << r.retries << " retr" << (r.retries == 1 ? "y" : "ies")
      << " (attempts beyond one per node)\n  ledger: " << r.ledger_lines
      << " line(s)";
  if (r.ledger_bad_lines)
    out << ", " << r.ledger_bad_lines << " cut short";
  out << "\n\nInvariants\n";
  size_t failed = 0;
  for (auto& i : r.invariants) {
    std::string mark = i.outcome == verdict::pass   ? "PASS"
                       : i.outcome == verdict::fail ? "FAIL"
                                                    : "N/A ";
    failed += i.outcome == verdict::fail;
    out << "  " << mark << "  " << i.name << ": " << i.claim << " (" << i.detail
        << ")\n";
    size_t shown = 0;
    for (auto& [what, why] : i.offenders) {
      if (++shown > 20) {
        out << "          ... and " << i.offenders.size() - 20 << " more\n";
        break;
      }
      out << "          " << what << ": " << why << "\n";
    }
  }
  out << "\n"
      << (failed == 0 ? "every invariant holds"
                      : std::to_string(failed) + " invariant"
                          + (failed == 1 ? "" : "s") + " violated")
      << "\n";
  if (!r.kept.empty())
    out << "logs kept in " << r.kept << "\n";
  return out.str();
}

} // namespace troupe::chaos

#include "tools/progress/progress_view.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <sys/ioctl.h>
#include <unistd.h>

namespace troupe::tools::progress {

namespace {

/// Whether byte `c` continues a UTF-8 sequence.
bool is_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

/// Returns `s` cut to at most `max` bytes, never inside a UTF-8 sequence.
std::string_view cut_bytes(std::string_view s, size_t max) {
  if (s.size() <= max)
    return s;
  while (max > 0 && is_continuation(s[max]))
    --max;
  return s.substr(0, max);
}

/// Returns `s` cut to at most `max` bytes, ending with "..." when cut.
std::string clip(std::string_view s, size_t max) {
  if (s.size() <= max)
    return std::string{s};
  if (max <= 3)
    return std::string{cut_bytes(s, max)};
  return std::string{cut_bytes(s, max - 3)} + "...";
}

std::string pad(std::string s, size_t width) {
  if (s.size() < width)
    s.append(width - s.size(), ' ');
  return s;
}

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// A span of time in short words: "350ms", "4.2s", "12m30s", "3h05m".
std::string span(int64_t ns) {
  if (ns < 0)
    ns = 0;
  char buf[32];
  auto ms = ns / 1'000'000;
  if (ms < 1000)
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms));
  else if (ms < 60'000)
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000);
  else if (ms < 3'600'000)
    std::snprintf(buf, sizeof buf, "%lldm%02llds",
                  static_cast<long long>(ms / 60'000),
                  static_cast<long long>(ms / 1000 % 60));
  else
    std::snprintf(buf, sizeof buf, "%lldh%02lldm",
                  static_cast<long long>(ms / 3'600'000),
                  static_cast<long long>(ms / 60'000 % 60));
  return buf;
}

/// Splits a map item's id ("m[3]") into the map's id and the index text.
bool split_item(const std::string& id, std::string& map, std::string& index) {
  if (id.size() < 4 || id.back() != ']')
    return false;
  auto open = id.rfind('[');
  if (open == std::string::npos || open == 0 || open + 2 >= id.size())
    return false;
  for (size_t i = open + 1; i + 1 < id.size(); ++i)
    if (id[i] < '0' || id[i] > '9')
      return false;
  map = id.substr(0, open);
  index = id.substr(open + 1, id.size() - open - 2);
  return true;
}

/// Where a map item stands.
enum item_state : uint8_t {
  item_none,
  item_running,
  item_waiting, ///< Its attempt failed; the next one is due later.
  item_done,
  item_failed,
  item_cancelled,
  item_skipped,
  item_states,
};

item_state item_state_of(const event& e, item_state before) {
  auto& t = e.type;
  if (t == "attempt_started" || t == "timer_set")
    return item_running;
  if (t == "attempt_failed")
    return e.deadline_ns != 0 ? item_waiting : before;
  if (t == "node_completed")
    return item_done;
  if (t == "node_failed" || t == "node_fell_back")
    return item_failed;
  if (t == "node_cancelled")
    return item_cancelled;
  if (t == "node_skipped")
    return item_skipped;
  return before;
}

/// Order of rows: the run's own row, then running nodes, failed ones, and
/// the rest.
enum rank : int {
  rank_run = -1,
  rank_running = 0,
  rank_failed = 1,
  rank_finished = 2,
};

/// Lines piped to a log keep at most this much of a message.
constexpr size_t line_message_max = 300;

} // namespace

std::string shorten(std::string_view text, size_t max) {
  std::string flat;
  flat.reserve(std::min(text.size(), max + 16));
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    bool blank = u < 0x20 || u == 0x7F || c == ' ';
    if (blank) {
      if (!flat.empty() && flat.back() != ' ')
        flat += ' ';
    } else {
      flat += c;
    }
    // Enough to decide where to cut.
    if (flat.size() > max + 1)
      break;
  }
  while (!flat.empty() && flat.back() == ' ')
    flat.pop_back();
  if (flat.size() <= max)
    return flat;
  if (max <= 3)
    return std::string{cut_bytes(flat, max)};
  auto room = max - 3;
  // The last blank at or before the cut: cut there, unless that drops more
  // than a third of the room (one very long word).
  auto blank = flat.rfind(' ', room);
  if (blank != std::string::npos && blank >= room - room / 3) {
    flat.resize(blank);
    while (!flat.empty() && flat.back() == ' ')
      flat.pop_back();
    return flat + "...";
  }
  return std::string{cut_bytes(flat, room)} + "...";
}

bool is_run_event(const event& e) {
  return e.node.empty() || e.type.rfind("run_", 0) == 0;
}

// -- rows of the table
// ----------------------------------------------------------

struct view::row {
  std::string run_id;
  /// The node, or empty for the run's own row.
  std::string name;
  std::string state = "waiting";
  std::string detail;
  int rank = rank_running;
  uint64_t seen = 0;
  uint64_t changed = 0;
  /// A map: its items by index, how many stand where, and how many there
  /// are (0: unknown).
  bool is_map = false;
  int64_t items = 0;
  std::unordered_map<std::string, item_state> item_of;
  std::array<size_t, item_states> counts{};

  std::string label(bool with_run) const {
    auto n = name.empty() ? std::string{"(run)"} : name;
    return with_run ? run_id + " " + n : n;
  }

  /// The items' summary: "3/10 done, 2 running, 1 failed, 4 waiting".
  std::string summary() const {
    size_t ended = counts[item_done] + counts[item_failed]
                   + counts[item_cancelled] + counts[item_skipped];
    size_t waiting = counts[item_waiting];
    auto total = static_cast<size_t>(items);
    if (total > 0) {
      size_t known = ended + counts[item_running] + counts[item_waiting];
      waiting += total > known ? total - known : 0;
    }
    std::string s = std::to_string(counts[item_done]);
    if (total > 0)
      s += "/" + std::to_string(total);
    s += " done, " + std::to_string(counts[item_running]) + " running, "
         + std::to_string(counts[item_failed]) + " failed, "
         + std::to_string(waiting) + " waiting";
    if (counts[item_cancelled] > 0)
      s += ", " + std::to_string(counts[item_cancelled]) + " cancelled";
    if (counts[item_skipped] > 0)
      s += ", " + std::to_string(counts[item_skipped]) + " skipped";
    return s;
  }
};

view::view(options opts) : opts_(std::move(opts)) {
  out_ = opts_.out ? opts_.out : &std::cerr;
  if (!opts_.size)
    opts_.size = [] {
      winsize ws{};
      if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0
          && ws.ws_col > 0)
        return std::pair<int, int>{ws.ws_row, ws.ws_col};
      return std::pair<int, int>{24, 80};
    };
  if (!opts_.prefix)
    opts_.prefix = [](const event& e) { return e.run_id; };
  if (opts_.interval.count() <= 0)
    opts_.interval = std::chrono::milliseconds{100};
  if (opts_.how == mode::table && opts_.redraw_thread)
    thread_ = std::thread{[this] { loop(); }};
}

view::~view() {
  end();
}

view::mode view::mode_for_stderr(bool json) {
  if (json)
    return mode::quiet;
  if (!::isatty(STDERR_FILENO))
    return mode::lines;
  // A terminal that cannot move its cursor gets lines too.
  auto* term = std::getenv("TERM");
  if (term && std::string_view{term} == "dumb")
    return mode::lines;
  return mode::table;
}

void view::on(const event& e) {
  std::lock_guard guard{mtx_};
  if (ended_ || opts_.how == mode::quiet)
    return;
  if (opts_.how == mode::lines) {
    auto line = line_for(e) + "\n";
    write_locked(line);
    return;
  }
  apply(e);
}

void view::print(std::ostream& to, std::string_view text) {
  std::lock_guard guard{mtx_};
  if (opts_.how == mode::table && !drawn_.empty()) {
    std::string buf;
    erase_locked(buf);
    write_locked(buf);
    dirty_ = true;
  }
  to << text;
  to.flush();
}

void view::tick() {
  std::lock_guard guard{mtx_};
  if (opts_.how == mode::table && dirty_)
    draw_locked();
}

void view::end() {
  {
    std::lock_guard guard{mtx_};
    if (ended_)
      return;
    ended_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable())
    thread_.join();
  std::lock_guard guard{mtx_};
  // The last redraw; the table stays on the screen, the cursor below it,
  // and what is printed later goes below it.
  if (opts_.how == mode::table && dirty_)
    draw_locked();
  drawn_.clear();
}

std::vector<std::string> view::render(int rows, int cols) const {
  std::lock_guard guard{mtx_};
  return render_locked(rows, cols);
}

// -- the model
// ------------------------------------------------------------------

view::row& view::row_for(const std::string& run_id, const std::string& name) {
  auto key = run_id;
  key += '\n';
  key += name;
  auto [it, fresh] = row_index_.try_emplace(std::move(key), rows_.size());
  if (!fresh)
    return *rows_[it->second];
  auto r = std::make_unique<row>();
  r->run_id = run_id;
  r->name = name;
  r->seen = r->changed = ++clock_;
  if (name.empty())
    r->rank = rank_run;
  runs_.try_emplace(run_id, runs_.size());
  rows_.push_back(std::move(r));
  return *rows_.back();
}

void view::apply(const event& e) {
  auto& t = e.type;
  if (is_run_event(e)) {
    // Submitted and resumed say nothing a row would need.
    if (t == "run_submitted" || t == "resumed" || t == "run_resumed") {
      runs_.try_emplace(e.run_id, runs_.size());
      if (t != "run_resumed")
        return;
    }
    auto& r = row_for(e.run_id, "");
    auto word = t.rfind("run_", 0) == 0 ? t.substr(4) : t;
    r.state = word == "resumed" ? std::string{"running"} : word;
    r.detail = e.message;
    r.changed = ++clock_;
    dirty_ = true;
    return;
  }
  std::string map, index;
  if (split_item(e.node, map, index)) {
    auto& m = row_for(e.run_id, map);
    m.is_map = true;
    // Items of a map whose own start came before this view did.
    if (m.state == "waiting")
      m.state = "running";
    auto& st = m.item_of[index];
    auto next = item_state_of(e, st);
    if (next != st) {
      if (st != item_none)
        --m.counts[st];
      ++m.counts[next];
      st = next;
    }
    m.changed = ++clock_;
    dirty_ = true;
    return;
  }
  auto& r = row_for(e.run_id, e.node);
  r.changed = ++clock_;
  dirty_ = true;
  if (e.items > 0) {
    r.is_map = true;
    r.items = e.items;
  }
  std::string message = e.message;
  if (t == "attempt_started") {
    r.state = "running";
    r.rank = rank_running;
    r.detail = "attempt " + std::to_string(e.attempt);
  } else if (t == "timer_set") {
    r.state = "sleeping";
    r.rank = rank_running;
    r.detail = e.deadline_ns != 0
                 ? "until " + std::string{[&] {
                     auto secs = static_cast<std::time_t>(e.deadline_ns
                                                          / 1'000'000'000);
                     std::tm tm{};
                     localtime_r(&secs, &tm);
                     char buf[16];
                     std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
                     return std::string{buf};
                   }()}
                 : std::string{};
  } else if (t == "attempt_failed") {
    r.state = e.deadline_ns != 0 ? "retrying" : "failing";
    r.rank = rank_failed;
    r.detail = "attempt " + std::to_string(e.attempt) + " failed";
    if (e.deadline_ns != 0)
      r.detail += ", next in " + span(e.deadline_ns - wall_ns());
    if (!message.empty())
      r.detail += ": " + message;
  } else if (t == "node_completed") {
    r.state = "completed";
    r.rank = rank_finished;
    r.detail = e.attempt > 1
                 ? "after " + std::to_string(e.attempt) + " attempts"
                 : std::string{};
  } else if (t == "node_failed") {
    r.state = "failed";
    r.rank = rank_failed;
    r.detail = message;
  } else if (t == "node_fell_back") {
    r.state = "fell back";
    r.rank = rank_failed;
    r.detail = message;
  } else if (t == "node_cancelled") {
    r.state = "cancelled";
    r.rank = rank_finished;
    r.detail = message;
  } else if (t == "node_skipped") {
    r.state = "skipped";
    r.rank = rank_finished;
    r.detail = message;
  } else {
    r.state = t;
    r.detail = message;
  }
}

std::string view::line_for(const event& e) const {
  std::string line = opts_.prefix(e);
  line += "  ";
  if (is_run_event(e)) {
    line += "(run)  " + e.type;
  } else {
    line += e.node + "  " + e.type;
    if (e.attempt > 0)
      line += "  attempt " + std::to_string(e.attempt);
    if (e.type == "attempt_failed" && e.deadline_ns != 0)
      line += "  next in " + span(e.deadline_ns - wall_ns());
    if (e.type == "timer_set" && e.deadline_ns != 0)
      line += "  fires in " + span(e.deadline_ns - wall_ns());
    if (e.items > 0)
      line += "  " + std::to_string(e.items) + " items";
  }
  if (!e.message.empty())
    line += "  " + shorten(e.message, line_message_max);
  return line;
}

// -- drawing
// --------------------------------------------------------------------

std::vector<std::string> view::render_locked(int rows, int cols) const {
  std::vector<std::string> out;
  if (rows_.empty())
    return out;
  // Every line stays within the screen: no line wraps (the cursor moves by
  // lines), and the table never scrolls the screen (the cursor could not
  // move back above it).
  auto width = static_cast<size_t>(std::max(cols, 12) - 1);
  auto budget = static_cast<size_t>(std::max(rows, 2) - 1);
  bool with_run = runs_.size() > 1;
  std::vector<const row*> order;
  order.reserve(rows_.size());
  for (auto& r : rows_)
    order.push_back(r.get());
  auto shown = std::min(order.size(), budget);
  if (shown < order.size())
    --shown; // the line that counts the rest
  // Running rows in the order they came, the others the latest first.
  auto before = [](const row* a, const row* b) {
    if (a->rank != b->rank)
      return a->rank < b->rank;
    if (a->rank <= rank_running)
      return a->seen < b->seen;
    return a->changed > b->changed;
  };
  std::partial_sort(order.begin(), order.begin() + static_cast<long>(shown),
                    order.end(), before);
  size_t name_width = 4, state_width = 9;
  for (size_t i = 0; i < shown; ++i) {
    name_width = std::max(name_width, order[i]->label(with_run).size());
    state_width = std::max(state_width, order[i]->state.size());
  }
  name_width = std::min(name_width, std::max<size_t>(4, width / 3));
  state_width = std::min<size_t>(state_width, 12);
  for (size_t i = 0; i < shown; ++i) {
    auto& r = *order[i];
    std::string line = "  "
                       + pad(clip(r.label(with_run), name_width), name_width)
                       + "  " + pad(clip(r.state, state_width), state_width);
    auto detail = r.is_map ? r.summary() : r.detail;
    if (r.is_map && !r.detail.empty() && r.rank == rank_failed)
      detail += "; " + r.detail;
    if (!detail.empty() && line.size() + 2 + 8 <= width)
      line += "  " + shorten(detail, width - line.size() - 2);
    out.push_back(clip(line, width));
  }
  if (shown < order.size()) {
    std::array<size_t, 4> hidden{};
    for (size_t i = shown; i < order.size(); ++i)
      ++hidden[static_cast<size_t>(std::clamp(order[i]->rank, 0, 2))];
    std::string more = "  ... " + std::to_string(order.size() - shown)
                       + " more: " + std::to_string(hidden[rank_running])
                       + " running, " + std::to_string(hidden[rank_failed])
                       + " failed, " + std::to_string(hidden[rank_finished])
                       + " finished";
    out.push_back(clip(more, width));
  }
  return out;
}

void view::erase_locked(std::string& buf) {
  if (drawn_.empty())
    return;
  buf += "\r\033[" + std::to_string(drawn_.size()) + "A\033[J";
  drawn_.clear();
}

void view::draw_locked() {
  dirty_ = false;
  auto [rows, cols] = opts_.size();
  auto lines = render_locked(rows, cols);
  std::string buf;
  if (!drawn_.empty())
    buf += "\r\033[" + std::to_string(drawn_.size()) + "A";
  for (size_t i = 0; i < lines.size(); ++i) {
    // An unchanged line is stepped over.
    if (i < drawn_.size() && drawn_[i] == lines[i])
      buf += "\n";
    else
      buf += "\033[2K" + lines[i] + "\n";
  }
  if (lines.size() < drawn_.size())
    buf += "\033[J";
  drawn_ = std::move(lines);
  write_locked(buf);
}

void view::write_locked(std::string_view bytes) {
  out_->write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out_->flush();
}

void view::loop() {
  std::unique_lock lock{mtx_};
  while (!ended_) {
    wake_.wait_for(lock, opts_.interval);
    if (!ended_ && dirty_)
      draw_locked();
  }
}

} // namespace troupe::tools::progress

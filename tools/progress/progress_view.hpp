#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace troupe::tools::progress {

/// One journal event of a run, as the progress view shows it: what
/// `troupe run` hears from its runs and `troupe watch` from a node.
struct event {
  std::string run_id;
  /// The node (a map item is "map[3]"); empty for the run itself.
  std::string node;
  /// The journal event type ("attempt_started", "run_failed", ...).
  std::string type;
  /// The node's attempt; 0 when the event has none.
  int32_t attempt = 0;
  /// attempt_failed: when the next attempt is due; timer_set: when the
  /// timer fires (wall clock, ns since the epoch); 0 when none.
  int64_t deadline_ns = 0;
  std::string message;
  /// When it happened (wall clock, ns since the epoch).
  int64_t at_ns = 0;
  /// A map's attempt_started: how many items it runs over; 0 when unknown.
  int64_t items = 0;
};

/// Returns `text` on one line (runs of blanks, newlines and control
/// characters become one space) and at most `max` bytes long: a longer text
/// is cut at a word boundary (mid-word only when a word alone is longer than
/// a third of `max`) and ends with "...". Never cuts a UTF-8 sequence.
std::string shorten(std::string_view text, size_t max);

/// Whether `e` is about the run as a whole rather than one node (run_failed
/// names the failing node, yet no attempt of it).
bool is_run_event(const event& e);

/// Shows the progress of runs on stderr, as one of:
/// - `lines`: one line per event (a pipe or a log file);
/// - `table`: a table of nodes redrawn in place (a terminal). Only what fits
///   the terminal is drawn (its size is read for every redraw, so a resize
///   takes effect at the next one), at most once per `interval`, by a thread
///   of the view's own; a map's items are summarised in the map's row; nodes
///   that run, then nodes that failed, come first. Bytes written grow with
///   the run's duration and the terminal's size, not with its node count.
/// - `quiet`: nothing (JSON output).
/// Thread-safe: `on`, `print` and `end` may be called from any one thread
/// while the view's own thread redraws.
class view {
 public:
  enum class mode { quiet, lines, table };

  struct options {
    mode how = mode::lines;
    /// Where lines and the table go. Default: std::cerr.
    std::ostream* out = nullptr;
    /// `lines`: what starts each line (the run id, a time). Default: the
    /// event's run id.
    std::function<std::string(const event&)> prefix;
    /// `table`: the terminal's rows and columns. Default: TIOCGWINSZ of
    /// stderr, 24x80 when it cannot be read.
    std::function<std::pair<int, int>()> size;
    /// `table`: least time between two redraws. Default: 100 ms.
    std::chrono::milliseconds interval{100};
    /// `table`: redraw from a thread of the view's own; when false, only
    /// `tick` and `end` draw (tests).
    bool redraw_thread = true;
  };

  explicit view(options opts);
  /// Calls end().
  ~view();

  view(const view&) = delete;
  view& operator=(const view&) = delete;

  /// Returns the mode for output to stderr: `table` on a terminal, `lines`
  /// otherwise, `quiet` with `json`.
  static mode mode_for_stderr(bool json);

  /// Takes in one event.
  void on(const event& e);

  /// Writes `text` (whole lines) to `to` above the table, which is drawn
  /// again below it; straight through in the other modes.
  void print(std::ostream& to, std::string_view text);

  /// Draws the table now if it changed since the last draw.
  void tick();

  /// Draws the table a last time and leaves the cursor below it; later
  /// events are ignored. Idempotent.
  void end();

  /// Returns the table's lines as drawn for a terminal of `rows` x `cols`:
  /// at most rows - 1 lines, each at most cols - 1 bytes.
  std::vector<std::string> render(int rows, int cols) const;

 private:
  struct row;
  struct run_info;

  row& row_for(const std::string& run_id, const std::string& name);
  void apply(const event& e);
  std::string line_for(const event& e) const;
  std::vector<std::string> render_locked(int rows, int cols) const;
  /// Writes the table over the one drawn before (lock held).
  void draw_locked();
  /// Moves to the first line of the drawn table and clears it (lock held).
  void erase_locked(std::string& buf);
  void write_locked(std::string_view bytes);
  void loop();

  options opts_;
  std::ostream* out_;
  mutable std::mutex mtx_;
  std::condition_variable wake_;
  bool ended_ = false;
  bool dirty_ = false;
  /// The lines on the screen now, top to bottom.
  std::vector<std::string> drawn_;
  std::vector<std::unique_ptr<row>> rows_;
  std::unordered_map<std::string, size_t> row_index_;
  std::unordered_map<std::string, size_t> runs_;
  uint64_t clock_ = 0;
  std::thread thread_;
};

} // namespace troupe::tools::progress

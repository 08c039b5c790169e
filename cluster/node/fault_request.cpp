#include "cluster/node/fault_request.hpp"

#include "persistence/chaos_hooks.hpp"
#include "runtime/log/log.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::cluster {

namespace chaos = persistence::chaos;
using json = nlohmann::json;
using control::error_code;

namespace {

/// The longest delay, window or clock offset a fault takes: one day.
constexpr int64_t max_ms = int64_t{24} * 3600 * 1000;

/// The hooks and the fields each takes (besides t, id and hook).
struct hook_fields {
  std::string_view hook;
  std::array<std::string_view, 2> takes;
};

constexpr std::array<hook_fields, 5> hooks{
  hook_fields{"slow_disk", {"delay_ms", "for_ms"}},
  hook_fields{"fail_disk", {"error", "for_ms"}},
  hook_fields{"clock_jump", {"offset_ms", ""}},
  hook_fields{"rerun_completed", {"", ""}},
  hook_fields{"clear", {"", ""}},
};

/// Reads a required whole number of ms field `name` within [min, max_ms],
/// or sets `error` naming it.
std::optional<int64_t> millis(const json& msg, const char* name, int64_t min,
                              std::string& error) {
  auto what = "a whole number of ms from " + std::to_string(min) + " to "
              + std::to_string(max_ms);
  auto i = msg.find(name);
  if (i == msg.end() || i->is_null()) {
    error = std::string{"missing field '"} + name + "' (" + what + ")";
    return std::nullopt;
  }
  bool fits = i->is_number_integer()
              && !(i->is_number_unsigned()
                   && i->get<uint64_t>() > static_cast<uint64_t>(max_ms))
              && i->get<int64_t>() >= min && i->get<int64_t>() <= max_ms;
  if (!fits) {
    error = std::string{"field '"} + name + "' must be " + what;
    return std::nullopt;
  }
  return i->get<int64_t>();
}

} // namespace

void answer_fault(const request_ptr& req, const json& msg) {
  auto bad = [&](const std::string& why) {
    req->fail(error_code::bad_request, "fault: " + why);
  };
  auto h = msg.find("hook");
  if (h == msg.end() || h->is_null())
    return bad("missing field 'hook' (slow_disk, fail_disk, clock_jump, "
               "rerun_completed or clear)");
  if (!h->is_string())
    return bad("field 'hook' must be a string");
  const auto& hook = h->get_ref<const std::string&>();
  const hook_fields* known = nullptr;
  for (auto& k : hooks)
    if (k.hook == hook)
      known = &k;
  if (!known)
    return bad("field 'hook' must be slow_disk, fail_disk, clock_jump, "
               "rerun_completed or clear, not '"
               + hook.substr(0, 64) + "'");
  // A field the hook does not take is a mistake (a typo, most likely).
  for (auto& [name, _] : msg.items()) {
    if (name == "t" || name == "id" || name == "hook")
      continue;
    bool takes = false;
    for (auto t : known->takes)
      takes |= !t.empty() && t == name;
    if (!takes)
      return bad("field '" + name.substr(0, 64) + "' is not taken by hook '"
                 + hook + "'");
  }
  std::string error;
  std::optional<int64_t> delay, span, offset;
  auto failure = chaos::disk_fault::none;
  if (hook == "slow_disk") {
    delay = millis(msg, "delay_ms", 0, error);
    if (delay)
      span = millis(msg, "for_ms", 0, error);
  } else if (hook == "fail_disk") {
    auto e = msg.find("error");
    if (e == msg.end() || e->is_null())
      error = "missing field 'error' (io_error or no_space)";
    else if (!e->is_string() || (*e != "io_error" && *e != "no_space"))
      error = "field 'error' must be io_error or no_space";
    else
      failure = *e == "io_error" ? chaos::disk_fault::io_error
                                 : chaos::disk_fault::no_space;
    if (error.empty())
      span = millis(msg, "for_ms", 0, error);
  } else if (hook == "clock_jump") {
    offset = millis(msg, "offset_ms", -max_ms, error);
  }
  if (!error.empty())
    return bad(error);
  if (!chaos::hooks_enabled())
    return req->fail(error_code::hooks_off,
                     "the fault hooks are off on this node: it was not "
                     "started with TROUPE_CHAOS_HOOKS=1 in its environment "
                     "(they are for tests only; no configuration turns them "
                     "on)");
  using ms = std::chrono::milliseconds;
  if (hook == "slow_disk")
    chaos::slow_disk(ms{*delay}, ms{*span});
  else if (hook == "fail_disk")
    chaos::fail_disk(failure, ms{*span});
  else if (hook == "clock_jump")
    chaos::jump_clock(ms{*offset});
  else if (hook == "rerun_completed")
    chaos::arm_rerun();
  else
    chaos::clear();
  auto hooks_now = json::parse(chaos::describe(), nullptr, false);
  runtime::log::warn("chaos", "fault hook set: " + hook,
                     {{"hook", hook},
                      {"subject", req->who().subject},
                      {"hooks", hooks_now.dump()}});
  req->reply(json{{"ok", true}, {"hook", hook}, {"hooks", hooks_now}});
}

} // namespace troupe::cluster

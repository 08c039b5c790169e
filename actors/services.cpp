#include "actors/services.hpp"

#include "actors/breaker/breaker_actor.hpp"
#include "runtime/spec/workflow_loader.hpp"

#include <caf/all.hpp>
#include <caf/message.hpp>

#include <algorithm>

namespace troupe::actors {

std::shared_ptr<const runtime::workflow_spec>
spec_cache::get(const std::string& source, std::string& error) {
  std::lock_guard guard{mtx_};
  if (auto i = specs_.find(source); i != specs_.end())
    return i->second;
  auto outcome = runtime::parse_workflow(source);
  if (!outcome.ok()) {
    error = outcome.errors.empty() ? "invalid workflow"
                                   : outcome.errors.front().to_string("spec");
    return nullptr;
  }
  auto spec = std::make_shared<const runtime::workflow_spec>(
    std::move(*outcome.workflow));
  specs_.emplace(source, spec);
  return spec;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

std::string describe_exit(const caf::error& reason) {
  const auto& ctx = reason.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return caf::to_string(reason);
}

caf::actor keyed_actors::get(const std::string& key,
                             const std::function<caf::actor()>& spawn) {
  std::lock_guard guard{mtx_};
  auto& a = actors_[key];
  if (!a)
    a = spawn();
  return a;
}

std::vector<std::pair<std::string, caf::actor>> keyed_actors::all() {
  std::lock_guard guard{mtx_};
  std::vector<std::pair<std::string, caf::actor>> out(actors_.begin(),
                                                      actors_.end());
  std::sort(out.begin(), out.end(),
            [](auto& a, auto& b) { return a.first < b.first; });
  return out;
}

void keyed_actors::stop_all() {
  std::lock_guard guard{mtx_};
  for (auto& [_, a] : actors_)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  actors_.clear();
}

} // namespace troupe::actors

#include "actors/services.hpp"

#include "actors/breaker/breaker_actor.hpp"
#include "persistence/chaos_hooks.hpp"
#include "runtime/spec/workflow_loader.hpp"

#include <caf/all.hpp>
#include <caf/message.hpp>

#include <algorithm>

namespace troupe::actors {

std::shared_ptr<const runtime::workflow_spec>
spec_cache::get(const std::string& source, std::string& error) {
  runtime::diagnostics errors;
  auto spec = get(source, errors);
  if (!spec)
    error
      = errors.empty() ? "invalid workflow" : errors.front().to_string("spec");
  return spec;
}

std::shared_ptr<const runtime::workflow_spec>
spec_cache::get(const std::string& source, runtime::diagnostics& errors) {
  {
    std::lock_guard guard{mtx_};
    if (auto i = specs_.find(source); i != specs_.end()) {
      lru_.splice(lru_.begin(), lru_, i->second.use);
      return i->second.spec;
    }
  }
  // Parsed outside the lock: a big workflow must not hold up the others.
  auto outcome = runtime::parse_workflow(source);
  if (!outcome.ok()) {
    errors = std::move(outcome.errors);
    return nullptr;
  }
  auto spec = std::make_shared<const runtime::workflow_spec>(
    std::move(*outcome.workflow));
  std::lock_guard guard{mtx_};
  if (auto i = specs_.find(source); i != specs_.end()) {
    // Parsed meanwhile by another caller: share theirs.
    lru_.splice(lru_.begin(), lru_, i->second.use);
    return i->second.spec;
  }
  // Text bigger than the whole cache is parsed for this caller alone.
  if (source.size() > max_bytes_)
    return spec;
  auto [i, _] = specs_.emplace(source, entry{spec, {}});
  lru_.push_front(&i->first);
  i->second.use = lru_.begin();
  bytes_ += source.size();
  trim();
  return spec;
}

void spec_cache::set_limits(size_t max_entries, size_t max_bytes) {
  std::lock_guard guard{mtx_};
  max_entries_ = std::max<size_t>(1, max_entries);
  max_bytes_ = std::max<size_t>(1, max_bytes);
  trim();
}

size_t spec_cache::size() {
  std::lock_guard guard{mtx_};
  return specs_.size();
}

size_t spec_cache::bytes() {
  std::lock_guard guard{mtx_};
  return bytes_;
}

void spec_cache::trim() {
  while (!lru_.empty()
         && (specs_.size() > max_entries_ || bytes_ > max_bytes_)) {
    auto i = specs_.find(*lru_.back());
    lru_.pop_back();
    if (i == specs_.end())
      continue;
    bytes_ -= i->first.size();
    specs_.erase(i);
  }
}

int64_t now_ns() {
  // Plus clock_jump's offset (0 unless the chaos fault hooks are on).
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
           .count()
         + persistence::chaos::clock_offset_ns();
}

std::string work_key(const std::string& run_id, const std::string& node) {
  return run_id + "/" + node;
}

std::string describe_exit(const caf::error& reason) {
  const auto& ctx = reason.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return caf::to_string(reason);
}

caf::actor keyed_actors::get(const std::string& key,
                             const std::function<caf::actor()>& spawn) {
  caf::actor fresh;
  {
    std::lock_guard guard{table_->mtx};
    auto& a = table_->actors[key];
    if (a)
      return a;
    a = fresh = spawn();
  }
  if (!fresh)
    return fresh;
  // An actor that ends otherwise than by retiring (a bug, shutdown) is
  // forgotten too. Attached outside the lock: on an actor that has already
  // ended, the hook runs at once.
  std::weak_ptr<table> weak = table_;
  fresh->attach_functor([weak, key, addr = fresh.address()] {
    if (auto t = weak.lock()) {
      std::lock_guard guard{t->mtx};
      if (auto i = t->actors.find(key);
          i != t->actors.end() && i->second.address() == addr)
        t->actors.erase(i);
    }
  });
  return fresh;
}

void keyed_actors::retire(const std::string& key,
                          const caf::actor_addr& actor) {
  std::lock_guard guard{table_->mtx};
  if (auto i = table_->actors.find(key);
      i != table_->actors.end() && i->second.address() == actor)
    table_->actors.erase(i);
}

std::vector<std::pair<std::string, caf::actor>> keyed_actors::all() {
  std::lock_guard guard{table_->mtx};
  std::vector<std::pair<std::string, caf::actor>> out(table_->actors.begin(),
                                                      table_->actors.end());
  std::sort(out.begin(), out.end(),
            [](auto& a, auto& b) { return a.first < b.first; });
  return out;
}

void keyed_actors::stop_all() {
  std::lock_guard guard{table_->mtx};
  for (auto& [_, a] : table_->actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  table_->actors.clear();
}

} // namespace troupe::actors

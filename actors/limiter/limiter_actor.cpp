#include "actors/limiter/limiter_actor.hpp"

#include "runtime/protocol/messages.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>

namespace troupe::actors {

namespace {

using self_ptr = caf::stateful_actor<limiter_state>*;

/// Hands free slots to the queue, in order.
void grant(self_ptr self) {
  auto& st = self->state;
  while (!st.queue.empty()
         && static_cast<int32_t>(st.holders.size()) < st.limit) {
    auto w = std::move(st.queue.front());
    st.queue.pop_front();
    st.holders[w.holder] = w.owner;
    w.reply.deliver(true);
  }
}

} // namespace

caf::behavior limiter_actor_impl(self_ptr self, std::string key,
                                 int32_t limit) {
  self->state.key = std::move(key);
  self->state.limit = std::max(1, limit);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    for (auto i = st.holders.begin(); i != st.holders.end();)
      i = i->second == msg.source ? st.holders.erase(i) : std::next(i);
    st.queue.erase(
      std::remove_if(st.queue.begin(), st.queue.end(),
                     [&](auto& w) { return w.owner == msg.source; }),
      st.queue.end());
    grant(self);
  });
  return {
    [self](runtime::limit_acquire& a) -> caf::result<bool> {
      auto& st = self->state;
      auto sender = self->current_sender();
      auto owner = caf::actor_cast<caf::actor_addr>(sender);
      if (st.holders.count(a.holder))
        return true;
      if (sender)
        self->monitor(sender);
      auto reply = self->make_response_promise();
      st.queue.push_back({a.holder, owner, reply});
      grant(self);
      return reply;
    },
    [self](runtime::limit_release& r) {
      auto& st = self->state;
      st.holders.erase(r.holder);
      st.queue.erase(std::remove_if(st.queue.begin(), st.queue.end(),
                                    [&](auto& w) {
                                      if (w.holder != r.holder)
                                        return false;
                                      w.reply.deliver(false);
                                      return true;
                                    }),
                     st.queue.end());
      grant(self);
    },
    [self](const runtime::inspect_actor&) -> std::string {
      auto& st = self->state;
      nlohmann::json holders = nlohmann::json::array();
      for (auto& [h, _] : st.holders)
        holders.push_back(h);
      nlohmann::json queue = nlohmann::json::array();
      for (auto& w : st.queue)
        queue.push_back(w.holder);
      return nlohmann::json{{"kind", "limiter"},
                            {"actor_id", self->id()},
                            {"mailbox", self->mailbox().size()},
                            {"key", st.key},
                            {"limit", st.limit},
                            {"holders", std::move(holders)},
                            {"queue", std::move(queue)}}
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    },
  };
}

} // namespace troupe::actors

#include "session/handshake_slots.hpp"

#include <algorithm>

namespace smtpguard::session {

handshake_slots::slot& handshake_slots::slot::operator=(slot&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = other.owner_;
    id_ = other.id_;
    other.owner_ = nullptr;
  }
  return *this;
}

void handshake_slots::slot::release() noexcept {
  if (owner_ == nullptr) return;
  owner_->give_back(id_);
  owner_ = nullptr;
}

handshake_slots::slot handshake_slots::take(clock::time_point now) {
  holders_.push_back({next_id_, now});
  return slot(this, next_id_++);
}

void handshake_slots::give_back(std::uint64_t id) noexcept {
  // A holder that overstayed was already dropped; there is nothing to give back.
  const auto it = std::find_if(holders_.begin(), holders_.end(), [id](const holder& h) { return h.id == id; });
  if (it == holders_.end()) return;
  holders_.erase(it);
  grant(clock::now());
}

void handshake_slots::expire_stale(clock::time_point now) noexcept {
  while (!holders_.empty() && now - holders_.front().since >= hold_) holders_.pop_front();
}

void handshake_slots::grant(clock::time_point now) noexcept {
  while (!waiters_.empty() && holders_.size() < limit_) {
    const waiter next = waiters_.front();
    waiters_.pop_front();
    holders_.push_back({next_id_, now});
    *next.granted = next_id_++;
    next.timer->cancel();
  }
}

net::awaitable<handshake_slots::slot> handshake_slots::acquire(std::size_t limit, clock::time_point deadline,
                                                                 bool& waited) {
  limit_ = std::max<std::size_t>(limit, 1);
  waited = false;
  auto now = clock::now();
  if (waiters_.empty()) {
    if (holders_.size() >= limit_) expire_stale(now);
    if (holders_.size() < limit_) co_return take(now);
  }
  waited = true;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  // In line until grant() hands over a slot (and unlinks us) or we give up;
  // a frame destroyed while in line (the thread stopping) leaves neither a
  // dangling entry nor a slot nobody will give back.
  struct in_line {
    handshake_slots& slots;
    std::list<waiter>::iterator place;
    std::uint64_t granted = 0;
    bool claimed = false;
    ~in_line() {
      if (granted == 0)
        slots.waiters_.erase(place);
      else if (!claimed)
        slots.give_back(granted);
    }
  };
  in_line me{*this, waiters_.end()};
  me.place = waiters_.insert(waiters_.end(), waiter{&timer, &me.granted});
  grant(now);  // room left by a reload that raised the limit
  while (me.granted == 0) {
    if (now >= deadline) co_return slot();
    clock::time_point wake = deadline;
    if (!holders_.empty()) wake = std::min(wake, holders_.front().since + hold_);
    timer.expires_at(wake);
    co_await timer.async_wait(net::as_result);
    if (me.granted != 0) break;
    now = clock::now();
    expire_stale(now);
    grant(now);
  }
  me.claimed = true;
  co_return slot(this, me.granted);
}

}  // namespace smtpguard::session

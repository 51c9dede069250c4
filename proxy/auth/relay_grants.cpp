#include "auth/relay_grants.hpp"

#include <algorithm>

namespace smtpguard::auth {

relay_grants::relay_grants(std::size_t max_tracked) : max_tracked_(std::max<std::size_t>(1, max_tracked)) {}

void relay_grants::grant(std::string_view address, clock::duration ttl, time_point now) {
  std::lock_guard lock(mutex_);
  forget_expired(now);
  std::string key(address);
  if (auto it = entries_.find(key); it != entries_.end()) {
    it->second.until = now + ttl;
    order_.splice(order_.end(), order_, it->second.age);
    return;
  }
  while (entries_.size() >= max_tracked_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  order_.push_back(key);
  entries_.emplace(std::move(key), entry{now + ttl, std::prev(order_.end())});
}

bool relay_grants::permitted(std::string_view address, time_point now) const {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(std::string(address));
  return it != entries_.end() && now < it->second.until;
}

std::size_t relay_grants::active(time_point now) {
  std::lock_guard lock(mutex_);
  forget_expired(now);
  return static_cast<std::size_t>(
      std::count_if(entries_.begin(), entries_.end(), [now](const auto& e) { return now < e.second.until; }));
}

// Grants made with one TTL run out in the order they were made; a reload
// that shortens it leaves some longer ones behind the front, which are
// forgotten a little later and never count as running meanwhile.
void relay_grants::forget_expired(time_point now) {
  while (!order_.empty()) {
    const auto it = entries_.find(order_.front());
    if (now < it->second.until) break;
    entries_.erase(it);
    order_.pop_front();
  }
}

}  // namespace smtpguard::auth

#include "auth/lockout.hpp"

namespace smtpguard::auth {
namespace {

// Addresses and user names share one table; the prefix keeps "ip:1.2.3.4"
// and a user literally named "1.2.3.4" apart.
std::string ip_entry(std::string_view ip_key) { return "ip:" + std::string(ip_key); }
std::string user_entry(std::string_view user) { return "user:" + std::string(user); }

}  // namespace

lockout_table::lockout_table(lockout_settings settings) : settings_(settings) {
  if (settings_.max_tracked == 0) settings_.max_tracked = 1;
}

void lockout_table::set_settings(lockout_settings settings) {
  std::lock_guard lock(mutex_);
  settings_ = settings;
  if (settings_.max_tracked == 0) settings_.max_tracked = 1;
}

void lockout_table::record_failure(std::string_view ip_key, std::string_view user, time_point now, int weight,
                                   std::optional<int> user_limit) {
  std::lock_guard lock(mutex_);
  const int per_user = user_limit.value_or(settings_.user_failures);
  if (settings_.ip_failures > 0 && !ip_key.empty()) fail(ip_entry(ip_key), settings_.ip_failures, now, weight);
  if (per_user > 0 && !user.empty()) fail(user_entry(user), per_user, now, weight);
}

lockout_scope lockout_table::is_locked(std::string_view ip_key, std::string_view user, time_point now) {
  std::lock_guard lock(mutex_);
  if (!ip_key.empty() && locked(ip_entry(ip_key), now)) return lockout_scope::ip;
  if (!user.empty() && locked(user_entry(user), now)) return lockout_scope::user;
  return lockout_scope::none;
}

bool lockout_table::ip_locked(std::string_view ip_key, time_point now) {
  std::lock_guard lock(mutex_);
  return !ip_key.empty() && locked(ip_entry(ip_key), now);
}

std::size_t lockout_table::tracked() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

void lockout_table::fail(std::string key, int limit, time_point now, int weight) {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    // Evicting the least recently failing key bounds memory; a locked key is
    // touched when it locks, so flooding has to outpace every live lockout.
    while (entries_.size() >= settings_.max_tracked) {
      entries_.erase(lru_.front());
      lru_.pop_front();
    }
    lru_.push_back(key);
    it = entries_.emplace(std::move(key), entry{now, 0, time_point{}, std::prev(lru_.end())}).first;
  } else {
    lru_.splice(lru_.end(), lru_, it->second.age);
  }
  entry& e = it->second;
  if (now < e.locked_until) return;  // already locked: attempts are not even checked
  if (now - e.window_start >= settings_.window) {
    e.window_start = now;
    e.failures = 0;
  }
  e.failures += weight;
  if (e.failures >= limit) {
    e.locked_until = now + settings_.lockout;
    e.window_start = e.locked_until;
    e.failures = 0;
  }
}

bool lockout_table::locked(const std::string& key, time_point now) const {
  const auto it = entries_.find(key);
  return it != entries_.end() && now < it->second.locked_until;
}

}  // namespace smtpguard::auth

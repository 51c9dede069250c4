#include "smtp/data_pace.hpp"

#include <algorithm>

namespace smtpguard::smtp {

bool data_pace::window_bound() const noexcept {
  return min_rate_ > 0 && window_ - waited_ < block_limit_ - idle_;
}

data_pace::duration data_pace::next_wait() const noexcept {
  const duration limit = window_bound() ? window_ - waited_ : block_limit_ - idle_;
  return std::max(limit, duration::zero());
}

data_pace::verdict data_pace::after_wait(duration spent, std::size_t bytes) noexcept {
  const bool bound = window_bound();
  waited_ += spent;
  if (bytes > 0) {
    window_bytes_ += bytes;
    idle_ = {};
  } else {
    idle_ += spent;
  }
  if (min_rate_ > 0 && waited_ >= window_) {
    const double seconds = std::chrono::duration<double>(waited_).count();
    const bool too_slow = static_cast<double>(window_bytes_) < static_cast<double>(min_rate_) * seconds;
    waited_ = {};
    window_bytes_ = 0;
    if (too_slow) return verdict::too_slow;
  }
  if (bytes == 0 && !bound) return verdict::timed_out;
  return verdict::go_on;
}

}  // namespace smtpguard::smtp

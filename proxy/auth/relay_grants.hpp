#pragma once
// POP-before-SMTP's table: client addresses that logged in to POP3 and may
// relay over SMTP until their grant runs out. Shared by every session of the
// process; pure bookkeeping with the time passed in, so tests drive the clock.
#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace smtpguard::auth {

/// Thread-safe. Keyed by the exact address text: unlike failure budgets,
/// a grant is never widened to a neighbour (an IPv6 /64 holds strangers).
class relay_grants {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  /// At most `max_tracked` addresses; past that the oldest grant goes first.
  explicit relay_grants(std::size_t max_tracked = 100000);

  /// `address` may relay until now + ttl (a later login extends it).
  void grant(std::string_view address, clock::duration ttl, time_point now);
  bool permitted(std::string_view address, time_point now) const;
  /// Grants still running; forgets the ones that ran out.
  std::size_t active(time_point now);

 private:
  struct entry {
    time_point until;
    std::list<std::string>::iterator age;  // position in order_
  };
  void forget_expired(time_point now);

  std::size_t max_tracked_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, entry> entries_;
  std::list<std::string> order_;  // least recently granted at the front
};

}  // namespace smtpguard::auth

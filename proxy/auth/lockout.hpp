#pragma once
// AUTH failure budgets shared by every session of the process: per client
// address (IPv4 address or IPv6 /64) and per user name. Pure bookkeeping with
// the time passed in, so tests can drive the clock.
#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace smtpguard::auth {

struct lockout_settings {
  int ip_failures = 10;    ///< failures from one address within the window before it is locked; 0: never
  int user_failures = 10;  ///< failures for one user name within the window before it is locked; 0: never
  std::chrono::seconds window{600};
  std::chrono::seconds lockout{900};
  std::size_t max_tracked = 100000;  ///< addresses plus user names remembered; least recently touched go first
};

/// Which budget is exhausted.
enum class lockout_scope { none, ip, user };

/// Thread-safe. Failures are counted in fixed windows that start with the
/// first failure; reaching the limit locks the key for `lockout` and starts
/// afresh afterwards. A success clears nothing: otherwise one valid account
/// would reset an address's budget for guessing the others.
class lockout_table {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  explicit lockout_table(lockout_settings settings);

  /// Counts one failed AUTH from `ip_key` for `user` (empty: no user name
  /// known); `weight` counts as that many (a message's recipients, say);
  /// `user_limit`, when given, is this user's own instead of user_failures (0: none).
  void record_failure(std::string_view ip_key, std::string_view user, time_point now, int weight = 1,
                      std::optional<int> user_limit = std::nullopt);
  /// The address's lockout first, then the user's; none when neither is locked.
  lockout_scope is_locked(std::string_view ip_key, std::string_view user, time_point now);
  /// Only the address (for new connections, before any user name is known).
  bool ip_locked(std::string_view ip_key, time_point now);

  /// Keys currently remembered (for tests of the memory bound).
  std::size_t tracked() const;
  /// New budgets (a reload); failures already counted are kept.
  void set_settings(lockout_settings settings);

 private:
  struct entry {
    time_point window_start;
    int failures = 0;
    time_point locked_until;
    std::list<std::string>::iterator age;  // position in lru_
  };

  void fail(std::string key, int limit, time_point now, int weight);
  bool locked(const std::string& key, time_point now) const;

  lockout_settings settings_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, entry> entries_;
  std::list<std::string> lru_;  // least recently failed at the front
};

}  // namespace smtpguard::auth

#pragma once
// Successful password checks, remembered for a short time so that a client
// sending one message per session pays the slow hash once, not per message.
// Only a keyed MAC of user and password is kept, never the password, and
// only successes: a wrong guess always costs a full hash.
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace smtpguard::auth {

class credential_cache {
 public:
  using clock = std::chrono::steady_clock;

  /// ttl 0 disables the cache.
  explicit credential_cache(std::chrono::seconds ttl, std::size_t max_entries = 10000);

  /// The MAC naming these credentials against users-file `generation`
  /// (empty if it cannot be computed): what the cache stores, and what
  /// tells two checks of the same credentials apart from any others.
  std::string key(std::uint64_t generation, std::string_view user, std::string_view password) const;
  /// True if the credentials named by `key` were verified less than ttl ago.
  bool verified(const std::string& key, clock::time_point now);
  void remember(std::string key, clock::time_point now);

  /// A reloaded configuration's ttl; entries already made keep their expiry.
  void set_ttl(std::chrono::seconds ttl);

 private:
  std::atomic<std::chrono::seconds::rep> ttl_;
  std::size_t max_entries_;
  std::array<std::uint8_t, 32> key_{};
  std::mutex mutex_;
  std::unordered_map<std::string, clock::time_point> expiry_;
};

}  // namespace smtpguard::auth

#pragma once
// How many client connections are open, in total and per client address,
// across every I/O thread; a slot is held for the life of a session.
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

#include "net/asio_fwd.hpp"

namespace smtpguard::net {

/// The key limits and lockouts count by: the IPv4 address, or the /64 of an
/// IPv6 address (one subscriber usually holds a whole /64), as text.
std::string client_key(const asio::ip::address& address);

enum class admission { admitted, total_limit, per_ip_limit };

class connection_limits {
 public:
  connection_limits(std::size_t max_total, std::size_t max_per_client)
      : max_total_(max_total), max_per_client_(max_per_client) {}

  /// Holds one connection's place; gives it back when destroyed.
  class slot {
   public:
    slot() = default;
    slot(slot&& other) noexcept : owner_(other.owner_), key_(std::move(other.key_)) { other.owner_ = nullptr; }
    slot& operator=(slot&&) = delete;
    slot(const slot&) = delete;
    ~slot();

   private:
    friend class connection_limits;
    connection_limits* owner_ = nullptr;
    std::string key_;
  };

  /// Takes a place for `key` into `out`, unless a limit is reached.
  admission try_acquire(const std::string& key, slot& out);
  /// New limits (a reload); connections already admitted keep their place.
  void set_limits(std::size_t max_total, std::size_t max_per_client);

 private:
  void release(const std::string& key);

  std::size_t max_total_;
  std::size_t max_per_client_;
  std::mutex mutex_;
  std::size_t total_ = 0;
  std::unordered_map<std::string, std::size_t> per_client_;
};

}  // namespace smtpguard::net

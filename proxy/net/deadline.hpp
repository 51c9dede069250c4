#pragma once
// A per-connection watchdog: one timer that cancels the socket's pending
// operations when the current deadline passes. Arming it is a clock read and
// a store, so every read and write can have its own limit without racing a
// timer against the operation (which costs a coroutine and a cancellation
// signal per I/O).
#include <chrono>
#include <memory>

#include "net/asio_fwd.hpp"

namespace smtpguard::net {

using duration = std::chrono::steady_clock::duration;

class deadline {
 public:
  explicit deadline(tcp::socket& socket);
  ~deadline();
  deadline(const deadline&) = delete;
  deadline& operator=(const deadline&) = delete;

  /// Pending operations on the socket are cancelled if `limit` passes before disarm().
  void arm(duration limit);
  void disarm() noexcept;
  /// True once the armed period ran out (until the next arm()).
  bool expired() const noexcept;

 private:
  struct watch;
  std::shared_ptr<watch> watch_;  // shared with the timer's callback, which may outlive us
};

}  // namespace smtpguard::net

#pragma once
// What replicas behind one load balancer must share (SPEC section 9): the
// AUTH failure budgets and the POP-before-SMTP grants. Always kept in this
// process's tables; with shared_state.redis also in Redis, so that a client
// cannot spread its guesses over replicas, and a POP3 login on one replica
// lets the client relay through any. Redis that fails or is slow costs only
// the sharing: the local tables still decide.
#include <chrono>
#include <string>

#include "auth/lockout.hpp"
#include "net/asio_fwd.hpp"
#include "session/runtime.hpp"

namespace smtpguard::session {

class shared_state {
 public:
  /// `rt` and `lockouts` outlive the object (a session's own).
  shared_state(const runtime& rt, auth::lockout_table& lockouts) : rt_(rt), lockouts_(lockouts) {}

  /// The address's failure budget is used up, here or on another replica.
  net::awaitable<bool> ip_locked(std::string ip_key);
  /// The address's lockout first, then the user's (empty user: only the address).
  net::awaitable<auth::lockout_scope> locked(std::string ip_key, std::string user);
  /// Counts one failed login; the scope this failure (or an earlier one) locked.
  net::awaitable<auth::lockout_scope> record_failure(std::string ip_key, std::string user);

  /// `address` logged in to POP3 lately (exact address, unmapped).
  net::awaitable<bool> relay_granted(std::string address);
  net::awaitable<void> grant_relay(std::string address, std::chrono::seconds ttl);

 private:
  net::awaitable<void> count_remote_failure(const std::string& ip_key, const std::string& user);
  std::string key(std::string_view kind, std::string_view name) const;

  const runtime& rt_;
  auth::lockout_table& lockouts_;
};

}  // namespace smtpguard::session

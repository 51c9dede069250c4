#pragma once
// What replicas behind one load balancer must share (SPEC section 9): the
// AUTH failure budgets, the message budgets and the POP-before-SMTP grants. Always kept in this
// process's tables; with shared_state.redis also in Redis, so that a client
// cannot spread its guesses over replicas, and a POP3 login on one replica
// lets the client relay through any. Redis that fails or is slow costs only
// the sharing: the local tables still decide.
#include <chrono>
#include <string>
#include <string_view>

#include "auth/lockout.hpp"
#include "net/asio_fwd.hpp"
#include "session/runtime.hpp"

namespace smtpguard::session {

/// What a client may send within limits.message_window_seconds.
enum class send_budget { messages, recipients };

/// limits.max_messages_* or max_recipients_* as budgets, kept like AUTH
/// failures: each accepted message counts one (or its recipients); a budget
/// spent within the window is "locked" for a window from then.
auth::lockout_settings send_budgets(const config& settings, send_budget which);

class shared_state {
 public:
  /// `rt` and `lockouts` outlive the object (a session's own).
  shared_state(const runtime& rt, auth::lockout_table& lockouts) : rt_(rt), lockouts_(&lockouts) {}
  /// For the send budgets only (spent() and count()), whose tables are the runtime's.
  explicit shared_state(const runtime& rt) : rt_(rt) {}

  /// The address's failure budget is used up, here or on another replica.
  net::awaitable<bool> ip_locked(std::string ip_key);
  /// The address's lockout first, then the user's (empty user: only the address).
  net::awaitable<auth::lockout_scope> locked(std::string ip_key, std::string user);
  /// Counts one failed login; the scope this failure (or an earlier one) locked.
  net::awaitable<auth::lockout_scope> record_failure(std::string ip_key, std::string user);

  /// The address's or the user's budget is spent, here or on another
  /// replica (empty user: only the address); none when it is not kept.
  net::awaitable<auth::lockout_scope> spent(send_budget which, std::string ip_key, std::string user);
  /// Counts a message the backend accepted (`weight`: 1, or its recipients).
  net::awaitable<void> count(send_budget which, std::string ip_key, std::string user, int weight);

  /// `address` logged in to POP3 lately (exact address, unmapped).
  net::awaitable<bool> relay_granted(std::string address);
  net::awaitable<void> grant_relay(std::string address, std::chrono::seconds ttl);

 private:
  // Two kinds of budget are kept alike in Redis: AUTH failures and
  // accepted messages, each a counter and a lock per address and per user.
  struct budget_keys {
    std::string_view counted;
    std::string_view locked;
  };
  static constexpr budget_keys failure_keys{"failures", "lock"};
  static constexpr budget_keys message_keys{"sent", "message_limit"};
  static constexpr budget_keys recipient_keys{"recipients", "recipient_limit"};
  net::awaitable<auth::lockout_scope> remote_locked(const budget_keys& names, std::string ip_key, std::string user);
  net::awaitable<void> count_remote(const budget_keys& names, const auth::lockout_settings& budgets,
                                    const std::string& ip_key, const std::string& user, int weight = 1);
  auth::lockout_table* table(send_budget which) const;
  std::string key(std::string_view kind, std::string_view name) const;

  const runtime& rt_;
  auth::lockout_table* lockouts_ = nullptr;  ///< for the AUTH failure budgets
};

}  // namespace smtpguard::session

#pragma once
// A session's turn at a TLS handshake under the thread's cap
// (limits.max_tls_handshakes, see handshake_slots.hpp), for SMTP and POP3 alike.
#include <chrono>
#include <optional>
#include <string_view>

#include "net/asio_fwd.hpp"
#include "session/handshake_slots.hpp"
#include "session/runtime.hpp"

namespace smtpguard::session {

/// Who waits, for the metrics and the log line of a turn that never came.
struct handshake_waiter {
  std::string_view listener;
  std::string_view session;
  std::string_view client;
};

/// A slot to hold for the handshake about to run on `socket` (an empty one
/// when the thread has no cap), or nullopt when `deadline` passed first,
/// which is counted as a handshake timeout and logged as tls_failed. When
/// every slot is taken, a client that has not sent its hello yet waits for
/// it before it queues, so silent connections keep no place in the queue.
net::awaitable<std::optional<handshake_slots::slot>> wait_for_handshake_turn(const runtime& rt,
                                                                             net::tcp::socket& socket,
                                                                             std::chrono::steady_clock::time_point deadline,
                                                                             handshake_waiter who);

}  // namespace smtpguard::session

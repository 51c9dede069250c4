#pragma once
// One benchmark session: connect, greeting, EHLO, [STARTTLS, EHLO], [AUTH],
// messages, [hold open], QUIT — every reply code checked.
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "net/asio_fwd.hpp"
#include "options.hpp"
#include "ssl_headers.hpp"
#include "stats.hpp"

namespace smtpguard::bench {

/// Shared, read-only inputs of every session.
struct session_setup {
  const options* opts = nullptr;
  asio::ssl::context* tls = nullptr;  ///< null in plain mode
  asio::ip::tcp::endpoint endpoint;
  std::string message_wire;           ///< dot-stuffed content plus the final ".\r\n"
  std::size_t message_bytes = 0;      ///< content size before dot-stuffing
};

/// The TLS session a worker resumes from; filled by the SSL_CTX new-session
/// callback (TLS 1.3 tickets arrive after the handshake).
struct resume_slot {
  bssl::UniquePtr<SSL_SESSION> session;
};

/// Registers the client-side session cache callback on `ctx`.
void enable_resumption(asio::ssl::context& ctx);

/// The message sent in every transaction, and its size before dot-stuffing.
std::string build_message(const options& o, std::size_t& content_bytes);

/// Runs one session. `slot` is non-null with --resume. With `hold_until`
/// set (idle mode) no message is sent and the session waits until then
/// before QUIT.
net::awaitable<session_result> run_session(const session_setup& setup, resume_slot* slot,
                                           std::optional<std::chrono::steady_clock::time_point> hold_until);

}  // namespace smtpguard::bench

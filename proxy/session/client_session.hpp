#pragma once
// The client side of one SMTP session, from its greeting to close, as one
// coroutine: greeting -> commands in plaintext -> [STARTTLS -> commands again
// over TLS] -> transactions relayed to the backend.
#include <chrono>
#include <string>

#include "auth/lockout.hpp"
#include "config.hpp"
#include "net/asio_fwd.hpp"
#include "net/connection_limits.hpp"
#include "session/runtime.hpp"

namespace smtpguard::session {

/// How long a last reply before a deliberate close may take to be written.
inline constexpr auto last_words_timeout = std::chrono::seconds(5);

/// Spawns the session of an admitted connection on the socket's executor.
/// `peer` and `local` are the client's addresses (from a PROXY header when
/// there was one), `client_key` what limits and lockouts count it by, `slot`
/// its place under the connection limits, held until the session ends.
void start_client_session(net::tcp::socket socket, const listener_config& listener, runtime rt,
                          const net::tcp::endpoint& peer, const net::tcp::endpoint& local, std::string client_key,
                          net::connection_limits::slot slot, auth::lockout_table& lockouts);

}  // namespace smtpguard::session

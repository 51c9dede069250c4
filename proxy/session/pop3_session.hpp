#pragma once
// One connection to the POP3 front (POP-before-SMTP), as one coroutine:
// [TLS] -> the backend's greeting -> commands until login, each answered
// here or relayed to the backend [-> STLS -> the same again over TLS] ->
// a login grants the client's address relay over SMTP -> bytes relayed
// both ways unchanged until either side closes.
#include <string>

#include "auth/lockout.hpp"
#include "config.hpp"
#include "net/asio_fwd.hpp"
#include "net/connection_limits.hpp"
#include "session/runtime.hpp"

namespace smtpguard::session {

/// Spawns the session of an admitted connection to a pop3.listeners entry
/// on the socket's executor (see start_client_session for the arguments).
void start_pop3_session(net::tcp::socket socket, const listener_config& listener, runtime rt,
                        const net::tcp::endpoint& peer, std::string client_key, net::connection_limits::slot slot,
                        auth::lockout_table& lockouts);

}  // namespace smtpguard::session

#pragma once
// What a new connection goes through before its session starts: the load
// balancer's PROXY header, the connection limits and the IP lockouts.
#include "config.hpp"
#include "net/asio_fwd.hpp"
#include "session/runtime.hpp"

namespace smtpguard::session {

/// Admits the connection (PROXY header, limits, lockouts) and, unless it is
/// refused, spawns its session, which runs to its end on the same executor.
/// Never throws.
net::awaitable<void> run_client_session(net::tcp::socket socket, const listener_config& listener, runtime rt);

/// Applies reloaded connection limits and lockout budgets to the state all
/// sessions share (counts and lockouts in force are kept).
void reconfigure_shared_limits(const config& settings);

}  // namespace smtpguard::session

#pragma once
// Outgoing stream connections (to a backend), each ending up in a
// tcp::socket whatever its kind, with a deadline on the whole attempt.
#include <string>

#include "config.hpp"
#include "net/asio_fwd.hpp"
#include "net/timeout.hpp"

namespace smtpguard::net {

/// Takes ownership of `descriptor` (closing it on failure).
bool adopt(int descriptor, tcp::socket& socket, tcp protocol = tcp::v4());

/// A literal address is connected to at once; a name is looked up first.
awaitable<bool> connect_tcp(const endpoint& address, duration limit, tcp::socket& out);
awaitable<bool> connect_unix(const std::string& path, duration limit, tcp::socket& out);

}  // namespace smtpguard::net

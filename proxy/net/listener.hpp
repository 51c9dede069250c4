#pragma once
// Accepting connections. Each I/O thread binds its own acceptor to the same
// address with SO_REUSEPORT, so the kernel spreads connections over threads
// and no accept lock is shared.
#include <functional>

#include "config.hpp"
#include "net/asio_fwd.hpp"

namespace smtpguard::net {

/// Opens, binds (SO_REUSEADDR + SO_REUSEPORT) and listens. Throws
/// std::system_error naming the address on failure.
tcp::acceptor open_acceptor(const asio::any_io_executor& executor, const endpoint& address);

/// Accepts until the acceptor is closed, handing each socket to `on_accept`.
awaitable<void> accept_loop(tcp::acceptor& acceptor, std::function<void(tcp::socket)> on_accept);

}  // namespace smtpguard::net

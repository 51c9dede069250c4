#pragma once
// The PROXY protocol header a load balancer sends before the client's first
// byte: who may send it, and reading exactly it off the socket.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/asio_fwd.hpp"
#include "net/timeout.hpp"
#include "smtp/proxy_protocol.hpp"

namespace smtpguard::net {

/// Whether `address` is in one of `networks` ("10.0.0.0/8", "::1", ...,
/// already validated). An IPv4-mapped IPv6 address counts as IPv4.
bool in_networks(const asio::ip::address& address, const std::vector<std::string>& networks);

/// Reads the header and nothing after it: what follows is the client's
/// (an implicit-TLS ClientHello may arrive in the same segment). nullopt
/// when the bytes are not a valid header, the peer closed, or `limit`
/// passed; `reason` then says which.
awaitable<std::optional<smtp::proxy_header>> read_proxy_header(tcp::socket& socket, duration limit,
                                                               std::string& reason);

}  // namespace smtpguard::net

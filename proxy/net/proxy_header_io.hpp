#pragma once
// The PROXY protocol header a load balancer sends before the client's first
// byte: reading exactly it off the socket.
#include <optional>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "net/asio_fwd.hpp"
#include "net/timeout.hpp"
#include "smtp/proxy_protocol.hpp"

namespace smtpguard::net {

/// A header, or why there is none: `failure` is "bad", "timeout" or
/// "closed" (the metric's label), `reason` the text for the log.
struct proxy_header_read {
  std::optional<smtp::proxy_header> header;
  std::string_view failure;
  std::string_view reason;  ///< static storage
};

/// Reads the header and nothing after it: what follows is the client's
/// (an implicit-TLS ClientHello may arrive in the same segment), within `limit`.
awaitable<proxy_header_read> read_proxy_header(tcp::socket& socket, duration limit);

}  // namespace smtpguard::net

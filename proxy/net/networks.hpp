#pragma once
// Address lists from the configuration (load balancers allowed to send a
// PROXY header, networks trusted to relay) matched against a peer.
#include <vector>

#include "config.hpp"
#include "net/asio_fwd.hpp"

namespace smtpguard::net {

/// An IPv4-mapped IPv6 address (::ffff:192.0.2.1) as the IPv4 address it
/// carries; any other address as it is.
asio::ip::address unmapped(const asio::ip::address& address);

/// Whether `address` is in one of `networks`. An IPv4-mapped IPv6 address
/// counts as IPv4.
bool in_networks(const asio::ip::address& address, const std::vector<ip_network>& networks);

}  // namespace smtpguard::net

#include "net/networks.hpp"

#include <algorithm>
#include <array>

#include <asio/ip/address.hpp>

namespace smtpguard::net {

asio::ip::address unmapped(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  return address;
}

bool in_networks(const asio::ip::address& address, const std::vector<ip_network>& networks) {
  const asio::ip::address plain = unmapped(address);
  const bool v6 = plain.is_v6();
  std::array<unsigned char, 16> bytes{};
  if (v6) {
    bytes = plain.to_v6().to_bytes();
  } else {
    const auto v4 = plain.to_v4().to_bytes();
    std::copy(v4.begin(), v4.end(), bytes.begin());
  }
  return std::any_of(networks.begin(), networks.end(),
                     [&](const ip_network& network) { return network.contains(bytes.data(), v6); });
}

}  // namespace smtpguard::net

#include "net/networks.hpp"

#include <algorithm>
#include <array>

#include <asio/ip/address.hpp>

namespace smtpguard::net {

bool in_networks(const asio::ip::address& address, const std::vector<ip_network>& networks) {
  asio::ip::address plain = address;
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    plain = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
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

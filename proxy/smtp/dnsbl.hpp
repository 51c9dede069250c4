#pragma once
// DNS blocklists (RFC 5782): how a client address is asked about, and what
// an answer means.
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace smtpguard::smtp {

/// The name to look up: the address's octets (IPv4) or nibbles (IPv6),
/// least significant first, then the zone: 192.0.2.99 in "zen.example"
/// is "99.2.0.192.zen.example". `bytes` holds 4 or 16 octets.
std::string dnsbl_query_name(std::span<const std::uint8_t> bytes, std::string_view zone);

/// Whether an A record in a blocklist's answer lists the client. Only
/// 127.0.0.0/8 answers do (RFC 5782 section 2.1), and not 127.255.255.0/24:
/// large lists answer there to say they refuse the query (an open resolver,
/// or too many queries), which says nothing about the client.
bool dnsbl_listing(const std::array<std::uint8_t, 4>& answer);

}  // namespace smtpguard::smtp

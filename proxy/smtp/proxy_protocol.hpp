#pragma once
// HAProxy PROXY protocol headers, versions 1 (text) and 2 (binary):
// https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace smtpguard::smtp {

/// Longest v1 header, CRLF included (spec section 2.1).
inline constexpr std::size_t proxy_v1_max_size = 107;
/// Fixed part of a v2 header: signature, version/command, family, length.
inline constexpr std::size_t proxy_v2_fixed_size = 16;
/// TLV octets accepted after a v2 address block. Real senders put an ALPN,
/// an SNI, a unique id (at most 128) or a TLS summary there: a few hundred
/// octets. The spec allows 64 KiB, which an unauthenticated peer could make
/// us buffer; a longer header is bad.
inline constexpr std::size_t proxy_v2_max_tlv_size = 1024;
/// Longest header parse_proxy_header() can accept (v2 with an AF_UNIX block
/// and the most TLVs): a buffer of this size never ends in need_more.
inline constexpr std::size_t proxy_header_max_size = proxy_v2_fixed_size + 216 + proxy_v2_max_tlv_size;

enum class proxy_status { need_more, done, bad };

/// The addresses a header carried.
enum class proxy_family { none, ipv4, ipv6 };

/// A valid header. Source is the client, destination the address it connected to.
struct proxy_header {
  int version = 0;     ///< 1 or 2
  bool local = false;  ///< v2 LOCAL: the proxy's own connection (a health check)
  /// none for v1 UNKNOWN, v2 LOCAL and v2 PROXY over AF_UNSPEC, AF_UNIX or UDP:
  /// keep the socket's own addresses. A caller that filters by client
  /// address may refuse `none` unless `local`, as Postfix does.
  proxy_family family = proxy_family::none;
  std::string source_address;  ///< canonical inet_ntop() text; empty for none
  std::uint16_t source_port = 0;
  std::string destination_address;
  std::uint16_t destination_port = 0;

  bool has_addresses() const noexcept { return family != proxy_family::none; }
  bool operator==(const proxy_header&) const = default;
};

struct proxy_parse_result {
  proxy_status status = proxy_status::need_more;
  std::size_t consumed = 0;  ///< done: header length; the bytes after it are SMTP
  std::string_view reason;   ///< bad: short text for the log (static storage)
  proxy_header header;       ///< done only
};

/// Parses the header at the start of a connection. Pass every byte received
/// so far; after need_more, read more and call again with all of them (the
/// result depends on the bytes alone, and there are at most
/// proxy_header_max_size of them to look at). need_more also means every
/// byte passed belongs to the header. Bytes that cannot begin a
/// header are bad as soon as they arrive, so a client speaking SMTP first is
/// refused at its first byte. v2 CRC32C TLVs are verified; other TLVs are
/// checked for framing and skipped.
proxy_parse_result parse_proxy_header(std::string_view received);

/// "PROXY TCP4|TCP6 src dst sport dport\r\n". The addresses are IPv4 or IPv6
/// text; if one is IPv4 and the other IPv6, the IPv4 one is sent v4-mapped
/// (::ffff:a.b.c.d) so the client's address survives. An address that does
/// not parse (empty, a scope id, a unix socket path) gives "PROXY UNKNOWN\r\n".
std::string build_proxy_v1(std::string_view source_address, std::uint16_t source_port,
                           std::string_view destination_address, std::uint16_t destination_port);

/// The v2 equivalent, command PROXY over TCP, same address rules. Without a
/// valid address pair it is PROXY over AF_UNSPEC, never LOCAL: LOCAL would
/// tell the backend the connection is the proxy's own, and a backend that
/// trusts the proxy's address would extend that trust to an unknown client.
/// (Postfix refuses both address-less forms: the connection fails closed.)
std::string build_proxy_v2(std::string_view source_address, std::uint16_t source_port,
                           std::string_view destination_address, std::uint16_t destination_port);

}  // namespace smtpguard::smtp

#include "smtp/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

namespace smtpguard::smtp {
namespace {

constexpr std::string_view not_a_header = "not a PROXY protocol header";

constexpr std::string_view v1_prefix = "PROXY ";
constexpr std::string_view v1_unknown = "UNKNOWN";
// What may follow "PROXY ", then a space or the CRLF.
constexpr std::array<std::string_view, 3> v1_protocols{"TCP4", "TCP6", v1_unknown};

constexpr char v2_signature_octets[] = "\r\n\r\n\0\r\nQUIT\n";
constexpr std::string_view v2_signature{v2_signature_octets, sizeof v2_signature_octets - 1};
constexpr unsigned char v2_version = 0x20;
constexpr unsigned char v2_command_local = 0x0;
constexpr unsigned char v2_command_proxy = 0x1;
constexpr unsigned char v2_unspec = 0x00;
constexpr unsigned char v2_tcp4 = 0x11;
constexpr unsigned char v2_tcp6 = 0x21;
constexpr unsigned char v2_tlv_crc32c = 0x03;

proxy_parse_result need_more() { return {}; }

proxy_parse_result bad(std::string_view reason) {
  proxy_parse_result result;
  result.status = proxy_status::bad;
  result.reason = reason;
  return result;
}

proxy_parse_result done(int version, std::size_t consumed) {
  proxy_parse_result result;
  result.status = proxy_status::done;
  result.consumed = consumed;
  result.header.version = version;
  return result;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

unsigned char octet(std::string_view s, std::size_t i) { return static_cast<unsigned char>(s[i]); }

std::size_t read_u16(std::string_view s, std::size_t i) {
  return static_cast<std::size_t>(octet(s, i)) << 8 | octet(s, i + 1);
}

std::uint32_t read_u32(std::string_view s, std::size_t i) {
  return static_cast<std::uint32_t>(read_u16(s, i) << 16 | read_u16(s, i + 2));
}

void append_u16(std::string& out, std::size_t value) {
  out += static_cast<char>((value >> 8) & 0xff);
  out += static_cast<char>(value & 0xff);
}

// An address in network byte order; IPv4 uses the first four octets.
struct ip_address {
  int family = AF_UNSPEC;
  std::array<unsigned char, 16> octets{};
};

std::string format_ip(const ip_address& ip) {
  char text[INET6_ADDRSTRLEN];
  if (inet_ntop(ip.family, ip.octets.data(), text, sizeof text) == nullptr) return {};
  return text;
}

std::optional<ip_address> parse_ip(std::string_view text, int family) {
  char buffer[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof buffer || text.find('\0') != std::string_view::npos) return {};
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  ip_address ip;
  ip.family = family;
  if (inet_pton(family, buffer, ip.octets.data()) != 1) return {};
  // Spec 2.1 forbids leading zeros in IPv4 (octal lookalikes); not every
  // inet_pton refuses them, but none prints them.
  if (family == AF_INET && format_ip(ip) != text) return {};
  return ip;
}

std::optional<ip_address> parse_any_ip(std::string_view text) {
  if (auto ip = parse_ip(text, AF_INET)) return ip;
  return parse_ip(text, AF_INET6);
}

// Decimal 0-65535; spec 2.1 forbids leading zeros.
std::optional<std::uint16_t> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return {};
  std::uint32_t value = 0;
  for (const char c : text) {
    if (!is_digit(c)) return {};
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (value > 0xffff) return {};
  return static_cast<std::uint16_t>(value);
}

bool starts_like(std::string_view text, std::string_view expected) {
  const std::size_t n = std::min(text.size(), expected.size());
  return text.substr(0, n) == expected.substr(0, n);
}

// Rejects a v1 line (the bytes before its LF, so far) at the first octet that
// no valid header could have there, judging by the octets before it only: a
// partial line is refused only when every completion would be, for the same
// reason, so a peer's segmentation cannot change the verdict.
std::string_view v1_early_error(std::string_view line) {
  if (!starts_like(line, v1_prefix)) return not_a_header;
  line.remove_prefix(std::min(line.size(), v1_prefix.size()));
  const auto protocol = std::find_if(v1_protocols.begin(), v1_protocols.end(),
                                     [line](std::string_view p) { return starts_like(line, p); });
  if (protocol == v1_protocols.end()) return "v1 unknown protocol";
  if (line.size() <= protocol->size()) return {};
  const char separator = line[protocol->size()];
  if (separator != ' ' && separator != '\r') return "v1 unknown protocol";
  if (*protocol == v1_unknown) return {};
  const bool v6 = *protocol == "TCP6";
  for (const char c : line.substr(protocol->size() + 1)) {
    const bool allowed = is_digit(c) || c == ' ' || c == '\r' || c == '.' || (v6 && (is_hex(c) || c == ':'));
    if (!allowed) return "v1 invalid character";
  }
  return {};
}

// A whole v1 line, CRLF removed, that passed v1_early_error().
proxy_parse_result parse_v1_line(std::string_view text, std::size_t consumed) {
  text.remove_prefix(v1_prefix.size());
  if (text.starts_with(v1_unknown)) {
    // Spec 2.1: whatever follows UNKNOWN up to the CRLF is ignored.
    if (text.size() == v1_unknown.size() || text[v1_unknown.size()] == ' ') return done(1, consumed);
    return bad("v1 unknown protocol");
  }
  if (text == "TCP4" || text == "TCP6") return bad("v1 wrong number of fields");
  if (!text.starts_with("TCP4 ") && !text.starts_with("TCP6 ")) return bad("v1 unknown protocol");
  const bool v6 = text[3] == '6';
  text.remove_prefix(5);
  std::array<std::string_view, 4> fields;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const auto space = text.find(' ');
    if ((space == std::string_view::npos) != (i + 1 == fields.size()))
      return bad("v1 wrong number of fields");
    fields[i] = text.substr(0, space);
    if (space != std::string_view::npos) text.remove_prefix(space + 1);
  }
  const int family = v6 ? AF_INET6 : AF_INET;
  const auto source = parse_ip(fields[0], family);
  if (!source) return bad("v1 bad source address");
  const auto destination = parse_ip(fields[1], family);
  if (!destination) return bad("v1 bad destination address");
  const auto source_port = parse_port(fields[2]);
  if (!source_port) return bad("v1 bad source port");
  const auto destination_port = parse_port(fields[3]);
  if (!destination_port) return bad("v1 bad destination port");

  proxy_parse_result result = done(1, consumed);
  result.header.family = v6 ? proxy_family::ipv6 : proxy_family::ipv4;
  result.header.source_address = format_ip(*source);
  result.header.source_port = *source_port;
  result.header.destination_address = format_ip(*destination);
  result.header.destination_port = *destination_port;
  return result;
}

proxy_parse_result parse_v1(std::string_view received) {
  const std::string_view window = received.substr(0, proxy_v1_max_size);
  const auto lf = window.find('\n');
  const std::string_view line = window.substr(0, lf);
  if (const auto error = v1_early_error(line); !error.empty()) return bad(error);
  if (lf == std::string_view::npos)
    return window.size() < proxy_v1_max_size ? need_more() : bad("v1 header longer than 107 octets");
  // Spec 2.1: a lone LF must not end the line.
  if (line.empty() || line.back() != '\r') return bad("v1 header not ended by CRLF");
  return parse_v1_line(line.substr(0, line.size() - 1), lf + 1);
}

// Address block size for a v2 family/transport octet, none for the values
// spec 2.2 leaves unassigned (which receivers must reject).
std::optional<std::size_t> v2_address_size(unsigned char family) {
  switch (family) {
    case 0x00:
      return 0;
    case 0x11:
    case 0x12:
      return 12;
    case 0x21:
    case 0x22:
      return 36;
    case 0x31:
    case 0x32:
      return 216;
    default:
      return {};
  }
}

// CRC32C (RFC 4960 appendix B) of `header`, the four octets at `checksum`
// taken as zero, as the sender computed it (spec 2.2.3).
std::uint32_t crc32c(std::string_view header, std::size_t checksum) {
  std::uint32_t crc = 0xffffffffu;
  for (std::size_t i = 0; i < header.size(); ++i) {
    crc ^= (i >= checksum && i < checksum + 4) ? 0u : octet(header, i);
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// TLVs must fill the rest of the header exactly; the receiver that supports
// PP2_TYPE_CRC32C must drop a header whose checksum does not match.
std::string_view v2_tlv_error(std::string_view header, std::size_t offset) {
  while (offset < header.size()) {
    if (header.size() - offset < 3) return "v2 truncated TLV";
    const std::size_t length = read_u16(header, offset + 1);
    if (header.size() - offset - 3 < length) return "v2 truncated TLV";
    if (octet(header, offset) == v2_tlv_crc32c) {
      if (length != 4) return "v2 bad CRC32C TLV";
      if (crc32c(header, offset + 3) != read_u32(header, offset + 3)) return "v2 CRC32C mismatch";
    }
    offset += 3 + length;
  }
  return {};
}

ip_address v2_ip(std::string_view block, int family, std::size_t offset) {
  ip_address ip;
  ip.family = family;
  const std::size_t size = family == AF_INET ? 4 : 16;
  std::memcpy(ip.octets.data(), block.data() + offset, size);
  return ip;
}

// Each check runs as soon as its octets have arrived, in wire order, so a
// prefix is bad exactly as the whole header would be.
proxy_parse_result parse_v2(std::string_view received) {
  if (!starts_like(received, v2_signature)) return bad(not_a_header);
  if (received.size() <= 12) return need_more();
  const unsigned char version_command = octet(received, 12);
  if ((version_command & 0xf0) != v2_version) return bad("v2 unsupported version");
  const unsigned char command = version_command & 0x0f;
  if (command != v2_command_local && command != v2_command_proxy) return bad("v2 unknown command");
  if (received.size() <= 13) return need_more();
  const unsigned char family = octet(received, 13);
  const auto address_size = v2_address_size(family);
  if (!address_size) return bad("v2 unknown address family");
  if (received.size() < proxy_v2_fixed_size) return need_more();
  const std::size_t length = read_u16(received, 14);
  if (length > *address_size + proxy_v2_max_tlv_size) return bad("v2 header too long");
  const bool local = command == v2_command_local;
  if (!local && length < *address_size) return bad("v2 address block too short for its family");
  if (received.size() < proxy_v2_fixed_size + length) return need_more();

  const std::string_view header = received.substr(0, proxy_v2_fixed_size + length);
  proxy_parse_result result = done(2, header.size());
  result.header.local = local;
  // Spec 2.2: LOCAL discards the whole block, family included; where TLVs
  // would start is unknown then.
  if (local) return result;
  if (const auto error = v2_tlv_error(header, proxy_v2_fixed_size + *address_size); !error.empty())
    return bad(error);
  if (family == v2_tcp4 || family == v2_tcp6) {
    const int af = family == v2_tcp4 ? AF_INET : AF_INET6;
    const std::size_t ip_size = af == AF_INET ? 4 : 16;
    const std::string_view block = header.substr(proxy_v2_fixed_size);
    result.header.family = af == AF_INET ? proxy_family::ipv4 : proxy_family::ipv6;
    result.header.source_address = format_ip(v2_ip(block, af, 0));
    result.header.destination_address = format_ip(v2_ip(block, af, ip_size));
    result.header.source_port = static_cast<std::uint16_t>(read_u16(block, 2 * ip_size));
    result.header.destination_port = static_cast<std::uint16_t>(read_u16(block, 2 * ip_size + 2));
  }
  // Spec 2.2: a receiver falls back to UNSPEC for valid families it does not
  // support (UDP, AF_UNIX): it keeps the socket's own addresses.
  return result;
}

struct address_pair {
  ip_address source;
  ip_address destination;
};

// RFC 4291 section 2.5.5.2: ::ffff:a.b.c.d.
void map_to_ipv6(ip_address& ip) {
  std::array<unsigned char, 16> mapped{};
  mapped[10] = 0xff;
  mapped[11] = 0xff;
  std::copy_n(ip.octets.begin(), 4, mapped.begin() + 12);
  ip.octets = mapped;
  ip.family = AF_INET6;
}

// Both addresses in one family, as both header versions require.
std::optional<address_pair> same_family(std::string_view source, std::string_view destination) {
  auto s = parse_any_ip(source);
  auto d = parse_any_ip(destination);
  if (!s || !d) return {};
  if (s->family != d->family) map_to_ipv6(s->family == AF_INET ? *s : *d);
  return address_pair{*s, *d};
}

}  // namespace

proxy_parse_result parse_proxy_header(std::string_view received) {
  if (received.empty()) return need_more();
  if (received[0] == v1_prefix[0]) return parse_v1(received);
  return parse_v2(received);
}

std::string build_proxy_v1(std::string_view source_address, std::uint16_t source_port,
                           std::string_view destination_address, std::uint16_t destination_port) {
  const auto pair = same_family(source_address, destination_address);
  if (!pair) return "PROXY UNKNOWN\r\n";
  std::string out(v1_prefix);
  out += pair->source.family == AF_INET ? "TCP4 " : "TCP6 ";
  out += format_ip(pair->source);
  out += ' ';
  out += format_ip(pair->destination);
  out += ' ';
  out += std::to_string(source_port);
  out += ' ';
  out += std::to_string(destination_port);
  out += "\r\n";
  return out;
}

std::string build_proxy_v2(std::string_view source_address, std::uint16_t source_port,
                           std::string_view destination_address, std::uint16_t destination_port) {
  std::string out(v2_signature);
  out += static_cast<char>(v2_version | v2_command_proxy);
  const auto pair = same_family(source_address, destination_address);
  if (!pair) {
    out += static_cast<char>(v2_unspec);
    append_u16(out, 0);
    return out;
  }
  const bool v4 = pair->source.family == AF_INET;
  const std::size_t ip_size = v4 ? 4 : 16;
  out += static_cast<char>(v4 ? v2_tcp4 : v2_tcp6);
  append_u16(out, 2 * ip_size + 4);
  for (const ip_address* ip : {&pair->source, &pair->destination}) {
    for (std::size_t i = 0; i < ip_size; ++i) out += static_cast<char>(ip->octets[i]);
  }
  append_u16(out, source_port);
  append_u16(out, destination_port);
  return out;
}

}  // namespace smtpguard::smtp

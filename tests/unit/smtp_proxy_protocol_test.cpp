#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "smtp/proxy_protocol.hpp"

namespace smtpguard::smtp {
namespace {

using namespace std::string_literals;

const std::string v2_signature("\r\n\r\n\0\r\nQUIT\n", 12);

std::string from_hex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  return out;
}

// A v2 header: version/command, family, then `block` with its length.
std::string v2(unsigned char version_command, unsigned char family, const std::string& block) {
  std::string out = v2_signature;
  out += static_cast<char>(version_command);
  out += static_cast<char>(family);
  out += static_cast<char>(block.size() >> 8);
  out += static_cast<char>(block.size() & 0xff);
  return out + block;
}

// 192.0.2.1:52000 -> 198.51.100.7:25
const std::string ipv4_block = from_hex(
    "c0000201"
    "c6336407"
    "cb20"
    "0019");
// [2001:db8::1]:52000 -> [2001:db8::25]:587
const std::string ipv6_block = from_hex(
    "20010db8000000000000000000000001"
    "20010db8000000000000000000000025"
    "cb20"
    "024b");

proxy_header tcp(int version, proxy_family family, std::string source, std::uint16_t source_port,
                 std::string destination, std::uint16_t destination_port) {
  proxy_header h;
  h.version = version;
  h.family = family;
  h.source_address = std::move(source);
  h.source_port = source_port;
  h.destination_address = std::move(destination);
  h.destination_port = destination_port;
  return h;
}

proxy_header without_addresses(int version, bool local = false) {
  proxy_header h;
  h.version = version;
  h.local = local;
  return h;
}

// Parses `header` + SMTP: whole, then every prefix of the header one octet at
// a time, which must all ask for more.
proxy_parse_result parse_fed_bytewise(const std::string& header) {
  const std::string smtp = "EHLO client.example\r\n";
  const std::string wire = header + smtp;
  for (std::size_t i = 0; i < header.size(); ++i) {
    const auto partial = parse_proxy_header(std::string_view(wire).substr(0, i));
    EXPECT_EQ(partial.status, proxy_status::need_more) << "after " << i << " octets: " << partial.reason;
  }
  const auto exact = parse_proxy_header(header);
  const auto result = parse_proxy_header(wire);
  EXPECT_EQ(result.status, exact.status);
  EXPECT_EQ(result.consumed, exact.consumed);
  EXPECT_EQ(result.header, exact.header);
  if (result.status == proxy_status::done) {
    EXPECT_EQ(result.consumed, header.size());
    EXPECT_EQ(wire.substr(result.consumed), smtp);
  }
  return result;
}

void expect_done(const std::string& header, const proxy_header& expected) {
  SCOPED_TRACE(testing::PrintToString(header));
  const auto result = parse_fed_bytewise(header);
  ASSERT_EQ(result.status, proxy_status::done) << result.reason;
  EXPECT_EQ(result.header, expected);
  EXPECT_TRUE(result.reason.empty());
}

TEST(smtp_proxy_protocol, spec_v1_examples) {
  expect_done("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
              tcp(1, proxy_family::ipv4, "192.168.0.1", 56324, "192.168.0.11", 443));
  const std::string longest_tcp4 = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
  EXPECT_EQ(longest_tcp4.size(), 56u);
  expect_done(longest_tcp4, tcp(1, proxy_family::ipv4, "255.255.255.255", 65535, "255.255.255.255", 65535));
  const std::string all_f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string longest_tcp6 = "PROXY TCP6 " + all_f + " " + all_f + " 65535 65535\r\n";
  EXPECT_EQ(longest_tcp6.size(), 104u);
  expect_done(longest_tcp6, tcp(1, proxy_family::ipv6, all_f, 65535, all_f, 65535));
  expect_done("PROXY UNKNOWN\r\n", without_addresses(1));
  const std::string worst_case = "PROXY UNKNOWN " + all_f + " " + all_f + " 65535 65535\r\n";
  EXPECT_EQ(worst_case.size(), proxy_v1_max_size);
  expect_done(worst_case, without_addresses(1));

  // The spec's example in front of an HTTP request.
  const std::string request = "GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n";
  const auto result = parse_proxy_header("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n" + request);
  ASSERT_EQ(result.status, proxy_status::done);
  EXPECT_EQ(result.consumed, 47u);
}

TEST(smtp_proxy_protocol, v1_accepted_forms) {
  expect_done("PROXY TCP4 0.0.0.0 10.0.0.1 0 25\r\n",
              tcp(1, proxy_family::ipv4, "0.0.0.0", 0, "10.0.0.1", 25));
  // IPv6 comes back in canonical form.
  expect_done("PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:0db8::0025 1 65535\r\n",
              tcp(1, proxy_family::ipv6, "2001:db8::1", 1, "2001:db8::25", 65535));
  expect_done("PROXY TCP6 ::ffff:192.0.2.1 ::1 40000 25\r\n",
              tcp(1, proxy_family::ipv6, "::ffff:192.0.2.1", 40000, "::1", 25));
  // Spec 2.1: after UNKNOWN, anything up to the CRLF is ignored.
  expect_done("PROXY UNKNOWN whatever \x01 comes\r\n", without_addresses(1));
  expect_done("PROXY UNKNOWN \r\n", without_addresses(1));
}

TEST(smtp_proxy_protocol, spec_v2_signature_and_local) {
  // Spec 2.2: the 13 octets that identify version 2, here a LOCAL command.
  const std::string local = from_hex(
      "0d0a0d0a000d0a515549540a20"
      "00"
      "0000");
  expect_done(local, without_addresses(2, true));
  // LOCAL ignores the block, family included, and anything after the addresses.
  expect_done(v2(0x20, 0x11, ipv4_block), without_addresses(2, true));
  expect_done(v2(0x20, 0x21, "\xff\xff"s), without_addresses(2, true));
  expect_done(v2(0x20, 0x31, ""), without_addresses(2, true));
}

TEST(smtp_proxy_protocol, v2_addresses) {
  expect_done(v2(0x21, 0x11, ipv4_block), tcp(2, proxy_family::ipv4, "192.0.2.1", 52000, "198.51.100.7", 25));
  expect_done(v2(0x21, 0x21, ipv6_block),
              tcp(2, proxy_family::ipv6, "2001:db8::1", 52000, "2001:db8::25", 587));
}

TEST(smtp_proxy_protocol, v2_without_tcp_addresses) {
  // Spec 2.2: valid families a receiver does not support fall back to UNSPEC,
  // keeping the socket's addresses.
  expect_done(v2(0x21, 0x00, ""), without_addresses(2));
  expect_done(v2(0x21, 0x00, "\x04\x00\x01x"s), without_addresses(2));
  expect_done(v2(0x21, 0x12, ipv4_block), without_addresses(2));
  expect_done(v2(0x21, 0x22, ipv6_block), without_addresses(2));
  expect_done(v2(0x21, 0x31, std::string(216, 'u')), without_addresses(2));
  expect_done(v2(0x21, 0x32, std::string(216, '\0')), without_addresses(2));
}

TEST(smtp_proxy_protocol, v2_tlvs_skipped) {
  const proxy_header expected = tcp(2, proxy_family::ipv4, "192.0.2.1", 52000, "198.51.100.7", 25);
  const std::string alpn = "\x01\x00\x04smtp"s;
  const std::string noop = "\x04\x00\x00"s;
  const std::string ssl = "\x20\x00\x0e\x01\x00\x00\x00\x00\x21\x00\x06TLSv13"s;
  const std::string unique_id = "\x05\x00\x80"s + std::string(128, 'i');
  expect_done(v2(0x21, 0x11, ipv4_block + alpn + noop + ssl + unique_id), expected);
  // The most TLV octets accepted: one NOOP filling the limit.
  const std::string padding = "\x04"s + from_hex("03fd") + std::string(proxy_v2_max_tlv_size - 3, 'p');
  const std::string largest = v2(0x21, 0x11, ipv4_block + padding);
  expect_done(largest, expected);
  EXPECT_EQ(parse_proxy_header(v2(0x21, 0x31, std::string(216, 'u') + padding)).consumed,
            proxy_header_max_size);
  expect_done(v2(0x21, 0x21, ipv6_block + alpn),
              tcp(2, proxy_family::ipv6, "2001:db8::1", 52000, "2001:db8::25", 587));
}

TEST(smtp_proxy_protocol, v2_crc32c) {
  // Checksum computed independently (CRC32C of the header with the field zeroed).
  const std::string signed_header = from_hex(
      "0d0a0d0a000d0a515549540a21110020c0000201c6336407cb20001902000a6d782e6578616d706c6503000422e3b34d");
  expect_done(signed_header, tcp(2, proxy_family::ipv4, "192.0.2.1", 52000, "198.51.100.7", 25));
  std::string corrupted = signed_header;
  corrupted.back() = static_cast<char>(corrupted.back() ^ 1);
  EXPECT_EQ(parse_proxy_header(corrupted).reason, "v2 CRC32C mismatch");
  corrupted = signed_header;
  corrupted[32] = 'M';  // inside the AUTHORITY value
  EXPECT_EQ(parse_proxy_header(corrupted).reason, "v2 CRC32C mismatch");
  EXPECT_EQ(parse_proxy_header(v2(0x21, 0x11, ipv4_block + "\x03\x00\x02\x00\x00"s)).reason,
            "v2 bad CRC32C TLV");
}

TEST(smtp_proxy_protocol, round_trips) {
  struct endpoint_pair {
    std::string source;
    std::uint16_t source_port;
    std::string destination;
    std::uint16_t destination_port;
    proxy_family family;
  };
  const std::vector<endpoint_pair> cases{
      {"192.0.2.1", 52000, "198.51.100.7", 25, proxy_family::ipv4},
      {"0.0.0.0", 0, "255.255.255.255", 65535, proxy_family::ipv4},
      {"2001:db8::1", 40000, "2001:db8::25", 587, proxy_family::ipv6},
      {"::", 1, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 465, proxy_family::ipv6},
      {"::ffff:192.0.2.1", 1024, "::ffff:198.51.100.7", 25, proxy_family::ipv6},
  };
  for (const auto& c : cases) {
    const proxy_header v1_expected =
        tcp(1, c.family, c.source, c.source_port, c.destination, c.destination_port);
    proxy_header v2_expected = v1_expected;
    v2_expected.version = 2;
    expect_done(build_proxy_v1(c.source, c.source_port, c.destination, c.destination_port), v1_expected);
    expect_done(build_proxy_v2(c.source, c.source_port, c.destination, c.destination_port), v2_expected);
  }
}

TEST(smtp_proxy_protocol, builders) {
  EXPECT_EQ(build_proxy_v1("192.0.2.1", 52000, "198.51.100.7", 25),
            "PROXY TCP4 192.0.2.1 198.51.100.7 52000 25\r\n");
  EXPECT_EQ(build_proxy_v2("192.0.2.1", 52000, "198.51.100.7", 25), v2(0x21, 0x11, ipv4_block));
  EXPECT_EQ(build_proxy_v2("2001:db8::1", 52000, "2001:db8::25", 587), v2(0x21, 0x21, ipv6_block));
  // Canonical text whatever the input spelling.
  EXPECT_EQ(build_proxy_v1("2001:DB8:0::1", 1, "::1", 2), "PROXY TCP6 2001:db8::1 ::1 1 2\r\n");
  // Mixed families: the IPv4 address is sent v4-mapped.
  EXPECT_EQ(build_proxy_v1("192.0.2.1", 1, "2001:db8::25", 2),
            "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::25 1 2\r\n");
  EXPECT_EQ(build_proxy_v1("2001:db8::1", 1, "198.51.100.7", 2),
            "PROXY TCP6 2001:db8::1 ::ffff:198.51.100.7 1 2\r\n");
  expect_done(build_proxy_v2("192.0.2.1", 1, "2001:db8::25", 2),
              tcp(2, proxy_family::ipv6, "::ffff:192.0.2.1", 1, "2001:db8::25", 2));
  // No valid pair: the address-less PROXY form, never LOCAL.
  for (const std::string bad :
       {"", "fe80::1%eth0", "/run/smtpguard.sock", "01.2.3.4", "example.com", "1.2.3"}) {
    EXPECT_EQ(build_proxy_v1(bad, 1, "192.0.2.1", 2), "PROXY UNKNOWN\r\n") << bad;
    EXPECT_EQ(build_proxy_v2("192.0.2.1", 1, bad, 2), v2(0x21, 0x00, "")) << bad;
  }
  expect_done(build_proxy_v2("", 0, "", 0), without_addresses(2));
}

struct bad_case {
  std::string input;
  std::string_view reason;
};

TEST(smtp_proxy_protocol, bad_inputs) {
  const std::string long_unknown = "PROXY UNKNOWN " + std::string(92, 'x') + "\r\n";
  ASSERT_EQ(long_unknown.size(), proxy_v1_max_size + 1);
  const std::vector<bad_case> cases{
      // Neither signature.
      {"EHLO client.example\r\n", "not a PROXY protocol header"},
      {"GET / HTTP/1.1\r\n", "not a PROXY protocol header"},
      {"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol header"},
      {"PROXY\r\n", "not a PROXY protocol header"},
      {"PROXYTCP4", "not a PROXY protocol header"},
      {"\r\nEHLO x\r\n", "not a PROXY protocol header"},
      {"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x00"s, "not a PROXY protocol header"},
      {"\x16\x03\x01\x02\x00"s, "not a PROXY protocol header"},
      // v1 syntax.
      {"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "v1 unknown protocol"},
      {"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "v1 unknown protocol"},
      {"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "v1 unknown protocol"},
      {"PROXY UNKNOWNX\r\n", "v1 unknown protocol"},
      {"PROXY UNKNOWN\r\r\n", "v1 unknown protocol"},
      {"PROXY \r\n", "v1 unknown protocol"},
      {"PROXY TCP4\r\n", "v1 wrong number of fields"},
      {"PROXY TCP4 \r\n", "v1 wrong number of fields"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "v1 wrong number of fields"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "v1 wrong number of fields"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1 wrong number of fields"},
      {"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "v1 wrong number of fields"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1 header not ended by CRLF"},
      {"PROXY UNKNOWN\n", "v1 header not ended by CRLF"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "v1 bad destination port"},
      {long_unknown, "v1 header longer than 107 octets"},
      {"PROXY TCP6 " + std::string(100, ':'), "v1 header longer than 107 octets"},
      // v1 addresses.
      {"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "v1 bad source address"},
      {"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "v1 bad source address"},
      {"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", "v1 bad source address"},
      {"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "v1 bad source address"},
      {"PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n", "v1 bad destination address"},
      {"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "v1 invalid character"},
      {"PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n", "v1 invalid character"},
      {"PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n", "v1 invalid character"},
      {"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "v1 bad source address"},
      {"PROXY TCP6 ::1 1::2::3 1 2\r\n", "v1 bad destination address"},
      {"PROXY TCP6 ::1 12345::1 1 2\r\n", "v1 bad destination address"},
      {"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "v1 invalid character"},
      {"PROXY TCP6 gggg::1 ::1 1 2\r\n", "v1 invalid character"},
      // v1 ports.
      {"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "v1 bad source port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", "v1 bad source port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n", "v1 bad source port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 0123 2\r\n", "v1 bad source port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", "v1 bad source port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 025\r\n", "v1 bad destination port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "v1 invalid character"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "v1 invalid character"},
      {"PROXY TCP6 ::1 ::2 1 a\r\n", "v1 bad destination port"},
      // v2 fixed header.
      {v2(0x11, 0x11, ipv4_block), "v2 unsupported version"},
      {v2(0x31, 0x11, ipv4_block), "v2 unsupported version"},
      {v2(0x22, 0x11, ipv4_block), "v2 unknown command"},
      {v2(0x2f, 0x11, ipv4_block), "v2 unknown command"},
      {v2(0x21, 0x13, ipv4_block), "v2 unknown address family"},
      {v2(0x21, 0x10, ipv4_block), "v2 unknown address family"},
      {v2(0x21, 0x41, ipv4_block), "v2 unknown address family"},
      {v2(0x20, 0x41, ""), "v2 unknown address family"},
      // v2 lengths: the address block too short for its family, or too long.
      {v2(0x21, 0x11, ipv4_block.substr(0, 11)), "v2 address block too short for its family"},
      {v2(0x21, 0x21, ipv4_block), "v2 address block too short for its family"},
      {v2(0x21, 0x12, ""), "v2 address block too short for its family"},
      {v2(0x21, 0x31, std::string(215, 'u')), "v2 address block too short for its family"},
      {v2(0x21, 0x11, ipv4_block + std::string(proxy_v2_max_tlv_size + 1, '\x04')), "v2 header too long"},
      {v2(0x21, 0x00, std::string(proxy_v2_max_tlv_size + 1, '\x04')), "v2 header too long"},
      {v2_signature + "\x21\x11\xff\xff"s, "v2 header too long"},
      // v2 TLV framing.
      {v2(0x21, 0x11, ipv4_block + "\x04"s), "v2 truncated TLV"},
      {v2(0x21, 0x11, ipv4_block + "\x04\x00"s), "v2 truncated TLV"},
      {v2(0x21, 0x11, ipv4_block + "\x01\x00\x05smtp"s), "v2 truncated TLV"},
      {v2(0x21, 0x00, "\x01\x00\x05smtp"s), "v2 truncated TLV"},
  };
  for (const auto& c : cases) {
    const auto result = parse_proxy_header(c.input + "EHLO x\r\n");
    EXPECT_EQ(result.status, proxy_status::bad) << testing::PrintToString(c.input);
    EXPECT_EQ(result.reason, c.reason) << testing::PrintToString(c.input);
    EXPECT_EQ(result.consumed, 0u);
    // Split anywhere, the verdict is the same or still pending.
    for (std::size_t i = 0; i <= c.input.size(); ++i) {
      const auto partial = parse_proxy_header(std::string_view(c.input).substr(0, i));
      if (partial.status == proxy_status::need_more) continue;
      EXPECT_EQ(partial.status, proxy_status::bad) << i << ": " << testing::PrintToString(c.input);
      EXPECT_EQ(partial.reason, c.reason) << i << ": " << testing::PrintToString(c.input);
    }
  }
}

TEST(smtp_proxy_protocol, rejects_as_soon_as_it_can_tell) {
  EXPECT_EQ(parse_proxy_header("").status, proxy_status::need_more);
  // A client that speaks first is refused at its first octet.
  EXPECT_EQ(parse_proxy_header("E").status, proxy_status::bad);
  EXPECT_EQ(parse_proxy_header("P").status, proxy_status::need_more);
  EXPECT_EQ(parse_proxy_header("PROXY").status, proxy_status::need_more);
  EXPECT_EQ(parse_proxy_header("PROXY-").status, proxy_status::bad);
  EXPECT_EQ(parse_proxy_header("PROXY TCP4 1.2.3.4x").status, proxy_status::bad);
  EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN-").status, proxy_status::bad);
  EXPECT_EQ(parse_proxy_header("\r").status, proxy_status::need_more);
  EXPECT_EQ(parse_proxy_header("\r\n").status, proxy_status::need_more);
  EXPECT_EQ(parse_proxy_header("\r\nE").status, proxy_status::bad);
  EXPECT_EQ(parse_proxy_header(v2_signature + "\x11").status, proxy_status::bad);
  EXPECT_EQ(parse_proxy_header(v2_signature + "\x21\x41").status, proxy_status::bad);
  EXPECT_EQ(parse_proxy_header(v2_signature + "\x21\x11\x00"s).status, proxy_status::need_more);
  // A header still arriving is not an error: only its declared length ends it.
  const std::string header = v2(0x21, 0x21, ipv6_block);
  EXPECT_EQ(parse_proxy_header(header.substr(0, header.size() - 1)).status, proxy_status::need_more);
  const std::string line = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r";
  EXPECT_EQ(parse_proxy_header(line).status, proxy_status::need_more);
  EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN " + std::string(92, 'x')).status, proxy_status::need_more);
  EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN " + std::string(93, 'x')).status, proxy_status::bad);
}

}  // namespace
}  // namespace smtpguard::smtp

// The PROXY protocol header parser and builders.
// Input: [chunk seed] first bytes of a connection...
// A load balancer's segments may end anywhere, and the caller reads exactly
// the header off the socket and hands the rest to SMTP, so: the verdict must
// not depend on where reads end, need_more must mean every byte seen is
// header, and a parsed header must come back unchanged from the builders.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "smtp/proxy_protocol.hpp"

namespace {

namespace smtp = smtpguard::smtp;
using smtp::proxy_family;
using smtp::proxy_parse_result;
using smtp::proxy_status;

bool same(const proxy_parse_result& a, const proxy_parse_result& b) {
  return a.status == b.status && a.consumed == b.consumed && a.reason == b.reason && a.header == b.header;
}

void check_shape(const proxy_parse_result& r, std::size_t size) {
  FUZZ_CHECK(r.consumed <= size);
  switch (r.status) {
    case proxy_status::need_more:
      FUZZ_CHECK(r.consumed == 0 && r.reason.empty());
      // The buffer the caller sizes with this constant always gets an answer.
      FUZZ_CHECK(size < smtp::proxy_header_max_size);
      break;
    case proxy_status::bad:
      FUZZ_CHECK(r.consumed == 0 && !r.reason.empty());
      break;
    case proxy_status::done: {
      const auto& h = r.header;
      FUZZ_CHECK(r.reason.empty() && r.consumed > 0 && r.consumed <= smtp::proxy_header_max_size);
      FUZZ_CHECK(h.version == 1 || h.version == 2);
      FUZZ_CHECK(h.version == 2 || r.consumed <= smtp::proxy_v1_max_size);
      FUZZ_CHECK(h.version == 1 || r.consumed >= smtp::proxy_v2_fixed_size);
      FUZZ_CHECK(!h.local || (h.version == 2 && !h.has_addresses()));
      if (!h.has_addresses()) {
        FUZZ_CHECK(h.source_address.empty() && h.destination_address.empty());
        FUZZ_CHECK(h.source_port == 0 && h.destination_port == 0);
      } else {
        FUZZ_CHECK(!h.source_address.empty() && !h.destination_address.empty());
      }
      break;
    }
  }
}

// Parsing what a builder made gives the same addresses back, in full.
void check_rebuilt(const std::string& wire, const smtp::proxy_header& expected, int version) {
  const proxy_parse_result again = smtp::parse_proxy_header(wire);
  FUZZ_CHECK(again.status == proxy_status::done);
  FUZZ_CHECK(again.consumed == wire.size());
  smtp::proxy_header want = expected;
  want.version = version;
  FUZZ_CHECK(again.header == want);
}

void check_done(std::string_view input, const proxy_parse_result& r) {
  const std::string_view header = input.substr(0, r.consumed);
  // The header delimits itself: what follows it plays no part.
  FUZZ_CHECK(same(smtp::parse_proxy_header(header), r));
  FUZZ_CHECK(same(smtp::parse_proxy_header(std::string(header) + "EHLO x\r\n"), r));

  const auto& h = r.header;
  if (!h.has_addresses()) return;
  const std::string v1 =
      smtp::build_proxy_v1(h.source_address, h.source_port, h.destination_address, h.destination_port);
  const std::string v2 =
      smtp::build_proxy_v2(h.source_address, h.source_port, h.destination_address, h.destination_port);
  check_rebuilt(v1, h, 1);
  check_rebuilt(v2, h, 2);
  // Canonical inputs rebuild octet for octet: IPv4 text has one spelling, and
  // a v2 header without TLVs has no freedom at all.
  if (h.version == 1 && h.family == proxy_family::ipv4) FUZZ_CHECK(v1 == header);
  const std::size_t v2_tcp_size = smtp::proxy_v2_fixed_size + (h.family == proxy_family::ipv4 ? 12 : 36);
  if (h.version == 2 && header.size() == v2_tcp_size) FUZZ_CHECK(v2 == header);
}

// Reads arrive in segments; each time, the caller parses all it has so far.
void check_segmented(std::string_view input, const proxy_parse_result& whole, std::uint8_t seed) {
  smtpguard::fuzz::chunker chunks(seed);
  std::size_t have = 0;
  while (have < input.size()) {
    have = std::min(input.size(), have + chunks.next());
    const proxy_parse_result r = smtp::parse_proxy_header(input.substr(0, have));
    check_shape(r, have);
    if (r.status != proxy_status::need_more) {
      FUZZ_CHECK(same(r, whole));
      return;
    }
    // need_more: every byte so far is header, so the caller may take them all off the socket.
    FUZZ_CHECK(whole.status != proxy_status::done || whole.consumed >= have);
  }
  FUZZ_CHECK(whole.status == proxy_status::need_more);
}

// Whatever text the caller passes, the builders emit a header that parses whole.
void check_builders(std::string_view input) {
  const auto space = input.find(' ');
  const std::string_view source = input.substr(0, space);
  const std::string_view destination =
      space == std::string_view::npos ? std::string_view{} : input.substr(space + 1, 64);
  for (const std::string& wire : {smtp::build_proxy_v1(source, 25, destination, 587),
                                  smtp::build_proxy_v2(source, 0, destination, 65535)}) {
    const proxy_parse_result r = smtp::parse_proxy_header(wire);
    FUZZ_CHECK(r.status == proxy_status::done && r.consumed == wire.size() && !r.header.local);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t seed = data[0];
  const std::string_view input = smtpguard::fuzz::as_view(data + 1, size - 1);

  const proxy_parse_result whole = smtp::parse_proxy_header(input);
  check_shape(whole, input.size());
  if (whole.status == proxy_status::done) check_done(input, whole);
  check_segmented(input, whole, seed);
  if (input.size() <= 128) check_builders(input);
  return 0;
}

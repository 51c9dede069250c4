// EHLO reply handling. Input: [offer bits] backend EHLO reply text lines,
// the first one doubling as the client's EHLO argument.
// Whatever the backend announces, the reply smtpguard builds for the client
// must be one well-formed 250 reply that advertises only what smtpguard
// implements, and the client's name must not be able to add lines to it.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "smtp/capabilities.hpp"
#include "smtp/chars.hpp"
#include "smtp/reply.hpp"

namespace {

namespace smtp = smtpguard::smtp;

bool has_keyword(const smtp::reply& r, std::string_view keyword) {
  return std::any_of(r.lines.begin() + 1, r.lines.end(), [&](const std::string& line) {
    return smtp::iequals(std::string_view(line).substr(0, line.find(' ')), keyword);
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t bits = data[0];
  const auto lines = smtpguard::fuzz::split_lines(smtpguard::fuzz::as_view(data + 1, size - 1));

  // parse_ehlo sees only replies the strict parser accepted, but it must not
  // rely on that: build the reply directly from arbitrary text too.
  smtp::reply backend_reply{250, {}};
  for (const auto line : lines) backend_reply.lines.emplace_back(line);
  const smtp::capabilities caps = smtp::parse_ehlo(backend_reply);
  for (const auto& m : caps.auth_mechanisms) {
    FUZZ_CHECK(!m.empty() && m == smtp::to_upper(m) && m.find(' ') == std::string::npos);
    FUZZ_CHECK(std::count(caps.auth_mechanisms.begin(), caps.auth_mechanisms.end(), m) == 1);
  }
  if (!caps.size) FUZZ_CHECK(caps.size_limit == 0);

  smtp::ehlo_offer offer;
  offer.hostname = "mx.example.test";
  offer.client_name = lines.empty() ? std::string_view{} : lines.front();
  offer.starttls = bits & 0x01;
  if (bits & 0x02) offer.auth_mechanisms = {"PLAIN", "LOGIN", "CRAM-MD5"};
  static constexpr std::uint64_t sizes[] = {0, 1, 10485760, UINT64_MAX};
  offer.max_message_size = sizes[(bits >> 2) & 0x3];

  const smtp::reply ours = smtp::build_ehlo_reply(caps, offer);
  FUZZ_CHECK(ours.code == 250 && ours.lines.size() >= 2);

  // The client sees exactly this many lines, each a valid reply line. The
  // greeting echoes the EHLO argument, whose length the command line limit
  // bounds, so line length is not what is checked here.
  const std::string wire = ours.serialize();
  smtp::reply_parser parser(128, wire.size());
  smtp::reply_parser::status status = smtp::reply_parser::status::need_more;
  std::string_view rest = wire;
  while (!rest.empty()) {
    FUZZ_CHECK(status == smtp::reply_parser::status::need_more);
    const auto end = rest.find("\r\n");
    const std::string_view line = rest.substr(0, end);
    FUZZ_CHECK(line.find_first_of("\r\n") == std::string_view::npos);
    status = parser.feed(line);
    rest.remove_prefix(end + 2);
  }
  FUZZ_CHECK(status == smtp::reply_parser::status::done);
  const smtp::reply relayed = parser.take();
  FUZZ_CHECK(relayed.lines == ours.lines);
  FUZZ_CHECK(ours.lines.front().starts_with("mx.example.test Hello"));

  // Never offer what smtpguard does not implement itself, nor the backend's
  // own AUTH and STARTTLS.
  FUZZ_CHECK(!has_keyword(ours, "CHUNKING") && !has_keyword(ours, "XCLIENT") && !has_keyword(ours, "BDAT"));
  FUZZ_CHECK(has_keyword(ours, "STARTTLS") == offer.starttls);
  FUZZ_CHECK(has_keyword(ours, "AUTH") == !offer.auth_mechanisms.empty());

  // What we offer reads back as what we meant.
  const smtp::capabilities offered = smtp::parse_ehlo(ours);
  FUZZ_CHECK(offered.pipelining && offered.enhanced_status_codes && offered.size);
  FUZZ_CHECK(offered.eightbitmime == caps.eightbitmime && offered.smtputf8 == caps.smtputf8 &&
             offered.dsn == caps.dsn);
  FUZZ_CHECK(!offered.chunking && !offered.xclient && offered.starttls == offer.starttls);
  FUZZ_CHECK(offered.auth_mechanisms.size() == offer.auth_mechanisms.size());
  const std::uint64_t theirs = caps.size_limit;
  const std::uint64_t limit = offer.max_message_size;
  if (limit != 0 && theirs != 0) FUZZ_CHECK(offered.size_limit == std::min(limit, theirs));
  else FUZZ_CHECK(offered.size_limit == std::max(limit, theirs));
  return 0;
}

// The strict backend reply parser. Input: backend bytes, split at LF.
// smtpguard relays replies it parsed, so whatever the parser accepts must
// serialize to wire text that parses back to the same reply; the same holds
// after ensure_enhanced_codes, which rewrites replies for clients.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "smtp/reply.hpp"

namespace {

namespace smtp = smtpguard::smtp;
using status = smtp::reply_parser::status;

constexpr std::size_t max_lines = 128;
constexpr std::size_t max_line_length = 2048;

// Feeds the wire form line by line; the reply must end exactly at its last line.
smtp::reply reparse(const std::string& wire, std::size_t line_length) {
  FUZZ_CHECK(wire.ends_with("\r\n"));
  smtp::reply_parser parser(max_lines, line_length);
  std::string_view rest = wire;
  status s = status::need_more;
  while (!rest.empty()) {
    FUZZ_CHECK(s == status::need_more);
    const auto end = rest.find("\r\n");
    FUZZ_CHECK(end != std::string_view::npos);
    const std::string_view line = rest.substr(0, end);
    FUZZ_CHECK(line.find_first_of("\r\n") == std::string_view::npos);
    s = parser.feed(line);
    rest.remove_prefix(end + 2);
  }
  FUZZ_CHECK(s == status::done);
  return parser.take();
}

void check_reply(const smtp::reply& r) {
  FUZZ_CHECK(r.code >= 200 && r.code <= 599);
  FUZZ_CHECK(r.lines.size() <= max_lines);

  const std::string wire = r.serialize();
  std::string appended = "x";
  r.append_to(appended);
  FUZZ_CHECK(appended == "x" + wire);
  const smtp::reply again = reparse(wire, max_line_length);
  FUZZ_CHECK(again.code == r.code && again.lines == r.lines);

  const std::string_view enhanced = r.enhanced_code();
  if (!enhanced.empty()) {
    FUZZ_CHECK(r.lines.front().starts_with(enhanced));
    FUZZ_CHECK(enhanced.front() == static_cast<char>('0' + r.reply_class()));
  }

  smtp::reply rewritten = r;
  smtp::ensure_enhanced_codes(rewritten);
  FUZZ_CHECK(rewritten.code == r.code);
  // "C.0.0 " is at most six octets longer per line.
  const smtp::reply rewritten_again = reparse(rewritten.serialize(), max_line_length + 6);
  FUZZ_CHECK(rewritten_again.lines == rewritten.lines);
  const int reply_class = r.reply_class();
  if (reply_class == 2 || reply_class == 4 || reply_class == 5) {
    FUZZ_CHECK(rewritten.lines.size() == std::max<std::size_t>(r.lines.size(), 1));
    for (const auto& line : rewritten.lines) {
      const smtp::reply single{r.code, {line}};
      FUZZ_CHECK(!single.enhanced_code().empty());
    }
    // Idempotent: codes are never stacked.
    smtp::reply twice = rewritten;
    smtp::ensure_enhanced_codes(twice);
    FUZZ_CHECK(twice.lines == rewritten.lines);
  } else {
    FUZZ_CHECK(rewritten.lines == r.lines);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  smtp::reply_parser parser(max_lines, max_line_length);
  for (const std::string_view line : smtpguard::fuzz::split_lines(smtpguard::fuzz::as_view(data, size))) {
    switch (parser.feed(line)) {
      case status::need_more:
        break;
      case status::done:
        check_reply(parser.take());
        break;
      case status::bad:
        // A bad reply poisons the parser until reset: the session drops the backend.
        FUZZ_CHECK(parser.feed("250 OK") == status::bad);
        parser.reset();
        break;
    }
  }
  return 0;
}

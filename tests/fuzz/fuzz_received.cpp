// The Received: header, the one place client text goes into the message.
// Input: [time selector] then, separated by 0x1f, the EHLO argument, the
// authenticated user, the client certificate subject and a RCPT argument.
// However hostile those are, the result must be one header: CRLF-terminated
// folded lines, no way to end it early or start another header.
#include <cstdint>
#include <ctime>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "smtp/command.hpp"
#include "smtp/received.hpp"

namespace {

namespace smtp = smtpguard::smtp;

std::vector<std::string_view> fields(std::string_view text, std::size_t count) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < count) {
    const auto sep = text.find('\x1f');
    if (sep == std::string_view::npos) break;
    out.push_back(text.substr(0, sep));
    text.remove_prefix(sep + 1);
  }
  out.push_back(text);
  out.resize(count);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static constexpr std::time_t times[] = {0, 1795000000, -1, std::numeric_limits<std::time_t>::max(),
                                          std::numeric_limits<std::time_t>::min(), 253402300799};
  const auto parts = fields(smtpguard::fuzz::as_view(data + 1, size - 1), 4);

  smtp::received_info info;
  // The session keeps at most 255 octets of the EHLO argument.
  info.helo = parts[0].substr(0, 255);
  info.user = parts[1];
  info.client_certificate = parts[2];
  // Only a recipient the RCPT grammar accepted gets here.
  const auto rcpt = smtp::parse_rcpt_to(parts[3]);
  if (rcpt) info.recipient = rcpt->mailbox;
  info.client_ip = data[0] & 0x80 ? "2001:db8::1" : "192.0.2.1";
  info.by_host = "mx.example.test";
  info.protocol = "ESMTPSA";
  info.id = "3f2a9c";
  if (data[0] & 0x40) {
    info.tls_version = "TLSv1.3";
    info.tls_cipher = "TLS_AES_128_GCM_SHA256";
  }
  info.when = times[(data[0] & 0x3f) % std::size(times)];

  const std::string header = smtp::build_received_header(info);
  FUZZ_CHECK(header.starts_with("Received: from ") && header.ends_with("\r\n"));
  std::string_view rest = header;
  bool first = true;
  while (!rest.empty()) {
    const auto end = rest.find("\r\n");
    FUZZ_CHECK(end != std::string_view::npos);
    const std::string_view line = rest.substr(0, end);
    rest.remove_prefix(end + 2);
    // Continuation lines start with whitespace (RFC 5322 folding); anything
    // else would be a new header field the client wrote.
    if (!first) FUZZ_CHECK(line.starts_with('\t') && line.size() > 1);
    for (std::size_t i = first ? 0 : 1; i < line.size(); ++i) {
      const auto c = static_cast<unsigned char>(line[i]);
      FUZZ_CHECK(c >= 0x20 && c != 0x7f);
    }
    first = false;
  }

  // The EHLO name is one atom: no comment, quoting, separator or space to
  // change how the rest of the header reads.
  const std::string_view after_from = std::string_view(header).substr(15);
  const std::string_view helo = after_from.substr(0, after_from.find(" (["));
  FUZZ_CHECK(!helo.empty() && helo.size() <= 255);
  for (const char ch : helo) {
    const auto c = static_cast<unsigned char>(ch);
    FUZZ_CHECK(c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '\\' && c != ';');
  }
  return 0;
}

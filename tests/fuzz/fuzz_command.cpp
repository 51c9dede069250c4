// Command line parsing, the MAIL/RCPT path grammar and the command table.
// Input: [state bits] one command line (no CRLF).
// What smtpguard forwards is format_*(parse_*(client text)); the backend
// must understand exactly what was checked, so the canonical form has to
// parse back to the same mailbox and parameters, and be a fixed point.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "smtp/command.hpp"
#include "smtp/dialogue.hpp"
#include "smtp/reply.hpp"

namespace {

namespace smtp = smtpguard::smtp;

bool same_path(const smtp::path_argument& a, const smtp::path_argument& b) {
  if (a.mailbox != b.mailbox || a.has_8bit != b.has_8bit || a.parameters.size() != b.parameters.size())
    return false;
  for (std::size_t i = 0; i < a.parameters.size(); ++i) {
    const auto& x = a.parameters[i];
    const auto& y = b.parameters[i];
    if (x.keyword != y.keyword || x.value != y.value || x.has_value != y.has_value) return false;
  }
  return true;
}

void check_command(std::string_view line, const smtp::command& cmd) {
  FUZZ_CHECK(line.starts_with(cmd.keyword));
  FUZZ_CHECK(cmd.keyword.find(' ') == std::string_view::npos);
  if (!cmd.argument.empty()) {
    FUZZ_CHECK(cmd.argument.front() != ' ' && cmd.argument.back() != ' ');
    // The argument is a view into the line, after the keyword.
    const auto offset = static_cast<std::size_t>(cmd.argument.data() - line.data());
    FUZZ_CHECK(offset > cmd.keyword.size() && offset + cmd.argument.size() <= line.size());
  }
}

void check_path(const smtp::path_argument& path, bool mail) {
  for (const char c : path.mailbox) {
    const auto u = static_cast<unsigned char>(c);
    // A control character in the forwarded path would let a client end the
    // command early and append one of its own.
    FUZZ_CHECK(u >= 0x20 && u != 0x7f);
    if (u >= 0x80) FUZZ_CHECK(path.has_8bit);
  }
  for (const auto& p : path.parameters) {
    FUZZ_CHECK(!p.keyword.empty());
    FUZZ_CHECK(p.has_value != p.value.empty());
    for (const char c : p.keyword + p.value) {
      const auto u = static_cast<unsigned char>(c);
      FUZZ_CHECK(u > 0x20 && u < 0x7f);
    }
  }
  if (!mail) FUZZ_CHECK(!path.mailbox.empty());

  const std::string wire = mail ? smtp::format_mail_from(path) : smtp::format_rcpt_to(path);
  FUZZ_CHECK(wire.find_first_of("\r\n") == std::string::npos);
  const smtp::command again = smtp::parse_command(wire);
  FUZZ_CHECK(again.name == (mail ? smtp::verb::mail : smtp::verb::rcpt));
  const auto reparsed = mail ? smtp::parse_mail_from(again.argument) : smtp::parse_rcpt_to(again.argument);
  FUZZ_CHECK(reparsed.has_value());
  FUZZ_CHECK(same_path(path, *reparsed));
  FUZZ_CHECK((mail ? smtp::format_mail_from(*reparsed) : smtp::format_rcpt_to(*reparsed)) == wire);
}

// Every reply the command table chooses is one complete, well-formed reply.
void check_reply_text(std::string_view wire) {
  if (wire.empty()) return;
  FUZZ_CHECK(wire.ends_with("\r\n"));
  smtp::reply_parser parser;
  smtp::reply_parser::status status = smtp::reply_parser::status::need_more;
  std::string_view rest = wire;
  while (!rest.empty()) {
    FUZZ_CHECK(status == smtp::reply_parser::status::need_more);
    const auto end = rest.find("\r\n");
    status = parser.feed(rest.substr(0, end));
    rest.remove_prefix(end + 2);
  }
  FUZZ_CHECK(status == smtp::reply_parser::status::done);
}

void check_dialogue(std::uint8_t bits, const smtp::command& cmd) {
  smtp::dialogue_policy policy;
  policy.starttls_listener = bits & 0x01;
  policy.require_tls = bits & 0x02;
  policy.allow_plaintext_auth = bits & 0x04;
  if (bits & 0x08) policy.mechanisms = {"PLAIN", "LOGIN"};
  policy.max_recipients = 2;
  smtp::dialogue_state state;
  state.tls = bits & 0x10;
  state.greeted = bits & 0x20;
  state.authenticated = bits & 0x40;
  state.in_transaction = bits & 0x80;
  state.recipients = (bits >> 3) & 0x3;

  const smtp::decision d = smtp::decide(state, policy, cmd);
  check_reply_text(d.reply);
  const bool tls_missing = policy.require_tls && !state.tls;
  // RFC 3207: a listener that requires TLS lets nothing that carries
  // credentials or mail through in plaintext.
  if (tls_missing) FUZZ_CHECK(d.what != smtp::effect::authenticate && d.what != smtp::effect::mail);
  if (d.what == smtp::effect::authenticate) FUZZ_CHECK(smtp::auth_offered(state, policy) || policy.mechanisms.empty());
  if (d.what == smtp::effect::mail) FUZZ_CHECK(state.authenticated && state.greeted && !state.in_transaction);
  if (d.what == smtp::effect::rcpt || d.what == smtp::effect::data) FUZZ_CHECK(state.in_transaction);
  if (d.what == smtp::effect::start_tls) FUZZ_CHECK(smtp::starttls_offered(state, policy));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t bits = data[0];
  const std::string_view line = smtpguard::fuzz::as_view(data + 1, size - 1);

  const smtp::command cmd = smtp::parse_command(line);
  check_command(line, cmd);
  check_dialogue(bits, cmd);

  // Through the command, as the session does, and on the raw text, so that
  // the path grammar is reached without the fuzzer first finding "MAIL ".
  for (const std::string_view argument : {cmd.argument, line}) {
    if (const auto from = smtp::parse_mail_from(argument)) check_path(*from, true);
    if (const auto to = smtp::parse_rcpt_to(argument)) check_path(*to, false);
  }
  return 0;
}

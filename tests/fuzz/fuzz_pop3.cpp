// The POP3 front's pure layer. Input: lines split at LF, each taken once as
// a client command and once as a backend line; the backend lines so far are
// also a CAPA list. What must hold: no command leads to a login before TLS,
// the filtered CAPA never offers the backend's STLS nor a way to log in
// before TLS, and never a -PLUS mechanism.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "pop3/capabilities.hpp"
#include "pop3/command.hpp"
#include "pop3/dialogue.hpp"
#include "pop3/response.hpp"

namespace {

namespace pop3 = smtpguard::pop3;

std::string upper_word(std::string_view line) {
  std::string out(line.substr(0, line.find(' ')));
  for (auto& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

void check_command(std::string_view line) {
  const pop3::command cmd = pop3::parse_command(line);
  FUZZ_CHECK(cmd.keyword.size() + (cmd.argument.data() == nullptr ? 0 : 1 + cmd.argument.size()) <= line.size() + 1);
  for (const bool stls_listener : {false, true}) {
    const pop3::decision plain = pop3::decide({.tls = false}, {.stls_listener = stls_listener}, cmd);
    FUZZ_CHECK(plain.what != pop3::effect::login && plain.what != pop3::effect::auth &&
               plain.what != pop3::effect::forward && plain.what != pop3::effect::list_mechanisms);
    FUZZ_CHECK((plain.what == pop3::effect::start_tls) == (stls_listener && cmd.name == pop3::verb::stls));
    const pop3::decision secure = pop3::decide({.tls = true}, {.stls_listener = stls_listener}, cmd);
    FUZZ_CHECK(secure.what != pop3::effect::start_tls);
    if (secure.what == pop3::effect::reply) FUZZ_CHECK(secure.reply.ends_with("\r\n") && secure.reply.starts_with("-ERR"));
  }
}

void check_capabilities(const std::vector<std::string>& lines) {
  for (const bool stls : {false, true}) {
    for (const bool login : {false, true}) {
      const auto out = pop3::filter_capabilities(lines, {.stls = stls, .login = login});
      std::size_t stls_lines = 0;
      for (const auto& line : out) {
        const std::string keyword = upper_word(line);
        if (keyword == "STLS") ++stls_lines;
        if (!login) FUZZ_CHECK(keyword != "USER" && keyword != "SASL");
        if (keyword == "SASL") {
          std::string_view rest(line);
          for (auto at = rest.find(' '); at != std::string_view::npos; at = rest.find(' ', at + 1)) {
            const auto end = rest.find(' ', at + 1);
            const auto name = rest.substr(at + 1, end == std::string_view::npos ? end : end - at - 1);
            FUZZ_CHECK(pop3::mechanism_passes(name));
          }
        }
      }
      FUZZ_CHECK(stls_lines == (stls ? 1u : 0u));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> lines;
  for (const std::string_view line : smtpguard::fuzz::split_lines(smtpguard::fuzz::as_view(data, size))) {
    check_command(line);
    const pop3::status status = pop3::classify(line);
    if (status == pop3::status::ok) FUZZ_CHECK(line.starts_with("+OK"));
    if (status == pop3::status::err) FUZZ_CHECK(line.starts_with("-ERR"));
    if (status == pop3::status::continuation) FUZZ_CHECK(line.starts_with("+"));
    if (lines.size() < 64) lines.emplace_back(line);
  }
  check_capabilities(lines);
  return 0;
}

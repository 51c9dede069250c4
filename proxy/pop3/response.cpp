#include "pop3/response.hpp"

namespace smtpguard::pop3 {
namespace {

bool printable(std::string_view text) {
  for (const unsigned char c : text)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

// "+OK", then nothing or a space and text.
bool starts_with_word(std::string_view line, std::string_view word) {
  return line.starts_with(word) && (line.size() == word.size() || line[word.size()] == ' ');
}

}  // namespace

status classify(std::string_view line) {
  if (!printable(line)) return status::invalid;
  // A SASL challenge (a GSSAPI token, say) may be longer than a status line.
  if (starts_with_word(line, "+")) return status::continuation;
  if (line.size() + 2 > max_status_line) return status::invalid;
  if (starts_with_word(line, "+OK")) return status::ok;
  if (starts_with_word(line, "-ERR")) return status::err;
  return status::invalid;
}

}  // namespace smtpguard::pop3

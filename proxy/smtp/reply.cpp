#include "smtp/reply.hpp"

namespace smtpguard::smtp {

std::string reply::serialize() const {
  std::string out;
  append_to(out);
  return out;
}

void reply::append_to(std::string& out) const {
  const std::string code_text = std::to_string(code);
  if (lines.empty()) {
    out += code_text;
    out += "\r\n";
    return;
  }
  for (std::size_t i = 0; i < lines.size(); ++i) {
    out += code_text;
    out += (i + 1 < lines.size()) ? '-' : ' ';
    out += lines[i];
    out += "\r\n";
  }
}

reply make_reply(int code, std::string_view text) { return reply{code, {std::string(text)}}; }

}  // namespace smtpguard::smtp

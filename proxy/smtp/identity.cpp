#include "smtp/identity.hpp"

#include <algorithm>

namespace smtpguard::smtp {

std::string xtext(std::string_view value) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (u < '!' || u > '~' || c == '+' || c == '=') {
      out += '+';
      out += hex[u >> 4];
      out += hex[u & 0x0f];
    } else {
      out += c;
    }
  }
  return out;
}

std::string build_xclient(const client_identity& client, const std::vector<std::string>& offered) {
  std::string line = "XCLIENT";
  auto add = [&](std::string_view name, std::string_view value) {
    if (std::find(offered.begin(), offered.end(), name) == offered.end()) return;
    line += ' ';
    line += name;
    line += '=';
    line += xtext(value);
  };
  // Postfix wants IPv6 addresses tagged, as in its own logs.
  auto tagged = [](const std::string& ip) { return ip.find(':') != std::string::npos ? "IPV6:" + ip : ip; };
  add("ADDR", tagged(client.ip));
  add("PORT", std::to_string(client.port));
  add("NAME", "[UNAVAILABLE]");
  if (!client.helo.empty()) add("HELO", client.helo);
  add("PROTO", client.esmtp ? "ESMTP" : "SMTP");
  if (!client.user.empty()) add("LOGIN", client.user);
  if (!client.local_ip.empty()) {
    add("DESTADDR", tagged(client.local_ip));
    add("DESTPORT", std::to_string(client.local_port));
  }
  return line == "XCLIENT" ? std::string() : line;
}

}  // namespace smtpguard::smtp

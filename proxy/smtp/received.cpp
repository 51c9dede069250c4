#include "smtp/received.hpp"

#include <array>
#include <cstdio>

namespace smtpguard::smtp {
namespace {

// RFC 5321 section 4.4 limits the clauses we copy from the client to
// something a header parser cannot misread: no comments, quoting or ";".
std::string sanitise(std::string_view s, bool keep_spaces = false) {
  constexpr std::size_t max_length = 255;
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == ' ' && keep_spaces && !out.empty()) {
      out += ch;
      continue;
    }
    if (c < 0x21 || c > 0x7e || c == '(' || c == ')' || c == '\\' || c == ';') continue;
    out += ch;
    if (out.size() == max_length) break;
  }
  return out;
}

// Our own values never contain line breaks; this only guards the header structure.
std::string single_line(std::string_view s) {
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != 0x7f) out += ch;
  }
  return out;
}

// RFC 5322 section 3.3 date-time in UTC, independent of the C locale.
std::string rfc5322_date(std::time_t when) {
  static constexpr std::array<const char*, 7> days{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::array<const char*, 12> months{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm{};
  gmtime_r(&when, &tm);
  std::array<char, 64> buffer{};
  const int n = std::snprintf(buffer.data(), buffer.size(), "%s, %d %s %d %02d:%02d:%02d +0000",
                              days.at(static_cast<std::size_t>(tm.tm_wday)), tm.tm_mday,
                              months.at(static_cast<std::size_t>(tm.tm_mon)), tm.tm_year + 1900,
                              tm.tm_hour, tm.tm_min, tm.tm_sec);
  return std::string(buffer.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
}

}  // namespace

std::string_view received_protocol(bool extended, bool tls, bool authenticated) {
  if (!extended) return tls ? "SMTPS" : "SMTP";
  if (authenticated) return tls ? "ESMTPSA" : "ESMTPA";
  return tls ? "ESMTPS" : "ESMTP";
}

std::string build_received_header(const received_info& info) {
  std::string helo = sanitise(info.helo);
  if (helo.empty()) helo = "unknown";
  const bool ipv6 = info.client_ip.find(':') != std::string_view::npos;

  std::string out = "Received: from " + helo + " ([";
  if (ipv6) out += "IPv6:";  // RFC 5321 section 4.1.3 address-literal
  out += single_line(info.client_ip);
  out += "])\r\n\tby ";
  out += single_line(info.by_host);
  out += " (smtpguard)";
  if (!info.protocol.empty()) out += " with " + single_line(info.protocol);
  if (!info.id.empty()) out += " id " + single_line(info.id);
  if (!info.tls_version.empty()) {
    out += "\r\n\t(using " + single_line(info.tls_version);
    if (!info.tls_cipher.empty()) out += " with cipher " + single_line(info.tls_cipher);
    out += ')';
  }
  if (const std::string subject = sanitise(info.client_certificate, true); !subject.empty()) {
    out += "\r\n\t(client certificate " + subject + ')';
  }
  if (const std::string user = sanitise(info.user); !user.empty()) {
    out += "\r\n\t(authenticated user " + user + ')';
  }
  if (!info.recipient.empty()) out += "\r\n\tfor <" + single_line(info.recipient) + '>';
  out += "; " + rfc5322_date(info.when) + "\r\n";
  return out;
}

}  // namespace smtpguard::smtp

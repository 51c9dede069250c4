#include "pop3/capabilities.hpp"

#include <cctype>

namespace smtpguard::pop3 {
namespace {

std::string upper(std::string_view text) {
  std::string out(text);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string_view first_word(std::string_view line) { return line.substr(0, line.find(' ')); }

// "SASL PLAIN SCRAM-SHA-256-PLUS LOGIN" -> "SASL PLAIN LOGIN"; empty when none is left.
std::string without_plus_mechanisms(std::string_view line) {
  std::string out = "SASL";
  std::size_t kept = 0;
  std::size_t at = line.find(' ');
  while (at != std::string_view::npos) {
    const std::size_t start = at + 1;
    at = line.find(' ', start);
    const std::string_view name = line.substr(start, at == std::string_view::npos ? at : at - start);
    if (name.empty() || !mechanism_passes(name)) continue;
    out += ' ';
    out += name;
    ++kept;
  }
  return kept == 0 ? std::string() : out;
}

}  // namespace

bool mechanism_passes(std::string_view name) {
  const std::string u = upper(name);
  return !(u.size() >= 5 && u.compare(u.size() - 5, 5, "-PLUS") == 0);
}

std::vector<std::string> filter_capabilities(const std::vector<std::string>& backend_lines, capability_offer offer) {
  std::vector<std::string> out;
  for (const auto& line : backend_lines) {
    const std::string keyword = upper(first_word(line));
    if (keyword == "STLS") continue;
    if (keyword == "USER" && !offer.login) continue;
    if (keyword == "SASL") {
      if (!offer.login) continue;
      if (std::string kept = without_plus_mechanisms(line); !kept.empty()) out.push_back(std::move(kept));
      continue;
    }
    out.push_back(line);
  }
  if (offer.stls) out.emplace_back("STLS");
  return out;
}

}  // namespace smtpguard::pop3

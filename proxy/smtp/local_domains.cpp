#include "smtp/local_domains.hpp"

#include "smtp/chars.hpp"

namespace smtpguard::smtp {
namespace {

std::string_view without_trailing_dot(std::string_view domain) {
  if (domain.ends_with('.')) domain.remove_suffix(1);
  return domain;
}

}  // namespace

bool local_recipient(std::string_view mailbox, const std::vector<std::string>& domains) {
  const auto at = mailbox.rfind('@');
  if (at == std::string_view::npos) return iequals(mailbox, "postmaster");
  const std::string_view domain = without_trailing_dot(mailbox.substr(at + 1));
  if (domain.empty()) return false;
  for (const auto& listed : domains) {
    const std::string_view entry = without_trailing_dot(listed);
    if (entry.starts_with('.')) {
      // ".example.org" takes "a.example.org", never "example.org" itself
      // nor "badexample.org".
      if (domain.size() > entry.size() && iequals(domain.substr(domain.size() - entry.size()), entry))
        return true;
    } else if (iequals(domain, entry)) {
      return true;
    }
  }
  return false;
}

bool valid_local_domain(std::string_view entry) {
  if (entry.starts_with('.')) entry.remove_prefix(1);
  entry = without_trailing_dot(entry);
  if (entry.empty() || entry.size() > 253) return false;
  std::size_t label = 0;
  for (std::size_t i = 0; i <= entry.size(); ++i) {
    if (i == entry.size() || entry[i] == '.') {
      if (label == 0 || label > 63) return false;
      if (entry[i - 1] == '-' || entry[i - label] == '-') return false;
      label = 0;
      continue;
    }
    const auto c = static_cast<unsigned char>(entry[i]);
    const bool letter_digit_hyphen =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (!letter_digit_hyphen && c < 0x80) return false;
    ++label;
  }
  return true;
}

}  // namespace smtpguard::smtp

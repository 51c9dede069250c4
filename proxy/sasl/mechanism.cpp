#include "sasl/mechanism.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <utility>

namespace smtpguard::sasl {
namespace {

constexpr std::array<std::pair<std::string_view, mechanism>, 3> names{{
    {"PLAIN", mechanism::plain},
    {"LOGIN", mechanism::login},
    {"CRAM-MD5", mechanism::cram_md5},
}};

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
  });
}

}  // namespace

std::optional<mechanism> parse_mechanism(std::string_view name) {
  for (const auto& [text, m] : names)
    if (iequals(text, name)) return m;
  return std::nullopt;
}

std::string_view mechanism_name(mechanism m) {
  for (const auto& [text, value] : names)
    if (value == m) return text;
  return {};
}

}  // namespace smtpguard::sasl

#include "sasl/mechanism.hpp"

#include <array>
#include <utility>

#include "smtp/chars.hpp"

namespace smtpguard::sasl {
namespace {

constexpr std::array<std::pair<std::string_view, mechanism>, 7> names{{
    {"PLAIN", mechanism::plain},
    {"LOGIN", mechanism::login},
    {"CRAM-MD5", mechanism::cram_md5},
    {"EXTERNAL", mechanism::external},
    {"SCRAM-SHA-256", mechanism::scram_sha_256},
    {"SCRAM-SHA-256-PLUS", mechanism::scram_sha_256_plus},
    {"DIGEST-MD5", mechanism::digest_md5},
}};

}  // namespace

std::optional<mechanism> parse_mechanism(std::string_view name) {
  for (const auto& [text, m] : names)
    if (smtp::iequals(text, name)) return m;
  return std::nullopt;
}

std::string_view mechanism_name(mechanism m) {
  for (const auto& [text, value] : names)
    if (value == m) return text;
  return {};
}

}  // namespace smtpguard::sasl

#include "sasl/claimed_user.hpp"

#include <algorithm>
#include <cctype>
#include <optional>

#include "sasl/base64.hpp"

namespace smtpguard::sasl {
namespace {

constexpr std::size_t max_name = 255;

bool printable(std::string_view name) {
  return std::all_of(name.begin(), name.end(), [](unsigned char c) { return c >= 0x20 && c != 0x7f; });
}

// RFC 5802 section 5.1: "=2C" and "=3D" stand for ',' and '='.
std::string scram_name(std::string_view encoded) {
  std::string out;
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    if (encoded.substr(i, 3) == "=2C") {
      out += ',';
      i += 2;
    } else if (encoded.substr(i, 3) == "=3D") {
      out += '=';
      i += 2;
    } else {
      out += encoded[i];
    }
  }
  return out;
}

std::string name_in(std::string_view mechanism, std::string_view decoded) {
  if (mechanism == "PLAIN") {
    const auto first = decoded.find('\0');
    if (first == std::string_view::npos) return {};
    const auto second = decoded.find('\0', first + 1);
    if (second == std::string_view::npos) return {};
    return std::string(decoded.substr(first + 1, second - first - 1));
  }
  if (mechanism == "LOGIN") return std::string(decoded);
  if (mechanism == "CRAM-MD5") return std::string(decoded.substr(0, decoded.rfind(' ')));
  if (mechanism.starts_with("SCRAM-")) {
    // gs2-header "n,," / "y,," / "p=...,", then "n=name,r=nonce".
    const auto header_end = decoded.find(',', decoded.find(',') + 1);
    if (header_end == std::string_view::npos) return {};
    const std::string_view bare = decoded.substr(header_end + 1);
    if (!bare.starts_with("n=")) return {};
    return scram_name(bare.substr(2, bare.find(',') - 2));
  }
  return {};
}

}  // namespace

std::string claimed_user(std::string_view mechanism, std::string_view response) {
  std::string upper(mechanism);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::optional<std::string> decoded = base64_decode(response);
  if (!decoded) return {};
  std::string name = name_in(upper, *decoded);
  if (name.size() > max_name || !printable(name)) return {};
  return name;
}

}  // namespace smtpguard::sasl

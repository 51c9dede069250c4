#pragma once
// Thin wrappers over BoringSSL's base64 (RFC 4648, no line breaks).
#include <optional>
#include <string>
#include <string_view>

namespace smtpguard::sasl {

std::string base64_encode(std::string_view bytes);
/// Strict: nullopt on any non-alphabet character or bad padding.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace smtpguard::sasl

#pragma once
// Hexadecimal text for stored secrets and digests (the users file, CRAM-MD5
// and DIGEST-MD5 responses).
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace smtpguard::auth {

/// Lower-case hex, two digits per octet.
std::string to_hex(std::span<const std::uint8_t> bytes);
/// Fills `out` from exactly 2 * out.size() hex digits of either case;
/// false (and `out` unspecified) for any other length or character.
bool from_hex(std::string_view hex, std::span<std::uint8_t> out);

}  // namespace smtpguard::auth

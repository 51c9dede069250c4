#include "sasl/base64.hpp"

#include <cstdint>

#include <openssl/base64.h>

namespace smtpguard::sasl {

std::string base64_encode(std::string_view bytes) {
  std::size_t size = 0;
  if (!EVP_EncodedLength(&size, bytes.size())) return {};
  std::string out(size, '\0');
  const std::size_t written = EVP_EncodeBlock(reinterpret_cast<std::uint8_t*>(out.data()),
                                              reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                              bytes.size());
  out.resize(written);  // drops the NUL EVP_EncodeBlock appends
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  std::size_t max_size = 0;
  if (!EVP_DecodedLength(&max_size, text.size())) return std::nullopt;
  std::string out(max_size, '\0');
  std::size_t size = 0;
  // EVP_DecodeBase64 rejects whitespace, lengths that are not a multiple of
  // four and misplaced padding, which is the strictness RFC 4954 asks for.
  if (!EVP_DecodeBase64(reinterpret_cast<std::uint8_t*>(out.data()), &size, max_size,
                        reinterpret_cast<const std::uint8_t*>(text.data()), text.size()))
    return std::nullopt;
  out.resize(size);
  // EVP_DecodeBase64 ignores the unused low bits of the last quantum; a
  // canonical encoding (RFC 4648 section 3.5) leaves exactly one text per value.
  if (base64_encode(out) != text) return std::nullopt;
  return out;
}

}  // namespace smtpguard::sasl

#include "auth/scram_secret.hpp"

#include <charconv>
#include <stdexcept>
#include <vector>

#include <idn-free.h>
#include <stringprep.h>
#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "sasl/base64.hpp"

namespace smtpguard::auth {
namespace {

constexpr std::size_t salt_size = 16;
constexpr std::string_view rfc5803_tag = "SCRAM-SHA-256$";
constexpr std::string_view dovecot_tag = "{SCRAM-SHA-256}";

using key = scram_key;

std::string_view as_text(const key& k) { return {reinterpret_cast<const char*>(k.data()), k.size()}; }

std::optional<key> decode_key(std::string_view text) {
  const auto raw = sasl::base64_decode(text);
  if (!raw || raw->size() != SHA256_DIGEST_LENGTH) return std::nullopt;
  key k{};
  std::copy(raw->begin(), raw->end(), k.begin());
  return k;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  for (;;) {
    const auto at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

std::optional<scram_secret> from_fields(std::string_view iterations, std::string_view salt,
                                        std::string_view stored_key, std::string_view server_key) {
  scram_secret secret;
  const auto [end, error] =
      std::from_chars(iterations.data(), iterations.data() + iterations.size(), secret.iterations);
  if (error != std::errc() || end != iterations.data() + iterations.size() ||
      secret.iterations < scram_min_iterations || secret.iterations > scram_max_iterations)
    return std::nullopt;
  auto raw_salt = sasl::base64_decode(salt);
  const auto stored = decode_key(stored_key);
  const auto server = decode_key(server_key);
  if (!raw_salt || raw_salt->empty() || !stored || !server) return std::nullopt;
  secret.salt = std::move(*raw_salt);
  secret.stored_key = *stored;
  secret.server_key = *server;
  return secret;
}

}  // namespace

scram_key scram_hmac(const scram_key& k, std::string_view text) {
  scram_key out{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), k.data(), k.size(), reinterpret_cast<const std::uint8_t*>(text.data()), text.size(),
       out.data(), &length);
  return out;
}

scram_secret make_scram_secret(std::string_view password, std::string_view salt, std::uint32_t iterations) {
  key salted{};
  if (!PKCS5_PBKDF2_HMAC(password.data(), password.size(), reinterpret_cast<const std::uint8_t*>(salt.data()),
                         salt.size(), iterations, EVP_sha256(), salted.size(), salted.data()))
    throw std::runtime_error("PBKDF2 failed");
  const key client_key = scram_hmac(salted, "Client Key");
  scram_secret secret;
  secret.iterations = iterations;
  secret.salt = salt;
  SHA256(client_key.data(), client_key.size(), secret.stored_key.data());
  secret.server_key = scram_hmac(salted, "Server Key");
  OPENSSL_cleanse(salted.data(), salted.size());
  return secret;
}

scram_secret make_scram_secret(std::string_view password, std::uint32_t iterations) {
  std::string salt(salt_size, '\0');
  if (!RAND_bytes(reinterpret_cast<std::uint8_t*>(salt.data()), salt.size()))
    throw std::runtime_error("RAND_bytes failed");
  return make_scram_secret(password, salt, iterations);
}

std::string scram_secret_to_text(const scram_secret& secret) {
  std::string text(rfc5803_tag);
  text += std::to_string(secret.iterations);
  text += ':';
  text += sasl::base64_encode(secret.salt);
  text += '$';
  text += sasl::base64_encode(as_text(secret.stored_key));
  text += ':';
  text += sasl::base64_encode(as_text(secret.server_key));
  return text;
}

std::optional<scram_secret> scram_secret_from_text(std::string_view text) {
  if (text.starts_with(rfc5803_tag)) {
    text.remove_prefix(rfc5803_tag.size());
    const auto halves = split(text, '$');
    if (halves.size() != 2) return std::nullopt;
    const auto salting = split(halves[0], ':');
    const auto keys = split(halves[1], ':');
    if (salting.size() != 2 || keys.size() != 2) return std::nullopt;
    return from_fields(salting[0], salting[1], keys[0], keys[1]);
  }
  if (text.starts_with(dovecot_tag)) {
    text.remove_prefix(dovecot_tag.size());
    const auto fields = split(text, ',');
    // GNU SASL appends the salted password when asked to be verbose: a
    // plaintext equivalent, never to be stored.
    if (fields.size() != 4) return std::nullopt;
    return from_fields(fields[0], fields[1], fields[2], fields[3]);
  }
  return std::nullopt;
}

std::optional<std::string> saslprep(std::string_view text) {
  std::string input(text);
  char* output = nullptr;
  // Unassigned code points are let through, as clients do when they prepare
  // the password they send (RFC 4013 section 2.5 allows it for queries).
  const int status = stringprep_profile(input.c_str(), &output, "SASLprep", Stringprep_profile_flags{});
  OPENSSL_cleanse(input.data(), input.size());
  if (status != STRINGPREP_OK) {
    idn_free(output);
    return std::nullopt;
  }
  std::string prepared(output);
  OPENSSL_cleanse(output, prepared.size());
  idn_free(output);
  return prepared;
}

}  // namespace smtpguard::auth

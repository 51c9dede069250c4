#include "sasl/scram.hpp"

#include <stdexcept>
#include <utility>

#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "sasl/base64.hpp"

namespace smtpguard::sasl {
namespace {

// As for the other mechanisms: far above any real name, and a nonce no
// client needs more than a few dozen characters for.
constexpr std::size_t max_identity_size = 255;
constexpr std::size_t max_nonce_size = 255;
constexpr std::size_t nonce_octets = 18;

using key = auth::scram_key;
using auth::scram_hmac;

/// Cuts the next ','-separated attribute off `text`.
std::string_view next_attribute(std::string_view& text) {
  const auto comma = text.find(',');
  const std::string_view attribute = text.substr(0, comma);
  text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
  return attribute;
}

/// "x=value" -> value; nullopt for any other attribute name.
std::optional<std::string_view> value_of(std::string_view attribute, char name) {
  if (attribute.size() < 2 || attribute[0] != name || attribute[1] != '=') return std::nullopt;
  return attribute.substr(2);
}

/// RFC 5802 saslname: ',' and '=' travel as "=2C" and "=3D", and no other
/// '=' may appear.
std::optional<std::string> decode_saslname(std::string_view text) {
  std::string name;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\0' || c == ',') return std::nullopt;
    if (c != '=') {
      name += c;
      continue;
    }
    const std::string_view escape = text.substr(i + 1, 2);
    if (escape == "2C") name += ',';
    else if (escape == "3D") name += '=';
    else return std::nullopt;
    i += 2;
  }
  if (name.empty() || name.size() > max_identity_size) return std::nullopt;
  return name;
}

bool printable_nonce(std::string_view nonce) {
  if (nonce.empty() || nonce.size() > max_nonce_size) return false;
  for (const char c : nonce)
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  return true;
}

std::string_view as_text(const key& k) { return {reinterpret_cast<const char*>(k.data()), k.size()}; }

}  // namespace

scram_server::scram_server(secret_lookup lookup, std::string nonce, scram_binding binding)
    : lookup_(std::move(lookup)), binding_(std::move(binding)), nonce_(std::move(nonce)) {
  if (!printable_nonce(nonce_)) throw std::invalid_argument("SCRAM needs a printable server nonce");
}

std::optional<std::string> scram_server::first(std::string_view client_first) {
  if (!auth_message_.empty()) return std::nullopt;
  std::string_view rest = client_first;

  // gs2-header: the channel binding flag, then an optional authzid. "p="
  // binds, and only -PLUS may; -PLUS must. "y" says the client could bind
  // but believes the server cannot: if -PLUS was offered, someone removed
  // it from the offer on the way (RFC 5802 section 6), so we must fail.
  const std::string_view flag = next_attribute(rest);
  std::string binding_data;
  if (const auto type = value_of(flag, 'p')) {
    if (!binding_.plus || !binding_.data) return std::nullopt;
    auto data = binding_.data(*type);
    if (!data) return std::nullopt;
    binding_data = std::move(*data);
  } else if (flag == "n" || flag == "y") {
    if (binding_.plus || (flag == "y" && binding_.plus_offered)) return std::nullopt;
  } else {
    return std::nullopt;
  }
  const std::string_view authzid_attribute = next_attribute(rest);
  std::string authzid;
  if (!authzid_attribute.empty()) {
    const auto value = value_of(authzid_attribute, 'a');
    if (!value) return std::nullopt;
    auto decoded = decode_saslname(*value);
    if (!decoded) return std::nullopt;
    authzid = std::move(*decoded);
  }
  const std::string_view bare = rest;
  const std::size_t header_size = client_first.size() - bare.size();

  // client-first-message-bare: [m=...,] n=user, r=nonce [,extensions]. A
  // mandatory extension we do not know means we must fail (RFC 5802 5.1).
  const auto user = value_of(next_attribute(rest), 'n');
  if (!user) return std::nullopt;
  auto name = decode_saslname(*user);
  const auto client_nonce = value_of(next_attribute(rest), 'r');
  if (!name || !client_nonce || !printable_nonce(*client_nonce)) return std::nullopt;

  gs2_header_ = client_first.substr(0, header_size);
  binding_data_ = std::move(binding_data);
  user_ = std::move(*name);
  // A client naming itself as the identity to act as asks nothing more.
  if (authzid != user_) authzid_ = std::move(authzid);
  secret_ = lookup_(user_);
  nonce_.insert(0, *client_nonce);

  std::string server_first = "r=" + nonce_;
  server_first += ",s=";
  server_first += base64_encode(secret_.salt);
  server_first += ",i=";
  server_first += std::to_string(secret_.iterations);
  auth_message_ = bare;
  auth_message_ += ',';
  auth_message_ += server_first;
  return server_first;
}

scram_server::verdict scram_server::final(std::string_view client_final) {
  if (auth_message_.empty() || finished_) return verdict::malformed;
  finished_ = true;
  // The proof is the last attribute and is not part of what it signs.
  const auto proof_at = client_final.rfind(",p=");
  if (proof_at == std::string_view::npos) return verdict::malformed;
  const std::string_view without_proof = client_final.substr(0, proof_at);
  const auto proof = base64_decode(client_final.substr(proof_at + 3));
  if (!proof || proof->size() != SHA256_DIGEST_LENGTH) return verdict::malformed;

  // c= repeats the gs2-header, then for -PLUS the channel's binding data, so
  // a header changed on the way, or a proof made on another TLS connection,
  // fails here; r= must be the nonce as the server extended it.
  std::string_view rest = without_proof;
  const auto binding = value_of(next_attribute(rest), 'c');
  const auto nonce = value_of(next_attribute(rest), 'r');
  if (!binding || !nonce) return verdict::malformed;
  const auto header = base64_decode(*binding);
  if (!header || *header != gs2_header_ + binding_data_ || *nonce != nonce_) return verdict::malformed;

  auth_message_ += ',';
  auth_message_ += without_proof;
  const key client_signature = scram_hmac(secret_.stored_key, auth_message_);
  key client_key{};
  for (std::size_t i = 0; i < client_key.size(); ++i)
    client_key[i] = static_cast<std::uint8_t>(static_cast<std::uint8_t>((*proof)[i]) ^ client_signature[i]);
  key stored{};
  SHA256(client_key.data(), client_key.size(), stored.data());
  const bool matches = CRYPTO_memcmp(stored.data(), secret_.stored_key.data(), stored.size()) == 0;
  OPENSSL_cleanse(client_key.data(), client_key.size());
  if (!matches) return verdict::wrong_proof;
  server_final_ = "v=" + base64_encode(as_text(scram_hmac(secret_.server_key, auth_message_)));
  return verdict::verified;
}

std::string make_scram_nonce() {
  std::uint8_t random[nonce_octets];
  if (!RAND_bytes(random, sizeof random)) throw std::runtime_error("RAND_bytes failed");
  return base64_encode({reinterpret_cast<const char*>(random), sizeof random});
}

}  // namespace smtpguard::sasl

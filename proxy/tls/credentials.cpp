#include "tls/credentials.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <stdexcept>
#include <utility>

namespace smtpguard::tls {
namespace {

std::string last_error() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof buffer);
  return buffer;
}

bssl::UniquePtr<CRYPTO_BUFFER> to_buffer(X509* cert, const std::string& path) {
  const int length = i2d_X509(cert, nullptr);
  if (length <= 0) throw std::runtime_error(path + ": cannot encode certificate: " + last_error());
  std::vector<uint8_t> der(static_cast<std::size_t>(length));
  uint8_t* out = der.data();
  i2d_X509(cert, &out);
  bssl::UniquePtr<CRYPTO_BUFFER> buffer(CRYPTO_BUFFER_new(der.data(), der.size(), nullptr));
  if (!buffer) throw std::runtime_error(path + ": cannot store certificate: " + last_error());
  return buffer;
}

key_kind classify(EVP_PKEY* key, const std::string& path) {
  switch (EVP_PKEY_id(key)) {
    case EVP_PKEY_RSA:
      return key_kind::rsa;
    case EVP_PKEY_EC: {
      const int curve = EC_GROUP_get_curve_name(EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(key)));
      if (curve == NID_X9_62_prime256v1) return key_kind::ec_p256;
      if (curve == NID_secp384r1) return key_kind::ec_p384;
      const char* name = curve == NID_undef ? nullptr : OBJ_nid2sn(curve);
      throw std::runtime_error(path + ": unsupported EC curve " + (name ? name : "(unnamed)") +
                               ": use P-256 or P-384");
    }
    default:
      throw std::runtime_error(path + ": unsupported key type: use ECDSA (P-256 or P-384) or RSA");
  }
}

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

std::vector<std::string> san_dns_names(const X509* leaf) {
  std::vector<std::string> names;
  bssl::UniquePtr<GENERAL_NAMES> general(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr)));
  if (!general) return names;
  for (const GENERAL_NAME* name : general.get()) {
    if (name->type != GEN_DNS) continue;
    const ASN1_STRING* value = name->d.dNSName;
    std::string text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                     static_cast<std::size_t>(ASN1_STRING_length(value)));
    std::transform(text.begin(), text.end(), text.begin(), lower);
    names.push_back(std::move(text));
  }
  return names;
}

// What BoringSSL's server signs with by default, grouped by what the key must
// be. TLS 1.3 drops PKCS#1 v1.5 and SHA-1, and ties each ECDSA code point to
// one curve; TLS 1.2 accepts any hash with any curve.
constexpr std::array<std::uint16_t, 4> ecdsa_tls12{SSL_SIGN_ECDSA_SHA1, SSL_SIGN_ECDSA_SECP256R1_SHA256,
                                                   SSL_SIGN_ECDSA_SECP384R1_SHA384,
                                                   SSL_SIGN_ECDSA_SECP521R1_SHA512};
constexpr std::array<std::uint16_t, 1> ecdsa_p256_tls13{SSL_SIGN_ECDSA_SECP256R1_SHA256};
constexpr std::array<std::uint16_t, 1> ecdsa_p384_tls13{SSL_SIGN_ECDSA_SECP384R1_SHA384};
constexpr std::array<std::uint16_t, 3> rsa_tls13{SSL_SIGN_RSA_PSS_RSAE_SHA256, SSL_SIGN_RSA_PSS_RSAE_SHA384,
                                                 SSL_SIGN_RSA_PSS_RSAE_SHA512};
constexpr std::array<std::uint16_t, 7> rsa_tls12{
    SSL_SIGN_RSA_PSS_RSAE_SHA256, SSL_SIGN_RSA_PSS_RSAE_SHA384, SSL_SIGN_RSA_PSS_RSAE_SHA512,
    SSL_SIGN_RSA_PKCS1_SHA1,      SSL_SIGN_RSA_PKCS1_SHA256,    SSL_SIGN_RSA_PKCS1_SHA384,
    SSL_SIGN_RSA_PKCS1_SHA512};

std::span<const std::uint16_t> usable_sigalgs(key_kind kind, bool tls13) {
  switch (kind) {
    case key_kind::ec_p256:
      return tls13 ? std::span<const std::uint16_t>(ecdsa_p256_tls13) : ecdsa_tls12;
    case key_kind::ec_p384:
      return tls13 ? std::span<const std::uint16_t>(ecdsa_p384_tls13) : ecdsa_tls12;
    case key_kind::rsa:
      break;
  }
  return tls13 ? std::span<const std::uint16_t>(rsa_tls13) : rsa_tls12;
}

std::uint16_t curve_group(key_kind kind) {
  return kind == key_kind::ec_p384 ? SSL_CURVE_SECP384R1 : SSL_CURVE_SECP256R1;
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return lower(x) == lower(y);
         });
}

}  // namespace

credential credential::load(const certificate_config& config) {
  // BoringSSL's own file loaders, through a context used only for loading, so
  // files are parsed and checked exactly as a single-certificate context always
  // did. The key goes first: a certificate that does not match it then drops
  // it, and the mismatch is reported as such instead of as a load failure.
  bssl::UniquePtr<SSL_CTX> loader(SSL_CTX_new(TLS_method()));
  if (!loader) throw std::runtime_error("tls: cannot create a context: " + last_error());
  if (SSL_CTX_use_PrivateKey_file(loader.get(), config.key.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error(config.key + ": cannot load private key: " + last_error());
  if (SSL_CTX_use_certificate_chain_file(loader.get(), config.cert.c_str()) != 1)
    throw std::runtime_error(config.cert + ": cannot load certificate chain: " + last_error());
  if (SSL_CTX_check_private_key(loader.get()) != 1) {
    ERR_clear_error();
    throw std::runtime_error(config.key + ": private key does not match " + config.cert);
  }

  credential loaded;
  loaded.cert_file_ = config.cert;
  loaded.key_ = bssl::UpRef(SSL_CTX_get0_privatekey(loader.get()));
  loaded.kind_ = classify(loaded.key_.get(), config.key);
  X509* leaf = SSL_CTX_get0_certificate(loader.get());
  loaded.dns_names_ = san_dns_names(leaf);
  // The config parser lowercases names already; configurations built in code
  // need not.
  loaded.server_names_ = config.names.empty() ? loaded.dns_names_ : config.names;
  for (std::string& name : loaded.server_names_) std::transform(name.begin(), name.end(), name.begin(), lower);
  loaded.chain_.push_back(to_buffer(leaf, config.cert));
  STACK_OF(X509)* intermediates = nullptr;
  if (SSL_CTX_get0_chain_certs(loader.get(), &intermediates) && intermediates)
    for (X509* cert : intermediates) loaded.chain_.push_back(to_buffer(cert, config.cert));
  for (const auto& buffer : loaded.chain_) loaded.chain_pointers_.push_back(buffer.get());
  return loaded;
}

bool credential::answers_for(std::string_view server_name) const {
  return std::any_of(server_names_.begin(), server_names_.end(),
                     [server_name](const std::string& pattern) { return server_name_matches(pattern, server_name); });
}

bool server_name_matches(std::string_view pattern, std::string_view name) {
  if (!pattern.starts_with("*.")) return equal_ignoring_case(pattern, name);
  const std::string_view suffix = pattern.substr(1);  // ".example.org"
  if (name.size() <= suffix.size()) return false;
  const std::string_view label = name.substr(0, name.size() - suffix.size());
  // A literal "*" label in the name is not a host name; never let it match.
  return label.find_first_of(".*") == std::string_view::npos &&
         equal_ignoring_case(name.substr(label.size()), suffix);
}

bool u16_list::contains(std::uint16_t value) const {
  for (std::size_t i = 0; i + 1 < bytes_.size(); i += 2)
    if (((static_cast<std::uint16_t>(bytes_[i]) << 8) | bytes_[i + 1]) == value) return true;
  return false;
}

bool u16_list::contains_any(std::span<const std::uint16_t> values) const {
  return std::any_of(values.begin(), values.end(), [this](std::uint16_t v) { return contains(v); });
}

bool can_serve(const credential& cred, const client_offer& offer, const tls12_suites& suites) {
  const key_kind kind = cred.kind();
  if (offer.signature_algorithms) {
    if (!offer.signature_algorithms->contains_any(usable_sigalgs(kind, offer.tls13))) return false;
  } else if (offer.tls13) {
    return false;  // TLS 1.3 makes the extension mandatory; BoringSSL will refuse the hello
  }
  // TLS 1.3 suites do not name a key type, and its ECDSA code points already
  // pin the curve.
  if (offer.tls13) return true;
  if (cred.is_ecdsa() && offer.supported_groups && !offer.supported_groups->contains(curve_group(kind)))
    return false;
  return offer.cipher_suites.contains_any(cred.is_ecdsa() ? suites.ecdsa : suites.rsa);
}

credential_set::credential_set(std::vector<credential> credentials, tls12_suites suites)
    : credentials_(std::move(credentials)), suites_(std::move(suites)) {
  if (credentials_.empty()) throw std::runtime_error("tls: no certificate configured");
  std::stable_partition(credentials_.begin(), credentials_.end(),
                        [](const credential& c) { return c.is_ecdsa(); });
}

// A name match narrows the candidates and ECDSA/RSA is chosen among them.
// When none of those can serve the client, another name's certificate still
// lets the handshake complete: most SMTP clients encrypt opportunistically
// without checking the name, and a failed handshake would leave them in
// plaintext or without delivery.
const credential* credential_set::select(const client_offer& offer) const {
  if (!offer.server_name.empty())
    for (const credential& cred : credentials_)
      if (cred.answers_for(offer.server_name) && can_serve(cred, offer, suites_)) return &cred;
  for (const credential& cred : credentials_)
    if (can_serve(cred, offer, suites_)) return &cred;
  return nullptr;
}

}  // namespace smtpguard::tls

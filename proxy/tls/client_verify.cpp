#include "tls/client_verify.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tls/errors.hpp"

namespace smtpguard::tls {
namespace {

bssl::UniquePtr<BIO> open_file(const std::string& path) {
  bssl::UniquePtr<BIO> bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) throw std::runtime_error(path + ": cannot open: " + last_error());
  return bio;
}

// PEM_read_bio_* stop with PEM_R_NO_START_LINE at the end of the input; any
// other error is a damaged block.
bool clean_end_of_pem() {
  const unsigned long code = ERR_peek_last_error();
  const bool clean =
      code == 0 || (ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE);
  if (clean) ERR_clear_error();
  return clean;
}

std::vector<bssl::UniquePtr<X509_CRL>> read_crls(const std::string& path) {
  auto bio = open_file(path);
  std::vector<bssl::UniquePtr<X509_CRL>> crls;
  ERR_clear_error();
  while (X509_CRL* crl = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr)) crls.emplace_back(crl);
  if (!clean_end_of_pem()) throw std::runtime_error(path + ": cannot read CRL: " + last_error());
  if (crls.empty()) throw std::runtime_error(path + ": no CRL found");
  return crls;
}

// Adding an object the store already holds (a CA listed twice) is not an error.
bool already_in_store() {
  const unsigned long code = ERR_peek_last_error();
  const bool duplicate =
      ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_CERT_ALREADY_IN_HASH_TABLE;
  if (duplicate) ERR_clear_error();
  return duplicate;
}

bool contains_name(const STACK_OF(X509_NAME)* names, const X509_NAME* name) {
  for (std::size_t i = 0; i < sk_X509_NAME_num(names); ++i)
    if (X509_NAME_cmp(sk_X509_NAME_value(names, i), name) == 0) return true;
  return false;
}

std::string hex(const uint8_t* data, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 0x0f];
  }
  return out;
}

std::string last_common_name(const X509_NAME* name) {
  int index = -1;
  for (int next = -1; (next = X509_NAME_get_index_by_NID(name, NID_commonName, next)) >= 0;) index = next;
  if (index < 0) return {};
  const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  const int length = ASN1_STRING_to_UTF8(&utf8, value);
  if (length < 0) return {};
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
  OPENSSL_free(utf8);
  return out;
}

// rfc822Name is an IA5String; anything outside printable ASCII cannot be a
// mailbox and is left out rather than passed on to user matching and logs.
std::vector<std::string> san_emails(X509* cert) {
  std::vector<std::string> emails;
  bssl::UniquePtr<GENERAL_NAMES> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) return emails;
  for (std::size_t i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* entry = sk_GENERAL_NAME_value(names.get(), i);
    if (entry->type != GEN_EMAIL) continue;
    const ASN1_IA5STRING* value = entry->d.rfc822Name;
    std::string email(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                      static_cast<std::size_t>(ASN1_STRING_length(value)));
    bool printable = !email.empty();
    for (char& c : email) {
      if (c <= 0x20 || c >= 0x7f) printable = false;
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    if (printable) emails.push_back(std::move(email));
  }
  return emails;
}

const CRYPTO_BUFFER* peer_leaf(const SSL* ssl) {
  const STACK_OF(CRYPTO_BUFFER)* chain = SSL_get0_peer_certificates(ssl);
  if (!chain || sk_CRYPTO_BUFFER_num(chain) == 0) return nullptr;
  return sk_CRYPTO_BUFFER_value(chain, 0);
}

// True when the handshake stopped where the server reads the client's
// Certificate message (TLS 1.2 and 1.3 state names both end in this).
bool stopped_at_client_certificate(const SSL* ssl) {
  if (!SSL_in_init(ssl)) return false;
  const std::string_view state = SSL_state_string_long(ssl);
  return state.ends_with("read_client_certificate");
}

bool no_certificate_error_queued() {
  const unsigned long code = ERR_peek_last_error();
  return ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE;
}

// BoringSSL stops building a chain at the depth limit and then reports the
// issuer of the last certificate as missing. When that issuer was at hand
// (sent by the client, or trusted), the chain was too long, not from an
// unknown CA: say so, for verification_failure().
int verify_callback(int ok, X509_STORE_CTX* store) {
  if (ok) return ok;
  const int error = X509_STORE_CTX_get_error(store);
  if (error != X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY && error != X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT)
    return ok;
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  const int max_depth = X509_VERIFY_PARAM_get_depth(X509_STORE_CTX_get0_param(store));
  if (!cert || max_depth < 0 || X509_STORE_CTX_get_error_depth(store) < max_depth) return ok;
  bool issuer_at_hand = false;
  if (STACK_OF(X509)* sent = X509_STORE_CTX_get0_untrusted(store)) {
    for (std::size_t i = 0; i < sk_X509_num(sent) && !issuer_at_hand; ++i) {
      X509* candidate = sk_X509_value(sent, i);
      issuer_at_hand = candidate != cert && X509_check_issued(candidate, cert) == X509_V_OK;
    }
  }
  X509* trusted = nullptr;
  if (!issuer_at_hand && X509_STORE_CTX_get1_issuer(&trusted, store, cert) == 1) {
    issuer_at_hand = true;
    X509_free(trusted);
  }
  if (issuer_at_hand) X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_CHAIN_TOO_LONG);
  return ok;
}

std::string reason_for(long result) {
  switch (result) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return "expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return "not yet valid";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
      return "unknown CA";
    case X509_V_ERR_CERT_REVOKED:
      return "revoked";
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
      return "bad signature";
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
      return "chain too long";
    case X509_V_ERR_INVALID_PURPOSE:
    case X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE:
      return "unusable";
    default:
      return std::string("invalid: ") + X509_verify_cert_error_string(result);
  }
}

}  // namespace

std::vector<bssl::UniquePtr<X509>> read_certificates(const std::string& path) {
  auto bio = open_file(path);
  std::vector<bssl::UniquePtr<X509>> certificates;
  ERR_clear_error();
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    certificates.emplace_back(cert);
  if (!clean_end_of_pem()) throw std::runtime_error(path + ": cannot read CA certificate: " + last_error());
  if (certificates.empty()) throw std::runtime_error(path + ": no CA certificate found");
  return certificates;
}

std::string rfc2253(const X509_NAME* name) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return {};
  const uint8_t* data = nullptr;
  std::size_t size = 0;
  if (!BIO_mem_contents(bio.get(), &data, &size)) return {};
  return {reinterpret_cast<const char*>(data), size};
}

void configure_client_verification(SSL_CTX* ctx, const client_certificates_config& config) {
  if (config.ca.empty()) return;
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  if (!store) throw std::runtime_error("tls: context has no certificate store");

  bssl::UniquePtr<STACK_OF(X509_NAME)> names(sk_X509_NAME_new_null());
  if (!names) throw std::runtime_error("tls: out of memory");
  for (const auto& cert : read_certificates(config.ca)) {
    if (!X509_STORE_add_cert(store, cert.get()) && !already_in_store())
      throw std::runtime_error(config.ca + ": cannot use CA certificate: " + last_error());
    X509_NAME* subject = X509_get_subject_name(cert.get());
    if (contains_name(names.get(), subject)) continue;
    bssl::UniquePtr<X509_NAME> copy(X509_NAME_dup(subject));
    if (!copy || !sk_X509_NAME_push(names.get(), copy.get()))
      throw std::runtime_error(config.ca + ": cannot list CA name: " + last_error());
    copy.release();
  }

  for (const auto& file : config.crl) {
    for (const auto& crl : read_crls(file))
      if (!X509_STORE_add_crl(store, crl.get()) && !already_in_store())
        throw std::runtime_error(file + ": cannot use CRL: " + last_error());
  }
  if (!config.crl.empty() && !X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL))
    throw std::runtime_error("tls: cannot enable CRL checks: " + last_error());

  // BoringSSL's depth counts every certificate above the leaf, the trusted CA
  // included; the configuration counts intermediates only.
  SSL_CTX_set_verify_depth(ctx, config.verify_depth + 1);
  SSL_CTX_set_client_CA_list(ctx, names.release());
}

void request_client_certificate(SSL* ssl, client_cert_mode mode) {
  static constexpr std::string_view optional_suffix = "/client-cert-optional";
  static constexpr std::string_view required_suffix = "/client-cert-required";
  std::string_view suffix;
  switch (mode) {
    case client_cert_mode::none:
      SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
      break;
    case client_cert_mode::optional:
      SSL_set_verify(ssl, SSL_VERIFY_PEER, verify_callback);
      suffix = optional_suffix;
      break;
    case client_cert_mode::required:
      SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_callback);
      suffix = required_suffix;
      break;
  }
  // BoringSSL does not compare verify modes when resuming; distinct session
  // ID contexts keep sessions (IDs and tickets) within one mode. The context's
  // own value (inherited from the SSL_CTX) stays the one for mode none.
  std::size_t length = 0;
  const uint8_t* current = SSL_get0_session_id_context(ssl, &length);
  std::string context(reinterpret_cast<const char*>(current), length);
  for (const std::string_view earlier : {optional_suffix, required_suffix}) {
    if (std::string_view(context).ends_with(earlier)) context.resize(context.size() - earlier.size());
  }
  context.resize(std::min(context.size(), SSL_MAX_SID_CTX_LENGTH - suffix.size()));
  context += suffix;
  if (!SSL_set_session_id_context(ssl, reinterpret_cast<const uint8_t*>(context.data()), context.size()))
    ERR_clear_error();  // cannot happen: the length is within bounds
}

peer_certificate inspect_peer(const SSL* ssl) {
  peer_certificate peer;
  const CRYPTO_BUFFER* leaf = ssl ? peer_leaf(ssl) : nullptr;
  if (!leaf) return peer;
  peer.presented = true;

  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned digest_size = 0;
  if (EVP_Digest(CRYPTO_BUFFER_data(leaf), CRYPTO_BUFFER_len(leaf), digest, &digest_size, EVP_sha256(),
                 nullptr))
    peer.sha256 = hex(digest, digest_size);

  // -1: the handshake configuration was shed once the handshake ended. A
  // client only sends a certificate when asked for one, so it was asked.
  const int mode = SSL_get_verify_mode(ssl);
  const bool requested = mode < 0 || (mode & SSL_VERIFY_PEER) != 0;
  peer.verified = requested && SSL_get_verify_result(ssl) == X509_V_OK;

  bssl::UniquePtr<X509> cert(SSL_get_peer_certificate(ssl));
  if (!cert) return peer;
  const X509_NAME* subject = X509_get_subject_name(cert.get());
  peer.subject = rfc2253(subject);
  peer.common_name = last_common_name(subject);
  peer.emails = san_emails(cert.get());
  return peer;
}

std::string verification_failure(const SSL* ssl) {
  if (!ssl) return {};
  const int mode = SSL_get_verify_mode(ssl);
  if (mode < 0 || !(mode & SSL_VERIFY_PEER)) return {};
  if (peer_leaf(ssl)) {
    const long result = SSL_get_verify_result(ssl);
    // INVALID_CALL: the handshake failed before the chain was verified.
    if (result == X509_V_OK || result == X509_V_ERR_INVALID_CALL) return {};
    return reason_for(result);
  }
  if (!(mode & SSL_VERIFY_FAIL_IF_NO_PEER_CERT)) return {};
  if (stopped_at_client_certificate(ssl) || no_certificate_error_queued()) return "none presented";
  return {};
}

}  // namespace smtpguard::tls

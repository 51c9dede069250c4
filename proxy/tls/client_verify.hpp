#pragma once
// Client certificates: the trust store they are verified against (loaded once
// per context), the per-connection request, and what a client presented.
#include <string>
#include <vector>

#include "config.hpp"
#include "tls/boringssl.hpp"

namespace smtpguard::tls {

/// Loads tls.client_certificates (CA bundle, CRL files, depth) into the context's trust store.
/// No-op when config.ca is empty. Throws std::runtime_error naming the file that fails.
/// With any CRL, sets X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL: then every CA
/// in a client's chain needs a CRL among the files, or verification fails ("invalid:
/// unable to get certificate CRL"). Sends the CA names in the CertificateRequest.
/// verify_depth counts intermediate CAs between the client certificate and a trusted
/// CA: 0 accepts only certificates issued directly by a CA of the bundle.
void configure_client_verification(SSL_CTX* ctx, const client_certificates_config& config);

/// Before the handshake: optional = SSL_VERIFY_PEER (a certificate that is sent must verify, else the
/// handshake fails with an alert); required = also SSL_VERIFY_FAIL_IF_NO_PEER_CERT; none = nothing asked.
/// Also gives the connection a session ID context per mode, so that a session (ID or
/// ticket) made without a certificate is never resumed where one is required, and one
/// made with a certificate is never resumed where certificates are not asked for.
void request_client_certificate(SSL* ssl, client_cert_mode mode);

/// What the client presented, after the handshake. On a resumed session: what it
/// presented in the handshake that made the session.
struct peer_certificate {
  bool presented = false;
  bool verified = false;            ///< chain verified against the configured CA, CRLs and depth
  std::string subject;              ///< one line, RFC 2253 order and escaping (e.g. "CN=alice,O=...")
  std::string common_name;          ///< last CN of the subject, UTF-8
  std::vector<std::string> emails;  ///< subjectAltName rfc822Name entries, lower-cased
  std::string sha256;               ///< SHA-256 of the DER leaf, 64 lowercase hex digits
};

/// Every certificate of a PEM file, in order. Throws std::runtime_error
/// naming the file when it cannot be read, holds a damaged block, or has none.
std::vector<bssl::UniquePtr<X509>> read_certificates(const std::string& path);

/// A name on one line, RFC 2253 order and escaping ("CN=alice,O=Example").
std::string rfc2253(const X509_NAME* name);

/// Reads the leaf certificate the client sent; `presented` is false when there is none.
peer_certificate inspect_peer(const SSL* ssl);

/// Why the client certificate was refused, for logs and metrics, from the verify result:
/// "expired", "not yet valid", "unknown CA", "revoked", "none presented", "bad signature",
/// "chain too long", "unusable" (wrong key usage/purpose), otherwise "invalid: <verify error text>";
/// empty when the certificate was fine or was not asked for. Works after a failed
/// handshake as well as after a successful one (where it is empty). "none presented"
/// is reported when certificates are required, none was received and the handshake
/// got as far as reading the client's certificate (or the thread's error queue still
/// holds SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE); a handshake that failed earlier
/// for another reason gives an empty string.
std::string verification_failure(const SSL* ssl);

}  // namespace smtpguard::tls

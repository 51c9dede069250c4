#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tls/boringssl.hpp"
#include "tls/client_verify.hpp"
#include "tls/server_context.hpp"
#include "tls_memory_handshake.hpp"

namespace smtpguard::tls {
namespace {

namespace fs = std::filesystem;

/// The repository root: $SMTPGUARD_SOURCE_DIR, else two levels above this file.
fs::path source_dir() {
  if (const char* env = std::getenv("SMTPGUARD_SOURCE_DIR"); env && *env) return env;
  return fs::path(__FILE__).parent_path().parent_path().parent_path();
}

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// Standard output of a shell command; throws when it fails.
std::string run(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  if (!pipe) throw std::runtime_error("cannot run " + command);
  std::string out;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe.get())) > 0;) out.append(buffer, n);
  if (::pclose(pipe.release()) != 0) throw std::runtime_error(command + " failed:\n" + out);
  return out;
}

bssl::UniquePtr<EVP_PKEY> p256_key() {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  if (!ec || !EC_KEY_generate_key(ec.get())) throw std::runtime_error("EC key generation failed");
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  EVP_PKEY_set1_EC_KEY(key.get(), ec.get());
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  bssl::UniquePtr<X509_EXTENSION> ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
  if (!ext || !X509_add_ext(cert, ext.get(), -1)) throw std::runtime_error("cannot add extension");
}

/// A certificate for `key` named CN=`cn`, signed by `issuer_key` (self-signed
/// when `issuer` is null). CAs get basicConstraints CA:TRUE.
bssl::UniquePtr<X509> make_cert(const char* cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key, bool ca) {
  static long serial = 1000;
  bssl::UniquePtr<X509> cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const uint8_t*>(cn), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(cert.get(), key);
  if (ca) {
    add_extension(cert.get(), issuer ? issuer : cert.get(), NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert.get(), issuer ? issuer : cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_extension(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert.get(), issuer, NID_ext_key_usage, "clientAuth");
  }
  if (!X509_sign(cert.get(), issuer_key, EVP_sha256())) throw std::runtime_error("signing failed");
  return cert;
}

void write_pem(const fs::path& path, std::initializer_list<X509*> certs) {
  bssl::UniquePtr<BIO> out(BIO_new_file(path.c_str(), "w"));
  for (X509* cert : certs)
    if (!PEM_write_bio_X509(out.get(), cert)) throw std::runtime_error("cannot write " + path.string());
}

void write_key(const fs::path& path, EVP_PKEY* key) {
  bssl::UniquePtr<BIO> out(BIO_new_file(path.c_str(), "w"));
  if (!PEM_write_bio_PrivateKey(out.get(), key, nullptr, nullptr, 0, nullptr, nullptr))
    throw std::runtime_error("cannot write " + path.string());
}

/// How one in-memory handshake went, seen from the server.
struct result {
  bool ok = false;
  bool resumed = false;
  peer_certificate peer;
  std::string failure;                   ///< verification_failure() with the error queue cleared
  std::string failure_queued;            ///< verification_failure() with the handshake's errors still queued
  bssl::UniquePtr<SSL_SESSION> session;  ///< the client's session, for a resumption
};

class core_client_verify : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = (fs::temp_directory_path() / "smtpguard-client-verify-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = new fs::path(pattern);
    const fs::path generate = source_dir() / "certs" / "generate";
    ASSERT_TRUE(fs::exists(generate)) << generate << " not found; set SMTPGUARD_SOURCE_DIR";
    ASSERT_NO_THROW(run(shell_quote(generate.string()) + " " + shell_quote(dir_->string()) + " 2>&1"));

    // A chain with one intermediate CA under its own root, for the depth limit.
    auto root_key = p256_key();
    auto middle_key = p256_key();
    auto leaf_key = p256_key();
    auto root = make_cert("depth root", root_key.get(), nullptr, root_key.get(), true);
    auto middle = make_cert("depth intermediate", middle_key.get(), root.get(), root_key.get(), true);
    auto leaf = make_cert("deep", leaf_key.get(), middle.get(), middle_key.get(), false);
    write_pem(*dir_ / "depth-root.pem", {root.get()});
    write_pem(*dir_ / "client-deep.pem", {leaf.get(), middle.get()});
    write_key(*dir_ / "client-deep.key", leaf_key.get());
    // Both trust anchors in one bundle, the dev CA listed twice.
    std::ofstream bundle(*dir_ / "bundle.pem");
    for (const char* file : {"ca.pem", "depth-root.pem", "ca.pem"})
      bundle << std::ifstream(*dir_ / file).rdbuf();
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  static std::string path(const std::string& file) { return (*dir_ / file).string(); }

  static client_certificates_config client_config(bool with_crl = true) {
    client_certificates_config config;
    config.ca = path("ca.pem");
    if (with_crl) config.crl = {path("crl.pem")};
    return config;
  }

  static std::shared_ptr<asio::ssl::context> server(const client_certificates_config& config) {
    tls_config tls;
    tls.certificates.push_back({path("server-ecdsa.pem"), path("server-ecdsa.key"), {}});
    tls.client_certificates = config;
    auto context = make_server_context(tls);
    configure_client_verification(context->native_handle(), config);
    return context;
  }

  /// A handshake in memory: a BoringSSL client offering `client_cert` (empty:
  /// none) against `server` asking in `mode`.
  static result handshake(asio::ssl::context& server, client_cert_mode mode, const std::string& client_cert,
                          uint16_t version = TLS1_3_VERSION, SSL_SESSION* resume = nullptr) {
    bssl::UniquePtr<SSL_CTX> client_ctx(SSL_CTX_new(TLS_method()));
    SSL_CTX_set_min_proto_version(client_ctx.get(), version);
    SSL_CTX_set_max_proto_version(client_ctx.get(), version);
    if (!client_cert.empty()) {
      EXPECT_TRUE(SSL_CTX_use_certificate_chain_file(client_ctx.get(), path(client_cert + ".pem").c_str()));
      EXPECT_TRUE(SSL_CTX_use_PrivateKey_file(client_ctx.get(), path(client_cert + ".key").c_str(),
                                              SSL_FILETYPE_PEM));
    }
    // TLS 1.3 sessions only reach the client through the new-session callback.
    SSL_CTX_set_session_cache_mode(client_ctx.get(), SSL_SESS_CACHE_CLIENT);
    SSL_CTX_sess_set_new_cb(client_ctx.get(), [](SSL*, SSL_SESSION* session) {
      new_session().reset(session);
      return 1;
    });
    new_session().reset();
    bssl::UniquePtr<SSL> client(SSL_new(client_ctx.get()));
    bssl::UniquePtr<SSL> srv(SSL_new(server.native_handle()));
    request_client_certificate(srv.get(), mode);
    if (resume) SSL_set_session(client.get(), resume);
    in_memory::connect_in_memory(client.get(), srv.get());

    result out;
    const bool completed = in_memory::drive_handshake(client.get(), srv.get());
    out.failure_queued = verification_failure(srv.get());
    ERR_clear_error();
    out.failure = verification_failure(srv.get());
    out.peer = inspect_peer(srv.get());
    if (!completed) return out;
    out.ok = true;
    out.resumed = SSL_session_reused(srv.get());
    // TLS 1.3 tickets arrive after the handshake: let the client read them.
    const char byte = 'x';
    char got = 0;
    EXPECT_EQ(SSL_write(srv.get(), &byte, 1), 1);
    EXPECT_EQ(SSL_read(client.get(), &got, 1), 1);
    out.session = std::move(new_session());
    return out;
  }

  static bssl::UniquePtr<SSL_SESSION>& new_session() {
    static thread_local bssl::UniquePtr<SSL_SESSION> session;
    return session;
  }

  static inline fs::path* dir_ = nullptr;
};

const char* name_of(client_cert_mode mode) {
  switch (mode) {
    case client_cert_mode::none:
      return "none";
    case client_cert_mode::optional:
      return "optional";
    case client_cert_mode::required:
      return "required";
  }
  return "?";
}

TEST_F(core_client_verify, every_mode_against_every_kind_of_certificate) {
  auto context = server(client_config());
  struct expectation {
    std::string cert;
    bool accepted;    // in optional and required mode
    std::string why;  // verification_failure() when refused
  };
  const std::vector<expectation> cases = {
      {"", true, ""},  // required mode: refused, "none presented" (below)
      {"client-alice", true, ""},
      {"client-bob", true, ""},
      {"client-expired", false, "expired"},
      {"client-other-ca", false, "unknown CA"},
      {"client-revoked", false, "revoked"},
      {"server-ecdsa", false, "unusable"},  // serverAuth only
  };
  for (const uint16_t version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    for (const auto mode : {client_cert_mode::none, client_cert_mode::optional, client_cert_mode::required}) {
      for (const auto& c : cases) {
        SCOPED_TRACE(std::string(name_of(mode)) + " mode, " + (c.cert.empty() ? "no certificate" : c.cert) +
                     (version == TLS1_3_VERSION ? ", TLS 1.3" : ", TLS 1.2"));
        const result r = handshake(*context, mode, c.cert, version);
        if (mode == client_cert_mode::none) {
          // Nothing is asked for, so nothing is sent or checked.
          EXPECT_TRUE(r.ok);
          EXPECT_FALSE(r.peer.presented);
          EXPECT_EQ(r.failure, "");
          continue;
        }
        if (c.cert.empty()) {
          const bool required = mode == client_cert_mode::required;
          EXPECT_EQ(r.ok, !required);
          EXPECT_FALSE(r.peer.presented);
          EXPECT_FALSE(r.peer.verified);
          EXPECT_EQ(r.failure, required ? "none presented" : "");
          EXPECT_EQ(r.failure_queued, r.failure);
          continue;
        }
        EXPECT_EQ(r.ok, c.accepted);
        EXPECT_EQ(r.failure, c.why);
        EXPECT_EQ(r.failure_queued, c.why);
        if (c.accepted) {
          EXPECT_TRUE(r.peer.presented);
          EXPECT_TRUE(r.peer.verified);
        }
      }
    }
  }
}

TEST_F(core_client_verify, inspect_peer_reads_the_certificate) {
  auto context = server(client_config());
  const result r = handshake(*context, client_cert_mode::optional, "client-alice");
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(r.peer.presented);
  EXPECT_TRUE(r.peer.verified);
  EXPECT_EQ(r.peer.subject, "CN=alice,O=smtpguard development");
  EXPECT_EQ(r.peer.common_name, "alice");
  EXPECT_EQ(r.peer.emails, std::vector<std::string>{"alice@example.test"});

  std::string fingerprint =
      run("openssl x509 -noout -fingerprint -sha256 -in " + shell_quote(path("client-alice.pem")));
  fingerprint = fingerprint.substr(fingerprint.find('=') + 1);
  std::erase_if(fingerprint, [](char c) { return c == ':' || c == '\n'; });
  std::transform(fingerprint.begin(), fingerprint.end(), fingerprint.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  ASSERT_EQ(fingerprint.size(), 64u);
  EXPECT_EQ(r.peer.sha256, fingerprint);

  const result bob = handshake(*context, client_cert_mode::required, "client-bob", TLS1_2_VERSION);
  ASSERT_TRUE(bob.ok);
  EXPECT_EQ(bob.peer.common_name, "bob");
  EXPECT_EQ(bob.peer.emails, std::vector<std::string>{"bob@example.test"});
  EXPECT_NE(bob.peer.sha256, r.peer.sha256);
}

TEST_F(core_client_verify, crl_is_optional) {
  auto context = server(client_config(false));
  const result r = handshake(*context, client_cert_mode::required, "client-revoked");
  EXPECT_TRUE(r.ok);
  EXPECT_TRUE(r.peer.verified);
  EXPECT_EQ(r.peer.common_name, "carol");
  EXPECT_EQ(r.failure, "");
}

TEST_F(core_client_verify, without_a_ca_nothing_verifies) {
  // No CA configured: configuration is a no-op and any certificate is unknown.
  auto context = server(client_certificates_config{});
  EXPECT_EQ(handshake(*context, client_cert_mode::optional, "client-alice").failure, "unknown CA");
  EXPECT_TRUE(handshake(*context, client_cert_mode::optional, "").ok);
}

TEST_F(core_client_verify, verify_depth_counts_intermediates) {
  auto config = client_config(false);
  config.ca = path("bundle.pem");
  for (int depth : {0, 1, 2}) {
    SCOPED_TRACE("verify_depth " + std::to_string(depth));
    config.verify_depth = depth;
    auto context = server(config);
    // alice: issued directly by a trusted CA. deep: one intermediate.
    EXPECT_TRUE(handshake(*context, client_cert_mode::required, "client-alice").ok);
    const result deep = handshake(*context, client_cert_mode::required, "client-deep");
    EXPECT_EQ(deep.ok, depth >= 1);
    EXPECT_EQ(deep.failure, depth >= 1 ? "" : "chain too long");
    if (deep.ok) {
      EXPECT_EQ(deep.peer.subject, "CN=deep");
    }
  }
}

TEST_F(core_client_verify, crl_check_all_needs_a_crl_for_every_ca) {
  // The intermediate's and the depth root's CRLs are missing: with CRLs
  // configured, such chains cannot be checked and are refused.
  auto config = client_config();
  config.ca = path("bundle.pem");
  auto context = server(config);
  EXPECT_TRUE(handshake(*context, client_cert_mode::required, "client-alice").ok);
  const result deep = handshake(*context, client_cert_mode::required, "client-deep");
  EXPECT_FALSE(deep.ok);
  EXPECT_EQ(deep.failure, "invalid: unable to get certificate CRL");
}

TEST_F(core_client_verify, resumption_keeps_the_certificate_within_one_mode) {
  auto context = server(client_config());
  for (const uint16_t version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    SCOPED_TRACE(version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2");
    const result first = handshake(*context, client_cert_mode::optional, "client-alice", version);
    ASSERT_TRUE(first.ok);
    ASSERT_TRUE(first.session);
    const result again =
        handshake(*context, client_cert_mode::optional, "client-alice", version, first.session.get());
    ASSERT_TRUE(again.ok);
    EXPECT_TRUE(again.resumed);
    EXPECT_TRUE(again.peer.presented);
    EXPECT_TRUE(again.peer.verified);
    EXPECT_EQ(again.peer.sha256, first.peer.sha256);
    EXPECT_EQ(again.peer.subject, "CN=alice,O=smtpguard development");

    // Where certificates are not asked for, the session is not resumed and no
    // certificate shows up.
    const result ignored =
        handshake(*context, client_cert_mode::none, "client-alice", version, first.session.get());
    ASSERT_TRUE(ignored.ok);
    EXPECT_FALSE(ignored.resumed);
    EXPECT_FALSE(ignored.peer.presented);

    // A session made without a certificate does not get around "required".
    const result anonymous = handshake(*context, client_cert_mode::optional, "", version);
    ASSERT_TRUE(anonymous.ok);
    ASSERT_TRUE(anonymous.session);
    const result refused =
        handshake(*context, client_cert_mode::required, "", version, anonymous.session.get());
    EXPECT_FALSE(refused.ok);
    EXPECT_EQ(refused.failure, "none presented");
  }
}

TEST_F(core_client_verify, request_sets_the_verify_mode) {
  auto context = server(client_config());
  bssl::UniquePtr<SSL> ssl(SSL_new(context->native_handle()));
  request_client_certificate(ssl.get(), client_cert_mode::required);
  EXPECT_EQ(SSL_get_verify_mode(ssl.get()), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
  request_client_certificate(ssl.get(), client_cert_mode::optional);
  EXPECT_EQ(SSL_get_verify_mode(ssl.get()), SSL_VERIFY_PEER);
  request_client_certificate(ssl.get(), client_cert_mode::none);
  EXPECT_EQ(SSL_get_verify_mode(ssl.get()), SSL_VERIFY_NONE);
  // Asking again in another mode leaves the session ID context of that mode.
  auto context_of = [](const SSL* s) {
    std::size_t length = 0;
    const uint8_t* data = SSL_get0_session_id_context(s, &length);
    return std::string(reinterpret_cast<const char*>(data), length);
  };
  bssl::UniquePtr<SSL> fresh(SSL_new(context->native_handle()));
  const std::string base = context_of(fresh.get());
  EXPECT_EQ(context_of(ssl.get()), base);
  request_client_certificate(fresh.get(), client_cert_mode::required);
  const std::string required = context_of(fresh.get());
  EXPECT_NE(required, base);
  request_client_certificate(ssl.get(), client_cert_mode::required);
  EXPECT_EQ(context_of(ssl.get()), required);
  // Nothing happened yet: nothing to report.
  EXPECT_FALSE(inspect_peer(ssl.get()).presented);
  EXPECT_EQ(verification_failure(ssl.get()), "");
}

TEST_F(core_client_verify, configuration_errors_name_the_file) {
  auto error_of = [](const client_certificates_config& config) -> std::string {
    bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
    try {
      configure_client_verification(ctx.get(), config);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "no error";
  };
  auto config = client_config();
  config.ca = path("absent.pem");
  EXPECT_TRUE(error_of(config).starts_with(path("absent.pem") + ": cannot open")) << error_of(config);
  config.ca = path("ca.key");
  EXPECT_TRUE(error_of(config).starts_with(path("ca.key") + ": no CA certificate found")) << error_of(config);
  config = client_config();
  config.crl = {path("crl.pem"), path("ca.pem")};
  EXPECT_TRUE(error_of(config).starts_with(path("ca.pem") + ": no CRL found")) << error_of(config);
  config.crl = {path("absent-crl.pem")};
  EXPECT_TRUE(error_of(config).starts_with(path("absent-crl.pem") + ": cannot open")) << error_of(config);
  {
    std::ofstream damaged(path("damaged.pem"));
    damaged << "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n";
  }
  config = client_config();
  config.ca = path("damaged.pem");
  EXPECT_TRUE(error_of(config).starts_with(path("damaged.pem") + ": cannot read CA certificate"))
      << error_of(config);
  EXPECT_EQ(error_of(client_certificates_config{}), "no error");
}

TEST_F(core_client_verify, certificate_request_names_the_cas) {
  auto config = client_config();
  config.ca = path("bundle.pem");
  auto context = server(config);
  const STACK_OF(X509_NAME)* names = SSL_CTX_get_client_CA_list(context->native_handle());
  ASSERT_NE(names, nullptr);
  ASSERT_EQ(sk_X509_NAME_num(names), 2u);  // duplicates listed once
  char line[256];
  X509_NAME_oneline(sk_X509_NAME_value(names, 0), line, sizeof line);
  EXPECT_EQ(std::string(line), "/O=smtpguard development/CN=smtpguard development CA");
  X509_NAME_oneline(sk_X509_NAME_value(names, 1), line, sizeof line);
  EXPECT_EQ(std::string(line), "/CN=depth root");
}

}  // namespace
}  // namespace smtpguard::tls

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tls/boringssl.hpp"
#include "tls/credentials.hpp"
#include "tls/server_context.hpp"
#include "tls_memory_handshake.hpp"

namespace smtpguard::tls {
namespace {

namespace fs = std::filesystem;

bssl::UniquePtr<EVP_PKEY> ec_key(int curve) {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(curve));
  if (!ec || !EC_KEY_generate_key(ec.get())) throw std::runtime_error("EC key generation failed");
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  EVP_PKEY_set1_EC_KEY(key.get(), ec.get());
  return key;
}

bssl::UniquePtr<EVP_PKEY> rsa_key() {
  bssl::UniquePtr<RSA> rsa(RSA_new());
  bssl::UniquePtr<BIGNUM> exponent(BN_new());
  BN_set_word(exponent.get(), RSA_F4);
  if (!RSA_generate_key_ex(rsa.get(), 2048, exponent.get(), nullptr))
    throw std::runtime_error("RSA key generation failed");
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  EVP_PKEY_set1_RSA(key.get(), rsa.get());
  return key;
}

bssl::UniquePtr<EVP_PKEY> ed25519_key() {
  bssl::UniquePtr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
  EVP_PKEY* key = nullptr;
  if (!ctx || !EVP_PKEY_keygen_init(ctx.get()) || !EVP_PKEY_keygen(ctx.get(), &key))
    throw std::runtime_error("Ed25519 key generation failed");
  return bssl::UniquePtr<EVP_PKEY>(key);
}

/// A self-signed leaf for `key` with the given subjectAltName DNS entries.
bssl::UniquePtr<X509> self_signed(EVP_PKEY* key, std::initializer_list<const char*> dns_names) {
  bssl::UniquePtr<X509> cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const uint8_t*>("test"), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  X509_set_pubkey(cert.get(), key);
  bssl::UniquePtr<GENERAL_NAMES> names(sk_GENERAL_NAME_new_null());
  for (const char* dns : dns_names) {
    bssl::UniquePtr<GENERAL_NAME> entry(GENERAL_NAME_new());
    ASN1_IA5STRING* value = ASN1_IA5STRING_new();
    ASN1_STRING_set(value, dns, -1);
    GENERAL_NAME_set0_value(entry.get(), GEN_DNS, value);
    sk_GENERAL_NAME_push(names.get(), entry.release());
  }
  X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names.get(), 0, 0);
  if (!X509_sign(cert.get(), key, EVP_PKEY_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256()))
    throw std::runtime_error("signing failed");
  return cert;
}

std::vector<uint8_t> der_of(X509* cert) {
  std::vector<uint8_t> der(static_cast<std::size_t>(i2d_X509(cert, nullptr)));
  uint8_t* out = der.data();
  i2d_X509(cert, &out);
  return der;
}

/// Which of our certificates a handshake ended with, or "failed".
struct outcome {
  std::string served;
  uint16_t version = 0;
};

class core_tls_context : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = (fs::temp_directory_path() / "smtpguard-tls-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = new fs::path(pattern);
    auto p256 = ec_key(NID_X9_62_prime256v1);
    auto p384 = ec_key(NID_secp384r1);
    auto p521 = ec_key(NID_secp521r1);
    auto rsa = rsa_key();
    auto ed = ed25519_key();
    auto other_ec = ec_key(NID_X9_62_prime256v1);
    auto other_rsa = rsa_key();
    auto wild_rsa = rsa_key();
    add("p256", p256.get(), self_signed(p256.get(), {"Mail.Example.Test", "localhost"}).get());
    add("p384", p384.get(), self_signed(p384.get(), {"p384.example.test"}).get());
    add("rsa", rsa.get(), self_signed(rsa.get(), {"mail.example.test"}).get());
    add("p521", p521.get(), self_signed(p521.get(), {}).get());
    add("other_ec", other_ec.get(), self_signed(other_ec.get(), {"other.example.test"}).get());
    add("other_rsa", other_rsa.get(), self_signed(other_rsa.get(), {"other.example.test"}).get());
    add("wild_rsa", wild_rsa.get(), self_signed(wild_rsa.get(), {"*.wild.example.test"}).get());
    add("ed25519", ed.get(), self_signed(ed.get(), {}).get());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  static void add(const std::string& name, EVP_PKEY* key, X509* cert) {
    bssl::UniquePtr<BIO> cert_out(BIO_new_file(path(name + ".pem").c_str(), "w"));
    bssl::UniquePtr<BIO> key_out(BIO_new_file(path(name + ".key").c_str(), "w"));
    ASSERT_TRUE(PEM_write_bio_X509(cert_out.get(), cert));
    ASSERT_TRUE(PEM_write_bio_PrivateKey(key_out.get(), key, nullptr, nullptr, 0, nullptr, nullptr));
    ders()[der_of(cert)] = name;
  }

  static std::string path(const std::string& file) { return (*dir_ / file).string(); }
  static certificate_config pair(const std::string& name, std::vector<std::string> names = {}) {
    return {path(name + ".pem"), path(name + ".key"), std::move(names)};
  }
  static std::map<std::vector<uint8_t>, std::string>& ders() {
    static std::map<std::vector<uint8_t>, std::string> by_der;
    return by_der;
  }

  static tls_config with(std::initializer_list<const char*> names) {
    tls_config config;
    for (const char* name : names) config.certificates.push_back(pair(name));
    return config;
  }

  /// A whole handshake in memory against `server`, with a BoringSSL client
  /// limited to `max_version`, `ciphers` (TLS 1.2) and `sigalgs` (if any).
  static outcome handshake(asio::ssl::context& server, uint16_t max_version, const char* ciphers = nullptr,
                           std::vector<uint16_t> sigalgs = {}) {
    return handshake_named(server, nullptr, max_version, ciphers, std::move(sigalgs));
  }

  /// The same, sending `server_name` in SNI unless it is null.
  static outcome handshake_named(asio::ssl::context& server, const char* server_name,
                                 uint16_t max_version = TLS1_3_VERSION, const char* ciphers = nullptr,
                                 std::vector<uint16_t> sigalgs = {}) {
    bssl::UniquePtr<SSL_CTX> client_ctx(SSL_CTX_new(TLS_method()));
    SSL_CTX_set_max_proto_version(client_ctx.get(), max_version);
    if (ciphers) SSL_CTX_set_strict_cipher_list(client_ctx.get(), ciphers);
    if (!sigalgs.empty()) SSL_CTX_set_verify_algorithm_prefs(client_ctx.get(), sigalgs.data(), sigalgs.size());
    bssl::UniquePtr<SSL> client(SSL_new(client_ctx.get()));
    if (server_name) SSL_set_tlsext_host_name(client.get(), server_name);
    bssl::UniquePtr<SSL> srv(SSL_new(server.native_handle()));
    in_memory::connect_in_memory(client.get(), srv.get());
    if (!in_memory::drive_handshake(client.get(), srv.get())) {
      ERR_clear_error();
      return {"failed", 0};
    }
    bssl::UniquePtr<X509> peer(SSL_get_peer_certificate(client.get()));
    if (!peer) return {"none", 0};
    auto found = ders().find(der_of(peer.get()));
    return {found == ders().end() ? "unknown" : found->second, static_cast<uint16_t>(SSL_version(client.get()))};
  }

  static inline fs::path* dir_ = nullptr;
};

TEST_F(core_tls_context, loads_and_classifies_credentials) {
  const credential p256 = credential::load(pair("p256"));
  EXPECT_EQ(p256.kind(), key_kind::ec_p256);
  EXPECT_TRUE(p256.is_ecdsa());
  EXPECT_EQ(p256.chain_size(), 1u);
  EXPECT_EQ(p256.dns_names(), (std::vector<std::string>{"mail.example.test", "localhost"}));
  EXPECT_EQ(credential::load(pair("p384")).kind(), key_kind::ec_p384);
  const credential rsa = credential::load(pair("rsa"));
  EXPECT_EQ(rsa.kind(), key_kind::rsa);
  EXPECT_FALSE(rsa.is_ecdsa());
}

TEST_F(core_tls_context, refuses_bad_pairs_naming_the_file) {
  auto error_of = [](const certificate_config& config) -> std::string {
    try {
      tls_config tls;
      tls.certificates = {config};
      make_server_context(tls);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "no error";
  };
  const std::string mismatch = error_of({path("p256.pem"), path("rsa.key"), {}});
  EXPECT_TRUE(mismatch.starts_with(path("rsa.key") + ": private key does not match " + path("p256.pem"))) << mismatch;
  const std::string missing_cert = error_of({path("absent.pem"), path("p256.key"), {}});
  EXPECT_TRUE(missing_cert.starts_with(path("absent.pem") + ": cannot load certificate chain")) << missing_cert;
  const std::string missing_key = error_of({path("p256.pem"), path("absent.key"), {}});
  EXPECT_TRUE(missing_key.starts_with(path("absent.key") + ": cannot load private key")) << missing_key;
  const std::string not_a_cert = error_of({path("p256.key"), path("p256.key"), {}});
  EXPECT_TRUE(not_a_cert.starts_with(path("p256.key") + ": cannot load certificate chain")) << not_a_cert;
  const std::string p521 = error_of(pair("p521"));
  EXPECT_TRUE(p521.starts_with(path("p521.key") + ": unsupported EC curve")) << p521;
  const std::string ed25519 = error_of(pair("ed25519"));
  EXPECT_TRUE(ed25519.starts_with(path("ed25519.key") + ": unsupported key type")) << ed25519;
  EXPECT_THROW(make_server_context(tls_config{}), std::runtime_error);
}

TEST_F(core_tls_context, single_certificate_is_always_served) {
  auto rsa_only = make_server_context(with({"rsa"}));
  EXPECT_EQ(handshake(*rsa_only, TLS1_3_VERSION).served, "rsa");
  EXPECT_EQ(handshake(*rsa_only, TLS1_2_VERSION).served, "rsa");
  // Nothing to switch to: an ECDSA-only client fails as it always did.
  EXPECT_EQ(handshake(*rsa_only, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256").served, "failed");
  auto ecdsa_only = make_server_context(with({"p256"}));
  EXPECT_EQ(handshake(*ecdsa_only, TLS1_3_VERSION).served, "p256");
}

TEST_F(core_tls_context, ecdsa_preferred_rsa_when_the_client_needs_it) {
  // Configuration order does not matter: ECDSA is preferred either way.
  for (auto config : {with({"p256", "rsa"}), with({"rsa", "p256"})}) {
    auto server = make_server_context(config);
    const outcome modern = handshake(*server, TLS1_3_VERSION);
    EXPECT_EQ(modern.served, "p256");
    EXPECT_EQ(modern.version, TLS1_3_VERSION);
    EXPECT_EQ(handshake(*server, TLS1_3_VERSION, nullptr, {SSL_SIGN_RSA_PSS_RSAE_SHA256}).served, "rsa");
    EXPECT_EQ(handshake(*server, TLS1_3_VERSION, nullptr, {SSL_SIGN_ECDSA_SECP256R1_SHA256}).served, "p256");
    EXPECT_EQ(handshake(*server, TLS1_2_VERSION).served, "p256");
    EXPECT_EQ(handshake(*server, TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256").served, "rsa");
    EXPECT_EQ(handshake(*server, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256").served, "p256");
    EXPECT_EQ(handshake(*server, TLS1_2_VERSION, nullptr, {SSL_SIGN_RSA_PKCS1_SHA256}).served, "rsa");
    // TLS 1.2 ECDSA code points do not name a curve; TLS 1.3 ones do.
    EXPECT_EQ(handshake(*server, TLS1_2_VERSION, nullptr, {SSL_SIGN_ECDSA_SECP384R1_SHA384}).served, "p256");
    EXPECT_EQ(
        handshake(*server, TLS1_3_VERSION, nullptr, {SSL_SIGN_ECDSA_SECP384R1_SHA384, SSL_SIGN_RSA_PSS_RSAE_SHA256})
            .served,
        "rsa");
  }
}

TEST_F(core_tls_context, p384_and_p256_are_told_apart_in_tls_1_3) {
  auto server = make_server_context(with({"p384", "p256", "rsa"}));
  EXPECT_EQ(handshake(*server, TLS1_3_VERSION).served, "p384");
  EXPECT_EQ(handshake(*server, TLS1_3_VERSION, nullptr, {SSL_SIGN_ECDSA_SECP256R1_SHA256}).served, "p256");
  EXPECT_EQ(handshake(*server, TLS1_3_VERSION, nullptr, {SSL_SIGN_RSA_PSS_RSAE_SHA384}).served, "rsa");
}

TEST_F(core_tls_context, selection_without_signature_algorithms_extension) {
  // TLS 1.2 clients may omit the extension, implying SHA-1 with either key;
  // the cipher suites alone then decide. BoringSSL clients always send it, so
  // this is checked on the selection rule directly.
  std::vector<credential> loaded;
  loaded.push_back(credential::load(pair("rsa")));
  loaded.push_back(credential::load(pair("p256")));
  const tls12_suites suites{{0xc02b}, {0xc02f}};  // ECDHE-{ECDSA,RSA}-AES128-GCM-SHA256
  const credential_set set(std::move(loaded), suites);
  ASSERT_EQ(set.preferred().kind(), key_kind::ec_p256);

  const uint8_t rsa_suite[] = {0xc0, 0x2f};
  const uint8_t both_suites[] = {0xc0, 0x2f, 0xc0, 0x2b};
  const uint8_t p384_only[] = {0x00, 0x18};
  client_offer offer;
  offer.cipher_suites = u16_list(rsa_suite);
  ASSERT_NE(set.select(offer), nullptr);
  EXPECT_EQ(set.select(offer)->kind(), key_kind::rsa);
  offer.cipher_suites = u16_list(both_suites);
  EXPECT_EQ(set.select(offer)->kind(), key_kind::ec_p256);
  // RFC 8422 5.1: the certificate's curve must be one the client listed.
  offer.supported_groups = u16_list(p384_only);
  EXPECT_EQ(set.select(offer)->kind(), key_kind::rsa);
  // TLS 1.3 makes the extension mandatory: nothing can serve such a hello.
  offer.tls13 = true;
  EXPECT_EQ(set.select(offer), nullptr);
}

TEST_F(core_tls_context, shared_context_survives_concurrent_handshakes) {
  auto server = make_server_context(with({"p256", "rsa"}));
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const bool want_rsa = (i + t) % 2 == 0;
        const outcome got = handshake(*server, TLS1_2_VERSION,
                                      want_rsa ? "ECDHE-RSA-AES128-GCM-SHA256" : "ECDHE-ECDSA-AES128-GCM-SHA256");
        if (got.served != (want_rsa ? "rsa" : "p256")) ++wrong;
      }
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(core_tls_context, server_name_patterns) {
  EXPECT_TRUE(server_name_matches("mail.example.test", "mail.example.test"));
  EXPECT_TRUE(server_name_matches("mail.example.test", "MAIL.Example.Test"));
  EXPECT_FALSE(server_name_matches("mail.example.test", "mail.example.test.org"));
  EXPECT_FALSE(server_name_matches("mail.example.test", "example.test"));
  EXPECT_TRUE(server_name_matches("*.wild.example.test", "a.wild.example.test"));
  EXPECT_TRUE(server_name_matches("*.wild.example.test", "Smtp-1.WILD.example.test"));
  // Exactly one extra label, a whole one.
  EXPECT_FALSE(server_name_matches("*.wild.example.test", "wild.example.test"));
  EXPECT_FALSE(server_name_matches("*.wild.example.test", ".wild.example.test"));
  EXPECT_FALSE(server_name_matches("*.wild.example.test", "b.a.wild.example.test"));
  EXPECT_FALSE(server_name_matches("*.wild.example.test", "awild.example.test"));
  EXPECT_FALSE(server_name_matches("*.wild.example.test", "*.wild.example.test"));
  EXPECT_FALSE(server_name_matches("*.wild.example.test", "a.wild.example.org"));
  EXPECT_FALSE(server_name_matches("a.wild.example.test", "*.wild.example.test"));
}

TEST_F(core_tls_context, names_default_to_san_and_configured_ones_replace_them) {
  const credential by_san = credential::load(pair("p256"));
  EXPECT_EQ(by_san.server_names(), (std::vector<std::string>{"mail.example.test", "localhost"}));
  EXPECT_TRUE(by_san.answers_for("Mail.Example.Test"));
  const credential configured = credential::load(pair("p256", {"Alias.Example.Test", "*.alias.example.test"}));
  EXPECT_EQ(configured.server_names(), (std::vector<std::string>{"alias.example.test", "*.alias.example.test"}));
  EXPECT_EQ(configured.dns_names(), by_san.dns_names());
  EXPECT_FALSE(configured.answers_for("mail.example.test"));
  EXPECT_TRUE(configured.answers_for("x.alias.example.test"));
}

TEST_F(core_tls_context, sni_picks_the_key_type_among_the_certificates_for_the_name) {
  auto server = make_server_context(with({"rsa", "other_rsa", "p256", "wild_rsa", "other_ec"}));
  const char* rsa_suite = "ECDHE-RSA-AES128-GCM-SHA256";
  const char* ecdsa_suite = "ECDHE-ECDSA-AES128-GCM-SHA256";
  const std::vector<uint16_t> rsa_sigalgs{SSL_SIGN_RSA_PSS_RSAE_SHA256};

  EXPECT_EQ(handshake_named(*server, "mail.example.test").served, "p256");
  EXPECT_EQ(handshake_named(*server, "mail.example.test", TLS1_2_VERSION).served, "p256");
  EXPECT_EQ(handshake_named(*server, "mail.example.test", TLS1_2_VERSION, rsa_suite).served, "rsa");
  EXPECT_EQ(handshake_named(*server, "mail.example.test", TLS1_3_VERSION, nullptr, rsa_sigalgs).served, "rsa");

  EXPECT_EQ(handshake_named(*server, "other.example.test").served, "other_ec");
  EXPECT_EQ(handshake_named(*server, "other.example.test", TLS1_2_VERSION, ecdsa_suite).served, "other_ec");
  EXPECT_EQ(handshake_named(*server, "other.example.test", TLS1_2_VERSION, rsa_suite).served, "other_rsa");
  EXPECT_EQ(handshake_named(*server, "other.example.test", TLS1_3_VERSION, nullptr, rsa_sigalgs).served,
            "other_rsa");
  // SNI is case-insensitive (RFC 6066 3, host names compare as DNS names).
  EXPECT_EQ(handshake_named(*server, "OTHER.Example.TEST").served, "other_ec");
  EXPECT_EQ(handshake_named(*server, "Other.Example.Test", TLS1_2_VERSION, rsa_suite).served, "other_rsa");

  // Only an RSA certificate answers for the wildcard: it wins over ECDSA.
  EXPECT_EQ(handshake_named(*server, "a.wild.example.test").served, "wild_rsa");
  EXPECT_EQ(handshake_named(*server, "A.Wild.Example.Test", TLS1_2_VERSION).served, "wild_rsa");
  EXPECT_EQ(handshake_named(*server, "b.a.wild.example.test").served, "p256");
  EXPECT_EQ(handshake_named(*server, "wild.example.test").served, "p256");
}

TEST_F(core_tls_context, unknown_or_missing_sni_gets_the_default) {
  // The default is the first configured ECDSA certificate, whatever its names.
  for (auto [config, ecdsa_default] : {std::pair{with({"rsa", "p256", "other_ec", "other_rsa"}), "p256"},
                                       std::pair{with({"other_rsa", "other_ec", "rsa", "p256"}), "other_ec"}}) {
    auto server = make_server_context(config);
    const char* rsa_default = ecdsa_default == std::string("p256") ? "rsa" : "other_rsa";
    for (const char* name : {static_cast<const char*>(nullptr), "unknown.example.test", "example.test"}) {
      const std::string label = name ? name : "(no SNI)";
      EXPECT_EQ(handshake_named(*server, name).served, ecdsa_default) << label;
      EXPECT_EQ(handshake_named(*server, name, TLS1_2_VERSION).served, ecdsa_default) << label;
      EXPECT_EQ(handshake_named(*server, name, TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256").served, rsa_default)
          << label;
    }
  }
}

TEST_F(core_tls_context, configured_names_replace_san_names_in_handshakes) {
  tls_config config;
  config.certificates = {pair("other_ec"), pair("p256", {"alias.example.test", "*.alias.example.test"})};
  auto server = make_server_context(config);
  EXPECT_EQ(handshake_named(*server, "alias.example.test").served, "p256");
  EXPECT_EQ(handshake_named(*server, "smtp.Alias.Example.Test").served, "p256");
  // p256's own SAN names no longer count: mail.example.test is unknown now.
  EXPECT_EQ(handshake_named(*server, "mail.example.test").served, "other_ec");
  EXPECT_EQ(handshake_named(*server, "other.example.test").served, "other_ec");
}

TEST_F(core_tls_context, name_match_the_client_cannot_use_falls_back_to_another_certificate) {
  // The wildcard's only certificate is RSA; an ECDSA-only TLS 1.2 client still
  // completes a handshake, with the default certificate.
  auto server = make_server_context(with({"wild_rsa", "p256"}));
  EXPECT_EQ(handshake_named(*server, "a.wild.example.test", TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256").served,
            "p256");
  EXPECT_EQ(handshake_named(*server, "a.wild.example.test", TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256").served,
            "wild_rsa");
}

TEST_F(core_tls_context, single_certificate_is_served_for_any_name) {
  auto server = make_server_context(with({"rsa"}));
  EXPECT_EQ(handshake_named(*server, "other.example.test").served, "rsa");
  EXPECT_EQ(handshake_named(*server, "mail.example.test").served, "rsa");
}

}  // namespace
}  // namespace smtpguard::tls

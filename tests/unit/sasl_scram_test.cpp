#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "auth/scram_secret.hpp"
#include "sasl/base64.hpp"
#include "sasl/exchange.hpp"
#include "sasl/scram.hpp"

namespace smtpguard::sasl {
namespace {

using kind = step::kind;

// RFC 7677 section 3, the whole exchange: user "user", password "pencil".
constexpr const char* client_nonce = "rOprNGfwEbeRWgbNEkqO";
constexpr const char* server_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr const char* client_first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr const char* server_first =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr const char* client_final =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr const char* server_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

auth::scram_secret pencil() {
  return auth::make_scram_secret("pencil", *base64_decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096);
}

struct lookups {
  std::vector<std::string> names;
  scram_server::secret_lookup function() {
    return [this](std::string_view user) {
      names.emplace_back(user);
      return pencil();
    };
  }
};

TEST(sasl_scram, rfc7677_exchange) {
  lookups asked;
  scram_server server(asked.function(), server_nonce);
  EXPECT_EQ(server.first(client_first), server_first);
  EXPECT_EQ(asked.names, std::vector<std::string>{"user"});
  EXPECT_EQ(server.final(client_final), scram_server::verdict::verified);
  EXPECT_EQ(server.server_final(), server_final);
  EXPECT_EQ(server.user(), "user");
  EXPECT_EQ(server.authzid(), "");
  // One proof per exchange: a second final message is refused.
  EXPECT_EQ(server.final(client_final), scram_server::verdict::malformed);
  EXPECT_EQ(server.first(client_first), std::nullopt);
}

TEST(sasl_scram, wrong_proof) {
  lookups asked;
  scram_server server(asked.function(), server_nonce);
  ASSERT_TRUE(server.first(client_first));
  std::string tampered = client_final;
  tampered[tampered.size() - 3] = 'W';  // another valid base64 proof
  EXPECT_EQ(server.final(tampered), scram_server::verdict::wrong_proof);
  EXPECT_EQ(server.server_final(), "");
}

TEST(sasl_scram, another_password_fails) {
  scram_server server(
      [](std::string_view) { return auth::make_scram_secret("pencil2", "W22ZaJ0SNY7s", 4096); }, server_nonce);
  ASSERT_TRUE(server.first(client_first));
  EXPECT_EQ(server.final(client_final), scram_server::verdict::wrong_proof);
}

TEST(sasl_scram, final_message_must_match_the_first) {
  const std::string proof = ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
  const std::string nonce = std::string(client_nonce) + server_nonce;
  for (const std::string& bad : std::initializer_list<std::string>{
           "c=biws,r=" + std::string(client_nonce) + proof,                  // the client's nonce alone
           "c=biws,r=" + nonce + "x" + proof,                               // another nonce
           "c=eSws,r=" + nonce + proof,                                     // "y,," is not the header sent
           "c=bixx,r=" + nonce + proof,                                     // not base64 of anything sent
           "r=" + nonce + ",c=biws" + proof,                                // out of order
           "c=biws,r=" + nonce,                                             // no proof
           "c=biws,r=" + nonce + ",p=AAAA",                                 // proof of the wrong size
           "c=biws,r=" + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",  // bad base64
           std::string(""),
       }) {
    lookups asked;
    scram_server server(asked.function(), server_nonce);
    ASSERT_TRUE(server.first(client_first));
    EXPECT_EQ(server.final(bad), scram_server::verdict::malformed) << bad;
  }
}

TEST(sasl_scram, final_may_carry_extensions_before_the_proof) {
  // Unknown optional extensions are signed with the rest and ignored.
  lookups asked;
  scram_server server(asked.function(), server_nonce);
  ASSERT_TRUE(server.first(client_first));
  EXPECT_EQ(server.final("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,x=1,p=" +
                         std::string(43, 'A') + "="),
            scram_server::verdict::wrong_proof);
}

TEST(sasl_scram, client_first_forms) {
  struct row {
    std::string message;
    bool accepted;
    std::string user;
    std::string authzid;
  };
  for (const row& r : std::initializer_list<row>{
           {"n,,n=user,r=abc", true, "user", ""},
           {"y,,n=user,r=abc", true, "user", ""},                   // could bind; we offer no -PLUS
           {"n,a=user,n=user,r=abc", true, "user", ""},             // acting as itself
           {"n,a=admin,n=user,r=abc", true, "user", "admin"},
           {"n,,n=a=2Cb=3Dc,r=abc", true, "a,b=c", ""},             // escaped ',' and '='
           {"n,,n=user,r=abc,x=ext", true, "user", ""},             // optional extension
           {"p=tls-unique,,n=user,r=abc", false, "", ""},           // binding, which only -PLUS does
           {"n,,m=ext,n=user,r=abc", false, "", ""},                // mandatory extension
           {"n,,n=a=41,r=abc", false, "", ""},                      // bad escape
           {"n,,n=a=2,r=abc", false, "", ""},
           {"n,,n=,r=abc", false, "", ""},                          // empty name
           {"n,,n=" + std::string(256, 'u') + ",r=abc", false, "", ""},
           {"n,,n=user,r=", false, "", ""},                         // empty nonce
           {"n,,n=user,r=a\x7f", false, "", ""},
           {"n,,n=user", false, "", ""},
           {"n,,r=abc,n=user", false, "", ""},
           {"n,x=admin,n=user,r=abc", false, "", ""},
           {"x,,n=user,r=abc", false, "", ""},
           {"n,n=user,r=abc", false, "", ""},                       // no gs2 authzid field
           {std::string("n,,n=us\0er,r=abc", 16), false, "", ""},
           {"", false, "", ""},
       }) {
    lookups asked;
    scram_server server(asked.function(), server_nonce);
    const auto reply = server.first(r.message);
    EXPECT_EQ(reply.has_value(), r.accepted) << r.message;
    if (!reply) {
      EXPECT_TRUE(asked.names.empty()) << "no lookup for a malformed message: " << r.message;
      continue;
    }
    EXPECT_TRUE(reply->starts_with(std::string("r=abc") + server_nonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))
        << *reply;
    EXPECT_EQ(server.user(), r.user) << r.message;
    EXPECT_EQ(server.authzid(), r.authzid) << r.message;
  }
}

TEST(sasl_scram, header_with_authzid_is_what_c_must_carry) {
  lookups asked;
  scram_server server(asked.function(), "srv");
  ASSERT_TRUE(server.first("n,a=admin,n=user,r=cli"));
  // base64("n,a=admin,") = "bixhPWFkbWluLA=="; the proof is wrong, the binding right.
  EXPECT_EQ(server.final("c=bixhPWFkbWluLA==,r=clisrv,p=" + std::string(43, 'A') + "="),
            scram_server::verdict::wrong_proof);
}

TEST(sasl_scram, nonces) {
  const std::string a = make_scram_nonce();
  EXPECT_EQ(a.size(), 24u);
  EXPECT_EQ(a.find(','), std::string::npos);
  EXPECT_NE(a, make_scram_nonce());
  EXPECT_THROW(scram_server([](std::string_view) { return pencil(); }, "a,b"), std::invalid_argument);
  EXPECT_THROW(scram_server([](std::string_view) { return pencil(); }, ""), std::invalid_argument);
}

// --- SCRAM-SHA-256-PLUS ------------------------------------------------------

/// The client's proof for `auth_message` with password "pencil" and RFC
/// 7677's salt, from RFC 5802 section 3's formulas.
std::string pencil_proof(std::string_view auth_message) {
  const std::string salt = *base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==");
  std::uint8_t salted[32];
  PKCS5_PBKDF2_HMAC("pencil", 6, reinterpret_cast<const std::uint8_t*>(salt.data()), salt.size(), 4096,
                    EVP_sha256(), sizeof salted, salted);
  std::uint8_t client_key[32];
  unsigned int length = 0;
  HMAC(EVP_sha256(), salted, sizeof salted, reinterpret_cast<const std::uint8_t*>("Client Key"), 10, client_key,
       &length);
  std::uint8_t stored_key[32];
  SHA256(client_key, sizeof client_key, stored_key);
  std::uint8_t signature[32];
  HMAC(EVP_sha256(), stored_key, sizeof stored_key, reinterpret_cast<const std::uint8_t*>(auth_message.data()),
       auth_message.size(), signature, &length);
  std::string proof(32, '\0');
  for (std::size_t i = 0; i < proof.size(); ++i) proof[i] = static_cast<char>(client_key[i] ^ signature[i]);
  return base64_encode(proof);
}

/// A connection whose tls-exporter data is "EXPORTED" and that has no tls-unique.
scram_binding exporter_binding(bool plus, bool plus_offered = true) {
  return {plus, plus_offered, [](std::string_view type) -> std::optional<std::string> {
            if (type == "tls-exporter") return std::string("EXPORTED");
            return std::nullopt;
          }};
}

TEST(sasl_scram_plus, bound_exchange_verifies) {
  lookups asked;
  scram_server server(asked.function(), "srv", exporter_binding(true));
  const std::string bare = "n=user,r=cli";
  const auto server_first_message = server.first("p=tls-exporter,," + bare);
  ASSERT_TRUE(server_first_message);
  const std::string without_proof = "c=" + base64_encode("p=tls-exporter,,EXPORTED") + ",r=clisrv";
  const std::string proof = pencil_proof(bare + "," + *server_first_message + "," + without_proof);
  EXPECT_EQ(server.final(without_proof + ",p=" + proof), scram_server::verdict::verified);
  EXPECT_TRUE(server.server_final().starts_with("v="));
}

TEST(sasl_scram_plus, proof_over_another_channel_fails) {
  // What a man in the middle relays: the client bound its own TLS
  // connection, whose data differs from the server's.
  lookups asked;
  scram_server server(asked.function(), "srv", exporter_binding(true));
  const std::string bare = "n=user,r=cli";
  const auto server_first_message = server.first("p=tls-exporter,," + bare);
  ASSERT_TRUE(server_first_message);
  const std::string without_proof = "c=" + base64_encode("p=tls-exporter,,OTHER") + ",r=clisrv";
  const std::string proof = pencil_proof(bare + "," + *server_first_message + "," + without_proof);
  EXPECT_EQ(server.final(without_proof + ",p=" + proof), scram_server::verdict::malformed);
}

TEST(sasl_scram_plus, header_alone_is_not_the_binding) {
  lookups asked;
  scram_server server(asked.function(), "srv", exporter_binding(true));
  ASSERT_TRUE(server.first("p=tls-exporter,,n=user,r=cli"));
  EXPECT_EQ(server.final("c=" + base64_encode("p=tls-exporter,,") + ",r=clisrv,p=" + std::string(43, 'A') + "="),
            scram_server::verdict::malformed);
}

TEST(sasl_scram_plus, flags_against_mechanism_and_offer) {
  struct row {
    std::string flag;
    bool plus;
    bool plus_offered;
    bool accepted;
  };
  for (const row& r : std::initializer_list<row>{
           {"p=tls-exporter", true, true, true},
           {"p=tls-unique", true, true, false},   // this connection has none
           {"p=bogus", true, true, false},
           {"n", true, true, false},              // -PLUS must bind
           {"y", true, true, false},
           {"p=tls-exporter", false, true, false},  // only -PLUS binds
           {"n", false, true, true},
           {"y", false, false, true},             // the client could bind; we offered no -PLUS
           {"y", false, true, false},             // -PLUS was offered: the client was misled
       }) {
    lookups asked;
    scram_server server(asked.function(), "srv", exporter_binding(r.plus, r.plus_offered));
    EXPECT_EQ(server.first(r.flag + ",,n=user,r=cli").has_value(), r.accepted)
        << r.flag << " plus=" << r.plus << " offered=" << r.plus_offered;
  }
  // -PLUS on a connection that cannot bind at all.
  lookups asked;
  scram_server unbound(asked.function(), "srv", {true, true, {}});
  EXPECT_FALSE(unbound.first("p=tls-exporter,,n=user,r=cli"));
}

TEST(sasl_scram_plus, through_the_exchange) {
  scram_setup setup{[](std::string_view) { return pencil(); }, "srv", exporter_binding(false)};
  server_exchange x(mechanism::scram_sha_256_plus, {}, std::move(setup));
  const step first = x.start(base64_encode("p=tls-exporter,,n=user,r=cli"), true);
  ASSERT_EQ(first.what, kind::challenge);
  const std::string server_first_message = *base64_decode(first.text);
  const std::string without_proof = "c=" + base64_encode("p=tls-exporter,,EXPORTED") + ",r=clisrv";
  const std::string proof = pencil_proof("n=user,r=cli," + server_first_message + "," + without_proof);
  ASSERT_EQ(x.respond(base64_encode(without_proof + ",p=" + proof)).what, kind::challenge);
  ASSERT_EQ(x.respond("").what, kind::complete);
  EXPECT_TRUE(std::get<scram_proof>(x.credentials()).verified);
  EXPECT_EQ(x.which(), mechanism::scram_sha_256_plus);
  EXPECT_EQ(mechanism_name(mechanism::scram_sha_256_plus), "SCRAM-SHA-256-PLUS");
}

// --- through server_exchange (what the session drives) ------------------------

scram_setup rfc_setup() {
  return {[](std::string_view) { return pencil(); }, server_nonce};
}

TEST(sasl_scram_exchange, with_initial_response) {
  server_exchange x(mechanism::scram_sha_256, {}, rfc_setup());
  const step first = x.start(base64_encode(client_first), true);
  ASSERT_EQ(first.what, kind::challenge);
  EXPECT_EQ(base64_decode(first.text), server_first);
  const step second = x.respond(base64_encode(client_final));
  ASSERT_EQ(second.what, kind::challenge);
  EXPECT_EQ(base64_decode(second.text), server_final);
  // Not yet complete: the client must answer the server's proof (RFC 4954).
  const step done = x.respond("");
  ASSERT_EQ(done.what, kind::complete);
  const auto& proof = std::get<scram_proof>(x.credentials());
  EXPECT_TRUE(proof.verified);
  EXPECT_EQ(proof.user, "user");
  EXPECT_EQ(proof.authzid, "");
  EXPECT_EQ(x.respond("").what, kind::malformed);
}

TEST(sasl_scram_exchange, without_initial_response) {
  server_exchange x(mechanism::scram_sha_256, {}, rfc_setup());
  const step empty = x.start("", false);
  ASSERT_EQ(empty.what, kind::challenge);
  EXPECT_EQ(empty.text, "");
  ASSERT_EQ(x.respond(base64_encode(client_first)).what, kind::challenge);
  ASSERT_EQ(x.respond(base64_encode(client_final)).what, kind::challenge);
  ASSERT_EQ(x.respond("").what, kind::complete);
  EXPECT_TRUE(std::get<scram_proof>(x.credentials()).verified);
}

TEST(sasl_scram_exchange, wrong_proof_completes_unverified) {
  server_exchange x(mechanism::scram_sha_256, {}, rfc_setup());
  ASSERT_EQ(x.start(base64_encode(client_first), true).what, kind::challenge);
  std::string tampered = client_final;
  tampered[tampered.size() - 3] = 'W';
  const step s = x.respond(base64_encode(tampered));
  ASSERT_EQ(s.what, kind::complete);
  EXPECT_FALSE(std::get<scram_proof>(x.credentials()).verified);
  EXPECT_EQ(std::get<scram_proof>(x.credentials()).user, "user");
}

TEST(sasl_scram_exchange, ends) {
  {
    server_exchange x(mechanism::scram_sha_256, {}, rfc_setup());
    EXPECT_EQ(x.start("=", true).what, kind::malformed);  // empty client-first
  }
  {
    server_exchange x(mechanism::scram_sha_256, {}, rfc_setup());
    ASSERT_EQ(x.start("", false).what, kind::challenge);
    EXPECT_EQ(x.respond("*").what, kind::cancelled);
  }
  {
    server_exchange x(mechanism::scram_sha_256, {}, rfc_setup());
    ASSERT_EQ(x.start(base64_encode(client_first), true).what, kind::challenge);
    EXPECT_EQ(x.respond("*").what, kind::cancelled);
  }
  {
    server_exchange x(mechanism::scram_sha_256, {}, rfc_setup());
    ASSERT_EQ(x.start(base64_encode(client_first), true).what, kind::challenge);
    ASSERT_EQ(x.respond(base64_encode(client_final)).what, kind::challenge);
    // Anything but an empty answer to the server's proof is refused, unverified.
    EXPECT_EQ(x.respond(base64_encode("x")).what, kind::malformed);
    EXPECT_FALSE(std::holds_alternative<scram_proof>(x.credentials()));
  }
  {
    server_exchange x(mechanism::scram_sha_256, {}, rfc_setup());
    ASSERT_EQ(x.start(base64_encode(client_first), true).what, kind::challenge);
    EXPECT_EQ(x.respond("not base64!").what, kind::malformed);
  }
  EXPECT_THROW(server_exchange(mechanism::scram_sha_256), std::invalid_argument);
}

TEST(sasl_scram_exchange, mechanism_name) {
  EXPECT_EQ(parse_mechanism("scram-sha-256"), mechanism::scram_sha_256);
  EXPECT_EQ(mechanism_name(mechanism::scram_sha_256), "SCRAM-SHA-256");
  EXPECT_EQ(parse_mechanism("scram-sha-256-plus"), mechanism::scram_sha_256_plus);
}

}  // namespace
}  // namespace smtpguard::sasl

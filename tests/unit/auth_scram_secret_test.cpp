#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "auth/scram_secret.hpp"
#include "sasl/base64.hpp"

namespace smtpguard::auth {
namespace {

// RFC 7677 section 3: user "user", password "pencil".
constexpr const char* rfc_salt = "W22ZaJ0SNY7soEsUEjb6gQ==";

scram_secret pencil() { return make_scram_secret("pencil", *sasl::base64_decode(rfc_salt), 4096); }

TEST(auth_scram_secret, text_round_trip_in_rfc5803_form) {
  const scram_secret secret = pencil();
  const std::string text = scram_secret_to_text(secret);
  EXPECT_TRUE(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")) << text;
  const auto parsed = scram_secret_from_text(text);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->iterations, 4096u);
  EXPECT_EQ(parsed->salt, secret.salt);
  EXPECT_EQ(parsed->stored_key, secret.stored_key);
  EXPECT_EQ(parsed->server_key, secret.server_key);
}

TEST(auth_scram_secret, reads_the_dovecot_and_gsasl_form) {
  const scram_secret secret = pencil();
  const std::string rfc = scram_secret_to_text(secret);
  // Same fields, other separators: "{SCRAM-SHA-256}i,salt,stored,server".
  std::string dovecot = "{SCRAM-SHA-256}" + rfc.substr(14);
  for (char& c : dovecot)
    if (c == '$' || c == ':') c = ',';
  const auto parsed = scram_secret_from_text(dovecot);
  ASSERT_TRUE(parsed) << dovecot;
  EXPECT_EQ(parsed->stored_key, secret.stored_key);
  EXPECT_EQ(parsed->server_key, secret.server_key);
  EXPECT_EQ(parsed->salt, secret.salt);
}

TEST(auth_scram_secret, rejects_what_is_not_a_secret) {
  const std::string good = scram_secret_to_text(pencil());
  const std::string keys = good.substr(good.find('$', 14));  // "$stored:server"
  for (const std::string& bad : std::initializer_list<std::string>{
           std::string(""),
           std::string("SCRAM-SHA-256$"),
           "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
           "SCRAM-SHA-256$4095:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,        // under RFC 7677's minimum
           "SCRAM-SHA-256$10000001:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,    // absurd for clients
           "SCRAM-SHA-256$4096x:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
           "SCRAM-SHA-256$-4096:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
           "SCRAM-SHA-256$4096:" + keys,                                 // no salt
           "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=" + keys,         // bad base64
           "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",     // keys too short
           good + "$",
           good + ":x",
           "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,a,b",
           // GNU SASL's verbose output ends in the salted password: refused.
           "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==," + std::string(44, 'A') + "," + std::string(43, 'A') +
               "=," + "00",
       })
    EXPECT_FALSE(scram_secret_from_text(bad)) << bad;
}

TEST(auth_scram_secret, fresh_salts_differ) {
  const scram_secret a = make_scram_secret("pencil", scram_default_iterations);
  const scram_secret b = make_scram_secret("pencil", scram_default_iterations);
  EXPECT_EQ(a.salt.size(), 16u);
  EXPECT_NE(a.salt, b.salt);
  EXPECT_NE(a.stored_key, b.stored_key);
}

// RFC 4013 section 3's examples.
TEST(auth_scram_secret, saslprep) {
  EXPECT_EQ(saslprep("I\xC2\xAD" "X"), "IX");             // SOFT HYPHEN mapped to nothing
  EXPECT_EQ(saslprep("user"), "user");
  EXPECT_EQ(saslprep("USER"), "USER");                     // case preserved
  EXPECT_EQ(saslprep("\xC2\xAA"), "a");                    // FEMININE ORDINAL INDICATOR, NFKC
  EXPECT_EQ(saslprep("\xE2\x85\xA8"), "IX");               // ROMAN NUMERAL NINE, NFKC
  EXPECT_EQ(saslprep("a\xC2\xA0" "b"), "a b");             // non-ASCII space mapped to SPACE
  EXPECT_FALSE(saslprep("\x07"));                          // prohibited control
  EXPECT_FALSE(saslprep("\xD8\xA7" "1"));                  // bidirectional rule
}

}  // namespace
}  // namespace smtpguard::auth

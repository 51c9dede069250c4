#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include <openssl/md5.h>

#include "sasl/base64.hpp"
#include "sasl/digest_md5.hpp"
#include "sasl/exchange.hpp"

namespace smtpguard::sasl {
namespace {

using kind = step::kind;

// RFC 2831 section 4's example (an IMAP login), with its errata's values.
constexpr const char* rfc_realm = "elwood.innosoft.com";
constexpr const char* rfc_nonce = "OA6MG9tEQGm2hh";
const std::string rfc_response =
    "charset=utf-8,username=\"chris\",realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\",nc=00000001,"
    "cnonce=\"OA6MHXh6VqTrRk\",digest-uri=\"imap/elwood.innosoft.com\","
    "response=d388dad90d4bbd760a152321f2143af7,qop=auth";

digest_md5_server::secret_lookup chris() {
  return [](std::string_view) { return make_digest_md5_secret("chris", rfc_realm, "secret"); };
}

TEST(sasl_digest_md5, rfc2831_exchange) {
  digest_md5_server server(chris(), rfc_realm, rfc_nonce, "imap");
  EXPECT_EQ(server.challenge(),
            "realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\",qop=\"auth\",charset=utf-8,algorithm=md5-sess");
  EXPECT_EQ(server.respond(rfc_response), digest_md5_server::verdict::verified);
  EXPECT_EQ(server.rspauth(), "rspauth=ea40f60335c427b5527b84dbabcdfffd");
  EXPECT_EQ(server.user(), "chris");
  EXPECT_EQ(server.authzid(), "");
  EXPECT_EQ(server.respond(rfc_response), digest_md5_server::verdict::malformed) << "one response per exchange";
}

TEST(sasl_digest_md5, wrong_password) {
  digest_md5_server server([](std::string_view) { return make_digest_md5_secret("chris", rfc_realm, "guess"); },
                           rfc_realm, rfc_nonce, "imap");
  EXPECT_EQ(server.respond(rfc_response), digest_md5_server::verdict::wrong_response);
  EXPECT_EQ(server.rspauth(), "");
}

TEST(sasl_digest_md5, responses_that_do_not_fit_the_exchange) {
  auto with = [](std::string from, const std::string& to) {
    std::string text = rfc_response;
    text.replace(text.find(from), from.size(), to);
    return text;
  };
  for (const std::string& bad : std::initializer_list<std::string>{
           with("nonce=\"OA6MG9tEQGm2hh\"", "nonce=\"other\""),
           with("nc=00000001", "nc=00000002"),                         // a replayed nonce
           with("qop=auth", "qop=auth-int"),                           // no layer was offered
           with("realm=\"elwood.innosoft.com\"", "realm=\"elsewhere\""),
           with("imap/elwood", "smtp/elwood"),                          // made for another service
           with("imap/elwood.innosoft.com", "imap/"),
           with("d388dad90d4bbd760a152321f2143af7", "D388DAD90D4BBD760A152321F2143AF7"),
           with("d388dad90d4bbd760a152321f2143af7", "d388dad90d4b"),
           with("charset=utf-8", "charset=latin1"),
           with("cnonce=\"OA6MHXh6VqTrRk\",", ""),
           with("username=\"chris\",", ""),
           with("username=\"chris\"", "username=\"chris\",username=\"chris\""),  // twice
           with("username=\"chris\"", "username=\"chris"),                       // unterminated
           with("username=\"chris\"", "username"),
           with("username=\"chris\"", "=\"chris\""),
           std::string(""),
       }) {
    digest_md5_server server(chris(), rfc_realm, rfc_nonce, "imap");
    EXPECT_EQ(server.respond(bad), digest_md5_server::verdict::malformed) << bad;
  }
}

TEST(sasl_digest_md5, directive_syntax) {
  // Spaces around separators, empty list elements, escapes, any name case.
  const std::string spaced =
      " charset = utf-8 ,, USERNAME=\"ch\\ris\" , realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\","
      "nc=00000001,cnonce=\"OA6MHXh6VqTrRk\",digest-uri=\"imap/elwood.innosoft.com\","
      "response=d388dad90d4bbd760a152321f2143af7,qop=auth, ";
  digest_md5_server server(chris(), rfc_realm, rfc_nonce, "imap");
  EXPECT_EQ(server.respond(spaced), digest_md5_server::verdict::verified);
  EXPECT_EQ(server.user(), "chris");
}

TEST(sasl_digest_md5, authzid) {
  digest_md5_server server(chris(), rfc_realm, rfc_nonce, "imap");
  // A different authzid changes A1, so the RFC's response no longer fits.
  EXPECT_EQ(server.respond(rfc_response + ",authzid=\"admin\""), digest_md5_server::verdict::wrong_response);
  EXPECT_EQ(server.authzid(), "admin");
}

TEST(sasl_digest_md5, secrets_use_latin1_when_they_can) {
  // RFC 2831 2.1.2.1: "é" (U+00E9) is hashed as the one octet 0xE9.
  std::uint8_t expected[16];
  const std::string latin1 = "ren\xE9:realm:pass";
  MD5(reinterpret_cast<const std::uint8_t*>(latin1.data()), latin1.size(), expected);
  const auto secret = make_digest_md5_secret("ren\xC3\xA9", "realm", "pass");
  EXPECT_EQ(std::string(secret.begin(), secret.end()), std::string(std::begin(expected), std::end(expected)));
  // "€" (U+20AC) has no Latin-1 form: everything stays UTF-8.
  const std::string utf8 = "ren\xC3\xA9:realm:\xE2\x82\xAC";
  MD5(reinterpret_cast<const std::uint8_t*>(utf8.data()), utf8.size(), expected);
  const auto other = make_digest_md5_secret("ren\xC3\xA9", "realm", "\xE2\x82\xAC");
  EXPECT_EQ(std::string(other.begin(), other.end()), std::string(std::begin(expected), std::end(expected)));
}

TEST(sasl_digest_md5, through_the_exchange) {
  // The session's path, with the service "smtp": the RFC vector is for IMAP,
  // so a response made for it is refused here.
  server_exchange x(mechanism::digest_md5, {}, {}, {chris(), rfc_realm, rfc_nonce});
  EXPECT_EQ(server_exchange(mechanism::digest_md5, {}, {}, {chris(), rfc_realm, rfc_nonce})
                .start(base64_encode("x"), true)
                .what,
            kind::malformed);
  const step first = x.start("", false);
  ASSERT_EQ(first.what, kind::challenge);
  EXPECT_TRUE(base64_decode(first.text)->starts_with("realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\""));
  EXPECT_EQ(x.respond(base64_encode(rfc_response)).what, kind::malformed);
  EXPECT_EQ(parse_mechanism("digest-md5"), mechanism::digest_md5);
  EXPECT_EQ(mechanism_name(mechanism::digest_md5), "DIGEST-MD5");
  EXPECT_THROW(server_exchange(mechanism::digest_md5), std::invalid_argument);
}

}  // namespace
}  // namespace smtpguard::sasl

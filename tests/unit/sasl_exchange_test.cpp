#include <gtest/gtest.h>

#include <cctype>
#include <stdexcept>
#include <string>

#include "sasl/base64.hpp"
#include "sasl/exchange.hpp"

namespace smtpguard::sasl {
namespace {

using namespace std::string_literals;
using kind = step::kind;

constexpr const char* seed_challenge = "<4874.1007276777@asao.gcd.org>";

const password_proof& password_of(const server_exchange& x) { return std::get<password_proof>(x.credentials()); }
const cram_md5_proof& cram_of(const server_exchange& x) { return std::get<cram_md5_proof>(x.credentials()); }

// --- PLAIN ---------------------------------------------------------------

TEST(sasl_plain, seed_initial_response) {
  server_exchange x(mechanism::plain);
  const step s = x.start("AHNlbmdva3UAc2VjcmV0IHBocmFzZQ==", true);
  ASSERT_EQ(s.what, kind::complete);
  EXPECT_EQ(password_of(x).authzid, "");
  EXPECT_EQ(password_of(x).user, "sengoku");
  EXPECT_EQ(password_of(x).password, "secret phrase");
  EXPECT_EQ(x.which(), mechanism::plain);
}

TEST(sasl_plain, without_initial_response_sends_empty_challenge) {
  server_exchange x(mechanism::plain);
  const step first = x.start("", false);
  ASSERT_EQ(first.what, kind::challenge);
  EXPECT_EQ(first.text, "");
  ASSERT_EQ(x.respond("AHNlbmdva3UAc2VjcmV0IHBocmFzZQ==").what, kind::complete);
  EXPECT_EQ(password_of(x).user, "sengoku");
  EXPECT_EQ(password_of(x).password, "secret phrase");
}

TEST(sasl_plain, empty_initial_response_is_malformed) {
  server_exchange x(mechanism::plain);
  EXPECT_EQ(x.start("=", true).what, kind::malformed);
}

TEST(sasl_plain, authzid_equal_to_user_is_dropped) {
  server_exchange x(mechanism::plain);
  ASSERT_EQ(x.start(base64_encode("sengoku\0sengoku\0secret phrase"s), true).what, kind::complete);
  EXPECT_EQ(password_of(x).authzid, "");
  EXPECT_EQ(password_of(x).user, "sengoku");
}

TEST(sasl_plain, different_authzid_is_kept) {
  server_exchange x(mechanism::plain);
  ASSERT_EQ(x.start(base64_encode("admin\0sengoku\0secret phrase"s), true).what, kind::complete);
  EXPECT_EQ(password_of(x).authzid, "admin");
  EXPECT_EQ(password_of(x).user, "sengoku");
  EXPECT_EQ(password_of(x).password, "secret phrase");
}

TEST(sasl_plain, cancel_at_challenge) {
  server_exchange x(mechanism::plain);
  ASSERT_EQ(x.start("", false).what, kind::challenge);
  EXPECT_EQ(x.respond("*").what, kind::cancelled);
  // The exchange is over: nothing more is accepted.
  EXPECT_EQ(x.respond("AHNlbmdva3UAc2VjcmV0IHBocmFzZQ==").what, kind::malformed);
}

TEST(sasl_plain, star_as_initial_response_is_malformed) {
  server_exchange x(mechanism::plain);
  EXPECT_EQ(x.start("*", true).what, kind::malformed);
}

TEST(sasl_plain, bad_base64_is_malformed) {
  server_exchange a(mechanism::plain);
  EXPECT_EQ(a.start("AHNlbmdva3UAc2VjcmV0IHBocmFzZQ=", true).what, kind::malformed);
  server_exchange b(mechanism::plain);
  ASSERT_EQ(b.start("", false).what, kind::challenge);
  EXPECT_EQ(b.respond("not base64!").what, kind::malformed);
}

TEST(sasl_plain, wrong_structure_is_malformed) {
  for (const std::string& message : {
           "sengoku secret phrase"s,            // no NUL
           "\0sengoku secret phrase"s,          // one NUL
           "\0sengoku\0secret\0phrase"s,        // three NULs
           "\0\0secret phrase"s,                // empty authcid
           "\0sengoku\0"s,                      // empty password
           ""s,                                 // nothing
           "\0"s + std::string(256, 'u') + "\0p"s,  // authcid too long
           "\0u\0"s + std::string(1025, 'p'),  // password too long
       }) {
    server_exchange x(mechanism::plain);
    EXPECT_EQ(x.start(base64_encode(message), true).what, kind::malformed) << base64_encode(message);
  }
}

TEST(sasl_plain, limits_are_inclusive) {
  server_exchange x(mechanism::plain);
  const std::string user(255, 'u');
  const std::string password(1024, 'p');
  ASSERT_EQ(x.start(base64_encode("\0"s + user + "\0"s + password), true).what, kind::complete);
  EXPECT_EQ(password_of(x).user, user);
  EXPECT_EQ(password_of(x).password, password);
}

// --- LOGIN ---------------------------------------------------------------

TEST(sasl_login, full_flow) {
  server_exchange x(mechanism::login);
  const step first = x.start("", false);
  ASSERT_EQ(first.what, kind::challenge);
  EXPECT_EQ(first.text, "VXNlcm5hbWU6");
  const step second = x.respond(base64_encode("sengoku"));
  ASSERT_EQ(second.what, kind::challenge);
  EXPECT_EQ(second.text, "UGFzc3dvcmQ6");
  ASSERT_EQ(x.respond(base64_encode("secret phrase")).what, kind::complete);
  EXPECT_EQ(password_of(x).authzid, "");
  EXPECT_EQ(password_of(x).user, "sengoku");
  EXPECT_EQ(password_of(x).password, "secret phrase");
}

TEST(sasl_login, initial_response_is_the_user_name) {
  server_exchange x(mechanism::login);
  const step first = x.start(base64_encode("sengoku"), true);
  ASSERT_EQ(first.what, kind::challenge);
  EXPECT_EQ(first.text, "UGFzc3dvcmQ6");
  ASSERT_EQ(x.respond("c2VjcmV0IHBocmFzZQ==").what, kind::complete);
  EXPECT_EQ(password_of(x).user, "sengoku");
  EXPECT_EQ(password_of(x).password, "secret phrase");
}

TEST(sasl_login, cancel_at_user_name) {
  server_exchange x(mechanism::login);
  ASSERT_EQ(x.start("", false).what, kind::challenge);
  EXPECT_EQ(x.respond("*").what, kind::cancelled);
}

TEST(sasl_login, cancel_at_password_forgets_the_user) {
  server_exchange x(mechanism::login);
  ASSERT_EQ(x.start("", false).what, kind::challenge);
  ASSERT_EQ(x.respond(base64_encode("sengoku")).what, kind::challenge);
  EXPECT_EQ(x.respond("*").what, kind::cancelled);
  EXPECT_EQ(password_of(x).user, "");
}

TEST(sasl_login, malformed_lines) {
  {
    server_exchange x(mechanism::login);
    ASSERT_EQ(x.start("", false).what, kind::challenge);
    EXPECT_EQ(x.respond("c2Vu#29rdQ==").what, kind::malformed);
  }
  {
    server_exchange x(mechanism::login);
    ASSERT_EQ(x.start("", false).what, kind::challenge);
    EXPECT_EQ(x.respond("").what, kind::malformed);  // empty user name
  }
  {
    server_exchange x(mechanism::login);
    ASSERT_EQ(x.start(base64_encode("sengoku"), true).what, kind::challenge);
    EXPECT_EQ(x.respond(base64_encode("secret\0phrase"s)).what, kind::malformed);
  }
  {
    server_exchange x(mechanism::login);
    EXPECT_EQ(x.start("=", true).what, kind::malformed);  // empty user name
  }
}

TEST(sasl_login, out_of_order_calls_are_malformed) {
  server_exchange x(mechanism::login);
  EXPECT_EQ(x.respond(base64_encode("sengoku")).what, kind::malformed);
  ASSERT_EQ(x.start(base64_encode("sengoku"), true).what, kind::challenge);
  EXPECT_EQ(x.start(base64_encode("sengoku"), true).what, kind::malformed);
  ASSERT_EQ(x.respond(base64_encode("secret phrase")).what, kind::complete);
  EXPECT_EQ(x.respond(base64_encode("more")).what, kind::malformed);
  // Credentials gathered before the stray call are still there.
  EXPECT_EQ(password_of(x).user, "sengoku");
  EXPECT_EQ(password_of(x).password, "secret phrase");
}

// --- CRAM-MD5 ------------------------------------------------------------

TEST(sasl_cram_md5, seed_exchange) {
  server_exchange x(mechanism::cram_md5, seed_challenge);
  const step first = x.start("", false);
  ASSERT_EQ(first.what, kind::challenge);
  EXPECT_EQ(base64_decode(first.text), seed_challenge);
  ASSERT_EQ(x.respond(base64_encode("sengoku 562eaeacde6c4233d63c66b1d268f586")).what, kind::complete);
  const cram_md5_proof& p = cram_of(x);
  EXPECT_EQ(p.user, "sengoku");
  EXPECT_EQ(p.challenge, seed_challenge);
  EXPECT_EQ(p.digest, "\x56\x2e\xae\xac\xde\x6c\x42\x33\xd6\x3c\x66\xb1\xd2\x68\xf5\x86"s);
}

TEST(sasl_cram_md5, uppercase_hex_and_spaces_in_user) {
  server_exchange x(mechanism::cram_md5, seed_challenge);
  ASSERT_EQ(x.start("", false).what, kind::challenge);
  ASSERT_EQ(x.respond(base64_encode("john smith 562EAEACDE6C4233D63C66B1D268F586")).what, kind::complete);
  EXPECT_EQ(cram_of(x).user, "john smith");
  EXPECT_EQ(cram_of(x).digest, "\x56\x2e\xae\xac\xde\x6c\x42\x33\xd6\x3c\x66\xb1\xd2\x68\xf5\x86"s);
}

TEST(sasl_cram_md5, initial_response_is_malformed) {
  server_exchange x(mechanism::cram_md5, seed_challenge);
  EXPECT_EQ(x.start(base64_encode("sengoku 562eaeacde6c4233d63c66b1d268f586"), true).what, kind::malformed);
}

TEST(sasl_cram_md5, cancel) {
  server_exchange x(mechanism::cram_md5, seed_challenge);
  ASSERT_EQ(x.start("", false).what, kind::challenge);
  EXPECT_EQ(x.respond("*").what, kind::cancelled);
}

TEST(sasl_cram_md5, wrong_structure_is_malformed) {
  for (const char* response : {
           "sengoku562eaeacde6c4233d63c66b1d268f586",   // no space
           " 562eaeacde6c4233d63c66b1d268f586",         // no user
           "sengoku 562eaeacde6c4233d63c66b1d268f58",   // 31 digits
           "sengoku 562eaeacde6c4233d63c66b1d268f5860", // 33 digits
           "sengoku 562eaeacde6c4233d63c66b1d268f58g",  // not hex
           "sengoku ",
       }) {
    server_exchange x(mechanism::cram_md5, seed_challenge);
    ASSERT_EQ(x.start("", false).what, kind::challenge);
    EXPECT_EQ(x.respond(base64_encode(response)).what, kind::malformed) << response;
  }
  server_exchange x(mechanism::cram_md5, seed_challenge);
  ASSERT_EQ(x.start("", false).what, kind::challenge);
  EXPECT_EQ(x.respond("c2VuZ29rdSA1NjJlYWVhY2RlNmM0MjMzZDYzYzY2YjFkMjY4ZjU4Ng").what, kind::malformed);
}

TEST(sasl_cram_md5, needs_a_challenge) {
  EXPECT_THROW(server_exchange{mechanism::cram_md5}, std::invalid_argument);
  EXPECT_NO_THROW(server_exchange{mechanism::plain});
}

TEST(sasl_cram_md5, challenge_shape) {
  const std::string c = make_cram_md5_challenge("mail.example.org");
  ASSERT_GE(c.size(), 4u);
  EXPECT_EQ(c.front(), '<');
  EXPECT_TRUE(c.ends_with("@mail.example.org>"));
  const auto dot = c.find('.');
  const auto at = c.find('@');
  ASSERT_NE(dot, std::string::npos);
  ASSERT_NE(at, std::string::npos);
  ASSERT_LT(dot, at);
  const std::string random = c.substr(1, dot - 1);
  const std::string time = c.substr(dot + 1, at - dot - 1);
  ASSERT_FALSE(random.empty());
  ASSERT_FALSE(time.empty());
  for (const char ch : random + time) EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(ch))) << c;
  EXPECT_NE(make_cram_md5_challenge("h"), make_cram_md5_challenge("h"));
}

}  // namespace
}  // namespace smtpguard::sasl

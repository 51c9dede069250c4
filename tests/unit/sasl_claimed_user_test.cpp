#include "sasl/claimed_user.hpp"

#include <gtest/gtest.h>

#include <string>

#include "sasl/base64.hpp"

namespace smtpguard::sasl {
namespace {

std::string b64(std::string_view text) { return base64_encode(text); }

TEST(sasl_claimed_user, each_mechanism_names_its_user_in_its_own_place) {
  using namespace std::string_literals;
  EXPECT_EQ(claimed_user("PLAIN", b64("\0alice\0secret"s)), "alice");
  EXPECT_EQ(claimed_user("plain", b64("admin\0alice\0secret"s)), "alice");
  EXPECT_EQ(claimed_user("LOGIN", b64("alice")), "alice");
  EXPECT_EQ(claimed_user("CRAM-MD5", b64("alice 0123456789abcdef0123456789abcdef")), "alice");
  EXPECT_EQ(claimed_user("SCRAM-SHA-256", b64("n,,n=al=2Cice=3D,r=rOprNGfwEbeRWgbNEkqO")), "al,ice=");
  EXPECT_EQ(claimed_user("SCRAM-SHA-1", b64("y,a=admin,n=bob,r=x")), "bob");
}

TEST(sasl_claimed_user, anything_else_names_no_one) {
  using namespace std::string_literals;
  EXPECT_EQ(claimed_user("PLAIN", "not base64!"), "");
  EXPECT_EQ(claimed_user("PLAIN", b64("alice")), "");
  EXPECT_EQ(claimed_user("PLAIN", b64("\0alice"s)), "");
  EXPECT_EQ(claimed_user("LOGIN", b64("ali\nce")), "");
  EXPECT_EQ(claimed_user("LOGIN", b64(std::string(300, 'a'))), "");
  EXPECT_EQ(claimed_user("SCRAM-SHA-256", b64("n,,r=nonce")), "");
  EXPECT_EQ(claimed_user("SCRAM-SHA-256", b64("garbage")), "");
  EXPECT_EQ(claimed_user("GSSAPI", b64("token")), "");
  EXPECT_EQ(claimed_user("EXTERNAL", ""), "");
}

}  // namespace
}  // namespace smtpguard::sasl

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string>

#include <openssl/hmac.h>

#include "auth/passwords.hpp"

namespace smtpguard::auth {
namespace {

using namespace std::string_literals;

std::string hex(const std::array<std::uint8_t, 16>& digest) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const std::uint8_t b : digest) {
    out += digits[b >> 4];
    out += digits[b & 0x0f];
  }
  return out;
}

std::string hmac_md5_hex(std::string_view key, std::string_view data) {
  std::array<std::uint8_t, 16> out{};
  unsigned int size = 0;
  HMAC(EVP_md5(), key.data(), key.size(), reinterpret_cast<const std::uint8_t*>(data.data()), data.size(),
       out.data(), &size);
  EXPECT_EQ(size, 16u);
  return hex(out);
}

TEST(auth_cram_md5, seed_vector) {
  const auto ctx = make_cram_md5_context("secret phrase");
  EXPECT_EQ(hex(cram_md5_digest(ctx, "<4874.1007276777@asao.gcd.org>")), "562eaeacde6c4233d63c66b1d268f586");
}

TEST(auth_cram_md5, rfc2195_vector) {
  const auto ctx = make_cram_md5_context("tanstaaftanstaaf");
  EXPECT_EQ(hex(cram_md5_digest(ctx, "<1896.697170952@postoffice.reston.mci.net>")),
            "b913a602c7eda7a495b4e6e7334d3890");
}

TEST(auth_cram_md5, rfc2202_long_key_vector) {
  // Keys longer than the MD5 block are hashed first (RFC 2104).
  const auto ctx = make_cram_md5_context(std::string(80, '\xaa'));
  EXPECT_EQ(hex(cram_md5_digest(ctx, "Test Using Larger Than Block-Size Key - Hash Key First")),
            "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd");
}

TEST(auth_cram_md5, equals_plain_hmac_md5_for_every_key_size) {
  const std::string message = "<1234567890.1700000000@mail.example.org>";
  for (std::size_t size = 0; size <= 130; ++size) {
    std::string key;
    for (std::size_t i = 0; i < size; ++i) key += static_cast<char>('!' + (i * 7) % 90);
    EXPECT_EQ(hex(cram_md5_digest(make_cram_md5_context(key), message)), hmac_md5_hex(key, message))
        << "key size " << size;
  }
  // Challenges that span several MD5 blocks.
  const auto ctx = make_cram_md5_context("secret phrase");
  for (const std::size_t size : {0u, 55u, 56u, 63u, 64u, 65u, 200u})
    EXPECT_EQ(hex(cram_md5_digest(ctx, std::string(size, 'c'))), hmac_md5_hex("secret phrase", std::string(size, 'c')));
}

TEST(auth_cram_md5, context_matches_dovecot) {
  // `doveadm pw -s CRAM-MD5 -p password` prints this: outer state words, then
  // inner, each little-endian.
  const auto ctx = make_cram_md5_context("password");
  EXPECT_EQ(cram_md5_context_to_hex(ctx), "9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740");
  EXPECT_EQ(hex(cram_md5_digest(ctx, "<1.2@h>")), hmac_md5_hex("password", "<1.2@h>"));

  cram_md5_context swapped{};
  std::copy(ctx.begin() + 16, ctx.end(), swapped.begin());
  std::copy(ctx.begin(), ctx.begin() + 16, swapped.begin() + 16);
  EXPECT_NE(hex(cram_md5_digest(swapped, "<1.2@h>")), hmac_md5_hex("password", "<1.2@h>"));
}

TEST(auth_cram_md5, hex_round_trip) {
  const auto ctx = make_cram_md5_context("secret phrase");
  const std::string text = cram_md5_context_to_hex(ctx);
  EXPECT_EQ(text.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(cram_md5_context_from_hex(text), ctx);
  std::string upper = text;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(cram_md5_context_from_hex(upper), ctx);
  EXPECT_EQ(cram_md5_context_from_hex(text.substr(1)), std::nullopt);
  EXPECT_EQ(cram_md5_context_from_hex(text + "0"), std::nullopt);
  EXPECT_EQ(cram_md5_context_from_hex("g" + text.substr(1)), std::nullopt);
  EXPECT_EQ(cram_md5_context_from_hex(""), std::nullopt);
}

TEST(auth_passwords, parse_hash_scheme) {
  EXPECT_EQ(parse_hash_scheme("yescrypt"), hash_scheme::yescrypt);
  EXPECT_EQ(parse_hash_scheme("bcrypt"), hash_scheme::bcrypt);
  EXPECT_EQ(parse_hash_scheme("sha512-crypt"), hash_scheme::sha512_crypt);
  EXPECT_EQ(parse_hash_scheme("md5-crypt"), std::nullopt);
  EXPECT_EQ(parse_hash_scheme(""), std::nullopt);
}

class auth_hash_round_trip : public testing::TestWithParam<std::pair<hash_scheme, std::string_view>> {};

TEST_P(auth_hash_round_trip, verifies_only_the_right_password) {
  const auto [scheme, prefix] = GetParam();
  const std::string hash = hash_password("secret phrase", scheme);
  EXPECT_TRUE(hash.starts_with(prefix)) << hash;
  EXPECT_TRUE(verify_password_hash("secret phrase", hash));
  EXPECT_FALSE(verify_password_hash("secret phrasE", hash));
  EXPECT_FALSE(verify_password_hash("secret phrase\0x"s, hash));
  EXPECT_NE(hash, hash_password("secret phrase", scheme)) << "salts must differ";
}

INSTANTIATE_TEST_SUITE_P(schemes, auth_hash_round_trip,
                         testing::Values(std::pair{hash_scheme::yescrypt, std::string_view("$y$")},
                                         std::pair{hash_scheme::bcrypt, std::string_view("$2b$")},
                                         std::pair{hash_scheme::sha512_crypt, std::string_view("$6$")}));

TEST(auth_passwords, known_sha512_crypt_hash) {
  // From the glibc/libxcrypt test suite ("Hello world!", rounds=10000, salt "saltstringsaltst").
  const std::string hash =
      "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/"
      "YTBmSK6H9qs/y3RnOaw5v.";
  EXPECT_TRUE(verify_password_hash("Hello world!", hash));
  EXPECT_FALSE(verify_password_hash("Hello world", hash));
}

TEST(auth_passwords, locked_and_malformed_hashes_never_verify) {
  for (const char* hash : {"", "*", "!", "*LK*", "!$6$saltstring$abc", "$6$", "$y$", "$unknown$x$y", "plain"})
    EXPECT_FALSE(verify_password_hash("", hash)) << hash;
  EXPECT_FALSE(verify_password_hash("secret phrase", "*"));
  EXPECT_THROW(hash_password("a\0b"s, hash_scheme::sha512_crypt), std::runtime_error);
}

TEST(auth_passwords, constant_time_equal) {
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
  EXPECT_FALSE(constant_time_equal("", "a"));
}

}  // namespace
}  // namespace smtpguard::auth

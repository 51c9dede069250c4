#include <gtest/gtest.h>

#include <string>

#include "sasl/base64.hpp"

namespace smtpguard::sasl {
namespace {

using namespace std::string_literals;

TEST(sasl_base64, encodes_rfc4648_vectors) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode("Username:"), "VXNlcm5hbWU6");
  EXPECT_EQ(base64_encode("Password:"), "UGFzc3dvcmQ6");
  EXPECT_EQ(base64_encode("\0sengoku\0secret phrase"s), "AHNlbmdva3UAc2VjcmV0IHBocmFzZQ==");
}

TEST(sasl_base64, decodes_rfc4648_vectors) {
  EXPECT_EQ(base64_decode(""), "");
  EXPECT_EQ(base64_decode("Zg=="), "f");
  EXPECT_EQ(base64_decode("Zm8="), "fo");
  EXPECT_EQ(base64_decode("Zm9vYmFy"), "foobar");
  EXPECT_EQ(base64_decode("AHNlbmdva3UAc2VjcmV0IHBocmFzZQ=="), "\0sengoku\0secret phrase"s);
}

TEST(sasl_base64, round_trips_every_byte) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (std::size_t n = 0; n <= all.size(); n += 17)
    EXPECT_EQ(base64_decode(base64_encode(all.substr(0, n))), all.substr(0, n));
}

TEST(sasl_base64, rejects_malformed_input) {
  for (const char* bad : {"Zg", "Zg=", "Zm9", "Z===", "Zg==Zg==", "=Zg=", "Zm9v\r\n", " Zm9v", "Zm 9v",
                          "Zm9v!", "*", "=", "Zm9-", "Zm9_", "Zh==", "Zm9="})
    EXPECT_EQ(base64_decode(bad), std::nullopt) << '"' << bad << '"';
}

}  // namespace
}  // namespace smtpguard::sasl

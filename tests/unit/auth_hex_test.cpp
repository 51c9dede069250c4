#include <gtest/gtest.h>

#include <array>
#include <cstdint>

#include "auth/hex.hpp"

namespace smtpguard::auth {
namespace {

TEST(auth_hex, round_trip) {
  const std::array<std::uint8_t, 4> bytes{0x00, 0x9f, 0xa0, 0xff};
  EXPECT_EQ(to_hex(bytes), "009fa0ff");
  std::array<std::uint8_t, 4> back{};
  ASSERT_TRUE(from_hex("009FA0ff", back));
  EXPECT_EQ(back, bytes);
  EXPECT_EQ(to_hex(std::array<std::uint8_t, 0>{}), "");
}

TEST(auth_hex, refuses_other_lengths_and_characters) {
  std::array<std::uint8_t, 2> out{};
  for (const char* bad : {"", "abc", "abcdef", "abcg", "ab d", "0x12", "+1ab"})
    EXPECT_FALSE(from_hex(bad, out)) << bad;
}

}  // namespace
}  // namespace smtpguard::auth

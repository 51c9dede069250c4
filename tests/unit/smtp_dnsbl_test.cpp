#include <gtest/gtest.h>

#include <array>
#include <cstdint>

#include "smtp/dnsbl.hpp"

namespace smtpguard::smtp {
namespace {

TEST(smtp_dnsbl, query_names) {
  // RFC 5782 section 2.1 and 2.4's examples.
  const std::array<std::uint8_t, 4> v4{192, 0, 2, 99};
  EXPECT_EQ(dnsbl_query_name(v4, "bad.example.com"), "99.2.0.192.bad.example.com");
  const std::array<std::uint8_t, 16> v6{0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0x45, 0x67};
  EXPECT_EQ(dnsbl_query_name(v6, "ip6.example"),
            "7.6.5.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.3.2.1.8.b.d.0.1.0.0.2.ip6.example");
}

TEST(smtp_dnsbl, what_an_answer_means) {
  EXPECT_TRUE(dnsbl_listing({127, 0, 0, 2}));
  EXPECT_TRUE(dnsbl_listing({127, 0, 0, 10}));
  EXPECT_TRUE(dnsbl_listing({127, 0, 1, 4}));
  EXPECT_FALSE(dnsbl_listing({127, 255, 255, 254}));  // "query refused", not a listing
  EXPECT_FALSE(dnsbl_listing({127, 255, 255, 252}));
  EXPECT_FALSE(dnsbl_listing({192, 0, 2, 1}));          // a wildcard or hijacked answer
  EXPECT_FALSE(dnsbl_listing({0, 0, 0, 0}));
}

}  // namespace
}  // namespace smtpguard::smtp

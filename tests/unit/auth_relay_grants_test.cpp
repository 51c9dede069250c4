#include "auth/relay_grants.hpp"

#include <gtest/gtest.h>

#include <string>

namespace smtpguard::auth {
namespace {

using std::chrono::seconds;
const relay_grants::time_point t0{};

TEST(relay_grants, a_grant_runs_for_its_ttl_and_a_later_login_extends_it) {
  relay_grants grants;
  EXPECT_FALSE(grants.permitted("192.0.2.1", t0));
  grants.grant("192.0.2.1", seconds(300), t0);
  EXPECT_TRUE(grants.permitted("192.0.2.1", t0 + seconds(299)));
  EXPECT_FALSE(grants.permitted("192.0.2.1", t0 + seconds(300)));
  grants.grant("192.0.2.1", seconds(300), t0 + seconds(200));
  EXPECT_TRUE(grants.permitted("192.0.2.1", t0 + seconds(499)));
  EXPECT_FALSE(grants.permitted("192.0.2.1", t0 + seconds(500)));
}

TEST(relay_grants, only_the_exact_address_is_granted) {
  relay_grants grants;
  grants.grant("2001:db8::1", seconds(60), t0);
  EXPECT_TRUE(grants.permitted("2001:db8::1", t0));
  EXPECT_FALSE(grants.permitted("2001:db8::2", t0));  // same /64, another host
  EXPECT_FALSE(grants.permitted("192.0.2.1", t0));
}

TEST(relay_grants, active_counts_running_grants_and_forgets_the_rest) {
  relay_grants grants;
  grants.grant("192.0.2.1", seconds(10), t0);
  grants.grant("192.0.2.2", seconds(10), t0 + seconds(5));
  EXPECT_EQ(grants.active(t0 + seconds(9)), 2u);
  EXPECT_EQ(grants.active(t0 + seconds(10)), 1u);
  EXPECT_EQ(grants.active(t0 + seconds(15)), 0u);
  // A shorter TTL after a reload: the short grant behind a long one still ends on time.
  grants.grant("192.0.2.3", seconds(100), t0 + seconds(20));
  grants.grant("192.0.2.4", seconds(1), t0 + seconds(20));
  EXPECT_EQ(grants.active(t0 + seconds(22)), 1u);
  EXPECT_FALSE(grants.permitted("192.0.2.4", t0 + seconds(22)));
  EXPECT_TRUE(grants.permitted("192.0.2.3", t0 + seconds(22)));
}

TEST(relay_grants, memory_is_bounded_and_the_oldest_grant_goes_first) {
  relay_grants grants(3);
  for (int i = 1; i <= 4; ++i) grants.grant("192.0.2." + std::to_string(i), seconds(60), t0 + seconds(i));
  EXPECT_FALSE(grants.permitted("192.0.2.1", t0 + seconds(5)));
  for (int i = 2; i <= 4; ++i) EXPECT_TRUE(grants.permitted("192.0.2." + std::to_string(i), t0 + seconds(5)));
  // Logging in again makes a grant the newest.
  grants.grant("192.0.2.2", seconds(60), t0 + seconds(6));
  grants.grant("192.0.2.5", seconds(60), t0 + seconds(7));
  EXPECT_TRUE(grants.permitted("192.0.2.2", t0 + seconds(7)));
  EXPECT_FALSE(grants.permitted("192.0.2.3", t0 + seconds(7)));
}

}  // namespace
}  // namespace smtpguard::auth

#include "auth/lockout.hpp"

#include <gtest/gtest.h>

#include <string>

namespace smtpguard::auth {
namespace {

using std::chrono::seconds;
using clock_type = lockout_table::clock;

const clock_type::time_point t0{};

lockout_settings small(int ip, int user) {
  lockout_settings s;
  s.ip_failures = ip;
  s.user_failures = user;
  s.window = seconds(60);
  s.lockout = seconds(120);
  return s;
}

TEST(lockout, ip_locks_at_the_limit_and_releases_after_the_lockout) {
  lockout_table table(small(3, 100));
  struct step {
    int at;  // seconds after t0
    bool fail;
    lockout_scope expected;
  };
  const step steps[] = {
      {0, true, lockout_scope::none},   {1, true, lockout_scope::none},  {2, true, lockout_scope::ip},
      {100, false, lockout_scope::ip},  {121, false, lockout_scope::ip}, {122, false, lockout_scope::none},
      {123, true, lockout_scope::none},
  };
  for (const auto& s : steps) {
    const auto now = t0 + seconds(s.at);
    if (s.fail) table.record_failure("192.0.2.1", "user" + std::to_string(s.at), now);
    EXPECT_EQ(table.is_locked("192.0.2.1", "someone", now), s.expected) << "at " << s.at;
    EXPECT_EQ(table.ip_locked("192.0.2.1", now), s.expected == lockout_scope::ip) << "at " << s.at;
    EXPECT_EQ(table.is_locked("192.0.2.2", "someone", now), lockout_scope::none) << "at " << s.at;
  }
}

TEST(lockout, failures_outside_the_window_do_not_add_up) {
  lockout_table table(small(3, 100));
  table.record_failure("192.0.2.1", "", t0);
  table.record_failure("192.0.2.1", "", t0 + seconds(10));
  table.record_failure("192.0.2.1", "", t0 + seconds(60));  // new window
  table.record_failure("192.0.2.1", "", t0 + seconds(70));
  EXPECT_FALSE(table.ip_locked("192.0.2.1", t0 + seconds(70)));
  table.record_failure("192.0.2.1", "", t0 + seconds(80));
  EXPECT_TRUE(table.ip_locked("192.0.2.1", t0 + seconds(80)));
}

TEST(lockout, user_locks_regardless_of_address_and_names_are_not_mixed_up) {
  lockout_table table(small(100, 2));
  table.record_failure("192.0.2.1", "bob", t0);
  table.record_failure("198.51.100.7", "bob", t0 + seconds(1));
  const auto now = t0 + seconds(2);
  EXPECT_EQ(table.is_locked("203.0.113.9", "bob", now), lockout_scope::user);
  EXPECT_EQ(table.is_locked("203.0.113.9", "alice", now), lockout_scope::none);
  EXPECT_FALSE(table.ip_locked("192.0.2.1", now));
  // A user literally named like an address is a different key.
  EXPECT_EQ(table.is_locked("bob", "", now), lockout_scope::none);
}

TEST(lockout, ip_lock_is_reported_before_user_lock) {
  lockout_table table(small(1, 1));
  table.record_failure("192.0.2.1", "bob", t0);
  EXPECT_EQ(table.is_locked("192.0.2.1", "bob", t0), lockout_scope::ip);
  EXPECT_EQ(table.is_locked("192.0.2.2", "bob", t0), lockout_scope::user);
}

TEST(lockout, a_weight_counts_as_that_many) {
  // A message's recipients: 3 + 4 stay under 10, 3 more reach it.
  lockout_table table(small(0, 10));
  table.record_failure("192.0.2.1", "alice", t0, 3);
  table.record_failure("192.0.2.1", "alice", t0 + seconds(1), 4);
  EXPECT_EQ(table.is_locked("192.0.2.1", "alice", t0 + seconds(1)), lockout_scope::none);
  table.record_failure("192.0.2.1", "alice", t0 + seconds(2), 3);
  EXPECT_EQ(table.is_locked("192.0.2.1", "alice", t0 + seconds(2)), lockout_scope::user);
  // One heavy message alone can spend a budget.
  table.record_failure("192.0.2.1", "bob", t0, 50);
  EXPECT_EQ(table.is_locked("192.0.2.1", "bob", t0), lockout_scope::user);
}

TEST(lockout, a_user_limit_of_its_own_replaces_the_settings) {
  lockout_table table(small(0, 2));
  table.record_failure("192.0.2.1", "bulk", t0, 5, 10);  // 5 of its own 10
  EXPECT_EQ(table.is_locked("", "bulk", t0), lockout_scope::none);
  table.record_failure("192.0.2.1", "bulk", t0, 5, 10);
  EXPECT_EQ(table.is_locked("", "bulk", t0), lockout_scope::user);
  table.record_failure("192.0.2.1", "free", t0, 1000, 0);  // 0: no limit
  EXPECT_EQ(table.is_locked("", "free", t0), lockout_scope::none);
  table.record_failure("192.0.2.1", "plain", t0, 2);  // the settings' 2
  EXPECT_EQ(table.is_locked("", "plain", t0), lockout_scope::user);
}

TEST(lockout, zero_disables_a_budget) {
  lockout_table table(small(0, 0));
  for (int i = 0; i < 50; ++i) table.record_failure("192.0.2.1", "bob", t0 + seconds(i));
  EXPECT_EQ(table.is_locked("192.0.2.1", "bob", t0 + seconds(50)), lockout_scope::none);
  EXPECT_EQ(table.tracked(), 0u);
}

TEST(lockout, failures_while_locked_do_not_extend_the_lockout) {
  lockout_table table(small(1, 100));
  table.record_failure("192.0.2.1", "", t0);
  table.record_failure("192.0.2.1", "", t0 + seconds(100));
  EXPECT_TRUE(table.ip_locked("192.0.2.1", t0 + seconds(119)));
  EXPECT_FALSE(table.ip_locked("192.0.2.1", t0 + seconds(120)));
}

TEST(lockout, memory_is_bounded_and_the_oldest_key_goes_first) {
  auto settings = small(1, 0);
  settings.max_tracked = 3;
  lockout_table table(settings);
  for (int i = 0; i < 10; ++i) table.record_failure("10.0.0." + std::to_string(i), "", t0 + seconds(i));
  EXPECT_EQ(table.tracked(), 3u);
  const auto now = t0 + seconds(10);
  EXPECT_FALSE(table.ip_locked("10.0.0.0", now));
  EXPECT_TRUE(table.ip_locked("10.0.0.9", now));
  EXPECT_TRUE(table.ip_locked("10.0.0.7", now));
}

TEST(lockout, a_touched_key_is_kept_over_older_ones) {
  auto settings = small(100, 0);
  settings.max_tracked = 2;
  lockout_table table(settings);
  for (int i = 0; i < 99; ++i) table.record_failure("a", "", t0);
  table.record_failure("b", "", t0 + seconds(1));
  table.record_failure("a", "", t0 + seconds(2));  // 100th: locks and becomes the newest
  table.record_failure("c", "", t0 + seconds(3));  // evicts b, not a
  EXPECT_TRUE(table.ip_locked("a", t0 + seconds(3)));
  EXPECT_EQ(table.tracked(), 2u);
}

}  // namespace
}  // namespace smtpguard::auth

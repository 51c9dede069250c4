#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "auth/credential_cache.hpp"

namespace smtpguard::auth {
namespace {

using namespace std::chrono_literals;
using clock = credential_cache::clock;

// By credentials rather than by key, as a session presents them.
bool verified(credential_cache& cache, std::uint64_t generation, const std::string& user,
              const std::string& password, clock::time_point now) {
  return cache.verified(cache.key(generation, user, password), now);
}
void remember(credential_cache& cache, std::uint64_t generation, const std::string& user,
              const std::string& password, clock::time_point now) {
  cache.remember(cache.key(generation, user, password), now);
}

TEST(auth_credential_cache, remembers_exact_credentials_until_the_ttl) {
  credential_cache cache(60s);
  const auto now = clock::now();
  EXPECT_FALSE(verified(cache, 1, "alice", "correct horse", now));
  remember(cache, 1, "alice", "correct horse", now);
  EXPECT_TRUE(verified(cache, 1, "alice", "correct horse", now + 59s));
  EXPECT_FALSE(verified(cache, 1, "alice", "correct horse", now + 60s));
  EXPECT_FALSE(verified(cache, 1, "alice", "correct horse", now + 1s));  // expired entries are gone
}

TEST(auth_credential_cache, anything_else_is_a_miss) {
  credential_cache cache(60s);
  const auto now = clock::now();
  remember(cache, 1, "alice", "correct horse", now);
  EXPECT_FALSE(verified(cache, 1, "alice", "correct horsE", now));
  EXPECT_FALSE(verified(cache, 1, "Alice", "correct horse", now));
  EXPECT_FALSE(verified(cache, 2, "alice", "correct horse", now));  // another users file
  // The boundary between user and password is part of the key.
  remember(cache, 1, "ab", "c", now);
  EXPECT_FALSE(verified(cache, 1, "a", "bc", now));
}

TEST(auth_credential_cache, a_key_names_exact_credentials_in_one_cache) {
  credential_cache cache(60s);
  const auto now = clock::now();
  const std::string key = cache.key(1, "alice", "pw");
  ASSERT_FALSE(key.empty());
  EXPECT_EQ(cache.key(1, "alice", "pw"), key);
  EXPECT_NE(cache.key(2, "alice", "pw"), key);
  EXPECT_NE(cache.key(1, "alice", "pW"), key);
  EXPECT_NE(credential_cache(60s).key(1, "alice", "pw"), key);  // each cache has its own MAC key
  cache.remember(key, now);
  EXPECT_TRUE(verified(cache, 1, "alice", "pw", now));
  EXPECT_FALSE(cache.verified(std::string(), now));
}

TEST(auth_credential_cache, zero_ttl_disables_it) {
  credential_cache cache(0s);
  const auto now = clock::now();
  remember(cache, 1, "alice", "pw", now);
  EXPECT_FALSE(verified(cache, 1, "alice", "pw", now));
  cache.set_ttl(10s);
  remember(cache, 1, "alice", "pw", now);
  EXPECT_TRUE(verified(cache, 1, "alice", "pw", now));
}

TEST(auth_credential_cache, stays_bounded) {
  credential_cache cache(60s, 100);
  const auto now = clock::now();
  for (int i = 0; i < 1000; ++i) remember(cache, 1, "user" + std::to_string(i), "pw", now);
  int remembered = 0;
  for (int i = 0; i < 1000; ++i)
    remembered += verified(cache, 1, "user" + std::to_string(i), "pw", now) ? 1 : 0;
  EXPECT_LE(remembered, 100);
  EXPECT_TRUE(verified(cache, 1, "user999", "pw", now));  // the newest survives
}

}  // namespace
}  // namespace smtpguard::auth

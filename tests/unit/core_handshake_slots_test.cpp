// The thread's TLS handshake slots, driven on a real io_context with short
// times: arrival order, hand-over on release, the deadline, overstayers, and
// a raised limit.
#include "session/handshake_slots.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace {

using smtpguard::session::handshake_slots;
using namespace std::chrono_literals;
using clock_type = handshake_slots::clock;

struct core_handshake_slots : ::testing::Test {
  asio::io_context io;
  std::vector<std::string> events;

  // Takes a slot (or not, by `deadline`), records it, holds it for `hold`.
  asio::awaitable<void> client(handshake_slots& slots, std::string name, std::size_t limit,
                               clock_type::duration deadline, clock_type::duration hold) {
    bool waited = false;
    auto slot = co_await slots.acquire(limit, clock_type::now() + deadline, waited);
    events.push_back(name + (slot ? (waited ? " waited" : " at once") : " timed out"));
    if (!slot) co_return;
    asio::steady_timer timer(io, hold);
    co_await timer.async_wait(asio::use_awaitable);
    events.push_back(name + " done");
  }

  void start(handshake_slots& slots, const std::string& name, std::size_t limit, clock_type::duration deadline,
             clock_type::duration hold) {
    asio::co_spawn(io, client(slots, name, limit, deadline, hold), asio::detached);
  }
};

TEST_F(core_handshake_slots, waiters_get_freed_slots_in_arrival_order) {
  handshake_slots slots(10s);
  start(slots, "a", 2, 5s, 50ms);
  start(slots, "b", 2, 5s, 100ms);
  start(slots, "c", 2, 5s, 10ms);
  start(slots, "d", 2, 5s, 10ms);
  io.run();
  EXPECT_EQ(events, (std::vector<std::string>{"a at once", "b at once", "a done", "c waited", "c done",
                                              "d waited", "d done", "b done"}))
      << testing::PrintToString(events);
  EXPECT_EQ(slots.held(), 0u);
  EXPECT_EQ(slots.waiting(), 0u);
}

TEST_F(core_handshake_slots, a_waiter_gives_up_at_its_deadline) {
  handshake_slots slots(10s);
  start(slots, "a", 1, 5s, 300ms);
  start(slots, "b", 1, 50ms, 0ms);
  const auto began = clock_type::now();
  io.run();
  EXPECT_EQ(events, (std::vector<std::string>{"a at once", "b timed out", "a done"}));
  EXPECT_GE(clock_type::now() - began, 300ms);
  EXPECT_EQ(slots.waiting(), 0u);
  EXPECT_EQ(slots.held(), 0u);
}

TEST_F(core_handshake_slots, a_holder_that_overstays_stops_counting_for_those_waiting) {
  handshake_slots slots(100ms);
  start(slots, "staller", 1, 5s, 2s);
  start(slots, "b", 1, 5s, 0ms);
  const auto began = clock_type::now();
  io.run_for(1s);
  // b got in once the staller had held the slot for 100 ms, long before it let go.
  ASSERT_GE(events.size(), 3u) << testing::PrintToString(events);
  EXPECT_EQ(events[0], "staller at once");
  EXPECT_EQ(events[1], "b waited");
  EXPECT_EQ(events[2], "b done");
  EXPECT_LT(clock_type::now() - began, 2s);
  io.run();
  EXPECT_EQ(events.back(), "staller done");
  EXPECT_EQ(slots.held(), 0u);
}

TEST_F(core_handshake_slots, nobody_is_dropped_while_no_one_waits) {
  handshake_slots slots(10ms);
  start(slots, "a", 1, 5s, 100ms);
  io.run();
  EXPECT_EQ(events, (std::vector<std::string>{"a at once", "a done"}));
  EXPECT_EQ(slots.held(), 0u);
}

TEST_F(core_handshake_slots, a_raised_limit_lets_waiters_in) {
  handshake_slots slots(10s);
  start(slots, "a", 1, 5s, 200ms);
  start(slots, "b", 1, 5s, 0ms);
  // After a reload to 3: the next arrival makes room for b as well as itself.
  asio::steady_timer later(io, 20ms);
  later.async_wait([&](const asio::error_code&) { start(slots, "c", 3, 5s, 0ms); });
  io.run();
  ASSERT_EQ(events.size(), 6u) << testing::PrintToString(events);
  EXPECT_EQ(events[0], "a at once");
  // Both got in long before a let go (c sees its slot first: it is running).
  EXPECT_EQ(std::set<std::string>(events.begin() + 1, events.begin() + 3),
            (std::set<std::string>{"b waited", "c waited"}));
  EXPECT_EQ(events[5], "a done");
}

TEST_F(core_handshake_slots, a_waiter_destroyed_in_line_leaves_no_trace) {
  auto slots = std::make_unique<handshake_slots>(10s);
  {
    asio::io_context local;
    auto holder = [&]() -> asio::awaitable<void> {
      bool waited = false;
      auto slot = co_await slots->acquire(1, clock_type::now() + 5s, waited);
      asio::steady_timer timer(local, 1h);
      co_await timer.async_wait(asio::use_awaitable);
    };
    auto waiter = [&]() -> asio::awaitable<void> {
      bool waited = false;
      auto slot = co_await slots->acquire(1, clock_type::now() + 5s, waited);
    };
    asio::co_spawn(local, holder(), asio::detached);
    asio::co_spawn(local, waiter(), asio::detached);
    local.run_for(50ms);
    EXPECT_EQ(slots->held(), 1u);
    EXPECT_EQ(slots->waiting(), 1u);
  }  // the context goes, and with it both frames
  EXPECT_EQ(slots->held(), 0u);
  EXPECT_EQ(slots->waiting(), 0u);
}

}  // namespace

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <vector>

#include "smtp/data_pace.hpp"

namespace smtpguard::smtp {
namespace {

using std::chrono::seconds;
using verdict = data_pace::verdict;

// One wait: how long the caller was allowed to wait (checked), how long it
// waited, what it got, and the verdict expected.
struct wait_step {
  seconds allowed;
  seconds spent;
  std::size_t bytes;
  verdict expected;
};

void run(data_pace pace, const std::vector<wait_step>& steps) {
  for (std::size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(pace.next_wait(), steps[i].allowed);
    EXPECT_EQ(pace.after_wait(steps[i].spent, steps[i].bytes), steps[i].expected);
  }
}

TEST(smtp_data_pace, without_a_minimum_only_the_block_limit_counts) {
  run(data_pace(0, seconds(30), seconds(180)), {
                                                   {seconds(180), seconds(170), 1, verdict::go_on},
                                                   {seconds(180), seconds(179), 1, verdict::go_on},
                                                   {seconds(180), seconds(180), 0, verdict::timed_out},
                                               });
}

TEST(smtp_data_pace, a_silent_window_is_too_slow) {
  run(data_pace(1024, seconds(30), seconds(180)), {{seconds(30), seconds(30), 0, verdict::too_slow}});
}

TEST(smtp_data_pace, the_rate_is_averaged_over_the_window) {
  // 31,000 bytes in 30 s is above 1,024 B/s even though most of the window was silent.
  run(data_pace(1024, seconds(30), seconds(180)), {
                                                      {seconds(30), seconds(10), 31000, verdict::go_on},
                                                      {seconds(20), seconds(20), 0, verdict::go_on},
                                                      // a new window
                                                      {seconds(30), seconds(29), 30000, verdict::go_on},
                                                      {seconds(1), seconds(1), 0, verdict::too_slow},
                                                  });
}

TEST(smtp_data_pace, a_window_that_ends_with_data_is_still_judged) {
  run(data_pace(1024, seconds(30), seconds(180)), {
                                                      {seconds(30), seconds(15), 100, verdict::go_on},
                                                      {seconds(15), seconds(15), 100, verdict::too_slow},
                                                  });
}

TEST(smtp_data_pace, the_block_limit_applies_when_shorter_than_the_window) {
  run(data_pace(1, seconds(60), seconds(10)), {
                                                  {seconds(10), seconds(9), 5, verdict::go_on},
                                                  {seconds(10), seconds(10), 0, verdict::timed_out},
                                              });
}

TEST(smtp_data_pace, silence_across_windows_still_times_out) {
  // Enough bytes early on keep every window above the rate, but the client
  // then goes quiet: the block limit ends it, counted across windows.
  run(data_pace(1, seconds(30), seconds(50)), {
                                                  {seconds(30), seconds(1), 1000, verdict::go_on},
                                                  {seconds(29), seconds(29), 0, verdict::go_on},
                                                  {seconds(21), seconds(21), 0, verdict::timed_out},
                                              });
}

}  // namespace
}  // namespace smtpguard::smtp

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "smtp/line_framer.hpp"

namespace smtpguard::smtp {
namespace {

// One observable outcome of next(), copied out of the framer's buffer.
struct event {
  frame_status status;
  std::string text;
  bool bare_lf = false;
  bool has_bare_cr = false;
  bool has_nul = false;
  bool operator==(const event&) const = default;
};

std::vector<event> drain(line_framer& framer) {
  std::vector<event> events;
  framed_line line;
  for (frame_status s; (s = framer.next(line)) != frame_status::need_more;) {
    if (s == frame_status::line) {
      events.push_back({s, std::string(line.text), line.bare_lf, line.has_bare_cr, line.has_nul});
    } else {
      events.push_back({s, {}});
    }
  }
  return events;
}

std::vector<event> run(std::string_view input, std::size_t chunk, std::size_t max_length,
                       std::string* rest = nullptr) {
  line_framer framer(max_length);
  std::vector<event> events;
  for (std::size_t i = 0; i < input.size(); i += chunk) {
    framer.feed(input.substr(i, chunk));
    const auto more = drain(framer);
    events.insert(events.end(), more.begin(), more.end());
  }
  if (rest != nullptr) *rest = framer.take_buffered();
  return events;
}

constexpr auto L = frame_status::line;
constexpr auto T = frame_status::too_long;

struct framer_case {
  const char* name;
  std::string input;
  std::size_t max_length;
  std::vector<event> expected;
  std::string rest;
};

const std::vector<framer_case>& framer_cases() {
  static const std::vector<framer_case> cases{
      {"crlf", "EHLO a\r\nNOOP\r\n", 512, {{L, "EHLO a"}, {L, "NOOP"}}, ""},
      {"bare_lf", "NOOP\nQUIT\r\n", 512, {{L, "NOOP", true}, {L, "QUIT"}}, ""},
      {"bare_cr", "NO\rOP\r\r\n", 512, {{L, "NO\rOP\r", false, true}}, ""},
      {"nul", std::string("A\0B\r\n", 5), 512, {{L, std::string("A\0B", 3), false, false, true}}, ""},
      {"empty_lines", "\r\n\n", 512, {{L, ""}, {L, "", true}}, ""},
      {"partial_rest", "NOOP\r\nMAIL FR", 512, {{L, "NOOP"}}, "MAIL FR"},
      {"exact_limit", "abcdefgh\r\n", 10, {{L, "abcdefgh"}}, ""},
      {"one_over", "abcdefghi\r\nNOOP\r\n", 10, {{T, ""}, {L, "NOOP"}}, ""},
      {"long_then_more", std::string(100, 'x') + "\r\nQUIT\r\n", 10, {{T, ""}, {L, "QUIT"}}, ""},
      {"limit_bare_lf", "abcdefghi\n", 10, {{L, "abcdefghi", true}}, ""},
      {"two_long", std::string(30, 'x') + "\n" + std::string(30, 'y') + "\nok\r\n", 10,
       {{T, ""}, {T, ""}, {L, "ok"}}, ""},
  };
  return cases;
}

TEST(smtp_line_framer, table_whole_and_every_chunk_size) {
  for (const auto& c : framer_cases()) {
    for (std::size_t chunk = 1; chunk <= c.input.size(); ++chunk) {
      std::string rest;
      EXPECT_EQ(run(c.input, chunk, c.max_length, &rest), c.expected) << c.name << " chunk " << chunk;
      EXPECT_EQ(rest, c.rest) << c.name << " chunk " << chunk;
    }
  }
}

TEST(smtp_line_framer, too_long_reported_once_across_many_feeds) {
  line_framer framer(16);
  std::vector<event> events;
  for (int i = 0; i < 1000; ++i) {
    framer.feed(std::string(64, 'z'));
    const auto more = drain(framer);
    events.insert(events.end(), more.begin(), more.end());
    EXPECT_FALSE(framer.has_buffered());
  }
  framer.feed("tail\nNOOP\r\n");
  const auto more = drain(framer);
  events.insert(events.end(), more.begin(), more.end());
  EXPECT_EQ(events, (std::vector<event>{{T, ""}, {L, "NOOP"}}));
}

TEST(smtp_line_framer, buffered_bytes_are_handed_over) {
  line_framer framer;
  framer.feed("DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n");
  framed_line line;
  ASSERT_EQ(framer.next(line), L);
  EXPECT_EQ(line.text, "DATA");
  EXPECT_TRUE(framer.has_buffered());
  EXPECT_EQ(framer.take_buffered(), "Subject: x\r\n\r\nbody\r\n.\r\n");
  EXPECT_FALSE(framer.has_buffered());
  EXPECT_EQ(framer.next(line), frame_status::need_more);
}

TEST(smtp_line_framer, clear_drops_pending_discard_and_input) {
  line_framer framer(8);
  framer.feed("STARTTLS\r\nEHLO evil\r\n");
  framed_line line;
  ASSERT_EQ(framer.next(line), T);  // "STARTTLS\r\n" is 10 octets
  framer.clear();
  EXPECT_FALSE(framer.has_buffered());
  framer.feed(std::string(20, 'x'));
  ASSERT_EQ(framer.next(line), T);
  framer.clear();
  framer.feed("NOOP\r\n");
  ASSERT_EQ(framer.next(line), L);
  EXPECT_EQ(line.text, "NOOP");
}

TEST(smtp_line_framer, memory_stays_bounded_with_many_lines) {
  line_framer framer(512);
  std::size_t lines = 0;
  framed_line line;
  for (int i = 0; i < 10000; ++i) {
    framer.feed("NOOP\r\nNO");
    framer.feed("OP\r\n");
    while (framer.next(line) == L) ++lines;
  }
  EXPECT_EQ(lines, 20000u);
  EXPECT_FALSE(framer.has_buffered());
}

TEST(smtp_line_framer, a_waiting_session_holds_no_buffer) {
  const std::size_t empty = std::string().capacity();
  line_framer framer(1000);
  framed_line line;
  const std::string long_line = "AUTH PLAIN " + std::string(200, 'A');
  framer.feed(long_line + "\r\nNO");
  ASSERT_EQ(framer.next(line), L);
  framer.release_consumed();  // "NO" is not consumed: kept, so nothing is freed
  EXPECT_GT(framer.held_bytes(), empty);
  framer.feed("OP\r\n");
  ASSERT_EQ(framer.next(line), L);
  EXPECT_EQ(line.text, "NOOP");
  framer.feed(long_line + "\r\n");
  ASSERT_EQ(framer.next(line), L);
  EXPECT_GT(framer.held_bytes(), 200u);
  framer.release_consumed();
  EXPECT_EQ(framer.held_bytes(), empty);
  EXPECT_FALSE(framer.has_buffered());
  framer.feed("QUIT\r\n");
  ASSERT_EQ(framer.next(line), L);
  EXPECT_EQ(line.text, "QUIT");
}

TEST(smtp_line_framer, handing_over_frees_the_buffer) {
  line_framer framer;
  framer.feed("DATA\r\n" + std::string(300, 'x'));
  framed_line line;
  ASSERT_EQ(framer.next(line), L);
  EXPECT_EQ(framer.take_buffered().size(), 300u);
  EXPECT_EQ(framer.held_bytes(), std::string().capacity());
}

TEST(smtp_line_framer, has_line_tells_whether_next_needs_input) {
  line_framer framer(16);
  framed_line line;
  EXPECT_FALSE(framer.has_line());
  framer.feed("MAIL\r\nRC");
  EXPECT_TRUE(framer.has_line());
  ASSERT_EQ(framer.next(line), L);
  EXPECT_FALSE(framer.has_line());  // "RC" is buffered, but not a line
  EXPECT_TRUE(framer.has_buffered());
  framer.feed("PT\r\n");
  EXPECT_TRUE(framer.has_line());
  ASSERT_EQ(framer.next(line), L);
  EXPECT_EQ(line.text, "RCPT");
  // The rest of an over-long line is being dropped: its LF ends no line.
  framer.feed("0123456789abcdefghij");
  EXPECT_EQ(framer.next(line), frame_status::too_long);
  EXPECT_FALSE(framer.has_line());
  framer.feed("xyz\r\nNOOP\r\n");
  EXPECT_TRUE(framer.has_line());
  ASSERT_EQ(framer.next(line), L);
  EXPECT_EQ(line.text, "NOOP");
}

}  // namespace
}  // namespace smtpguard::smtp

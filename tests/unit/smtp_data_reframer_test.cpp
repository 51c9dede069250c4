#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "smtp/data_reframer.hpp"

namespace smtpguard::smtp {
namespace {

constexpr auto reject = line_ending_policy::reject;
constexpr auto normalize = line_ending_policy::normalize;

struct outcome {
  std::string out;
  std::size_t consumed = 0;
  bool done = false;
  reframe_error error = reframe_error::none;
  std::uint64_t size = 0;
  bool operator==(const outcome&) const = default;
};

std::ostream& operator<<(std::ostream& os, const outcome& o) {
  return os << "{out=" << testing::PrintToString(o.out) << " consumed=" << o.consumed
            << " done=" << o.done << " error=" << static_cast<int>(o.error) << " size=" << o.size << "}";
}

// Feeds `input` in the pieces given by `cuts` (ascending split offsets), the
// way a session does: bytes not consumed after done are pipelined input.
outcome run_cuts(std::string_view input, const std::vector<std::size_t>& cuts, reframer_options options) {
  data_reframer reframer(options);
  outcome o;
  std::size_t from = 0;
  for (std::size_t i = 0; i <= cuts.size() && !o.done; ++i) {
    const std::size_t to = i < cuts.size() ? cuts[i] : input.size();
    const auto r = reframer.feed(input.substr(from, to - from), o.out);
    EXPECT_LE(r.consumed, to - from);
    if (!r.done) {
      EXPECT_EQ(r.consumed, to - from);
    }
    o.consumed = from + r.consumed;
    o.done = r.done;
    from = to;
  }
  o.error = reframer.error();
  o.size = reframer.size();
  return o;
}

outcome run_chunks(std::string_view input, std::size_t chunk, reframer_options options) {
  std::vector<std::size_t> cuts;
  for (std::size_t at = chunk; at < input.size(); at += chunk) cuts.push_back(at);
  return run_cuts(input, cuts, options);
}

// Whole, one byte at a time, and split in two at every offset: all must agree.
outcome run_all_ways(std::string_view input, reframer_options options) {
  const outcome whole = run_cuts(input, {}, options);
  EXPECT_EQ(run_chunks(input, 1, options), whole) << "byte at a time";
  for (std::size_t at = 0; at <= input.size(); ++at) {
    EXPECT_EQ(run_cuts(input, {at}, options), whole) << "split at " << at;
  }
  return whole;
}

bool has_bare_line_ending(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) return true;
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return true;
  }
  return false;
}

struct reframe_case {
  const char* name;
  line_ending_policy policy;
  std::string input;
  std::string out;
  std::size_t consumed;  // npos: not done
  reframe_error error;
};

constexpr std::size_t not_done = std::string::npos;
constexpr auto none = reframe_error::none;
constexpr auto bare = reframe_error::bare_line_ending;

const std::vector<reframe_case>& reframe_cases() {
  static const std::vector<reframe_case> cases{
      {"plain", reject, "Subject: x\r\n\r\nbody\r\n.\r\n", "Subject: x\r\n\r\nbody\r\n.\r\n", 23, none},
      {"empty_message", reject, ".\r\n", ".\r\n", 3, none},
      {"empty_line_then_end", reject, "\r\n.\r\n", "\r\n.\r\n", 5, none},
      {"stuffed_dots", reject, "..\r\n...\r\n..x\r\n.\r\n", "..\r\n...\r\n..x\r\n.\r\n", 17, none},
      {"unneeded_stuffing_removed", reject, ".x\r\n.\r\n", "x\r\n.\r\n", 7, none},
      {"pipelined_after_end", reject, "a\r\n.\r\nMAIL FROM:<>\r\n", "a\r\n.\r\n", 6, none},
      {"incomplete", reject, "a\r\n.\r", "a\r\n", not_done, none},
      {"dot_inside_line", reject, "a.\r\n.b.\r\n.\r\n", "a.\r\nb.\r\n.\r\n", 12, none},
      {"dot_space_is_content", reject, ". \r\n.\r\n", " \r\n.\r\n", 7, none},
      {"eight_bit_and_nul", reject, std::string("\xc3\xa9\0\r\n.\r\n", 8),
       std::string("\xc3\xa9\0\r\n.\r\n", 8), 8, none},

      // Smuggling sequences (SEC Consult 2023): under reject the first bare
      // ending is an error, output stops, and only CRLF.CRLF ends the message.
      {"reject_lf_dot_lf", reject, "a\n.\nb\r\n.\r\n", "a", 10, bare},
      {"reject_lf_dot_crlf", reject, "a\n.\r\nb\r\n.\r\n", "a", 11, bare},
      {"reject_cr_dot_cr", reject, "a\r.\rb\r\n.\r\n", "a", 10, bare},
      {"reject_crlf_dot_lf", reject, "a\r\n.\nb\r\n.\r\n", "a\r\n", 11, bare},
      {"reject_crlf_dot_cr", reject, "a\r\n.\rb\r\n.\r\n", "a\r\n", 11, bare},
      {"reject_crlf_dot_cr_lf_late", reject, "a\r\n.\r.\r\n.\r\n", "a\r\n", 11, bare},
      {"reject_end_after_bare_lf_line", reject, "a\nb\r\n.\r\nc", "a", 8, bare},
      {"reject_bare_lf_then_no_end", reject, "a\n.\n", "a", not_done, bare},

      // Under normalize the same bytes become CRLF lines; lone dots next to a
      // bare ending are content and leave stuffed.
      {"normalize_lf_dot_lf", normalize, "a\n.\nb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", 10, none},
      {"normalize_lf_dot_crlf", normalize, "a\n.\r\nb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", 11, none},
      {"normalize_cr_dot_cr", normalize, "a\r.\rb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", 10, none},
      {"normalize_crlf_dot_lf", normalize, "a\r\n.\nb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", 11, none},
      {"normalize_crlf_dot_cr", normalize, "a\r\n.\rb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", 11, none},
      {"normalize_end_after_bare_lf_line", normalize, "a\nb\r\n.\r\nc", "a\r\nb\r\n.\r\n", 8, none},
      {"normalize_leading_lone_dot_lf", normalize, ".\n.\r\n", "..\r\n..\r\n", not_done, none},
      {"normalize_cr_cr_lf", normalize, "a\r\r\n.\r\n", "a\r\n\r\n.\r\n", 7, none},
      {"normalize_stuffed_after_bare", normalize, "a\n..b\n.\r\n", "a\r\n..b\r\n..\r\n", not_done,
       none},
  };
  return cases;
}

TEST(smtp_data_reframer, table_all_split_points) {
  for (const auto& c : reframe_cases()) {
    SCOPED_TRACE(c.name);
    const outcome o = run_all_ways(c.input, {c.policy, 0});
    EXPECT_EQ(o.out, c.out);
    EXPECT_EQ(o.error, c.error);
    EXPECT_EQ(o.done, c.consumed != not_done);
    if (c.consumed != not_done) {
      EXPECT_EQ(o.consumed, c.consumed);
    }
    if (c.policy == normalize) {
      EXPECT_FALSE(has_bare_line_ending(o.out));
    }
    if (o.done && o.error == none) {
      EXPECT_TRUE(o.out.ends_with("\r\n.\r\n") || o.out == ".\r\n");
    }
  }
}

TEST(smtp_data_reframer, end_split_across_reads_at_every_position) {
  const std::string body = "line one\r\n..dot\r\nlast";
  const std::string input = body + "\r\n.\r\nQUIT\r\n";
  const std::size_t end = body.size() + 5;
  for (const auto policy : {reject, normalize}) {
    for (std::size_t a = 0; a <= input.size(); ++a) {
      for (std::size_t b = a; b <= input.size(); ++b) {
        const outcome o = run_cuts(input, {a, b}, {policy, 0});
        ASSERT_TRUE(o.done) << a << "," << b;
        EXPECT_EQ(o.consumed, end) << a << "," << b;
        EXPECT_EQ(o.out, input.substr(0, end)) << a << "," << b;
        EXPECT_EQ(o.error, none);
      }
    }
  }
}

TEST(smtp_data_reframer, feed_after_done_consumes_nothing) {
  data_reframer reframer({});
  std::string out;
  ASSERT_TRUE(reframer.feed(".\r\n", out).done);
  const auto again = reframer.feed("a\r\n.\r\n", out);
  EXPECT_TRUE(again.done);
  EXPECT_EQ(again.consumed, 0u);
  EXPECT_EQ(out, ".\r\n");
}

TEST(smtp_data_reframer, size_counts_unstuffed_content_with_crlf) {
  // "ab" + CRLF, "." (from "..") + CRLF, "" + CRLF: 4 + 3 + 2.
  const std::string input = "ab\r\n..\r\n\r\n.\r\n";
  EXPECT_EQ(run_all_ways(input, {reject, 0}).size, 9u);
  const outcome at_limit = run_all_ways(input, {reject, 9});
  EXPECT_EQ(at_limit.error, none);
  EXPECT_EQ(at_limit.out, input);

  const outcome over = run_all_ways(input, {reject, 8});
  EXPECT_EQ(over.error, reframe_error::too_big);
  EXPECT_TRUE(over.done);
  EXPECT_EQ(over.consumed, input.size());
  // Output stops after exactly max_size content octets, wherever the reads were split.
  EXPECT_EQ(over.out, "ab\r\n..\r\n\r");
  EXPECT_EQ(over.size, 9u);
}

TEST(smtp_data_reframer, too_big_is_sticky_and_end_still_found) {
  const std::string input = std::string(100, 'x') + "\r\n" + "a\nb\r\n.\r\nRSET\r\n";
  const outcome o = run_all_ways(input, {reject, 50});
  EXPECT_EQ(o.error, reframe_error::too_big);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.consumed, input.size() - 6);
  EXPECT_EQ(o.out, std::string(50, 'x'));
}

TEST(smtp_data_reframer, one_megabyte_in_4k_chunks) {
  std::string body;
  std::string expected;
  for (int i = 0; body.size() < 1024 * 1024; ++i) {
    const std::string line = (i % 7 == 0 ? ".." : "") + std::string(60 + i % 40, static_cast<char>('a' + i % 26));
    body += line + "\r\n";
  }
  const std::string input = body + ".\r\n";
  const outcome o = run_chunks(input, 4096, {reject, 0});
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.error, none);
  EXPECT_EQ(o.consumed, input.size());
  EXPECT_EQ(o.out, input);
}

// Content lines of random octets, with many dots, CRs and LFs available to the
// normalize reference below.
std::string random_line(std::mt19937& rng, bool with_breaks) {
  static constexpr char alphabet[] = {'.', '.', '.', 'a', 'b', ' ', '\t', '\0', '\xc3', '\xa9', '\r', '\n'};
  const std::size_t n = std::uniform_int_distribution<std::size_t>(0, 6)(rng);
  const std::size_t symbols = with_breaks ? sizeof alphabet : sizeof alphabet - 2;
  std::string line;
  for (std::size_t i = 0; i < n; ++i) {
    line += alphabet[std::uniform_int_distribution<std::size_t>(0, symbols - 1)(rng)];
  }
  return line;
}

std::vector<std::size_t> random_cuts(std::mt19937& rng, std::size_t size) {
  std::vector<std::size_t> cuts;
  for (std::size_t at = 0; at < size;) {
    at += std::uniform_int_distribution<std::size_t>(1, 9)(rng);
    if (at < size) cuts.push_back(at);
  }
  return cuts;
}

TEST(smtp_data_reframer, property_canonical_bodies_round_trip) {
  std::mt19937 rng(5321);
  for (int round = 0; round < 3000; ++round) {
    std::string canonical;  // what the backend must receive
    std::string sent;       // what a client may send for it
    const int lines = std::uniform_int_distribution<int>(0, 8)(rng);
    std::uint64_t size = 0;
    for (int i = 0; i < lines; ++i) {
      const std::string content = random_line(rng, false);
      size += content.size() + 2;
      const bool needs_dot = !content.empty() && content.front() == '.';
      canonical += (needs_dot ? "." : "") + content + "\r\n";
      // Stuffing a line that does not need it is allowed; an empty line cannot be.
      const bool extra_dot = !needs_dot && !content.empty() && rng() % 4 == 0;
      sent += (needs_dot || extra_dot ? "." : "") + content + "\r\n";
    }
    canonical += ".\r\n";
    sent += ".\r\n";
    const std::string input = sent + random_line(rng, true);
    const auto policy = rng() % 2 == 0 ? reject : normalize;
    const outcome o = run_cuts(input, random_cuts(rng, input.size()), {policy, 0});
    ASSERT_TRUE(o.done) << testing::PrintToString(input);
    EXPECT_EQ(o.error, none);
    EXPECT_EQ(o.consumed, sent.size());
    EXPECT_EQ(o.out, canonical) << testing::PrintToString(input);
    EXPECT_EQ(o.size, size);
  }
}

// A deliberately simple, non-streaming model of the header's rules.
outcome reference(std::string_view in, reframer_options options) {
  outcome o;
  std::string full;  // output as if no error ever stopped it
  bool previous_canonical = true;
  std::size_t pos = 0;
  const auto unfinished = [&](std::string_view rest) {
    // The streaming reframer has already passed on the known part of the last line.
    if (rest == "." || o.error != none) return;
    const std::string_view content = rest.size() > 1 && rest[0] == '.' ? rest.substr(1) : rest;
    o.size += content.size();
    if (options.max_size != 0 && o.size > options.max_size) o.error = reframe_error::too_big;
    full += (!content.empty() && content[0] == '.' ? "." : "") + std::string(content);
  };
  while (true) {
    const auto brk = in.find_first_of("\r\n", pos);
    if (brk == std::string_view::npos) {
      unfinished(in.substr(pos));
      break;
    }
    bool canonical = false;
    std::size_t next = brk + 1;
    if (in[brk] == '\r') {
      if (brk + 1 == in.size()) {  // undecided CR
        unfinished(in.substr(pos, brk - pos));
        break;
      }
      if (in[brk + 1] == '\n') {
        canonical = true;
        next = brk + 2;
      }
    }
    const std::string_view line = in.substr(pos, brk - pos);
    if (line == "." && canonical && previous_canonical) {
      if (o.error == none) full += ".\r\n";
      o.done = true;
      o.consumed = next;
      break;
    }
    const std::string_view content = line.size() > 1 && line[0] == '.' ? line.substr(1) : line;
    const std::string stuffed = (!content.empty() && content[0] == '.' ? "." : "") + std::string(content);
    // Same order as the stream: the content, then the ending, each may fail.
    const auto fail = [&](reframe_error e) {
      if (o.error != none) return;
      o.error = e;
      o.out = full + stuffed;
    };
    // A lone dot is held back until its ending is known, so that ending is checked first.
    if (line == "." && !canonical && options.bare_line_endings == reject) fail(bare);
    o.size += content.size();
    if (options.max_size != 0 && o.size > options.max_size) fail(reframe_error::too_big);
    if (!canonical && options.bare_line_endings == reject) fail(bare);
    o.size += 2;
    if (options.max_size != 0 && o.size > options.max_size) fail(reframe_error::too_big);
    full += stuffed + "\r\n";
    previous_canonical = canonical;
    pos = next;
  }
  if (o.error == none) o.out = full;
  return o;
}

TEST(smtp_data_reframer, property_matches_reference_on_arbitrary_input) {
  std::mt19937 rng(3030);
  for (int round = 0; round < 5000; ++round) {
    std::string input;
    const int lines = std::uniform_int_distribution<int>(0, 6)(rng);
    for (int i = 0; i < lines; ++i) {
      input += random_line(rng, true);
      input += rng() % 3 == 0 ? "\n" : "\r\n";
    }
    if (rng() % 2 == 0) input += ".\r\n";
    input += random_line(rng, true);
    const auto policy = rng() % 2 == 0 ? reject : normalize;
    const std::uint64_t max = rng() % 4 == 0 ? std::uniform_int_distribution<std::uint64_t>(1, 30)(rng) : 0;
    const reframer_options options{policy, max};
    const outcome expected = reference(input, options);
    const outcome got = run_cuts(input, random_cuts(rng, input.size()), options);
    const std::string context = testing::PrintToString(input) + " policy " + std::to_string(static_cast<int>(policy)) +
                                " max " + std::to_string(max);
    ASSERT_EQ(got.done, expected.done) << context;
    EXPECT_EQ(got.error, expected.error) << context;
    if (expected.done) {
      EXPECT_EQ(got.consumed, expected.consumed) << context;
      EXPECT_EQ(got.size, expected.size) << context;
    }
    if (expected.error == none) {
      EXPECT_EQ(got.out, expected.out) << context;
      EXPECT_FALSE(has_bare_line_ending(got.out)) << context;
    } else {
      // Streaming may pass on part of the line that failed, never more.
      EXPECT_TRUE(got.out.starts_with(expected.out) || expected.out.starts_with(got.out)) << context;
    }
  }
}


// RFC 5321 4.5.3.1.6: long lines are folded; a fold never yields a lone ".".
TEST(smtp_data_reframer, over_long_lines_are_folded_and_continuations_stuffed) {
  struct fold_case {
    std::string input;
    std::string expected;
  };
  const std::vector<fold_case> cases = {
      {"abcd\r\n.\r\n", "abcd\r\n.\r\n"},                         // exactly at the limit
      {"abcdefghij\r\n.\r\n", "abcd\r\nefgh\r\nij\r\n.\r\n"},
      {"abcd.\r\n.\r\n", "abcd\r\n..\r\n.\r\n"},                  // would be a lone "." otherwise
      {"abcd.efg\r\n.\r\n", "abcd\r\n..efg\r\n.\r\n"},
      {"..bcd.efg\r\n.\r\n", "..bcd\r\n..efg\r\n.\r\n"},       // client stuffing removed, ours added
      {"abcd.\r\n.\r\nMAIL FROM:<x>\r\n", "abcd\r\n..\r\n.\r\n"},
  };
  reframer_options options{line_ending_policy::reject, 0};
  options.max_line_length = 4;
  for (const auto& c : cases) {
    const outcome o = run_all_ways(c.input, options);
    EXPECT_TRUE(o.done) << c.input;
    EXPECT_EQ(o.error, reframe_error::none) << c.input;
    EXPECT_EQ(o.out, c.expected) << c.input;
    EXPECT_FALSE(has_bare_line_ending(o.out)) << c.input;
  }
  EXPECT_EQ(run_all_ways("abcd.\r\n.\r\nMAIL FROM:<x>\r\n", options).consumed, 10u);
}

TEST(smtp_data_reframer, default_limit_is_998_octets) {
  const std::string long_line(1500, 'x');
  data_reframer reframer({line_ending_policy::reject, 0});
  std::string out;
  const auto r = reframer.feed(long_line + "\r\n.\r\n", out);
  EXPECT_TRUE(r.done);
  EXPECT_EQ(out, std::string(998, 'x') + "\r\n" + std::string(502, 'x') + "\r\n.\r\n");
}


// REFERENCE MODEL for the differential tests below: a copy of the re-framer
// as it was before its fast path, stepping through the input run by run with
// a byte loop. Its output, errors, sizes and `consumed` values are the
// behaviour to keep, so data_reframer must agree with it on every input,
// however the input is split. Keep it simple rather than fast.
class reference_reframer {
 public:
  explicit reference_reframer(reframer_options options) : options_(options) {}

  data_reframer::result feed(std::string_view in, std::string& out) {
    if (done_) return {0, true};
    const char* const begin = in.data();
    const char* const end = begin + in.size();
    const char* p = begin;
    while (p != end) {
      if (pending_cr_) {
        pending_cr_ = false;
        if (*p == '\n') {
          ++p;
          if (end_line(true, out)) return {static_cast<std::size_t>(p - begin), true};
        } else {
          end_line(false, out);
        }
        continue;
      }
      if (at_line_start_) {
        at_line_start_ = false;
        if (*p == '.') {
          pending_dot_ = true;
          ++p;
          continue;
        }
      } else if (pending_dot_ && *p != '\r' && *p != '\n') {
        pending_dot_ = false;
        if (*p == '.') emit(out, ".", 1);
      }
      const char* stop = p;
      while (stop != end && *stop != '\r' && *stop != '\n') ++stop;
      const std::size_t limit = options_.max_line_length;
      while (p != stop) {
        if (limit != 0 && line_length_ == limit) {
          emit_content(out, "\r\n", 2);
          line_length_ = 0;
          if (*p == '.') emit(out, ".", 1);
        }
        auto length = static_cast<std::size_t>(stop - p);
        if (limit != 0) length = std::min(length, limit - line_length_);
        emit_content(out, p, length);
        line_length_ += length;
        p += length;
      }
      if (p == end) break;
      if (*p++ == '\r') {
        pending_cr_ = true;
      } else {
        end_line(false, out);
      }
    }
    return {in.size(), false};
  }

  reframe_error error() const noexcept { return error_; }
  std::uint64_t size() const noexcept { return size_; }

 private:
  void emit(std::string& out, const char* data, std::size_t length) const {
    if (error_ == reframe_error::none) out.append(data, length);
  }

  void emit_content(std::string& out, const char* data, std::size_t length) {
    const std::uint64_t limit = options_.max_size;
    if (error_ == reframe_error::none && limit != 0 && size_ + length > limit) {
      out.append(data, static_cast<std::size_t>(limit - size_));
      error_ = reframe_error::too_big;
    }
    emit(out, data, length);
    size_ += length;
  }

  bool end_line(bool canonical, std::string& out) {
    const bool lone_dot = pending_dot_;
    const bool after_canonical = previous_ending_canonical_;
    pending_dot_ = false;
    at_line_start_ = true;
    line_length_ = 0;
    previous_ending_canonical_ = canonical;
    if (lone_dot && canonical && after_canonical) {
      emit(out, ".\r\n", 3);
      done_ = true;
      return true;
    }
    if (!canonical && options_.bare_line_endings == line_ending_policy::reject &&
        error_ == reframe_error::none) {
      error_ = reframe_error::bare_line_ending;
    }
    if (lone_dot) {
      emit(out, ".", 1);
      emit_content(out, ".", 1);
    }
    emit_content(out, "\r\n", 2);
    return false;
  }

  reframer_options options_;
  reframe_error error_ = reframe_error::none;
  std::uint64_t size_ = 0;
  bool at_line_start_ = true;
  bool previous_ending_canonical_ = true;
  bool pending_cr_ = false;
  bool pending_dot_ = false;
  bool done_ = false;
  std::size_t line_length_ = 0;
};

// A number below n. Modulo bias does not matter here, and this is several
// times cheaper than a distribution, which keeps the many rounds below fast.
std::size_t pick(std::mt19937& rng, std::size_t n) { return rng() % n; }

// Messages built from the pieces the special cases hinge on: every kind of
// line ending, dots at line starts, TAB (which the scanner first takes for a
// possible line ending), runs that cross the scanner's 64-octet blocks, and
// lines just under, at and over the default 998-octet limit.
std::string random_differential_input(std::mt19937& rng) {
  static const std::vector<std::string> pieces = {
      "\r", "\n", "\r\n", "\r\n", "\r\n", ".", ".", "..", "x", "x", "a.b", "\t", std::string(1, '\0'),
      "\r\n.\r\n", ".\r\n", "\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r\r\n", "\r\n..\r\n", "\xc3\xa9",
  };
  std::string input;
  const std::size_t count = pick(rng, 24);
  // Long lines in one input of sixteen, so most rounds stay short and fast.
  const std::size_t kinds = pick(rng, 16) == 0 ? 40 : 38;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t kind = pick(rng, kinds);
    if (kind < 32) {
      input += pieces[pick(rng, pieces.size())];
    } else if (kind < 36) {
      const std::size_t run = 1 + pick(rng, 80);
      input.append(run, "xy."[pick(rng, 3)]);
    } else if (kind < 38) {
      // A whole canonical line, as typical mail has them, stuffed or not.
      input.append(pick(rng, 3), '.');
      input.append(pick(rng, 90), 'm');
      input += "\r\n";
    } else {
      static constexpr std::size_t long_lengths[] = {997, 998, 999, 1000, 1996, 1997};
      const std::string lead = std::string(pick(rng, 3), '.');
      input += lead + std::string(long_lengths[pick(rng, std::size(long_lengths))] - lead.size(), 'L');
    }
  }
  return input;
}

reframer_options random_differential_options(std::mt19937& rng) {
  reframer_options options;
  options.bare_line_endings = pick(rng, 2) == 0 ? reject : normalize;
  static constexpr std::uint64_t sizes[] = {0, 0, 0, 1, 2, 3, 5, 8, 64, 999, 1000, 1001};
  options.max_size = pick(rng, 4) == 0 ? 1 + pick(rng, 3000) : sizes[pick(rng, std::size(sizes))];
  static constexpr std::size_t lengths[] = {0, 1, 2, 3, 4, 5, 15, 16, 17, 64, 997, 998, 998, 998};
  options.max_line_length = pick(rng, 8) == 0 ? 1 + pick(rng, 100) : lengths[pick(rng, std::size(lengths))];
  return options;
}

// Read sizes as a session sees them: whole, a byte at a time, small, large,
// and the occasional empty read.
std::vector<std::size_t> random_differential_chunks(std::mt19937& rng, std::size_t size) {
  std::vector<std::size_t> chunks;
  const std::size_t mode = pick(rng, 8);
  if (mode == 0) return {size};
  for (std::size_t fed = 0; fed < size;) {
    std::size_t n = 1;
    if (mode >= 3) n = mode >= 6 ? pick(rng, 2000) : pick(rng, 40);
    n = std::min(n, size - fed);
    chunks.push_back(n);
    fed += n;
  }
  chunks.push_back(0);  // a read after the last one, which may find nothing new
  return chunks;
}

testing::AssertionResult same_as_reference(const std::string& input, const reframer_options& options,
                                           const std::vector<std::size_t>& chunks, bool prefilled) {
  data_reframer fast(options);
  reference_reframer slow(options);
  // A session appends to a buffer that may already hold the Received header.
  std::string fast_out = prefilled ? "Received: by smtpguard\r\n" : "";
  std::string slow_out = fast_out;
  std::size_t offset = 0;
  std::size_t feed = 0;
  for (const std::size_t n : chunks) {
    const std::string_view piece = std::string_view(input).substr(offset, n);
    const std::size_t before = fast_out.size();
    const auto got = fast.feed(piece, fast_out);
    const auto want = slow.feed(piece, slow_out);
    if (got.consumed != want.consumed || got.done != want.done || fast.error() != slow.error() ||
        fast.size() != slow.size() || fast_out.size() != slow_out.size() ||
        std::string_view(fast_out).substr(before) != std::string_view(slow_out).substr(before)) {
      const auto state = [](const data_reframer::result& r, reframe_error error, std::uint64_t size,
                            const std::string& out) {
        return "{consumed=" + std::to_string(r.consumed) + " done=" + std::to_string(r.done) +
               " error=" + std::to_string(static_cast<int>(error)) + " size=" + std::to_string(size) +
               " out=" + testing::PrintToString(out) + "}";
      };
      return testing::AssertionFailure()
             << "feed " << feed << " at offset " << offset << " of " << testing::PrintToString(input)
             << " policy " << static_cast<int>(options.bare_line_endings) << " max_size " << options.max_size
             << " max_line_length " << options.max_line_length
             << ": got " << state(got, fast.error(), fast.size(), fast_out)
             << " want " << state(want, slow.error(), slow.size(), slow_out);
    }
    // The session hands each batch to the backend and starts afresh.
    if (feed % 3 == 2) {
      fast_out.clear();
      slow_out.clear();
    }
    offset += got.done ? 0 : n;
    ++feed;
  }
  return testing::AssertionSuccess();
}

TEST(smtp_data_reframer, differential_against_reference_model) {
  std::mt19937 rng(20231218);
  for (int round = 0; round < 300000; ++round) {
    const std::string input = random_differential_input(rng);
    const reframer_options options = random_differential_options(rng);
    const auto chunks = random_differential_chunks(rng, input.size());
    ASSERT_TRUE(same_as_reference(input, options, chunks, rng() % 4 == 0)) << "round " << round;
  }
}

// Typical mail and long lines in larger volume, where the fast path copies
// whole runs of lines and a size limit or a fold lands inside such a run.
TEST(smtp_data_reframer, differential_against_reference_model_on_large_messages) {
  std::mt19937 rng(5322);
  for (int round = 0; round < 200; ++round) {
    std::string input;
    const std::size_t lines = 1 + pick(rng, 600);
    const std::size_t width = pick(rng, 3) == 0 ? 990 + pick(rng, 12) : 1 + pick(rng, 120);
    for (std::size_t i = 0; i < lines; ++i) {
      if (i % 16 == 5) input += "..";
      input.append(width - pick(rng, std::min<std::size_t>(width, 4)), static_cast<char>('a' + i % 26));
      input += pick(rng, 200) == 0 ? (pick(rng, 2) == 0 ? "\n" : "\r") : "\r\n";
    }
    if (pick(rng, 4) != 0) input += ".\r\nQUIT\r\n";
    reframer_options options = random_differential_options(rng);
    if (pick(rng, 2) == 0) options.max_size = pick(rng, 4) == 0 ? 1 + pick(rng, input.size()) : 0;
    auto chunks = random_differential_chunks(rng, input.size());
    if (pick(rng, 2) == 0) chunks.assign(input.size() / 16384 + 1, 16384);
    ASSERT_TRUE(same_as_reference(input, options, chunks, false)) << "round " << round;
  }
}

}  // namespace
}  // namespace smtpguard::smtp

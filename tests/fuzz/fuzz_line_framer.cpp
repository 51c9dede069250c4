// line_framer against a reference model of its contract, fed in segments.
// Input: [chunk seed] [max_length selector] client bytes...
// The model works on the whole stream at once; the framer must report the
// same lines, the same too-long events and the same leftover however the
// stream was cut, because a client controls where its segments end.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "smtp/line_framer.hpp"

namespace {

using smtpguard::fuzz::chunker;
using smtpguard::smtp::frame_status;
using smtpguard::smtp::framed_line;
using smtpguard::smtp::line_framer;

struct event {
  bool too_long = false;
  std::string text;
  bool bare_lf = false;
  bool has_bare_cr = false;
  bool has_nul = false;
  bool operator==(const event&) const = default;
};

// A line (LF included) longer than max_length is dropped whole and reported
// once; so is an unterminated tail that already reached max_length, since its
// LF could only make it longer.
void model(std::string_view stream, std::size_t max_length, std::vector<event>& events, std::string& rest) {
  while (true) {
    const auto lf = stream.find('\n');
    if (lf == std::string_view::npos) break;
    const std::string_view line = stream.substr(0, lf + 1);
    stream.remove_prefix(lf + 1);
    if (line.size() > max_length) {
      events.push_back({true, {}, false, false, false});
      continue;
    }
    std::string_view text = line.substr(0, line.size() - 1);
    event e;
    if (!text.empty() && text.back() == '\r') {
      text.remove_suffix(1);
    } else {
      e.bare_lf = true;
    }
    e.text = std::string(text);
    e.has_bare_cr = text.find('\r') != std::string_view::npos;
    e.has_nul = text.find('\0') != std::string_view::npos;
    events.push_back(std::move(e));
  }
  if (stream.size() >= max_length) {
    events.push_back({true, {}, false, false, false});
    rest.clear();
  } else {
    rest = std::string(stream);
  }
}

void drain(line_framer& framer, std::size_t max_length, std::vector<event>& events) {
  framed_line line;
  while (true) {
    const frame_status status = framer.next(line);
    if (status == frame_status::need_more) return;
    if (status == frame_status::too_long) {
      events.push_back({true, {}, false, false, false});
      continue;
    }
    // The terminator counts toward the limit: at least LF, plus CR unless bare.
    FUZZ_CHECK(line.text.size() + (line.bare_lf ? 1 : 2) <= max_length);
    events.push_back({false, std::string(line.text), line.bare_lf, line.has_bare_cr, line.has_nul});
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  chunker cuts(data[0]);
  // 0xff selects the production default; anything else a small limit, where
  // the boundary cases are reachable with short inputs.
  const std::size_t max_length = data[1] == 0xff ? 512 : 1 + data[1];
  std::string_view stream = smtpguard::fuzz::as_view(data + 2, size - 2);

  std::vector<event> expected;
  std::string expected_rest;
  model(stream, max_length, expected, expected_rest);

  line_framer framer(max_length);
  std::vector<event> seen;
  while (!stream.empty()) {
    const std::size_t n = std::min(cuts.next(), stream.size());
    framer.feed(stream.substr(0, n));
    stream.remove_prefix(n);
    drain(framer, max_length, seen);
    FUZZ_CHECK(seen.size() <= expected.size());
  }
  FUZZ_CHECK(framer.has_buffered() == !expected_rest.empty());
  const std::string rest = framer.take_buffered();
  // What stays buffered between reads is bounded by the limit, not by the client.
  FUZZ_CHECK(rest.size() < max_length);
  FUZZ_CHECK(seen == expected);
  FUZZ_CHECK(rest == expected_rest);
  FUZZ_CHECK(!framer.has_buffered());
  return 0;
}

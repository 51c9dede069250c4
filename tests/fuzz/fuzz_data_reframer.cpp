// The DATA re-framer, the smuggling firewall.
// Input: [chunk seed] [options] message bytes as the client sends them after 354.
// The byte stream the backend receives must be canonical (CRLF only, dot-
// stuffed, one terminator at the very end) and must not depend on how the
// client's bytes were split into reads; the options may only change the
// output where the contract says so.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "smtp/data_reframer.hpp"

namespace {

namespace smtp = smtpguard::smtp;
using smtpguard::fuzz::chunker;

struct outcome {
  std::string out;
  std::size_t consumed = 0;
  bool done = false;
  smtp::reframe_error error = smtp::reframe_error::none;
  std::uint64_t size = 0;
  bool operator==(const outcome&) const = default;
};

outcome run_whole(std::string_view in, smtp::reframer_options options) {
  smtp::data_reframer reframer(options);
  outcome o;
  const auto r = reframer.feed(in, o.out);
  o.consumed = r.consumed;
  o.done = r.done;
  o.error = reframer.error();
  o.size = reframer.size();
  // Once done, more input is pipelined commands, never message.
  if (o.done) {
    const std::size_t before = o.out.size();
    const auto again = reframer.feed("\r\n.\r\nmore", o.out);
    FUZZ_CHECK(again.done && again.consumed == 0 && o.out.size() == before);
  }
  return o;
}

outcome run_chunked(std::string_view in, smtp::reframer_options options, std::uint8_t seed) {
  smtp::data_reframer reframer(options);
  chunker cuts(seed);
  outcome o;
  std::size_t offset = 0;
  while (true) {
    const std::size_t n = std::min(cuts.next(), in.size() - offset);
    const auto r = reframer.feed(in.substr(offset, n), o.out);
    FUZZ_CHECK(r.consumed <= n);
    if (r.done) {
      o.consumed = offset + r.consumed;
      o.done = true;
      break;
    }
    FUZZ_CHECK(r.consumed == n);
    offset += n;
    if (offset == in.size()) {
      o.consumed = offset;
      break;
    }
  }
  o.error = reframer.error();
  o.size = reframer.size();
  return o;
}

// The contract restated line by line, for normalize without a limit: lines
// end at CRLF, bare CR or bare LF; the message ends at the first "." line
// with CRLF on both sides (or CRLF after it as the very first line). A
// streaming scanner and this model must agree on every octet.
outcome model(std::string_view in) {
  outcome o;
  auto put_line = [&](std::string_view line) {
    // Unstuff the client's leading dot, stuff again what then starts with one.
    std::string_view content = line.starts_with('.') ? line.substr(1) : line;
    if (line == ".") content = ".";
    if (content.starts_with('.')) o.out += '.';
    o.out.append(content);
    o.size += content.size();
  };
  std::size_t pos = 0;
  bool previous_canonical = true;
  while (true) {
    const auto brk = in.find_first_of("\r\n", pos);
    if (brk == std::string_view::npos || (in[brk] == '\r' && brk + 1 == in.size())) {
      // Unterminated: its content is out already, a lone "." not yet.
      const std::string_view tail = in.substr(pos, (brk == std::string_view::npos ? in.size() : brk) - pos);
      if (tail != ".") put_line(tail);
      o.consumed = in.size();
      return o;
    }
    const std::string_view line = in.substr(pos, brk - pos);
    const bool canonical = in[brk] == '\r' && in[brk + 1] == '\n';
    pos = brk + (canonical ? 2 : 1);
    if (line == "." && canonical && previous_canonical) {
      o.out += ".\r\n";
      o.consumed = pos;
      o.done = true;
      return o;
    }
    put_line(line);
    o.out += "\r\n";
    o.size += 2;
    previous_canonical = canonical;
  }
}

void check_canonical(const outcome& o, const smtp::reframer_options& options) {
  const std::string& out = o.out;
  const bool too_big = o.error == smtp::reframe_error::too_big;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '\r') {
      // The size cut may split a CRLF; that output is discarded, never sent.
      FUZZ_CHECK((i + 1 < out.size() && out[i + 1] == '\n') || (too_big && i + 1 == out.size()));
    } else if (out[i] == '\n') {
      FUZZ_CHECK(i > 0 && out[i - 1] == '\r');
    }
  }
  // A "." line anywhere but at the end would end the message early at the backend.
  std::size_t line_start = 0;
  while (true) {
    const auto end = out.find("\r\n", line_start);
    if (end == std::string::npos) break;
    const bool last = end + 2 == out.size();
    if (!(last && o.done && o.error == smtp::reframe_error::none))
      FUZZ_CHECK(std::string_view(out).substr(line_start, end - line_start) != ".");
    line_start = end + 2;
  }
  if (o.error == smtp::reframe_error::none) {
    if (o.done) FUZZ_CHECK(out == ".\r\n" || out.ends_with("\r\n.\r\n"));
    if (options.max_size != 0) FUZZ_CHECK(o.size <= options.max_size);
  }
  if (options.bare_line_endings == smtp::line_ending_policy::normalize && options.max_size == 0)
    FUZZ_CHECK(o.error == smtp::reframe_error::none);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t seed = data[0];
  const std::uint8_t flags = data[1];
  const std::string_view in = smtpguard::fuzz::as_view(data + 2, size - 2);

  // Small limits so the size cut lands inside short inputs; high bit: none.
  const std::uint64_t max_size = (flags & 0x80) != 0 ? 0 : flags;
  for (const auto policy : {smtp::line_ending_policy::reject, smtp::line_ending_policy::normalize}) {
    const smtp::reframer_options options{policy, max_size};
    const outcome whole = run_whole(in, options);
    check_canonical(whole, options);
    FUZZ_CHECK(run_chunked(in, options, seed) == whole);

    // Without a limit the output is the same up to where the limit cut it.
    if (max_size != 0) {
      const outcome unlimited = run_whole(in, {policy, 0});
      FUZZ_CHECK(unlimited.consumed == whole.consumed && unlimited.done == whole.done);
      FUZZ_CHECK(unlimited.size == whole.size);
      if (whole.error == smtp::reframe_error::none) {
        FUZZ_CHECK(unlimited == whole);
      } else {
        FUZZ_CHECK(unlimited.out.starts_with(whole.out));
      }
    }
  }

  FUZZ_CHECK(run_whole(in, {smtp::line_ending_policy::normalize, 0}) == model(in));

  // A message with no bare line ending at all is treated identically by both policies.
  const outcome rejecting = run_whole(in, {smtp::line_ending_policy::reject, max_size});
  const outcome normalizing = run_whole(in, {smtp::line_ending_policy::normalize, max_size});
  if (rejecting.error != smtp::reframe_error::bare_line_ending) FUZZ_CHECK(rejecting == normalizing);
  else FUZZ_CHECK(normalizing.out.starts_with(rejecting.out));
  return 0;
}

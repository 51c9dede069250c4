#include "smtp/data_reframer.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace smtpguard::smtp {
namespace {

// Input is examined in blocks of this many octets, one bit per octet.
constexpr std::size_t block_size = 64;

// Plain lines are appended to `out` in pieces of about this size, while the
// octets are still in L1 from the scan.
constexpr std::ptrdiff_t copy_piece = 4096;

// OR-ing 0x07 maps exactly the octets 0x08..0x0F to 0x0F: CR and LF among
// them, so one compare finds both line ending octets at once. The others in
// that range (TAB above all) are rare in mail and are weeded out by the
// callers, which look at the octet anyway.
bool is_line_break_candidate(char c) noexcept { return (static_cast<unsigned char>(c) | 0x07) == 0x0f; }

// Bit i is set when p[i] is a line break candidate. Inlined by force: a call
// would cost as much as the block.
[[gnu::always_inline]] inline std::uint64_t line_break_candidates(const char* p) noexcept {
#if defined(__SSE2__)
  const __m128i low_bits = _mm_set1_epi8(0x07);
  const __m128i folded = _mm_set1_epi8(0x0f);
  const auto quarter = [&](std::size_t offset) -> std::uint32_t {
    const __m128i octets = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + offset));
    return static_cast<std::uint32_t>(
        _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_or_si128(octets, low_bits), folded)));
  };
  const std::uint32_t low = quarter(0) | quarter(16) << 16;
  const std::uint32_t high = quarter(32) | quarter(48) << 16;
  return low | std::uint64_t{high} << 32;
#else
  std::uint64_t mask = 0;
  for (std::size_t i = 0; i < block_size; ++i) mask |= std::uint64_t{is_line_break_candidate(p[i])} << i;
  return mask;
#endif
}

// The same for a block cut short by the end of the input. A few octets, as
// small reads leave, are looked at one by one; otherwise the block is padded
// with NUL, which is never a candidate.
std::uint64_t line_break_candidates(const char* p, const char* end) noexcept {
  const auto length = static_cast<std::size_t>(end - p);
  if (length >= block_size) return line_break_candidates(p);
  if (length < 16) {
    std::uint64_t mask = 0;
    for (std::size_t i = 0; i < length; ++i) mask |= std::uint64_t{is_line_break_candidate(p[i])} << i;
    return mask;
  }
  char block[block_size] = {};
  std::memcpy(block, p, length);
  return line_break_candidates(block);
}

// The octet of the lowest bit set in a non-zero mask.
const char* first_candidate(const char* block, std::uint64_t mask) noexcept {
  return block + static_cast<unsigned>(__builtin_ctzll(mask));
}

bool is_line_break(char c) noexcept { return c == '\r' || c == '\n'; }

// First CR or LF in [p, end), or end.
const char* find_line_break(const char* p, const char* end) noexcept {
  while (p != end) {
    for (std::uint64_t mask = line_break_candidates(p, end); mask != 0; mask &= mask - 1) {
      const char* const candidate = first_candidate(p, mask);
      if (is_line_break(*candidate)) return candidate;
    }
    p += std::min(static_cast<std::ptrdiff_t>(block_size), end - p);
  }
  return end;
}

// Plain lines taken so far, and how much of them is in the output already.
struct plain_run {
  const char* line;            // start of the first line not yet taken
  const char* copied;          // input before this is in the output
  std::string* out;            // null once an error has stopped the output
  std::uint64_t stuffing = 0;  // client stuffing dots in the lines taken

  void copy() {
    if (out != nullptr) out->append(copied, static_cast<std::size_t>(line - copied));
    copied = line;
  }
};

// Takes the lines that end at the candidates in `mask` (bits from `block`)
// while they are plain: CRLF-terminated, no longer than `longest`, and
// starting with a dot only as "..". False at the first one that is not.
// `bounded` is false when the octet after every candidate can be read.
template <bool bounded>
[[gnu::always_inline]] inline bool take_lines_in_block(plain_run& run, const char* block, std::uint64_t mask,
                                                       const char* end, std::size_t longest) noexcept {
  for (; mask != 0; mask &= mask - 1) {
    const char* const brk = first_candidate(block, mask);
    if ((bounded && brk + 1 == end) || std::memcmp(brk, "\r\n", 2) != 0) {
      // Not a line ending, or the LF of a CRLF that straddled two blocks.
      if (*brk != '\r' && !(*brk == '\n' && brk >= run.line)) continue;
      return false;
    }
    const auto length = static_cast<std::size_t>(brk - run.line);
    if (*run.line == '.') [[unlikely]] {
      // The client's stuffing dot is no content.
      if (run.line[1] != '.' || length - 1 > longest) return false;
      ++run.stuffing;
    } else if (length > longest) {
      return false;
    }
    run.line = brk + 2;
    mask &= mask - 1;  // the LF, when it is in this block
  }
  return true;
}

// Walks the input a block at a time for take_plain_lines(). It works on its
// own copy of the run, which the compiler keeps in registers.
class block_walk {
 public:
  block_walk(const plain_run& run, const char* end, std::size_t longest)
      : run_(run), end_(end), longest_(longest), block_(run.line), next_copy_(copy_due()) {
    // Whole blocks with an octet to spare, so the one after a CR can be read.
    const auto whole_blocks = (end - block_ - 1) / static_cast<std::ptrdiff_t>(block_size);
    last_block_ = block_ + whole_blocks * static_cast<std::ptrdiff_t>(block_size);
  }

  const plain_run& run() const noexcept { return run_; }
  const char* block() const noexcept { return block_; }
  bool more() const noexcept { return block_ != last_block_; }

  // False at a line that is not plain.
  [[gnu::always_inline]] bool take(std::uint64_t mask) {
    if (mask != 0) {
      if (!take_lines_in_block<false>(run_, block_, mask, end_, longest_)) return false;
      if (run_.line >= next_copy_) {
        run_.copy();
        next_copy_ = copy_due();
      }
    }
    block_ += block_size;
    return true;
  }

  // The last, short block: true when only an unfinished line, if anything, is left.
  bool finish() {
    return block_ == end_ ||
           take_lines_in_block<true>(run_, block_, line_break_candidates(block_, end_), end_, longest_);
  }

 private:
  const char* copy_due() const noexcept { return run_.copied + std::min(copy_piece, end_ - run_.copied); }

  plain_run run_;
  const char* end_;
  std::size_t longest_;
  const char* block_;
  const char* last_block_;
  const char* next_copy_;
};

// Takes plain lines from run.line on. True when only an unfinished line, if
// anything, is left before `end`; false at a line that is not plain.
bool take_plain_lines(plain_run& run, const char* end, std::size_t longest) {
  block_walk walk(run, end, longest);
  bool plain = true;
  while (plain && walk.more()) plain = walk.take(line_break_candidates(walk.block()));
  plain = plain && walk.finish();
  run = walk.run();
  return plain;
}

// Content octets of the unfinished line [line, end) when it is plain so far
// (no lone or unneeded leading dot, not over `longest`), else 0.
std::size_t plain_unfinished_line(const char* line, const char* end, std::size_t longest) noexcept {
  const auto length = static_cast<std::size_t>(end - line);
  const bool stuffed = length != 0 && *line == '.';
  if (stuffed && (length == 1 || line[1] != '.')) return 0;
  return length - stuffed <= longest ? length - stuffed : 0;
}

}  // namespace

data_reframer::data_reframer(reframer_options options) : options_(options) {}

void data_reframer::emit(std::string& out, const char* data, std::size_t length) const {
  if (error_ == reframe_error::none) out.append(data, length);
}

void data_reframer::emit_content(std::string& out, const char* data, std::size_t length) {
  const std::uint64_t limit = options_.max_size;
  if (error_ == reframe_error::none && limit != 0 && size_ + length > limit) {
    // Cut exactly at the limit, so the output does not depend on how reads were split.
    out.append(data, static_cast<std::size_t>(limit - size_));
    error_ = reframe_error::too_big;
  }
  emit(out, data, length);
  size_ += length;
}

bool data_reframer::end_line(bool canonical, std::string& out) {
  const bool lone_dot = pending_dot_;
  const bool after_canonical = previous_ending_canonical_;
  pending_dot_ = false;
  at_line_start_ = true;
  line_length_ = 0;
  previous_ending_canonical_ = canonical;
  // RFC 5321 section 4.1.1.4: only CRLF "." CRLF ends the data. A "." line
  // touching a bare CR or LF is exactly what smuggling relies on, since other
  // servers may treat that ending as the end of the message.
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

std::size_t data_reframer::longest_line() const noexcept {
  return options_.max_line_length == 0 ? std::numeric_limits<std::size_t>::max() : options_.max_line_length;
}

const char* data_reframer::plain_end(const char* p, const char* end) const noexcept {
  // A plain line's size is at most its length in the input, so whatever is
  // within the remaining budget cannot reach the limit; the line that may
  // is left to step(), which cuts at the exact octet. After an error only
  // the size still counts.
  const std::uint64_t limit = options_.max_size;
  if (error_ != reframe_error::none || limit == 0) return end;
  return limit - size_ < static_cast<std::uint64_t>(end - p) ? p + (limit - size_) : end;
}

// Nearly every line of real mail is plain: content, then CRLF, no longer
// than the limit, and starting with a dot only when the client stuffed one
// ("..x" is unstuffed to ".x" and stuffed back to "..x"). Such lines are
// copied unchanged in large pieces instead of being stepped through, and
// everything else (bare endings, a lone or unneeded leading dot, folding,
// the size cut) is left to step().
const char* data_reframer::pass_plain_lines(const char* const p, const char* const input_end,
                                            std::string& out) {
  const char* const end = plain_end(p, input_end);
  const std::size_t longest = longest_line();
  plain_run run{p, p, error_ == reframe_error::none ? &out : nullptr};
  const bool reached_end = take_plain_lines(run, end, longest);
  if (run.line != p) previous_ending_canonical_ = true;
  if (reached_end) {
    // So does the line the input ends inside, while it is plain so far.
    const std::size_t unfinished = plain_unfinished_line(run.line, end, longest);
    if (unfinished != 0) {
      run.stuffing += *run.line == '.';
      run.line = end;
      at_line_start_ = false;
      line_length_ = unfinished;
    }
  }
  run.copy();
  size_ += static_cast<std::uint64_t>(run.line - p) - run.stuffing;
  return run.line;
}

// The rest of a line an earlier read began, while it stays plain.
const char* data_reframer::continue_plain_line(const char* const p, const char* const input_end,
                                               std::string& out) {
  const char* const end = plain_end(p, input_end);
  const char* const brk = find_line_break(p, end);
  const std::size_t length = line_length_ + static_cast<std::size_t>(brk - p);
  if (length > longest_line()) return p;
  if (brk == end) {
    emit(out, p, static_cast<std::size_t>(end - p));
    size_ += static_cast<std::uint64_t>(end - p);
    line_length_ = length;
    return end;
  }
  if (brk + 1 == end || std::memcmp(brk, "\r\n", 2) != 0) return p;
  const char* const next = brk + 2;
  emit(out, p, static_cast<std::size_t>(next - p));
  size_ += static_cast<std::uint64_t>(next - p);
  at_line_start_ = true;
  line_length_ = 0;
  previous_ending_canonical_ = true;
  return next;
}

const char* data_reframer::step(const char* p, const char* const end, std::string& out) {
  if (pending_cr_) {
    pending_cr_ = false;
    if (*p == '\n') {
      end_line(true, out);
      return p + 1;
    }
    // A bare CR ends the line; the octet after it starts the next one.
    end_line(false, out);
    return p;
  }
  if (at_line_start_) {
    at_line_start_ = false;
    if (*p == '.') {
      pending_dot_ = true;
      return p + 1;
    }
  } else if (pending_dot_ && !is_line_break(*p)) {
    // RFC 5321 section 4.5.2: the client's leading dot is removed; the
    // content is stuffed again when it itself starts with a dot.
    pending_dot_ = false;
    if (*p == '.') emit(out, ".", 1);
  }
  const char* const stop = find_line_break(p, end);
  const std::size_t limit = options_.max_line_length;
  while (p != stop) {
    if (limit != 0 && line_length_ == limit) {
      // RFC 5321 4.5.3.1.6: an over-long line is folded, never passed on.
      // The continuation is a line of its own and is stuffed like any
      // other, so a fold can never produce a lone "." at the backend.
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
  if (p == end) return p;
  if (*p == '\r') {
    pending_cr_ = true;
  } else {
    end_line(false, out);
  }
  return p + 1;
}

data_reframer::result data_reframer::feed(std::string_view in, std::string& out) {
  if (done_) return {0, true};
  // Plain mail leaves about as long as it came; one reservation spares the
  // string from growing several times within a read.
  if (error_ == reframe_error::none) out.reserve(out.size() + in.size() + 8);
  const char* const begin = in.data();
  const char* const end = begin + in.size();
  const char* p = begin;
  while (p != end) {
    const char* const before = p;
    if (!pending_cr_ && !pending_dot_) {
      p = at_line_start_ ? pass_plain_lines(p, end, out) : continue_plain_line(p, end, out);
    }
    if (p == before) {
      p = step(p, end, out);
      if (done_) return {static_cast<std::size_t>(p - begin), true};
    }
  }
  return {in.size(), false};
}

}  // namespace smtpguard::smtp

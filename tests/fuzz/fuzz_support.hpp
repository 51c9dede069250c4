#pragma once
// Helpers shared by the fuzz targets. Invariant failures abort, so libFuzzer
// records the input as a crash exactly as it would a sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace smtpguard::fuzz {

[[noreturn]] inline void invariant_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: invariant violated: %s\n", file, line, what);
  std::abort();
}

}  // namespace smtpguard::fuzz

// Not assert(): it must hold whatever NDEBUG says.
#define FUZZ_CHECK(condition) \
  ((condition) ? static_cast<void>(0) : ::smtpguard::fuzz::invariant_failed(#condition, __FILE__, __LINE__))

namespace smtpguard::fuzz {

inline std::string_view as_view(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Splits at LF; a CR right before the LF belongs to the terminator, as on the
/// wire. The final piece is kept even without an LF (and even when empty only
/// if the input itself is empty), so every input byte lands in some line.
inline std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const auto lf = text.find('\n');
    std::string_view line = text.substr(0, lf);
    text = lf == std::string_view::npos ? std::string_view{} : text.substr(lf + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
  }
  return lines;
}

/// Read sizes for splitting a stream, driven by one input byte, so the fuzzer
/// explores how a peer's segments fall without spending input on each size.
/// Zero-length reads are included: a socket read can legitimately return
/// nothing new after a partial TLS record.
class chunker {
 public:
  explicit chunker(std::uint8_t seed) : state_(0x9e3779b9u ^ (seed * 0x01000193u)), max_(1u + (seed & 0x1fu)) {
    if (state_ == 0) state_ = 1;
  }
  std::size_t next() {
    // xorshift32: deterministic, cheap, good enough to vary the cut points.
    state_ ^= state_ << 13;
    state_ ^= state_ >> 17;
    state_ ^= state_ << 5;
    if ((state_ & 0xf00u) == 0) return 0;
    return 1 + (state_ >> 8) % max_;
  }

 private:
  std::uint32_t state_;
  std::uint32_t max_;
};

}  // namespace smtpguard::fuzz

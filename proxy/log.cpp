#include "log.hpp"

#include <openssl/rand.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace smtpguard::log {
namespace {

std::atomic<log_format> current_format{log_format::text};

std::string timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[40];
  const auto n = std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buffer + n, sizeof buffer - n, ".%03dZ", static_cast<int>(millis));
  return buffer;
}

// Values come from clients (HELO names, user names): escape everything that
// could forge a second line or a second field.
void append_escaped(std::string& out, std::string_view value, bool json) {
  for (unsigned char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, json ? "\\u%04x" : "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
}

bool needs_quotes(std::string_view value) {
  if (value.empty()) return true;
  for (unsigned char c : value)
    if (c <= 0x20 || c == '"' || c == '=' || c == '\\' || c >= 0x7f) return true;
  return false;
}

}  // namespace

void set_format(log_format format) { current_format.store(format); }

event::event(std::string_view name) {
  line_.reserve(256);
  if (current_format.load() == log_format::json) line_ += '{';
  add_raw("ts", timestamp(), true);
  add_raw("event", name, true);
}

event::~event() {
  line_ += current_format.load() == log_format::json ? "}\n" : "\n";
  // A failed write to stderr has nowhere better to be reported.
  [[maybe_unused]] auto written = ::write(STDERR_FILENO, line_.data(), line_.size());
}

event& event::add(std::string_view key, std::string_view value) {
  add_raw(key, value, true);
  return *this;
}

event& event::add(std::string_view key, std::int64_t value) {
  add_raw(key, std::to_string(value), false);
  return *this;
}

void event::add_raw(std::string_view key, std::string_view value, bool quoted) {
  const bool json = current_format.load() == log_format::json;
  if (json) {
    if (line_.size() > 1) line_ += ',';
    line_ += '"';
    line_ += key;
    line_ += "\":";
    if (quoted) line_ += '"';
    append_escaped(line_, value, true);
    if (quoted) line_ += '"';
    return;
  }
  if (!line_.empty()) line_ += ' ';
  line_ += key;
  line_ += '=';
  if (quoted && needs_quotes(value)) {
    line_ += '"';
    append_escaped(line_, value, false);
    line_ += '"';
  } else {
    append_escaped(line_, value, false);
  }
}

std::string new_session_id() {
  std::uint8_t bytes[6];
  RAND_bytes(bytes, sizeof bytes);
  char text[13];
  for (std::size_t i = 0; i < sizeof bytes; ++i) std::snprintf(text + 2 * i, 3, "%02x", bytes[i]);
  return text;
}

}  // namespace smtpguard::log

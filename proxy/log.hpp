#pragma once
// One line per session event on stderr, key=value or JSON, tagged with the
// session id. A line is written with a single write(2) so threads never interleave.
#include <cstdint>
#include <string>
#include <string_view>

#include "config.hpp"

namespace smtpguard::log {

void set_format(log_format format);

/// A fresh random id (12 hex digits) tagging every line of one session.
std::string new_session_id();

/// Builds one log line; written when destroyed.
class event {
 public:
  explicit event(std::string_view name);
  ~event();
  event(const event&) = delete;
  event& operator=(const event&) = delete;

  event& add(std::string_view key, std::string_view value);
  event& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  event& add(std::string_view key, const std::string& value) { return add(key, std::string_view(value)); }
  event& add(std::string_view key, std::int64_t value);
  event& add(std::string_view key, int value) { return add(key, static_cast<std::int64_t>(value)); }
  event& add(std::string_view key, std::uint64_t value) { return add(key, static_cast<std::int64_t>(value)); }
  event& add(std::string_view key, bool value) {
    return add(key, std::string_view(value ? "true" : "false"));
  }

 private:
  void add_raw(std::string_view key, std::string_view value, bool quoted);
  std::string line_;
};

}  // namespace smtpguard::log

#pragma once
// Results of all sessions, shared by the workers (thread-safe).
#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "options.hpp"

namespace smtpguard::bench {

/// What one session reports when it ends.
struct session_result {
  bool ok = false;
  std::string failure;        ///< short reason when !ok: "connect", "tls", "auth", ...
  double seconds = 0;         ///< connect to QUIT reply
  std::size_t messages = 0;   ///< messages accepted (250 after the dot)
  std::size_t bytes = 0;      ///< message bytes accepted (before dot-stuffing)
  bool resumed = false;       ///< TLS handshake resumed a previous session
  std::string detail;          ///< the unexpected reply, if that was the failure
  std::chrono::steady_clock::time_point started;
};

class stats {
 public:
  void add(const session_result& r);
  void add_late_start() {
    std::lock_guard lock(mutex_);
    ++late_starts_;
  }
  std::size_t failed() const;
  /// One line per failure reason with the first unexpected reply seen.
  std::string failure_details() const;
  /// The one JSON line printed at the end.
  std::string to_json(const options& o, double elapsed_s) const;

 private:
  mutable std::mutex mutex_;
  std::size_t ok_ = 0;
  std::size_t failed_ = 0;
  std::size_t messages_ = 0;
  std::size_t bytes_ = 0;
  std::size_t resumed_ = 0;
  std::size_t late_starts_ = 0;
  std::map<std::string, std::size_t> failures_;
  std::map<std::string, std::string> first_detail_;
  std::vector<double> latencies_ms_;  ///< successful sessions only
};

}  // namespace smtpguard::bench

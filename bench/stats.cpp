#include "stats.hpp"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

namespace smtpguard::bench {
namespace {

// Nearest-rank percentile of sorted values; 0 when empty.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

}  // namespace

void stats::add(const session_result& r) {
  std::lock_guard lock(mutex_);
  messages_ += r.messages;
  bytes_ += r.bytes;
  if (r.resumed) ++resumed_;
  if (r.ok) {
    ++ok_;
    latencies_ms_.push_back(r.seconds * 1000.0);
  } else {
    ++failed_;
    const std::string reason = r.failure.empty() ? std::string("unknown") : r.failure;
    ++failures_[reason];
    if (!r.detail.empty()) first_detail_.try_emplace(reason, r.detail);
  }
}

std::size_t stats::failed() const {
  std::lock_guard lock(mutex_);
  return failed_;
}

std::string stats::failure_details() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [reason, detail] : first_detail_) out += "  " + reason + ": " + detail + "\n";
  return out;
}

std::string stats::to_json(const options& o, double elapsed_s) const {
  std::lock_guard lock(mutex_);
  auto sorted = latencies_ms_;
  std::sort(sorted.begin(), sorted.end());
  const double secs = elapsed_s > 0 ? elapsed_s : 1e-9;
  nlohmann::json failures = nlohmann::json::object();
  for (const auto& [reason, count] : failures_) failures[reason] = count;
  nlohmann::json out = {
      {"mode", mode_name(o.mode)},
      {"auth", auth_name(o.auth)},
      {"concurrency", o.idle > 0 ? o.idle : o.concurrency},
      {"sessions_ok", ok_},
      {"sessions_failed", failed_},
      {"failures", failures},
      {"elapsed_s", round3(elapsed_s)},
      {"sessions_per_s", round3(static_cast<double>(ok_) / secs)},
      {"msgs_per_s", round3(static_cast<double>(messages_) / secs)},
      {"mb_per_s", round3(static_cast<double>(bytes_) / 1e6 / secs)},
      {"latency_ms",
       {{"p50", round3(percentile(sorted, 50))},
        {"p90", round3(percentile(sorted, 90))},
        {"p99", round3(percentile(sorted, 99))}}},
      {"resumed", resumed_},
      {"messages", messages_},
  };
  if (o.rate > 0) {
    out["rate"] = o.rate;
    out["late_starts"] = late_starts_;
  }
  if (o.idle > 0) out["idle"] = o.idle;
  return out.dump();
}

}  // namespace smtpguard::bench

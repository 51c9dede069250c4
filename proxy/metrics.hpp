#pragma once
// Prometheus metrics (prometheus-cpp), all prefixed smtpguard_ and with
// bounded label sets: listener names come from the config, TLS versions and
// ciphers from a short fixed list, mechanisms from the enabled set.
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tls/certificate_dates.hpp"

namespace prometheus {
class Exposer;
}

namespace smtpguard {

class metrics {
 public:
  metrics();
  ~metrics();

  /// What /readyz reports: ready or not, and a one-line reason.
  struct readiness {
    bool ready = false;
    std::string reason;
  };
  using readiness_probe = std::function<readiness()>;

  /// Serves /metrics, /healthz (the process answers) and /readyz (`probe`)
  /// on `address` ("host:port"). Throws if it cannot bind.
  void expose(const std::string& address, readiness_probe probe);
  /// Stops serving HTTP (joins its threads), so the probe's objects can go.
  void stop_exposing();

  void connection_accepted(std::string_view listener);
  /// reason: "total_limit", "per_ip_limit", "lockout", "pregreet".
  void connection_rejected(std::string_view reason);
  /// A PROXY protocol header on a listener that expects one. result:
  /// "proxied", "local", "unknown" (accepted); "untrusted", "bad", "timeout", "closed".
  void proxy_header(std::string_view result);
  /// scope: "ip" or "user": an AUTH refused with 454 without checking credentials.
  void auth_lockout(std::string_view scope);
  void session_started() { sessions_active_.Increment(); }
  void session_ended(double seconds);
  /// result: "success" or a failure reason ("timeout", "error", "closed").
  void tls_handshake(std::string_view listener, std::string_view version, std::string_view cipher,
                     std::string_view result);
  /// result: "verified", or why a certificate was refused ("expired", "revoked",
  /// "unknown_ca", "missing", ...), from tls::verification_failure.
  void client_certificate(std::string_view result);
  /// result: "success", "failure", "cancelled", "malformed".
  void auth_attempt(std::string_view mechanism, std::string_view result);
  /// How a PLAIN/LOGIN password was checked: "hash" (the slow hash ran),
  /// "cache" (a recent success), "shared" (the same credentials' check
  /// already under way answered this one too).
  void password_check(std::string_view by);
  /// One reply smtpguard sent to a client, by the command it answered
  /// ("greeting", "ehlo", "mail", ..., "other") and its first digit.
  void reply(std::string_view command, char first_digit);
  /// A refusal by policy: "relay_denied", "sender_mismatch", "message_size", ...
  void rejection(std::string_view reason);
  /// result: "accepted", "rejected" (by the backend or by policy), "deferred", "failed" (backend trouble).
  void message(std::string_view result, std::uint64_t bytes, int recipients);
  /// stage: "connect", "greeting", "ehlo", "transaction".
  void backend_error(std::string_view stage);
  void backend_connected(double seconds);
  /// A session took a kept backend connection instead of opening one.
  void backend_reused() { backend_reused_.Increment(); }
  /// A TLS handshake waited for one of its thread's slots.
  void tls_handshake_queued() { tls_handshakes_queued_.Increment(); }
  /// One reply read from the backend, by its first digit.
  void backend_reply(char first_digit);
  /// Replaces the certificate expiry gauges.
  void certificates(const std::vector<tls::certificate_dates>& dates);
  void backend_up(bool up) { backend_up_.Set(up ? 1 : 0); }
  /// result: "success" or "failure".
  void reload(std::string_view result);
  /// Redis (shared_state.redis) failed or did not answer in time.
  void shared_state_error() { shared_state_errors_.Increment(); }
  /// A login through the POP3 front. result: "success" or "failure".
  void pop3_login(std::string_view listener, std::string_view result);
  /// What smtpguard_pop_before_smtp_clients reads at each scrape: the
  /// addresses whose POP3 login still lets them relay. Set before expose().
  void count_pop_before_smtp_clients(std::function<double()> source);

  const std::shared_ptr<prometheus::Registry>& registry() const noexcept { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string exposed_host_;
  prometheus::Family<prometheus::Counter>& connections_;
  prometheus::Family<prometheus::Counter>& connections_rejected_;
  prometheus::Family<prometheus::Counter>& proxy_headers_;
  prometheus::Family<prometheus::Counter>& auth_lockouts_;
  prometheus::Family<prometheus::Counter>& tls_handshakes_;
  prometheus::Family<prometheus::Counter>& auth_attempts_;
  prometheus::Family<prometheus::Counter>& password_checks_;
  prometheus::Counter& password_checks_hash_;
  prometheus::Counter& password_checks_cache_;
  prometheus::Counter& password_checks_shared_;
  prometheus::Family<prometheus::Counter>& messages_;
  prometheus::Family<prometheus::Counter>& message_bytes_;
  prometheus::Family<prometheus::Counter>& recipients_;
  prometheus::Family<prometheus::Counter>& backend_errors_;
  prometheus::Gauge& sessions_active_;
  prometheus::Gauge& backend_up_;
  prometheus::Family<prometheus::Counter>& reloads_;
  prometheus::Gauge& last_reload_;
  prometheus::Family<prometheus::Counter>& client_certificates_;
  prometheus::Family<prometheus::Counter>& replies_;
  prometheus::Family<prometheus::Counter>& rejections_;
  prometheus::Family<prometheus::Counter>& backend_replies_;
  prometheus::Histogram& message_size_;
  prometheus::Histogram& session_duration_;
  prometheus::Histogram& backend_connect_;
  prometheus::Counter& backend_reused_;
  prometheus::Counter& tls_handshakes_queued_;
  prometheus::Family<prometheus::Gauge>& certificate_not_after_;
  prometheus::Family<prometheus::Counter>& pop3_logins_;
  prometheus::Counter& shared_state_errors_;
  std::shared_ptr<prometheus::Collectable> pop_before_smtp_clients_;
  static constexpr std::size_t reply_commands = 12;  ///< greeting, ehlo, ..., other
  static constexpr std::size_t reply_classes = 5;    ///< 2xx, 3xx, 4xx, 5xx, other
  std::array<std::atomic<prometheus::Counter*>, reply_commands * reply_classes> reply_counters_{};
  std::array<std::atomic<prometheus::Counter*>, reply_classes> backend_reply_counters_{};
  std::mutex certificates_mutex_;
  std::vector<prometheus::Gauge*> certificate_gauges_;
};

}  // namespace smtpguard

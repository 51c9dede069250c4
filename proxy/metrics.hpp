#pragma once
// Prometheus metrics (prometheus-cpp), all prefixed smtpguard_ and with
// bounded label sets: listener names come from the config, TLS versions and
// ciphers from a short fixed list, mechanisms from the enabled set.
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

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
  /// scope: "ip" or "user": an AUTH refused with 454 without checking credentials.
  void auth_lockout(std::string_view scope);
  void session_started() { sessions_active_.Increment(); }
  void session_ended() { sessions_active_.Decrement(); }
  /// result: "success" or a failure reason ("timeout", "error", "closed").
  void tls_handshake(std::string_view listener, std::string_view version, std::string_view cipher,
                     std::string_view result);
  /// result: "success", "failure", "cancelled", "malformed".
  void auth_attempt(std::string_view mechanism, std::string_view result);
  /// result: "accepted", "rejected" (by the backend or by policy), "failed" (backend trouble).
  void message(std::string_view result, std::uint64_t bytes, int recipients);
  /// stage: "connect", "greeting", "ehlo", "data"...
  void backend_error(std::string_view stage);
  void backend_up(bool up) { backend_up_.Set(up ? 1 : 0); }
  /// result: "success" or "failure".
  void reload(std::string_view result);

  const std::shared_ptr<prometheus::Registry>& registry() const noexcept { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>& connections_;
  prometheus::Family<prometheus::Counter>& connections_rejected_;
  prometheus::Family<prometheus::Counter>& auth_lockouts_;
  prometheus::Family<prometheus::Counter>& tls_handshakes_;
  prometheus::Family<prometheus::Counter>& auth_attempts_;
  prometheus::Family<prometheus::Counter>& messages_;
  prometheus::Family<prometheus::Counter>& message_bytes_;
  prometheus::Family<prometheus::Counter>& recipients_;
  prometheus::Family<prometheus::Counter>& backend_errors_;
  prometheus::Gauge& sessions_active_;
  prometheus::Gauge& backend_up_;
  prometheus::Family<prometheus::Counter>& reloads_;
  prometheus::Gauge& last_reload_;
};

}  // namespace smtpguard

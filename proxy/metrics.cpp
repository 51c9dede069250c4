#include "metrics.hpp"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/exposer.h>

#include <mutex>

namespace smtpguard {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;

std::string label(std::string_view value) { return value.empty() ? std::string("none") : std::string(value); }

// civetweb callbacks are plain function pointers without user data of ours,
// and there is one metrics listener per process.
std::mutex probe_mutex;
metrics::readiness_probe current_probe;

void send_text(mg_connection* connection, int status, const char* status_text, const std::string& body) {
  mg_printf(connection,
            "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            status, status_text, body.size());
  mg_write(connection, body.data(), body.size());
}

// Answers the health endpoints before civetweb routes the request to the
// /metrics handler; returning 0 lets everything else through.
int health_endpoints(mg_connection* connection) {
  const mg_request_info* request = mg_get_request_info(connection);
  const std::string_view uri = request && request->local_uri ? request->local_uri : "";
  if (uri == "/healthz") {
    send_text(connection, 200, "OK", "ok\n");
    return 200;
  }
  if (uri == "/readyz") {
    metrics::readiness_probe probe;
    {
      std::lock_guard lock(probe_mutex);
      probe = current_probe;
    }
    const auto state = probe ? probe() : metrics::readiness{true, "ready"};
    if (state.ready) send_text(connection, 200, "OK", state.reason + "\n");
    else send_text(connection, 503, "Service Unavailable", state.reason + "\n");
    return state.ready ? 200 : 503;
  }
  return 0;
}

}  // namespace

metrics::metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      connections_(BuildCounter()
                       .Name("smtpguard_connections_total")
                       .Help("Client connections accepted, by listener")
                       .Register(*registry_)),
      connections_rejected_(BuildCounter()
                                .Name("smtpguard_connections_rejected_total")
                                .Help("Client connections refused at connect or before the greeting, by reason")
                                .Register(*registry_)),
      auth_lockouts_(BuildCounter()
                         .Name("smtpguard_auth_lockouts_total")
                         .Help("AUTH attempts refused because the address or user is locked out, by scope")
                         .Register(*registry_)),
      tls_handshakes_(BuildCounter()
                          .Name("smtpguard_tls_handshakes_total")
                          .Help("TLS handshakes with clients, by listener, version, cipher and result")
                          .Register(*registry_)),
      auth_attempts_(BuildCounter()
                         .Name("smtpguard_auth_attempts_total")
                         .Help("SMTP AUTH attempts, by mechanism and result")
                         .Register(*registry_)),
      messages_(BuildCounter()
                    .Name("smtpguard_messages_total")
                    .Help("Messages received from clients, by result")
                    .Register(*registry_)),
      message_bytes_(BuildCounter()
                         .Name("smtpguard_message_bytes_total")
                         .Help("Message octets relayed to the backend and accepted by it")
                         .Register(*registry_)),
      recipients_(BuildCounter()
                      .Name("smtpguard_recipients_total")
                      .Help("Recipients of messages accepted by the backend")
                      .Register(*registry_)),
      backend_errors_(BuildCounter()
                          .Name("smtpguard_backend_errors_total")
                          .Help("Backend failures, by stage")
                          .Register(*registry_)),
      sessions_active_(BuildGauge()
                           .Name("smtpguard_sessions_active")
                           .Help("Client sessions currently open")
                           .Register(*registry_)
                           .Add({})),
      backend_up_(BuildGauge()
                      .Name("smtpguard_backend_up")
                      .Help("1 when the last backend probe succeeded")
                      .Register(*registry_)
                      .Add({})),
      reloads_(BuildCounter()
                   .Name("smtpguard_config_reloads_total")
                   .Help("Reloads of certificates, keys, CAs, CRLs and users, by result")
                   .Register(*registry_)),
      last_reload_(BuildGauge()
                       .Name("smtpguard_config_last_reload_success_timestamp_seconds")
                       .Help("Unix time of the last successful load of certificates and users")
                       .Register(*registry_)
                       .Add({})) {
  last_reload_.SetToCurrentTime();
  BuildGauge()
      .Name("smtpguard_build_info")
      .Help("Build information; the value is always 1")
      .Register(*registry_)
      .Add({{"version", SMTPGUARD_VERSION}})
      .Set(1);
}

metrics::~metrics() = default;

void metrics::expose(const std::string& address, readiness_probe probe) {
  {
    std::lock_guard lock(probe_mutex);
    current_probe = std::move(probe);
  }
  static CivetCallbacks callbacks;
  callbacks.begin_request = health_endpoints;
  exposer_ = std::make_unique<prometheus::Exposer>(address, 1, &callbacks);
  exposer_->RegisterCollectable(registry_);
}

void metrics::stop_exposing() {
  exposer_.reset();
  std::lock_guard lock(probe_mutex);
  current_probe = nullptr;
}

void metrics::connection_accepted(std::string_view listener) {
  connections_.Add({{"listener", label(listener)}}).Increment();
}

void metrics::connection_rejected(std::string_view reason) {
  connections_rejected_.Add({{"reason", label(reason)}}).Increment();
}

void metrics::auth_lockout(std::string_view scope) { auth_lockouts_.Add({{"scope", label(scope)}}).Increment(); }

void metrics::tls_handshake(std::string_view listener, std::string_view version, std::string_view cipher,
                            std::string_view result) {
  tls_handshakes_
      .Add({{"listener", label(listener)},
            {"version", label(version)},
            {"cipher", label(cipher)},
            {"result", label(result)}})
      .Increment();
}

void metrics::auth_attempt(std::string_view mechanism, std::string_view result) {
  auth_attempts_.Add({{"mechanism", label(mechanism)}, {"result", label(result)}}).Increment();
}

void metrics::message(std::string_view result, std::uint64_t bytes, int recipients) {
  messages_.Add({{"result", label(result)}}).Increment();
  if (result == "accepted") {
    message_bytes_.Add({}).Increment(static_cast<double>(bytes));
    recipients_.Add({}).Increment(recipients);
  }
}

void metrics::reload(std::string_view result) {
  reloads_.Add({{"result", label(result)}}).Increment();
  if (result == "success") last_reload_.SetToCurrentTime();
}

void metrics::backend_error(std::string_view stage) {
  backend_errors_.Add({{"stage", label(stage)}}).Increment();
}

}  // namespace smtpguard

#include "metrics.hpp"

#include <prometheus/exposer.h>

namespace smtpguard {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;

std::string label(std::string_view value) { return value.empty() ? std::string("none") : std::string(value); }

}  // namespace

metrics::metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      connections_(BuildCounter()
                       .Name("smtpguard_connections_total")
                       .Help("Client connections accepted, by listener")
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
                      .Add({})) {
  BuildGauge()
      .Name("smtpguard_build_info")
      .Help("Build information; the value is always 1")
      .Register(*registry_)
      .Add({{"version", SMTPGUARD_VERSION}})
      .Set(1);
}

metrics::~metrics() = default;

void metrics::expose(const std::string& address) {
  exposer_ = std::make_unique<prometheus::Exposer>(address, 1);
  exposer_->RegisterCollectable(registry_);
}

void metrics::connection_accepted(std::string_view listener) {
  connections_.Add({{"listener", label(listener)}}).Increment();
}

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

void metrics::backend_error(std::string_view stage) {
  backend_errors_.Add({{"stage", label(stage)}}).Increment();
}

}  // namespace smtpguard

#include "metrics.hpp"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/client_metric.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <chrono>
#include <mutex>
#include <thread>

namespace smtpguard {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

std::string reply_class(char first_digit) {
  if (first_digit < '2' || first_digit > '5') return "other";
  return std::string(1, first_digit) + "xx";
}

// 2xx..5xx, then anything else.
std::size_t class_index(char first_digit) {
  return first_digit >= '2' && first_digit <= '5' ? static_cast<std::size_t>(first_digit - '2') : 4;
}

constexpr std::string_view reply_command_labels[] = {"greeting", "ehlo", "helo", "starttls", "auth", "mail",
                                              "rcpt",     "data", "rset", "noop",     "quit", "other"};

// Counted for every reply: the counter of each label pair is looked up once
// and kept, rather than building a label map per reply. Family::Add returns
// the same counter for the same labels, so threads racing to fill a slot agree.
template <typename MakeLabels>
prometheus::Counter& cached(std::atomic<prometheus::Counter*>& slot, prometheus::Family<prometheus::Counter>& family,
                            MakeLabels make_labels) {
  prometheus::Counter* counter = slot.load(std::memory_order_acquire);
  if (counter == nullptr) {
    counter = &family.Add(make_labels());
    slot.store(counter, std::memory_order_release);
  }
  return *counter;
}

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

// Connects to the metrics listener and hangs up, to wake civetweb's accept
// loop, which otherwise looks at its stop flag only every 2 seconds.
void knock(const std::string& host, int port) {
  sockaddr_storage address{};
  socklen_t length = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(port));
    length = sizeof *v4;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(port));
    length = sizeof *v6;
  } else {
    return;
  }
  const int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  [[maybe_unused]] const int ignored = ::connect(fd, reinterpret_cast<sockaddr*>(&address), length);
  ::close(fd);
}

// The address to knock at for a listener bound to `host`.
std::string knock_host(std::string host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "::") return "::1";
  return host;
}

// A gauge whose value is read when Prometheus scrapes, not kept up to date:
// grants run out on their own, with nobody to decrement a counter.
class scraped_gauge final : public prometheus::Collectable {
 public:
  scraped_gauge(std::string name, std::string help, std::function<double()> source)
      : name_(std::move(name)), help_(std::move(help)), source_(std::move(source)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily family;
    family.name = name_;
    family.help = help_;
    family.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric metric;
    metric.gauge.value = source_();
    family.metric.push_back(std::move(metric));
    return {std::move(family)};
  }

 private:
  std::string name_;
  std::string help_;
  std::function<double()> source_;
};

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
      proxy_headers_(BuildCounter()
                         .Name("smtpguard_proxy_headers_total")
                         .Help("PROXY protocol headers from load balancers, by result")
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
      password_checks_(BuildCounter()
                           .Name("smtpguard_auth_password_checks_total")
                           .Help("PLAIN and LOGIN password checks, by how they were answered: the slow hash, "
                                 "the credential cache, or a check of the same credentials already under way")
                           .Register(*registry_)),
      password_checks_hash_(password_checks_.Add({{"by", "hash"}})),
      password_checks_cache_(password_checks_.Add({{"by", "cache"}})),
      password_checks_shared_(password_checks_.Add({{"by", "shared"}})),
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
                   .Help("Reloads of the configuration, certificates, keys, CAs, CRLs and users, by result")
                   .Register(*registry_)),
      last_reload_(BuildGauge()
                       .Name("smtpguard_config_last_reload_success_timestamp_seconds")
                       .Help("Unix time of the last successful reload")
                       .Register(*registry_)
                       .Add({})),
      client_certificates_(BuildCounter()
                               .Name("smtpguard_client_certificates_total")
                               .Help("Client certificate checks in TLS handshakes that asked for one, by result")
                               .Register(*registry_)),
      replies_(BuildCounter()
                   .Name("smtpguard_smtp_replies_total")
                   .Help("Replies sent to clients, by the command answered and reply class")
                   .Register(*registry_)),
      rejections_(BuildCounter()
                      .Name("smtpguard_rejections_total")
                      .Help("Commands and messages refused by smtpguard's own policy, by reason")
                      .Register(*registry_)),
      backend_replies_(BuildCounter()
                           .Name("smtpguard_backend_replies_total")
                           .Help("Replies read from the backend in client sessions, by class")
                           .Register(*registry_)),
      message_size_(BuildHistogram()
                        .Name("smtpguard_message_size_bytes")
                        .Help("Size of messages received from clients, in octets")
                        .Register(*registry_)
                        .Add({}, Histogram::BucketBoundaries{1024, 4096, 16384, 65536, 262144, 1048576,
                                                             4194304, 16777216, 67108864})),
      session_duration_(BuildHistogram()
                            .Name("smtpguard_session_duration_seconds")
                            .Help("Client session lifetime, from accept to close")
                            .Register(*registry_)
                            .Add({}, Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                                                 60, 300, 1800})),
      backend_connect_(BuildHistogram()
                           .Name("smtpguard_backend_connect_duration_seconds")
                           .Help("Time to connect to the backend and complete its greeting and EHLO")
                           .Register(*registry_)
                           .Add({}, Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                                0.25, 0.5, 1, 2.5, 5, 10})),
      backend_reused_(BuildCounter()
                          .Name("smtpguard_backend_connections_reused_total")
                          .Help("Backend connections a session took over from an earlier one, instead of "
                                "connecting, greeting and saying EHLO")
                          .Register(*registry_)
                          .Add({})),
      tls_handshakes_queued_(BuildCounter()
                                 .Name("smtpguard_tls_handshakes_queued_total")
                                 .Help("TLS handshakes that waited for a slot: their thread already had "
                                       "limits.max_tls_handshakes in progress")
                                 .Register(*registry_)
                                 .Add({})),
      certificate_not_after_(BuildGauge()
                                 .Name("smtpguard_certificate_not_after_timestamp_seconds")
                                 .Help("Unix time a certificate expires: each served certificate and each "
                                       "CA trusted for client certificates")
                                 .Register(*registry_)),
      pop3_logins_(BuildCounter()
                       .Name("smtpguard_pop3_logins_total")
                       .Help("Logins through the POP3 front (POP-before-SMTP), by listener and result")
                       .Register(*registry_)),
      shared_state_errors_(BuildCounter()
                               .Name("smtpguard_shared_state_errors_total")
                               .Help("Redis commands (shared_state.redis) that failed or were not answered in time")
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
  if (pop_before_smtp_clients_) exposer_->RegisterCollectable(pop_before_smtp_clients_);
  exposed_host_ = knock_host(address.substr(0, address.rfind(':')));
}

void metrics::stop_exposing() {
  {
    std::lock_guard lock(probe_mutex);
    current_probe = nullptr;
  }
  if (!exposer_) return;
  const std::vector<int> ports = exposer_->GetListeningPorts();
  std::atomic<bool> stopped{false};
  std::thread waker([&] {
    while (!stopped.load()) {
      for (const int port : ports) knock(exposed_host_, port);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  exposer_.reset();
  stopped.store(true);
  waker.join();
}

void metrics::connection_accepted(std::string_view listener) {
  connections_.Add({{"listener", label(listener)}}).Increment();
}

void metrics::connection_rejected(std::string_view reason) {
  connections_rejected_.Add({{"reason", label(reason)}}).Increment();
}

void metrics::proxy_header(std::string_view result) { proxy_headers_.Add({{"result", label(result)}}).Increment(); }

void metrics::password_check(std::string_view by) {
  if (by == "hash")
    password_checks_hash_.Increment();
  else if (by == "cache")
    password_checks_cache_.Increment();
  else
    password_checks_shared_.Increment();
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

void metrics::pop3_login(std::string_view listener, std::string_view result) {
  pop3_logins_.Add({{"listener", label(listener)}, {"result", label(result)}}).Increment();
}

void metrics::count_pop_before_smtp_clients(std::function<double()> source) {
  pop_before_smtp_clients_ = std::make_shared<scraped_gauge>(
      "smtpguard_pop_before_smtp_clients", "Client addresses allowed to relay by a recent POP3 login",
      std::move(source));
}

void metrics::auth_attempt(std::string_view mechanism, std::string_view result) {
  auth_attempts_.Add({{"mechanism", label(mechanism)}, {"result", label(result)}}).Increment();
}

void metrics::message(std::string_view result, std::uint64_t bytes, int recipients) {
  messages_.Add({{"result", label(result)}}).Increment();
  message_size_.Observe(static_cast<double>(bytes));
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

void metrics::session_ended(double seconds) {
  sessions_active_.Decrement();
  session_duration_.Observe(seconds);
}

void metrics::client_certificate(std::string_view result) {
  client_certificates_.Add({{"result", label(result)}}).Increment();
}

void metrics::reply(std::string_view command, char first_digit) {
  const auto* known = std::find(std::begin(reply_command_labels), std::end(reply_command_labels), command);
  if (known == std::end(reply_command_labels)) {
    replies_.Add({{"command", label(command)}, {"class", reply_class(first_digit)}}).Increment();
    return;
  }
  static_assert(std::size(reply_command_labels) == reply_commands);
  const auto index = static_cast<std::size_t>(known - std::begin(reply_command_labels)) * reply_classes +
                     class_index(first_digit);
  cached(reply_counters_[index], replies_, [&] {
    return prometheus::Labels{{"command", std::string(command)}, {"class", reply_class(first_digit)}};
  }).Increment();
}

void metrics::rejection(std::string_view reason) { rejections_.Add({{"reason", label(reason)}}).Increment(); }

void metrics::backend_connected(double seconds) { backend_connect_.Observe(seconds); }

void metrics::backend_reply(char first_digit) {
  cached(backend_reply_counters_[class_index(first_digit)], backend_replies_,
         [&] { return prometheus::Labels{{"class", reply_class(first_digit)}}; })
      .Increment();
}

void metrics::certificates(const std::vector<tls::certificate_dates>& dates) {
  std::lock_guard lock(certificates_mutex_);
  for (auto* gauge : certificate_gauges_) certificate_not_after_.Remove(gauge);
  certificate_gauges_.clear();
  for (const auto& d : dates) {
    auto& gauge = certificate_not_after_.Add({{"role", d.role}, {"file", d.file}, {"subject", d.subject}});
    gauge.Set(static_cast<double>(d.not_after));
    certificate_gauges_.push_back(&gauge);
  }
}

}  // namespace smtpguard

#pragma once
// The configuration file: JSON in, a validated struct out. Every error names
// the JSON path it is about, so `--check-config` output points at the line to fix.
#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "auth/lockout.hpp"
#include "smtp/data_reframer.hpp"

namespace smtpguard {

/// A parsed "host:port" or "[v6]:port" (or "unix:/path" where allowed).
struct endpoint {
  std::string host;  ///< literal address or name, without brackets
  std::uint16_t port = 0;
  std::string unix_path;  ///< set for "unix:/path" (backend only)
  std::string text;       ///< as written, for logs
};

/// An address or network, "10.0.0.0/8", "2001:db8::/32" or "127.0.0.1",
/// parsed once.
struct ip_network {
  std::array<unsigned char, 16> bytes{};  ///< network order; the first 4 for IPv4
  bool v6 = false;
  unsigned prefix = 0;  ///< bits that must match
  std::string text;     ///< as written

  /// Whether an address (4 bytes, or 16 when `address_v6`) lies inside.
  bool contains(const unsigned char* address, bool address_v6) const noexcept;
};

/// nullopt unless `text` is an IPv4 or IPv6 address, optionally with a prefix length.
std::optional<ip_network> parse_network(const std::string& text);

enum class tls_mode { implicit, starttls, none };

/// submission: every client authenticates (or is trusted) before MAIL.
/// mx: anyone may send to relay.local_domains; only authorized clients elsewhere.
enum class listener_role { submission, mx };

/// What a listener speaks: SMTP, or POP3 for POP-before-SMTP (pop3.listeners).
enum class listener_protocol { smtp, pop3 };

/// Client certificates: not asked for, asked for and checked when sent, or demanded.
enum class client_cert_mode { none, optional, required };

struct listener_config {
  std::string name;
  endpoint address;
  tls_mode tls = tls_mode::starttls;
  listener_protocol protocol = listener_protocol::smtp;
  listener_role role = listener_role::submission;
  bool require_tls = true;            ///< starttls: no AUTH/MAIL before STARTTLS (default false for mx)
  bool allow_plaintext_auth = false;  ///< advertise and accept AUTH without TLS
  /// listeners[].client_certificates.mode; unset: tls.client_certificates.mode.
  std::optional<client_cert_mode> client_certificates;
  /// Every connection starts with a PROXY protocol header (v1 or v2) from a
  /// load balancer in `proxy_trusted`; its client address is the client's.
  bool proxy_protocol = false;
  std::vector<ip_network> proxy_trusted;
};

struct certificate_config {
  std::string cert;  ///< PEM chain, leaf first
  std::string key;
  /// Server names (SNI) this certificate answers for; empty: its SAN DNS names.
  /// "*.example.org" matches one label.
  std::vector<std::string> names;
};

struct client_certificates_config {
  client_cert_mode mode = client_cert_mode::none;  ///< default for every listener
  std::string ca;                 ///< PEM bundle of trusted issuing CAs (required unless mode is none everywhere)
  int verify_depth = 3;           ///< intermediate CAs allowed above the client certificate
  std::vector<std::string> crl;   ///< PEM CRL files; with any, every certificate in the chain is checked
};

struct tls_config {
  std::vector<certificate_config> certificates;
  std::string min_version = "1.2";  ///< "1.2" or "1.3"
  client_certificates_config client_certificates;
};

struct auth_config {
  std::string users_file;
  std::vector<std::string> mechanisms{"PLAIN", "LOGIN", "CRAM-MD5"};
  /// DIGEST-MD5's realm, which its stored secrets are computed with; empty: the hostname.
  std::string realm;
  std::chrono::milliseconds failure_delay{1000};  ///< before a 535, against guessing
  int max_failures = 3;                           ///< per session, then 421 and close
  int verifier_threads = 2;                       ///< slow hash checks run here, not on I/O threads
  std::chrono::seconds credential_cache_ttl{60};  ///< successful PLAIN/LOGIN checks remembered; 0: off
  auth::lockout_settings lockout;                 ///< auth.lockout: failure budgets across sessions
};

/// How a backend learns the client's address beyond the Received header
/// (HAProxy's PROXY protocol, sent before anything else).
enum class proxy_protocol { none, v1, v2 };

/// One backend MTA: reached over TCP or a Unix socket, or started per
/// session as a program speaking SMTP on its stdin and stdout.
struct backend_server {
  std::string name;  ///< as written ("host:port", "unix:/path", the command line), for logs
  endpoint address;  ///< unused for a command
  /// argv of the program; {client_ip}, {client_port}, {local_ip}, {local_port}
  /// and {user} in an argument are replaced per session.
  std::vector<std::string> command;
  /// Set for the program, after the tcpserver-style TCPREMOTEIP etc.
  std::vector<std::pair<std::string, std::string>> environment;
  bool xclient = false;    ///< XCLIENT (Postfix) with the client's identity, when offered
  bool mail_auth = false;  ///< MAIL FROM:<...> AUTH=<user>, when the backend offers AUTH
  proxy_protocol proxy = proxy_protocol::none;
};

struct backend_config {
  /// Tried in order: a session takes the first that connects and greets.
  std::vector<backend_server> servers;
  std::string helo_name;  ///< default: our hostname
  std::chrono::seconds health_interval{30};
  /// How long a backend connection left clean by its session waits for the
  /// thread's next session (Postfix's smtp_connection_cache_time_limit); 0: never kept.
  std::chrono::seconds reuse_idle{2};
  std::chrono::seconds reuse_lifetime{300};  ///< never reused once this old
  std::size_t reuse_max_idle = 64;           ///< connections kept waiting, per thread
};

struct limits_config {
  std::uint64_t max_message_size = 26214400;
  int max_recipients = 100;
  std::size_t max_command_line = 512;  ///< RFC 5321 4.5.3.1.4
  std::size_t max_text_line = 1000;    ///< RFC 5321 4.5.3.1.6, CRLF included; longer lines are folded; 0: never
  int max_errors = 10;                 ///< bad commands before we hang up
  std::size_t max_connections = 1000;        ///< open client connections, all listeners and threads
  std::size_t max_connections_per_ip = 20;   ///< per IPv4 address or IPv6 /64
  std::size_t max_tls_handshakes = 64;       ///< in progress at once, per thread; more wait their turn
  /// Messages the backend accepted from one user (AUTH or certificate) within
  /// message_window, after which MAIL is refused for a window; 0: no limit.
  int max_messages_per_user = 0;
  /// The same per client address (IPv4, or IPv6 /64), relay.trusted_networks excepted; 0: no limit.
  int max_messages_per_ip = 0;
  /// As max_messages_*, counting the recipients of those messages.
  int max_recipients_per_user = 0;
  int max_recipients_per_ip = 0;
  std::chrono::seconds message_window{3600};  ///< of all four budgets
};

struct timeouts_config {
  std::chrono::seconds greeting{300};  ///< RFC 5321 4.5.3.2: server waits 5 min for a command
  std::chrono::seconds command{300};
  std::chrono::seconds data_block{180};  ///< between DATA blocks (3 min)
  std::chrono::seconds data_end{600};    ///< backend's reply after the final dot (10 min)
  std::chrono::seconds tls_handshake{30};
  std::chrono::seconds backend_connect{30};
  std::chrono::seconds backend_reply{300};
  /// A program backend's time to exit once its session closed its input,
  /// before SIGTERM (and SIGKILL 5 s later).
  std::chrono::seconds backend_program_exit{30};
  std::chrono::seconds command_total{300};  ///< one command line, from its first byte to its end
  std::uint64_t data_min_rate = 1024;       ///< bytes per second during DATA; 0: no minimum
  std::chrono::seconds data_rate_window{30};  ///< the rate is averaged over windows this long
  /// After SIGTERM: how long sessions in a transaction may go on before the
  /// process exits anyway; under Kubernetes' default 30 s grace period.
  std::chrono::seconds drain{25};
};

struct smtp_config {
  std::string banner = "ESMTP";
  smtp::line_ending_policy bare_line_endings = smtp::line_ending_policy::reject;
  /// Plaintext listeners wait this long before the 220 and hang up on clients
  /// that talk first; 0: no wait and no check.
  std::chrono::milliseconds greeting_delay{0};
};

struct metrics_config {
  std::optional<endpoint> address;
};

enum class log_format { text, json };

struct log_config {
  log_format format = log_format::text;
};

/// Who may relay without authenticating (SPEC: relay policy).
struct relay_config {
  /// Client addresses (after any PROXY header) whose mail is relayed without
  /// AUTH, as Postfix's mynetworks: applications and hosts on the operator's
  /// own network. Empty: none.
  std::vector<ip_network> trusted_networks;
  /// The domains this server receives mail for, for listeners of role mx:
  /// "example.org" exactly, ".example.org" its subdomains.
  std::vector<std::string> local_domains;
  /// DNS blocklists (RFC 5782) asked about clients of mx listeners that are
  /// not authorized to relay: a listed client's recipients are refused.
  std::vector<std::string> dnsbl_zones;
  /// Name servers for those lookups, "ip" or "ip:port"; empty: /etc/resolv.conf's.
  std::vector<std::string> dns_servers;
  std::chrono::milliseconds dnsbl_timeout{2000};
};

/// The optional POP3 front (POP-before-SMTP, RFC 1939 / RFC 2595): POP3S
/// and STLS terminated here and relayed to a plain POP3 server, whose
/// successful logins let the client's address relay over SMTP for a while.
/// Weaker than SMTP AUTH: anyone behind the same address (a NAT) may relay.
struct pop3_config {
  std::vector<listener_config> listeners;  ///< empty: no POP3 front
  endpoint backend;                        ///< the POP3 server, "host:port"
  std::chrono::seconds relay_ttl{300};     ///< how long a login lets its address relay
  /// RFC 1939 section 3: the autologout timer, at least 10 minutes; before
  /// login per command, after it while neither side sends anything.
  std::chrono::seconds idle_timeout{600};

  bool enabled() const noexcept { return !listeners.empty(); }
};

/// State replicas share (SPEC section 9): failure budgets and POP-before-SMTP
/// grants, kept in Redis as well as in each process.
struct shared_state_config {
  std::optional<endpoint> redis;  ///< "host:port" or "unix:/path"; unset: nothing is shared
  std::string key_prefix = "smtpguard:";
  std::chrono::milliseconds timeout{250};  ///< per command (and to connect); slower is no answer
  std::string username;       ///< Redis 6 ACL user for AUTH; empty: the password alone (requirepass)
  std::string password_file;  ///< its first line is the password; empty: no AUTH
  std::string password;       ///< read from password_file when the configuration is loaded
  int database = 0;           ///< SELECTed on every connection when not 0
};

struct config {
  std::string path;  ///< the file it came from
  std::string hostname;
  int threads = 0;  ///< 0: one per core
  std::string user;  ///< account to switch to once listeners are bound (when started as root)
  /// How often certificate, key, CA, CRL and users files are checked for changes; 0: only on SIGHUP.
  std::chrono::seconds reload_check_interval{10};
  std::vector<listener_config> listeners;
  tls_config tls;
  auth_config auth;
  relay_config relay;
  pop3_config pop3;
  shared_state_config shared_state;
  backend_config backend;
  limits_config limits;
  timeouts_config timeouts;
  smtp_config smtp;
  metrics_config metrics;
  log_config log;
};

/// A configuration error; what() is "<json.path>: <problem>".
class config_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Reads, parses and validates a configuration file. Relative paths inside
/// resolve against the file's directory.
config load_config(const std::string& path);
/// Parses a configuration from JSON text; `base_dir` anchors relative paths.
config parse_config(const std::string& json_text, const std::string& base_dir);

/// Parses "host:port", "[v6]:port" and, when `allow_unix`, "unix:/path".
std::optional<endpoint> parse_endpoint(const std::string& text, bool allow_unix = false);

}  // namespace smtpguard

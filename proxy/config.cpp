#include "config.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>
#include <utility>

#include <arpa/inet.h>
#include <unistd.h>

#include "smtp/local_domains.hpp"

namespace smtpguard {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw config_error(path + ": " + message);
}

std::string child(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

// Walks one JSON object, remembering which keys were used, so that unknown
// keys (usually typos) are reported instead of silently ignored.
class object_reader {
 public:
  object_reader(const json& value, std::string path) : value_(value), path_(std::move(path)) {
    if (!value_.is_object()) fail(path_.empty() ? "(top level)" : path_, "expected an object");
  }

  const json* find(const std::string& key) {
    known_.insert(key);
    auto it = value_.find(key);
    return it == value_.end() ? nullptr : &*it;
  }
  std::string path(const std::string& key) const { return child(path_, key); }

  bool get(const std::string& key, std::string& out) {
    const json* v = find(key);
    if (!v) return false;
    if (!v->is_string()) fail(path(key), "expected a string");
    out = v->get<std::string>();
    return true;
  }
  bool get(const std::string& key, bool& out) {
    const json* v = find(key);
    if (!v) return false;
    if (!v->is_boolean()) fail(path(key), "expected true or false");
    out = v->get<bool>();
    return true;
  }
  /// A string naming one of `choices`; anything else is refused with the list.
  template <typename Enum>
  bool get_choice(const std::string& key, Enum& out,
                  std::initializer_list<std::pair<std::string_view, Enum>> choices) {
    std::string text;
    if (!get(key, text)) return false;
    for (const auto& [name, value] : choices) {
      if (text == name) {
        out = value;
        return true;
      }
    }
    std::string expected;
    std::size_t i = 0;
    for (const auto& choice : choices) {
      if (i > 0) expected += i + 1 == choices.size() ? " or " : ", ";
      expected += "\"" + std::string(choice.first) + "\"";
      ++i;
    }
    fail(path(key), "must be " + expected);
  }
  template <typename Int>
  bool get_int(const std::string& key, Int& out, long long min, long long max) {
    const json* v = find(key);
    if (!v) return false;
    if (!v->is_number_integer()) fail(path(key), "expected an integer");
    const long long n = v->get<long long>();
    if (n < min || n > max)
      fail(path(key), "must be between " + std::to_string(min) + " and " + std::to_string(max));
    out = static_cast<Int>(n);
    return true;
  }
  template <typename Duration>
  bool get_duration(const std::string& key, Duration& out, long long min, long long max) {
    long long n = 0;
    if (!get_int(key, n, min, max)) return false;
    out = Duration(n);
    return true;
  }
  void require(const std::string& key) {
    if (!value_.contains(key)) fail(path(key), "is required");
  }
  void finish() const {
    for (const auto& [key, _] : value_.items())
      if (!known_.contains(key)) fail(child(path_, key), "unknown key");
  }

 private:
  const json& value_;
  std::string path_;
  std::set<std::string> known_;
};

std::string resolve(const std::string& base_dir, const std::string& file) {
  std::filesystem::path p(file);
  if (p.is_absolute() || base_dir.empty()) return p.lexically_normal().string();
  return (std::filesystem::path(base_dir) / p).lexically_normal().string();
}

void require_readable(const std::string& path, const std::string& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) fail(path, "\"" + file + "\" is a directory, not a file");
  std::ifstream in(file);
  if (!in) fail(path, "cannot read \"" + file + "\"");
}

endpoint endpoint_from(const std::string& text, const std::string& where, bool allow_unix) {
  auto ep = parse_endpoint(text, allow_unix);
  if (!ep)
    fail(where, "\"" + text + "\" is not " +
                    (allow_unix ? "host:port, [v6]:port or unix:/path" : "host:port or [v6]:port"));
  return *ep;
}

endpoint endpoint_at(object_reader& r, const std::string& key, bool allow_unix) {
  std::string text;
  r.require(key);
  r.get(key, text);
  return endpoint_from(text, r.path(key), allow_unix);
}

template <typename Item>
void read_array(object_reader& r, const std::string& key, std::vector<Item>& out,
                const std::function<Item(const json&, const std::string&)>& read_item) {
  const json* v = r.find(key);
  if (!v) return;
  if (!v->is_array()) fail(r.path(key), "expected an array");
  out.clear();
  for (std::size_t i = 0; i < v->size(); ++i)
    out.push_back(read_item((*v)[i], r.path(key) + "[" + std::to_string(i) + "]"));
}

client_cert_mode read_client_cert_mode(object_reader& r) {
  client_cert_mode mode = client_cert_mode::none;
  r.get_choice("mode", mode,
               {{"none", client_cert_mode::none},
                {"optional", client_cert_mode::optional},
                {"required", client_cert_mode::required}});
  return mode;
}

std::vector<std::string> read_strings(object_reader& r, const std::string& key) {
  std::vector<std::string> out;
  read_array<std::string>(r, key, out, [](const json& item, const std::string& p) {
    if (!item.is_string() || item.get<std::string>().empty()) fail(p, "expected a non-empty string");
    return item.get<std::string>();
  });
  return out;
}

ip_network read_network(const json& item, const std::string& path) {
  std::optional<ip_network> network;
  if (item.is_string()) network = parse_network(item.get<std::string>());
  if (!network) fail(path, "expected an address or network: \"10.0.0.0/8\", \"2001:db8::/32\"");
  return *network;
}

// A load balancer's PROXY header in front of a listener, and who may send it.
void read_proxy_settings(object_reader& r, listener_config& l) {
  r.get("proxy_protocol", l.proxy_protocol);
  read_array<ip_network>(r, "proxy_trusted", l.proxy_trusted, read_network);
  if (l.proxy_protocol && l.proxy_trusted.empty())
    fail(r.path("proxy_trusted"), "is required with proxy_protocol: the load balancers allowed to send it");
  if (!l.proxy_protocol && !l.proxy_trusted.empty())
    fail(r.path("proxy_trusted"), "means nothing without \"proxy_protocol\": true");
}

listener_config read_listener(const json& v, const std::string& path) {
  object_reader r(v, path);
  listener_config l;
  r.require("name");
  r.get("name", l.name);
  if (l.name.empty()) fail(r.path("name"), "must not be empty");
  l.address = endpoint_at(r, "address", false);
  r.get_choice("tls", l.tls,
               {{"implicit", tls_mode::implicit}, {"starttls", tls_mode::starttls}, {"none", tls_mode::none}});
  r.get_choice("role", l.role, {{"submission", listener_role::submission}, {"mx", listener_role::mx}});
  // RFC 3207 section 4: a publicly referenced MX must not demand TLS.
  l.require_tls = l.role != listener_role::mx;
  r.get("require_tls", l.require_tls);
  r.get("allow_plaintext_auth", l.allow_plaintext_auth);
  read_proxy_settings(r, l);
  if (const json* cc = r.find("client_certificates")) {
    object_reader c(*cc, r.path("client_certificates"));
    l.client_certificates = read_client_cert_mode(c);
    c.finish();
  }
  r.finish();
  return l;
}

// POP3 logins are only ever taken over TLS: no plaintext listener.
listener_config read_pop3_listener(const json& v, const std::string& path) {
  object_reader r(v, path);
  listener_config l;
  l.protocol = listener_protocol::pop3;
  r.require("name");
  r.get("name", l.name);
  if (l.name.empty()) fail(r.path("name"), "must not be empty");
  l.address = endpoint_at(r, "address", false);
  r.get_choice("tls", l.tls, {{"implicit", tls_mode::implicit}, {"starttls", tls_mode::starttls}});
  read_proxy_settings(r, l);
  r.finish();
  return l;
}

void read_pop3(const json& v, const std::string& path, pop3_config& pop3) {
  object_reader r(v, path);
  r.require("listeners");
  read_array<listener_config>(r, "listeners", pop3.listeners, read_pop3_listener);
  if (pop3.listeners.empty()) fail(r.path("listeners"), "at least one listener is required");
  r.require("backend");
  object_reader b(*r.find("backend"), r.path("backend"));
  pop3.backend = endpoint_at(b, "address", false);
  b.finish();
  r.get_duration("relay_ttl", pop3.relay_ttl, 1, 86400);
  r.get_duration("idle_timeout", pop3.idle_timeout, 60, 86400);
  r.finish();
}

// A secret kept out of the configuration file, which is often readable by
// more people and tools than the secret should be.
std::string read_secret(const std::string& path, const std::string& file) {
  require_readable(path, file);
  std::ifstream in(file, std::ios::binary);
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) fail(path, "\"" + file + "\" has no password on its first line");
  return line;
}

void read_shared_state(const json& v, const std::string& path, const std::string& base,
                       shared_state_config& shared) {
  object_reader r(v, path);
  r.require("redis");
  shared.redis = endpoint_at(r, "redis", true);
  r.get("key_prefix", shared.key_prefix);
  r.get_duration("timeout_ms", shared.timeout, 10, 10000);
  r.get("username", shared.username);
  if (r.get("password_file", shared.password_file)) {
    shared.password_file = resolve(base, shared.password_file);
    shared.password = read_secret(r.path("password_file"), shared.password_file);
  }
  if (!shared.username.empty() && shared.password.empty())
    fail(r.path("username"), "needs password_file: Redis takes a user name only with its password");
  // Redis's own ceiling is its `databases` setting (16 by default); a number
  // past it is refused by SELECT, which is reported when connecting.
  r.get_int("database", shared.database, 0, 1000000);
  r.finish();
}

void read_tls(const json& v, const std::string& path, const std::string& base, tls_config& tls) {
  object_reader r(v, path);
  read_array<certificate_config>(r, "certificates", tls.certificates,
                                 [&](const json& item, const std::string& item_path) {
                                   object_reader c(item, item_path);
                                   certificate_config cert;
                                   c.require("cert");
                                   c.require("key");
                                   c.get("cert", cert.cert);
                                   c.get("key", cert.key);
                                   cert.names = read_strings(c, "names");
                                   for (auto& name : cert.names)
                                     for (auto& ch : name)
                                       ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                                   c.finish();
                                   cert.cert = resolve(base, cert.cert);
                                   cert.key = resolve(base, cert.key);
                                   require_readable(c.path("cert"), cert.cert);
                                   require_readable(c.path("key"), cert.key);
                                   return cert;
                                 });
  if (r.get("min_version", tls.min_version) && tls.min_version != "1.2" && tls.min_version != "1.3")
    fail(r.path("min_version"), "must be \"1.2\" or \"1.3\" (older versions are refused)");
  if (const json* cc = r.find("client_certificates")) {
    object_reader c(*cc, r.path("client_certificates"));
    auto& client = tls.client_certificates;
    client.mode = read_client_cert_mode(c);
    if (c.get("ca", client.ca)) {
      client.ca = resolve(base, client.ca);
      require_readable(c.path("ca"), client.ca);
    }
    c.get_int("verify_depth", client.verify_depth, 0, 16);
    client.crl = read_strings(c, "crl");
    for (std::size_t i = 0; i < client.crl.size(); ++i) {
      client.crl[i] = resolve(base, client.crl[i]);
      require_readable(c.path("crl") + "[" + std::to_string(i) + "]", client.crl[i]);
    }
    c.finish();
  }
  r.finish();
}

void read_auth(const json& v, const std::string& path, const std::string& base, auth_config& auth) {
  object_reader r(v, path);
  r.require("users_file");
  r.get("users_file", auth.users_file);
  auth.users_file = resolve(base, auth.users_file);
  require_readable(r.path("users_file"), auth.users_file);
  read_array<std::string>(r, "mechanisms", auth.mechanisms, [](const json& item, const std::string& p) {
    if (!item.is_string()) fail(p, "expected a string");
    std::string m = item.get<std::string>();
    for (auto& c : m) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (m != "PLAIN" && m != "LOGIN" && m != "CRAM-MD5" && m != "SCRAM-SHA-256" && m != "SCRAM-SHA-256-PLUS" &&
        m != "DIGEST-MD5")
      fail(p, "unsupported mechanism \"" + item.get<std::string>() +
                  "\" (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256, SCRAM-SHA-256-PLUS, DIGEST-MD5)");
    return m;
  });
  r.get("realm", auth.realm);
  if (auth.realm.find_first_of("\"\\\r\n") != std::string::npos)
    fail(r.path("realm"), "must not hold quotes, backslashes or line breaks");
  r.get_duration("failure_delay_ms", auth.failure_delay, 0, 60000);
  r.get_int("max_failures", auth.max_failures, 1, 100);
  r.get_int("verifier_threads", auth.verifier_threads, 1, 64);
  r.get_duration("credential_cache_ttl", auth.credential_cache_ttl, 0, 86400);
  if (const json* l = r.find("lockout")) {
    object_reader o(*l, r.path("lockout"));
    o.get_int("ip_failures", auth.lockout.ip_failures, 0, 100000);
    o.get_int("user_failures", auth.lockout.user_failures, 0, 100000);
    o.get_duration("window_seconds", auth.lockout.window, 1, 86400 * 7);
    o.get_duration("lockout_seconds", auth.lockout.lockout, 1, 86400 * 7);
    o.get_int("max_tracked", auth.lockout.max_tracked, 1, 10000000);
    o.finish();
  }
  r.finish();
}

std::string read_domain(const json& item, const std::string& path) {
  if (!item.is_string() || !smtp::valid_local_domain(item.get<std::string>()))
    fail(path, "expected a domain: \"example.org\", or \".example.org\" for its subdomains");
  return item.get<std::string>();
}

std::string read_zone(const json& item, const std::string& path) {
  if (!item.is_string() || item.get<std::string>().starts_with('.') ||
      !smtp::valid_local_domain(item.get<std::string>()))
    fail(path, "expected a DNS zone: \"zen.example.org\"");
  return item.get<std::string>();
}

// "ip", "ip:port" or "[v6]:port": the forms c-ares reads.
std::string read_name_server(const json& item, const std::string& path) {
  const std::string text = item.is_string() ? item.get<std::string>() : std::string();
  const bool address = !text.empty() && text.find('/') == std::string::npos && parse_network(text);
  if (!address && !parse_endpoint(text))
    fail(path, "expected a name server address: \"192.0.2.53\", \"192.0.2.53:5353\", \"[2001:db8::53]:53\"");
  return text;
}

void read_relay(const json& v, const std::string& path, relay_config& relay) {
  object_reader r(v, path);
  read_array<ip_network>(r, "trusted_networks", relay.trusted_networks, read_network);
  read_array<std::string>(r, "local_domains", relay.local_domains, read_domain);
  if (const json* d = r.find("dnsbl")) {
    object_reader dnsbl(*d, r.path("dnsbl"));
    read_array<std::string>(dnsbl, "zones", relay.dnsbl_zones, read_zone);
    read_array<std::string>(dnsbl, "servers", relay.dns_servers, read_name_server);
    dnsbl.get_duration("timeout_ms", relay.dnsbl_timeout, 100, 30000);
    dnsbl.finish();
  }
  r.finish();
}

// What every backend gets unless its own entry says otherwise.
struct backend_defaults {
  bool xclient = false;
  bool mail_auth = false;
  proxy_protocol proxy = proxy_protocol::none;
  std::vector<std::pair<std::string, std::string>> environment;
};

// The identity hand-off and program settings, at the backend level (defaults)
// or in one entry of the list.
void read_backend_options(object_reader& r, backend_defaults& options) {
  r.get("xclient", options.xclient);
  r.get("mail_auth", options.mail_auth);
  r.get_choice("proxy_protocol", options.proxy,
               {{"v1", proxy_protocol::v1}, {"v2", proxy_protocol::v2}, {"none", proxy_protocol::none}});
  if (const json* env = r.find("environment")) {
    if (!env->is_object()) fail(r.path("environment"), "expected an object of strings");
    for (const auto& [name, value] : env->items()) {
      const std::string where = r.path("environment") + "." + name;
      if (name.empty() || name.find_first_of("=") != std::string::npos) fail(where, "not a variable name");
      if (!value.is_string()) fail(where, "expected a string");
      options.environment.emplace_back(name, value.get<std::string>());
    }
  }
}

// A network backend: "host:port" or "unix:/path", named as written.
void set_address(backend_server& server, const std::string& text, const std::string& where) {
  server.address = endpoint_from(text, where, true);
  server.name = server.address.text;
}

// Settings only one kind of backend can use: refused alike at the backend
// level and in a list entry.
constexpr const char* environment_needs_program = "only a program backend (command) has an environment";
constexpr const char* proxy_needs_connection = "a program started per session has no connection to send it on";

// "address" or "command" (exactly one), from the backend object or one entry.
void read_backend_target(object_reader& r, backend_server& server) {
  const json* address = r.find("address");
  const json* command = r.find("command");
  if ((address == nullptr) == (command == nullptr)) fail(r.path("address"), "give either address or command");
  if (command != nullptr) {
    server.command = read_strings(r, "command");
    const std::string program = r.path("command") + "[0]";
    if (server.command.empty()) fail(r.path("command"), "expected the program and its arguments");
    if (!server.command.front().starts_with("/")) fail(program, "the program needs an absolute path");
    if (::access(server.command.front().c_str(), X_OK) != 0)
      fail(program, "\"" + server.command.front() + "\" is not executable");
    for (const auto& argument : server.command) server.name += (server.name.empty() ? "" : " ") + argument;
  } else {
    if (!address->is_string()) fail(r.path("address"), "expected a string");
    set_address(server, address->get<std::string>(), r.path("address"));
  }
}

backend_server finish_server(backend_server server, const backend_defaults& options) {
  server.xclient = options.xclient;
  server.mail_auth = options.mail_auth;
  server.proxy = options.proxy;
  server.environment = options.environment;
  // Settings inherited from the backend level apply where they mean something.
  if (server.command.empty()) server.environment.clear();
  if (!server.command.empty()) server.proxy = proxy_protocol::none;
  return server;
}

void read_backend(const json& v, const std::string& path, backend_config& backend) {
  object_reader r(v, path);
  backend_defaults defaults;
  read_backend_options(r, defaults);
  const json* list = r.find("address");
  if (list != nullptr && (list->is_array() || list->is_object())) {
    // Several backends tried in order, each a "host:port" / "unix:/path"
    // string or an object with its own settings; or one such object.
    const json one_entry = json::array({*list});
    const json& entries = list->is_array() ? *list : one_entry;
    if (entries.empty()) fail(r.path("address"), "must name at least one backend");
    if (r.find("command") != nullptr) fail(r.path("command"), "give either address or command");
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const std::string where = list->is_array() ? r.path("address") + "[" + std::to_string(i) + "]" : r.path("address");
      const json& item = entries[i];
      backend_server server;
      backend_defaults options = defaults;
      if (item.is_string()) {
        set_address(server, item.get<std::string>(), where);
      } else if (item.is_object()) {
        object_reader entry(item, where);
        read_backend_target(entry, server);
        // The entry's settings override the backend-wide ones; its
        // environment variables are added to them.
        read_backend_options(entry, options);
        if (server.command.empty() && entry.find("environment") != nullptr)
          fail(where + ".environment", environment_needs_program);
        if (!server.command.empty() && entry.find("proxy_protocol") != nullptr)
          fail(where + ".proxy_protocol", proxy_needs_connection);
        entry.finish();
      } else {
        fail(where, "expected \"host:port\", \"unix:/path\" or an object");
      }
      backend.servers.push_back(finish_server(std::move(server), options));
    }
  } else {
    if (list == nullptr && r.find("command") == nullptr) fail(r.path("address"), "is required (or command)");
    backend_server server;
    read_backend_target(r, server);
    backend.servers.push_back(finish_server(std::move(server), defaults));
  }
  const bool any_program = std::any_of(backend.servers.begin(), backend.servers.end(),
                                       [](const backend_server& server) { return !server.command.empty(); });
  const bool any_network = std::any_of(backend.servers.begin(), backend.servers.end(),
                                       [](const backend_server& server) { return server.command.empty(); });
  if (!defaults.environment.empty() && !any_program)
    fail(r.path("environment"), environment_needs_program);
  if (defaults.proxy != proxy_protocol::none && !any_network)
    fail(r.path("proxy_protocol"), proxy_needs_connection);
  r.get("helo_name", backend.helo_name);
  r.get_duration("health_interval", backend.health_interval, 1, 3600);
  r.get_duration("reuse_idle", backend.reuse_idle, 0, 300);
  r.get_duration("reuse_lifetime", backend.reuse_lifetime, 1, 86400);
  r.get_int("reuse_max_idle", backend.reuse_max_idle, 1, 10000);
  r.finish();
}

void read_limits(const json& v, const std::string& path, limits_config& limits) {
  object_reader r(v, path);
  r.get_int("max_message_size", limits.max_message_size, 1024, 1LL << 40);
  r.get_int("max_recipients", limits.max_recipients, 1, 100000);
  r.get_int("max_command_line", limits.max_command_line, 512, 65536);
  if (r.get_int("max_text_line", limits.max_text_line, 0, 1 << 20) && limits.max_text_line != 0 &&
      limits.max_text_line < 80)
    fail(r.path("max_text_line"), "must be 0 (no folding) or at least 80");
  r.get_int("max_errors", limits.max_errors, 1, 1000);
  r.get_int("max_connections", limits.max_connections, 1, 1000000);
  r.get_int("max_connections_per_ip", limits.max_connections_per_ip, 1, 1000000);
  r.get_int("max_tls_handshakes", limits.max_tls_handshakes, 1, 100000);
  r.get_int("max_messages_per_user", limits.max_messages_per_user, 0, 10000000);
  r.get_int("max_messages_per_ip", limits.max_messages_per_ip, 0, 10000000);
  r.get_int("max_recipients_per_user", limits.max_recipients_per_user, 0, 100000000);
  r.get_int("max_recipients_per_ip", limits.max_recipients_per_ip, 0, 100000000);
  r.get_duration("message_window_seconds", limits.message_window, 1, 7 * 86400);
  r.finish();
}

void read_timeouts(const json& v, const std::string& path, timeouts_config& t) {
  object_reader r(v, path);
  constexpr long long day = 86400;
  r.get_duration("greeting", t.greeting, 1, day);
  r.get_duration("command", t.command, 1, day);
  r.get_duration("data_block", t.data_block, 1, day);
  r.get_duration("data_end", t.data_end, 600, day);  // RFC 5321 4.5.3.2.6: at least 10 minutes
  r.get_duration("tls_handshake", t.tls_handshake, 1, 3600);
  r.get_duration("backend_connect", t.backend_connect, 1, 3600);
  r.get_duration("backend_reply", t.backend_reply, 1, day);
  r.get_duration("backend_program_exit", t.backend_program_exit, 1, 3600);
  r.get_duration("command_total", t.command_total, 1, day);
  r.get_int("data_min_rate", t.data_min_rate, 0, 1LL << 30);
  r.get_duration("data_rate_window", t.data_rate_window, 1, 3600);
  r.get_duration("drain", t.drain, 0, 3600);
  r.finish();
}

void read_smtp(const json& v, const std::string& path, smtp_config& smtp) {
  object_reader r(v, path);
  if (r.get("banner", smtp.banner)) {
    for (char c : smtp.banner)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) fail(r.path("banner"), "must be printable text");
  }
  r.get_choice("bare_line_endings", smtp.bare_line_endings,
               {{"reject", smtp::line_ending_policy::reject}, {"normalize", smtp::line_ending_policy::normalize}});
  r.get_duration("greeting_delay_ms", smtp.greeting_delay, 0, 10000);
  r.finish();
}

}  // namespace

std::optional<ip_network> parse_network(const std::string& text) {
  ip_network network;
  network.text = text;
  const auto slash = text.find('/');
  const std::string address = text.substr(0, slash);
  if (::inet_pton(AF_INET, address.c_str(), network.bytes.data()) == 1) {
    network.prefix = 32;
  } else if (::inet_pton(AF_INET6, address.c_str(), network.bytes.data()) == 1) {
    network.v6 = true;
    network.prefix = 128;
  } else {
    return std::nullopt;
  }
  if (slash == std::string::npos) return network;
  const std::string length = text.substr(slash + 1);
  unsigned prefix = 0;
  auto [end, ec] = std::from_chars(length.data(), length.data() + length.size(), prefix);
  if (length.empty() || ec != std::errc() || end != length.data() + length.size() || prefix > network.prefix)
    return std::nullopt;
  network.prefix = prefix;
  return network;
}

bool ip_network::contains(const unsigned char* address, bool address_v6) const noexcept {
  if (address_v6 != v6) return false;
  const unsigned whole = prefix / 8;
  if (std::memcmp(bytes.data(), address, whole) != 0) return false;
  const unsigned rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (bytes[whole] & mask) == (address[whole] & mask);
}

std::optional<endpoint> parse_endpoint(const std::string& text, bool allow_unix) {
  endpoint ep;
  ep.text = text;
  if (text.starts_with("unix:")) {
    if (!allow_unix || text.size() <= 5 || text[5] != '/') return std::nullopt;
    ep.unix_path = text.substr(5);
    return ep;
  }
  std::string port_text;
  if (text.starts_with("[")) {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
    ep.host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    if (ep.host.find(':') == std::string::npos) return std::nullopt;
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) return std::nullopt;
    ep.host = text.substr(0, colon);
    if (ep.host.find(':') != std::string::npos) return std::nullopt;  // bare IPv6 needs brackets
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535)
    return std::nullopt;
  ep.port = static_cast<std::uint16_t>(port);
  for (char c : ep.host)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '_'))
      return std::nullopt;
  return ep;
}

config parse_config(const std::string& json_text, const std::string& base_dir) {
  json document;
  try {
    document = json::parse(json_text);
  } catch (const json::exception& e) {
    fail("(json)", e.what());
  }
  object_reader r(document, "");
  config c;
  r.require("hostname");
  r.get("hostname", c.hostname);
  if (c.hostname.empty() || c.hostname.find_first_of(" \t\r\n") != std::string::npos)
    fail("hostname", "must be a host name without spaces");
  r.get_int("threads", c.threads, 0, 256);
  r.get("user", c.user);
  r.get_duration("reload_check_interval", c.reload_check_interval, 0, 86400);
  if (c.threads == 0) c.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  r.require("listeners");
  read_array<listener_config>(r, "listeners", c.listeners, read_listener);
  if (c.listeners.empty()) fail("listeners", "at least one listener is required");
  std::set<std::string> names;
  bool needs_tls = false;
  for (std::size_t i = 0; i < c.listeners.size(); ++i) {
    const auto& l = c.listeners[i];
    if (!names.insert(l.name).second)
      fail("listeners[" + std::to_string(i) + "].name", "duplicate listener name \"" + l.name + "\"");
    needs_tls = needs_tls || l.tls != tls_mode::none;
  }
  if (const json* v = r.find("pop3")) read_pop3(*v, "pop3", c.pop3);
  for (std::size_t i = 0; i < c.pop3.listeners.size(); ++i) {
    const auto& l = c.pop3.listeners[i];
    if (!names.insert(l.name).second)
      fail("pop3.listeners[" + std::to_string(i) + "].name", "duplicate listener name \"" + l.name + "\"");
    needs_tls = true;
  }

  if (const json* v = r.find("tls")) read_tls(*v, "tls", base_dir, c.tls);
  if (needs_tls && c.tls.certificates.empty())
    fail("tls.certificates", "a TLS listener needs at least one certificate");
  for (std::size_t i = 0; i < c.listeners.size(); ++i) {
    const auto& l = c.listeners[i];
    const auto mode = l.client_certificates.value_or(c.tls.client_certificates.mode);
    if (mode == client_cert_mode::none) continue;
    if (l.tls == tls_mode::none)
      fail("listeners[" + std::to_string(i) + "].client_certificates", "needs a TLS listener");
    if (c.tls.client_certificates.ca.empty())
      fail("tls.client_certificates.ca", "is required to verify client certificates");
  }

  r.require("auth");
  read_auth(*r.find("auth"), "auth", base_dir, c.auth);
  if (const json* v = r.find("relay")) read_relay(*v, "relay", c.relay);
  for (std::size_t i = 0; i < c.listeners.size(); ++i)
    if (c.listeners[i].role == listener_role::mx && c.relay.local_domains.empty())
      fail("relay.local_domains", "is required by listeners[" + std::to_string(i) + "], of role \"mx\"");
  if (const json* v = r.find("shared_state")) read_shared_state(*v, "shared_state", base_dir, c.shared_state);
  r.require("backend");
  read_backend(*r.find("backend"), "backend", c.backend);
  if (c.backend.helo_name.empty()) c.backend.helo_name = c.hostname;
  if (c.auth.realm.empty()) c.auth.realm = c.hostname;
  if (const json* v = r.find("limits")) read_limits(*v, "limits", c.limits);
  if (const json* v = r.find("timeouts")) read_timeouts(*v, "timeouts", c.timeouts);
  if (const json* v = r.find("smtp")) read_smtp(*v, "smtp", c.smtp);
  if (const json* v = r.find("metrics")) {
    object_reader m(*v, "metrics");
    std::string address;
    if (m.get("address", address)) {
      c.metrics.address = parse_endpoint(address);
      if (!c.metrics.address) fail("metrics.address", "\"" + address + "\" is not host:port or [v6]:port");
    }
    m.finish();
  }
  if (const json* v = r.find("log")) {
    object_reader l(*v, "log");
    l.get_choice("format", c.log.format, {{"text", log_format::text}, {"json", log_format::json}});
    l.finish();
  }
  r.finish();
  return c;
}

config load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw config_error(path + ": cannot read the configuration file");
  std::stringstream text;
  text << in.rdbuf();
  const auto base = std::filesystem::absolute(path).parent_path().string();
  config c = parse_config(text.str(), base);
  c.path = path;
  return c;
}

}  // namespace smtpguard

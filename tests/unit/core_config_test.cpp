#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"

namespace smtpguard {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

json minimal() {
  return json::parse(R"({
    "hostname": "mail.example.org",
    "listeners": [{"name": "submission", "address": "127.0.0.1:587", "tls": "starttls", "require_tls": true}],
    "tls": {"certificates": [{"cert": "server.pem", "key": "server.key"}]},
    "auth": {"users_file": "users.json"},
    "backend": {"address": "127.0.0.1:2525"}
  })");
}

/// One change to the minimal config: set `value` at the JSON pointer, or erase it.
struct edit {
  std::string pointer;
  json value;
  bool erase = false;
};

edit set(std::string pointer, json value) { return {std::move(pointer), std::move(value), false}; }
edit drop(std::string pointer) { return {std::move(pointer), nullptr, true}; }

json apply(json document, const std::vector<edit>& edits) {
  for (const auto& e : edits) {
    const json::json_pointer where(e.pointer);
    if (!e.erase) {
      document[where] = e.value;
      continue;
    }
    json& parent = document[where.parent_pointer()];
    if (parent.is_array())
      parent.erase(std::stoul(where.back()));
    else
      parent.erase(where.back());
  }
  return document;
}

class core_config : public testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "smtpguard-config-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    write("server.pem", "cert\n");
    write("server.key", "key\n");
    write("users.json", "{\"users\": []}\n");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) const {
    const fs::path path = dir_ / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
    return path.string();
  }

  config parse(const std::vector<edit>& edits = {}) const {
    return parse_config(apply(minimal(), edits).dump(), dir_.string());
  }

  /// The config_error's what(), or "no error".
  std::string error_of(const std::vector<edit>& edits) const {
    try {
      parse(edits);
    } catch (const config_error& e) {
      return e.what();
    }
    return "no error";
  }

  struct error_case {
    std::vector<edit> edits;
    std::string path;  ///< what() must start with "<path>: "
  };

  void expect_errors(const std::vector<error_case>& cases) const {
    for (const auto& c : cases) {
      const std::string error = error_of(c.edits);
      EXPECT_TRUE(error.starts_with(c.path + ": ")) << apply(minimal(), c.edits).dump() << "\n  -> " << error;
    }
  }

  fs::path dir_;
};

TEST_F(core_config, a_named_choice_outside_its_list_is_refused_with_the_list) {
  EXPECT_EQ(error_of({set("/listeners/0/tls", "tls")}), "listeners[0].tls: must be \"implicit\", \"starttls\" or \"none\"");
  EXPECT_EQ(error_of({set("/backend/proxy_protocol", "v3")}), "backend.proxy_protocol: must be \"v1\", \"v2\" or \"none\"");
  EXPECT_EQ(error_of({set("/smtp/bare_line_endings", "accept")}),
            "smtp.bare_line_endings: must be \"reject\" or \"normalize\"");
  EXPECT_EQ(error_of({set("/log/format", "TEXT")}), "log.format: must be \"text\" or \"json\"");
  EXPECT_EQ(error_of({set("/tls/client_certificates", json{{"mode", "maybe"}})}),
            "tls.client_certificates.mode: must be \"none\", \"optional\" or \"required\"");
  EXPECT_EQ(parse({set("/listeners/0/tls", "implicit")}).listeners[0].tls, tls_mode::implicit);
  EXPECT_EQ(parse({set("/backend/proxy_protocol", "v1")}).backend.servers[0].proxy, proxy_protocol::v1);
}

TEST_F(core_config, minimal_config_parses_with_defaults) {
  const config c = parse();
  EXPECT_EQ(c.hostname, "mail.example.org");
  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0].name, "submission");
  EXPECT_EQ(c.listeners[0].address.host, "127.0.0.1");
  EXPECT_EQ(c.listeners[0].address.port, 587);
  EXPECT_EQ(c.listeners[0].tls, tls_mode::starttls);
  EXPECT_TRUE(c.listeners[0].require_tls);
  EXPECT_FALSE(c.listeners[0].allow_plaintext_auth);
  EXPECT_EQ(c.tls.min_version, "1.2");
  EXPECT_EQ(c.auth.mechanisms, (std::vector<std::string>{"PLAIN", "LOGIN", "CRAM-MD5"}));
  ASSERT_EQ(c.backend.servers.size(), 1u);
  EXPECT_EQ(c.backend.servers[0].address.port, 2525);
  EXPECT_FALSE(c.backend.servers[0].xclient);
  EXPECT_EQ(c.backend.servers[0].proxy, proxy_protocol::none);
  EXPECT_EQ(c.backend.helo_name, "mail.example.org");
  EXPECT_EQ(c.backend.reuse_idle, std::chrono::seconds(2));
  EXPECT_EQ(c.backend.reuse_lifetime, std::chrono::seconds(300));
  EXPECT_EQ(c.backend.reuse_max_idle, 64u);
  EXPECT_EQ(c.limits.max_recipients, 100);
  EXPECT_EQ(c.limits.max_command_line, 512u);
  EXPECT_EQ(c.limits.max_tls_handshakes, 64u);
  EXPECT_EQ(c.limits.max_messages_per_user, 0);
  EXPECT_EQ(c.limits.max_messages_per_ip, 0);
  EXPECT_EQ(c.limits.max_recipients_per_user, 0);
  EXPECT_EQ(c.limits.max_recipients_per_ip, 0);
  EXPECT_EQ(c.limits.message_window, std::chrono::seconds(3600));
  EXPECT_EQ(c.timeouts.data_end, std::chrono::seconds(600));
  EXPECT_EQ(c.timeouts.backend_program_exit, std::chrono::seconds(30));
  EXPECT_EQ(c.smtp.bare_line_endings, smtp::line_ending_policy::reject);
  EXPECT_FALSE(c.metrics.address.has_value());
  EXPECT_EQ(c.log.format, log_format::text);
  EXPECT_TRUE(c.relay.trusted_networks.empty());
  EXPECT_EQ(c.auth.realm, c.hostname);
  EXPECT_GE(c.threads, 1);
  EXPECT_EQ(c.threads, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

TEST_F(core_config, explicit_values) {
  const config c = parse({
      set("/threads", 4),
      set("/listeners/1", json{{"name", "smtps"}, {"address", "[::1]:465"}, {"tls", "implicit"}}),
      set("/listeners/2", json{{"name", "lan"}, {"address", "10.0.0.1:25"}, {"tls", "none"},
                               {"require_tls", false}, {"allow_plaintext_auth", true}}),
      set("/tls/min_version", "1.3"),
      set("/auth/mechanisms", json{"plain", "Cram-Md5", "scram-sha-256", "Scram-Sha-256-Plus", "digest-md5"}),
      set("/auth/realm", "example.org"),
      set("/backend/helo_name", "relay.example.org"),
      set("/relay/trusted_networks", json{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7"}),
      set("/relay/local_domains", json{"example.org", ".example.org"}),
      set("/listeners/3", json{{"name", "mx"}, {"address", "[::]:25"}, {"role", "mx"}}),
      set("/listeners/4", json{{"name", "mx-strict"}, {"address", "[::]:2525"}, {"role", "mx"}, {"require_tls", true}}),
      set("/backend/reuse_idle", 0),
      set("/backend/reuse_lifetime", 60),
      set("/backend/reuse_max_idle", 4),
      set("/limits/max_recipients", 5),
      set("/limits/max_tls_handshakes", 8),
      set("/limits/max_messages_per_user", 200),
      set("/limits/max_messages_per_ip", 500),
      set("/limits/max_recipients_per_user", 2000),
      set("/limits/max_recipients_per_ip", 5000),
      set("/limits/message_window_seconds", 86400),
      set("/timeouts/data_end", 600),
      set("/smtp/bare_line_endings", "normalize"),
      set("/metrics/address", "[::1]:9465"),
      set("/log/format", "json"),
  });
  EXPECT_EQ(c.threads, 4);
  ASSERT_EQ(c.listeners.size(), 5u);
  EXPECT_EQ(c.listeners[1].tls, tls_mode::implicit);
  EXPECT_EQ(c.listeners[1].address.host, "::1");
  EXPECT_EQ(c.listeners[2].tls, tls_mode::none);
  EXPECT_FALSE(c.listeners[2].require_tls);
  EXPECT_TRUE(c.listeners[2].allow_plaintext_auth);
  EXPECT_EQ(c.tls.min_version, "1.3");
  EXPECT_EQ(c.auth.mechanisms,
            (std::vector<std::string>{"PLAIN", "CRAM-MD5", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "DIGEST-MD5"}));
  EXPECT_EQ(c.auth.realm, "example.org");
  EXPECT_EQ(c.backend.helo_name, "relay.example.org");
  ASSERT_EQ(c.relay.trusted_networks.size(), 3u);
  EXPECT_EQ(c.relay.local_domains, (std::vector<std::string>{"example.org", ".example.org"}));
  EXPECT_EQ(c.listeners[0].role, listener_role::submission);
  EXPECT_TRUE(c.listeners[0].require_tls);
  EXPECT_EQ(c.listeners[3].role, listener_role::mx);
  EXPECT_FALSE(c.listeners[3].require_tls) << "RFC 3207: a public MX does not demand TLS";
  EXPECT_TRUE(c.listeners[4].require_tls);
  EXPECT_EQ(c.relay.trusted_networks[1].text, "2001:db8::/32");
  EXPECT_EQ(c.relay.trusted_networks[2].prefix, 32u);
  EXPECT_EQ(c.backend.reuse_idle, std::chrono::seconds(0));
  EXPECT_EQ(c.backend.reuse_lifetime, std::chrono::seconds(60));
  EXPECT_EQ(c.backend.reuse_max_idle, 4u);
  EXPECT_EQ(c.limits.max_recipients, 5);
  EXPECT_EQ(c.limits.max_tls_handshakes, 8u);
  EXPECT_EQ(c.limits.max_messages_per_user, 200);
  EXPECT_EQ(c.limits.max_messages_per_ip, 500);
  EXPECT_EQ(c.limits.max_recipients_per_user, 2000);
  EXPECT_EQ(c.limits.max_recipients_per_ip, 5000);
  EXPECT_EQ(c.limits.message_window, std::chrono::seconds(86400));
  EXPECT_EQ(c.smtp.bare_line_endings, smtp::line_ending_policy::normalize);
  ASSERT_TRUE(c.metrics.address.has_value());
  EXPECT_EQ(c.metrics.address->host, "::1");
  EXPECT_EQ(c.metrics.address->port, 9465);
  EXPECT_EQ(c.log.format, log_format::json);
}

TEST_F(core_config, plaintext_only_needs_no_certificates) {
  const config c = parse({set("/listeners/0/tls", "none"), drop("/tls")});
  EXPECT_EQ(c.listeners[0].tls, tls_mode::none);
  EXPECT_TRUE(c.tls.certificates.empty());
}

TEST_F(core_config, relative_paths_resolve_against_base_dir) {
  write("keys/other.pem", "cert\n");
  const std::string absolute_key = write("elsewhere/abs.key", "key\n");
  const config c = parse({set("/tls/certificates/1", json{{"cert", "keys/../keys/other.pem"}, {"key", absolute_key}})});
  ASSERT_EQ(c.tls.certificates.size(), 2u);
  EXPECT_EQ(c.tls.certificates[0].cert, (dir_ / "server.pem").string());
  EXPECT_EQ(c.tls.certificates[0].key, (dir_ / "server.key").string());
  EXPECT_EQ(c.tls.certificates[1].cert, (dir_ / "keys" / "other.pem").string());
  EXPECT_EQ(c.tls.certificates[1].key, absolute_key);
  EXPECT_EQ(c.auth.users_file, (dir_ / "users.json").string());
}

TEST_F(core_config, unreadable_files_name_their_path) {
  fs::create_directories(dir_ / "a_directory");
  expect_errors({
      {{set("/tls/certificates/0/cert", "missing.pem")}, "tls.certificates[0].cert"},
      {{set("/tls/certificates/0/key", "missing.key")}, "tls.certificates[0].key"},
      {{set("/auth/users_file", "missing.json")}, "auth.users_file"},
      {{set("/auth/users_file", "a_directory")}, "auth.users_file"},
      {{set("/tls/certificates/0/cert", ".")}, "tls.certificates[0].cert"},
  });
}

TEST_F(core_config, unknown_keys) {
  expect_errors({
      {{set("/frobnicate", 1)}, "frobnicate"},
      {{set("/listeners/0/frobnicate", true)}, "listeners[0].frobnicate"},
      {{set("/tls/certificates/0/foo", "x")}, "tls.certificates[0].foo"},
      {{set("/tls/ciphers", "x")}, "tls.ciphers"},
      {{set("/auth/domain", "x")}, "auth.domain"},
      {{set("/backend/port", 25)}, "backend.port"},
      {{set("/limits/max_rcpt", 5)}, "limits.max_rcpt"},
      {{set("/timeouts/idle", 5)}, "timeouts.idle"},
      {{set("/smtp/greeting", "x")}, "smtp.greeting"},
      {{set("/metrics/port", 9465)}, "metrics.port"},
      {{set("/log/level", "debug")}, "log.level"},
  });
}

TEST_F(core_config, wrong_types) {
  expect_errors({
      {{set("/hostname", 5)}, "hostname"},
      {{set("/threads", "4")}, "threads"},
      {{set("/threads", 1.5)}, "threads"},
      {{set("/listeners", json::object())}, "listeners"},
      {{set("/listeners/0", "submission")}, "listeners[0]"},
      {{set("/listeners/0/require_tls", "yes")}, "listeners[0].require_tls"},
      {{set("/listeners/0/address", 587)}, "listeners[0].address"},
      {{set("/tls", json::array())}, "tls"},
      {{set("/tls/certificates", "server.pem")}, "tls.certificates"},
      {{set("/tls/min_version", 1.2)}, "tls.min_version"},
      {{set("/auth/mechanisms", "PLAIN")}, "auth.mechanisms"},
      {{set("/auth/mechanisms", json{"PLAIN", 7})}, "auth.mechanisms[1]"},
      {{set("/limits/max_recipients", "10")}, "limits.max_recipients"},
      {{set("/timeouts/command", true)}, "timeouts.command"},
      {{set("/metrics", "127.0.0.1:9465")}, "metrics"},
      {{set("/log/format", json::array())}, "log.format"},
  });
  EXPECT_TRUE(error_of({set("/hostname", 5)}).starts_with("hostname: expected a string"));
  try {
    parse_config("[1, 2]", dir_.string());
    ADD_FAILURE() << "a top-level array was accepted";
  } catch (const config_error& e) {
    EXPECT_TRUE(std::string(e.what()).starts_with("(top level): ")) << e.what();
  }
  try {
    parse_config("{\"hostname\": ", dir_.string());
    ADD_FAILURE() << "truncated JSON was accepted";
  } catch (const config_error& e) {
    EXPECT_TRUE(std::string(e.what()).starts_with("(json): ")) << e.what();
  }
}

TEST_F(core_config, missing_required_keys) {
  expect_errors({
      {{drop("/hostname")}, "hostname"},
      {{drop("/listeners")}, "listeners"},
      {{drop("/auth")}, "auth"},
      {{drop("/backend")}, "backend"},
      {{drop("/listeners/0/address")}, "listeners[0].address"},
      {{drop("/listeners/0/name")}, "listeners[0].name"},
      {{drop("/auth/users_file")}, "auth.users_file"},
      {{drop("/backend/address")}, "backend.address"},
      {{drop("/tls/certificates/0/key")}, "tls.certificates[0].key"},
  });
  EXPECT_TRUE(error_of({drop("/hostname")}).starts_with("hostname: is required"));
}

TEST_F(core_config, invalid_values) {
  const json twin = {{"name", "submission"}, {"address", "127.0.0.1:588"}};
  expect_errors({
      {{set("/hostname", "")}, "hostname"},
      {{set("/hostname", "mail example")}, "hostname"},
      {{set("/threads", -1)}, "threads"},
      {{set("/threads", 257)}, "threads"},
      {{set("/listeners", json::array())}, "listeners"},
      {{set("/listeners/0/name", "")}, "listeners[0].name"},
      {{set("/listeners/0/address", "0.0.0.0")}, "listeners[0].address"},
      {{set("/listeners/0/address", "unix:/run/smtp.sock")}, "listeners[0].address"},
      {{set("/listeners/0/address", "::1:587")}, "listeners[0].address"},
      {{set("/listeners/0/tls", "STARTTLS")}, "listeners[0].tls"},
      {{set("/listeners/0/tls", "ssl")}, "listeners[0].tls"},
      {{set("/listeners/1", twin)}, "listeners[1].name"},
      {{drop("/tls")}, "tls.certificates"},
      {{set("/tls/certificates", json::array())}, "tls.certificates"},
      {{set("/listeners/0/tls", "implicit"), drop("/tls/certificates")}, "tls.certificates"},
      {{set("/tls/min_version", "1.1")}, "tls.min_version"},
      {{set("/tls/min_version", "1.0")}, "tls.min_version"},
      {{set("/auth/mechanisms/0", "GSSAPI")}, "auth.mechanisms[0]"},
      {{set("/auth/realm", "a\"b")}, "auth.realm"},
      {{set("/auth/max_failures", 0)}, "auth.max_failures"},
      {{set("/backend/address", "backend")}, "backend.address"},
      {{set("/timeouts/backend_program_exit", 0)}, "timeouts.backend_program_exit"},
      {{set("/backend/reuse_idle", -1)}, "backend.reuse_idle"},
      {{set("/backend/reuse_idle", 301)}, "backend.reuse_idle"},
      {{set("/backend/reuse_lifetime", 0)}, "backend.reuse_lifetime"},
      {{set("/backend/reuse_max_idle", 0)}, "backend.reuse_max_idle"},
      {{set("/limits/max_tls_handshakes", 0)}, "limits.max_tls_handshakes"},
      {{set("/limits/max_messages_per_user", -1)}, "limits.max_messages_per_user"},
      {{set("/limits/max_messages_per_ip", "10")}, "limits.max_messages_per_ip"},
      {{set("/limits/max_recipients_per_user", -5)}, "limits.max_recipients_per_user"},
      {{set("/limits/max_recipients_per_ip", 1.5)}, "limits.max_recipients_per_ip"},
      {{set("/limits/message_window_seconds", 0)}, "limits.message_window_seconds"},
      {{set("/backend/address", json::array())}, "backend.address"},
      {{set("/backend/address", json::array({"127.0.0.1:25", "backend"}))}, "backend.address[1]"},
      {{set("/backend/address", json::array({"127.0.0.1:25", 25}))}, "backend.address[1]"},
      {{set("/backend/address", json::array({json{{"address", "backend"}}}))}, "backend.address[0].address"},
      {{set("/backend/address", json::array({json{{"address", "127.0.0.1:25"}, {"proxy", "v2"}}}))},
       "backend.address[0].proxy"},
      {{set("/backend/address", json{{"address", "127.0.0.1:25"}, {"command", json::array({"/bin/true"})}})},
       "backend.address.address"},
      {{set("/backend/address", json::array({json::object()}))}, "backend.address[0].address"},
      {{set("/backend/proxy_protocol", "v3")}, "backend.proxy_protocol"},
      {{set("/relay", json::array())}, "relay"},
      {{set("/relay/trusted_networks", "10.0.0.0/8")}, "relay.trusted_networks"},
      {{set("/relay/trusted_networks", json::array({"10.0.0.0/8", "mail.example.org"}))},
       "relay.trusted_networks[1]"},
      {{set("/relay/trusted_networks", json::array({"::1/129"}))}, "relay.trusted_networks[0]"},
      {{set("/relay/mynetworks", json::array())}, "relay.mynetworks"},
      {{set("/relay/local_domains", json::array({"example.org", "[192.0.2.1]"}))}, "relay.local_domains[1]"},
      {{set("/relay/local_domains", json::array({"*.example.org"}))}, "relay.local_domains[0]"},
      {{set("/listeners/0/role", "relay")}, "listeners[0].role"},
      {{set("/listeners/0/role", "mx")}, "relay.local_domains"},
      {{set("/listeners/0/proxy_protocol", true)}, "listeners[0].proxy_trusted"},
      {{set("/listeners/0/proxy_trusted", json::array({"10.0.0.0/8"}))}, "listeners[0].proxy_trusted"},
      {{set("/listeners/0/proxy_protocol", true), set("/listeners/0/proxy_trusted", json::array({"10.0.0.0/33"}))},
       "listeners[0].proxy_trusted[0]"},
      {{set("/listeners/0/proxy_protocol", true), set("/listeners/0/proxy_trusted", json::array({"10.0.0.0/"}))},
       "listeners[0].proxy_trusted[0]"},
      {{set("/listeners/0/proxy_protocol", true), set("/listeners/0/proxy_trusted", json::array({"lb.local"}))},
       "listeners[0].proxy_trusted[0]"},
      {{set("/backend/xclient", "yes")}, "backend.xclient"},
      {{drop("/backend/address"), set("/backend/command", "/usr/sbin/sendmail -bs")}, "backend.command"},
      {{drop("/backend/address"), set("/backend/command", json::array({"sendmail", "-bs"}))}, "backend.command[0]"},
      {{drop("/backend/address"), set("/backend/command", json::array({"/nonexistent/sendmail"}))},
       "backend.command[0]"},
      {{drop("/backend/address"), set("/backend/command", json::array({"/bin/true"})),
        set("/backend/proxy_protocol", "v1")},
       "backend.proxy_protocol"},
      {{set("/backend/environment", json{{"RELAYCLIENT", ""}})}, "backend.environment"},
      {{drop("/backend/address"), set("/backend/command", json::array({"/bin/true"})),
        set("/backend/environment", json{{"DATABYTES", 10}})},
       "backend.environment.DATABYTES"},
      {{set("/limits/max_command_line", 511)}, "limits.max_command_line"},
      {{set("/limits/max_recipients", 0)}, "limits.max_recipients"},
      {{set("/timeouts/data_end", 599)}, "timeouts.data_end"},
      {{set("/timeouts/command", 0)}, "timeouts.command"},
      {{set("/smtp/bare_line_endings", "strip")}, "smtp.bare_line_endings"},
      {{set("/smtp/bare_line_endings", "Reject")}, "smtp.bare_line_endings"},
      {{set("/smtp/banner", "ESMTP\r\n250 fake")}, "smtp.banner"},
      {{set("/metrics/address", "9465")}, "metrics.address"},
      {{set("/metrics/address", "unix:/run/metrics.sock")}, "metrics.address"},
      {{set("/metrics/address", "127.0.0.1:0")}, "metrics.address"},
      {{set("/log/format", "syslog")}, "log.format"},
  });
  EXPECT_TRUE(error_of({set("/listeners/1", twin)}).starts_with("listeners[1].name: duplicate listener name"));
}

TEST_F(core_config, several_backends_in_order) {
  const config two = parse({set("/backend/address", json::array({"10.0.0.1:25", "[::1]:2525", "unix:/run/mta.sock"}))});
  ASSERT_EQ(two.backend.servers.size(), 3u);
  EXPECT_EQ(two.backend.servers[0].address.host, "10.0.0.1");
  EXPECT_EQ(two.backend.servers[0].name, "10.0.0.1:25");
  EXPECT_EQ(two.backend.servers[1].address.host, "::1");
  EXPECT_EQ(two.backend.servers[1].address.port, 2525);
  EXPECT_EQ(two.backend.servers[2].address.unix_path, "/run/mta.sock");
  EXPECT_EQ(two.backend.servers[2].name, "unix:/run/mta.sock");
}

TEST_F(core_config, backend_identity_settings_default_and_override) {
  const json entries = json::array({
      "10.0.0.1:25",
      json{{"address", "10.0.0.2:25"}, {"proxy_protocol", "v1"}, {"mail_auth", false}},
      json{{"command", json::array({"/bin/true", "-oMa{client_ip}"})}, {"environment", json{{"B", "2"}}}},
  });
  const config c = parse({set("/backend/address", entries), set("/backend/xclient", true),
                          set("/backend/mail_auth", true), set("/backend/proxy_protocol", "v2"),
                          set("/backend/environment", json{{"A", "1"}})});
  ASSERT_EQ(c.backend.servers.size(), 3u);
  const auto& plain = c.backend.servers[0];
  EXPECT_TRUE(plain.xclient);
  EXPECT_TRUE(plain.mail_auth);
  EXPECT_EQ(plain.proxy, proxy_protocol::v2);
  const auto& own = c.backend.servers[1];
  EXPECT_TRUE(own.xclient);
  EXPECT_FALSE(own.mail_auth);
  EXPECT_EQ(own.proxy, proxy_protocol::v1);
  EXPECT_EQ(c.backend.servers[2].command, (std::vector<std::string>{"/bin/true", "-oMa{client_ip}"}));
  EXPECT_EQ(c.backend.servers[2].name, "/bin/true -oMa{client_ip}");
  // The backend-wide environment, then the entry's own.
  EXPECT_EQ(c.backend.servers[2].environment,
            (std::vector<std::pair<std::string, std::string>>{{"A", "1"}, {"B", "2"}}));
  EXPECT_TRUE(c.backend.servers[2].xclient);
}

TEST_F(core_config, pop3_front_is_off_unless_configured) {
  EXPECT_FALSE(parse().pop3.enabled());
  const json pop3 = json::parse(R"({
    "listeners": [{"name": "pop3s", "address": "127.0.0.1:995", "tls": "implicit"},
                  {"name": "pop3", "address": "[::1]:110"}],
    "backend": {"address": "127.0.0.1:1110"},
    "relay_ttl": 120
  })");
  const config c = parse({set("/pop3", pop3)});
  ASSERT_TRUE(c.pop3.enabled());
  ASSERT_EQ(c.pop3.listeners.size(), 2u);
  EXPECT_EQ(c.pop3.listeners[0].protocol, listener_protocol::pop3);
  EXPECT_EQ(c.pop3.listeners[0].tls, tls_mode::implicit);
  EXPECT_EQ(c.pop3.listeners[1].tls, tls_mode::starttls);
  EXPECT_EQ(c.pop3.listeners[1].address.host, "::1");
  EXPECT_EQ(c.pop3.backend.port, 1110);
  EXPECT_EQ(c.pop3.relay_ttl, std::chrono::seconds(120));
  EXPECT_EQ(c.pop3.idle_timeout, std::chrono::seconds(600));
  EXPECT_EQ(c.listeners[0].protocol, listener_protocol::smtp);
  // A plaintext POP3 front would take passwords in the clear: there is none.
  expect_errors({
      {{set("/pop3", pop3), set("/pop3/listeners/0/tls", "none")}, "pop3.listeners[0].tls"},
      {{set("/pop3", pop3), set("/pop3/listeners/0/name", "submission")}, "pop3.listeners[0].name"},
      {{set("/pop3", pop3), set("/pop3/listeners/1/name", "pop3s")}, "pop3.listeners[1].name"},
      {{set("/pop3", pop3), set("/pop3/listeners", json::array())}, "pop3.listeners"},
      {{set("/pop3", pop3), drop("/pop3/backend")}, "pop3.backend"},
      {{set("/pop3", pop3), set("/pop3/backend/address", "unix:/run/pop3")}, "pop3.backend.address"},
      {{set("/pop3", pop3), set("/pop3/backend/port", 110)}, "pop3.backend.port"},
      {{set("/pop3", pop3), set("/pop3/relay_ttl", 0)}, "pop3.relay_ttl"},
      {{set("/pop3", pop3), set("/pop3/idle_timeout", 30)}, "pop3.idle_timeout"},
      {{set("/pop3", pop3), set("/pop3/listeners/0/require_tls", true)}, "pop3.listeners[0].require_tls"},
      {{set("/pop3", pop3), set("/pop3/ttl", 5)}, "pop3.ttl"},
  });
}

TEST_F(core_config, shared_state_names_a_redis) {
  EXPECT_FALSE(parse().shared_state.redis);
  const config c = parse({set("/shared_state", json{{"redis", "10.0.0.5:6379"}})});
  ASSERT_TRUE(c.shared_state.redis);
  EXPECT_EQ(c.shared_state.redis->port, 6379);
  EXPECT_EQ(c.shared_state.key_prefix, "smtpguard:");
  EXPECT_EQ(c.shared_state.timeout, std::chrono::milliseconds(250));
  const config u = parse({set("/shared_state", json{{"redis", "unix:/run/redis/redis.sock"}, {"key_prefix", "mx1:"},
                                                    {"timeout_ms", 50}})});
  EXPECT_EQ(u.shared_state.redis->unix_path, "/run/redis/redis.sock");
  EXPECT_EQ(u.shared_state.key_prefix, "mx1:");
  EXPECT_EQ(u.shared_state.timeout, std::chrono::milliseconds(50));
  expect_errors({
      {{set("/shared_state", json::object())}, "shared_state.redis"},
      {{set("/shared_state", json{{"redis", "redis://x"}})}, "shared_state.redis"},
      {{set("/shared_state", json{{"redis", "127.0.0.1:6379"}, {"timeout_ms", 0}})}, "shared_state.timeout_ms"},
      {{set("/shared_state", json{{"redis", "127.0.0.1:6379"}, {"db", 2}})}, "shared_state.db"},
  });
}

TEST_F(core_config, shared_state_logs_in_with_a_password_file) {
  const config none = parse({set("/shared_state", json{{"redis", "127.0.0.1:6379"}})});
  EXPECT_EQ(none.shared_state.password, "");
  EXPECT_EQ(none.shared_state.database, 0);
  write("secrets/redis.pass", "p@ss word\r\nsecond line ignored\n");
  write("no-newline.pass", "bare");
  write("empty.pass", "\n");
  const config c = parse({set("/shared_state", json{{"redis", "127.0.0.1:6379"},
                                                    {"username", "guard"},
                                                    {"password_file", "secrets/redis.pass"},
                                                    {"database", 3}})});
  EXPECT_EQ(c.shared_state.username, "guard");
  EXPECT_EQ(c.shared_state.password, "p@ss word");
  EXPECT_EQ(c.shared_state.password_file, (dir_ / "secrets" / "redis.pass").string());
  EXPECT_EQ(c.shared_state.database, 3);
  const config bare =
      parse({set("/shared_state", json{{"redis", "127.0.0.1:6379"}, {"password_file", "no-newline.pass"}})});
  EXPECT_EQ(bare.shared_state.password, "bare");
  EXPECT_EQ(bare.shared_state.username, "");
  const json redis = json{{"redis", "127.0.0.1:6379"}};
  expect_errors({
      {{set("/shared_state", redis), set("/shared_state/password_file", "missing.pass")}, "shared_state.password_file"},
      {{set("/shared_state", redis), set("/shared_state/password_file", "empty.pass")}, "shared_state.password_file"},
      {{set("/shared_state", redis), set("/shared_state/password_file", "secrets")}, "shared_state.password_file"},
      {{set("/shared_state", redis), set("/shared_state/username", "guard")}, "shared_state.username"},
      {{set("/shared_state", redis), set("/shared_state/database", -1)}, "shared_state.database"},
      {{set("/shared_state", redis), set("/shared_state/password", "inline")}, "shared_state.password"},
  });
}

TEST(core_config_networks, parse_and_contain) {
  const unsigned char inside4[] = {10, 1, 2, 3};
  const unsigned char outside4[] = {11, 1, 2, 3};
  const auto ten = parse_network("10.0.0.0/8");
  ASSERT_TRUE(ten);
  EXPECT_TRUE(ten->contains(inside4, false));
  EXPECT_FALSE(ten->contains(outside4, false));
  const auto host = parse_network("10.1.2.3");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->prefix, 32u);
  EXPECT_TRUE(host->contains(inside4, false));
  const auto odd = parse_network("10.1.2.0/23");  // a prefix that ends inside a byte
  ASSERT_TRUE(odd);
  const unsigned char next_block[] = {10, 1, 3, 9};
  const unsigned char beyond[] = {10, 1, 4, 0};
  EXPECT_TRUE(odd->contains(next_block, false));
  EXPECT_FALSE(odd->contains(beyond, false));
  const auto v6 = parse_network("2001:db8::/32");
  ASSERT_TRUE(v6);
  unsigned char address6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_TRUE(v6->contains(address6, true));
  EXPECT_FALSE(v6->contains(inside4, false));  // families never match
  address6[3] = 0xb9;
  EXPECT_FALSE(v6->contains(address6, true));
  EXPECT_TRUE(parse_network("0.0.0.0/0")->contains(outside4, false));
  for (const char* bad : {"", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/8/8", "lb.local"})
    EXPECT_FALSE(parse_network(bad)) << bad;
}

TEST_F(core_config, backend_as_a_program) {
  const config c = parse({drop("/backend/address"), set("/backend/command", json::array({"/bin/cat"})),
                          set("/backend/environment", json{{"RELAYCLIENT", ""}})});
  ASSERT_EQ(c.backend.servers.size(), 1u);
  EXPECT_EQ(c.backend.servers[0].command, std::vector<std::string>{"/bin/cat"});
  EXPECT_EQ(c.backend.servers[0].environment,
            (std::vector<std::pair<std::string, std::string>>{{"RELAYCLIENT", ""}}));
}

TEST_F(core_config, load_config_reads_a_file) {
  const std::string path = write("etc/smtpguard.json", apply(minimal(), {
                                                                set("/tls/certificates/0/cert", "../server.pem"),
                                                                set("/tls/certificates/0/key", "../server.key"),
                                                                set("/auth/users_file", "users.json"),
                                                            })
                                                            .dump());
  write("etc/users.json", "{\"users\": []}\n");
  const config c = load_config(path);
  EXPECT_EQ(c.path, path);
  EXPECT_EQ(c.tls.certificates[0].cert, (dir_ / "server.pem").string());
  EXPECT_EQ(c.auth.users_file, (dir_ / "etc" / "users.json").string());

  EXPECT_THROW(load_config((dir_ / "absent.json").string()), config_error);
  write("broken.json", "{\"hostname\": \"x\", \"frobnicate\": 1}");
  EXPECT_THROW(load_config((dir_ / "broken.json").string()), config_error);
}

struct endpoint_case {
  std::string text;
  bool allow_unix;
  std::optional<endpoint> expected;  ///< host, port, unix_path; nullopt: refused
};

endpoint at(std::string host, std::uint16_t port) { return {std::move(host), port, {}, {}}; }
endpoint socket_at(std::string path) { return {{}, 0, std::move(path), {}}; }

TEST(core_endpoint, parse_endpoint) {
  const std::vector<endpoint_case> cases{
      {"127.0.0.1:25", false, at("127.0.0.1", 25)},
      {"0.0.0.0:65535", false, at("0.0.0.0", 65535)},
      {"[::1]:587", false, at("::1", 587)},
      {"[2001:db8::1]:25", false, at("2001:db8::1", 25)},
      {"localhost:25", false, at("localhost", 25)},
      {"mx-1.example_org.net:2525", false, at("mx-1.example_org.net", 2525)},
      {"unix:/run/x.sock", true, socket_at("/run/x.sock")},
      {"unix:/run/x.sock", false, std::nullopt},
      {"unix:run/x.sock", true, std::nullopt},
      {"unix:", true, std::nullopt},
      {"::1:25", false, std::nullopt},
      {":25", false, std::nullopt},
      {"host:", false, std::nullopt},
      {"host", false, std::nullopt},
      {"", false, std::nullopt},
      {"host:0", false, std::nullopt},
      {"host:65536", false, std::nullopt},
      {"host:70000", false, std::nullopt},
      {"host:25x", false, std::nullopt},
      {"host:-25", false, std::nullopt},
      {"host:+25", false, std::nullopt},
      {"host: 25", false, std::nullopt},
      {"host:99999999999999999999", false, std::nullopt},
      {"[::1]25", false, std::nullopt},
      {"[::1]:", false, std::nullopt},
      {"[::1:25", false, std::nullopt},
      {"[]:25", false, std::nullopt},
      {"[127.0.0.1]:25", false, std::nullopt},
      {"ho st:25", false, std::nullopt},
      {"host/x:25", false, std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text + (c.allow_unix ? " (unix allowed)" : ""));
    const auto ep = parse_endpoint(c.text, c.allow_unix);
    ASSERT_EQ(ep.has_value(), c.expected.has_value());
    if (!ep) continue;
    EXPECT_EQ(ep->host, c.expected->host);
    EXPECT_EQ(ep->port, c.expected->port);
    EXPECT_EQ(ep->unix_path, c.expected->unix_path);
    EXPECT_EQ(ep->text, c.text);
  }
}

}  // namespace
}  // namespace smtpguard

namespace smtpguard {
namespace {

// Found by fuzz_config: a number beyond double range used to escape as a raw
// nlohmann exception instead of a config_error.
TEST(core_config_regression, number_overflow_is_a_config_error) {
  try {
    parse_config(R"({"hostname": 1e400})", "/");
    FAIL() << "no error";
  } catch (const config_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("(json): ", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace smtpguard

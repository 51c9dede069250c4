#pragma once
// Command line of smtpguard-bench.
#include <cstddef>
#include <optional>
#include <string>

namespace smtpguard::bench {

enum class tls_mode { smtps, starttls, plain };
enum class auth_kind { none, plain, login, cram_md5 };

struct options {
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  tls_mode mode = tls_mode::starttls;
  auth_kind auth = auth_kind::none;
  std::string user;
  std::string password;
  std::size_t concurrency = 1;
  std::optional<std::size_t> sessions;  ///< total; unset: unlimited with --duration, else 100
  double duration_s = 0;                ///< 0: no cap
  std::size_t message_size = 10240;
  std::size_t messages_per_session = 1;
  bool resume = false;
  std::size_t idle = 0;                 ///< >0: idle mode with this many sessions
  double rate = 0;                      ///< sessions per second; 0: as fast as possible
  std::size_t threads = 1;
  std::string from = "bench@example.test";
  std::string to = "sink@example.test";
  std::string server_name = "mail.example.test";
  std::string ca_file;
  bool insecure = false;
  double timeout_s = 30;
  double crypto_s = 0;                  ///< >0: time the TLS library's per-handshake crypto instead
};

std::string_view mode_name(tls_mode m);
std::string_view auth_name(auth_kind a);

/// Parses argv. On error or --help returns nullopt and sets `message`
/// (the usage text for --help, with `exit_code` 0; an error with 2).
std::optional<options> parse_options(int argc, char** argv, std::string& message, int& exit_code);

}  // namespace smtpguard::bench

#include "options.hpp"

#include <charconv>
#include <cmath>
#include <stdexcept>
#include <string_view>

namespace smtpguard::bench {
namespace {

constexpr std::string_view usage_text =
    "usage: smtpguard-bench --port PORT [options]\n"
    "       smtpguard-bench --crypto S   time the TLS library's per-handshake crypto for S seconds\n"
    "  --host ADDR               server address (default 127.0.0.1)\n"
    "  --port PORT               server port (required)\n"
    "  --mode smtps|starttls|plain   (default starttls)\n"
    "  --auth none|plain|login|cram-md5   (default none)\n"
    "  --user NAME --password PASS   credentials for --auth\n"
    "  --concurrency N           sessions in flight (default 1)\n"
    "  --sessions N              total sessions (default 100, unlimited with --duration)\n"
    "  --duration S              stop starting sessions after S seconds\n"
    "  --message-size BYTES      message size (default 10240)\n"
    "  --messages-per-session N  messages per session (default 1)\n"
    "  --resume                  resume TLS sessions (per worker)\n"
    "  --idle N                  open N sessions, hold them until --duration ends, QUIT\n"
    "  --rate R                  start R sessions per second (0: as fast as possible)\n"
    "  --threads T               I/O threads (default 1)\n"
    "  --from ADDR --to ADDR     envelope addresses\n"
    "  --server-name NAME        SNI and verified name (default mail.example.test)\n"
    "  --ca FILE                 verify the server certificate against FILE\n"
    "  --insecure                do not verify the server certificate\n"
    "  --timeout S               per-operation timeout (default 30)\n";

template <typename T>
T parse_number(std::string_view option, std::string_view text) {
  T value{};
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr != end)
    throw std::invalid_argument(std::string(option) + ": \"" + std::string(text) + "\" is not a number");
  return value;
}

double parse_seconds(std::string_view option, std::string_view text) {
  // std::from_chars for double is in GCC 12's libstdc++.
  const auto value = parse_number<double>(option, text);
  if (!std::isfinite(value) || value < 0) throw std::invalid_argument(std::string(option) + ": must be >= 0");
  return value;
}

std::size_t parse_count(std::string_view option, std::string_view text, std::size_t min) {
  const auto value = parse_number<std::size_t>(option, text);
  if (value < min)
    throw std::invalid_argument(std::string(option) + ": must be >= " + std::to_string(min));
  return value;
}

}  // namespace

std::string_view mode_name(tls_mode m) {
  switch (m) {
    case tls_mode::smtps: return "smtps";
    case tls_mode::starttls: return "starttls";
    case tls_mode::plain: return "plain";
  }
  return "?";
}

std::string_view auth_name(auth_kind a) {
  switch (a) {
    case auth_kind::none: return "none";
    case auth_kind::plain: return "plain";
    case auth_kind::login: return "login";
    case auth_kind::cram_md5: return "cram-md5";
  }
  return "?";
}

std::optional<options> parse_options(int argc, char** argv, std::string& message, int& exit_code) {
  options o;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string_view opt = argv[i];
      std::string_view value;
      bool has_inline_value = false;
      if (const auto eq = opt.find('='); opt.starts_with("--") && eq != std::string_view::npos) {
        value = opt.substr(eq + 1);
        opt = opt.substr(0, eq);
        has_inline_value = true;
      }
      if (opt == "--help" || opt == "-h") {
        message = usage_text;
        exit_code = 0;
        return std::nullopt;
      }
      const bool is_flag = opt == "--resume" || opt == "--insecure";
      if (is_flag) {
        if (has_inline_value) throw std::invalid_argument(std::string(opt) + " takes no value");
        if (opt == "--resume") o.resume = true;
        else o.insecure = true;
        continue;
      }
      if (!has_inline_value) {
        if (i + 1 >= argc) throw std::invalid_argument(std::string(opt) + " needs a value");
        value = argv[++i];
      }
      if (opt == "--host") o.host = value;
      else if (opt == "--port") {
        const auto port = parse_count(opt, value, 1);
        if (port > 65535) throw std::invalid_argument("--port: out of range");
        o.port = static_cast<unsigned short>(port);
      } else if (opt == "--mode") {
        if (value == "smtps") o.mode = tls_mode::smtps;
        else if (value == "starttls") o.mode = tls_mode::starttls;
        else if (value == "plain") o.mode = tls_mode::plain;
        else throw std::invalid_argument("--mode: expected smtps, starttls or plain");
      } else if (opt == "--auth") {
        if (value == "none") o.auth = auth_kind::none;
        else if (value == "plain") o.auth = auth_kind::plain;
        else if (value == "login") o.auth = auth_kind::login;
        else if (value == "cram-md5") o.auth = auth_kind::cram_md5;
        else throw std::invalid_argument("--auth: expected none, plain, login or cram-md5");
      } else if (opt == "--user") o.user = value;
      else if (opt == "--password") o.password = value;
      else if (opt == "--concurrency") o.concurrency = parse_count(opt, value, 1);
      else if (opt == "--sessions") o.sessions = parse_count(opt, value, 1);
      else if (opt == "--duration") o.duration_s = parse_seconds(opt, value);
      else if (opt == "--message-size") o.message_size = parse_count(opt, value, 0);
      else if (opt == "--messages-per-session") o.messages_per_session = parse_count(opt, value, 0);
      else if (opt == "--idle") o.idle = parse_count(opt, value, 1);
      else if (opt == "--rate") o.rate = parse_seconds(opt, value);
      else if (opt == "--threads") o.threads = parse_count(opt, value, 1);
      else if (opt == "--from") o.from = value;
      else if (opt == "--to") o.to = value;
      else if (opt == "--server-name") o.server_name = value;
      else if (opt == "--ca") o.ca_file = value;
      else if (opt == "--crypto") {
        o.crypto_s = parse_seconds(opt, value);
        if (o.crypto_s == 0) throw std::invalid_argument("--crypto: must be > 0");
      } else if (opt == "--timeout") {
        o.timeout_s = parse_seconds(opt, value);
        if (o.timeout_s == 0) throw std::invalid_argument("--timeout: must be > 0");
      } else throw std::invalid_argument("unknown option \"" + std::string(opt) + "\"");
    }
    if (o.crypto_s > 0) return o;
    if (o.port == 0) throw std::invalid_argument("--port is required");
    if (o.auth != auth_kind::none && o.user.empty()) throw std::invalid_argument("--auth needs --user");
    if (o.idle > 0 && o.duration_s == 0) throw std::invalid_argument("--idle needs --duration");
    if (o.idle > 0 && o.rate > 0) throw std::invalid_argument("--idle and --rate exclude each other");
    if (o.resume && o.mode == tls_mode::plain) throw std::invalid_argument("--resume needs TLS");
    if (o.ca_file.empty()) o.insecure = true;
  } catch (const std::invalid_argument& e) {
    message = std::string("smtpguard-bench: ") + e.what() + "\n" + std::string(usage_text);
    exit_code = 2;
    return std::nullopt;
  }
  return o;
}

}  // namespace smtpguard::bench

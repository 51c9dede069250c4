// The configuration file and host:port parsing. Input: JSON text.
// parse_config must either throw config_error, whose what() names a JSON
// path, or return a configuration within the documented bounds. The files
// it must find readable live in a scratch directory made once per process.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "config.hpp"
#include "fuzz_support.hpp"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

void remove_scratch_dir();

// Made once and kept for the whole run; never freed, so that the exit
// handler below can still read it after static destructors have run.
const std::string& scratch_dir() {
  static const std::string* const dir = [] {
    std::string pattern = (fs::temp_directory_path() / "smtpguard-fuzz-config-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    // The names the seed corpus refers to, relative to base_dir.
    for (const char* name : {"cert.pem", "key.pem", "ca.pem", "crl.pem", "users.json"})
      std::ofstream(fs::path(pattern) / name) << "placeholder\n";
    fs::create_directory(fs::path(pattern) / "subdir");
    std::atexit(remove_scratch_dir);
    return new std::string(std::move(pattern));
  }();
  return *dir;
}

void remove_scratch_dir() {
  std::error_code ec;
  fs::remove_all(scratch_dir(), ec);
}

// Paths are opened for reading, and opening a FIFO or a device blocks or
// has side effects: keep every path inside the scratch directory.
bool stays_inside(const json& value) {
  if (value.is_string()) {
    const auto& s = value.get_ref<const std::string&>();
    return !s.starts_with('/') && s.find("..") == std::string::npos;
  }
  if (value.is_structured()) {
    for (const auto& [key, item] : value.items())
      if (!stays_inside(item)) return false;
  }
  return true;
}

void check_endpoint(const std::string& text, bool allow_unix) {
  const auto ep = smtpguard::parse_endpoint(text, allow_unix);
  if (!ep) return;
  FUZZ_CHECK(ep->text == text);
  if (!ep->unix_path.empty()) {
    FUZZ_CHECK(allow_unix && ep->unix_path.front() == '/');
    return;
  }
  FUZZ_CHECK(ep->port != 0);
  // Host:port is canonical enough to be written back and read again.
  const bool v6 = ep->host.find(':') != std::string::npos;
  const std::string again = (v6 ? "[" + ep->host + "]" : ep->host) + ":" + std::to_string(ep->port);
  const auto reparsed = smtpguard::parse_endpoint(again, allow_unix);
  FUZZ_CHECK(reparsed && reparsed->host == ep->host && reparsed->port == ep->port);
}

void check_config(const smtpguard::config& c) {
  FUZZ_CHECK(!c.hostname.empty() && c.threads >= 1);
  FUZZ_CHECK(!c.listeners.empty());
  for (const auto& l : c.listeners) {
    FUZZ_CHECK(!l.name.empty() && l.address.port != 0 && l.address.unix_path.empty());
    if (l.tls != smtpguard::tls_mode::none) FUZZ_CHECK(!c.tls.certificates.empty());
  }
  FUZZ_CHECK(c.auth.users_file.starts_with(scratch_dir()));
  FUZZ_CHECK(c.limits.max_command_line >= 512 && c.limits.max_message_size >= 1024);
  FUZZ_CHECK(c.timeouts.data_end.count() >= 600);
  FUZZ_CHECK(!c.backend.helo_name.empty());
  for (const auto& cert : c.tls.certificates) FUZZ_CHECK(cert.cert.starts_with(scratch_dir()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(smtpguard::fuzz::as_view(data, size));
  check_endpoint(text, false);
  check_endpoint(text, true);

  const json document = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!document.is_discarded() && !stays_inside(document)) return 0;
  try {
    check_config(smtpguard::parse_config(text, scratch_dir()));
  } catch (const smtpguard::config_error& e) {
    FUZZ_CHECK(std::string_view(e.what()).find(": ") != std::string_view::npos);
  }
  // Anything else escaping parse_config breaks its contract: let it abort.
  return 0;
}

#include <charconv>
#include <istream>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <openssl/mem.h>

#include "auth/hex.hpp"
#include "auth/passwords.hpp"
#include "auth/scram_secret.hpp"
#include "auth/user_db.hpp"
#include "sasl/digest_md5.hpp"

namespace smtpguard::auth {
namespace {

constexpr int exit_ok = 0;
constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

constexpr std::string_view usage =
    "usage: smtpguard passwd [--scheme yescrypt|bcrypt|sha512-crypt] [--user NAME]\n"
    "                        [--scram-iterations N] [--realm REALM]\n"
    "Reads one password line on standard input and prints a users-file entry:\n"
    "  {\"name\": NAME, \"password\": <crypt(3) hash>, \"cram_md5\": <HMAC-MD5 context>,\n"
    "   \"scram_sha256\": <SCRAM-SHA-256 salt, iterations and keys (RFC 5803)>}\n"
    "The default scheme is yescrypt, the default name \"user\" and the default\n"
    "SCRAM iteration count 4096 (at least 4096). With --realm (auth.realm, by\n"
    "default the hostname), the entry also holds \"digest_md5\": MD5(user:realm:password)\n"
    "for DIGEST-MD5.\n";

// Wipes the password from memory however the command ends.
struct wiped_string {
  std::string value;
  wiped_string() = default;
  wiped_string(const wiped_string&) = delete;
  wiped_string& operator=(const wiped_string&) = delete;
  ~wiped_string() { OPENSSL_cleanse(value.data(), value.size()); }
};

}  // namespace

int run_passwd_command(int argc, char** argv, std::istream& in, std::ostream& out, std::ostream& err) {
  hash_scheme scheme = hash_scheme::yescrypt;
  std::string user = "user";
  std::uint32_t scram_iterations = scram_default_iterations;
  std::optional<std::string> realm;

  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    std::string_view option = arg;
    std::string_view value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      option = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (option == "--help" && !has_value) {
      out << usage;
      return exit_ok;
    }
    if (option != "--scheme" && option != "--user" && option != "--scram-iterations" && option != "--realm") {
      err << "passwd: unknown option \"" << arg << "\"\n" << usage;
      return exit_usage;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        err << "passwd: " << option << " needs a value\n" << usage;
        return exit_usage;
      }
      value = argv[++i];
    }
    if (option == "--scheme") {
      const auto parsed = parse_hash_scheme(value);
      if (!parsed) {
        err << "passwd: unknown scheme \"" << value << "\"\n" << usage;
        return exit_usage;
      }
      scheme = *parsed;
    } else if (option == "--realm") {
      if (value.empty()) {
        err << "passwd: the realm must not be empty\n" << usage;
        return exit_usage;
      }
      realm = value;
    } else if (option == "--scram-iterations") {
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), scram_iterations);
      if (error != std::errc() || end != value.data() + value.size() ||
          scram_iterations < scram_min_iterations || scram_iterations > scram_max_iterations) {
        err << "passwd: --scram-iterations must be a number from " << scram_min_iterations << " to "
            << scram_max_iterations << "\n"
            << usage;
        return exit_usage;
      }
    } else {
      if (value.empty()) {
        err << "passwd: the user name must not be empty\n" << usage;
        return exit_usage;
      }
      user = value;
    }
  }

  wiped_string password;
  if (!std::getline(in, password.value)) {
    err << "passwd: no password on standard input\n";
    return exit_usage;
  }
  if (password.value.ends_with('\r')) password.value.pop_back();
  if (password.value.empty()) {
    err << "passwd: refusing an empty password\n";
    return exit_usage;
  }
  if (password.value.find('\0') != std::string::npos) {
    err << "passwd: a password cannot contain a NUL byte\n";
    return exit_usage;
  }

  try {
    // ordered_json keeps "name" first, as an operator would write the entry.
    nlohmann::ordered_json entry;
    entry["name"] = user;
    entry["password"] = hash_password(password.value, scheme);
    entry["cram_md5"] = cram_md5_context_to_hex(make_cram_md5_context(password.value));
    // RFC 5802 derives the keys from the SASLprepped password, as clients do.
    wiped_string prepared;
    if (auto normalised = saslprep(password.value)) {
      prepared.value = std::move(*normalised);
      entry["scram_sha256"] = scram_secret_to_text(make_scram_secret(prepared.value, scram_iterations));
    } else {
      err << "passwd: the password has characters SASLprep prohibits; no SCRAM-SHA-256 secret written\n";
    }
    if (realm) {
      entry["digest_md5"] = to_hex(sasl::make_digest_md5_secret(user, *realm, password.value));
    }
    out << entry.dump() << '\n';
  } catch (const std::exception& e) {
    err << "passwd: " << e.what() << '\n';
    return exit_failure;
  }
  out.flush();
  return out ? exit_ok : exit_failure;
}

}  // namespace smtpguard::auth

// The users file. Input: JSON text.
// Parsing must either throw std::exception (the reload keeps the old file)
// or yield a database that answers for exactly the users, senders and
// certificates the file names.
#include <crypt.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "auth/passwords.hpp"
#include "auth/scram_secret.hpp"
#include "auth/user_db.hpp"
#include "fuzz_support.hpp"
#include "smtp/chars.hpp"

// user_db::parse always runs crypt(3) once, for the dummy hash that makes
// unknown users cost what known ones do, with the cost parameters of the
// file's first hash: "$2b$31$..." alone is days of bcrypt, and a default
// yescrypt is ~50 ms per input. The KDF is libxcrypt's, not ours, so this
// target swaps it for a copy of the setting (crypt_checksalt, which decides
// what the file may contain, stays real).
extern "C" char* crypt_rn(const char* phrase, const char* setting, void* data, int size) noexcept {
  (void)phrase;
  if (data == nullptr || size < static_cast<int>(sizeof(crypt_data))) return nullptr;
  auto* out = static_cast<crypt_data*>(data);
  std::strncpy(out->output, setting, sizeof out->output - 1);
  out->output[sizeof out->output - 1] = '\0';
  if (out->output[0] == '\0') out->output[0] = '*';
  return out->output;
}

namespace {

namespace auth = smtpguard::auth;
using json = nlohmann::json;

void check_cram_hex(std::string_view text) {
  const auto ctx = auth::cram_md5_context_from_hex(text);
  if (!ctx) return;
  const std::string hex = auth::cram_md5_context_to_hex(*ctx);
  FUZZ_CHECK(hex == smtpguard::smtp::to_lower(text));
  FUZZ_CHECK(auth::cram_md5_context_from_hex(hex) == ctx);
}

// A secret that parses prints back in RFC 5803's form, which parses to the
// same secret.
void check_scram_text(std::string_view text) {
  const auto secret = auth::scram_secret_from_text(text);
  if (!secret) return;
  FUZZ_CHECK(secret->iterations >= auth::scram_min_iterations &&
             secret->iterations <= auth::scram_max_iterations);
  FUZZ_CHECK(!secret->salt.empty());
  const auto again = auth::scram_secret_from_text(auth::scram_secret_to_text(*secret));
  FUZZ_CHECK(again && again->iterations == secret->iterations && again->salt == secret->salt &&
             again->stored_key == secret->stored_key && again->server_key == secret->server_key);
}

void check_user(const auth::user_db& db, const json& entry) {
  const std::string& name = entry["name"].get_ref<const std::string&>();
  const auth::user_record* user = db.find(name);
  FUZZ_CHECK(user != nullptr && user->name == name);
  for (const auto& sender : user->senders) {
    const std::string address = sender.starts_with('@') ? "someone" + sender : sender;
    FUZZ_CHECK(db.sender_allowed(name, address));
  }
  if (user->senders.empty()) FUZZ_CHECK(db.sender_allowed(name, "anyone@anywhere.example"));
  for (const auto& match : user->client_certificates) {
    const auto colon = match.find(':');
    const std::string kind = match.substr(0, colon);
    const std::string value = match.substr(colon + 1);
    const auth::user_record* owner = nullptr;
    if (kind == "sha256") {
      owner = db.find_by_certificate(value, {}, "");
    } else if (kind == "email") {
      const std::string emails[] = {value};
      owner = db.find_by_certificate("", emails, "");
    } else {
      FUZZ_CHECK(kind == "cn");
      owner = db.find_by_certificate("", {}, value);
    }
    FUZZ_CHECK(owner == user);
  }
  // Both are constant-time by design: exercise them, whatever they answer.
  (void)db.verify_password(name, "password");
  (void)db.verify_cram_md5(name, "<1.2@host>", std::string(16, '\0'));
  const auth::scram_secret scram = db.scram_secret_for(name);
  if (user->scram_sha256) FUZZ_CHECK(scram.stored_key == user->scram_sha256->stored_key);
  FUZZ_CHECK(scram.iterations >= auth::scram_min_iterations && !scram.salt.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = smtpguard::fuzz::as_view(data, size);
  check_cram_hex(text);
  check_scram_text(text);

  // Syntax errors are json's business; user_db::load reports them itself.
  const json document = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return 0;

  auth::user_db db;
  try {
    db = auth::user_db::parse(document);
  } catch (const std::exception&) {
    return 0;
  }
  const json& users = document["users"];
  FUZZ_CHECK(db.size() == users.size());
  for (const auto& entry : users) check_user(db, entry);
  FUZZ_CHECK(db.find("") == nullptr);
  FUZZ_CHECK(!db.verify_password("", "x"));
  return 0;
}

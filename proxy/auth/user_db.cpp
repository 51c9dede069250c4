#include "auth/user_db.hpp"

#include <crypt.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "auth/hex.hpp"
#include "smtp/chars.hpp"

namespace smtpguard::auth {
namespace {

using json = nlohmann::json;

// SASL identities above this size are refused by the exchange, so such a
// user could never log in.
constexpr std::size_t max_name_size = 255;

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw std::runtime_error(path + ": " + message);
}

bool is_locked(std::string_view hash) { return !hash.empty() && (hash.front() == '!' || hash.front() == '*'); }

bool has_control_characters(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

using smtp::iequals;

std::string random_password() {
  std::uint8_t bytes[24];
  if (!RAND_bytes(bytes, sizeof bytes)) throw std::runtime_error("RAND_bytes failed");
  std::string text = to_hex(bytes);
  OPENSSL_cleanse(bytes, sizeof bytes);
  return text;
}

// A hash of a password nobody knows, checked for unknown users so that they
// cost what a wrong password costs. Reusing a real hash's setting (scheme,
// cost and salt) makes the work the same as for that user.
std::string make_dummy_hash(const std::string* like) {
  const std::string secret = random_password();
  if (like != nullptr) {
    auto scratch = std::make_unique<crypt_data>();
    const char* hash = crypt_rn(secret.c_str(), like->c_str(), scratch.get(), sizeof(crypt_data));
    std::string result = hash != nullptr && hash[0] != '*' ? hash : "";
    OPENSSL_cleanse(scratch.get(), sizeof(crypt_data));
    if (!result.empty()) return result;
  }
  return hash_password(secret, hash_scheme::yescrypt);
}

// What makes two crypt(3) hashes cost the same: the scheme and its cost
// parameters, i.e. the setting without the salt. "$y$j9T$salt$hash" ->
// "$y$j9T$", "$6$rounds=9000$salt$hash" -> "$6$rounds=9000$"; bcrypt's salt
// and hash share the last field ("$2b$12$<salt><hash>" -> "$2b$12$").
std::string cost_class(const std::string& hash) {
  const bool bcrypt = hash.size() > 2 && hash[0] == '$' && hash[1] == '2';
  std::size_t end = hash.size();
  for (int fields = bcrypt ? 1 : 2; fields > 0; --fields) {
    const auto dollar = hash.rfind('$', end == 0 ? 0 : end - 1);
    if (dollar == std::string::npos || dollar == 0) return hash;
    end = dollar;
  }
  return hash.substr(0, end + 1);
}

std::string read_name(const json& value, const std::string& path) {
  if (!value.is_string()) fail(path, "expected a string");
  std::string name = value.get<std::string>();
  if (name.empty()) fail(path, "must not be empty");
  if (name.size() > max_name_size) fail(path, "longer than " + std::to_string(max_name_size) + " bytes");
  if (has_control_characters(name)) fail(path, "must not contain control characters");
  return name;
}

std::string read_password_hash(const json& value, const std::string& path) {
  if (!value.is_string()) fail(path, "expected a string");
  std::string hash = value.get<std::string>();
  if (hash.empty() || has_control_characters(hash) || hash.find(' ') != std::string::npos)
    fail(path, "expected a crypt(3) hash");
  // A locked entry ("!..." or "*") is kept: the user exists but cannot log in
  // with a password.
  if (!is_locked(hash) && crypt_checksalt(hash.c_str()) == CRYPT_SALT_INVALID)
    fail(path, "not a crypt(3) hash this libxcrypt supports");
  return hash;
}

cram_md5_context read_cram_md5(const json& value, const std::string& path) {
  if (!value.is_string()) fail(path, "expected a string");
  std::string_view text = value.get_ref<const std::string&>();
  // Accept Dovecot's scheme-tagged form as printed by `doveadm pw -s CRAM-MD5`.
  constexpr std::string_view dovecot_tag = "{CRAM-MD5}";
  if (text.starts_with(dovecot_tag)) text.remove_prefix(dovecot_tag.size());
  const auto ctx = cram_md5_context_from_hex(text);
  if (!ctx) fail(path, "expected 64 hex digits");
  return *ctx;
}

scram_secret read_scram_sha256(const json& value, const std::string& path) {
  if (!value.is_string()) fail(path, "expected a string");
  const auto secret = scram_secret_from_text(value.get_ref<const std::string&>());
  if (!secret)
    fail(path, "expected \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\" (RFC 5803) or "
               "\"{SCRAM-SHA-256}<iterations>,<salt>,<StoredKey>,<ServerKey>\", base64 fields, " +
               std::to_string(scram_min_iterations) + " to " + std::to_string(scram_max_iterations) +
               " iterations");
  return *secret;
}

std::array<std::uint8_t, 16> read_digest_md5(const json& value, const std::string& path) {
  if (!value.is_string()) fail(path, "expected a string");
  std::string_view text = value.get_ref<const std::string&>();
  // Dovecot's scheme-tagged form, as `doveadm pw -s DIGEST-MD5` prints it.
  constexpr std::string_view dovecot_tag = "{DIGEST-MD5}";
  if (text.starts_with(dovecot_tag)) text.remove_prefix(dovecot_tag.size());
  std::array<std::uint8_t, 16> secret{};
  if (!from_hex(text, secret)) fail(path, "expected 32 hex digits: MD5(user:realm:password)");
  return secret;
}

std::vector<std::string> read_senders(const json& value, const std::string& path) {
  if (!value.is_array()) fail(path, "expected an array");
  std::vector<std::string> senders;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const std::string item_path = path + "[" + std::to_string(i) + "]";
    const json& item = value[i];
    if (!item.is_string()) fail(item_path, "expected a string");
    std::string sender = item.get<std::string>();
    const auto at = sender.rfind('@');
    // "@a@b" would never match: an address's domain starts after its last '@'.
    const bool domain_only = sender.starts_with('@');
    if (at == std::string::npos || at + 1 == sender.size() || (domain_only && at != 0) ||
        has_control_characters(sender) || sender.find(' ') != std::string::npos)
      fail(item_path, "expected \"local@domain\" or \"@domain\"");
    senders.push_back(std::move(sender));
  }
  return senders;
}

// Normalised so that lookups are exact: e-mail and fingerprint lower-cased,
// colons dropped from fingerprints; CNs are kept as written.
std::string read_certificate_match(const json& item, const std::string& path) {
  if (!item.is_string()) fail(path, "expected a string");
  const std::string text = item.get<std::string>();
  const auto colon = text.find(':');
  const std::string kind = colon == std::string::npos ? "" : text.substr(0, colon);
  std::string value = colon == std::string::npos ? "" : text.substr(colon + 1);
  if (value.empty() || has_control_characters(value))
    fail(path, "expected \"cn:NAME\", \"email:ADDRESS\" or \"sha256:HEX\"");
  if (kind == "cn") return "cn:" + value;
  if (kind == "email") return "email:" + smtp::to_lower(value);
  if (kind == "sha256") {
    std::erase(value, ':');
    value = smtp::to_lower(value);
    if (value.size() != 64 || value.find_first_not_of("0123456789abcdef") != std::string::npos)
      fail(path, "expected a SHA-256 fingerprint of 64 hex digits");
    return "sha256:" + value;
  }
  fail(path, "expected \"cn:NAME\", \"email:ADDRESS\" or \"sha256:HEX\"");
}

std::vector<std::string> read_certificate_matches(const json& value, const std::string& path) {
  if (!value.is_array()) fail(path, "expected an array");
  std::vector<std::string> matches;
  for (std::size_t i = 0; i < value.size(); ++i)
    matches.push_back(read_certificate_match(value[i], path + "[" + std::to_string(i) + "]"));
  return matches;
}

int read_budget(const json& value, const std::string& path) {
  if (!value.is_number_integer() || value.get<long long>() < 0 || value.get<long long>() > 100000000)
    fail(path, "expected a whole number from 0 (no limit) to 100000000");
  return static_cast<int>(value.get<long long>());
}

user_record read_user(const json& value, const std::string& path) {
  if (!value.is_object()) fail(path, "expected an object");
  user_record user;
  for (const auto& [key, field] : value.items()) {
    const std::string field_path = path + "." + key;
    if (key == "name") user.name = read_name(field, field_path);
    else if (key == "password") user.password_hash = read_password_hash(field, field_path);
    else if (key == "cram_md5") user.cram_md5 = read_cram_md5(field, field_path);
    else if (key == "scram_sha256") user.scram_sha256 = read_scram_sha256(field, field_path);
    else if (key == "digest_md5") user.digest_md5 = read_digest_md5(field, field_path);
    else if (key == "senders") user.senders = read_senders(field, field_path);
    else if (key == "client_certificates") user.client_certificates = read_certificate_matches(field, field_path);
    else if (key == "relay_by_certificate") {
      if (!field.is_boolean()) fail(field_path, "expected true or false");
      user.relay_by_certificate = field.get<bool>();
    }
    else if (key == "message_budget") user.message_budget = read_budget(field, field_path);
    else if (key == "recipient_budget") user.recipient_budget = read_budget(field, field_path);
    else fail(field_path, "unknown key");
  }
  if (!value.contains("name")) fail(path + ".name", "is required");
  return user;
}

}  // namespace

user_db user_db::parse(const json& document) {
  if (!document.is_object()) fail("(top level)", "expected an object");
  for (const auto& [key, _] : document.items())
    if (key != "users") fail(key, "unknown key");
  const auto users = document.find("users");
  if (users == document.end()) fail("users", "is required");
  if (!users->is_array()) fail("users", "expected an array");

  static std::atomic<std::uint64_t> generations{0};
  user_db db;
  db.generation_ = ++generations;
  std::vector<const std::string*> usable_hashes;
  for (std::size_t i = 0; i < users->size(); ++i) {
    const std::string path = "users[" + std::to_string(i) + "]";
    user_record user = read_user((*users)[i], path);
    if (db.users_.contains(user.name)) fail(path + ".name", "duplicate user \"" + user.name + "\"");
    const std::string name = user.name;
    for (std::size_t j = 0; j < user.client_certificates.size(); ++j) {
      const auto [owner, added] = db.certificate_owners_.emplace(user.client_certificates[j], name);
      if (!added)
        fail(path + ".client_certificates[" + std::to_string(j) + "]",
             "already belongs to user \"" + owner->second + "\"");
    }
    db.message_budgets_ = db.message_budgets_ || user.message_budget.has_value();
    db.recipient_budgets_ = db.recipient_budgets_ || user.recipient_budget.has_value();
    const auto& stored = db.users_.emplace(name, std::move(user)).first->second;
    if (!stored.password_hash.empty() && !is_locked(stored.password_hash))
      usable_hashes.push_back(&stored.password_hash);
    if (stored.scram_sha256 && db.dummy_scram_iterations_ == scram_default_iterations)
      db.dummy_scram_iterations_ = stored.scram_sha256->iterations;
  }
  // One dummy per cost class; each real user stands for one share of the
  // unknown names, so unknown names cost what real users cost, in the same
  // proportions, even when users have hashes of different schemes.
  std::vector<std::string> classes;
  for (const std::string* hash : usable_hashes) {
    const std::string key = cost_class(*hash);
    auto known = std::find(classes.begin(), classes.end(), key);
    if (known == classes.end()) {
      classes.push_back(key);
      db.dummy_hashes_.push_back(make_dummy_hash(hash));
      known = classes.end() - 1;
    }
    db.dummy_for_user_.push_back(static_cast<std::size_t>(known - classes.begin()));
  }
  if (db.dummy_hashes_.empty()) {
    db.dummy_hashes_.push_back(make_dummy_hash(nullptr));
    db.dummy_for_user_.push_back(0);
  }
  if (!RAND_bytes(db.dummy_key_.data(), db.dummy_key_.size())) throw std::runtime_error("RAND_bytes failed");
  return db;
}

user_db user_db::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read the users file");
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error(path + ": cannot read the users file");

  json document;
  try {
    document = json::parse(text.str());
  } catch (const json::exception& e) {
    // what() starts with "[json.exception.parse_error.N] ", noise to an operator.
    std::string message = e.what();
    if (const auto end = message.find("] "); message.starts_with("[json.") && end != std::string::npos)
      message.erase(0, end + 2);
    throw std::runtime_error(path + ": " + message);
  }
  try {
    return parse(document);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

const user_record* user_db::find(std::string_view name) const {
  const auto it = users_.find(std::string(name));
  return it == users_.end() ? nullptr : &it->second;
}

const user_record* user_db::find_by_certificate(std::string_view sha256, std::span<const std::string> emails,
                                                std::string_view common_name) const {
  auto owner = [&](const std::string& key) -> const user_record* {
    const auto it = certificate_owners_.find(key);
    return it == certificate_owners_.end() ? nullptr : find(it->second);
  };
  if (!sha256.empty())
    if (const auto* user = owner("sha256:" + smtp::to_lower(sha256))) return user;
  for (const auto& email : emails)
    if (const auto* user = owner("email:" + smtp::to_lower(email))) return user;
  if (!common_name.empty())
    if (const auto* user = owner("cn:" + std::string(common_name))) return user;
  return nullptr;
}

bool user_db::verify_password(std::string_view user, std::string_view password) const {
  const user_record* record = find(user);
  const bool usable = record != nullptr && !record->password_hash.empty() && !is_locked(record->password_hash);
  // Always pay for one hash so that unknown, locked and password-less users
  // cannot be told apart from a wrong password by timing.
  const bool matches = verify_password_hash(password, usable ? std::string_view(record->password_hash)
                                                             : std::string_view(dummy_hash_for(user)));
  return usable && matches;
}

// The same unknown name always gets the same dummy (repeating a guess shows
// nothing new), and which one is secret (a keyed hash of the name).
const std::string& user_db::dummy_hash_for(std::string_view user) const {
  const auto digest = keyed_hash("crypt dummy", user);
  std::uint64_t pick = 0;
  for (std::size_t i = 0; i < 8; ++i) pick = (pick << 8) | digest[i];
  return dummy_hashes_[dummy_for_user_[pick % dummy_for_user_.size()]];
}

// Stands in for what unknown names lack: the same value every time a name
// is asked about, a different one per name and purpose, and unguessable.
std::array<std::uint8_t, 32> user_db::keyed_hash(std::string_view purpose, std::string_view user) const {
  std::array<std::uint8_t, 32> digest{};
  unsigned int length = 0;
  const std::string message = std::string(purpose) + '\0' + std::string(user);
  HMAC(EVP_sha256(), dummy_key_.data(), dummy_key_.size(),
       reinterpret_cast<const std::uint8_t*>(message.data()), message.size(), digest.data(), &length);
  return digest;
}

bool user_db::verify_cram_md5(std::string_view user, std::string_view challenge, std::string_view digest) const {
  const user_record* record = find(user);
  const bool usable = record != nullptr && record->cram_md5.has_value();
  // The digest's cost does not depend on the key, so any fixed context hides
  // whether the user exists.
  static constexpr cram_md5_context dummy_context{};
  const auto expected = cram_md5_digest(usable ? *record->cram_md5 : dummy_context, challenge);
  const bool matches = constant_time_equal(
      std::string_view(reinterpret_cast<const char*>(expected.data()), expected.size()), digest);
  return usable && matches;
}

std::size_t user_db::without_scram_secret() const noexcept {
  return static_cast<std::size_t>(std::count_if(
      users_.begin(), users_.end(), [](const auto& entry) { return !entry.second.scram_sha256; }));
}

scram_secret user_db::scram_secret_for(std::string_view user) const {
  if (const user_record* record = find(user); record != nullptr && record->scram_sha256)
    return *record->scram_sha256;
  // The same salt every time the name is asked for, and a stored key no one
  // knows a preimage of.
  scram_secret made_up;
  made_up.iterations = dummy_scram_iterations_;
  const auto salt = keyed_hash("scram salt", user);
  made_up.salt.assign(reinterpret_cast<const char*>(salt.data()), 16);
  made_up.stored_key = keyed_hash("scram stored key", user);
  made_up.server_key = keyed_hash("scram server key", user);
  return made_up;
}

std::array<std::uint8_t, 16> user_db::digest_md5_secret_for(std::string_view user) const {
  if (const user_record* record = find(user); record != nullptr && record->digest_md5) return *record->digest_md5;
  const auto keyed = keyed_hash("digest-md5", user);
  std::array<std::uint8_t, 16> made_up{};
  std::copy_n(keyed.begin(), made_up.size(), made_up.begin());
  return made_up;
}

bool user_db::sender_allowed(std::string_view user, std::string_view address) const {
  const user_record* record = find(user);
  if (record == nullptr) return false;
  if (record->senders.empty()) return true;
  const auto at = address.rfind('@');
  const std::string_view domain = at == std::string_view::npos ? std::string_view{} : address.substr(at + 1);
  return std::any_of(record->senders.begin(), record->senders.end(), [&](const std::string& allowed) {
    if (allowed.starts_with('@')) return !domain.empty() && iequals(std::string_view(allowed).substr(1), domain);
    return iequals(allowed, address);
  });
}

}  // namespace smtpguard::auth

// Server side of SASL (RFC 4954) and its base64. Input: [mechanism and
// initial-response flag] then client lines: the initial response (when
// flagged) and the answers to each challenge. Bit 0x8 of the first byte
// picks SCRAM-SHA-256 (with 0x10: -PLUS, on a connection whose tls-exporter
// data is "EXPORTED"; 0x20: -PLUS was offered), whose secret and server nonce
// are RFC 7677's, so the corpus can hold that RFC's whole exchange. Bit 0x40
// picks DIGEST-MD5 with RFC 2831's user, realm and nonce.
// The exchange must end in exactly one terminal step, never accept more
// input afterwards, and hand the verifier only credentials within the
// documented bounds.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "auth/scram_secret.hpp"
#include "fuzz_support.hpp"
#include "sasl/base64.hpp"
#include "sasl/exchange.hpp"
#include "sasl/mechanism.hpp"
#include "smtp/chars.hpp"

namespace {

namespace sasl = smtpguard::sasl;
using kind = sasl::step::kind;

// Fixed, so runs are reproducible; a real one comes from make_cram_md5_challenge.
constexpr std::string_view cram_challenge = "<1896.697170952@mx.example.test>";
constexpr std::string_view scram_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

// Derived once: 4096 PBKDF2 rounds per input would starve the fuzzer.
const smtpguard::auth::scram_secret& pencil() {
  static const auto secret = smtpguard::auth::make_scram_secret(
      "pencil", *sasl::base64_decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096);
  return secret;
}

void check_base64(std::string_view text) {
  const auto decoded = sasl::base64_decode(text);
  // Strict and canonical: one text per value, so a response cannot be
  // varied to slip past anything that compares encoded forms.
  if (decoded) FUZZ_CHECK(sasl::base64_encode(*decoded) == text);
  const std::string encoded = sasl::base64_encode(text);
  FUZZ_CHECK(encoded.size() % 4 == 0);
  const auto round_trip = sasl::base64_decode(encoded);
  FUZZ_CHECK(round_trip && *round_trip == text);
}

void check_credentials(const sasl::server_exchange& exchange) {
  const sasl::proof& p = exchange.credentials();
  if (const auto* password = std::get_if<sasl::password_proof>(&p)) {
    FUZZ_CHECK(exchange.which() == sasl::mechanism::plain || exchange.which() == sasl::mechanism::login);
    FUZZ_CHECK(!password->user.empty() && password->user.size() <= 255);
    FUZZ_CHECK(!password->password.empty() && password->password.size() <= 1024);
    FUZZ_CHECK(password->authzid.size() <= 255 && password->authzid != password->user);
    // crypt(3) stops at a NUL: a password with one could match a shorter one.
    FUZZ_CHECK(password->password.find('\0') == std::string::npos);
    FUZZ_CHECK(password->user.find('\0') == std::string::npos);
  } else if (const auto* cram = std::get_if<sasl::cram_md5_proof>(&p)) {
    FUZZ_CHECK(exchange.which() == sasl::mechanism::cram_md5);
    FUZZ_CHECK(cram->challenge == cram_challenge && cram->digest.size() == 16);
    FUZZ_CHECK(!cram->user.empty() && cram->user.size() <= 255 && cram->user.find('\0') == std::string::npos);
  } else if (const auto* scram = std::get_if<sasl::scram_proof>(&p)) {
    FUZZ_CHECK(exchange.which() == sasl::mechanism::scram_sha_256 ||
               exchange.which() == sasl::mechanism::scram_sha_256_plus);
    FUZZ_CHECK(!scram->user.empty() && scram->user.size() <= 255 &&
               scram->user.find('\0') == std::string::npos);
    FUZZ_CHECK(scram->authzid.size() <= 255 && scram->authzid != scram->user);
    // Only RFC 7677's own user and proof can verify against its secret.
    if (scram->verified) FUZZ_CHECK(scram->user == "user");
  } else if (const auto* digest = std::get_if<sasl::digest_md5_proof>(&p)) {
    FUZZ_CHECK(exchange.which() == sasl::mechanism::digest_md5);
    FUZZ_CHECK(!digest->user.empty() && digest->user.size() <= 255 && digest->user.find('\0') == std::string::npos);
    FUZZ_CHECK(digest->authzid != digest->user);
    if (digest->verified) FUZZ_CHECK(digest->user == "chris");
  } else {
    const auto& external = std::get<sasl::external_proof>(p);
    FUZZ_CHECK(exchange.which() == sasl::mechanism::external);
    FUZZ_CHECK(external.user.size() <= 255 && external.user.find('\0') == std::string::npos);
  }
}

bool same_proof(const sasl::proof& a, const sasl::proof& b) {
  if (a.index() != b.index()) return false;
  if (const auto* x = std::get_if<sasl::password_proof>(&a)) {
    const auto& y = std::get<sasl::password_proof>(b);
    return x->authzid == y.authzid && x->user == y.user && x->password == y.password;
  }
  if (const auto* x = std::get_if<sasl::cram_md5_proof>(&a)) {
    const auto& y = std::get<sasl::cram_md5_proof>(b);
    return x->user == y.user && x->challenge == y.challenge && x->digest == y.digest;
  }
  if (const auto* x = std::get_if<sasl::digest_md5_proof>(&a)) {
    const auto& y = std::get<sasl::digest_md5_proof>(b);
    return x->user == y.user && x->authzid == y.authzid && x->verified == y.verified;
  }
  if (const auto* x = std::get_if<sasl::scram_proof>(&a)) {
    const auto& y = std::get<sasl::scram_proof>(b);
    return x->user == y.user && x->authzid == y.authzid && x->verified == y.verified;
  }
  return std::get<sasl::external_proof>(a).user == std::get<sasl::external_proof>(b).user;
}

void check_challenge(const sasl::server_exchange& exchange, const sasl::step& s) {
  FUZZ_CHECK(s.text.find_first_of("\r\n") == std::string::npos);
  if (exchange.which() == sasl::mechanism::cram_md5 && !s.text.empty()) {
    const auto decoded = sasl::base64_decode(s.text);
    FUZZ_CHECK(decoded && *decoded == cram_challenge);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static constexpr sasl::mechanism mechanisms[] = {sasl::mechanism::plain, sasl::mechanism::login,
                                                   sasl::mechanism::cram_md5, sasl::mechanism::external};
  const sasl::mechanism scram =
      (data[0] & 0x10) ? sasl::mechanism::scram_sha_256_plus : sasl::mechanism::scram_sha_256;
  const sasl::mechanism mechanism = (data[0] & 0x40) ? sasl::mechanism::digest_md5
                                    : (data[0] & 0x8) ? scram
                                                      : mechanisms[data[0] & 0x3];
  const bool plus_offered = data[0] & 0x20;
  const bool has_initial_response = data[0] & 0x4;
  const auto lines = smtpguard::fuzz::split_lines(smtpguard::fuzz::as_view(data + 1, size - 1));

  for (const auto line : lines) {
    check_base64(line);
    if (const auto m = sasl::parse_mechanism(line)) FUZZ_CHECK(smtpguard::smtp::iequals(sasl::mechanism_name(*m), line));
  }

  sasl::scram_binding binding{false, plus_offered, [](std::string_view type) -> std::optional<std::string> {
                                 if (type == "tls-exporter") return std::string("EXPORTED");
                                 return std::nullopt;
                               }};
  sasl::digest_md5_setup digest{
      [](std::string_view) { return sasl::make_digest_md5_secret("chris", "elwood.innosoft.com", "secret"); },
      "elwood.innosoft.com", "OA6MG9tEQGm2hh"};
  sasl::server_exchange exchange(mechanism, std::string(cram_challenge),
                                 {[](std::string_view) { return pencil(); }, std::string(scram_nonce),
                                  std::move(binding)},
                                 std::move(digest));
  std::size_t next = 0;
  std::string_view initial;
  if (has_initial_response && next < lines.size()) initial = lines[next++];
  sasl::step s = exchange.start(initial, has_initial_response);
  // Out of order: refused without disturbing the exchange in progress.
  FUZZ_CHECK(exchange.start("", false).what == kind::malformed);

  std::size_t responses = 0;
  while (s.what == kind::challenge && next < lines.size()) {
    check_challenge(exchange, s);
    s = exchange.respond(lines[next++]);
    ++responses;
  }
  if (s.what == kind::challenge) {
    check_challenge(exchange, s);
    return 0;
  }
  if (s.what == kind::complete) check_credentials(exchange);
  // "*" cancels an answer to a challenge; as an initial response it is bad base64.
  if (s.what == kind::cancelled) FUZZ_CHECK(responses > 0 && lines[next - 1] == "*");

  // Terminal: nothing more is accepted, and what was gathered stays put.
  const sasl::proof before = exchange.credentials();
  FUZZ_CHECK(exchange.respond("*").what == kind::malformed);
  FUZZ_CHECK(exchange.respond("dGVzdA==").what == kind::malformed);
  FUZZ_CHECK(same_proof(exchange.credentials(), before));
  return 0;
}

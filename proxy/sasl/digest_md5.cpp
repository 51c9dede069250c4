#include "sasl/digest_md5.hpp"

#include <map>
#include <stdexcept>
#include <utility>

#include <openssl/md5.h>
#include <openssl/mem.h>

#include "auth/hex.hpp"
#include "smtp/chars.hpp"

namespace smtpguard::sasl {
namespace {

constexpr std::size_t max_identity_size = 255;

std::string md5_hex(std::string_view text) {
  std::uint8_t digest[MD5_DIGEST_LENGTH];
  MD5(reinterpret_cast<const std::uint8_t*>(text.data()), text.size(), digest);
  return auth::to_hex(digest);
}

/// UTF-8 -> ISO 8859-1, or nullopt when a character has no Latin-1 form.
std::optional<std::string> to_latin1(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if ((c == 0xC2 || c == 0xC3) && i + 1 < text.size() &&
               (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) {
      out += static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(text[++i]) & 0x3F));
    } else {
      return std::nullopt;
    }
  }
  return out;
}

bool token_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u <= 32 || u >= 127) return false;
  return std::string_view("()<>@,;:\\\"/[]?={}").find(c) == std::string_view::npos;
}

void skip_space(std::string_view text, std::size_t& at) {
  while (at < text.size() && (text[at] == ' ' || text[at] == '\t' || text[at] == '\r' || text[at] == '\n')) ++at;
}

/// RFC 2831 section 7.1: name=value pairs, values tokens or quoted strings,
/// separated by commas (empty elements allowed). Names are case-insensitive;
/// a name given twice is refused, as no directive we read may repeat.
std::optional<std::map<std::string, std::string>> parse_directives(std::string_view text) {
  std::map<std::string, std::string> out;
  std::size_t at = 0;
  for (;;) {
    skip_space(text, at);
    while (at < text.size() && text[at] == ',') {
      ++at;
      skip_space(text, at);
    }
    if (at == text.size()) return out;
    const std::size_t name_start = at;
    while (at < text.size() && token_char(text[at])) ++at;
    if (at == name_start) return std::nullopt;
    std::string name = smtp::to_lower(text.substr(name_start, at - name_start));
    skip_space(text, at);
    if (at == text.size() || text[at] != '=') return std::nullopt;
    ++at;
    skip_space(text, at);
    std::string value;
    if (at < text.size() && text[at] == '"') {
      ++at;
      for (;;) {
        if (at == text.size()) return std::nullopt;
        char c = text[at++];
        if (c == '"') break;
        if (c == '\\') {
          if (at == text.size()) return std::nullopt;
          c = text[at++];
        }
        value += c;
      }
    } else {
      const std::size_t value_start = at;
      while (at < text.size() && token_char(text[at])) ++at;
      if (at == value_start) return std::nullopt;
      value = text.substr(value_start, at - value_start);
    }
    if (!out.emplace(std::move(name), std::move(value)).second) return std::nullopt;
    skip_space(text, at);
    if (at < text.size() && text[at] != ',') return std::nullopt;
  }
}

bool lower_hex(std::string_view text, std::size_t size) {
  return text.size() == size && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

}  // namespace

digest_md5_secret make_digest_md5_secret(std::string_view user, std::string_view realm, std::string_view password) {
  const auto u = to_latin1(user);
  const auto r = to_latin1(realm);
  const auto p = to_latin1(password);
  const bool latin1 = u && r && p;
  std::string text = latin1 ? *u : std::string(user);
  text += ':';
  text += latin1 ? *r : std::string(realm);
  text += ':';
  text += latin1 ? *p : std::string(password);
  digest_md5_secret secret{};
  MD5(reinterpret_cast<const std::uint8_t*>(text.data()), text.size(), secret.data());
  OPENSSL_cleanse(text.data(), text.size());
  return secret;
}

digest_md5_server::digest_md5_server(secret_lookup lookup, std::string realm, std::string nonce, std::string service)
    : lookup_(std::move(lookup)), realm_(std::move(realm)), nonce_(std::move(nonce)), service_(std::move(service)) {
  if (nonce_.empty() || nonce_.find_first_of("\"\\,") != std::string::npos)
    throw std::invalid_argument("DIGEST-MD5 needs a nonce without quotes, backslashes or commas");
}

std::string digest_md5_server::challenge() const {
  std::string text;
  if (!realm_.empty()) {
    text += "realm=\"";
    for (const char c : realm_) {
      if (c == '"' || c == '\\') text += '\\';
      text += c;
    }
    text += "\",";
  }
  text += "nonce=\"" + nonce_ + "\",qop=\"auth\",charset=utf-8,algorithm=md5-sess";
  return text;
}

digest_md5_server::verdict digest_md5_server::respond(std::string_view response) {
  if (answered_) return verdict::malformed;
  answered_ = true;
  const auto directives = parse_directives(response);
  if (!directives) return verdict::malformed;
  auto get = [&](const char* name) -> const std::string* {
    const auto it = directives->find(name);
    return it == directives->end() ? nullptr : &it->second;
  };
  const std::string* username = get("username");
  const std::string* realm = get("realm");
  const std::string* nonce = get("nonce");
  const std::string* cnonce = get("cnonce");
  const std::string* nc = get("nc");
  const std::string* qop = get("qop");
  const std::string* uri = get("digest-uri");
  const std::string* client_response = get("response");
  const std::string* charset = get("charset");
  const std::string* authzid = get("authzid");
  if (!username || username->empty() || username->size() > max_identity_size || !nonce || !cnonce ||
      cnonce->empty() || !nc || !uri || !client_response)
    return verdict::malformed;
  if (username->find('\0') != std::string::npos || (authzid && authzid->size() > max_identity_size))
    return verdict::malformed;
  // One response per nonce: nc counts reuses of it, which we never allow.
  if (*nonce != nonce_ || *nc != "00000001") return verdict::malformed;
  if (qop && *qop != "auth") return verdict::malformed;  // no security layer was offered
  if (charset && !smtp::iequals(*charset, "utf-8")) return verdict::malformed;
  if (realm && *realm != realm_) return verdict::malformed;
  if (!uri->starts_with(service_ + "/") || uri->size() == service_.size() + 1) return verdict::malformed;
  if (!lower_hex(*client_response, 32)) return verdict::malformed;

  user_ = *username;
  if (authzid && !authzid->empty() && *authzid != user_) authzid_ = *authzid;
  const digest_md5_secret secret = lookup_(user_);
  // RFC 2831 section 2.1.2.1, for qop "auth".
  std::string a1(reinterpret_cast<const char*>(secret.data()), secret.size());
  a1 += ':' + *nonce + ':' + *cnonce;
  if (authzid) a1 += ':' + *authzid;
  const std::string ha1 = md5_hex(a1);
  OPENSSL_cleanse(a1.data(), a1.size());
  const std::string common = ha1 + ':' + *nonce + ':' + *nc + ':' + *cnonce + ":auth:";
  const std::string expected = md5_hex(common + md5_hex("AUTHENTICATE:" + *uri));
  if (CRYPTO_memcmp(expected.data(), client_response->data(), expected.size()) != 0)
    return verdict::wrong_response;
  rspauth_ = "rspauth=" + md5_hex(common + md5_hex(":" + *uri));
  return verdict::verified;
}

}  // namespace smtpguard::sasl

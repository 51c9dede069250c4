#include "auth/passwords.hpp"

#include <crypt.h>

#include <cstring>
#include <memory>
#include <stdexcept>

#include <openssl/md5.h>
#include <openssl/mem.h>

#include "auth/hex.hpp"

namespace smtpguard::auth {
namespace {

constexpr std::size_t hmac_block_size = MD5_CBLOCK;

// libxcrypt's bcrypt default (count 0) is cost 5, far below current advice;
// cost 10 lands near yescrypt's default in time per hash.
constexpr unsigned long bcrypt_cost = 10;

// struct crypt_data is about 32 KiB: too big for the stack of a coroutine
// or a small worker thread, so it lives on the heap and is wiped on the way
// out (it holds the phrase).
struct crypt_scratch {
  crypt_scratch() : data(std::make_unique<crypt_data>()) {}
  ~crypt_scratch() { OPENSSL_cleanse(data.get(), sizeof(crypt_data)); }
  crypt_scratch(const crypt_scratch&) = delete;
  crypt_scratch& operator=(const crypt_scratch&) = delete;
  std::unique_ptr<crypt_data> data;
};

// Locked accounts conventionally carry a '!' or '*' prefix; libxcrypt's own
// failure tokens also start with '*'.
bool is_unusable_hash(std::string_view hash) {
  return hash.empty() || hash.front() == '*' || hash.front() == '!';
}

void store_le32(std::uint8_t* out, std::uint32_t v) {
  out[0] = static_cast<std::uint8_t>(v);
  out[1] = static_cast<std::uint8_t>(v >> 8);
  out[2] = static_cast<std::uint8_t>(v >> 16);
  out[3] = static_cast<std::uint8_t>(v >> 24);
}

std::uint32_t load_le32(const std::uint8_t* in) {
  return static_cast<std::uint32_t>(in[0]) | static_cast<std::uint32_t>(in[1]) << 8 |
         static_cast<std::uint32_t>(in[2]) << 16 | static_cast<std::uint32_t>(in[3]) << 24;
}

// The MD5 state after one compression of the padded key block, i.e. the
// HMAC inner (pad 0x36) or outer (pad 0x5c) context of RFC 2104 section 4.
void key_block_state(const std::uint8_t (&key)[hmac_block_size], std::uint8_t pad, std::uint8_t* out) {
  std::uint8_t block[hmac_block_size];
  for (std::size_t i = 0; i < hmac_block_size; ++i) block[i] = static_cast<std::uint8_t>(key[i] ^ pad);
  MD5_CTX ctx;
  MD5_Init(&ctx);
  MD5_Transform(&ctx, block);
  for (std::size_t i = 0; i < 4; ++i) store_le32(out + 4 * i, ctx.h[i]);
  OPENSSL_cleanse(block, sizeof block);
  OPENSSL_cleanse(&ctx, sizeof ctx);
}

// Resumes an MD5 computation that has consumed exactly one 64-byte block.
MD5_CTX resume_after_one_block(const std::uint8_t* state) {
  MD5_CTX ctx;
  std::memset(&ctx, 0, sizeof ctx);
  for (std::size_t i = 0; i < 4; ++i) ctx.h[i] = load_le32(state + 4 * i);
  ctx.Nl = hmac_block_size * 8;  // length in bits, for the final padding
  ctx.Nh = 0;
  ctx.num = 0;
  return ctx;
}

}  // namespace

std::optional<hash_scheme> parse_hash_scheme(std::string_view name) {
  if (name == "yescrypt") return hash_scheme::yescrypt;
  if (name == "bcrypt") return hash_scheme::bcrypt;
  if (name == "sha512-crypt") return hash_scheme::sha512_crypt;
  return std::nullopt;
}

std::string hash_password(std::string_view password, hash_scheme scheme) {
  if (password.find('\0') != std::string_view::npos)
    throw std::runtime_error("a password cannot contain a NUL byte");

  const char* prefix = "$y$";
  unsigned long count = 0;  // the library's default cost
  switch (scheme) {
    case hash_scheme::yescrypt: prefix = "$y$"; break;
    case hash_scheme::bcrypt: prefix = "$2b$"; count = bcrypt_cost; break;
    case hash_scheme::sha512_crypt: prefix = "$6$"; break;
  }

  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  // Null rbytes: libxcrypt reads the salt from the OS entropy source.
  const char* salt = crypt_gensalt_rn(prefix, count, nullptr, 0, setting, sizeof setting);
  if (salt == nullptr || salt[0] == '*') throw std::runtime_error("crypt_gensalt_rn failed");

  crypt_scratch scratch;
  std::string phrase(password);
  const char* hash = crypt_rn(phrase.c_str(), salt, scratch.data.get(), sizeof(crypt_data));
  std::string result = hash != nullptr ? hash : "";
  OPENSSL_cleanse(phrase.data(), phrase.size());
  if (is_unusable_hash(result)) throw std::runtime_error("crypt_rn failed");
  return result;
}

bool verify_password_hash(std::string_view password, std::string_view crypt_hash) {
  if (is_unusable_hash(crypt_hash)) return false;
  // crypt(3) works on C strings: anything after a NUL would be ignored, so a
  // password with one must never match, though it still pays for the hash.
  const bool has_nul = password.find('\0') != std::string_view::npos;
  std::string phrase(password);
  const std::string setting(crypt_hash);

  crypt_scratch scratch;
  const char* hash = crypt_rn(phrase.c_str(), setting.c_str(), scratch.data.get(), sizeof(crypt_data));
  OPENSSL_cleanse(phrase.data(), phrase.size());
  if (hash == nullptr || hash[0] == '*') return false;
  return constant_time_equal(hash, crypt_hash) && !has_nul;
}

cram_md5_context make_cram_md5_context(std::string_view password) {
  // RFC 2104: keys longer than the block are replaced by their digest.
  std::uint8_t key[hmac_block_size] = {};
  if (password.size() > hmac_block_size)
    MD5(reinterpret_cast<const std::uint8_t*>(password.data()), password.size(), key);
  else
    std::memcpy(key, password.data(), password.size());

  // Dovecot's layout: outer state words first, then inner.
  cram_md5_context ctx{};
  key_block_state(key, 0x5c, ctx.data());
  key_block_state(key, 0x36, ctx.data() + 16);
  OPENSSL_cleanse(key, sizeof key);
  return ctx;
}

std::string cram_md5_context_to_hex(const cram_md5_context& ctx) { return to_hex(ctx); }

std::optional<cram_md5_context> cram_md5_context_from_hex(std::string_view hex) {
  cram_md5_context ctx{};
  if (!from_hex(hex, ctx)) return std::nullopt;
  return ctx;
}

std::array<std::uint8_t, 16> cram_md5_digest(const cram_md5_context& ctx, std::string_view challenge) {
  std::array<std::uint8_t, 16> inner{};
  MD5_CTX md5 = resume_after_one_block(ctx.data() + 16);
  MD5_Update(&md5, challenge.data(), challenge.size());
  MD5_Final(inner.data(), &md5);

  std::array<std::uint8_t, 16> digest{};
  md5 = resume_after_one_block(ctx.data());
  MD5_Update(&md5, inner.data(), inner.size());
  MD5_Final(digest.data(), &md5);
  return digest;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace smtpguard::auth

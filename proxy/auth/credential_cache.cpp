#include "auth/credential_cache.hpp"

#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>

namespace smtpguard::auth {

credential_cache::credential_cache(std::chrono::seconds ttl, std::size_t max_entries)
    : ttl_(ttl.count()), max_entries_(max_entries) {
  if (!RAND_bytes(key_.data(), key_.size())) throw std::runtime_error("RAND_bytes failed");
}

void credential_cache::set_ttl(std::chrono::seconds ttl) { ttl_.store(ttl.count()); }

// The lengths are part of the MAC input, so ("ab", "c") and ("a", "bc") differ.
std::string credential_cache::key(std::uint64_t generation, std::string_view user,
                                  std::string_view password) const {
  bssl::ScopedHMAC_CTX ctx;
  std::uint8_t out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  const auto feed = [&](const void* data, std::size_t size) {
    HMAC_Update(ctx.get(), static_cast<const std::uint8_t*>(data), size);
  };
  const std::uint64_t sizes[2] = {user.size(), password.size()};
  if (!HMAC_Init_ex(ctx.get(), key_.data(), key_.size(), EVP_sha256(), nullptr)) return {};
  feed(&generation, sizeof generation);
  feed(sizes, sizeof sizes);
  feed(user.data(), user.size());
  feed(password.data(), password.size());
  if (!HMAC_Final(ctx.get(), out, &length)) return {};
  return std::string(reinterpret_cast<const char*>(out), length);
}

bool credential_cache::verified(const std::string& key, clock::time_point now) {
  if (ttl_.load() <= 0 || key.empty()) return false;
  std::lock_guard lock(mutex_);
  const auto it = expiry_.find(key);
  if (it == expiry_.end()) return false;
  if (now < it->second) return true;
  expiry_.erase(it);
  return false;
}

void credential_cache::remember(std::string key, clock::time_point now) {
  const std::chrono::seconds ttl(ttl_.load());
  if (ttl.count() <= 0 || key.empty()) return;
  std::lock_guard lock(mutex_);
  if (expiry_.size() >= max_entries_) {
    std::erase_if(expiry_, [now](const auto& entry) { return entry.second <= now; });
    if (expiry_.size() >= max_entries_) expiry_.clear();  // bounded memory beats a perfect hit rate
  }
  expiry_[std::move(key)] = now + ttl;
}

}  // namespace smtpguard::auth

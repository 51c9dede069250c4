#include "crypto_floor.hpp"

#include <openssl/aead.h>
#include <openssl/curve25519.h>
#include <openssl/ecdsa.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

#include "ssl_headers.hpp"

namespace smtpguard::bench {
namespace {

using clock_type = std::chrono::steady_clock;

/// Runs `op` in batches until `seconds` have passed; microseconds per call.
template <typename Op>
double time_per_call(double seconds, Op op) {
  const auto limit = std::chrono::duration<double>(seconds);
  const auto start = clock_type::now();
  std::uint64_t calls = 0;
  do {
    for (int i = 0; i < 64; ++i) op();
    calls += 64;
  } while (clock_type::now() - start < limit);
  return std::chrono::duration<double, std::micro>(clock_type::now() - start).count() /
         static_cast<double>(calls);
}

double round1(double x) { return std::round(x * 10) / 10; }

}  // namespace

std::string crypto_floor_json(double seconds) {
  const double each = seconds / 4;

  // ECDSA P-256, as the server signs its CertificateVerify with the bench's certificate key type.
  std::unique_ptr<EC_KEY, decltype(&EC_KEY_free)> key(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1),
                                                      EC_KEY_free);
  if (!key || !EC_KEY_generate_key(key.get())) throw std::runtime_error("P-256 key generation failed");
  std::array<std::uint8_t, 32> digest{};
  std::vector<std::uint8_t> signature(ECDSA_size(key.get()));
  const double sign_us = time_per_call(each, [&] {
    unsigned int length = 0;
    if (!ECDSA_sign(0, digest.data(), digest.size(), signature.data(), &length, key.get()))
      throw std::runtime_error("ECDSA_sign failed");
    digest[0] = signature[8];  // each signature over a different digest
  });

  // X25519: the server's key share (key generation) and the shared secret.
  std::array<std::uint8_t, 32> peer_public{}, peer_private{}, own_public{}, own_private{}, shared{};
  X25519_keypair(peer_public.data(), peer_private.data());
  const double keygen_us =
      time_per_call(each, [&] { X25519_keypair(own_public.data(), own_private.data()); });
  const double shared_us = time_per_call(each, [&] {
    if (!X25519(shared.data(), own_private.data(), peer_public.data()))
      throw std::runtime_error("X25519 failed");
  });

  // AES-128-GCM over full 16 KiB records, as a bulk transfer sends them.
  std::array<std::uint8_t, 16> aes_key{};
  std::array<std::uint8_t, 12> nonce{};
  std::vector<std::uint8_t> record(16384), sealed(16384 + EVP_AEAD_max_overhead(EVP_aead_aes_128_gcm()));
  EVP_AEAD_CTX aead;
  if (!EVP_AEAD_CTX_init(&aead, EVP_aead_aes_128_gcm(), aes_key.data(), aes_key.size(),
                         EVP_AEAD_DEFAULT_TAG_LENGTH, nullptr))
    throw std::runtime_error("AES-128-GCM setup failed");
  const double seal_us = time_per_call(each, [&] {
    std::size_t out_len = 0;
    ++nonce[0];
    EVP_AEAD_CTX_seal(&aead, sealed.data(), &out_len, sealed.size(), nonce.data(), nonce.size(),
                      record.data(), record.size(), nullptr, 0);
  });
  EVP_AEAD_CTX_cleanup(&aead);

  const nlohmann::json out = {
      {"library", "BoringSSL"},
      {"ecdsa_p256_sign_us", round1(sign_us)},
      {"x25519_keygen_us", round1(keygen_us)},
      {"x25519_shared_us", round1(shared_us)},
      {"aes_128_gcm_mb_per_s", std::round(16384 / seal_us)},
      // A full TLS 1.3 handshake with an ECDSA certificate: one signature, one
      // key share, one shared secret; a resumed one (psk_dhe_ke) skips the signature.
      {"full_handshake_us", round1(sign_us + keygen_us + shared_us)},
      {"resumed_handshake_us", round1(keygen_us + shared_us)},
  };
  return out.dump();
}

}  // namespace smtpguard::bench

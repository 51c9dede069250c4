#include "tls/certificate_dates.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>

#include "tls/boringssl.hpp"

namespace smtpguard::tls {
namespace {

std::optional<std::int64_t> unix_time(const ASN1_TIME* time) {
  bssl::UniquePtr<ASN1_TIME> epoch(ASN1_TIME_set(nullptr, 0));
  int days = 0;
  int seconds = 0;
  if (!epoch || !time || !ASN1_TIME_diff(&days, &seconds, epoch.get(), time)) return std::nullopt;
  return std::int64_t{days} * 86400 + seconds;
}

std::vector<bssl::UniquePtr<X509>> read_pem_certificates(const std::string& path, bool first_only) {
  std::vector<bssl::UniquePtr<X509>> out;
  bssl::UniquePtr<BIO> bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) {
    ERR_clear_error();
    return out;
  }
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    out.emplace_back(cert);
    if (first_only) break;
  }
  ERR_clear_error();
  return out;
}

std::optional<certificate_dates> dates_of(const std::string& role, const std::string& file, bool leaf_only) {
  const auto certificates = read_pem_certificates(file, leaf_only);
  if (certificates.empty()) return std::nullopt;
  certificate_dates dates{role, file, std::numeric_limits<std::int64_t>::min(),
                          std::numeric_limits<std::int64_t>::max()};
  for (const auto& cert : certificates) {
    const auto before = unix_time(X509_get0_notBefore(cert.get()));
    const auto after = unix_time(X509_get0_notAfter(cert.get()));
    if (!before || !after) return std::nullopt;
    dates.not_before = std::max(dates.not_before, *before);
    dates.not_after = std::min(dates.not_after, *after);
  }
  return dates;
}

}  // namespace

std::vector<certificate_dates> configured_certificate_dates(const tls_config& config) {
  std::vector<certificate_dates> out;
  for (const auto& certificate : config.certificates) {
    if (auto dates = dates_of("server", certificate.cert, true)) out.push_back(std::move(*dates));
  }
  if (!config.client_certificates.ca.empty()) {
    if (auto dates = dates_of("client_ca", config.client_certificates.ca, false)) out.push_back(std::move(*dates));
  }
  return out;
}

std::optional<std::string> invalid_served_certificate(const std::vector<certificate_dates>& dates,
                                                      std::int64_t now) {
  for (const auto& d : dates) {
    if (d.role != "server") continue;
    if (now >= d.not_after) return d.file + " expired";
    if (now < d.not_before) return d.file + " not yet valid";
  }
  return std::nullopt;
}

}  // namespace smtpguard::tls

#include "tls/certificate_dates.hpp"

#include <stdexcept>

#include "tls/boringssl.hpp"
#include "tls/client_verify.hpp"

namespace smtpguard::tls {
namespace {

std::optional<std::int64_t> unix_time(const ASN1_TIME* time) {
  bssl::UniquePtr<ASN1_TIME> epoch(ASN1_TIME_set(nullptr, 0));
  int days = 0;
  int seconds = 0;
  if (!epoch || !time || !ASN1_TIME_diff(&days, &seconds, epoch.get(), time)) return std::nullopt;
  return std::int64_t{days} * 86400 + seconds;
}

void add_dates(const std::string& role, const std::string& file, bool leaf_only,
               std::vector<certificate_dates>& out) {
  std::vector<bssl::UniquePtr<X509>> certificates;
  try {
    certificates = read_certificates(file);
  } catch (const std::runtime_error&) {
    ERR_clear_error();
    return;  // loading the TLS context reports it
  }
  if (leaf_only) certificates.resize(1);
  for (const auto& cert : certificates) {
    const auto before = unix_time(X509_get0_notBefore(cert.get()));
    const auto after = unix_time(X509_get0_notAfter(cert.get()));
    if (!before || !after) continue;
    out.push_back({role, file, rfc2253(X509_get_subject_name(cert.get())), *before, *after});
  }
}

}  // namespace

std::vector<certificate_dates> configured_certificate_dates(const tls_config& config) {
  std::vector<certificate_dates> out;
  for (const auto& certificate : config.certificates) add_dates("server", certificate.cert, true, out);
  if (!config.client_certificates.ca.empty()) add_dates("client_ca", config.client_certificates.ca, false, out);
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

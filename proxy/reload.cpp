#include "reload.hpp"

#include <sys/stat.h>

namespace smtpguard {

file_watch::file_watch(std::vector<std::string> paths) : paths_(std::move(paths)), last_(snapshot()) {}

std::vector<file_watch::seen> file_watch::snapshot() const {
  std::vector<seen> out;
  out.reserve(paths_.size());
  for (const auto& path : paths_) {
    struct stat st {};
    seen s;
    if (::stat(path.c_str(), &st) == 0) {
      s.device = st.st_dev;
      s.inode = st.st_ino;
      s.size = st.st_size;
      s.modified_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    }
    out.push_back(s);
  }
  return out;
}

bool file_watch::changed() {
  auto now = snapshot();
  if (now == last_) return false;
  last_ = std::move(now);
  return true;
}

std::vector<std::string> reloadable_files(const config& settings) {
  std::vector<std::string> files{settings.auth.users_file};
  for (const auto& c : settings.tls.certificates) {
    files.push_back(c.cert);
    files.push_back(c.key);
  }
  const auto& client = settings.tls.client_certificates;
  if (!client.ca.empty()) files.push_back(client.ca);
  files.insert(files.end(), client.crl.begin(), client.crl.end());
  return files;
}

}  // namespace smtpguard

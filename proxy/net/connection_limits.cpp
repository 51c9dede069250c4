#include "net/connection_limits.hpp"

namespace smtpguard::net {

std::string client_key(const asio::ip::address& address) {
  if (address.is_v4()) return address.to_string();
  const auto v6 = address.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
  auto bytes = v6.to_bytes();
  for (std::size_t i = 8; i < bytes.size(); ++i) bytes[i] = 0;
  return asio::ip::address_v6(bytes).to_string() + "/64";
}

connection_limits::slot::~slot() {
  if (owner_) owner_->release(key_);
}

admission connection_limits::try_acquire(const std::string& key, slot& out) {
  std::lock_guard lock(mutex_);
  if (total_ >= max_total_) return admission::total_limit;
  auto& count = per_client_[key];
  if (count >= max_per_client_) return admission::per_ip_limit;
  ++count;
  ++total_;
  out.owner_ = this;
  out.key_ = key;
  return admission::admitted;
}

void connection_limits::release(const std::string& key) {
  std::lock_guard lock(mutex_);
  --total_;
  const auto it = per_client_.find(key);
  if (it != per_client_.end() && --it->second == 0) per_client_.erase(it);
}

void connection_limits::set_limits(std::size_t max_total, std::size_t max_per_client) {
  std::lock_guard lock(mutex_);
  max_total_ = max_total;
  max_per_client_ = max_per_client;
}

}  // namespace smtpguard::net

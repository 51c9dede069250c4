#include "net/line_io.hpp"

#include <memory>

namespace smtpguard::net {

std::span<char> read_buffer() {
  // Large reads mean few system calls and few TLS calls per message.
  constexpr std::size_t size = 64 * 1024;
  thread_local std::unique_ptr<char[]> buffer;
  if (!buffer) buffer.reset(new char[size]);
  return {buffer.get(), size};
}

}  // namespace smtpguard::net

#pragma once
// BoringSSL and Asio's SSL layer, seen as system headers (they are not clean
// under the project's warning flags).
#pragma GCC system_header

#include "tls/boringssl.hpp"

#include <openssl/digest.h>
#include <openssl/hmac.h>

#include <asio/ssl.hpp>

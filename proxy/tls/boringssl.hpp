#pragma once
// BoringSSL's headers, seen as system headers. They are not clean under this
// project's warning flags (C casts in inline helpers and macros, an anonymous
// struct in sha.h). Files that include Asio's SSL headers first get the same
// effect through Asio; everything else includes BoringSSL through here.
#pragma GCC system_header

#include <openssl/base.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

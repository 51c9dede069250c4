// Asio is header-only by default; compiling it once here keeps every other
// translation unit light (ASIO_SEPARATE_COMPILATION).
#include <asio/impl/src.hpp>
#include <asio/ssl/impl/src.hpp>

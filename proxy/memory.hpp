#pragma once
// Giving memory back from long-lived strings.
#include <string>

namespace smtpguard {

/// Empties `s` and frees its heap block. `s = std::string()` and `s.clear()`
/// do not: libstdc++ keeps the block and copies the short string into it, so
/// an idle connection would go on holding its largest message ever.
inline void release(std::string& s) noexcept { std::string().swap(s); }

}  // namespace smtpguard

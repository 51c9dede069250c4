#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "smtp/local_domains.hpp"

namespace smtpguard::smtp {
namespace {

TEST(smtp_local_domains, recipients) {
  const std::vector<std::string> domains{"example.org", ".lists.example.net", "EXAMPLE.COM."};
  struct row {
    const char* mailbox;
    bool local;
  };
  for (const row& r : {
           row{"alice@example.org", true},
           row{"alice@EXAMPLE.org", true},
           row{"alice@example.org.", true},
           row{"alice@example.com", true},           // the listed trailing dot is ignored
           row{"alice@sub.example.org", false},      // exact entry: no subdomains
           row{"alice@badexample.org", false},
           row{"alice@example.org.evil.test", false},
           row{"dev@a.lists.example.net", true},     // ".domain": subdomains
           row{"dev@a.b.lists.example.net", true},
           row{"dev@lists.example.net", false},      // ... but not the domain itself
           row{"dev@xlists.example.net", false},
           row{"bob@elsewhere.test", false},
           row{"\"a@example.org\"@elsewhere.test", false},  // the domain follows the last '@'
           row{"alice@", false},
           row{"alice@[192.0.2.1]", false},
           row{"postmaster", true},                  // RFC 5321 4.5.1
           row{"Postmaster", true},
           row{"abuse", false},
       })
    EXPECT_EQ(local_recipient(r.mailbox, domains), r.local) << r.mailbox;
  EXPECT_FALSE(local_recipient("alice@example.org", {}));
}

TEST(smtp_local_domains, valid_entries) {
  for (const char* good : {"example.org", ".example.org", "example.org.", "a-b.example", "xn--bcher-kva.example",
                           "b\xC3\xBC" "cher.example", "localhost"})
    EXPECT_TRUE(valid_local_domain(good)) << good;
  for (const char* bad : {"", ".", "..", "example..org", "-example.org", "example-.org", "exa mple.org",
                          "[192.0.2.1]", "alice@example.org", "*.example.org", "example.org/24"})
    EXPECT_FALSE(valid_local_domain(bad)) << bad;
  EXPECT_FALSE(valid_local_domain(std::string(64, 'a') + ".example"));
  EXPECT_TRUE(valid_local_domain(std::string(63, 'a') + ".example"));
}

}  // namespace
}  // namespace smtpguard::smtp

// Client certificates mapped to users in the users file.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "auth/user_db.hpp"

namespace smtpguard::auth {
namespace {

using nlohmann::json;

const std::string alice_fingerprint(64, 'a');

user_db sample() {
  return user_db::parse(json::parse(R"({"users": [
    {"name": "alice", "client_certificates": ["cn:alice", "email:Alice@Example.test"], "relay_by_certificate": true},
    {"name": "bob", "client_certificates": ["sha256:)" + std::string(32, 'A') + ":" + std::string(32, 'a') + R"("]},
    {"name": "carol"}
  ]})"));
}

TEST(auth_certificate_owner, maps_by_fingerprint_email_and_common_name) {
  const auto db = sample();
  const std::vector<std::string> none;
  const std::vector<std::string> alice_email{"alice@example.TEST"};
  EXPECT_EQ(db.find_by_certificate(alice_fingerprint, none, "")->name, "bob");
  EXPECT_EQ(db.find_by_certificate("", alice_email, "")->name, "alice");
  EXPECT_EQ(db.find_by_certificate("", none, "alice")->name, "alice");
  EXPECT_TRUE(db.find_by_certificate("", none, "alice")->relay_by_certificate);
  EXPECT_EQ(db.find_by_certificate("", none, "Alice"), nullptr);  // CN is exact
  EXPECT_EQ(db.find_by_certificate(std::string(64, 'b'), none, "carol"), nullptr);
  EXPECT_FALSE(db.find("carol")->relay_by_certificate);
}

TEST(auth_certificate_owner, fingerprint_wins_over_email_and_name) {
  const auto db = sample();
  const std::vector<std::string> alice_email{"alice@example.test"};
  EXPECT_EQ(db.find_by_certificate(alice_fingerprint, alice_email, "alice")->name, "bob");
}

TEST(auth_certificate_owner, errors_name_the_json_path) {
  const auto error = [](const char* text) {
    try {
      user_db::parse(json::parse(text));
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error(R"({"users": [{"name": "a", "client_certificates": ["dn:x"]}]})").rfind(
                "users[0].client_certificates[0]: ", 0),
            0u);
  EXPECT_EQ(error(R"({"users": [{"name": "a", "client_certificates": ["sha256:12"]}]})").rfind(
                "users[0].client_certificates[0]: ", 0),
            0u);
  EXPECT_EQ(error(R"({"users": [{"name": "a", "client_certificates": ["cn:x"]},
                                {"name": "b", "client_certificates": ["cn:x"]}]})")
                .rfind("users[1].client_certificates[0]: already belongs to user \"a\"", 0),
            0u);
  EXPECT_EQ(error(R"({"users": [{"name": "a", "relay_by_certificate": "yes"}]})").rfind(
                "users[0].relay_by_certificate: ", 0),
            0u);
}

}  // namespace
}  // namespace smtpguard::auth

namespace smtpguard::auth {
namespace {

TEST(auth_users_file_regression, number_overflow_names_the_file) {
  const std::string path = ::testing::TempDir() + "users-overflow.json";
  {
    std::ofstream out(path);
    out << R"({"users": [{"name": "a", "x": 1e400}]})";
  }
  try {
    user_db::load(path);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace smtpguard::auth

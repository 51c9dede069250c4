// argv -> config -> server. Nothing else.
#include <cstring>
#include <iostream>
#include <memory>
#include <string>

#include "auth/user_db.hpp"
#include "config.hpp"
#include "server.hpp"

namespace {

constexpr const char* usage =
    "usage: smtpguard --config FILE [--check-config]\n"
    "       smtpguard --version\n"
    "       smtpguard passwd [--scheme yescrypt|bcrypt|sha512-crypt] [--user NAME] < password\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "passwd") == 0)
    return smtpguard::auth::run_passwd_command(argc - 1, argv + 1, std::cin, std::cout, std::cerr);

  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--version") {
      std::cout << "smtpguard " << SMTPGUARD_VERSION << "\n";
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    } else if (arg == "--check-config") {
      check_only = true;
    } else if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.starts_with("--config=")) {
      config_path = arg.substr(9);
    } else {
      std::cerr << "smtpguard: unknown argument \"" << arg << "\"\n" << usage;
      return 2;
    }
  }
  if (config_path.empty()) {
    std::cerr << "smtpguard: --config FILE is required\n" << usage;
    return 2;
  }

  std::shared_ptr<const smtpguard::config> settings;
  try {
    settings = std::make_shared<const smtpguard::config>(smtpguard::load_config(config_path));
    smtpguard::check_runtime_files(*settings);
  } catch (const std::exception& e) {
    std::cerr << "smtpguard: " << config_path << ": " << e.what() << "\n";
    return 1;
  }
  if (check_only) {
    std::cout << "smtpguard: " << config_path << ": configuration OK\n";
    return 0;
  }
  try {
    return smtpguard::run_server(settings);
  } catch (const std::exception& e) {
    std::cerr << "smtpguard: " << e.what() << "\n";
    return 1;
  }
}

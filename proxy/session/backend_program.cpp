#include "session/backend_program.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

// glibc 2.36 declares these without C linkage for C++.
extern "C" {
#include <sys/pidfd.h>
}

#include <asio/posix/stream_descriptor.hpp>
#include <chrono>

#include "log.hpp"
#include "net/timeout.hpp"

namespace smtpguard::session {
namespace {

// How long a program may take to exit after SIGTERM, before SIGKILL.
constexpr std::chrono::seconds term_grace{5};

struct spawn_setup {
  posix_spawn_file_actions_t actions{};
  posix_spawnattr_t attributes{};
  bool actions_ready = false;
  bool attributes_ready = false;
  ~spawn_setup() {
    if (actions_ready) posix_spawn_file_actions_destroy(&actions);
    if (attributes_ready) posix_spawnattr_destroy(&attributes);
  }
};

void kill_and_reap(pid_t pid) noexcept {
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

std::vector<char*> pointers(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const auto& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

net::awaitable<void> reap(pid_t pid, int pidfd, std::string name, std::chrono::seconds exit_grace) {
  asio::posix::stream_descriptor exited(co_await asio::this_coro::executor, pidfd);
  auto waited = co_await net::with_timeout(
      exited.async_wait(asio::posix::stream_descriptor::wait_read, net::as_result), exit_grace);
  if (!waited) {
    log::event("backend_program_killed").add("program", name).add("signal", "TERM");
    ::pidfd_send_signal(pidfd, SIGTERM, nullptr, 0);
    waited = co_await net::with_timeout(
        exited.async_wait(asio::posix::stream_descriptor::wait_read, net::as_result), term_grace);
  }
  if (!waited) {
    log::event("backend_program_killed").add("program", name).add("signal", "KILL");
    ::pidfd_send_signal(pidfd, SIGKILL, nullptr, 0);
    co_await exited.async_wait(asio::posix::stream_descriptor::wait_read, net::as_result);
  }
  int status = 0;
  // The descriptor said the program has exited: this never blocks.
  pid_t reaped = -1;
  do {
    reaped = ::waitpid(pid, &status, WNOHANG);
  } while (reaped < 0 && errno == EINTR);
  if (reaped != pid) co_return;
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
    log::event("backend_program_exit").add("program", name).add("status", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    log::event("backend_program_exit").add("program", name).add("signal", WTERMSIG(status));
}

}  // namespace

std::optional<backend_program> backend_program::start(const std::vector<std::string>& argv,
                                                      const std::vector<std::string>& environment, int& our_end,
                                                      std::error_code& error) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    error.assign(errno, std::generic_category());
    return std::nullopt;
  }
  spawn_setup setup;
  int failed = posix_spawn_file_actions_init(&setup.actions);
  setup.actions_ready = failed == 0;
  if (!failed) failed = posix_spawnattr_init(&setup.attributes);
  setup.attributes_ready = setup.actions_ready && failed == 0;
  // The program's end of the pair becomes its stdin and stdout. Every other
  // descriptor above stderr is closed: our sockets are not all close-on-exec,
  // and a client connection held open by a program would never see its close.
  if (!failed) failed = posix_spawn_file_actions_adddup2(&setup.actions, pair[1], STDIN_FILENO);
  if (!failed) failed = posix_spawn_file_actions_adddup2(&setup.actions, pair[1], STDOUT_FILENO);
  if (!failed) failed = posix_spawn_file_actions_addclosefrom_np(&setup.actions, STDERR_FILENO + 1);
  // We ignore SIGPIPE, and ignored signals stay ignored across exec.
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int s : {SIGPIPE, SIGHUP, SIGINT, SIGTERM, SIGCHLD, SIGQUIT}) sigaddset(&defaults, s);
  sigset_t none;
  sigemptyset(&none);
  if (!failed) failed = posix_spawnattr_setsigdefault(&setup.attributes, &defaults);
  if (!failed) failed = posix_spawnattr_setsigmask(&setup.attributes, &none);
  if (!failed)
    failed = posix_spawnattr_setflags(&setup.attributes,
                                      POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSID);
  pid_t pid = -1;
  if (!failed) {
    auto args = pointers(argv);
    auto env = pointers(environment);
    failed = ::posix_spawn(&pid, argv.front().c_str(), &setup.actions, &setup.attributes, args.data(), env.data());
  }
  ::close(pair[1]);
  if (failed) {
    ::close(pair[0]);
    error.assign(failed, std::generic_category());
    return std::nullopt;
  }
  const int pidfd = static_cast<int>(::pidfd_open(pid, 0));
  if (pidfd < 0) {
    // Cannot watch it: stop it now rather than leave it unreaped.
    error.assign(errno, std::generic_category());
    kill_and_reap(pid);
    ::close(pair[0]);
    return std::nullopt;
  }
  ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  ::fcntl(pair[0], F_SETFL, ::fcntl(pair[0], F_GETFL) | O_NONBLOCK);
  our_end = pair[0];
  return backend_program(pid, pidfd);
}

backend_program::backend_program(backend_program&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), pidfd_(std::exchange(other.pidfd_, -1)) {}

void backend_program::reap_later(const asio::any_io_executor& executor, std::string name,
                                 std::chrono::seconds exit_grace) && {
  const pid_t pid = std::exchange(pid_, -1);
  const int pidfd = std::exchange(pidfd_, -1);
  asio::co_spawn(executor, reap(pid, pidfd, std::move(name), exit_grace), asio::detached);
}

backend_program& backend_program::operator=(backend_program&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
  }
  return *this;
}

backend_program::~backend_program() { stop(); }

void backend_program::stop() noexcept {
  if (pid_ < 0) return;
  // Never handed to a reaper (no executor to run one): stop it and reap it here.
  kill_and_reap(pid_);
  if (pidfd_ >= 0) ::close(pidfd_);
  pid_ = -1;
  pidfd_ = -1;
}

}  // namespace smtpguard::session

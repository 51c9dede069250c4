#pragma once
// The mail transaction, relayed: MAIL and RCPT (pipelined to the backend
// when it can take them so), DATA and the message body, RSET and NOOP, and
// the backend connection they travel on, from the session's first MAIL
// until the session ends and the connection is kept or closed.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "net/asio_fwd.hpp"
#include "net/line_io.hpp"
#include "session/backend_connection.hpp"
#include "session/dnsbl_check.hpp"
#include "session/runtime.hpp"
#include "smtp/command.hpp"
#include "smtp/dialogue.hpp"
#include "smtp/identity.hpp"
#include "smtp/received.hpp"
#include "smtp/reply.hpp"

namespace smtpguard::session {

/// The session's side of a transaction. The session owns all of it and
/// outlives its transaction.
struct session_view {
  const config& settings;
  const runtime& rt;
  const std::string& id;
  const std::string& client_ip;
  const std::string& client_key;  ///< what per-address budgets count by
  bool trusted_network;           ///< in relay.trusted_networks: no message budget applies
  smtp::dialogue_state& state;    ///< in_transaction, recipients and smtputf8 are kept here
  const smtp::dialogue_policy& policy;
  /// The blocklists' verdict on an MX client that is not authorized; null: none asked.
  dnsbl_check* dnsbl;
  std::string_view& reply_label;  ///< the command the replies being queued are counted under
  int& errors;                    ///< the client's protocol errors so far
};

/// How DATA ended, for the session.
struct data_outcome {
  bool close = false;           ///< end the session
  std::string_view last_words;  ///< what to say first; empty: the client is gone
};

class transaction {
 public:
  explicit transaction(session_view session) : session_(session) {}

  /// MAIL FROM; `client` tells a backend connected for it who the client is.
  template <typename Stream>
  net::awaitable<void> mail(net::line_io<Stream>& io, const smtp::command& cmd,
                            const smtp::client_identity& client);
  template <typename Stream>
  net::awaitable<void> rcpt(net::line_io<Stream>& io, const smtp::command& cmd);
  /// DATA and the message; `received` is the trace header without its recipient and time.
  template <typename Stream>
  net::awaitable<data_outcome> data(net::line_io<Stream>& io, smtp::received_info received);
  /// Ends the transaction (RSET to the backend when one is open); replies 250 if `reply`.
  template <typename Stream>
  net::awaitable<void> reset(net::line_io<Stream>& io, bool reply);
  template <typename Stream>
  net::awaitable<void> noop(net::line_io<Stream>& io);

  /// MAIL and RCPT replies the backend still owes; settle() reads and relays them.
  bool unsettled() const noexcept { return !pipelined_.empty(); }
  template <typename Stream>
  net::awaitable<void> settle(net::line_io<Stream>& io);

  /// At the session's end: keeps a clean backend connection for the
  /// thread's next session (unless `draining`), or says QUIT.
  net::awaitable<void> end(bool draining);

  int messages() const noexcept { return messages_; }

 private:
  struct pipelined_command {
    bool mail = false;
    std::string mailbox;
  };
  /// The refusal a MAIL or RCPT gets here, before the backend sees it.
  struct local_refusal {
    std::string_view reply;
    bool counts_as_error = false;
  };

  net::awaitable<bool> ensure_backend(const smtp::client_identity& client);
  bool backend_open() const noexcept { return backend_ && backend_->is_open(); }
  /// Closes the backend connection at once: a partial message on it is never delivered.
  void drop_backend() noexcept;
  /// `smtputf8`: the MAIL carries SMTPUTF8.
  std::optional<local_refusal> check_mail(smtp::path_argument& path, bool smtputf8);
  /// The refusal for MAIL when a send budget (limits.max_messages_* or
  /// max_recipients_*) of the user or the address is spent; empty if none is.
  net::awaitable<std::string_view> budget_refusal();
  /// Counts a message the backend accepted, and its recipients, against them.
  net::awaitable<void> count_sent(int recipients);
  void mail_accepted(const std::string& sender, bool smtputf8);
  void forget_transaction() noexcept;

  template <typename Stream>
  net::awaitable<int> relay_command(net::line_io<Stream>& io, std::string_view line);
  template <typename Stream>
  void relay_reply(net::line_io<Stream>& io, smtp::reply answer);
  template <typename Stream>
  void backend_lost(net::line_io<Stream>& io);
  template <typename Stream>
  net::awaitable<void> refuse_in_order(net::line_io<Stream>& io, local_refusal refusal);
  template <typename Stream>
  net::awaitable<void> pipeline(net::line_io<Stream>& io, std::string_view line,
                                const pipelined_command& sent, bool smtputf8);
  template <typename Stream>
  net::awaitable<data_outcome> transfer_message(net::line_io<Stream>& io, std::string header);

  session_view session_;
  std::unique_ptr<backend_connection> backend_;
  std::string backend_address_;  ///< the backend the connection goes to
  bool backend_reused_ = false;  ///< the connection came kept, and has carried no command yet
  /// Queued to the backend, replies not read yet, in order. Not a deque:
  /// an empty one already holds a 512-byte block, in every idle session.
  std::vector<pipelined_command> pipelined_;
  std::string sender_;
  std::string last_recipient_;
  int messages_ = 0;
};

}  // namespace smtpguard::session

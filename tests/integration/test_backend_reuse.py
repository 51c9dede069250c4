"""Backend connections kept between sessions (backend.reuse_idle).

A session that ends with no transaction open leaves its backend connection
for the next session on the same thread, which then skips the connect, the
greeting and EHLO. Checked against the byte-logging wire backend: which
connection carried which commands, when each is QUIT, and that a connection
the backend gave up on is never used for a message.

smtpguard runs one thread here, so consecutive sessions share one pool.
"""

import json
import re
import signal
import time

import pytest

from harness import (ALICE, BOB, metric_value, plain_response, read_text, received_regex, smtplib_auth,
                     wait_until)
from wire_backend import EHLO_REPLY, Close

MESSAGE = b"Subject: reuse\r\n\r\nkept connection\r\n"
EHLO = "EHLO mail.example.test"
SIZE = f"SIZE={len(MESSAGE)}"  # smtplib declares it
TRANSACTION = [f"MAIL FROM:<alice@example.test> {SIZE}", "RCPT TO:<bob@example.test>", "DATA"]
WIRE_TRANSACTION = ["MAIL FROM:<alice@example.test>", "RCPT TO:<bob@example.test>", "DATA"]


def start(smtpguard_factory, backend, **backend_settings):
    settings = {"reuse_idle": 30, "health_interval": 3600}
    settings.update(backend_settings)
    return smtpguard_factory(config={"threads": 1, "backend": settings}, backend_address=backend.address)


def deliver(guard, user=ALICE, sender="alice@example.test"):
    with guard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *user)
        refused = smtp.sendmail(sender, ["bob@example.test"], MESSAGE)
        assert refused == {}, refused


def mail_connections(backend, count, timeout=10):
    assert wait_until(lambda: len(backend.with_mail()) >= count, timeout), backend.sessions()
    return backend.with_mail()


def wait_commands(connection, commands, timeout=10):
    assert wait_until(lambda: connection.commands == commands, timeout), \
        f"expected {commands!r}, backend saw {connection.commands!r}"


def reused(guard):
    return metric_value(guard.metrics(), "smtpguard_backend_connections_reused_total") or 0


def log(guard):
    return read_text(guard.stderr_path)


def test_next_session_takes_over_the_connection_and_it_is_quit_when_idle(smtpguard_factory, wire_backend):
    backend = wire_backend()
    guard = start(smtpguard_factory, backend, reuse_idle=1)
    deliver(guard)
    deliver(guard)
    ended = time.monotonic()
    [connection] = mail_connections(backend, 1)
    # One greeting and EHLO for both sessions, each message its own transaction.
    assert connection.commands[:7] == [EHLO] + TRANSACTION + TRANSACTION, connection.commands
    backend.wait_closed(connection, timeout=10)
    waited = time.monotonic() - ended
    assert connection.commands == [EHLO] + TRANSACTION + TRANSACTION + ["QUIT"]
    assert 0.7 <= waited <= 5, f"the kept connection was QUIT {waited:.2f}s after the last session"
    # Each message still says who sent it, in which session.
    ids = []
    for content in connection.messages:
        m = re.match(received_regex(user="alice", rcpt="bob@example.test"), content)
        assert m, content[:400]
        ids.append(m.group("id"))
    assert len(ids) == 2 and ids[0] != ids[1], ids
    assert reused(guard) == 1
    assert re.search(r"event=backend session=\S+ backend=\S+ reused=true", log(guard)), log(guard)


def test_with_reuse_off_each_session_has_its_own_connection(smtpguard_factory, wire_backend):
    backend = wire_backend()
    guard = start(smtpguard_factory, backend, reuse_idle=0)
    deliver(guard)
    deliver(guard)
    first, second = mail_connections(backend, 2)
    for connection in (first, second):
        backend.wait_closed(connection, timeout=5)
        assert connection.commands == [EHLO] + TRANSACTION + ["QUIT"]
    assert reused(guard) == 0


def test_each_session_gives_its_own_user_in_mail_auth(smtpguard_factory, wire_backend):
    backend = wire_backend({"EHLO": EHLO_REPLY.replace(b"250 DSN", b"250-DSN\r\n250 AUTH PLAIN")})
    guard = start(smtpguard_factory, backend, mail_auth=True)
    deliver(guard, ALICE, "alice@example.test")
    deliver(guard, BOB, "bob@example.test")
    [connection] = mail_connections(backend, 1)
    wait_commands(connection, [EHLO,
                               f"MAIL FROM:<alice@example.test> {SIZE} AUTH=alice", "RCPT TO:<bob@example.test>",
                               "DATA",
                               f"MAIL FROM:<bob@example.test> {SIZE} AUTH=bob", "RCPT TO:<bob@example.test>",
                               "DATA"])


def close_after_queuing(connection, content):
    connection.sock.sendall(b"250 2.0.0 Ok: queued\r\n")
    return Close()


def shut_down_after_queuing(connection, content):
    connection.sock.sendall(b"250 2.0.0 Ok: queued\r\n421 4.3.2 Shutting down\r\n")
    return None  # and keep the connection open


def test_a_connection_the_backend_closed_while_kept_is_not_used(smtpguard_factory, wire_backend):
    for gives_up in (close_after_queuing, shut_down_after_queuing):
        backend = wire_backend({"end": gives_up})
        guard = start(smtpguard_factory, backend)
        deliver(guard)
        mail_connections(backend, 1)
        time.sleep(0.2)  # the backend's close or 421 has reached smtpguard
        deliver(guard)
        first, second = mail_connections(backend, 2)
        assert first.commands[:4] == [EHLO] + TRANSACTION, first.commands
        assert not any(c.startswith("MAIL") for c in first.commands[4:]), first.commands
        assert second.commands[:4] == [EHLO] + TRANSACTION, second.commands
        assert len(second.messages) == 1
        assert reused(guard) == 0, gives_up.__name__
        assert "backend_stale" not in log(guard)


@pytest.mark.parametrize("gives_up", [Close(), b"421 4.3.2 Shutting down\r\n"], ids=["close", "421"])
def test_a_kept_connection_given_up_at_its_first_command_is_replaced_before_the_client_notices(
        smtpguard_factory, wire_backend, gives_up):
    # The backend gives up on the connection just as the second session's
    # MAIL arrives; the client pipelines MAIL, RCPT and DATA (RFC 2920).
    backend = wire_backend({"MAIL": [b"250 2.1.0 Sender ok\r\n", gives_up]})
    guard = start(smtpguard_factory, backend)
    deliver(guard)
    w = guard.wire_implicit()
    assert w.cmd(b"AUTH PLAIN " + plain_response(*ALICE).encode()).code == 235
    w.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    assert [r.code for r in w.read_replies(3)] == [250, 250, 354]
    assert w.cmd(b"Subject: retried\r\n\r\nbody\r\n.").code == 250
    assert w.cmd("QUIT").code == 221
    first, second = mail_connections(backend, 2)
    assert first.commands == [EHLO] + TRANSACTION + ["MAIL FROM:<alice@example.test>"], first.commands
    assert second.commands[:4] == [EHLO] + WIRE_TRANSACTION, second.commands
    assert len(first.messages) == 1 and len(second.messages) == 1
    assert second.messages[0].endswith(b"Subject: retried\r\n\r\nbody\r\n"), second.messages[0][-200:]
    assert re.search(r"event=backend_stale session=\S+ backend=" + re.escape(backend.address), log(guard))


def test_a_session_ending_inside_a_transaction_quits_its_connection(smtpguard_factory, wire_backend):
    backend = wire_backend()
    guard = start(smtpguard_factory, backend)
    w = guard.wire_implicit()
    assert w.cmd(b"AUTH PLAIN " + plain_response(*ALICE).encode()).code == 235
    assert w.cmd("MAIL FROM:<alice@example.test>").code == 250
    assert w.cmd("RCPT TO:<bob@example.test>").code == 250
    assert w.cmd("QUIT").code == 221
    [first] = mail_connections(backend, 1)
    backend.wait_closed(first, timeout=5)
    assert first.commands == [EHLO] + WIRE_TRANSACTION[:2] + ["QUIT"]
    deliver(guard)
    first, second = mail_connections(backend, 2)
    assert second.commands[:4] == [EHLO] + TRANSACTION


def test_a_connection_that_carries_the_client_identity_is_never_kept(smtpguard_factory, wire_backend):
    # XCLIENT tells the backend who the client is: the connection is that client's.
    backend = wire_backend({
        "EHLO": EHLO_REPLY.replace(b"250 DSN", b"250-DSN\r\n250 XCLIENT ADDR PORT NAME HELO LOGIN"),
        "other": b"220 backend.example.test ESMTP wire backend\r\n",
    })
    guard = start(smtpguard_factory, backend, xclient=True)
    deliver(guard)
    deliver(guard)
    first, second = mail_connections(backend, 2)
    for connection in (first, second):
        backend.wait_closed(connection, timeout=5)
        assert connection.commands[0] == EHLO and connection.commands[1].startswith("XCLIENT ADDR=127.0.0.1 ")
        assert connection.commands[2:] == [EHLO] + TRANSACTION + ["QUIT"], connection.commands
    assert reused(guard) == 0


def test_a_connection_older_than_the_lifetime_is_quit_instead_of_reused(smtpguard_factory, wire_backend):
    backend = wire_backend()
    guard = start(smtpguard_factory, backend, reuse_lifetime=1)
    deliver(guard)
    time.sleep(1.2)
    deliver(guard)
    first, second = mail_connections(backend, 2)
    backend.wait_closed(first, timeout=5)
    assert first.commands == [EHLO] + TRANSACTION + ["QUIT"]
    assert second.commands[:4] == [EHLO] + TRANSACTION
    assert reused(guard) == 0


def test_past_max_idle_the_oldest_kept_connection_is_quit(smtpguard_factory, wire_backend):
    backend = wire_backend()
    guard = start(smtpguard_factory, backend, reuse_max_idle=1)
    a, b = guard.smtp_ssl(), guard.smtp_ssl()
    for smtp in (a, b):
        smtplib_auth(smtp, "PLAIN", *ALICE)
        assert smtp.sendmail("alice@example.test", ["bob@example.test"], MESSAGE) == {}
    first, second = mail_connections(backend, 2)
    a.quit()
    time.sleep(0.3)
    assert not first.closed.is_set(), "the first connection should be kept while it is the only one"
    b.quit()
    backend.wait_closed(first, timeout=5)
    assert first.commands == [EHLO] + TRANSACTION + ["QUIT"]
    time.sleep(0.3)
    assert not second.closed.is_set(), "the newest connection should be kept"


def test_sigterm_quits_the_kept_connections(smtpguard_factory, wire_backend):
    backend = wire_backend()
    guard = start(smtpguard_factory, backend)
    deliver(guard)
    [connection] = mail_connections(backend, 1)
    time.sleep(0.3)
    assert not connection.closed.is_set()
    guard.proc.send_signal(signal.SIGTERM)
    backend.wait_closed(connection, timeout=5)
    assert connection.commands == [EHLO] + TRANSACTION + ["QUIT"]
    guard.proc.wait(10)
    assert guard.proc.returncode == 0


def test_a_reload_to_another_backend_leaves_the_kept_connection_unused(smtpguard_factory, wire_backend):
    old, new = wire_backend(), wire_backend()
    guard = start(smtpguard_factory, old)
    deliver(guard)
    guard.config["backend"]["address"] = new.address
    with open(guard.config_path, "w") as f:
        json.dump(guard.config, f)
    guard.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "event=reload trigger=SIGHUP result=success" in log(guard), 10), log(guard)
    deliver(guard)
    [kept] = mail_connections(old, 1)
    [fresh] = mail_connections(new, 1)
    assert kept.commands[:4] == [EHLO] + TRANSACTION and "MAIL" not in " ".join(kept.commands[4:])
    assert fresh.commands[:4] == [EHLO] + TRANSACTION
    assert reused(guard) == 0

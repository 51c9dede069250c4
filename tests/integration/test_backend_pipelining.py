"""Pipelined backend writes (RFC 2920): the MAIL and RCPT commands a client
pipelines reach a backend that offers PIPELINING in one write, and their
replies come back to the client in order, one per command, with the session's
view of the transaction (recipient count, limit, refused sender) settled from
the backend's real answers before anything depends on it.

Every test runs against a scripted WireBackend, which logs the bytes it got
and can look at what had already arrived while it answered MAIL.
"""

import socket
import time

import pytest

from harness import wait_until
from wire_backend import EHLO_REPLY, Close

SENDER = "alice@example.test"
CONFIG = {"backend": {"health_interval": 3600}, "timeouts": {"backend_reply": 5}}


def already_sent(conn, what):
    """True if `what` reached the backend before it answered the current command."""
    time.sleep(0.2)
    try:
        waiting = conn.sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        waiting = b""
    return what in conn.received or what in waiting


class MailWatch:
    """MAIL action recording whether the RCPTs were already there."""

    def __init__(self, reply=b"250 2.1.0 Sender ok\r\n"):
        self.reply = reply
        self.rcpt_already_sent = None

    def __call__(self, conn, line):
        self.rcpt_already_sent = already_sent(conn, b"RCPT TO:")
        return self.reply


def group(*lines):
    return b"".join(line.encode() + b"\r\n" for line in lines)


def start(smtpguard_factory, wire_backend, script, config=None):
    backend = wire_backend(script)
    merged = dict(CONFIG)
    merged.update(config or {})
    guard = smtpguard_factory(config=merged, backend_address=backend.address)
    return guard, backend


def mail_connection(backend):
    assert wait_until(lambda: backend.with_mail(), 5), f"no MAIL at the backend: {backend.sessions()!r}"
    [conn] = backend.with_mail()
    return conn


def test_group_reaches_the_backend_in_one_write(smtpguard_factory, wire_backend):
    watch = MailWatch()
    rcpt = [b"250 2.1.5 Ok\r\n", b"550 5.1.1 No such user\r\n", b"250 2.1.5 Ok\r\n"]
    guard, backend = start(smtpguard_factory, wire_backend, {"MAIL": watch, "RCPT": rcpt})
    with guard.wire_starttls() as w:
        w.login()
        w.send(group(f"MAIL FROM:<{SENDER}>", "RCPT TO:<a@example.net>", "RCPT TO:<nobody@example.net>",
                     "RCPT TO:<c@example.net>", "DATA"))
        replies = w.read_replies(5)
        assert [r.code for r in replies] == [250, 250, 550, 250, 354], replies
        assert replies[2].raw == b"550 5.1.1 No such user\r\n"
        w.expect_silence(0.3)
        w.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\n")
        assert w.read_reply().code == 250
        assert w.quit().code == 221
    assert watch.rcpt_already_sent is True, "the RCPTs waited for the reply to MAIL"
    conn = mail_connection(backend)
    assert conn.commands[1:6] == [f"MAIL FROM:<{SENDER}>", "RCPT TO:<a@example.net>",
                                  "RCPT TO:<nobody@example.net>", "RCPT TO:<c@example.net>", "DATA"]
    [message] = conn.messages
    # Two recipients were accepted: the Received header names none of them.
    assert b"Subject: pipelined" in message
    assert b"for <" not in message.split(b"\r\n\r\n", 1)[0]


def test_refused_sender_settles_the_group(smtpguard_factory, wire_backend):
    watch = MailWatch(b"550 5.7.1 Sender refused\r\n")
    guard, backend = start(smtpguard_factory, wire_backend,
                           {"MAIL": watch, "RCPT": b"503 5.5.1 Error: need MAIL command\r\n"})
    with guard.wire_starttls() as w:
        w.login()
        w.send(group(f"MAIL FROM:<{SENDER}>", "RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>", "DATA"))
        replies = w.read_replies(4)
        assert [r.code for r in replies] == [550, 503, 503, 503], replies
        # DATA is answered here: no transaction, so the backend never sees it.
        assert replies[3].raw == b"503 5.5.1 Need MAIL command first\r\n"
        w.expect_silence(0.3)
        # The session goes on with a fresh transaction, one command at a time.
        backend.script["MAIL"] = b"250 2.1.0 Ok\r\n"
        backend.script["RCPT"] = b"250 2.1.5 Ok\r\n"
        assert w.cmd(f"MAIL FROM:<{SENDER}>").code == 250
        assert w.cmd("RCPT TO:<a@example.net>").code == 250
        assert w.cmd("DATA").code == 354
        w.send(b"Subject: after\r\n\r\nbody\r\n.\r\n")
        assert w.read_reply().code == 250
        assert w.quit().code == 221
    assert watch.rcpt_already_sent is True
    conn = mail_connection(backend)
    assert conn.commands.count("DATA") == 1
    assert len(conn.messages) == 1


def test_recipient_limit_holds_within_a_group(smtpguard_factory, wire_backend):
    guard, backend = start(smtpguard_factory, wire_backend, {}, {"limits": {"max_recipients": 3}})
    with guard.wire_starttls() as w:
        w.login()
        rcpts = [f"RCPT TO:<r{i}@example.net>" for i in range(5)]
        w.send(group(f"MAIL FROM:<{SENDER}>", *rcpts, "DATA"))
        replies = w.read_replies(7)
        assert [r.code for r in replies] == [250, 250, 250, 250, 452, 452, 354], replies
        w.send(b"Subject: limit\r\n\r\nbody\r\n.\r\n")
        assert w.read_reply().code == 250
        assert w.quit().code == 221
    conn = mail_connection(backend)
    assert [c for c in conn.commands if c.startswith("RCPT")] == rcpts[:3]


def test_refused_recipients_free_their_place_under_the_limit(smtpguard_factory, wire_backend):
    rcpt = [b"550 5.1.1 No such user\r\n", b"550 5.1.1 No such user\r\n", b"250 2.1.5 Ok\r\n"]
    guard, backend = start(smtpguard_factory, wire_backend, {"RCPT": rcpt}, {"limits": {"max_recipients": 2}})
    with guard.wire_starttls() as w:
        w.login()
        w.send(group(f"MAIL FROM:<{SENDER}>", "RCPT TO:<x@example.net>", "RCPT TO:<y@example.net>"))
        assert [r.code for r in w.read_replies(3)] == [250, 550, 550]
        # Both refusals were settled: two more recipients fit.
        w.send(group("RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>", "RCPT TO:<c@example.net>"))
        assert [r.code for r in w.read_replies(3)] == [250, 250, 452]
        assert w.quit().code == 221


def test_backend_lost_mid_group_answers_every_command(smtpguard_factory, wire_backend):
    guard, backend = start(smtpguard_factory, wire_backend, {"RCPT": [b"250 2.1.5 Ok\r\n", Close()]})
    with guard.wire_starttls() as w:
        w.login()
        w.send(group(f"MAIL FROM:<{SENDER}>", "RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>",
                     "RCPT TO:<c@example.net>", "DATA"))
        replies = w.read_replies(5)
        assert [r.code for r in replies[:4]] == [250, 250, 451, 451], replies
        assert replies[2].raw.startswith(b"451 4.4.2 ")
        assert replies[4].code in (451, 503), replies
        w.expect_silence(0.3)
        assert w.quit().code == 221
    conn = mail_connection(backend)
    assert "DATA" not in conn.commands
    assert conn.messages == [] and conn.partial is None


def test_local_refusal_keeps_its_place(smtpguard_factory, wire_backend):
    guard, backend = start(smtpguard_factory, wire_backend, {})
    with guard.wire_starttls() as w:
        w.login()
        w.send(group(f"MAIL FROM:<{SENDER}>", "RCPT TO:<a@example.net>", "RCPT TO:<broken",
                     "RCPT TO:<c@example.net>", "RSET"))
        replies = w.read_replies(5)
        assert [r.code for r in replies] == [250, 250, 501, 250, 250], replies
        w.expect_silence(0.3)
        assert w.quit().code == 221
    conn = mail_connection(backend)
    assert [c for c in conn.commands if c.startswith("RCPT")] == ["RCPT TO:<a@example.net>", "RCPT TO:<c@example.net>"]


@pytest.mark.parametrize("pipelining", [True, False], ids=["backend_pipelining", "backend_without"])
def test_one_command_at_a_time_without_backend_pipelining(smtpguard_factory, wire_backend, pipelining):
    watch = MailWatch()
    ehlo = EHLO_REPLY if pipelining else EHLO_REPLY.replace(b"250-PIPELINING\r\n", b"")
    guard, backend = start(smtpguard_factory, wire_backend, {"MAIL": watch, "EHLO": ehlo})
    with guard.wire_starttls() as w:
        w.login()
        w.send(group(f"MAIL FROM:<{SENDER}>", "RCPT TO:<a@example.net>", "DATA"))
        assert [r.code for r in w.read_replies(3)] == [250, 250, 354]
        w.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert w.read_reply().code == 250
        assert w.quit().code == 221
    assert watch.rcpt_already_sent is pipelining
    assert len(mail_connection(backend).messages) == 1

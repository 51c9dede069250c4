"""Scripted conversations, byte by byte, against a backend that logs every
byte it receives (wire_backend.py).

A case is a list of steps -- ("send", bytes), ("expect", code, enhanced,
exact-reply-or-None), ("close",) -- run under every write-split strategy
in SPLITS and in every transport the case applies to:

  plain     plaintext on the STARTTLS listener, before STARTTLS (after EHLO)
  starttls  inside STARTTLS (after EHLO, STARTTLS, EHLO and AUTH PLAIN as alice)
  implicit  inside implicit TLS (after EHLO and AUTH PLAIN as alice)

After the steps the client sends QUIT and must get exactly 221 and then the
end of the connection, so an extra reply anywhere fails the case. Then the
backend side is checked: for every backend connection that carried a MAIL,
the exact command list, the exact bytes (commands + CRLF, message content
and its final dot, nothing else), the message contents after smtpguard's
Received header, and byte strings that must appear nowhere in any backend
connection. Outside TLS no backend connection may carry anything but the
health probe's EHLO and QUIT.

One smtpguard (and one WireBackend) per configuration serves the whole
module; each test looks only at the backend connections opened after it
started.
"""

import dataclasses
import os
import re
import signal
import socket
import ssl
import struct
import time

import pytest

import harness
from harness import (CLIENT_NAME, FAKE_ENDS, HOST, HOSTNAME, IO_TIMEOUT, ConnectionClosed, SmtpWire,
                     assert_received_then, plain_response, received_regex)
from wire_backend import WireBackend

# --------------------------------------------------------------------------
# Exact replies (proxy/smtp/replies.hpp) and the wire backend's defaults
# --------------------------------------------------------------------------
R_OK = b"250 2.0.0 OK\r\n"
R_BYE = b"221 2.0.0 Bye\r\n"
R_START_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"
R_BAD_CHARS = b"500 5.5.2 Invalid characters or line ending in command\r\n"
R_UNRECOGNIZED = b"500 5.5.2 Command not recognized\r\n"
R_TOO_LONG = b"500 5.5.2 Line too long\r\n"
R_NOT_IMPLEMENTED = b"502 5.5.1 Command not implemented\r\n"
R_TLS_ACTIVE = b"503 5.5.1 TLS already active\r\n"
R_AUTH_ALREADY = b"503 5.5.1 Already authenticated\r\n"
R_AUTH_REQUIRED = b"530 5.7.0 Authentication required\r\n"
R_MUST_STARTTLS = b"530 5.7.0 Must issue a STARTTLS command first\r\n"
R_HELO_FIRST = b"503 5.5.1 Send EHLO or HELO first\r\n"
R_NEED_MAIL = b"503 5.5.1 Need MAIL command first\r\n"
R_MAIL_SYNTAX = b"501 5.1.7 Bad sender address syntax\r\n"
R_RCPT_SYNTAX = b"501 5.1.3 Bad recipient address syntax\r\n"
R_UTF8 = b"553 5.6.7 Non-ASCII address needs SMTPUTF8\r\n"
R_BARE = b"550 5.6.0 Message rejected: bare CR or LF is not allowed (RFC 5321 section 2.3.8)\r\n"
R_PREGREET = b"554 5.5.0 Protocol error: talking before the greeting\r\n"
R_TIMEOUT = b"421 4.4.2 Timeout, closing connection\r\n"
# The wire backend's replies, relayed.
B_MAIL_OK = b"250 2.1.0 Sender ok\r\n"
B_RCPT_OK = b"250 2.1.5 Recipient ok\r\n"
B_RSET_OK = b"250 2.0.0 Ok\r\n"

BACKEND_EHLO = b"EHLO " + HOSTNAME.encode()
PROBE_COMMANDS = [BACKEND_EHLO.decode(), "QUIT"]
END = b"\r\n.\r\n"

ALICE_AUTH = b"AUTH PLAIN " + plain_response("alice", "correct horse").encode()

INSIDE = ("starttls", "implicit")
EVERYWHERE = ("plain", "starttls", "implicit")
SPLITS = ("whole", "bytes", "crlf-dot")
PACE = 0.002  # seconds between the chunks of the crlf-dot strategy


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------
def S(data):
    return ("send", data)


def E(code, enhanced=None, exact=None):
    return ("expect", code, enhanced, exact)


def X(exact):
    """Expect exactly this reply (code and enhanced code taken from it)."""
    m = re.match(rb"^(\d{3})[ -](\d\.\d{1,3}\.\d{1,3})?", exact)
    return ("expect", int(m.group(1)), m.group(2).decode() if m.group(2) else None, exact)


CLOSE = ("close",)


def split_chunks(data, split):
    if split == "whole":
        return [data]
    if split == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    # crlf-dot: cut after every CR and before every dot.
    chunks, start = [], 0
    for i, byte in enumerate(data):
        if byte == 0x2E and i > start:  # "." starts a new chunk
            chunks.append(data[start:i])
            start = i
        if byte == 0x0D:  # CR ends one
            chunks.append(data[start:i + 1])
            start = i + 1
    if start < len(data):
        chunks.append(data[start:])
    return chunks


def test_split_strategies_cut_where_promised():
    assert split_chunks(b"a\r\n.\r\nb.c", "crlf-dot") == [b"a\r", b"\n", b".\r", b"\nb", b".c"]
    assert split_chunks(b".\r\n", "crlf-dot") == [b".\r", b"\n"]
    assert split_chunks(b"ab", "bytes") == [b"a", b"b"]


def send_split(w, data, split, tolerate_close=False):
    try:
        for chunk in split_chunks(data, split):
            w.sock.sendall(chunk)
            if split == "crlf-dot":
                time.sleep(PACE)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        if not tolerate_close:
            raise


def run_steps(w, steps, split, transcript):
    for step in steps:
        kind = step[0]
        if kind == "send":
            transcript.append(f"C: {step[1][:200]!r}")
            send_split(w, step[1], split)
        elif kind == "expect":
            _, code, enhanced, exact = step
            try:
                r = w.read_reply()
            except (ConnectionClosed, TimeoutError) as e:
                raise AssertionError(f"expected {code} {enhanced or ''}, but: {e}\ntranscript:\n"
                                     + "\n".join(transcript)) from None
            transcript.append(f"S: {r.raw!r}")
            ok = r.code == code and (enhanced is None or r.enhanced == enhanced)
            if exact is not None:
                ok = ok and r.raw == exact
            assert ok, (f"expected {exact!r}" if exact else f"expected {code} {enhanced or ''}") + \
                f", got {r.raw!r}\ntranscript:\n" + "\n".join(transcript)
        elif kind == "close":
            try:
                extra = w.read_line()
            except ConnectionClosed:
                transcript.append("S: <closed>")
                continue
            raise AssertionError(f"expected the server to close, it sent {extra!r}\ntranscript:\n"
                                 + "\n".join(transcript))
        else:
            raise ValueError(step)


# --------------------------------------------------------------------------
# One smtpguard + one WireBackend per configuration, for the whole module
# --------------------------------------------------------------------------
# Each session's backend connection is checked whole, QUIT included: none is
# kept for the next session (test_backend_reuse.py covers keeping them).
BASE = {"limits": {"max_errors": 1000}, "backend": {"reuse_idle": 0}}
CONFIGS = {
    "reject": BASE,
    "normalize": harness.deep_merge(BASE, {"smtp": {"bare_line_endings": "normalize"}}),
    "stall": harness.deep_merge(BASE, {"timeouts": {"data_block": 1}}),
    "pregreet": harness.deep_merge(BASE, {"smtp": {"greeting_delay_ms": 500}}),
}


class Pool:
    def __init__(self, binary, certs, users_file, tmp_path_factory):
        self.binary, self.certs, self.users_file = binary, certs, users_file
        self.tmp_path_factory = tmp_path_factory
        self.running = {}
        self.casualties = []

    def get(self, name):
        if name in self.running and not self.running[name][0].alive():
            # It died during an earlier test (whose teardown failed on that):
            # keep its diagnostics for the end of the module and start afresh,
            # so one crash does not fail every later test.
            guard, backend = self.running.pop(name)
            rc = guard.proc.returncode
            self.casualties.append(f"smtpguard ({name}) exited with status {rc} mid-module\n"
                                   f"{guard.diagnostics()}")
            backend.stop()
        if name not in self.running:
            backend = WireBackend().start()
            work = str(self.tmp_path_factory.mktemp(f"conversations-{name}"))
            guard = harness.Smtpguard(self.binary, work, self.certs, self.users_file, backend.address,
                                      config=CONFIGS[name])
            try:
                guard.start()
            except BaseException:
                backend.stop()
                raise
            self.running[name] = (guard, backend)
        return self.running[name]

    def stop(self):
        problems = list(self.casualties)
        for name, (guard, backend) in self.running.items():
            guard.stop()
            backend.stop()
            rc = guard.proc.returncode if guard.proc is not None else None
            if rc is not None and rc < 0 and -rc not in (signal.SIGTERM, signal.SIGKILL):
                problems.append(f"smtpguard ({name}) was killed by signal {-rc}")
            stderr = harness.read_text(guard.stderr_path)
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                if marker in stderr:
                    problems.append(f"smtpguard ({name}) stderr has a sanitizer report ({marker!r})")
        return problems


@pytest.fixture(scope="module")
def pool(binary, certs, users_file, tmp_path_factory):
    p = Pool(binary, certs, users_file, tmp_path_factory)
    yield p
    problems = p.stop()
    if problems:
        pytest.fail("; ".join(problems) + "\n"
                    + "\n".join(g.diagnostics() for g, _ in p.running.values()))


class Env:
    """One configuration's smtpguard and backend, seen through the backend
    connections opened since the test started."""

    def __init__(self, guard, backend):
        self.guard = guard
        self.backend = backend
        self.start = len(backend.sessions())
        self.log_offset = os.path.getsize(guard.stderr_path)

    def log(self, limit=20000):
        """smtpguard's log lines written since the test started."""
        with open(self.guard.stderr_path, "rb") as f:
            f.seek(self.log_offset)
            text = f.read().decode("utf-8", errors="replace")
        return text if len(text) <= limit else f"... ({len(text) - limit} characters cut)\n" + text[-limit:]

    def connections(self):
        return self.backend.sessions()[self.start:]

    def with_mail(self):
        return [c for c in self.connections()
                if any(cmd.upper().startswith("MAIL") for cmd in c.commands)]

    def all_bytes(self):
        return b"".join(c.received for c in self.connections())

    def settle(self, timeout=10):
        """Waits until every backend connection that carried a MAIL is closed."""
        for c in self.with_mail():
            assert c.closed.wait(timeout), f"backend connection still open {timeout}s later: {c!r}"


@pytest.fixture
def env(pool, request):
    used = []

    def get(name="reject"):
        guard, backend = pool.get(name)
        e = Env(guard, backend)
        used.append((name, e))
        return e

    yield get
    failed = any(getattr(request.node, "rep_" + when, None) is not None
                 and getattr(request.node, "rep_" + when).failed for when in ("setup", "call"))
    for name, e in used:
        if failed:
            harness.eprint(f"=== backend connections of this test ({name}): {e.connections()!r}")
            for c in e.connections():
                harness.eprint(f"    received: {c.received[:3000]!r}")
            harness.eprint(f"=== smtpguard ({name}) log during this test:\n{e.log()}")
        assert e.guard.alive(), f"smtpguard ({name}) died\n{e.guard.diagnostics()}"


# --------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------
def nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_session(guard, transport, auth=True, ehlo=True):
    """A client on `transport`, greeting consumed, EHLO sent and, inside
    TLS, authenticated as alice."""
    ctx = guard.tls_context()
    if transport == "implicit":
        raw = socket.create_connection((HOST, guard.implicit_port), timeout=IO_TIMEOUT)
        nodelay(raw)
        w = SmtpWire(ctx.wrap_socket(raw, server_hostname=HOSTNAME))
    else:
        raw = socket.create_connection((HOST, guard.starttls_port), timeout=IO_TIMEOUT)
        nodelay(raw)
        w = SmtpWire(raw)
    g = w.read_reply()
    assert g.code == 220, f"greeting: {g!r}"
    if transport == "starttls":
        w.ehlo()
        w.starttls(ctx)
    if ehlo:
        w.ehlo()
    if auth and transport != "plain":
        w.login()
    return w


# --------------------------------------------------------------------------
# Backend checks
# --------------------------------------------------------------------------
def as_bytes(commands):
    return [c.encode("utf-8", "surrogateescape") for c in commands]


def rebuild(conn):
    """What the connection's bytes must be, given its commands, messages
    and partial DATA content: nothing between or around them."""
    out = b""
    messages = list(conn.messages)
    for cmd in as_bytes(conn.commands):
        out += cmd + b"\r\n"
        if cmd.upper() == b"DATA":
            if messages:
                out += messages.pop(0) + b".\r\n"
            else:
                out += conn.partial if conn.partial is not None else b""
    return out


def check_no_relay(e, absent=()):
    """Nothing but health probes reached the backend."""
    assert e.with_mail() == [], f"a MAIL reached the backend: {e.with_mail()!r}"
    for c in e.connections():
        assert c.commands == PROBE_COMMANDS[:len(c.commands)], \
            f"backend connection that is not a health probe: {c!r} {c.received!r}"
    everything = e.all_bytes()
    for marker in absent:
        assert marker not in everything, f"{marker!r} reached the backend: {everything!r}"


@dataclasses.dataclass
class Msg:
    body: bytes                 # content after the Received header, as on the wire (stuffed)
    rcpt: str = "bob@example.test"  # the Received header's "for", None with several recipients
    helo: str = CLIENT_NAME


@dataclasses.dataclass
class Aborted:
    """An aborted DATA: after the Received header, the partial content is a
    prefix of `within` (exactly `within` if exact)."""
    within: bytes
    exact: bool = False


def check_message(content, expected):
    assert_received_then(content, expected.body, rcpt=expected.rcpt, helo=expected.helo)


def check_aborted(conn, expected):
    assert conn.messages == [], f"aborted DATA completed a message at the backend: {conn.messages!r}"
    assert conn.partial is not None, f"backend connection did not end inside DATA: {conn!r}"
    assert conn.closed_by_peer, f"backend connection was not closed by smtpguard: {conn!r}"
    after_data = conn.received.split(b"\r\nDATA\r\n", 1)[1]
    assert END not in b"\r\n" + after_data, f"a final dot reached the backend: {after_data!r}"
    partial = conn.partial
    if partial:  # the Received header goes out in one piece with the first content
        m = received_regex(rcpt="bob@example.test").match(partial)
        assert m, f"partial DATA does not start with the Received header: {partial!r}"
        partial = partial[m.end():]
    if expected.exact:
        assert partial == expected.within, f"partial content {partial!r}, expected {expected.within!r}"
    else:
        assert expected.within.startswith(partial), \
            f"partial content {partial!r} is not a prefix of {expected.within!r}"


def check_backend(e, backend, messages=(), absent=()):
    """backend: per backend connection that carried a MAIL, its commands
    after the EHLO (bytes); messages: Msg per completed DATA in order and
    Aborted per DATA cut off, in order."""
    e.settle()
    conns = e.with_mail()
    assert len(conns) == len(backend), (f"expected {len(backend)} backend connection(s) with a MAIL, "
                                        f"got {len(conns)}: {conns!r}")
    pending = list(messages)
    for conn, commands in zip(conns, backend):
        got = as_bytes(conn.commands)
        assert got == [BACKEND_EHLO] + list(commands), \
            f"backend commands:\n  got      {got!r}\n  expected {[BACKEND_EHLO] + list(commands)!r}"
        assert conn.received == rebuild(conn), \
            f"backend bytes are more than the commands and messages: {conn.received!r}"
        for content in conn.messages:
            assert pending, f"unexpected message at the backend: {content!r}"
            expected = pending.pop(0)
            assert isinstance(expected, Msg), f"expected an aborted DATA, the message completed: {content!r}"
            check_message(content, expected)
            assert content.count(b"\r\n.\r\n") == 0
        if conn.partial is not None:
            assert pending and isinstance(pending[0], Aborted), f"unexpected partial DATA: {conn!r}"
            check_aborted(conn, pending.pop(0))
    assert not pending, f"messages that never reached the backend: {pending!r}"
    everything = e.all_bytes()
    for marker in absent:
        assert marker not in everything, f"{marker!r} reached the backend: {everything[:4000]!r}"


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------
MAIL = b"MAIL FROM:<alice@example.test>\r\n"
RCPT = b"RCPT TO:<bob@example.test>\r\n"
BODY = b"Subject: conversation\r\n\r\nhello\r\n"
B_MAIL = b"MAIL FROM:<alice@example.test>"
B_RCPT = b"RCPT TO:<bob@example.test>"


def mail_ok(line=MAIL):
    return [S(line), X(B_MAIL_OK)]


def rcpt_ok(line=RCPT):
    return [S(line), X(B_RCPT_OK)]


def data_ok(body=BODY):
    return [S(b"DATA\r\n"), X(R_START_DATA), S(body + b".\r\n"), E(250, "2.0.0")]


def transaction(mail=MAIL, rcpt=RCPT, body=BODY):
    return mail_ok(mail) + rcpt_ok(rcpt) + data_ok(body)


TX_BACKEND = [B_MAIL, B_RCPT, b"DATA"]


@dataclasses.dataclass
class Case:
    id: str
    steps: list
    transports: tuple = INSIDE
    auth: bool = True
    config: str = "reject"
    backend: list = None            # per backend connection with a MAIL: commands after EHLO
    messages: tuple = (BODY,)       # Msg / Aborted / bytes (= Msg(bytes))
    absent: tuple = ()
    splits: tuple = SPLITS


CASES = []


def case(*args, **kwargs):
    CASES.append(Case(*args, **kwargs))


def bad(line):
    return [S(line), X(R_BAD_CHARS)]


# 1. NUL, bare CR, bare LF inside command lines -------------------------------
case("nul-noop", bad(b"NOOP\x00\r\n") + transaction() + bad(b"NOOP\x00 again\r\n"),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"\x00",))
case("nul-mail", bad(b"MAIL FROM:<alice@example.test>\x00\r\n")
     + bad(b"MAIL FROM:<alice@example.test\x00evil@example.test>\r\n") + transaction(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"\x00", b"evil"))
case("nul-rcpt-in-transaction", mail_ok() + bad(b"RCPT TO:<x@example.test>\x00\r\n")
     + bad(b"RCPT TO:<\x00x@example.test>\r\n") + rcpt_ok() + data_ok(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"\x00", b"<x@example.test>"))
case("bare-cr-mail-then-rcpt", bad(b"MAIL FROM:<a@example.test>\rRCPT TO:<x@example.test>\r\n")
     + transaction(), backend=[TX_BACKEND + [b"QUIT"]],
     absent=(b"<a@example.test>", b"<x@example.test>", b"\r\r", b"\rR"))
case("bare-cr-in-transaction", mail_ok() + bad(b"RCPT TO:<bob@example.test>\rDATA\r\n")
     + bad(b"RSET\r\r\n") + rcpt_ok() + data_ok(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"RSET",))
case("bare-lf-rcpt", mail_ok() + bad(b"RCPT TO:<x@example.test>\n") + rcpt_ok() + data_ok(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"<x@example.test>",))
case("bare-lf-mail-then-crlf-rcpt",
     [S(b"MAIL FROM:<alice@example.test>\nRCPT TO:<x@example.test>\r\n"), X(R_BAD_CHARS), X(R_NEED_MAIL)]
     + transaction(), backend=[TX_BACKEND + [b"QUIT"]], absent=(b"<x@example.test>",))
case("bare-lf-data", mail_ok() + rcpt_ok() + bad(b"DATA\n") + data_ok(),
     backend=[TX_BACKEND + [b"QUIT"]])
case("bare-cr-ehlo-header-injection", bad(b"EHLO evil.example\rX-Injected: yes\r\n") + transaction(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"X-Injected", b"evil.example"))
# Outside TLS: the same refusals, STARTTLS and QUIT with a bad ending do nothing.
case("outside-nul", bad(b"NOOP\x00\r\n") + bad(b"EHLO client\x00.example.test\r\n")
     + bad(b"MAIL FROM:<alice@example.test>\x00\r\n") + bad(b"STARTTLS\x00\r\n")
     + [S(b"NOOP\r\n"), X(R_OK)], transports=("plain",), backend=[], absent=(b"\x00",))
case("outside-bare-cr", bad(b"MAIL FROM:<a@example.test>\rRCPT TO:<x@example.test>\r\n")
     + bad(b"STARTTLS\rNOOP\r\n") + bad(b"QUIT\r\r\n") + [S(b"NOOP\r\n"), X(R_OK)],
     transports=("plain",), backend=[], absent=(b"example.test>",))
case("outside-bare-lf", bad(b"RCPT TO:<x@example.test>\n") + bad(b"STARTTLS\n") + bad(b"QUIT\n")
     + bad(b"EHLO client.example.test\n") + [S(b"NOOP\r\n"), X(R_OK)],
     transports=("plain",), backend=[], absent=(b"example.test>",))
case("outside-transaction-commands", [S(MAIL), X(R_MUST_STARTTLS), S(RCPT), X(R_NEED_MAIL),
                                      S(b"DATA\r\n"), X(R_NEED_MAIL), S(ALICE_AUTH + b"\r\n"),
                                      X(R_MUST_STARTTLS), S(b"RSET\r\n"), X(R_OK)],
     transports=("plain",), backend=[], absent=(b"alice",))

# 2. 8-bit octets in commands outside SMTPUTF8 --------------------------------
JOERG = b"j\xc3\xb6rg@example.test"
UTF8_RCPT = "\u5353\u6587@b\u00fccher.example"
case("8bit-ehlo", bad(b"EHLO h\xc3\xa9.example\r\n") + transaction(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"h\xc3\xa9", b"from h.example"))
case("8bit-other-verbs-in-transaction",
     mail_ok() + bad(b"NOOP \xff\r\n") + bad(b"HELP \xe9\r\n") + bad(b"VRFY j\xc3\xb6rg\r\n")
     + bad(b"N\xc3\x96OP\r\n") + bad(b"RSET \xe9\r\n") + bad(b"DATA \xe9\r\n")
     + bad(b"XCLIENT NAME=\xc3\xa9\r\n") + rcpt_ok() + data_ok(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"\xff", b"\xe9", b"\xc3", b"NOOP", b"RSET"))
case("8bit-session-verbs", bad(b"STARTTLS \xe9\r\n") + bad(b"AUTH PLAIN \xe9\r\n") + bad(b"QUIT \xe9\r\n")
     + bad(b"EHLO client.example.test \xe9\r\n") + transaction(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"\xe9",))
case("8bit-before-auth", bad(b"AUTH PLAIN \xe9\r\n") + bad(b"HELP \xe9\r\n")
     + [S(ALICE_AUTH + b"\r\n"), E(235, "2.7.0")] + transaction(),
     auth=False, backend=[TX_BACKEND + [b"QUIT"]], absent=(b"\xe9",))
case("outside-8bit", bad(b"EHLO h\xc3\xa9.example\r\n") + bad(b"STARTTLS \xe9\r\n") + bad(b"NOOP \xff\r\n")
     + bad(b"HELP \xe9\r\n") + bad(b"VRFY j\xc3\xb6rg\r\n") + bad(b"W\xc3\x8fZ\r\n")
     + [S(b"NOOP\r\n"), X(R_OK)],
     transports=("plain",), backend=[], absent=(b"\xe9", b"\xc3", b"\xff"))
case("utf8-mail-without-smtputf8", [S(b"MAIL FROM:<" + JOERG + b">\r\n"), X(R_UTF8),
                                    S(b"MAIL FROM:<alice@b\xc3\xbccher.example> BODY=8BITMIME\r\n"), X(R_UTF8)]
     + transaction(), backend=[TX_BACKEND + [b"QUIT"]], absent=(b"\xc3",))
case("utf8-rcpt-without-smtputf8", mail_ok() + [S(b"RCPT TO:<" + JOERG + b">\r\n"), X(R_UTF8)]
     + rcpt_ok() + data_ok(), backend=[TX_BACKEND + [b"QUIT"]], absent=(b"\xc3",))
case("utf8-with-smtputf8-relayed-byte-exact",
     mail_ok(b"MAIL FROM:<" + JOERG + b"> SMTPUTF8\r\n")
     + rcpt_ok(b"RCPT TO:<" + UTF8_RCPT.encode() + b">\r\n") + data_ok()
     # The next transaction has no SMTPUTF8: the UTF-8 recipient is refused again.
     + mail_ok() + [S(b"RCPT TO:<" + JOERG + b">\r\n"), X(R_UTF8)] + rcpt_ok()
     + [S(b"RSET\r\n"), X(R_OK)]
     + mail_ok(b"MAIL FROM:<" + JOERG + b"> SMTPUTF8\r\n") + [S(b"RSET\r\n"), X(R_OK)]
     + mail_ok() + [S(b"RCPT TO:<" + JOERG + b">\r\n"), X(R_UTF8)],
     backend=[[b"MAIL FROM:<" + JOERG + b"> SMTPUTF8", b"RCPT TO:<" + UTF8_RCPT.encode() + b">", b"DATA",
               B_MAIL, B_RCPT, b"RSET", b"MAIL FROM:<" + JOERG + b"> SMTPUTF8", b"RSET", B_MAIL, b"QUIT"]],
     messages=(Msg(BODY, rcpt=UTF8_RCPT),))
case("utf8-invalid", [S(b"MAIL FROM:<j\xffrg@example.test> SMTPUTF8\r\n"), X(R_MAIL_SYNTAX),
                      S(b"MAIL FROM:<\xc0\xafx@example.test> SMTPUTF8\r\n"), X(R_MAIL_SYNTAX),
                      S(b"MAIL FROM:<alice@\xff.example> SMTPUTF8\r\n"), X(R_MAIL_SYNTAX)]
     + mail_ok(b"MAIL FROM:<" + JOERG + b"> SMTPUTF8\r\n")
     + [S(b"RCPT TO:<\xff@example.test>\r\n"), X(R_RCPT_SYNTAX),
        S(b"RCPT TO:<x@\xed\xa0\x80.example>\r\n"), X(R_RCPT_SYNTAX),
        S(b"RCPT TO:<\xc3@example.test>\r\n"), X(R_RCPT_SYNTAX)]
     + rcpt_ok() + data_ok(),
     backend=[[b"MAIL FROM:<" + JOERG + b"> SMTPUTF8", B_RCPT, b"DATA", b"QUIT"]],
     absent=(b"\xff", b"\xc0", b"\xed", b"<\xc3@"))
case("8bit-in-esmtp-parameter", [S(b"MAIL FROM:<alice@example.test> ENVID=\xc3\xa9t\xc3\xa9\r\n"), X(R_MAIL_SYNTAX),
                                 S(b"MAIL FROM:<alice@example.test> X\xc3\xa9=1\r\n"), X(R_MAIL_SYNTAX),
                                 S(b"MAIL FROM:<" + JOERG + b"> SMTPUTF8 ENVID=\xc3\xa9\r\n"), X(R_MAIL_SYNTAX),
                                 S(b"MAIL FROM:<alice@example.test> SMTPUTF8=\xc3\xa9\r\n"), X(R_MAIL_SYNTAX)]
     + mail_ok(b"MAIL FROM:<alice@example.test> SMTPUTF8\r\n")
     + [S(b"RCPT TO:<bob@example.test> ORCPT=rfc822;" + JOERG + b"\r\n"), X(R_RCPT_SYNTAX),
        S(b"RCPT TO:<bob@example.test> NOTIFY=N\xc3\x89VER\r\n"), X(R_RCPT_SYNTAX)]
     + rcpt_ok() + data_ok(),
     backend=[[b"MAIL FROM:<alice@example.test> SMTPUTF8", B_RCPT, b"DATA", b"QUIT"]],
     absent=(b"\xc3", b"ENVID", b"ORCPT", b"NOTIFY"))

# 3. Commands that are never forwarded ----------------------------------------
NEVER = [
    (b"XCLIENT ADDR=192.0.2.1 NAME=spoofed.example", R_UNRECOGNIZED),
    (b"xclient LOGIN=admin", R_UNRECOGNIZED),
    (b"XFORWARD ADDR=192.0.2.1 HELO=spoofed.example", R_UNRECOGNIZED),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 12345 25", R_UNRECOGNIZED),
    (b"ETRN example.test", R_UNRECOGNIZED),
    (b"TURN", R_UNRECOGNIZED),
    (b"ATRN example.test", R_UNRECOGNIZED),
    (b"EXPN staff", R_NOT_IMPLEMENTED),
    (b"DEBUG", R_UNRECOGNIZED),
    (b"VERB", R_UNRECOGNIZED),
    (b"BDAT 0 LAST", R_NOT_IMPLEMENTED),
    (b"WIZ", R_UNRECOGNIZED),
    (b"KILL", R_UNRECOGNIZED),
]
NEVER_MARKERS = tuple(line for line, _ in NEVER) + (b"AUTH", b"STARTTLS", b"spoofed", b"192.0.2")


def never(extra=()):
    steps = []
    for line, reply in list(NEVER) + list(extra):
        steps += [S(line + b"\r\n"), X(reply)]
    return steps


AFTER_TLS = [(b"STARTTLS", R_TLS_ACTIVE)]
AFTER_AUTH = AFTER_TLS + [(ALICE_AUTH, R_AUTH_ALREADY), (b"AUTH LOGIN", R_AUTH_ALREADY)]
case("never-forwarded-before-auth", never(AFTER_TLS) + [S(MAIL), X(R_AUTH_REQUIRED),
                                                        S(ALICE_AUTH + b"\r\n"), E(235, "2.7.0")]
     + transaction(), auth=False, backend=[TX_BACKEND + [b"QUIT"]], absent=NEVER_MARKERS)
case("never-forwarded-after-auth", never(AFTER_AUTH) + transaction(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=NEVER_MARKERS)
case("never-forwarded-in-transaction", mail_ok() + never(AFTER_AUTH) + rcpt_ok() + never(AFTER_AUTH)
     + data_ok(), backend=[TX_BACKEND + [b"QUIT"]], absent=NEVER_MARKERS)
case("never-forwarded-after-a-message", transaction() + never(AFTER_AUTH),
     backend=[TX_BACKEND + [b"QUIT"]], absent=NEVER_MARKERS)
case("outside-never-forwarded", never([(ALICE_AUTH, R_MUST_STARTTLS)]) + [S(b"NOOP\r\n"), X(R_OK)],
     transports=("plain",), backend=[], absent=NEVER_MARKERS)


# 4. Canonical MAIL and RCPT lines ---------------------------------------------
def canonical_mail(pairs):
    steps, backend = [], []
    for sent, relayed in pairs:
        steps += mail_ok(sent + b"\r\n") + [S(b"RSET\r\n"), X(R_OK)]
        backend += [relayed, b"RSET"]
    return steps, backend


def canonical_case(name, pairs, absent=()):
    steps, backend = canonical_mail(pairs)
    case(name, steps + transaction(), backend=[backend + TX_BACKEND + [b"QUIT"]], absent=absent)


canonical_case("canonical-auth-parameter-stripped", [
    (b"MAIL FROM:<alice@example.test> AUTH=<>", B_MAIL),
    (b"MAIL FROM:<alice@example.test> AUTH=alice@example.test", B_MAIL),
    (b"MAIL FROM:<alice@example.test> auth=admin+40example.test BODY=8BITMIME",
     b"MAIL FROM:<alice@example.test> BODY=8BITMIME"),
    (b"MAIL FROM:<alice@example.test> SIZE=100 AUTH=<>", b"MAIL FROM:<alice@example.test> SIZE=100"),
], absent=(b"AUTH=", b"auth=", b"admin"))
canonical_case("canonical-verb-case-and-spacing", [
    (b"mail from:<alice@example.test>", B_MAIL),
    (b"Mail From:<alice@example.test> size=100", b"MAIL FROM:<alice@example.test> SIZE=100"),
    (b"MAIL FROM: <alice@example.test>", B_MAIL),
    (b"MAIL FROM:<alice@example.test>   ", B_MAIL),
    (b"MAIL   FROM:<alice@example.test>", B_MAIL),
    (b"MAIL FROM:<>", b"MAIL FROM:<>"),
], absent=(b"mail from", b"Mail", b"size=", b"  "))
canonical_case("canonical-source-route", [
    (b"MAIL FROM:<@relay.example:alice@example.test>", B_MAIL),
    (b"MAIL FROM:<@a.example,@b.example:alice@example.test>", B_MAIL),
], absent=(b"relay.example", b"a.example", b"b.example"))
canonical_case("canonical-quoted-local-part", [
    (b'MAIL FROM:<"alice"@example.test>', B_MAIL),
    (b'MAIL FROM:<"al.ice"@example.test>', b"MAIL FROM:<al.ice@example.test>"),
    (b'MAIL FROM:<"a\\lice"@example.test>', B_MAIL),
    (b'MAIL FROM:<"al ice"@example.test>', b'MAIL FROM:<"al ice"@example.test>'),
], absent=(b'"alice"', b"\\"))
RCPT_FORMS = [
    (b"RCPT TO:<Postmaster>", b"RCPT TO:<Postmaster>"),
    (b"rcpt to:<postmaster>", b"RCPT TO:<postmaster>"),
    (b"RCPT TO:<@relay.example:bob@example.test>", B_RCPT),
    (b'RCPT TO:<"bob"@example.test>', B_RCPT),
    (b"RCPT TO: <carol@example.test> notify=SUCCESS,FAILURE", b"RCPT TO:<carol@example.test> NOTIFY=SUCCESS,FAILURE"),
    (b"RCPT TO:<dave@[192.0.2.1]>", b"RCPT TO:<dave@[192.0.2.1]>"),
]
case("canonical-rcpt", mail_ok() + [step for sent, _ in RCPT_FORMS for step in rcpt_ok(sent + b"\r\n")]
     + data_ok(), backend=[[B_MAIL] + [relayed for _, relayed in RCPT_FORMS] + [b"DATA", b"QUIT"]],
     messages=(Msg(BODY, rcpt=None),), absent=(b"relay.example", b'"bob"', b"rcpt to", b"notify="))

# 6. DATA framing: smuggling and dot-stuffing ----------------------------------
HEAD = b"Subject: smuggling test\r\n\r\nhello"
SMUGGLED = (b"MAIL FROM:<evil@example.test>\r\n"
            b"RCPT TO:<victim@example.test>\r\n"
            b"DATA\r\n"
            b"smuggled\r\n")
# What the backend must receive under "normalize", whatever the fake end:
# the lone dot is content, stuffed, and only the real end is an end.
NORMALIZED = HEAD + b"\r\n..\r\n" + SMUGGLED
CLEAN = b"Subject: clean\r\n\r\nclean message\r\n"

for fake_name, fake in FAKE_ENDS.items():
    smuggle = mail_ok() + rcpt_ok() + [S(b"DATA\r\n"), X(R_START_DATA), S(HEAD + fake + SMUGGLED + b".\r\n")]
    case(f"smuggling-{fake_name}-normalize", smuggle + [E(250, "2.0.0")], config="normalize",
         backend=[TX_BACKEND + [b"QUIT"]], messages=(NORMALIZED,))
    # Under "reject": 550, the backend connection is dropped inside DATA, and
    # the session goes on with a fresh backend connection.
    case(f"smuggling-{fake_name}-reject", smuggle + [X(R_BARE), S(b"NOOP\r\n"), X(R_OK)]
         + transaction(body=CLEAN),
         # Whatever was forwarded before the bare ending is a prefix of the first line (with
         # its CRLF when that was canonical); the lone dot and what follows never are.
         backend=[TX_BACKEND, TX_BACKEND + [b"QUIT"]], messages=(Aborted(HEAD + b"\r\n"), CLEAN),
         absent=(b"evil", b"victim", b"smuggled"))

DOTS_SENT = b"Subject: dots\r\n\r\n..\r\n...\r\n..x\r\n.y\r\n .\r\nlast\r\n"
DOTS_RELAYED = b"Subject: dots\r\n\r\n..\r\n...\r\n..x\r\ny\r\n .\r\nlast\r\n"
case("dot-stuffing", transaction(body=DOTS_SENT), backend=[TX_BACKEND + [b"QUIT"]],
     messages=(DOTS_RELAYED,))
case("dot-stuffing-normalize", transaction(body=DOTS_SENT), config="normalize",
     backend=[TX_BACKEND + [b"QUIT"]], messages=(DOTS_RELAYED,))
case("empty-message", mail_ok() + rcpt_ok() + [S(b"DATA\r\n"), X(R_START_DATA), S(b".\r\n"), E(250, "2.0.0")],
     backend=[TX_BACKEND + [b"QUIT"]], messages=(b"",))
case("data-pipelined-with-content", [S(MAIL + RCPT + b"DATA\r\n" + BODY + b".\r\n"), X(B_MAIL_OK), X(B_RCPT_OK),
                                     X(R_START_DATA), E(250, "2.0.0")],
     backend=[TX_BACKEND + [b"QUIT"]])
case("commands-pipelined-after-the-end", mail_ok() + rcpt_ok()
     + [S(b"DATA\r\n"), X(R_START_DATA), S(BODY + b".\r\n" + MAIL + b"RSET\r\n"), E(250, "2.0.0"),
        X(B_MAIL_OK), X(R_OK)],
     backend=[TX_BACKEND + [B_MAIL, b"RSET", b"QUIT"]])
case("lone-dot-after-bare-lf-normalize", mail_ok() + rcpt_ok()
     + [S(b"DATA\r\n"), X(R_START_DATA), S(b"a\n.\r\nb\r\n.\nc\r\n.\r\n"), E(250, "2.0.0")],
     config="normalize", backend=[TX_BACKEND + [b"QUIT"]], messages=(b"a\r\n..\r\nb\r\n..\r\nc\r\n",))

# 9. Over-long command lines ---------------------------------------------------
LONG_NOOP = b"NOOP " + b"x" * 600 + b"\r\n"
NOOP_512 = b"NOOP " + b"y" * 505 + b"\r\n"     # exactly 512 octets with CRLF: allowed
NOOP_513 = b"NOOP " + b"y" * 506 + b"\r\n"
HUGE_HIDING = b"NOOP " + b"z" * 13000 + b"\rMAIL FROM:<evil@example.test>\rRCPT TO:<victim@example.test>\r\n"
case("outside-overlong", [S(LONG_NOOP), X(R_TOO_LONG), S(NOOP_512), X(R_OK), S(NOOP_513), X(R_TOO_LONG),
                          S(HUGE_HIDING), X(R_TOO_LONG), S(b"NOOP\r\n"), X(R_OK)],
     transports=("plain",), backend=[], absent=(b"zzzz", b"evil", b"victim"))
case("overlong-before-transaction", [S(LONG_NOOP), X(R_TOO_LONG), S(NOOP_512), X(R_OK), S(NOOP_513),
                                     X(R_TOO_LONG), S(b"MAIL FROM:<" + b"a" * 600 + b"@example.test>\r\n"),
                                     X(R_TOO_LONG), S(HUGE_HIDING), X(R_TOO_LONG)] + transaction(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"aaaa", b"zzzz", b"evil", b"victim"))
case("overlong-in-transaction", mail_ok() + [S(b"RCPT TO:<" + b"b" * 600 + b"@example.test>\r\n"), X(R_TOO_LONG),
                                             S(LONG_NOOP), X(R_TOO_LONG), S(HUGE_HIDING), X(R_TOO_LONG)]
     + rcpt_ok() + data_ok(),
     backend=[TX_BACKEND + [b"QUIT"]], absent=(b"bbbb", b"xxxx", b"zzzz", b"evil", b"victim"))


def case_params():
    for c in CASES:
        for transport in c.transports:
            for split in c.splits:
                yield pytest.param(c, transport, split, id=f"{c.id}-{transport}-{split}")


@pytest.mark.parametrize("c,transport,split", list(case_params()))
def test_conversation(env, c, transport, split):
    e = env(c.config)
    transcript = []
    with open_session(e.guard, transport, auth=c.auth) as w:
        run_steps(w, c.steps + [S(b"QUIT\r\n"), X(R_BYE), CLOSE], split, transcript)
    if transport == "plain" or not c.backend:
        assert not c.backend, "a case with backend traffic cannot run outside TLS"
        check_no_relay(e, c.absent)
        return
    messages = [Msg(m) if isinstance(m, bytes) else m for m in c.messages]
    check_backend(e, c.backend, messages, c.absent)


# --------------------------------------------------------------------------
# 5. STARTTLS injection
# --------------------------------------------------------------------------
INJECTIONS = {
    "noop": b"NOOP\r\n",
    "mail-rcpt": b"MAIL FROM:<injected@example.test>\r\nRCPT TO:<injected-rcpt@example.test>\r\n",
    "ehlo-auth": b"EHLO injected.example\r\n" + ALICE_AUTH + b"\r\n",
    "full-transaction": (b"EHLO injected.example\r\n" + ALICE_AUTH + b"\r\n"
                         b"MAIL FROM:<injected@example.test>\r\nRCPT TO:<injected-rcpt@example.test>\r\n"
                         b"DATA\r\nSubject: injected\r\n\r\ninjected\r\n.\r\n"),
}


@pytest.mark.parametrize("name", list(INJECTIONS))
def test_starttls_injection(env, name):
    """Plaintext pipelined after STARTTLS (one write, so it sits in
    smtpguard's buffer when STARTTLS runs) is never executed or forwarded,
    and the TLS session starts from scratch."""
    e = env()
    transcript = []
    raw = socket.create_connection((HOST, e.guard.starttls_port), timeout=IO_TIMEOUT)
    nodelay(raw)
    with SmtpWire(raw) as w:
        assert w.read_reply().code == 220
        w.ehlo()
        w.send(b"STARTTLS\r\n" + INJECTIONS[name])
        r = w.read_reply()
        assert r.raw == b"220 2.0.0 Ready to start TLS\r\n", f"STARTTLS: {r!r}"
        time.sleep(0.2)  # give any (wrong) plaintext reply to the injection time to arrive
        w.sock.setblocking(False)
        try:
            leaked = w.sock.recv(65536)
        except BlockingIOError:
            leaked = b""
        w.sock.settimeout(IO_TIMEOUT)
        assert not w.buf and not leaked, f"plaintext after the 220: {w.buf + leaked!r}"
        w.sock = e.guard.tls_context().wrap_socket(w.sock, server_hostname=HOSTNAME)
        w.expect_silence(0.3)
        run_steps(w, [
            # Fresh session: no EHLO yet, not authenticated.
            S(MAIL), X(R_HELO_FIRST),
            S(b"NOOP\r\n"), X(R_OK),
            S(b"EHLO " + CLIENT_NAME.encode() + b"\r\n"), E(250),
            S(MAIL), X(R_AUTH_REQUIRED),
            S(ALICE_AUTH + b"\r\n"), E(235, "2.7.0"),
        ] + transaction() + [S(b"QUIT\r\n"), X(R_BYE), CLOSE], "whole", transcript)
    check_backend(e, [TX_BACKEND + [b"QUIT"]], [Msg(BODY)], absent=(b"injected",))


def test_starttls_twice_and_on_implicit(env):
    e = env()
    for transport in INSIDE:
        with open_session(e.guard, transport) as w:
            run_steps(w, [S(b"STARTTLS\r\nNOOP\r\n"), X(R_TLS_ACTIVE), X(R_OK), S(b"QUIT\r\n"), X(R_BYE), CLOSE],
                      "whole", [])
    check_no_relay(e, absent=(b"STARTTLS",))


# --------------------------------------------------------------------------
# 7. Client gone mid-DATA
# --------------------------------------------------------------------------
ABORT_CONTENT = b"Subject: abort\r\n\r\npartial body\r\n"
TAILS = {
    "after-a-line": b"",
    "dot": b".",              # "\r\n." : the start of the end marker
    "dot-cr": b".\r",         # "\r\n.\r": all of it but the LF
}


def abort_client(w, how):
    sock = w.sock
    if how == "fin":
        sock.close()
    elif how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    elif how == "close_notify":
        sock.settimeout(2)
        try:
            raw = sock.unwrap()  # sends close_notify
        except (OSError, ssl.SSLError, ValueError):
            raw = None
        if raw is not None:
            raw.close()
        else:
            sock.close()
    else:
        raise ValueError(how)


@pytest.mark.parametrize("tail", list(TAILS))
@pytest.mark.parametrize("how", ["fin", "rst", "close_notify", "stall"])
@pytest.mark.parametrize("transport", INSIDE)
def test_client_gone_mid_data(env, transport, how, tail):
    e = env("stall" if how == "stall" else "reject")
    w = open_session(e.guard, transport)
    try:
        run_steps(w, mail_ok() + rcpt_ok() + [S(b"DATA\r\n"), X(R_START_DATA),
                                              S(ABORT_CONTENT + TAILS[tail])], "whole", [])
        # Make sure smtpguard has passed the content on before the client goes.
        assert e.with_mail(), "no backend connection"
        conn = e.with_mail()[0]
        assert harness.wait_until(lambda: ABORT_CONTENT in conn.received, 5), \
            f"content never reached the backend: {conn.received!r}"
        if how == "stall":
            started = time.monotonic()
            r = w.read_reply(timeout=10)
            assert r.raw == R_TIMEOUT, f"stalled client: {r!r}"
            assert time.monotonic() - started < 5
            with pytest.raises(ConnectionClosed):
                w.read_line()
        else:
            abort_client(w, how)
    finally:
        w.close()
    check_backend(e, [TX_BACKEND], [Aborted(ABORT_CONTENT, exact=True)])


# --------------------------------------------------------------------------
# 8. Talking before the greeting
# --------------------------------------------------------------------------
EARLY = {
    "ehlo": b"EHLO client.example.test\r\n",
    "transaction": (b"EHLO early.example\r\n" + ALICE_AUTH + b"\r\n"
                    b"MAIL FROM:<early@example.test>\r\nRCPT TO:<early-rcpt@example.test>\r\n"
                    b"DATA\r\nSubject: early\r\n\r\nearly\r\n.\r\n"),
}


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("early", list(EARLY))
def test_talking_before_the_greeting(env, early, split):
    e = env("pregreet")
    raw = socket.create_connection((HOST, e.guard.starttls_port), timeout=IO_TIMEOUT)
    nodelay(raw)
    with SmtpWire(raw) as w:
        # The reply may come while the client is still writing.
        send_split(w, EARLY[early], split, tolerate_close=True)
        r = w.read_reply()
        assert r.raw == R_PREGREET, f"client talking before the greeting: expected {R_PREGREET!r}, got {r!r}"
        with pytest.raises(ConnectionClosed):
            w.read_line()
    check_no_relay(e, absent=(b"early", b"AUTH"))


def test_waiting_for_the_greeting_is_fine(env):
    e = env("pregreet")
    started = time.monotonic()
    with open_session(e.guard, "starttls") as w:
        assert time.monotonic() - started >= 0.4, "greeting not delayed"
        run_steps(w, transaction() + [S(b"QUIT\r\n"), X(R_BYE), CLOSE], "whole", [])
    check_backend(e, [TX_BACKEND + [b"QUIT"]], [Msg(BODY)])

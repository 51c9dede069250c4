"""POP-before-SMTP: smtpguard's POP3 front (POP3S and STLS) in front of a real
Dovecot. A client that logs in over POP3 may relay over SMTP without AUTH,
from the same address, for pop3.relay_ttl seconds.

Dovecot here allows plaintext logins (it only ever sees smtpguard, on
loopback), so whatever it is sent, it would accept: a check that a command
was refused before TLS, or before login, fails if smtpguard passed it on.
"""

import base64
import hashlib
import json
import os
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

import harness
from dovecot_instance import USERS as POP_USERS
from harness import (CLIENT_NAME, HOST, HOSTNAME, IO_TIMEOUT, START_TIMEOUT, SmtpWire, free_port,
                     metric_value, read_text, wait_for_ports, wait_until)

ALICE = ("alice", POP_USERS["alice"])
BOB = ("bob", POP_USERS["bob"])
LOGINS = "smtpguard_pop3_logins_total"
GRANTED = "smtpguard_pop_before_smtp_clients"


# --------------------------------------------------------------------------
# smtpguard with a pop3 section
# --------------------------------------------------------------------------
def pop3_section(backend_address, pop3s_port, pop3_port, relay_ttl=None):
    section = {
        "listeners": [
            {"name": "pop3s", "address": f"{HOST}:{pop3s_port}", "tls": "implicit"},
            {"name": "pop3", "address": f"{HOST}:{pop3_port}", "tls": "starttls"},
        ],
        "backend": {"address": backend_address},
    }
    if relay_ttl is not None:
        section["relay_ttl"] = relay_ttl
    return section


def start_guard(smtpguard_factory, backend_address, relay_ttl=None, auth=None):
    """smtpguard with both POP3 listeners (guard.pop3s_port, guard.pop3_port)
    relaying to backend_address."""
    pop3s_port, pop3_port = free_port(), free_port()
    config = {"pop3": pop3_section(backend_address, pop3s_port, pop3_port, relay_ttl),
              # No pause before each -ERR unless a test asks for one.
              "auth": {"failure_delay_ms": 0, **(auth or {})}}
    guard = smtpguard_factory(config=config)
    # The harness waits for the SMTP and metrics ports only.
    assert wait_for_ports([pop3s_port, pop3_port], guard.proc, START_TIMEOUT), \
        f"the POP3 listeners ({pop3s_port}, {pop3_port}) are not listening\n{guard.diagnostics()}"
    guard.pop3s_port, guard.pop3_port = pop3s_port, pop3_port
    return guard


@pytest.fixture
def guard(smtpguard_factory, dovecot):
    return start_guard(smtpguard_factory, f"{HOST}:{dovecot.port}")


# --------------------------------------------------------------------------
# A POP3 client that sends exactly what it is given
# --------------------------------------------------------------------------
class PopWire:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.sock.settimeout(IO_TIMEOUT)

    @classmethod
    def connect(cls, port, tls_context=None, source_ip=None):
        """Connected (TLS handshake done when tls_context is given); the
        greeting is in self.greeting."""
        source = (source_ip, 0) if source_ip else None
        sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT, source_address=source)
        if tls_context is not None:
            try:
                sock = tls_context.wrap_socket(sock, server_hostname=HOSTNAME)
            except Exception:
                sock.close()
                raise
        wire = cls(sock)
        wire.greeting = wire.line()
        return wire

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete line within {IO_TIMEOUT}s; have {self.buf!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise TimeoutError(f"no complete line within {IO_TIMEOUT}s; have {self.buf!r}")
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
            chunk = b""
        if not chunk:
            raise harness.ConnectionClosed(f"server closed the connection; unparsed input {self.buf!r}")
        self.buf += chunk

    def line(self, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text):
        self.send(text + "\r\n" if isinstance(text, str) else text + b"\r\n")
        return self.line()

    def multiline(self):
        """The lines of a multi-line response body, dot-unstuffed, up to
        (not including) the terminating '.'."""
        lines = []
        while True:
            line = self.line()
            if line == b".":
                return lines
            lines.append(line[1:] if line.startswith(b".") else line)

    def starttls(self, tls_context):
        assert self.buf == b"", f"bytes arrived before the TLS handshake: {self.buf!r}"
        self.sock = tls_context.wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.sock.settimeout(IO_TIMEOUT)

    def lines_until_closed(self, timeout=IO_TIMEOUT):
        """Every line the server sends until it closes the connection;
        fails if it is still open after timeout seconds."""
        lines = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                lines.append(self.line(max(0.01, deadline - time.monotonic())))
            except harness.ConnectionClosed:
                return lines
            except TimeoutError:
                raise AssertionError(f"the server did not close the connection within {timeout}s; "
                                     f"it sent {lines!r}, unparsed {self.buf!r}")


def capabilities(wire):
    reply = wire.cmd("CAPA")
    assert reply.startswith(b"+OK"), f"CAPA: {reply!r}"
    lines = wire.multiline()
    for line in lines:
        assert not line.startswith((b"+OK", b"-ERR")), f"a status line inside CAPA's list: {lines!r}"
    return {line.split(b" ")[0].upper(): line for line in lines}


def login_user_pass(wire, user, password):
    reply = wire.cmd(f"USER {user}")
    assert reply.startswith(b"+OK"), f"USER {user}: {reply!r}"
    return wire.cmd(f"PASS {password}")


def b64(text):
    return base64.b64encode(text.encode()).decode()


def apop_digest(greeting, password):
    stamp = re.search(rb"<[^>]*>", greeting)
    assert stamp, f"no APOP timestamp in the greeting {greeting!r}"
    return hashlib.md5(stamp.group(0) + password.encode()).hexdigest()


def pop3s_client(guard):
    return poplib.POP3_SSL(HOST, guard.pop3s_port, timeout=IO_TIMEOUT, context=guard.tls_context())


# --------------------------------------------------------------------------
# SMTP side, logs and metrics
# --------------------------------------------------------------------------
def relay(guard, source_ip=None, subject="after POP3"):
    """MAIL, RCPT, DATA over SMTPS without AUTH: (code, reply) of MAIL when it
    is refused, else of the end of DATA."""
    source = (source_ip, 0) if source_ip else None
    with smtplib.SMTP_SSL(HOST, guard.implicit_port, local_hostname=CLIENT_NAME, timeout=IO_TIMEOUT,
                          context=guard.tls_context(), source_address=source) as smtp:
        smtp.ehlo()
        code, reply = smtp.mail("alice@example.test")
        if code != 250:
            return code, reply
        code, reply = smtp.rcpt("someone@example.test")
        assert code == 250, f"RCPT after MAIL was accepted: {code} {reply!r}"
        return smtp.data(f"Subject: {subject}\r\n\r\nsent without AUTH\r\n".encode())


def assert_refused(guard, source_ip=None):
    code, reply = relay(guard, source_ip)
    assert (code, reply[:5]) == (530, b"5.7.0"), \
        f"MAIL without AUTH and without a POP3 login: expected 530 5.7.0, got {code} {reply!r}"


def assert_relays(guard, recorder, source_ip=None, subject="after POP3"):
    before = recorder.count()
    code, reply = relay(guard, source_ip, subject)
    assert code == 250, (f"MAIL/DATA without AUTH after a POP3 login: {code} {reply!r}\n"
                         f"{read_text(guard.stderr_path)}")
    message = recorder.wait_for(before + 1)[-1]
    assert f"Subject: {subject}".encode() in message.content, message.content


def log_lines(guard, event):
    return [l for l in read_text(guard.stderr_path, limit=10**7).splitlines() if f"event={event} " in l]


def logins(guard, listener, result):
    return metric_value(guard.metrics(), LOGINS, listener=listener, result=result) or 0


def granted(guard):
    return metric_value(guard.metrics(), GRANTED)


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------
def check_config(binary, certs, users_file, work_dir, pop3):
    os.makedirs(work_dir, exist_ok=True)
    base = harness.Smtpguard(binary, work_dir, certs, users_file, f"{HOST}:25")
    config = dict(base.config, pop3=pop3)
    with open(base.config_path, "w") as f:
        json.dump(config, f, indent=2)
    proc = subprocess.run([binary, "--check-config", "--config", base.config_path],
                          capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


def good_pop3():
    return pop3_section(f"{HOST}:110", 1995, 1110, relay_ttl=300)


def test_check_config_accepts_a_pop3_section(binary, certs, users_file, tmp_path):
    rc, out = check_config(binary, certs, users_file, str(tmp_path / "good"), good_pop3())
    assert rc == 0, f"--check-config rejected a valid pop3 section:\n{out}"


def _set(path, value):
    def edit(section):
        node = section
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, named", [
    (_set(("listeners", 0, "tls"), "none"), "pop3.listeners[0].tls"),
    (_set(("listeners", 1, "tls"), "optional"), "pop3.listeners[1].tls"),
    (_set(("listeners", 0, "frobnicate"), True), "pop3.listeners[0].frobnicate"),
    (_set(("backend", "frobnicate"), 1), "pop3.backend.frobnicate"),
    (_set(("frobnicate",), 1), "pop3.frobnicate"),
    (_set(("relay_ttl",), 0), "pop3.relay_ttl"),
    (_set(("relay_ttl",), 86401), "pop3.relay_ttl"),
    (_set(("listeners", 0, "name"), "submissions"), "pop3.listeners[0].name"),
], ids=["tls-none", "tls-optional", "unknown-listener-key", "unknown-backend-key", "unknown-key",
        "ttl-zero", "ttl-too-long", "name-of-an-smtp-listener"])
def test_check_config_names_the_bad_pop3_setting(binary, certs, users_file, tmp_path, edit, named):
    pop3 = good_pop3()
    edit(pop3)
    rc, out = check_config(binary, certs, users_file, str(tmp_path / "bad"), pop3)
    assert rc != 0, f"--check-config accepted {named} in {json.dumps(pop3)}\n{out}"
    assert named in out, f"the error does not name {named}:\n{out}"


# --------------------------------------------------------------------------
# The POP3 front
# --------------------------------------------------------------------------
def test_the_greeting_is_the_backends(guard):
    seen = set()
    for port, ctx in ((guard.pop3s_port, guard.tls_context()), (guard.pop3_port, None),
                      (guard.pop3s_port, guard.tls_context())):
        with PopWire.connect(port, ctx) as wire:
            assert re.fullmatch(rb"\+OK Dovecot ready\. <[^<>@\s]+@[^<>\s]+>", wire.greeting), \
                f"greeting on port {port} is not Dovecot's: {wire.greeting!r}"
            seen.add(wire.greeting)
            wire.cmd("QUIT")
    # Dovecot's APOP timestamp is new for every connection.
    assert len(seen) == 3, f"the same greeting twice: {seen!r}"


def test_user_pass_over_pop3s_lets_the_address_relay(guard, recorder, dovecot):
    assert_refused(guard)
    pop = pop3s_client(guard)
    assert pop.getwelcome().startswith(b"+OK Dovecot ready.")
    assert pop.user(ALICE[0]).startswith(b"+OK")
    assert pop.pass_(ALICE[1]).startswith(b"+OK"), "PASS"
    count, _size = pop.stat()
    assert count >= 0
    assert pop.quit().startswith(b"+OK")

    assert re.search(r"pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.1",
                     dovecot.log()), f"Dovecot did not log alice's login:\n{dovecot.log()}"
    lines = log_lines(guard, "pop3_login")
    assert any("client=127.0.0.1" in l and re.search(r"\buser=\"?alice\b", l) for l in lines), \
        f"no event=pop3_login client=127.0.0.1 user=alice line:\n{read_text(guard.stderr_path)}"
    assert not log_lines(guard, "pop3_login_failed"), read_text(guard.stderr_path)

    assert_relays(guard, recorder, subject="after POP3S USER/PASS")
    # Any SMTP listener: the STARTTLS one, once TLS is up ...
    with guard.smtp_starttls() as smtp:
        smtp.sendmail("alice@example.test", ["someone@example.test"],
                      b"Subject: over starttls after POP3\r\n\r\nbody\r\n")
    assert b"over starttls after POP3" in recorder.wait_for(2)[-1].content
    # ... but require_tls still holds.
    with smtplib.SMTP(HOST, guard.starttls_port, timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo()
        code, reply = smtp.mail("alice@example.test")
        assert (code, reply[:5]) == (530, b"5.7.0") and b"STARTTLS" in reply, (code, reply)

    connects = [l for l in log_lines(guard, "connect")
                if "client=127.0.0.1" in l and re.search(r"\blistener=submissions?\b", l)]
    flags = [re.search(r"\bpop_before_smtp=(\w+)", l) for l in connects]
    assert flags and all(flags), "SMTP connect lines without pop_before_smtp=:\n" + "\n".join(connects)
    # Sessions before the POP3 login, then after it (the last three).
    values = [m.group(1) for m in flags]
    assert "false" in values[:-3] and values[-3:] == ["true"] * 3, "\n".join(connects)


def test_a_wrong_password_grants_nothing(guard, recorder):
    pop = pop3s_client(guard)
    pop.user(ALICE[0])
    with pytest.raises(poplib.error_proto) as refused:
        pop.pass_("not-the-password")
    assert str(refused.value).startswith("b'-ERR"), refused.value
    pop.quit()
    assert_refused(guard)
    recorder.expect_exactly(0)
    failed = log_lines(guard, "pop3_login_failed")
    assert any("client=127.0.0.1" in l for l in failed), read_text(guard.stderr_path)
    assert not log_lines(guard, "pop3_login"), read_text(guard.stderr_path)
    assert wait_until(lambda: logins(guard, "pop3s", "failure") == 1, timeout=5), guard.metrics()
    assert logins(guard, "pop3s", "success") == 0
    assert granted(guard) == 0


def test_apop_with_the_relayed_timestamp(guard, recorder, dovecot):
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        reply = wire.cmd(f"APOP bob {apop_digest(wire.greeting, 'not-the-password')}")
        assert reply.startswith(b"-ERR"), f"APOP with a wrong digest: {reply!r}"
    assert_refused(guard)

    pop = pop3s_client(guard)
    assert pop.apop(*BOB).startswith(b"+OK"), "APOP"
    pop.quit()
    assert re.search(r"Login: user=<bob>, method=APOP", dovecot.log()), dovecot.log()
    assert any(re.search(r"\buser=\"?bob\b", l) for l in log_lines(guard, "pop3_login")), \
        read_text(guard.stderr_path)
    assert_relays(guard, recorder, subject="after APOP")


def sasl_login(guard, exchange, user, password):
    """Logs in over POP3S with AUTH (exchange: plain-continuation,
    plain-initial-response or login), checks that the session is in the
    mailbox afterwards, and QUITs."""
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        if exchange == "plain-continuation":
            challenge = wire.cmd("AUTH PLAIN")
            assert challenge.startswith(b"+ ") or challenge == b"+", f"AUTH PLAIN: {challenge!r}"
            final = wire.cmd(b64(f"\0{user}\0{password}"))
        elif exchange == "plain-initial-response":
            final = wire.cmd(f"AUTH PLAIN {b64(chr(0) + user + chr(0) + password)}")
        else:
            first = wire.cmd("AUTH LOGIN")
            assert first.startswith(b"+ "), f"AUTH LOGIN: {first!r}"
            second = wire.cmd(b64(user))
            assert second.startswith(b"+ "), f"AUTH LOGIN user name: {second!r}"
            final = wire.cmd(b64(password))
        assert final.startswith(b"+OK"), f"AUTH ({exchange}): {final!r}"
        stat = wire.cmd("STAT")
        assert re.fullmatch(rb"\+OK \d+ \d+", stat), f"STAT after AUTH: {stat!r}"
        assert wire.cmd("QUIT").startswith(b"+OK")


SASL_EXCHANGES = ["plain-continuation", "plain-initial-response", "login"]


@pytest.mark.parametrize("exchange", SASL_EXCHANGES)
def test_sasl_auth_lets_the_address_relay(guard, recorder, dovecot, exchange):
    assert_refused(guard)
    sasl_login(guard, exchange, *ALICE)
    method = "LOGIN" if exchange == "login" else "PLAIN"
    assert re.search(rf"Login: user=<alice>, method={method}\b", dovecot.log()), dovecot.log()[-2000:]
    assert any("client=127.0.0.1" in l for l in log_lines(guard, "pop3_login")), \
        read_text(guard.stderr_path)
    assert_relays(guard, recorder, subject=f"after AUTH {exchange}")


@pytest.mark.parametrize("exchange", SASL_EXCHANGES)
def test_sasl_logins_are_logged_with_the_user_name(guard, exchange):
    sasl_login(guard, exchange, *BOB)
    lines = log_lines(guard, "pop3_login")
    assert any("client=127.0.0.1" in l and re.search(r"\buser=\"?bob\b", l) for l in lines), \
        "event=pop3_login after AUTH does not name the user (bob):\n" + "\n".join(lines)


def test_a_failed_sasl_auth_grants_nothing(guard, recorder):
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        reply = wire.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'not-the-password')}")
        assert reply.startswith(b"-ERR"), f"AUTH PLAIN with a wrong password: {reply!r}"
    assert_refused(guard)
    assert log_lines(guard, "pop3_login_failed"), read_text(guard.stderr_path)
    assert wait_until(lambda: logins(guard, "pop3s", "failure") == 1, timeout=5), guard.metrics()


def test_stls_listener_refuses_logins_before_tls(guard, recorder):
    with PopWire.connect(guard.pop3_port) as wire:
        assert wire.greeting.startswith(b"+OK"), wire.greeting
        caps = capabilities(wire)
        assert b"STLS" in caps, f"CAPA before STLS does not offer STLS: {caps!r}"
        assert b"USER" not in caps and b"SASL" not in caps, \
            f"CAPA before STLS offers a plaintext login: {caps!r}"

    digest = "0123456789abcdef0123456789abcdef"
    initial = b64("\0alice\0" + ALICE[1])
    # One connection each: refusing them must not depend on an error budget.
    for command in (f"USER {ALICE[0]}", f"PASS {ALICE[1]}", f"APOP alice {digest}",
                    f"AUTH PLAIN {initial}", "AUTH PLAIN"):
        with PopWire.connect(guard.pop3_port) as wire:
            reply = wire.cmd(command)
            assert reply.startswith(b"-ERR [AUTH]") and b"STLS" in reply, \
                f"{command.split()[0]} before STLS: expected -ERR [AUTH] ... STLS, got {reply!r}"
    assert_refused(guard)
    assert not log_lines(guard, "pop3_login"), read_text(guard.stderr_path)

    # The USER refused before TLS never reached Dovecot: a PASS after TLS has
    # no user name to go with.
    with PopWire.connect(guard.pop3_port) as wire:
        assert wire.cmd(f"USER {ALICE[0]}").startswith(b"-ERR [AUTH]")
        assert wire.cmd("STLS") == b"+OK Begin TLS negotiation"
        wire.starttls(guard.tls_context())
        reply = wire.cmd(f"PASS {ALICE[1]}")
        assert reply.startswith(b"-ERR"), f"PASS after TLS, with the only USER sent before it: {reply!r}"
    assert_refused(guard)


def test_stls_then_login_lets_the_address_relay(guard, recorder):
    pop = poplib.POP3(HOST, guard.pop3_port, timeout=IO_TIMEOUT)
    before = pop.capa()
    assert "STLS" in before and "USER" not in before and "SASL" not in before, before
    assert pop.stls(guard.tls_context()) == b"+OK Begin TLS negotiation"
    after = pop.capa()
    assert "USER" in after and "STLS" not in after, f"CAPA after STLS: {after!r}"
    assert "PLAIN" in after.get("SASL", []), f"CAPA after STLS lacks Dovecot's SASL line: {after!r}"
    with pytest.raises(poplib.error_proto):
        pop._shortcmd("STLS")
    assert pop.user(BOB[0]).startswith(b"+OK")
    assert pop.pass_(BOB[1]).startswith(b"+OK")
    pop.stat()
    pop.quit()
    assert wait_until(lambda: logins(guard, "pop3", "success") == 1, timeout=5), guard.metrics()
    assert any(re.search(r"\buser=\"?bob\b", l) for l in log_lines(guard, "pop3_login")), \
        read_text(guard.stderr_path)
    assert_relays(guard, recorder, subject="after STLS")


def test_pop3s_capabilities_and_no_stls(guard):
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        caps = capabilities(wire)
        assert b"USER" in caps, f"CAPA on pop3s lacks USER: {caps!r}"
        assert b"SASL" in caps and b"PLAIN" in caps[b"SASL"].split(), f"CAPA on pop3s: {caps!r}"
        assert b"STLS" not in caps, f"CAPA on pop3s offers STLS: {caps!r}"
        reply = wire.cmd("STLS")
        assert reply.startswith(b"-ERR"), f"STLS on pop3s: {reply!r}"
        # The session goes on.
        assert login_user_pass(wire, *ALICE).startswith(b"+OK")
        assert wire.cmd("QUIT").startswith(b"+OK")


def test_bytes_pipelined_after_stls_are_discarded(guard, recorder):
    sock = socket.create_connection((HOST, guard.pop3_port), timeout=IO_TIMEOUT)
    with PopWire(sock) as wire:
        assert wire.line().startswith(b"+OK")
        wire.send(b"STLS\r\nUSER alice\r\n")
        assert wire.line() == b"+OK Begin TLS negotiation"
        wire.starttls(guard.tls_context())
        # The next reply answers CAPA, not the USER that came with STLS.
        caps = capabilities(wire)
        assert b"USER" in caps, caps
        reply = wire.cmd(f"PASS {ALICE[1]}")
        assert reply.startswith(b"-ERR"), f"PASS after TLS was accepted: the pipelined USER ran ({reply!r})"
        assert login_user_pass(wire, *ALICE).startswith(b"+OK")
        assert wire.cmd("QUIT").startswith(b"+OK")


def test_only_login_commands_before_login(guard):
    # Dovecot answers +OK to XCLIENT from anyone (and ignores it unless it
    # trusts the peer), so a -ERR here comes from smtpguard.
    commands = ["XCLIENT ADDR=192.0.2.9", "STAT", "RETR 1", "LIST", "NOOP", "DELE 1"]
    replies = []
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        for i in range(60):
            command = commands[i % len(commands)]
            try:
                replies.append((command, wire.cmd(command)))
            except (harness.ConnectionClosed, BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
        else:
            raise AssertionError(f"still open after 60 commands refused before login: {replies[-3:]!r}")
    assert replies, "closed at the first command before login"
    assert all(reply.startswith(b"-ERR") for _command, reply in replies), replies


def message_with_dots():
    return (b"From: Bob <bob@example.test>\r\n"
            b"To: Alice <alice@example.test>\r\n"
            b"Subject: dots\r\n"
            b"Message-ID: <pop-dots@example.test>\r\n"
            b"\r\n"
            b".\r\n"
            b"..\r\n"
            b".leading dot\r\n"
            b"From the start of a line\r\n"
            b"\xc3\xa9 8-bit\r\n"
            b"last line\r\n")


def big_message(size=1 << 20):
    head = (b"From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\n"
            b"Subject: big\r\nMessage-ID: <pop-big@example.test>\r\n\r\n")
    body, n = [], 0
    while len(head) + n < size:
        line = (b".%07d " % len(body)) + bytes(range(0x41, 0x5b)) * 2 + b"\r\n"
        body.append(line)
        n += len(line)
    return head + b"".join(body)


def test_retr_returns_the_exact_bytes(guard, dovecot):
    dovecot.clear_mailbox("alice")
    small, big = message_with_dots(), big_message()
    dovecot.drop_message("alice", small)
    dovecot.drop_message("alice", big)
    pop = pop3s_client(guard)
    pop.user(ALICE[0])
    pop.pass_(ALICE[1])
    assert pop.stat() == (2, len(small) + len(big)), pop.stat()
    _resp, listing, _octets = pop.list()
    sizes = sorted(int(l.split()[1]) for l in listing)
    assert sizes == sorted((len(small), len(big))), listing
    got = []
    for n in (1, 2):
        resp, lines, _octets = pop.retr(n)
        assert resp.startswith(b"+OK"), resp
        got.append(b"\r\n".join(lines) + b"\r\n")
    assert sorted(got, key=len) == [small, big], \
        "RETR changed a message: " + repr([g[:200] for g in got])
    _resp, uids, _octets = pop.uidl()
    assert len(uids) == 2, uids
    assert pop.noop().startswith(b"+OK")
    which = 1 if got[0] == small else 2
    assert pop.dele(which).startswith(b"+OK")
    assert pop.quit().startswith(b"+OK")
    assert wait_until(lambda: len(dovecot.mailbox("alice")) == 1, timeout=5), dovecot.mailbox("alice")
    with open(dovecot.mailbox("alice")[0], "rb") as f:
        assert f.read() == big


def fail_login(wire, how):
    """Sends one failing login (how: pass, apop or auth); returns the reply
    line for the first two, and nothing for auth (its reply is left to
    read)."""
    if how == "pass":
        return login_user_pass(wire, ALICE[0], "not-the-password")
    if how == "apop":
        return wire.cmd(f"APOP bob {apop_digest(wire.greeting, 'not-the-password')}")
    wire.send(f"AUTH PLAIN {b64(chr(0) + 'bob' + chr(0) + 'not-the-password')}\r\n")
    return None


@pytest.mark.parametrize("max_failures", [None, 2], ids=["default-3", "configured-2"])
def test_max_failures_ends_the_session(smtpguard_factory, dovecot, recorder, max_failures):
    auth = {"max_failures": max_failures} if max_failures else None
    guard = start_guard(smtpguard_factory, f"{HOST}:{dovecot.port}", auth=auth)
    allowed = max_failures or 3
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        for how in ["pass", "apop"][:allowed - 1]:
            reply = fail_login(wire, how)
            assert reply.startswith(b"-ERR"), f"failed {how}: {reply!r}"
        # Still open below the limit.
        assert capabilities(wire), "CAPA"
        # Dovecot would let the session go on failing: the close is smtpguard's.
        fail_login(wire, "auth")
        rest = wire.lines_until_closed()
    assert rest and all(l.startswith(b"-ERR") for l in rest), rest
    assert any(l.startswith(b"-ERR [AUTH]") for l in rest), rest
    assert wait_until(lambda: logins(guard, "pop3s", "failure") == allowed, timeout=5), guard.metrics()
    assert logins(guard, "pop3s", "success") == 0
    assert_refused(guard)


def test_the_grant_expires_after_relay_ttl(smtpguard_factory, dovecot, recorder):
    guard = start_guard(smtpguard_factory, f"{HOST}:{dovecot.port}", relay_ttl=2)
    pop = pop3s_client(guard)
    pop.user(BOB[0])
    pop.pass_(BOB[1])
    pop.quit()
    assert wait_until(lambda: granted(guard) == 1, timeout=2), guard.metrics()
    assert_relays(guard, recorder, subject="within the ttl")
    time.sleep(3)
    assert_refused(guard)
    recorder.expect_exactly(1)
    assert wait_until(lambda: granted(guard) == 0, timeout=5), \
        f"{GRANTED} after the grant expired: {granted(guard)}"


def test_the_grant_is_for_the_clients_address(guard, recorder):
    with PopWire.connect(guard.pop3s_port, guard.tls_context(), source_ip="127.0.0.6") as wire:
        assert login_user_pass(wire, *BOB).startswith(b"+OK")
        assert wire.cmd("QUIT").startswith(b"+OK")
    assert any("client=127.0.0.6" in l and re.search(r"\buser=\"?bob\b", l)
               for l in log_lines(guard, "pop3_login")), read_text(guard.stderr_path)
    assert_refused(guard)                        # 127.0.0.1
    assert_refused(guard, source_ip="127.0.0.7")
    assert_relays(guard, recorder, source_ip="127.0.0.6", subject="from 127.0.0.6")
    assert granted(guard) == 1, guard.metrics()


def test_login_metrics(guard):
    assert granted(guard) == 0, guard.metrics()
    pop = pop3s_client(guard)
    pop.user(ALICE[0])
    with pytest.raises(poplib.error_proto):
        pop.pass_("not-the-password")
    pop.user(ALICE[0])
    pop.pass_(ALICE[1])
    pop.quit()
    pop = poplib.POP3(HOST, guard.pop3_port, timeout=IO_TIMEOUT)
    pop.stls(guard.tls_context())
    pop.apop(*BOB)
    pop.quit()

    expected = {("pop3s", "success"): 1, ("pop3s", "failure"): 1,
                ("pop3", "success"): 1, ("pop3", "failure"): 0}

    def counted():
        return {key: logins(guard, *key) for key in expected}
    assert wait_until(lambda: counted() == expected, timeout=5), \
        f"{LOGINS}: {counted()}, expected {expected}"
    # Both logins came from 127.0.0.1: one address.
    assert granted(guard) == 1, guard.metrics()


def test_backend_down(smtpguard_factory):
    guard = start_guard(smtpguard_factory, f"{HOST}:{free_port()}")
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        assert wire.greeting.startswith(b"-ERR [SYS/TEMP]"), wire.greeting
        assert wire.lines_until_closed() == [], "more after -ERR [SYS/TEMP]"
    with PopWire.connect(guard.pop3_port) as wire:
        assert wire.greeting.startswith(b"-ERR [SYS/TEMP]"), wire.greeting
        assert wire.lines_until_closed() == [], "more after -ERR [SYS/TEMP]"
    guard.assert_alive()


def test_a_failed_login_is_answered_after_the_failure_delay(smtpguard_factory, dovecot, recorder):
    def timed(guard, password):
        with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
            assert wire.cmd("USER bob").startswith(b"+OK")
            started = time.monotonic()
            reply = wire.cmd(f"PASS {password}")
            return reply, time.monotonic() - started

    backend = f"{HOST}:{dovecot.port}"
    slow = start_guard(smtpguard_factory, backend, auth={"failure_delay_ms": 1500})
    quick = start_guard(smtpguard_factory, backend)
    reply, slow_failure = timed(slow, "not-the-password")
    assert reply.startswith(b"-ERR"), reply
    reply, quick_failure = timed(quick, "not-the-password")
    assert reply.startswith(b"-ERR"), reply
    # smtpguard's pause starts once Dovecot has answered (after a pause of
    # its own, up to about half a second): a floor, whatever Dovecot took.
    assert slow_failure >= 1.5, (slow_failure, quick_failure)
    assert quick_failure < 1.5, (slow_failure, quick_failure)
    reply, success = timed(slow, BOB[1])
    assert reply.startswith(b"+OK"), reply
    assert success < 1.0, success


def test_failed_logins_lock_the_address_out_of_pop3_and_smtp(smtpguard_factory, dovecot, recorder):
    guard = start_guard(smtpguard_factory, f"{HOST}:{dovecot.port}",
                        auth={"max_failures": 10, "lockout": {"ip_failures": 2, "user_failures": 0}})
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        assert fail_login(wire, "pass").startswith(b"-ERR")
        assert fail_login(wire, "apop").startswith(b"-ERR")
        # The budget is spent: the next login does not reach Dovecot.
        reply = login_user_pass(wire, *BOB)
        assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
        assert wire.lines_until_closed() == []
    # New connections are refused before they are served: in plaintext on
    # the STLS listener, and by a close on POP3S (a line would be garbage to
    # a client expecting a TLS handshake).
    with PopWire.connect(guard.pop3_port) as wire:
        assert wire.greeting == b"-ERR [SYS/TEMP] Too many failed logins from your address, try again later"
        assert wire.lines_until_closed() == []
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        PopWire.connect(guard.pop3s_port, guard.tls_context()).close()
    # The budget is the one SMTP AUTH spends too.
    with SmtpWire.connect(guard.starttls_port) as smtp:
        reply = smtp.read_reply()
    assert (reply.code, reply.enhanced) == (421, "4.7.0"), reply
    assert "failed logins" in reply.text, reply
    assert logins(guard, "pop3s", "success") == 0
    assert metric_value(guard.metrics(), "smtpguard_connections_rejected_total", reason="lockout") == 3


def test_a_locked_user_is_refused_even_when_named_inside_a_sasl_exchange(smtpguard_factory, dovecot, recorder):
    guard = start_guard(smtpguard_factory, f"{HOST}:{dovecot.port}",
                        auth={"max_failures": 10, "lockout": {"ip_failures": 0, "user_failures": 2}})
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        for _ in range(2):
            reply = wire.cmd(f"AUTH PLAIN {b64(chr(0) + 'bob' + chr(0) + 'not-the-password')}")
            assert reply.startswith(b"-ERR"), reply
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        reply = login_user_pass(wire, *BOB)
        assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
    # Without an initial response the user is known only from the first
    # response, which carries the (right) password: it never reaches Dovecot.
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        assert wire.cmd("AUTH PLAIN").startswith(b"+"), "AUTH PLAIN without an initial response"
        reply = wire.cmd(b64(chr(0) + BOB[0] + chr(0) + BOB[1]))
        assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
        assert wire.lines_until_closed() == []
    assert logins(guard, "pop3s", "success") == 0
    assert metric_value(guard.metrics(), "smtpguard_auth_lockouts_total", scope="user") >= 2
    # Other users are not affected.
    with PopWire.connect(guard.pop3s_port, guard.tls_context()) as wire:
        assert login_user_pass(wire, *ALICE).startswith(b"+OK")
    assert_relays(guard, recorder)

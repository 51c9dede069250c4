"""Hostile clients: connection limits, AUTH lockouts across connections,
talking before the greeting, and clients that trickle bytes."""

import socket
import time

from harness import ALICE, BOB, HOST, IO_TIMEOUT, SmtpWire, ConnectionClosed, metric_value, wait_until

FAST_FAILURES = {"failure_delay_ms": 100}


def assert_reply(reply, code, enhanced, what):
    assert reply.code == code and reply.enhanced == enhanced, \
        f"{what}: expected {code} {enhanced}, got {reply!r}"


def metric(guard, name, **labels):
    return metric_value(guard.metrics(), name, **labels) or 0


def expect_refused(guard, port=None):
    """A new plaintext connection gets 421 4.7.0 and is closed."""
    with SmtpWire.connect(port or guard.starttls_port) as w:
        assert_reply(w.read_reply(), 421, "4.7.0", "connection past a limit")
        try:
            extra = w.read_line()
        except ConnectionClosed:
            return
        raise AssertionError(f"server sent more after its 421: {extra!r}")


def read_until_closed(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


def wait_for_reply(w, send_next, interval, limit):
    """Calls send_next() every `interval` seconds until a reply arrives."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            send_next()
        except OSError:
            pass  # already closed on us: the reply is waiting in the buffer
        try:
            return w.read_reply(timeout=interval)
        except TimeoutError:
            continue
    raise AssertionError(f"no reply within {limit}s")


# -- connection limits -------------------------------------------------------
def test_per_ip_limit(smtpguard_factory):
    guard = smtpguard_factory(config={"limits": {"max_connections_per_ip": 3}})
    time.sleep(0.2)  # the readiness probes' sessions end
    open_wires = [guard.wire_plain() for _ in range(3)]
    try:
        expect_refused(guard)
        open_wires.pop().quit()
        assert wait_until(lambda: _can_connect(guard), 5), "no slot freed after a session ended"
    finally:
        for w in open_wires:
            w.close()
    assert metric(guard, "smtpguard_connections_rejected_total", reason="per_ip_limit") >= 1


def _can_connect(guard):
    with SmtpWire.connect(guard.starttls_port) as w:
        r = w.read_reply()
        if r.code != 220:
            return False
        w.quit()
        return True


def test_total_limit_and_implicit_tls_gets_no_plaintext(smtpguard_factory):
    guard = smtpguard_factory(config={"limits": {"max_connections": 2}})
    time.sleep(0.2)
    open_wires = [guard.wire_plain(), guard.wire_implicit(ehlo=False)]
    try:
        expect_refused(guard)
        # On the implicit-TLS port the client speaks TLS first: just hang up.
        sock = socket.create_connection((HOST, guard.implicit_port), timeout=IO_TIMEOUT)
        try:
            assert read_until_closed(sock, 5) == b"", "plaintext sent to an implicit-TLS client"
        finally:
            sock.close()
    finally:
        for w in open_wires:
            w.close()
    assert metric(guard, "smtpguard_connections_rejected_total", reason="total_limit") >= 2


# -- AUTH lockouts -------------------------------------------------------------
def test_ip_lockout_across_connections(smtpguard_factory):
    guard = smtpguard_factory(config={"auth": {**FAST_FAILURES, "max_failures": 3,
                                               "lockout": {"ip_failures": 3, "user_failures": 100}}})
    with guard.wire_implicit() as w:
        for user in ("carol", "dave"):
            assert_reply(w.auth_plain(user, "guess"), 535, "5.7.8", "wrong password")
    with guard.wire_implicit() as w:
        assert_reply(w.auth_plain("erin", "guess"), 535, "5.7.8", "wrong password")
        # Locked now: even the right password is not checked.
        assert_reply(w.auth_plain(*ALICE), 454, "4.7.0", "AUTH from a locked-out address")
    expect_refused(guard)
    samples = guard.metrics()
    assert (metric_value(samples, "smtpguard_auth_lockouts_total", scope="ip") or 0) >= 1
    assert (metric_value(samples, "smtpguard_connections_rejected_total", reason="lockout") or 0) >= 1


def test_user_lockout_spares_other_users(smtpguard_factory):
    guard = smtpguard_factory(config={"auth": {**FAST_FAILURES, "max_failures": 3,
                                               "lockout": {"ip_failures": 100, "user_failures": 3}}})
    for attempts in (2, 1):
        with guard.wire_implicit() as w:
            for _ in range(attempts):
                assert_reply(w.auth_plain("bob", "guess"), 535, "5.7.8", "wrong password for bob")
    with guard.wire_implicit() as w:
        assert_reply(w.auth_plain(*BOB), 454, "4.7.0", "AUTH as a locked-out user")
        assert_reply(w.auth_plain(*ALICE), 235, "2.7.0", "AUTH as another user")
    assert metric(guard, "smtpguard_auth_lockouts_total", scope="user") >= 1


# -- talking before the greeting ----------------------------------------------
def test_talking_before_the_greeting(smtpguard_factory):
    guard = smtpguard_factory(config={"smtp": {"greeting_delay_ms": 500}})
    with SmtpWire.connect(guard.starttls_port) as w:
        w.send("EHLO client.example.test\r\n")
        assert_reply(w.read_reply(), 554, "5.5.0", "client talking before the greeting")
    with SmtpWire.connect(guard.starttls_port) as w:
        started = time.monotonic()
        assert w.read_reply().code == 220
        assert time.monotonic() - started >= 0.4, "greeting was not delayed"
        w.ehlo()
        w.quit()
    assert metric(guard, "smtpguard_connections_rejected_total", reason="pregreet") >= 1


# -- trickling clients -----------------------------------------------------------
def test_slow_data_is_cut_off(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"timeouts": {"data_min_rate": 1000, "data_rate_window": 2}})
    with guard.wire_implicit() as w:
        w.login()
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert w.cmd("RCPT TO:<rcpt@example.test>").code == 250
        assert w.cmd("DATA").code == 354
        w.send("Subject: slow\r\n\r\n")
        started = time.monotonic()
        r = wait_for_reply(w, lambda: w.send("x"), 1.0, 10)
        assert_reply(r, 421, "4.4.2", "DATA at one byte per second")
        assert time.monotonic() - started < 5
    recorder.expect_exactly(0)


def test_trickled_command_line_is_cut_off(smtpguard_factory):
    guard = smtpguard_factory(config={"timeouts": {"command_total": 3}})
    with guard.wire_plain() as w:
        line = iter(b"EHLO client.example.test\r\n")
        started = time.monotonic()
        r = wait_for_reply(w, lambda: w.send(bytes([next(line)])), 0.5, 10)
        assert_reply(r, 421, "4.4.2", "command line trickled for longer than command_total")
        assert 2.5 <= time.monotonic() - started < 5

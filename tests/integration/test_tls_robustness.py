"""TLS edge cases: old protocol versions, garbage and stalled handshakes,
descriptor hygiene, session resumption and renegotiation."""

import os
import re
import selectors
import shutil
import socket
import ssl
import subprocess
import time
import warnings

import pytest

from harness import HOST, IO_TIMEOUT, SmtpWire, wait_until

HANDSHAKE_TIMEOUT = 2
SHORT_HANDSHAKE = {"timeouts": {"tls_handshake": HANDSHAKE_TIMEOUT}}
# Hundreds of stalled connections from one address: lift the per-address cap.
MANY_STALLED = {**SHORT_HANDSHAKE, "limits": {"max_connections_per_ip": 1000}}

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

# The start of a TLS 1.2 ClientHello record announcing 512 bytes, cut short:
# the server has to wait for the rest.
HALF_CLIENT_HELLO = bytes.fromhex("16030102000100 01fc 0303".replace(" ", "")) + b"\x00" * 20


def s_client(guard, listener, *args, stdin=b"", timeout=IO_TIMEOUT):
    """Runs `openssl s_client` against a listener; returns (status, stdout + stderr)."""
    cmd = ["openssl", "s_client"]
    if listener == "implicit":
        cmd += ["-connect", f"{HOST}:{guard.implicit_port}"]
    else:
        cmd += ["-starttls", "smtp", "-connect", f"{HOST}:{guard.starttls_port}"]
    proc = subprocess.run(cmd + list(args), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)
    return proc.returncode, proc.stdout.decode(errors="replace")


def starttls_socket(guard):
    """A plain socket on the STARTTLS listener right after `220 Ready to start TLS`."""
    w = guard.wire_plain()
    w.ehlo()
    w.cmd("STARTTLS")
    return w.sock


def read_until_closed(sock, timeout):
    """Everything the server sends until it closes; raises TimeoutError if it
    is still open after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"connection still open after {timeout}s; received {data!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except (socket.timeout, TimeoutError):
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def old_version_context(version):
    """A client offering only `version`; OpenSSL 3 needs security level 0 for
    that, or it refuses before sending anything."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


# --------------------------------------------------------------------------
# Protocol versions
# --------------------------------------------------------------------------
@needs_openssl
def test_tls_1_1_and_1_0_are_refused(smtpguard):
    for listener in ("implicit", "starttls"):
        for flag in ("-tls1_1", "-tls1"):
            status, out = s_client(smtpguard, listener, flag, "-cipher", "DEFAULT@SECLEVEL=0")
            assert status != 0, f"s_client {flag} on {listener} succeeded:\n{out}"
            # The server's refusal, not the client's own: alert 70.
            assert "alert protocol version" in out, f"s_client {flag} on {listener}: no protocol_version alert:\n{out}"
            assert "BEGIN CERTIFICATE" not in out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old_versions = (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1)
    for version in old_versions:
        for listener in ("implicit", "starttls"):
            sock = (socket.create_connection((HOST, smtpguard.implicit_port), timeout=IO_TIMEOUT)
                    if listener == "implicit" else starttls_socket(smtpguard))
            with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
                old_version_context(version).wrap_socket(sock).close()
            sock.close()
    smtpguard.assert_alive()


@needs_openssl
def test_tls_1_2_and_1_3_are_accepted(smtpguard):
    for listener in ("implicit", "starttls"):
        for flag, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            status, out = s_client(smtpguard, listener, flag, "-ign_eof", stdin=b"QUIT\r\n")
            assert status == 0, f"s_client {flag} on {listener} failed ({status}):\n{out}"
            assert re.search(rf"^New, {re.escape(name)}, Cipher is ", out, re.M), out
            assert "221 " in out, f"s_client {flag} on {listener}: no reply to QUIT:\n{out}"

    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        with smtpguard.wire_implicit(min_version=version, max_version=version) as w:
            assert w.tls_version == name
        with smtpguard.wire_starttls(min_version=version, max_version=version) as w:
            assert w.tls_version == name


# --------------------------------------------------------------------------
# Garbage and stalled handshakes
# --------------------------------------------------------------------------
GARBAGE = [
    b"EHLO client.example.test\r\n",
    b"GET / HTTP/1.1\r\nHost: mail.example.test\r\n\r\n",
    b"\x00" * 64,
    b"\x17\x03\x03\x00\x10" + b"\xaa" * 16,  # application data before any handshake
    b"\x16\x03\x01\x00\x05hello",  # a handshake record with a nonsense message
]


def assert_no_smtp_reply(data, what):
    assert b"220" not in data and not re.search(rb"(^|\n)[2-5]\d\d[ -]", data), \
        f"{what}: the server answered in SMTP: {data!r}"
    # Nothing, or one TLS alert record (content type 21).
    assert not data or data[0] == 0x15, f"{what}: expected a TLS alert or nothing, got {data!r}"


def test_garbage_instead_of_a_client_hello_gets_no_smtp_reply(smtpguard):
    for garbage in GARBAGE:
        with SmtpWire.connect(smtpguard.implicit_port) as w:
            w.send(garbage)
            assert_no_smtp_reply(read_until_closed(w.sock, IO_TIMEOUT), f"implicit listener, {garbage[:20]!r}")
    # After STARTTLS the server must not fall back to reading commands either.
    for garbage in GARBAGE:
        sock = starttls_socket(smtpguard)
        with sock:
            sock.sendall(garbage)
            assert_no_smtp_reply(read_until_closed(sock, IO_TIMEOUT), f"after STARTTLS, {garbage[:20]!r}")
    with smtpguard.wire_implicit() as w:
        w.quit()


def test_stalled_handshakes_time_out(smtpguard_factory):
    guard = smtpguard_factory(config=MANY_STALLED)
    clients = {
        "implicit, silent": socket.create_connection((HOST, guard.implicit_port), timeout=IO_TIMEOUT),
        "implicit, half a ClientHello": socket.create_connection((HOST, guard.implicit_port), timeout=IO_TIMEOUT),
        "STARTTLS, silent": starttls_socket(guard),
    }
    clients["implicit, half a ClientHello"].sendall(HALF_CLIENT_HELLO)
    started = time.monotonic()
    sel = selectors.DefaultSelector()
    for name, sock in clients.items():
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, name)
    closed_after = {}
    while len(closed_after) < len(clients) and time.monotonic() - started < HANDSHAKE_TIMEOUT + 6:
        for key, _ in sel.select(timeout=0.2):
            try:
                chunk = key.fileobj.recv(4096)
            except ConnectionResetError:
                chunk = b""
            assert_no_smtp_reply(chunk, key.data)
            if not chunk:
                closed_after[key.data] = time.monotonic() - started
                sel.unregister(key.fileobj)
    for sock in clients.values():
        sock.close()
    still_open = set(clients) - set(closed_after)
    assert not still_open, f"not disconnected {HANDSHAKE_TIMEOUT + 6}s after connecting: {sorted(still_open)}"
    for name, seconds in closed_after.items():
        assert HANDSHAKE_TIMEOUT - 0.5 <= seconds <= HANDSHAKE_TIMEOUT + 2, \
            f"{name}: disconnected after {seconds:.2f}s, handshake timeout is {HANDSHAKE_TIMEOUT}s"
    with guard.wire_implicit() as w:
        w.quit()


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_stalled_handshakes_leak_no_descriptors(smtpguard_factory):
    guard = smtpguard_factory(config=MANY_STALLED)
    pid = guard.proc.pid
    # One full session first, so that lazily opened descriptors are in the baseline.
    with guard.wire_implicit() as w:
        w.quit()
    with guard.wire_starttls() as w:
        w.quit()
    time.sleep(0.2)
    baseline = fd_count(pid)

    socks = []
    try:
        for i in range(200):
            sock = socket.create_connection((HOST, guard.implicit_port), timeout=IO_TIMEOUT)
            socks.append(sock)
            if i % 2:
                sock.sendall(HALF_CLIENT_HELLO)
        assert wait_until(lambda: fd_count(pid) >= baseline + 150, 5), \
            f"expected ~200 more descriptors while stalled: baseline {baseline}, now {fd_count(pid)}"
        # Every stalled client is disconnected by the handshake timeout.
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT + 6
        for sock in socks:
            read_until_closed(sock, max(0.1, deadline - time.monotonic()))
    finally:
        for sock in socks:
            sock.close()
    settled = wait_until(lambda: fd_count(pid) <= baseline + 3, 5)
    assert settled, f"descriptors: {baseline} before 200 stalled handshakes, {fd_count(pid)} after"
    guard.assert_alive()
    with guard.wire_implicit() as w:
        w.quit()


# --------------------------------------------------------------------------
# Resumption and renegotiation
# --------------------------------------------------------------------------
@needs_openssl
def test_session_resumption(smtpguard, tmp_path):
    for listener in ("implicit", "starttls"):
        for flag, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            session = str(tmp_path / f"{listener}{flag}.session")
            # TLS 1.3 tickets follow the handshake: stay until the server has
            # answered QUIT and closed, so they have arrived.
            status, out = s_client(smtpguard, listener, flag, "-sess_out", session, "-ign_eof", stdin=b"QUIT\r\n")
            assert status == 0 and re.search(rf"^New, {re.escape(name)}", out, re.M), out
            assert "221 " in out, out
            status, out = s_client(smtpguard, listener, flag, "-sess_in", session, "-ign_eof", stdin=b"QUIT\r\n")
            assert status == 0, out
            assert re.search(rf"^Reused, {re.escape(name)}", out, re.M), \
                f"{listener} {name}: session not resumed:\n{out}"
            assert "221 " in out, out


class Interactive:
    """`openssl s_client` driven line by line (stdout and stderr merged)."""

    def __init__(self, args):
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.out = b""

    def wait_for(self, pattern, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while not re.search(pattern, self.out, re.M):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {pattern!r} within {timeout}s:\n{self.text}")
            if sel.select(remaining):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"s_client ended before {pattern!r}:\n{self.text}")
                self.out += chunk

    def send(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def finish(self, timeout=IO_TIMEOUT):
        """Waits for s_client to end by itself; returns its status."""
        status = self.proc.wait(timeout)
        os.set_blocking(self.proc.stdout.fileno(), True)
        self.out += self.proc.stdout.read()
        return status

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except BrokenPipeError:
                pass

    @property
    def text(self):
        return self.out.decode(errors="replace")


@needs_openssl
@pytest.mark.parametrize("listener", ["implicit", "starttls"])
def test_client_renegotiation_is_refused(smtpguard, listener):
    port = smtpguard.implicit_port if listener == "implicit" else smtpguard.starttls_port
    args = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-tls1_2"]
    if listener == "starttls":
        args[2:2] = ["-starttls", "smtp"]
    client = Interactive(args)
    try:
        # A command answered over the new session: the handshake is complete.
        # (With -starttls, s_client also prints the plaintext EHLO's last line.)
        client.send(b"NOOP\r\n")
        client.wait_for(rb"^250 2\.0\.0 OK")
        before = len(client.out)
        # s_client's "R" command starts a renegotiation (not sent as data).
        client.send(b"R\n")
        client.wait_for(rb"^RENEGOTIATING")
        client.send(b"NOOP\r\n")
        try:
            status = client.finish()
        except subprocess.TimeoutExpired:
            pytest.fail(f"connection still open {IO_TIMEOUT}s after a renegotiation attempt:\n{client.text}")
        after = client.out[before:].decode(errors="replace")
        assert status != 0, f"s_client reported success after renegotiating:\n{client.text}"
        assert not re.search(r"^[2-5]\d\d[ -]", after, re.M), f"the server kept talking SMTP:\n{after}"
        assert "no renegotiation" in after, f"expected a no_renegotiation alert:\n{after}"
    finally:
        client.close()
    with smtpguard.wire_implicit() as w:
        w.quit()

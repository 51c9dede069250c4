"""Helpers for the black-box integration tests: processes (smtpguard, the
recording backend), a raw SMTP client for byte-exact dialogues, TLS client
contexts, Received-header matching and Prometheus text parsing.

Every network operation has a deadline so that a broken binary makes a test
fail instead of hang.
"""

import base64
import copy
import ctypes
import email.utils
import json
import os
import queue
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import NamedTuple

HOST = "127.0.0.1"
HOSTNAME = "mail.example.test"
CLIENT_NAME = "client.example.test"
IO_TIMEOUT = 10.0      # any single read/write/connect
START_TIMEOUT = 10.0   # smtpguard listening after launch

USERS = {
    "alice": {"password": "correct horse"},
    "bob": {"password": "secret phrase", "senders": ["bob@example.test"]},
}
ALICE = ("alice", USERS["alice"]["password"])
BOB = ("bob", USERS["bob"]["password"])


# --------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------
def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def b64(text):
    if isinstance(text, str):
        text = text.encode()
    return base64.b64encode(text).decode("ascii")


def plain_response(user, password, authzid=""):
    return b64(f"{authzid}\0{user}\0{password}")


def wait_until(predicate, timeout, interval=0.05):
    """Polls predicate() until it returns a truthy value or timeout passes;
    returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def setup_or_call_failed(request):
    """Whether the test of a fixture's request failed in setup or in its
    call (conftest.py's pytest_runtest_makereport records the reports)."""
    node = request.node
    return any(getattr(node, "rep_" + when, None) is not None and getattr(node, "rep_" + when).failed
               for when in ("setup", "call"))


def read_text(path, limit=20000):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"({path}: {e})"
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit:
        text = f"... ({len(text) - limit} characters cut)\n" + text[-limit:]
    return text


def deep_merge(base, overrides):
    """Dicts merge recursively; a value None removes the key; anything else replaces."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# --------------------------------------------------------------------------
# TLS client side
# --------------------------------------------------------------------------
def client_context(ca_file, min_version=None, max_version=None, ciphers=None):
    """A verifying client context that trusts only the test CA."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


# --------------------------------------------------------------------------
# Raw SMTP client
# --------------------------------------------------------------------------
class ConnectionClosed(AssertionError):
    pass


class Reply:
    ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")

    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines      # text after "NNN-" / "NNN "
        self.raw = raw          # wire bytes of the whole reply

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        m = self.ENHANCED.match(self.lines[0]) if self.lines else None
        return ".".join(m.groups()) if m else None

    @property
    def reply_class(self):
        return self.code // 100

    def keywords(self):
        """EHLO keywords (upper case) -> rest of the line."""
        caps = {}
        for line in self.lines[1:]:
            word, _, rest = line.partition(" ")
            caps[word.upper()] = rest
        return caps

    def __repr__(self):
        return f"Reply({self.raw!r})"


class SmtpWire:
    """An SMTP client that sends exactly the bytes it is given and parses
    replies strictly, over plain TCP or TLS."""

    def __init__(self, sock, timeout=IO_TIMEOUT):
        self.sock = sock
        self.timeout = timeout
        self.buf = b""
        self.sock.settimeout(timeout)

    @classmethod
    def connect(cls, port, tls_context=None, server_hostname=HOSTNAME, timeout=IO_TIMEOUT, source_ip=None):
        """`source_ip`: the client's end binds this loopback address (127.0.0.5, say)."""
        source = (source_ip, 0) if source_ip else None
        sock = socket.create_connection((HOST, port), timeout=timeout, source_address=source)
        if tls_context is not None:
            try:
                sock = tls_context.wrap_socket(sock, server_hostname=server_hostname)
            except Exception:
                sock.close()
                raise
        return cls(sock, timeout)

    # -- I/O --------------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete reply within {self.timeout}s; have {self.buf!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise TimeoutError(f"no complete reply within {self.timeout}s; have {self.buf!r}")
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
            chunk = b""
        if not chunk:
            raise ConnectionClosed(f"server closed the connection; unparsed input {self.buf!r}")
        self.buf += chunk

    def read_line(self, deadline=None):
        deadline = deadline or time.monotonic() + self.timeout
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        raw = b""
        lines = []
        code = None
        while True:
            line = self.read_line(deadline)
            raw += line + b"\r\n"
            m = re.match(rb"^([2-5]\d\d)([ -]|$)(.*)$", line)
            assert m, f"malformed reply line {line!r} (reply so far {raw!r})"
            this_code = int(m.group(1))
            assert code is None or code == this_code, f"code changed inside a multi-line reply: {raw!r}"
            code = this_code
            lines.append(m.group(3).decode("utf-8", errors="replace"))
            if m.group(2) != b"-":
                return Reply(code, lines, raw)

    def read_replies(self, n, timeout=None):
        return [self.read_reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.read_reply(timeout)

    def expect_silence(self, seconds=0.5):
        """Asserts that the server sends nothing (and does not close) for `seconds`."""
        assert not self.buf, f"unexpected data from server: {self.buf!r}"
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
            chunk = b""
        finally:
            self.sock.settimeout(self.timeout)
        if chunk:
            raise AssertionError(f"unsolicited data from server: {chunk!r}")
        raise ConnectionClosed("server closed the connection unexpectedly")

    # -- SMTP steps --------------------------------------------------------
    def ehlo(self, name=CLIENT_NAME):
        r = self.cmd(f"EHLO {name}")
        assert r.code == 250, f"EHLO: expected 250, got {r!r}"
        return r

    def starttls(self, tls_context, server_hostname=HOSTNAME):
        r = self.cmd("STARTTLS")
        assert r.code == 220, f"STARTTLS: expected 220, got {r!r}"
        assert not self.buf, f"server sent more after its STARTTLS reply, in plaintext: {self.buf!r}"
        self.sock.settimeout(self.timeout)
        self.sock = tls_context.wrap_socket(self.sock, server_hostname=server_hostname)
        return r

    def auth_plain(self, user, password):
        r = self.cmd(f"AUTH PLAIN {plain_response(user, password)}")
        return r

    def login(self, user="alice", password=None):
        password = USERS[user]["password"] if password is None else password
        r = self.auth_plain(user, password)
        assert r.code == 235, f"AUTH PLAIN as {user}: expected 235, got {r!r}"
        return r

    def open_data(self, sender="alice@example.test", rcpt="bob@example.test"):
        """MAIL, RCPT and DATA, each required to succeed; the message is next."""
        for command, expected in ((f"MAIL FROM:<{sender}>", 250), (f"RCPT TO:<{rcpt}>", 250), ("DATA", 354)):
            r = self.cmd(command)
            assert r.code == expected, f"{command}: expected {expected}, got {r!r}"

    def transaction(self, sender, recipients, body):
        """MAIL, then each RCPT and DATA (required to succeed), then `body`
        and the final dot: the reply to MAIL when it is refused, else the
        reply to the final dot."""
        reply = self.cmd(f"MAIL FROM:<{sender}>")
        if reply.code != 250:
            return reply
        for rcpt in recipients:
            r = self.cmd(f"RCPT TO:<{rcpt}>")
            assert r.code == 250, f"RCPT TO:<{rcpt}>: expected 250, got {r!r}"
        r = self.cmd("DATA")
        assert r.code == 354, f"DATA: expected 354, got {r!r}"
        return self.cmd(body + b"\r\n.")

    def quit(self):
        r = self.cmd("QUIT")
        assert r.code == 221, f"QUIT: expected 221, got {r!r}"
        self.close()
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    @property
    def tls_version(self):
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------
# Received header
# --------------------------------------------------------------------------
_DATE = (rb"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} "
         rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
         rb"\d{2}:\d{2}(?::\d{2})? [+-]\d{4}(?: \([A-Za-z0-9 +-]+\))?")


def received_regex(user="alice", helo=CLIENT_NAME, client_ip=HOST, rcpt=None,
                   tls_version=rb"TLSv1\.[23]", protocol=b"ESMTPSA", eol=b"\r\n"):
    """The exact Received header smtpguard prepends, as a bytes regex with
    named groups id, tls, cipher and date."""
    e = re.escape(eol)
    pattern = (
        b"Received: from " + re.escape(helo.encode()) + rb" \(\[" + re.escape(client_ip.encode()) + rb"\]\)" + e
        + rb"\tby " + re.escape(HOSTNAME.encode()) + rb" \(smtpguard\) with " + protocol
        + rb" id (?P<id>[A-Za-z0-9._:+/=-]+)" + e
        + rb"\t\(using (?P<tls>" + tls_version + rb") with cipher (?P<cipher>[A-Za-z0-9_-]+)\)" + e
        + rb"\t\(authenticated user " + re.escape(user.encode()) + rb"\)"
    )
    if rcpt is not None:
        pattern += e + rb"\tfor <" + re.escape(rcpt.encode()) + rb">; (?P<date>" + _DATE + rb")" + e
    else:
        pattern += rb"; (?P<date>" + _DATE + rb")" + e
    return re.compile(pattern)


def assert_received_then(content, original, **kwargs):
    """Asserts content == <one smtpguard Received header> + original and
    returns the header's regex match."""
    regex = received_regex(**kwargs)
    m = regex.match(content)
    assert m, ("message does not start with the expected Received header.\n"
               f"expected pattern: {regex.pattern!r}\nmessage start:    {content[:400]!r}")
    rest = content[m.end():]
    assert not rest.startswith(b"Received:"), f"more than one Received header was added: {content[:800]!r}"
    assert rest == original, ("message after the Received header differs from what the client sent.\n"
                              f"sent:     {original[:600]!r}\nreceived: {rest[:600]!r}"
                              f"\n(lengths {len(original)} / {len(rest)})")
    when = email.utils.parsedate_to_datetime(m.group("date").decode().split(" (")[0])
    if when.tzinfo is None:  # "-0000": UTC, source unknown (RFC 5322 3.3)
        when = when.replace(tzinfo=timezone.utc)
    skew = abs((datetime.now(timezone.utc) - when).total_seconds())
    assert skew < 300, f"Received date {m.group('date')!r} is {skew:.0f}s away from now"
    return m


# SMTP smuggling (SEC Consult, 2023): end-of-data sequences that some servers
# accept besides CRLF.CRLF. Only CRLF.CRLF may ever end a message.
FAKE_ENDS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "CRLF.CR": b"\r\n.\r",
    "CR.CRLF": b"\r.\r\n",
}


def has_bare_line_ending(data):
    return re.search(rb"\r(?!\n)|(?<!\r)\n", data) is not None


# --------------------------------------------------------------------------
# Recording backend
# --------------------------------------------------------------------------
class Message:
    def __init__(self, n, meta, content):
        self.n = n
        self.meta = meta
        self.content = content

    mail_from = property(lambda self: self.meta["mail_from"])
    rcpt_tos = property(lambda self: self.meta["rcpt_tos"])

    def __repr__(self):
        return f"Message({self.n}, from={self.mail_from!r}, to={self.rcpt_tos!r}, {self.content[:120]!r}...)"


class Recorder:
    """scripts/recording-backend as a subprocess."""

    REJECT = "reject@example.test"
    MULTILINE = "multi@example.test"

    def __init__(self, source_dir, work_dir):
        self.script = os.path.join(source_dir, "scripts", "recording-backend")
        self.work_dir = work_dir
        self.dir = os.path.join(work_dir, "messages")
        self.stdout_path = os.path.join(work_dir, "recorder.stdout")
        self.stderr_path = os.path.join(work_dir, "recorder.stderr")
        self.port = None
        self.proc = None

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        for _ in range(3):
            self.port = free_port()
            with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
                self.proc = subprocess.Popen(
                    ["/usr/bin/python3", self.script, "--listen", f"{HOST}:{self.port}",
                     "--dir", self.dir, "--reject-rcpt", self.REJECT,
                     "--multiline-rcpt", self.MULTILINE],
                    stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            if wait_for_ports([self.port], self.proc, START_TIMEOUT, probe="smtp"):
                return self
            self.stop()
        raise RuntimeError(f"recording backend did not start:\n{self.diagnostics()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def diagnostics(self):
        return (f"--- recording backend stdout ---\n{read_text(self.stdout_path)}\n"
                f"--- recording backend stderr ---\n{read_text(self.stderr_path)}")

    def numbers(self):
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def message(self, n):
        with open(os.path.join(self.dir, f"{n}.json")) as f:
            meta = json.load(f)
        with open(os.path.join(self.dir, f"{n}.eml"), "rb") as f:
            content = f.read()
        return Message(n, meta, content)


class RecorderView:
    """The messages a single test caused (numbers above a baseline)."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.port = recorder.port
        self.address = f"{HOST}:{recorder.port}"
        self.baseline = max(recorder.numbers(), default=0)

    def messages(self):
        return [self.recorder.message(n) for n in self.recorder.numbers() if n > self.baseline]

    def count(self):
        return len([n for n in self.recorder.numbers() if n > self.baseline])

    def wait_for(self, count, timeout=10):
        wait_until(lambda: self.count() >= count, timeout)
        msgs = self.messages()
        assert len(msgs) >= count, (f"backend received {len(msgs)} message(s) within {timeout}s, "
                                    f"expected {count}\n{self.recorder.diagnostics()}")
        return msgs

    def expect_exactly(self, count, settle=0.5):
        """Asserts the backend received exactly `count` messages (after a
        short settling time, so that late extra messages are seen)."""
        msgs = self.wait_for(count) if count else []
        time.sleep(settle)
        msgs = self.messages()
        assert len(msgs) == count, (f"backend received {len(msgs)} message(s), expected exactly {count}: "
                                    f"{msgs!r}")
        return msgs


# --------------------------------------------------------------------------
# smtpguard
# --------------------------------------------------------------------------
def wait_for_ports(ports, proc, timeout, probe="connect"):
    """True once every port accepts a TCP connection; False if proc exits or
    timeout passes."""
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if proc is not None and proc.poll() is not None:
            return False
        port = pending[0]
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                if probe == "smtp":
                    s.settimeout(2)
                    if not s.recv(64).startswith(b"220"):
                        raise OSError("no greeting")
                    s.sendall(b"QUIT\r\n")
            pending.pop(0)
            continue
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


class Smtpguard:
    """One smtpguard process with a generated configuration on free ports."""

    def __init__(self, binary, work_dir, certs_dir, users_file, backend_address,
                 config=None, submissions=None, submission=None, relative_paths=False):
        self.binary = binary
        self.work_dir = work_dir
        self.certs_dir = certs_dir
        self.ca_file = os.path.join(certs_dir, "ca.pem")
        self.config_path = os.path.join(work_dir, "smtpguard.json")
        self.stdout_path = os.path.join(work_dir, "smtpguard.stdout")
        self.stderr_path = os.path.join(work_dir, "smtpguard.stderr")
        self.proc = None

        if relative_paths:
            for name in ("server-ecdsa.pem", "server-ecdsa.key"):
                shutil.copy(os.path.join(certs_dir, name), os.path.join(work_dir, name))
            shutil.copy(users_file, os.path.join(work_dir, "users.json"))
            cert, key, users = "server-ecdsa.pem", "server-ecdsa.key", "users.json"
        else:
            cert = os.path.join(certs_dir, "server-ecdsa.pem")
            key = os.path.join(certs_dir, "server-ecdsa.key")
            users = users_file

        self._settings = (cert, key, users, backend_address, config, submissions, submission)
        self.write_config()

    def write_config(self):
        """Picks free ports and writes the configuration file."""
        cert, key, users, backend_address, config, submissions, submission = self._settings
        self.implicit_port = free_port()
        self.starttls_port = free_port()
        self.metrics_port = free_port()
        listeners = [
            {"name": "submissions", "address": f"{HOST}:{self.implicit_port}", "tls": "implicit"},
            {"name": "submission", "address": f"{HOST}:{self.starttls_port}", "tls": "starttls",
             "require_tls": True},
        ]
        listeners[0] = deep_merge(listeners[0], submissions or {})
        listeners[1] = deep_merge(listeners[1], submission or {})
        base = {
            "hostname": HOSTNAME,
            "threads": 2,
            "listeners": listeners,
            "tls": {"certificates": [{"cert": cert, "key": key}], "min_version": "1.2"},
            "auth": {"users_file": users, "mechanisms": ["PLAIN", "LOGIN", "CRAM-MD5"]},
            "backend": {"address": backend_address},
            "limits": {"max_message_size": 10485760, "max_recipients": 100},
            "smtp": {"bare_line_endings": "reject"},
            "metrics": {"address": f"{HOST}:{self.metrics_port}"},
            "log": {"format": "text"},
        }
        self.config = deep_merge(base, config or {})
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)

    def cert(self, name):
        return os.path.join(self.certs_dir, name)

    def start(self, attempts=3):
        cwd = os.path.join(self.work_dir, "cwd")
        os.makedirs(cwd, exist_ok=True)
        for attempt in range(attempts):
            if attempt:
                self.write_config()  # a port was taken meanwhile: try others
            with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
                self.proc = subprocess.Popen([self.binary, "--config", self.config_path],
                                             stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd)
            ports = [self.implicit_port, self.starttls_port, self.metrics_port]
            if wait_for_ports(ports, self.proc, START_TIMEOUT):
                return self
            rc = self.proc.poll()
            state = f"exited with status {rc}" if rc is not None else f"not listening after {START_TIMEOUT}s"
            self.stop()
            if rc is None or "in use" not in read_text(self.stderr_path).lower():
                break
        raise AssertionError(f"smtpguard {state} (ports {ports})\nconfig:\n"
                             f"{json.dumps(self.config, indent=2)}\n{self.diagnostics()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=3):
        """SIGTERM (graceful drain; no sessions are open by now), SIGKILL
        after `grace` seconds."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                eprint(f"smtpguard (pid {self.proc.pid}) still running {grace}s after SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait(5)

    def diagnostics(self):
        return (f"--- smtpguard stderr ---\n{read_text(self.stderr_path)}\n"
                f"--- smtpguard stdout ---\n{read_text(self.stdout_path)}")

    def assert_alive(self):
        assert self.alive(), f"smtpguard exited with status {self.proc.poll()}\n{self.diagnostics()}"

    # -- clients -----------------------------------------------------------
    def tls_context(self, **kwargs):
        return client_context(self.ca_file, **kwargs)

    def wire_plain(self, port=None):
        """Plain TCP to the STARTTLS listener; greeting consumed and checked."""
        w = SmtpWire.connect(port or self.starttls_port)
        g = w.read_reply()
        assert g.code == 220, f"greeting: expected 220, got {g!r}"
        return w

    def wire_starttls(self, ehlo=True, **ctx_kwargs):
        """STARTTLS listener, after EHLO, STARTTLS, handshake (and EHLO again)."""
        w = self.wire_plain()
        w.ehlo()
        w.starttls(self.tls_context(**ctx_kwargs))
        if ehlo:
            w.ehlo()
        return w

    def wire_implicit(self, ehlo=True, **ctx_kwargs):
        """Implicit-TLS listener, greeting consumed (and EHLO sent)."""
        w = SmtpWire.connect(self.implicit_port, self.tls_context(**ctx_kwargs))
        g = w.read_reply()
        assert g.code == 220, f"greeting: expected 220, got {g!r}"
        if ehlo:
            w.ehlo()
        return w

    def smtp_ssl(self, source_address=None, port=None, **ctx_kwargs):
        s = smtplib.SMTP_SSL(HOST, port or self.implicit_port, local_hostname=CLIENT_NAME,
                             timeout=IO_TIMEOUT, context=self.tls_context(**ctx_kwargs),
                             source_address=source_address)
        s.ehlo()
        return s

    def smtp_starttls(self, source_address=None, port=None, **ctx_kwargs):
        """smtplib over STARTTLS, EHLO done; `source_address` binds the
        client's end (("127.0.0.5", 0): a client address of its own)."""
        s = smtplib.SMTP(HOST, port or self.starttls_port, local_hostname=CLIENT_NAME, timeout=IO_TIMEOUT,
                         source_address=source_address)
        s.ehlo()
        code, msg = s.starttls(context=self.tls_context(**ctx_kwargs))
        assert code == 220, f"STARTTLS: expected 220, got {code} {msg!r}"
        s.ehlo()
        return s

    # -- metrics -----------------------------------------------------------
    def http_get(self, path, timeout=IO_TIMEOUT):
        url = f"http://{HOST}:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", errors="replace")

    def metrics(self):
        status, body = self.http_get("/metrics")
        assert status == 200, f"GET /metrics: HTTP {status}\n{body[:2000]}"
        return parse_prometheus(body)


def smtplib_auth(smtp, mechanism, user, password):
    """Runs AUTH <mechanism> with smtplib; returns (code, reply bytes)
    and raises smtplib.SMTPAuthenticationError on failure."""
    smtp.user, smtp.password = user, password
    method = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login, "CRAM-MD5": smtp.auth_cram_md5}[mechanism]
    return smtp.auth(mechanism, method, initial_response_ok=(mechanism == "PLAIN"))


# --------------------------------------------------------------------------
# One message through smtpguard into a real MTA (postfix_instance.py,
# exim_instance.py, sendmail_instance.py)
# --------------------------------------------------------------------------
def message_for_mta(mta):
    """What the Exim and sendmail tests send (Subject: through smtpguard
    into <mta>, Message-ID: <<mta in lower case>-test-1@example.test>): a
    body with what an MTA might change on the way, a line starting with a
    dot, one starting with "From " and 8-bit text."""
    return (
        b"From: Alice <alice@example.test>\r\n"
        b"To: Someone <someone@example.test>\r\n"
        b"Subject: through smtpguard into " + mta.encode() + b"\r\n"
        b"Message-ID: <" + mta.lower().encode() + b"-test-1@example.test>\r\n"
        b"Date: Sun, 22 Nov 2026 19:00:00 +0000\r\n"
        b"\r\n"
        b"Hello from the integration test.\r\n"
        b".a dot line\r\n"
        b"From the start of a line\r\n"
        b"\xc3\xa9 8-bit\r\n"
        b"bye\r\n"
    )


class Relayed(NamedTuple):
    client_port: int   # the client's end of its connection to smtpguard
    reply: bytes       # the MTA's reply to the end of DATA, relayed
    queue_id: str      # the MTA's queue id, from that reply
    stored: bytes      # the message as the MTA delivered it
    received: re.Match  # smtpguard's Received header in `stored`


def relay_to_mta(guard, mta, message, queue_id_pattern, client_ip=None,
                 sender="alice@example.test", rcpt="someone@example.test"):
    """Sends message from sender to rcpt with smtplib through smtpguard's
    STARTTLS listener (AUTH PLAIN as alice; from client_ip when given, else
    from HOST), then checks what reached mta (an mta_instance.MtaInstance):
    the reply carries its queue id (group 1 of queue_id_pattern), it
    delivers one more message, and that one has smtpguard's Received header
    (that client, alice, rcpt) with the message exactly as sent below it
    (LF line endings: the MTAs here store them so)."""
    already = len(mta.delivered())
    source = (client_ip, 0) if client_ip else None
    with guard.smtp_starttls(source_address=source) as smtp:
        client_port = smtp.sock.getsockname()[1]
        smtplib_auth(smtp, "PLAIN", *ALICE)
        code, text = smtp.mail(sender)
        assert code == 250, f"MAIL: {code} {text!r}\n{mta.NAME} log:\n{mta.log()}"
        code, text = smtp.rcpt(rcpt)
        assert code == 250, f"RCPT: {code} {text!r}\n{mta.NAME} log:\n{mta.log()}"
        code, text = smtp.data(message)
        assert code == 250, f"end of DATA: {code} {text!r}\n{mta.NAME} log:\n{mta.log()}"
    queued = re.search(queue_id_pattern, text)
    assert queued, f"{mta.NAME}'s queue id is missing from the relayed reply {text!r}"

    mta.wait_for_delivery(already + 1)
    stored = mta.messages()[already]
    shown = stored.decode(errors="replace")
    ours = received_regex(client_ip=client_ip or HOST, rcpt=rcpt, eol=b"\n").search(stored)
    assert ours, f"smtpguard's Received header (client {client_ip or HOST}, user alice) is missing:\n{shown}"
    assert stored[ours.end():] == message.replace(b"\r\n", b"\n"), f"message changed on the way:\n{shown}"
    return Relayed(client_port, text, queued.group(1).decode(), stored, ours)


# --------------------------------------------------------------------------
# Users and passwords
# --------------------------------------------------------------------------
def run_passwd(binary, user, password, *extra):
    proc = subprocess.run([binary, "passwd", "--user", user, *extra], input=password + "\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (f"`smtpguard passwd --user {user}` exited {proc.returncode}\n"
                                  f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"`smtpguard passwd` should print one JSON line, printed: {proc.stdout!r}"
    entry = json.loads(lines[0])
    assert isinstance(entry, dict), f"`smtpguard passwd` printed {lines[0]!r}, not a JSON object"
    return entry


def crypt_verify(password, crypt_hash):
    """True/False from libxcrypt's crypt(3), or None if it cannot be called."""
    try:
        lib = ctypes.CDLL("libcrypt.so.1")
    except OSError:
        return None
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    out = lib.crypt(password.encode(), crypt_hash.encode())
    if out is None or out.startswith(b"*"):
        return False
    return out.decode() == crypt_hash


# --------------------------------------------------------------------------
# Prometheus text format
# --------------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def proc_status(pid, key):
    """A /proc/<pid>/status size field (VmRSS, VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no {key}")


def parse_prometheus(text):
    """[(name, {label: value}, float)] for every sample line."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        samples.append((m.group(1), labels, value))
    return samples


def metric_value(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`; None if
    there is no such sample at all."""
    values = [v for n, l, v in samples
              if n == name and all(l.get(k) == str(want) for k, want in labels.items())]
    return sum(values) if values else None


def eprint(*args):
    print(*args, file=sys.stderr)


class SClient:
    """`openssl s_client` (optionally with -starttls smtp) driven line by line
    through pipes; `extra` adds options such as -cert/-key."""

    def __init__(self, port, ca_file, starttls, extra=()):
        args = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", ca_file,
                "-verify_return_error", "-verify_ip", HOST, "-servername", HOSTNAME,
                "-quiet", "-nocommands", *extra]
        if starttls:
            args += ["-starttls", "smtp", "-name", CLIENT_NAME]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put(line)
        self.lines.put(None)

    def reply(self, timeout=10):
        lines = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"s_client: no reply within {timeout}s; have {lines!r}; "
                                     f"stderr: {self.stderr()}")
            if line is None:
                raise ConnectionClosed(f"s_client ended; partial reply {lines!r}; stderr: {self.stderr()}")
            assert line.endswith(b"\r\n") and line[:3].isdigit(), f"bad reply line from server: {line!r}"
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def cmd(self, data):
        self.proc.stdin.write(data + b"\r\n")
        self.proc.stdin.flush()
        return self.reply()

    def stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read().decode(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass

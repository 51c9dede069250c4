"""Backend faults: slow or bad greeting, 4xx/5xx at each step (relayed with the
same code, session kept), closes mid-DATA, no reply after the final dot,
malformed or unsolicited replies. The client gets 250 only for a message the
backend accepted; never a duplicate.

"Backend down at connect" (connection refused) is in test_backend_down.py.

Every scenario runs against a scripted WireBackend (wire_backend.py) and ends
with the same bookkeeping (Ledger.check): the messages the client was told
250 for are exactly the messages the backend completed (got the final dot and
answered it with a well-formed 2xx), no message reached the backend twice,
and smtpguard's accepted-messages counter agrees.

All tests but one share a module-wide smtpguard and WireBackend (stopping a
smtpguard takes up to 2 s, which per test would dominate the run time); each
test installs its own script and looks only at the backend connections opened
after it started (BackendView). The data_end test needs its own configuration.

Scripting notes: a list action in WireBackend is per *connection*, and the
health probe opens connections of its own, so faults that must hit "the first
time anywhere" use Once(), and connection-setup faults use Toggle(), which the
test switches off when it wants a working backend again.
"""

import collections
import os
import re
import signal
import threading
import time

import pytest

import harness
from harness import Smtpguard, eprint, metric_value, read_text, wait_until
from wire_backend import DEFAULTS, EHLO_REPLY, Close, Delay, Silent, WireBackend

BACKEND_REPLY = 2   # timeouts.backend_reply (seconds) in these tests
CONFIG = {
    "timeouts": {"backend_connect": 2, "backend_reply": BACKEND_REPLY},
    # One probe at startup, then none during the test; each session's backend
    # connection ends with the session (see test_backend_reuse.py).
    "backend": {"health_interval": 3600, "reuse_idle": 0},
}

# smtpguard's own replies (proxy/smtp/replies.hpp), asserted byte for byte.
BACKEND_UNAVAILABLE = b"451 4.4.1 Backend temporarily unavailable, try again later\r\n"
BACKEND_FAILED = b"451 4.4.2 Backend connection lost, message not accepted; try again later\r\n"
BACKEND_BAD_REPLY = b"451 4.5.0 Backend protocol error, message not accepted; try again later\r\n"

GREETING = DEFAULTS["greeting"]
SENDER = "alice@example.test"
RECIPIENT = "bob@example.test"
TOKEN = re.compile(rb"^X-Fault-Test: (\S+)\r$", re.M)


# --------------------------------------------------------------------------
# Scripting helpers
# --------------------------------------------------------------------------
def default_action(stage):
    # "end": None makes WireBackend answer "250 2.0.0 Ok: queued as W<n>".
    return None if stage == "end" else DEFAULTS[stage]


def is_action_object(a):
    return isinstance(a, (Silent, Close, Delay))


def resolve(action, conn, line):
    if callable(action) and not is_action_object(action):
        return action(conn, line)
    return action


class Once:
    """`fault` the first time the stage comes up on any connection, the
    well-behaved reply after that."""

    def __init__(self, stage, fault):
        self.stage = stage
        self.fault = fault
        self.used = False
        self.lock = threading.Lock()

    def __call__(self, conn, line):
        with self.lock:
            first, self.used = not self.used, True
        return self.fault if first else default_action(self.stage)


class Toggle:
    """Faults at some stages (e.g. greeting, EHLO) for every connection,
    health probes included, until the test sets .on = False."""

    def __init__(self, faults):
        self.faults = dict(faults)
        self.on = True

    def script(self):
        return {stage: self._stage(stage) for stage in self.faults}

    def _stage(self, stage):
        def act(conn, line):
            return self.faults[stage] if self.on else default_action(stage)
        return act


def first_reply_is_2xx(data):
    """True if `data` starts with a complete, well-formed (RFC 5321 4.2)
    positive completion reply."""
    pos = 0
    code = None
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return False
        line = data[pos:end]
        if len(line) > 512 or re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", line):
            return False
        m = re.fullmatch(rb"([2-5][0-9][0-9])(?:([ -])(.*))?", line, re.S)
        if not m or (code is not None and m.group(1) != code):
            return False
        code = m.group(1)
        if m.group(2) != b"-":
            return code.startswith(b"2")
        pos = end + 2


def backend_accepts(action):
    while isinstance(action, Delay):
        action = action.action
    if action is None:
        return True  # WireBackend's own "250 2.0.0 Ok: queued as W<n>"
    if isinstance(action, bytes):
        return first_reply_is_2xx(action)
    return False     # Silent(), Close()


def token_of(content):
    m = TOKEN.search(content)
    assert m, f"message without its X-Fault-Test header reached the backend: {content[:300]!r}"
    return m.group(1).decode()


# --------------------------------------------------------------------------
# Bookkeeping: client 250s versus messages the backend completed
# --------------------------------------------------------------------------
class Ledger:
    def __init__(self, accepted_before):
        self.accepted_before = accepted_before  # smtpguard's counter when the test began
        self.lock = threading.Lock()
        self.sent = []              # tokens whose content + final dot the client sent
        self.client_ok = []         # tokens the client got a 2xx for after the dot
        self.backend_accepted = []  # tokens the backend answered the final dot with a 2xx

    def end_stage(self, inner=None):
        """The "end" action for the script: `inner` decides the reply and the
        ledger notes whether the backend accepted the message."""
        def end(conn, content):
            action = resolve(inner, conn, content)
            if backend_accepts(action):
                with self.lock:
                    self.backend_accepted.append(token_of(content))
            return action
        return end

    def check(self, guard, backend):
        # Everything settled: the client quit, so every backend connection ends.
        for c in backend.sessions():
            backend.wait_closed(c, timeout=10)
        at_backend = [token_of(m) for m in backend.all_messages()]
        twice = sorted(t for t, n in collections.Counter(at_backend).items() if n > 1)
        assert not twice, (f"smtpguard sent message(s) {twice} to the backend more than once "
                           f"(never re-send on its own): {backend.sessions()!r}")
        unknown = sorted(set(at_backend) - set(self.sent))
        assert not unknown, f"backend got message(s) {unknown} the client never finished sending"
        assert len(self.client_ok) == len(set(self.client_ok)), f"client got 250 twice: {self.client_ok}"
        assert sorted(self.client_ok) == sorted(self.backend_accepted), (
            "the client must get 250 exactly for the messages the backend accepted: "
            f"client 250 for {sorted(self.client_ok)}, backend accepted {sorted(self.backend_accepted)}")
        accepted = accepted_count(guard) - self.accepted_before
        assert accepted == len(self.client_ok), (
            f"smtpguard_messages_total{{result=\"accepted\"}} went up by {accepted}, "
            f"the client was told 250 for {len(self.client_ok)} message(s)")


# --------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------
def message(token, body_size=0):
    head = (b"From: Alice <alice@example.test>\r\n"
            b"To: Bob <bob@example.test>\r\n"
            b"Subject: backend fault test\r\n"
            b"X-Fault-Test: " + token.encode() + b"\r\n"
            b"\r\n"
            b"Hello Bob.\r\n")
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-=\r\n"
    return head + line * (body_size // len(line))


class Client:
    """An authenticated implicit-TLS session plus the ledger."""

    def __init__(self, w, ledger):
        self.w = w
        self.ledger = ledger

    def mail(self):
        return self.w.cmd(f"MAIL FROM:<{SENDER}>")

    def rcpt(self):
        return self.w.cmd(f"RCPT TO:<{RECIPIENT}>")

    def data(self):
        return self.w.cmd("DATA")

    def content(self, token, body_size=0, timeout=None):
        self.ledger.sent.append(token)
        self.w.send(message(token, body_size) + b".\r\n")
        r = self.w.read_reply(timeout)
        if r.reply_class == 2:
            self.ledger.client_ok.append(token)
        return r

    def expect(self, r, code, what):
        assert r.code == code, f"{what}: expected {code}, got {r!r}"
        return r

    def deliver(self, token, body_size=0):
        """A whole transaction that must succeed."""
        self.expect(self.mail(), 250, f"MAIL ({token})")
        self.expect(self.rcpt(), 250, f"RCPT ({token})")
        self.expect(self.data(), 354, f"DATA ({token})")
        return self.expect(self.content(token, body_size), 250, f"end of data ({token})")

    def still_usable(self):
        self.expect(self.w.cmd("NOOP"), 250, "NOOP after the backend fault")
        self.expect(self.w.cmd("RSET"), 250, "RSET after the backend fault")


def expect_exact(r, raw, what):
    assert r.raw == raw, f"{what}: expected {raw!r}, got {r.raw!r}"


def count_commands(conn, verb):
    return sum(1 for c in conn.commands if c.upper().startswith(verb))


def new_connection_carried(backend, token, old):
    """The message `token` went over a connection other than `old`."""
    carriers = [c for c in backend.with_mail() if any(token_of(m) == token for m in c.messages)]
    assert carriers and all(c is not old for c in carriers), (
        f"message {token} should have gone over a fresh backend connection: {backend.sessions()!r}")


class BackendView:
    """The connections of one test on the shared WireBackend."""

    def __init__(self, backend):
        self.backend = backend
        self.first = len(backend.sessions())

    def sessions(self):
        return self.backend.sessions()[self.first:]

    def with_mail(self):
        return [c for c in self.sessions() if count_commands(c, "MAIL")]

    def all_messages(self):
        return [m for c in self.sessions() for m in c.messages]

    def wait_closed(self, connection, timeout=10):
        self.backend.wait_closed(connection, timeout)


def accepted_count(guard):
    return metric_value(guard.metrics(), "smtpguard_messages_total", result="accepted") or 0


def wrap_script(script, ledger):
    script = dict(script or {})
    script["end"] = ledger.end_stage(script.get("end"))
    return script


@pytest.fixture(scope="module")
def shared(binary, certs, users_file, tmp_path_factory):
    """One WireBackend and one smtpguard for the module (a smtpguard takes
    about 2 s to stop, which per test would dominate the run time); each test
    swaps in its own script."""
    backend = WireBackend().start()
    guard = Smtpguard(binary, str(tmp_path_factory.mktemp("faults")), certs, users_file,
                      backend.address, config=CONFIG).start()
    # Let the startup health probe finish before the first test counts connections.
    assert wait_until(lambda: backend.sessions() and all(c.closed.is_set() for c in backend.sessions()), 10), \
        f"smtpguard's startup health probe did not finish: {backend.sessions()!r}"
    yield backend, guard
    died = guard.proc.poll() is not None
    guard.stop()
    backend.stop()
    rc = guard.proc.returncode
    stderr = read_text(guard.stderr_path)
    problems = [f"smtpguard exited during the tests (status {rc})"] if died else []
    if rc is not None and rc < 0 and -rc not in (signal.SIGTERM, signal.SIGKILL):
        problems.append(f"smtpguard was killed by signal {-rc}")
    problems += [f"sanitizer report in smtpguard's stderr ({m!r})"
                 for m in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:") if m in stderr]
    if problems:
        pytest.fail("; ".join(problems) + "\n" + guard.diagnostics())


@pytest.fixture
def rig(shared, request):
    """rig(script, close_in_data=None) -> (backend view, guard, ledger) on the
    shared smtpguard; the script's "end" stage is wrapped by the ledger."""
    backend, guard = shared
    views = []
    stderr_at = []

    def start(script=None, close_in_data=None):
        guard.assert_alive()
        stderr_at.append(os.path.getsize(guard.stderr_path))
        ledger = Ledger(accepted_count(guard))
        view = BackendView(backend)
        backend.close_in_data = close_in_data
        backend.script = wrap_script(script, ledger)
        views.append(view)
        return view, guard, ledger

    yield start
    backend.script = {}
    backend.close_in_data = None
    failed = any(getattr(request.node, "rep_" + when, None) is not None and getattr(request.node, "rep_" + when).failed
                 for when in ("setup", "call"))
    if failed:
        for view in views:
            eprint(f"=== wire backend {backend.address} (this test): {view.sessions()!r}")
        with open(guard.stderr_path, "rb") as f:
            f.seek(stderr_at[0] if stderr_at else 0)
            eprint("--- smtpguard stderr (this test) ---\n" + f.read()[-20000:].decode(errors="replace"))


def open_client(guard, ledger):
    w = guard.wire_implicit()
    w.login()
    return Client(w, ledger)


def finish(client, guard, backend, ledger):
    client.w.quit()
    guard.assert_alive()
    ledger.check(guard, backend)


# --------------------------------------------------------------------------
# Greeting and EHLO
# --------------------------------------------------------------------------
SLOW_BUT_IN_TIME = {
    "greeting-delayed": {"greeting": Delay(0.8, GREETING)},
    "ehlo-delayed": {"EHLO": Delay(0.8, EHLO_REPLY)},
}


@pytest.mark.parametrize("script", SLOW_BUT_IN_TIME.values(), ids=SLOW_BUT_IN_TIME.keys())
def test_slow_greeting_within_backend_reply_works(rig, script):
    backend, guard, ledger = rig(script)
    client = open_client(guard, ledger)
    client.deliver("slow-1")
    assert len(backend.with_mail()) == 1, f"one backend connection expected: {backend.sessions()!r}"
    finish(client, guard, backend, ledger)


SETUP_FAULTS = {
    "greeting-too-slow": {"greeting": Delay(BACKEND_REPLY + 1.5, GREETING)},
    "greeting-554": {"greeting": b"554 5.3.2 backend.example.test no service here\r\n"},
    "greeting-421": {"greeting": b"421 4.3.2 backend.example.test shutting down\r\n"},
    "greeting-garbage": {"greeting": b"hello\r\n"},
    "greeting-closed": {"greeting": Close()},
    "ehlo-421": {"EHLO": b"421 4.3.2 Shutting down\r\n"},
    "ehlo-451": {"EHLO": b"451 4.3.0 Try again later\r\n"},
    "ehlo-5xx-then-helo-5xx": {"EHLO": b"502 5.5.2 Error: command not recognized\r\n",
                               "HELO": b"554 5.7.1 Go away\r\n"},
}


@pytest.mark.parametrize("faults", SETUP_FAULTS.values(), ids=SETUP_FAULTS.keys())
def test_bad_greeting_or_ehlo_gives_451_4_4_1_and_session_survives(rig, faults):
    toggle = Toggle(faults)
    backend, guard, ledger = rig(toggle.script())
    client = open_client(guard, ledger)

    started = time.monotonic()
    r = client.mail()
    elapsed = time.monotonic() - started
    expect_exact(r, BACKEND_UNAVAILABLE, f"MAIL with backend fault {faults!r}")
    if isinstance(faults.get("greeting"), Delay):
        assert BACKEND_REPLY - 0.3 <= elapsed <= BACKEND_REPLY + 2.5, (
            f"greeting timeout should be timeouts.backend_reply = {BACKEND_REPLY}s, took {elapsed:.2f}s")
    assert backend.with_mail() == [], f"nothing may be relayed on a backend that failed its setup: {backend.sessions()!r}"
    client.still_usable()
    # Still broken: same answer, still nothing relayed.
    expect_exact(client.mail(), BACKEND_UNAVAILABLE, "second MAIL, backend still broken")
    assert backend.with_mail() == [], f"nothing may be relayed: {backend.sessions()!r}"

    toggle.on = False
    client.deliver("after-setup-fault")
    assert len(backend.with_mail()) == 1, f"one working backend connection expected: {backend.sessions()!r}"
    finish(client, guard, backend, ledger)


EHLO_REFUSALS = {
    "502": b"502 5.5.2 Error: command not recognized\r\n",
    "500-plain": b"500 Syntax error, command unrecognized\r\n",
    "554-multiline": b"554-no ESMTP here\r\n554 really\r\n",
}


@pytest.mark.parametrize("refusal", EHLO_REFUSALS.values(), ids=EHLO_REFUSALS.keys())
def test_ehlo_5xx_falls_back_to_helo(rig, refusal):
    backend, guard, ledger = rig({"EHLO": refusal})
    client = open_client(guard, ledger)
    client.deliver("helo-1")
    [conn] = backend.with_mail()
    assert conn.commands[0].upper().startswith("EHLO ") and conn.commands[1].upper().startswith("HELO "), (
        f"EHLO refused with 5xx: expected EHLO then HELO, got {conn.commands!r}")
    assert count_commands(conn, "HELO") == 1 and count_commands(conn, "EHLO") == 1, conn.commands
    finish(client, guard, backend, ledger)


# --------------------------------------------------------------------------
# 4xx / 5xx at each step: relayed, session kept
# --------------------------------------------------------------------------
# (backend reply, what the client must get)
ERRORS = {
    "451-enhanced": (b"451 4.3.0 Temporary lookup failure\r\n",
                     b"451 4.3.0 Temporary lookup failure\r\n"),
    "450-plain": (b"450 Mailbox busy\r\n",
                  b"450 4.0.0 Mailbox busy\r\n"),
    "554-plain": (b"554 Transaction failed\r\n",
                  b"554 5.0.0 Transaction failed\r\n"),
    "550-multiline": (b"550-5.7.1 Rejected by policy\r\n"
                      b"550-see https://example.test/policy\r\n"
                      b"550 5.7.1 Contact postmaster\r\n",
                      b"550-5.7.1 Rejected by policy\r\n"
                      b"550-5.0.0 see https://example.test/policy\r\n"
                      b"550 5.7.1 Contact postmaster\r\n"),
    "421-enhanced": (b"421 4.3.2 Service shutting down\r\n",
                     b"451 4.3.2 Service shutting down\r\n"),
    "421-plain-multiline": (b"421-backend.example.test closing\r\n421 try later\r\n",
                            b"451-4.0.0 backend.example.test closing\r\n451 4.0.0 try later\r\n"),
}
STAGES = ("MAIL", "RCPT", "DATA", "end")


def run_to_stage(client, stage, token, body_size=0):
    """Runs a transaction up to `stage` (everything before it must succeed);
    returns the reply at `stage`."""
    r = client.mail()
    if stage == "MAIL":
        return r
    client.expect(r, 250, "MAIL")
    r = client.rcpt()
    if stage == "RCPT":
        return r
    client.expect(r, 250, "RCPT")
    r = client.data()
    if stage == "DATA":
        return r
    client.expect(r, 354, "DATA")
    return client.content(token, body_size)


@pytest.mark.parametrize("error", ERRORS.keys())
@pytest.mark.parametrize("stage", STAGES)
def test_error_reply_relayed_and_session_kept(rig, stage, error):
    sent, relayed = ERRORS[error]
    backend, guard, ledger = rig({stage: Once(stage, sent)})
    client = open_client(guard, ledger)

    r = run_to_stage(client, stage, "err-1")
    expect_exact(r, relayed, f"backend answered {stage} with {sent!r}")
    [conn] = backend.with_mail()
    is_421 = sent.startswith(b"421")
    if is_421:
        backend.wait_closed(conn, timeout=5)
        assert conn.closed_by_peer, f"after a backend 421 smtpguard must close that backend connection: {conn!r}"
    client.still_usable()
    client.deliver("err-2")
    if is_421:
        assert count_commands(conn, "MAIL") == 1, f"nothing more may go over the 421 connection: {conn!r}"
        new_connection_carried(backend, "err-2", conn)
    finish(client, guard, backend, ledger)


# --------------------------------------------------------------------------
# Backend closes during DATA, or never answers the final dot
# --------------------------------------------------------------------------
CLOSES = {
    # close_in_data, script: the second message (small) must get through.
    "close-after-2000-octets": (2000, {}),
    "close-after-40000-octets": (40000, {}),
    "close-after-final-dot": (None, {"end": Once("end", Close())}),
}


@pytest.mark.parametrize("close_in_data,script", CLOSES.values(), ids=CLOSES.keys())
def test_backend_closes_mid_data(rig, close_in_data, script):
    backend, guard, ledger = rig(script, close_in_data=close_in_data)
    client = open_client(guard, ledger)

    r = run_to_stage(client, "end", "close-1", body_size=200_000)
    expect_exact(r, BACKEND_FAILED, "end of data after the backend closed")
    [conn] = backend.with_mail()
    if close_in_data is not None:
        assert conn.messages == [] and conn.partial is not None, f"backend should hold a partial message: {conn!r}"
    client.still_usable()
    client.deliver("close-2")
    new_connection_carried(backend, "close-2", conn)
    finish(client, guard, backend, ledger)


def test_no_reply_after_final_dot_is_waited_for_never_acknowledged(rig):
    """A backend silent after the final dot is waited for (timeouts.data_end,
    at least 10 minutes by RFC 5321 4.5.3.2.6 and by the configuration's own
    minimum, so not run out here): the client hears nothing, long past
    backend_reply, and when the backend finally goes away it gets 451 4.4.2,
    never a 250."""
    silent = BACKEND_REPLY + 2
    backend, guard, ledger = rig({"end": Once("end", Delay(silent, Close()))})
    client = open_client(guard, ledger)
    started = time.monotonic()
    r = run_to_stage(client, "end", "silent-1")
    elapsed = time.monotonic() - started
    expect_exact(r, BACKEND_FAILED, "end of data, backend never answered the final dot")
    assert elapsed >= silent - 0.3, (
        f"the 451 came {elapsed:.2f}s after the dot, before the backend gave up at {silent}s: "
        "the end-of-data reply must not be bounded by backend_reply")
    [conn] = backend.with_mail()
    backend.wait_closed(conn, timeout=5)
    client.still_usable()
    client.deliver("silent-2")
    new_connection_carried(backend, "silent-2", conn)
    finish(client, guard, backend, ledger)


def test_end_of_data_reply_slower_than_backend_reply_is_still_waited_for(rig):
    """The final dot's reply is bounded by timeouts.data_end (default 10
    minutes), not by backend_reply."""
    late = BACKEND_REPLY + 0.8
    backend, guard, ledger = rig({"end": Once("end", Delay(late, b"250 2.0.0 Ok: queued late\r\n"))})
    client = open_client(guard, ledger)
    started = time.monotonic()
    r = run_to_stage(client, "end", "late-1")
    expect_exact(r, b"250 2.0.0 Ok: queued late\r\n", f"end of data answered after {late}s")
    assert time.monotonic() - started >= late - 0.2
    client.deliver("late-2")
    assert len(backend.with_mail()) == 1, f"one backend connection expected: {backend.sessions()!r}"
    finish(client, guard, backend, ledger)


# --------------------------------------------------------------------------
# Malformed replies
# --------------------------------------------------------------------------
MALFORMED = {
    "garbage": b"hello\r\n",
    "bad-code": b"2x0 ok\r\n",
    "code-changes": b"250-a\r\n251 b\r\n",
    "line-over-4096": b"250 " + b"x" * 5000 + b"\r\n",
    "bare-lf": b"250 ok\n",
    "nul": b"250 2.0.0 o\x00k\r\n",
}


@pytest.mark.parametrize("reply", MALFORMED.keys())
@pytest.mark.parametrize("stage", ("MAIL", "RCPT", "end"))
def test_malformed_reply_gives_451_4_5_0(rig, stage, reply):
    backend, guard, ledger = rig({stage: Once(stage, MALFORMED[reply])})
    client = open_client(guard, ledger)

    r = run_to_stage(client, stage, "bad-1")
    expect_exact(r, BACKEND_BAD_REPLY, f"backend answered {stage} with {MALFORMED[reply][:60]!r}")
    [conn] = backend.with_mail()
    backend.wait_closed(conn, timeout=5)
    assert conn.closed_by_peer, f"smtpguard must drop a backend connection that sent a malformed reply: {conn!r}"
    client.still_usable()
    client.deliver("bad-2")
    assert count_commands(conn, "MAIL") == 1, f"nothing more may go over the broken connection: {conn!r}"
    new_connection_carried(backend, "bad-2", conn)
    finish(client, guard, backend, ledger)


# --------------------------------------------------------------------------
# Unsolicited replies: the backend is out of step
# --------------------------------------------------------------------------
PAUSE = 0.3  # lets the stray bytes arrive before the next command is due

# stage with the extra reply, the script, the client command that must then
# be refused with 451 4.5.0 (and never reach the backend).
UNSOLICITED_IN_TRANSACTION = {
    "MAIL-two-replies": ("MAIL", b"250 2.1.0 ok\r\n250 2.1.0 extra\r\n", "RCPT"),
    "RCPT-two-replies": ("RCPT", b"250 2.1.5 ok\r\n250 2.1.5 extra\r\n", "DATA"),
}


@pytest.mark.parametrize("stage,reply,next_verb", UNSOLICITED_IN_TRANSACTION.values(),
                         ids=UNSOLICITED_IN_TRANSACTION.keys())
def test_extra_reply_in_transaction_stops_the_next_command(rig, stage, reply, next_verb):
    backend, guard, ledger = rig({stage: Once(stage, reply)})
    client = open_client(guard, ledger)

    r = run_to_stage(client, stage, "extra-1")
    first = reply[:reply.index(b"\r\n") + 2]
    expect_exact(r, first, f"{stage}: the first of two backend replies is relayed")
    time.sleep(PAUSE)
    r = client.rcpt() if next_verb == "RCPT" else client.data()
    expect_exact(r, BACKEND_BAD_REPLY, f"{next_verb} after the backend sent two replies to {stage}")
    [conn] = backend.with_mail()
    backend.wait_closed(conn, timeout=5)
    assert conn.closed_by_peer, f"smtpguard must close a backend connection that is out of step: {conn!r}"
    assert count_commands(conn, next_verb) == 0, (
        f"{next_verb} must not be sent to a backend that is out of step: {conn.commands!r}")
    client.still_usable()
    client.deliver("extra-2")
    new_connection_carried(backend, "extra-2", conn)
    finish(client, guard, backend, ledger)


UNSOLICITED_AT_SETUP = {
    # The extra reply comes in the same write as the greeting / EHLO reply,
    # before smtpguard sent anything further.
    # Out of step before EHLO: no usable backend session was ever set up, the
    # same as a garbage greeting.
    "after-greeting": ("greeting", GREETING + b"250 2.0.0 extra\r\n", "EHLO", BACKEND_UNAVAILABLE),
    # Set up, then out of step at the first command of the transaction.
    "after-ehlo": ("EHLO", EHLO_REPLY + b"250 2.0.0 extra\r\n", "MAIL", BACKEND_BAD_REPLY),
}


@pytest.mark.parametrize("stage,stray,unsent,expected", UNSOLICITED_AT_SETUP.values(),
                         ids=UNSOLICITED_AT_SETUP.keys())
def test_extra_reply_before_any_command(rig, stage, stray, unsent, expected):
    toggle = Toggle({stage: stray})
    backend, guard, ledger = rig(toggle.script())
    client = open_client(guard, ledger)

    r = client.mail()
    expect_exact(r, expected, f"MAIL when the backend sent an extra reply right after its {stage}")
    for conn in backend.sessions():
        backend.wait_closed(conn, timeout=5)
        assert conn.closed_by_peer, f"smtpguard must close a backend connection that is out of step: {conn!r}"
        assert count_commands(conn, unsent) == 0, (
            f"{unsent} must not be sent to a backend that is out of step: {conn.commands!r}")
    assert backend.with_mail() == [], f"no MAIL may reach an out-of-step backend: {backend.sessions()!r}"
    client.still_usable()

    toggle.on = False
    client.deliver("setup-extra-1")
    finish(client, guard, backend, ledger)


def test_extra_reply_after_end_of_data(rig):
    end_reply = b"250 2.0.0 Ok: queued as X00001\r\n"
    backend, guard, ledger = rig({"end": Once("end", end_reply + b"250 2.0.0 extra\r\n")})
    client = open_client(guard, ledger)

    r = run_to_stage(client, "end", "tail-1")
    expect_exact(r, end_reply, "end of data: the backend accepted the message, so 250")
    time.sleep(PAUSE)
    expect_exact(client.mail(), BACKEND_BAD_REPLY, "MAIL after an extra reply following the end of data")
    [conn] = backend.with_mail()
    backend.wait_closed(conn, timeout=5)
    assert conn.closed_by_peer, f"smtpguard must close a backend connection that is out of step: {conn!r}"
    assert count_commands(conn, "MAIL") == 1, f"the second MAIL must not go over the out-of-step connection: {conn!r}"
    client.still_usable()
    client.deliver("tail-2")
    new_connection_carried(backend, "tail-2", conn)
    finish(client, guard, backend, ledger)


def test_extra_reply_after_354_never_taken_for_the_end_of_data_reply(rig):
    """The backend says 354 plus a stray 250, then rejects the message: the
    stray 250 must never reach the client as the message's reply."""
    def end(conn, content):  # only fake-1 is rejected, should its dot ever arrive
        return b"554 5.7.1 Rejected after all\r\n" if token_of(content) == "fake-1" else None

    backend, guard, ledger = rig({"DATA": Once("DATA", b"354 go ahead\r\n250 2.0.0 fake\r\n"), "end": end})
    client = open_client(guard, ledger)

    client.expect(client.mail(), 250, "MAIL")
    client.expect(client.rcpt(), 250, "RCPT")
    client.expect(client.data(), 354, "DATA")
    time.sleep(PAUSE)
    r = client.content("fake-1")
    assert r.code != 250, f"client got 250 for a message the backend never accepted: {r!r}"
    expect_exact(r, BACKEND_BAD_REPLY, "end of data when the backend sent an extra reply after its 354")
    [conn] = backend.with_mail()
    backend.wait_closed(conn, timeout=5)
    assert conn.closed_by_peer, f"smtpguard must close a backend connection that is out of step: {conn!r}"
    assert conn.messages == [], f"the final dot must not reach an out-of-step backend: {conn!r}"
    client.still_usable()
    client.deliver("fake-2")
    new_connection_carried(backend, "fake-2", conn)
    finish(client, guard, backend, ledger)

"""Hostile input through smtpguard into a real Postfix: SMTP smuggling,
STARTTLS command injection, dot-stuffing, over-long lines and commands that
must never reach the backend.

Every case checks three things: the replies the client gets, what Postfix
delivered into its Maildir (byte for byte; Postfix stores LF line endings)
and what Postfix's log says it was sent. This module's Postfix logs every
command it reads ("< localhost[127.0.0.1]: MAIL FROM:<...>", via
debug_peer_list) and trusts XCLIENT and XFORWARD from loopback, so a command
smtpguard let through would show in the log and have a visible effect.

Postfix 3.7 as configured here is itself open to LF.LF smuggling and acts on
XCLIENT and on MAIL's AUTH= parameter; the control tests at the top show it,
so the checks below are not vacuous.
"""

import os
import re
import time

import pytest

import harness
from harness import FAKE_ENDS, HOST, HOSTNAME, plain_response, received_regex

SENDER = "alice@example.test"
RCPT = "bob@example.test"
EVIL = "evil@example.test"
VICTIM = "victim@example.test"

# What smtpguard's own backend connection says (backend.helo_name defaults to
# the hostname) and what its periodic backend health probe looks like.
BACKEND_EHLO = f"EHLO {HOSTNAME}"
PROBE_COMMANDS = [BACKEND_EHLO, "QUIT"]

# smtpguard's own replies (proxy/smtp/replies.hpp).
REJECTED_BARE = b"550 5.6.0 Message rejected: bare CR or LF is not allowed (RFC 5321 section 2.3.8)\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
OWN_OK = b"250 2.0.0 OK\r\n"
UNRECOGNIZED = b"500 5.5.2 Command not recognized\r\n"
NOT_IMPLEMENTED = b"502 5.5.1 Command not implemented\r\n"
VRFY_LOCAL = b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
TLS_ACTIVE = b"503 5.5.1 TLS already active\r\n"
READY_TLS = b"220 2.0.0 Ready to start TLS\r\n"

# Postfix's replies, relayed unchanged.
PF_MAIL_OK = b"250 2.1.0 Ok\r\n"
PF_RCPT_OK = b"250 2.1.5 Ok\r\n"
PF_NOOP_OK = b"250 2.0.0 Ok\r\n"
PF_QUEUED = re.compile(rb"250 2\.0\.0 Ok: queued as ([0-9A-F]+)\r\n")

# Fake end-of-data sequences (harness.FAKE_ENDS), each followed by a
# smuggled second transaction.
TERMINATOR = b".\r\n"


def smuggled(evil=EVIL, victim=VICTIM):
    return (f"MAIL FROM:<{evil}>\r\nRCPT TO:<{victim}>\r\nDATA\r\n".encode() +
            b"Subject: smuggled\r\n\r\nsmuggled\r\n")


def message(tag, body, to=RCPT):
    """A complete message (CRLF): with From, To, Date and Message-ID present,
    Postfix adds no headers of its own below its Received header."""
    return (f"From: Alice <{SENDER}>\r\n"
            f"To: <{to}>\r\n"
            f"Date: Sun, 22 Nov 2026 19:00:00 +0000\r\n"
            f"Message-ID: <{tag}@example.test>\r\n"
            f"Subject: {tag}\r\n"
            f"\r\n").encode() + body


def lf(data):
    return data.replace(b"\r\n", b"\n")


# Postfix's trace headers on top of a delivered message (virtual(8), Maildir).
POSTFIX_TRACE = re.compile(
    rb"Return-Path: <(?P<sender>[^>]*)>\n"
    rb"X-Original-To: (?P<original>\S+)\n"
    rb"Delivered-To: (?P<rcpt>\S+)\n"
    rb"Received: from (?P<helo>\S+) \((?P<client>[^)\n]*)\)\n"
    rb"\tby backend\.example\.test \(Postfix\) with (?P<proto>\w+) id (?P<qid>[0-9A-F]+)\n"
    rb"\tfor <(?P<for>[^>]+)>; (?P<date>[^\n]+)\n")


def check_delivered(stored, *, qid, body, rcpt=RCPT, sender=SENDER):
    """stored == Postfix's trace headers + smtpguard's Received header + body (LF)."""
    shown = stored.decode("utf-8", errors="replace")
    assert b"\r" not in stored, f"a CR reached Postfix's Maildir (bare CR passed through?):\n{stored!r}"
    m = POSTFIX_TRACE.match(stored)
    assert m, f"delivered message does not start with Postfix's trace headers:\n{shown}"
    assert m["qid"].decode() == qid, f"Postfix queue id {m['qid']!r}, the client was told {qid!r}:\n{shown}"
    assert m["sender"].decode() == sender, f"envelope sender:\n{shown}"
    for key in ("original", "rcpt", "for"):
        assert m[key].decode() == rcpt, f"envelope recipient ({key}) should be {rcpt}:\n{shown}"
    assert m["client"].endswith(b"[127.0.0.1]"), \
        f"Postfix should see the client as 127.0.0.1 (nothing spoofed it):\n{shown}"
    assert m["helo"].decode() == HOSTNAME, f"Postfix's HELO should be smtpguard's {HOSTNAME}:\n{shown}"
    ours = received_regex(rcpt=rcpt, eol=b"\n").match(stored, m.end())
    assert ours, f"smtpguard's Received header should follow Postfix's:\n{shown}"
    rest = stored[ours.end():]
    assert not rest.startswith(b"Received:"), f"more than one smtpguard Received header:\n{shown}"
    assert rest == lf(body), (f"delivered body differs.\nexpected: {lf(body)[:700]!r}\n"
                              f"delivered: {rest[:700]!r}\n(lengths {len(lf(body))} / {len(rest)})")
    return m


# --------------------------------------------------------------------------
# Postfix as seen by one test: its log since the test began, new Maildir files
# --------------------------------------------------------------------------
_SMTPD = re.compile(r"postfix/smtpd\[(\d+)\]: (.*)$")
_QMGR_FROM = re.compile(r"postfix/qmgr\[\d+\]: ([0-9A-F]+): from=<([^>]*)>")
_NOISE = re.compile(r": (?:dict_|mail_dict|match_|maps_find|mail_addr_find|domain_list|namadr_list|"
                    r"been_here|vstream|rec_put|smtp_stream|attr_|event_|input attribute|send attr|"
                    r"private/|public/|normalize_mailhost|reject_unauth|extract_addr|smtpd_check|"
                    r"ctable_|rewrite_clnt|resolve_clnt|"
                    r"generic_checks|permit_|smtpd_acl|fsspace|connect to subsystem|>>>|"
                    r"before input|after input|cleanup flags|watchdog|name_mask|inet_)")


def open_connections(log):
    """smtpd processes with a "connect from" in `log` and no "disconnect" after it."""
    busy = set()
    for m in re.finditer(r"postfix/smtpd\[(\d+)\]: (connect|disconnect) from ", log):
        if m.group(2) == "connect":
            busy.add(m.group(1))
        else:
            busy.discard(m.group(1))
    return sorted(busy)


class PostfixWindow:
    def __init__(self, postfix):
        self.postfix = postfix
        self.offset = os.path.getsize(postfix.log_file)
        self.before = set(postfix.delivered())

    def log(self):
        with open(self.postfix.log_file, "rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", errors="replace")

    def brief_log(self):
        return "\n".join(l for l in self.log().splitlines() if not _NOISE.search(l))

    def settle(self, timeout=20):
        """Waits until every smtpd connection since the test began has ended
        and Postfix's queue is empty (all mail delivered or discarded)."""
        deadline = time.monotonic() + timeout
        stable = 0
        while True:
            connected = open_connections(self.log())
            busy = connected or self.postfix.queued_files()
            stable = 0 if busy else stable + 1
            if stable >= 2:
                return self
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix did not settle within {timeout}s (smtpd connections still "
                                     f"open: {connected}, queue {self.postfix.queued_files()})\n"
                                     f"{self.brief_log()}")
            time.sleep(0.05)

    def sessions(self, include_probes=False):
        """smtpd connections in order: {"commands": [...], "events": [...], "stats": {...}}."""
        sessions, current = [], {}
        for line in self.log().splitlines():
            m = _SMTPD.search(line)
            if not m:
                continue
            pid, text = m.groups()
            if text.startswith("connect from "):
                current[pid] = {"commands": [], "events": [], "stats": None}
                sessions.append(current[pid])
            elif pid not in current:
                continue
            elif text.startswith("< "):
                current[pid]["commands"].append(text.split(": ", 1)[1])
            elif text.startswith("disconnect from "):
                current[pid]["stats"] = dict(t.split("=", 1) for t in text.split()[3:])
                del current[pid]
            elif not text.startswith("> ") and not _NOISE.search(": " + text):
                current[pid]["events"].append(text)
        if include_probes:
            return sessions
        return [s for s in sessions if s["commands"] != PROBE_COMMANDS]

    def queued_ids(self):
        """Queue ids that reached the queue manager (complete messages)."""
        return [qid for qid, _ in _QMGR_FROM.findall(self.log())]

    def messages(self):
        return [p for p in self.postfix.delivered() if p not in self.before]

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def assert_nothing_evil(self):
        log = self.log()
        for who in (EVIL, VICTIM):
            assert who not in log, f"Postfix's log mentions {who}: it saw a smuggled command\n{self.brief_log()}"
        for path in self.messages():
            stored = self.read(path)
            assert f"Delivered-To: {VICTIM}".encode() not in stored, f"mail for {VICTIM} was delivered:\n{stored!r}"
            assert f"Return-Path: <{EVIL}>".encode() not in stored, f"mail from {EVIL} was delivered:\n{stored!r}"
        assert "improper command pipelining" not in log, f"Postfix saw pipelined commands:\n{self.brief_log()}"


def expect_session(session, commands, log):
    assert session["commands"] == commands, (f"Postfix received {session['commands']},\nexpected {commands}\n"
                                             f"Postfix log:\n{log}")


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backend(postfix):
    """The module's Postfix, logging every command and trusting XCLIENT /
    XFORWARD from loopback."""
    postfix.postconf(smtpd_authorized_xclient_hosts="127.0.0.0/8",
                     smtpd_authorized_xforward_hosts="127.0.0.0/8",
                     debug_peer_list="127.0.0.1", debug_peer_level="1")

    def reloaded():
        with harness.SmtpWire.connect(postfix.port) as w:
            w.read_reply()
            caps = w.ehlo("probe.example.test").keywords()
            w.quit()
        return "XCLIENT" in caps

    assert harness.wait_until(reloaded, 15, interval=0.2), \
        f"Postfix did not pick up the reloaded configuration\n{postfix.log()[-3000:]}"
    # Let the probes' disconnects reach the log before the first test looks.
    assert harness.wait_until(lambda: not open_connections(postfix.log()), 10), postfix.log()[-3000:]
    return postfix


@pytest.fixture(scope="module")
def guards(binary, certs, users_file, backend, tmp_path_factory):
    """guards(policy) -> one smtpguard per bare_line_endings policy for the
    whole module, relaying to the module's Postfix (starting and stopping
    smtpguard costs more than most tests here)."""
    started = {}

    def get(policy="reject"):
        if policy not in started:
            work = tmp_path_factory.mktemp(f"smtpguard-{policy}")
            guard = harness.Smtpguard(binary, str(work), certs, users_file, f"{HOST}:{backend.port}",
                                      config={"smtp": {"bare_line_endings": policy},
                                              # each session's Postfix log is checked whole
                                              "backend": {"reuse_idle": 0}})
            started[policy] = guard.start()
        return started[policy]

    get.started = started
    yield get
    problems = []
    for policy, guard in started.items():
        if not guard.alive():
            problems.append(f"smtpguard ({policy}) died with status {guard.proc.returncode}")
        guard.stop()
        stderr = harness.read_text(guard.stderr_path)
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in stderr:
                problems.append(f"smtpguard ({policy}) stderr has a sanitizer report ({marker!r})")
    if problems:
        pytest.fail("; ".join(problems) + "\n" + "\n".join(g.diagnostics() for g in started.values()))


@pytest.fixture
def pf(backend, guards, request):
    """The Postfix window of this test; prints diagnostics if it fails."""
    window = PostfixWindow(backend)
    yield window
    node = request.node
    failed = any(getattr(node, "rep_" + when, None) is not None and getattr(node, "rep_" + when).failed
                 for when in ("setup", "call"))
    if failed:
        harness.eprint("=== Postfix log during the test (verbose lookups left out)")
        harness.eprint(window.brief_log()[-20000:])
        for policy, guard in guards.started.items():
            harness.eprint(f"=== smtpguard ({policy})")
            harness.eprint(guard.diagnostics())


# --------------------------------------------------------------------------
# Client steps
# --------------------------------------------------------------------------
def expect(w, command, raw):
    r = w.cmd(command)
    assert r.raw == raw, f"{command!r}: expected {raw!r}, got {r!r}"
    return r


def open_data(w, rcpt=RCPT, login=True):
    if login:
        w.login()
    expect(w, f"MAIL FROM:<{SENDER}>", PF_MAIL_OK)
    expect(w, f"RCPT TO:<{rcpt}>", PF_RCPT_OK)
    expect(w, "DATA", GO_AHEAD)


def queued(r):
    m = PF_QUEUED.fullmatch(r.raw)
    assert m, f"end of data: expected Postfix's '250 2.0.0 Ok: queued as ...', got {r!r}"
    return m.group(1).decode()


def send_message(w, body, rcpt=RCPT, login=False):
    """A whole transaction; returns Postfix's queue id."""
    open_data(w, rcpt=rcpt, login=login)
    return queued(w.cmd(body + b"."))


def send_split(w, data, cuts):
    """Sends data in pieces cut at the given offsets, one TLS record each."""
    previous = 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
        w.send(data[previous:cut])
        previous = cut
        time.sleep(0.001)


def smuggling_payload(tag, fake_end):
    head = message(tag, b"hello")
    return head, head + FAKE_ENDS[fake_end] + smuggled() + TERMINATOR


def send_payload(w, head, data, fake_end, writes):
    if writes == "one-write":
        w.send(data)
        return
    # Byte by byte around the fake end and around the real one.
    at, length = len(head), len(FAKE_ENDS[fake_end])
    cuts = list(range(at - 3, at + length + 10)) + list(range(len(data) - 8, len(data)))
    send_split(w, data, cuts)


# --------------------------------------------------------------------------
# Controls: Postfix alone acts on what smtpguard must stop
# --------------------------------------------------------------------------
def test_control_postfix_alone_is_open_to_lf_smuggling(pf):
    """Straight to Postfix (no smtpguard), LF.LF ends the message and the
    smuggled transaction is delivered: the backend really is vulnerable."""
    head = message("control-smuggling", b"hello", to="control@example.test")
    evil, victim = "ctl-smuggler@example.test", "ctl-target@example.test"
    with harness.SmtpWire.connect(pf.postfix.port) as w:
        w.read_reply()
        w.ehlo()
        expect(w, f"MAIL FROM:<{SENDER}>", PF_MAIL_OK)
        expect(w, "RCPT TO:<control@example.test>", PF_RCPT_OK)
        assert w.cmd("DATA").code == 354
        w.send(head + FAKE_ENDS["LF.LF"] + smuggled(evil, victim) + TERMINATOR)
        first = w.read_reply()
        if not PF_QUEUED.fullmatch(first.raw):
            pytest.skip(f"this Postfix does not end DATA at LF.LF (replied {first!r}); control not applicable")
        more = w.read_replies(4)
        assert [r.code for r in more] == [250, 250, 354, 250], f"smuggled transaction replies: {more!r}"
        w.quit()
    pf.settle()
    stored = [pf.read(p) for p in pf.messages()]
    assert len(stored) == 2, f"expected the real and the smuggled message, got {len(stored)}"
    assert sum(f"Delivered-To: {victim}\n".encode() in s for s in stored) == 1, stored
    assert f"from=<{evil}>" in pf.log()


def test_control_postfix_alone_acts_on_xclient_and_auth_parameter(pf):
    """Straight to Postfix: XCLIENT changes the client in its Received header
    and MAIL ... AUTH=<x> is logged as sasl_sender=<x>: both effects are what
    test_commands_never_forwarded checks for."""
    body = message("control-xclient", b"hello\r\n", to="control@example.test")
    with harness.SmtpWire.connect(pf.postfix.port) as w:
        w.read_reply()
        w.ehlo()
        r = w.cmd("XCLIENT ADDR=192.0.2.1 NAME=spoofed.example.test")
        assert r.code == 220, f"XCLIENT straight to Postfix: {r!r}"
        w.ehlo()
        expect(w, f"MAIL FROM:<{SENDER}> AUTH=<ctl-claimed@example.test>", PF_MAIL_OK)
        expect(w, "RCPT TO:<control@example.test>", PF_RCPT_OK)
        assert w.cmd("DATA").code == 354
        qid = queued(w.cmd(body + b"."))
        w.quit()
    pf.settle()
    [path] = pf.messages()
    stored = pf.read(path)
    m = POSTFIX_TRACE.match(stored)
    assert m and m["qid"].decode() == qid and m["client"] == b"spoofed.example.test [192.0.2.1]", stored
    claimed = rf"{qid}: client=spoofed\.example\.test\[192\.0\.2\.1\].*sasl_sender=<ctl-claimed@example\.test>"
    assert re.search(claimed, pf.log()), pf.brief_log()


# --------------------------------------------------------------------------
# SMTP smuggling
# --------------------------------------------------------------------------
@pytest.mark.parametrize("writes", ["one-write", "bytewise"])
@pytest.mark.parametrize("fake_end", list(FAKE_ENDS))
def test_smuggling_reject_delivers_nothing(guards, pf, fake_end, writes):
    """bare_line_endings=reject: 550 5.6.0, Postfix's half-sent message is
    dropped with the connection, and the session then delivers a clean
    message exactly once."""
    guard = guards("reject")
    head, data = smuggling_payload(f"reject-{fake_end}-{writes}", fake_end)
    clean = message(f"clean-after-{fake_end}-{writes}", b"clean message\r\n", to="carol@example.test")
    with guard.wire_implicit() as w:
        open_data(w)
        send_payload(w, head, data, fake_end, writes)
        r = w.read_reply()
        assert r.raw == REJECTED_BARE, f"{fake_end}: expected smtpguard's 550 5.6.0, got {r!r}"
        # smtpguard dropped the backend connection, so NOOP is answered by
        # smtpguard itself; any reply to a smuggled command would come first.
        expect(w, "NOOP", OWN_OK)
        qid = send_message(w, clean, rcpt="carol@example.test")
        w.quit()
    guard.assert_alive()
    pf.settle()
    log = pf.brief_log()
    sessions = pf.sessions()
    assert len(sessions) == 2, f"expected two backend connections (aborted, clean), got {sessions}\n{log}"
    aborted, second = sessions
    expect_session(aborted, [BACKEND_EHLO, f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RCPT}>", "DATA"], log)
    assert aborted["stats"].get("data") == "0/1", f"the refused message must not complete at Postfix: {aborted}"
    assert any(e.startswith("lost connection after DATA") for e in aborted["events"]), aborted
    expect_session(second, [BACKEND_EHLO, f"MAIL FROM:<{SENDER}>", "RCPT TO:<carol@example.test>", "DATA", "QUIT"],
                   log)
    assert pf.queued_ids() == [qid], f"only the clean message may reach Postfix's queue\n{log}"
    [path] = pf.messages()
    check_delivered(pf.read(path), qid=qid, body=clean, rcpt="carol@example.test")
    pf.assert_nothing_evil()


@pytest.mark.parametrize("writes", ["one-write", "bytewise"])
@pytest.mark.parametrize("fake_end", list(FAKE_ENDS))
def test_smuggling_normalize_delivers_one_message(guards, pf, fake_end, writes):
    """bare_line_endings=normalize: one message, the fake end and the
    smuggled commands delivered as text with LF endings; Postfix receives one
    MAIL, one RCPT, one DATA."""
    guard = guards("normalize")
    head, data = smuggling_payload(f"normalize-{fake_end}-{writes}", fake_end)
    with guard.wire_implicit() as w:
        open_data(w)
        send_payload(w, head, data, fake_end, writes)
        qid = queued(w.read_reply())
        # Relayed to Postfix: a smuggled transaction's replies would come first.
        expect(w, "NOOP", PF_NOOP_OK)
        w.quit()
    guard.assert_alive()
    pf.settle()
    log = pf.brief_log()
    [session] = pf.sessions()
    expect_session(session, [BACKEND_EHLO, f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RCPT}>", "DATA", "NOOP", "QUIT"],
                   log)
    assert session["stats"] == {"ehlo": "1", "mail": "1", "rcpt": "1", "data": "1", "noop": "1", "quit": "1",
                                "commands": "6"}, session
    assert pf.queued_ids() == [qid], log
    [path] = pf.messages()
    # The lone "." became content (stuffed on the wire, unstuffed by Postfix).
    check_delivered(pf.read(path), qid=qid, body=head + b"\r\n.\r\n" + smuggled())
    pf.assert_nothing_evil()


# --------------------------------------------------------------------------
# STARTTLS command injection
# --------------------------------------------------------------------------
INJECTIONS = {
    "mail-rcpt": f"MAIL FROM:<{EVIL}>\r\nRCPT TO:<{VICTIM}>\r\n".encode(),
    "full-transaction": (
        b"EHLO evil.example.test\r\n"
        b"AUTH PLAIN " + plain_response(*harness.ALICE).encode() + b"\r\n" +
        f"MAIL FROM:<{EVIL}>\r\nRCPT TO:<{VICTIM}>\r\nDATA\r\n".encode() +
        b"Subject: injected\r\n\r\ninjected\r\n.\r\n"
    ),
}


@pytest.mark.parametrize("name", list(INJECTIONS))
def test_starttls_injection_never_reaches_postfix(guards, pf, name):
    guard = guards("reject")
    body = message(f"after-starttls-{name}", b"the only message\r\n", to="someone@example.test")
    with guard.wire_plain() as w:
        w.ehlo()
        w.send(b"STARTTLS\r\n" + INJECTIONS[name])
        r = w.read_reply()
        assert r.raw == READY_TLS, f"STARTTLS: {r!r}"
        assert not w.buf, f"plaintext replies to the injected commands: {w.buf!r}"
        w.sock = guard.tls_context().wrap_socket(w.sock, server_hostname=HOSTNAME)
        r = w.ehlo()
        assert r.lines[0].startswith(f"{HOSTNAME} Hello"), f"first reply inside TLS is not our EHLO's: {r!r}"
        qid = send_message(w, body, rcpt="someone@example.test", login=True)
        expect(w, "NOOP", PF_NOOP_OK)
        w.quit()
    guard.assert_alive()
    pf.settle()
    log = pf.brief_log()
    [session] = pf.sessions()
    expect_session(session, [BACKEND_EHLO, f"MAIL FROM:<{SENDER}>", "RCPT TO:<someone@example.test>", "DATA",
                             "NOOP", "QUIT"], log)
    assert pf.queued_ids() == [qid], log
    [path] = pf.messages()
    check_delivered(pf.read(path), qid=qid, body=body, rcpt="someone@example.test")
    pf.assert_nothing_evil()


def test_starttls_inside_implicit_tls_is_refused(guards, pf):
    """Injection needs a plaintext phase; with implicit TLS there is none.
    STARTTLS is refused and the commands pipelined after it (inside TLS,
    so legitimate) are executed once."""
    guard = guards("reject")
    body = message("implicit-starttls", b"once\r\n", to="someone@example.test")
    with guard.wire_implicit() as w:
        w.login()
        w.send(f"STARTTLS\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<someone@example.test>\r\n")
        replies = [r.raw for r in w.read_replies(3)]
        assert replies == [TLS_ACTIVE, PF_MAIL_OK, PF_RCPT_OK], replies
        expect(w, "DATA", GO_AHEAD)
        qid = queued(w.cmd(body + b"."))
        w.quit()
    pf.settle()
    log = pf.brief_log()
    [session] = pf.sessions()
    expect_session(session, [BACKEND_EHLO, f"MAIL FROM:<{SENDER}>", "RCPT TO:<someone@example.test>", "DATA",
                             "QUIT"], log)
    [path] = pf.messages()
    check_delivered(pf.read(path), qid=qid, body=body, rcpt="someone@example.test")


# --------------------------------------------------------------------------
# Dot-stuffing and long lines
# --------------------------------------------------------------------------
def test_dot_stuffing_round_trip(guards, pf):
    """Client-stuffed lines arrive unstuffed in the Maildir, whatever dots
    they hold; an unstuffed ".x" line loses its dot (RFC 5321 4.5.2) as it
    would at Postfix directly."""
    guard = guards("reject")
    content = [b".leading dot", b".", b"..", b"...", b". space", b"middle . dot", b".x.", b"", b"."]
    wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in content)
    expected = b"".join(line + b"\r\n" for line in content)
    body_wire = message("dots", wire)
    sloppy = message("sloppy-dot", b"before\r\n.sloppy\r\nafter\r\n")
    with guard.wire_implicit() as w:
        w.login()
        # The wire form really has a ".." line and stuffed lines.
        assert b"\r\n..\r\n" in body_wire and b"\r\n...\r\n" in body_wire
        qid1 = send_message(w, body_wire)
        qid2 = send_message(w, sloppy)
        w.quit()
    pf.settle()
    paths = pf.messages()
    assert len(paths) == 2, f"expected 2 messages, got {len(paths)}\n{pf.brief_log()}"
    stored = {POSTFIX_TRACE.match(pf.read(p))["qid"].decode(): pf.read(p) for p in paths}
    check_delivered(stored[qid1], qid=qid1, body=message("dots", expected))
    check_delivered(stored[qid2], qid=qid2, body=message("sloppy-dot", b"before\r\nsloppy\r\nafter\r\n"))
    [session] = pf.sessions()
    assert session["stats"].get("data") == "2", session


def fold(line, limit=998):
    """smtpguard's folding (proxy/smtp/data_reframer.cpp): unstuffed content
    is cut every `limit` octets; each piece is a line of its own."""
    return [line[i:i + limit] for i in range(0, len(line), limit)] or [b""]


def test_long_lines_are_folded_into_postfix(guards, pf):
    """limits.max_text_line = 1000 (default): lines over 998 content octets
    are folded; a fold that starts with "." is stuffed, so Postfix never sees
    a lone "." line and stores exactly the folded lines."""
    guard = guards("reject")
    content = [
        b"A" * 998 + b".",          # the fold leaves a lone "."
        b"B" * 2500,                # 998 + 998 + 504
        b"C" * 1996,                # two full lines, no empty third one
        b"D" * 998,                 # at the limit: untouched
        b"." + b"E" * 1200,         # stuffed by the client; the dot counts as content
        b"F" * 998 + b".hidden",    # the continuation starts with a dot
        b"G" * 1996 + b".",         # the second fold leaves a lone "."
        b"last line",
    ]
    wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in content)
    folded = [piece for line in content for piece in fold(line)]
    assert folded == [b"A" * 998, b".", b"B" * 998, b"B" * 998, b"B" * 504, b"C" * 998, b"C" * 998,
                      b"D" * 998, b"." + b"E" * 997, b"E" * 203, b"F" * 998, b".hidden", b"G" * 998,
                      b"G" * 998, b".", b"last line"]
    expected = b"".join(piece + b"\r\n" for piece in folded)
    with guard.wire_implicit() as w:
        w.login()
        qid1 = send_message(w, message("long-one-write", wire))
        # The same body in 997-octet writes, so folds fall across reads.
        open_data(w, login=False)
        send_split(w, message("long-split", wire) + b".\r\n",
                   range(997, len(message("long-split", wire)) + 3, 997))
        qid2 = queued(w.read_reply())
        w.quit()
    pf.settle()
    paths = pf.messages()
    assert len(paths) == 2, f"expected 2 messages, got {len(paths)}\n{pf.brief_log()}"
    stored = {POSTFIX_TRACE.match(pf.read(p))["qid"].decode(): pf.read(p) for p in paths}
    check_delivered(stored[qid1], qid=qid1, body=message("long-one-write", expected))
    check_delivered(stored[qid2], qid=qid2, body=message("long-split", expected))
    for data in stored.values():
        assert max(len(line) for line in data.split(b"\n")) <= 998


# --------------------------------------------------------------------------
# Commands smtpguard answers itself and never forwards
# --------------------------------------------------------------------------
def test_commands_never_forwarded(guards, pf):
    """XCLIENT, XFORWARD, ETRN, EXPN, VRFY, BDAT and MAIL's AUTH= parameter,
    sent after AUTH and while smtpguard holds an idle backend connection:
    smtpguard answers them itself, Postfix's log shows it never read them,
    and nothing they would change at Postfix changed."""
    guard = guards("reject")
    with guard.wire_implicit(ehlo=False) as w:
        caps = w.ehlo().keywords()
        hidden = {"XCLIENT", "XFORWARD", "ETRN", "VRFY", "CHUNKING"} & set(caps)
        assert not hidden, f"smtpguard advertises the backend's {sorted(hidden)}: {caps}"
        w.login()
        expect(w, "XCLIENT ADDR=192.0.2.1 NAME=spoofed.example.test", UNRECOGNIZED)
        expect(w, f"MAIL FROM:<{SENDER}> AUTH=<{EVIL}>", PF_MAIL_OK)
        expect(w, f"RCPT TO:<{RCPT}>", PF_RCPT_OK)
        expect(w, "DATA", GO_AHEAD)
        body1 = message("after-auth-parameter", b"first\r\n")
        qid1 = queued(w.cmd(body1 + b"."))
        # The backend connection is open and idle now: Postfix would act on these.
        expect(w, "XCLIENT ADDR=192.0.2.1 NAME=spoofed.example.test", UNRECOGNIZED)
        expect(w, "XFORWARD ADDR=192.0.2.2 NAME=forwarded.example.test HELO=forwarded.example.test",
               UNRECOGNIZED)
        expect(w, "ETRN example.test", UNRECOGNIZED)
        expect(w, f"EXPN {VICTIM}", NOT_IMPLEMENTED)
        expect(w, f"VRFY {VICTIM}", VRFY_LOCAL)
        expect(w, "BDAT 0 LAST", NOT_IMPLEMENTED)
        body2 = message("after-xclient", b"second\r\n")
        qid2 = send_message(w, body2)
        expect(w, "NOOP", PF_NOOP_OK)
        w.quit()
    guard.assert_alive()
    pf.settle()
    log = pf.brief_log()
    [session] = pf.sessions()
    transaction = [f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RCPT}>", "DATA"]
    expect_session(session, [BACKEND_EHLO, *transaction, *transaction, "NOOP", "QUIT"], log)
    assert session["stats"] == {"ehlo": "1", "mail": "2", "rcpt": "2", "data": "2", "noop": "1", "quit": "1",
                                "commands": "9"}, session
    # No XCLIENT/XFORWARD effect on the client Postfix logs, no AUTH= (sasl_sender).
    for qid in (qid1, qid2):
        lines = re.findall(rf"{qid}: client=.*", log)
        assert lines == [f"{qid}: client=localhost[127.0.0.1]"], f"{qid}: {lines}\n{log}"
    assert "192.0.2." not in pf.log() and "spoofed" not in pf.log(), log
    paths = pf.messages()
    assert len(paths) == 2
    stored = {POSTFIX_TRACE.match(pf.read(p))["qid"].decode(): pf.read(p) for p in paths}
    check_delivered(stored[qid1], qid=qid1, body=body1)
    check_delivered(stored[qid2], qid=qid2, body=body2)
    for data in stored.values():
        assert b"192.0.2." not in data and b"spoofed" not in data and b"forwarded.example" not in data
    pf.assert_nothing_evil()
